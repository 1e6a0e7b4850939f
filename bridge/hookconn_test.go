package bridge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestHookConnKeepsAliveAndSurvivesAStaleConnection(t *testing.T) {
	var requests, conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.Header.Get("X-Close") != "" {
			w.Header().Set("Connection", "close")
		}
		w.Write([]byte(`{"ok":true}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	hc := &hookConn{}
	defer hc.close()
	post := func(header string) []byte {
		t.Helper()
		u, _ := url.Parse(srv.URL + "/hook")
		req := &hookRequest{url: u, body: []byte(`{}`)}
		if header != "" {
			req.header = []headerField{{header, "1"}}
		}
		resp, body, err := hc.do(context.Background(), req, 1024)
		if err != nil || resp.StatusCode != 200 || string(body) != `{"ok":true}` {
			t.Fatalf("request: %v %v %q", resp, err, body)
		}
		return body
	}
	post("")
	post("")
	if conns.Load() != 1 {
		t.Errorf("%d connections for 2 requests; want 1 kept alive", conns.Load())
	}
	srv.CloseClientConnections() // the server drops the idle connection
	post("")
	if requests.Load() != 3 || conns.Load() != 2 {
		t.Errorf("after a stale connection: %d requests over %d connections, want 3 over 2", requests.Load(), conns.Load())
	}
	post("X-Close") // the server says Connection: close: the next request dials
	post("")
	if conns.Load() != 3 {
		t.Errorf("%d connections; Connection: close was not honoured", conns.Load())
	}
}

func TestHookConnOversizeBodyDropsTheConnection(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte{'x'}, 5000))
	}))
	defer srv.Close()
	hc := &hookConn{}
	u, _ := url.Parse(srv.URL)
	_, body, err := hc.do(context.Background(), &hookRequest{url: u}, 100)
	if err != nil || len(body) != 101 {
		t.Fatalf("got %d bytes, %v; want the limit plus one", len(body), err)
	}
	if hc.nc != nil {
		t.Error("the connection with an unread body was kept")
	}
}

// The request as written is what net/http's server reads: method, path and query, Host, every
// header in order, and a body of Content-Length bytes.
func TestHookRequestOnTheWire(t *testing.T) {
	got := make(chan *http.Request, 1)
	bodies := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- string(b)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/hooks/ws.php?app=chat&x=%20y")
	req := &hookRequest{url: u, body: []byte(`{"type":"message"}`), header: []headerField{
		{"Content-Type", "application/json"}, {HeaderEvent, "message"}, {"Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	}}
	hc := &hookConn{}
	defer hc.close()
	resp, body, err := hc.do(context.Background(), req, 1024)
	if err != nil || resp.StatusCode != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("answer %v, %q, %v", resp, body, err)
	}
	r := <-got
	if r.Method != http.MethodPost || r.URL.RequestURI() != "/hooks/ws.php?app=chat&x=%20y" || r.Host != u.Host {
		t.Errorf("request line %s %s, Host %s", r.Method, r.URL.RequestURI(), r.Host)
	}
	if r.ContentLength != int64(len(req.body)) || <-bodies != string(req.body) {
		t.Errorf("body: Content-Length %d", r.ContentLength)
	}
	for _, f := range req.header {
		if r.Header.Get(f.name) != f.value {
			t.Errorf("header %s = %q, want %q", f.name, r.Header.Get(f.name), f.value)
		}
	}
}

// An answer that echoes WsBridge-Event-Id must echo the request's.
func TestHookRequestAnswered(t *testing.T) {
	req := &hookRequest{header: []headerField{{HeaderEvent, "open"}, {HeaderEventID, "EV1"}}}
	for _, tc := range []struct {
		name   string
		header http.Header
		ok     bool
	}{
		{"no echo", http.Header{}, true},
		{"same event", http.Header{"Wsbridge-Event-Id": {"EV1"}}, true},
		{"another event", http.Header{"Wsbridge-Event-Id": {"EV0"}}, false},
		{"two events", http.Header{"Wsbridge-Event-Id": {"EV1", "EV0"}}, false},
		{"empty", http.Header{"Wsbridge-Event-Id": {""}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := req.answered(&http.Response{Header: tc.header})
			if (err == nil) != tc.ok {
				t.Fatalf("answered: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "names another event than EV1") {
				t.Errorf("error %q does not say what was wrong", err)
			}
		})
	}
}

func TestValidTraceparent(t *testing.T) {
	good := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if validTraceparent(good) != good {
		t.Errorf("%q refused", good)
	}
	for _, bad := range []string{
		"",
		good + "0",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7\r\nX",
		"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\n",
	} {
		if validTraceparent(bad) != "" {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The reply reader, case by case: what it takes, what it refuses and why, and whether the
// connection may carry another request.
func TestReplyReader(t *testing.T) {
	const ok = "HTTP/1.1 200 OK\r\n"
	big := strings.Repeat("a", 70<<10)
	fields := func(n int) string {
		var sb strings.Builder
		for i := range n {
			fmt.Fprintf(&sb, "X-F%d: v\r\n", i)
		}
		return sb.String()
	}
	for _, tc := range []struct {
		name, in string
		max      int64
		status   int
		body     string
		reusable bool
		header   map[string][]string // checked when set
		err      string              // the error contains it
	}{
		{name: "content-length", in: ok + "Content-Length: 2\r\n\r\n{}", status: 200, body: "{}", reusable: true},
		{name: "bare LF line ends", in: "HTTP/1.1 200 OK\nContent-Length: 2\n\n{}", status: 200, body: "{}", reusable: true},
		{name: "no reason phrase", in: "HTTP/1.1 201\r\nContent-Length: 0\r\n\r\n", status: 201, reusable: true},
		{name: "empty reason phrase", in: "HTTP/1.1 201 \r\nContent-Length: 0\r\n\r\n", status: 201, reusable: true},
		{name: "headers canonical, repeated, trimmed", in: ok + "content-type:  application/json \r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n",
			status: 200, reusable: true, header: map[string][]string{"Content-Type": {"application/json"}, "Set-Cookie": {"a=1", "b=2"}, "X-Empty": {""}}},
		{name: "obs-fold joined with a space", in: ok + "X-Long: a\r\n  b\r\n\tc\r\nContent-Length: 0\r\n\r\n",
			status: 200, reusable: true, header: map[string][]string{"X-Long": {"a b c"}}},
		{name: "identical Content-Length values", in: ok + "Content-Length: 2, 2\r\nContent-Length: 2\r\n\r\n{}", status: 200, body: "{}", reusable: true},
		{name: "Connection: close", in: ok + "Connection: keep-alive, close\r\nContent-Length: 2\r\n\r\n{}", status: 200, body: "{}"},
		{name: "HTTP/1.0 is not kept", in: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", status: 200, body: "{}"},
		{name: "until the connection ends (php -S)", in: ok + "Connection: close\r\n\r\n{\"a\":1}", status: 200, body: `{"a":1}`},
		{name: "until the end, over max", in: ok + "\r\n" + "0123456789", max: 4, status: 200, body: "01234"},
		{name: "content-length over max", in: ok + "Content-Length: 10\r\n\r\n0123456789", max: 4, status: 200, body: "01234"},
		{name: "204 and 304 have no body", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n", status: 304, reusable: true},
		{name: "1xx skipped", in: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok + "Content-Length: 2\r\n\r\n{}",
			status: 200, body: "{}", reusable: true, header: map[string][]string{"Link": nil, "Content-Length": {"2"}}},
		{name: "five 1xx", in: strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 5) + ok + "Content-Length: 0\r\n\r\n", status: 200, reusable: true},
		{name: "chunked with extensions and trailers", in: ok + "Transfer-Encoding: Chunked\r\n\r\n3;x=y\r\n{\"a\r\n4 ; z\r\n\":1}\r\n0\r\nX-Trailer: t\r\n\r\n",
			status: 200, body: `{"a":1}`, reusable: true},
		{name: "chunked over max", in: ok + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n", max: 5, status: 200, body: "abc012"},
		{name: "chunked, one chunk over max", in: ok + "Transfer-Encoding: chunked\r\n\r\nffffffffffff\r\n0123456789", max: 5, status: 200, body: "012345"},
		{name: "long header within the bound", in: ok + "X-Big: " + big[:60<<10] + "\r\nContent-Length: 0\r\n\r\n", status: 200, reusable: true},

		{name: "101", in: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", err: "101 Switching Protocols"},
		{name: "six 1xx", in: strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 6) + ok + "\r\n", err: "more than 5 1xx responses"},
		{name: "bytes after a 204", in: "HTTP/1.1 204 No Content\r\n\r\n{}", err: "2 bytes after a 204 response"},
		{name: "bytes after the body", in: ok + "Content-Length: 2\r\n\r\n{}" + ok, err: "17 bytes after the response"},
		{name: "bytes after a chunked body", in: ok + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nX", err: "1 bytes after the response"},
		{name: "header line over the bound", in: ok + "X-Big: " + big + "\r\n\r\n", err: "webhook reply headers exceed 65536 bytes"},
		{name: "1xx heads count against the bound", in: strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: "+big[:20<<10]+"\r\n\r\n", 4) + ok + "\r\n", err: "exceed 65536 bytes"},
		{name: "too many fields", in: ok + fields(101) + "\r\n", err: "more than 100 header fields"},
		{name: "100 fields", in: ok + fields(99) + "Content-Length: 0\r\n\r\n", status: 200, reusable: true},
		{name: "too many trailer fields", in: ok + "Transfer-Encoding: chunked\r\n\r\n0\r\n" + fields(101) + "\r\n", err: "more than 100 header fields"},
		{name: "conflicting Content-Length", in: ok + "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}x", err: "conflicting Content-Length"},
		{name: "conflicting Content-Length list", in: ok + "Content-Length: 2, 3\r\n\r\n{}x", err: "conflicting Content-Length"},
		{name: "signed Content-Length", in: ok + "Content-Length: +2\r\n\r\n{}", err: "bad Content-Length"},
		{name: "negative Content-Length", in: ok + "Content-Length: -1\r\n\r\n", err: "bad Content-Length"},
		{name: "empty Content-Length", in: ok + "Content-Length:\r\n\r\n", err: "empty Content-Length"},
		{name: "Content-Length and chunked", in: ok + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", err: "both Transfer-Encoding and Content-Length"},
		{name: "gzip transfer coding", in: ok + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", err: "other than chunked"},
		{name: "chunked in HTTP/1.0", in: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", err: "HTTP/1.0"},
		{name: "bad chunk size", in: ok + "Transfer-Encoding: chunked\r\n\r\nzz\r\n", err: "bad chunk size"},
		{name: "chunk size with junk", in: ok + "Transfer-Encoding: chunked\r\n\r\n2 x\r\n{}\r\n0\r\n\r\n", err: "bad chunk size"},
		{name: "chunk size overflow", in: ok + "Transfer-Encoding: chunked\r\n\r\n1000000000000000\r\n", err: "over 15 hex digits"},
		{name: "chunk without CRLF", in: ok + "Transfer-Encoding: chunked\r\n\r\n2\r\n{}0\r\n\r\n", err: "not followed by CRLF"},
		{name: "chunk-size line too long", in: ok + "Transfer-Encoding: chunked\r\n\r\n2;" + big[:5000] + "\r\n{}\r\n0\r\n\r\n", err: "chunk-size line longer than 4096 bytes"},
		{name: "chunked body cut off", in: ok + "Transfer-Encoding: chunked\r\n\r\n5\r\nab", err: "reading chunk"},
		{name: "body cut off", in: ok + "Content-Length: 5\r\n\r\nab", err: "reading body"},
		{name: "no answer", in: "", err: "reading status line: EOF"},
		{name: "HTTP/2 status line", in: "HTTP/2 200 OK\r\n\r\n", err: "bad status line"},
		{name: "not HTTP", in: "{\"send\":[\"x\"]}\r\n\r\n", err: "bad status line"},
		{name: "two-digit status", in: "HTTP/1.1 20 OK\r\n\r\n", err: "bad status line"},
		{name: "status out of range", in: "HTTP/1.1 999 What\r\n\r\n", err: "status code 999"},
		{name: "letters in status", in: "HTTP/1.1 2x0 OK\r\n\r\n", err: "not 3 digits"},
		{name: "space before the colon", in: ok + "Content-Length : 2\r\n\r\n{}", err: "header name with ' '"},
		{name: "line without a colon", in: ok + "Content-Length 2\r\n\r\n{}", err: "without a name and a colon"},
		{name: "empty name", in: ok + ": x\r\n\r\n", err: "without a name and a colon"},
		{name: "whitespace before the first field", in: ok + " X-A: 1\r\n\r\n", err: "whitespace before the first header field"},
		{name: "bare CR in a value", in: ok + "X-A: 1\rContent-Length: 9\r\n\r\n", err: "CR or NUL"},
		{name: "NUL in a value", in: ok + "X-A: 1\x00\r\n\r\n", err: "CR or NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			max := tc.max
			if max == 0 {
				max = 1 << 20
			}
			rr := replyReader{br: bufio.NewReader(strings.NewReader(tc.in))}
			resp, body, reusable, err := rr.read(max)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				if resp != nil || body != nil || reusable {
					t.Errorf("a refused reply came with an answer: %v %q %v", resp, body, reusable)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if resp.StatusCode != tc.status || string(body) != tc.body || reusable != tc.reusable || resp.Close == reusable {
				t.Errorf("got %d %q reusable=%v close=%v; want %d %q reusable=%v", resp.StatusCode, body, reusable, resp.Close, tc.status, tc.body, tc.reusable)
			}
			for name, want := range tc.header {
				if got := resp.Header[name]; !slices.Equal(got, want) {
					t.Errorf("header %s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

// A 48 MiB header line fails at the bound: the bridge reads a little past 64 KiB of it and
// allocates about as much, not the whole line.
func TestHookConnHugeHeaderFailsAtTheBound(t *testing.T) {
	h := newHostilePHP(t, nil)
	h.stream = hugeHeader
	u, _ := url.Parse(h.url)
	hc := &hookConn{}
	defer hc.close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := hc.do(context.Background(), &hookRequest{url: u, body: []byte(`{"type":"message","connection_id":"c"}`),
		header: []headerField{{HeaderEvent, "message"}, {HeaderConnection, "c"}, {HeaderAttempt, "1"}}}, 1024)
	runtime.ReadMemStats(&after)
	if err == nil || err.Error() != "webhook reply headers exceed 65536 bytes" {
		t.Fatalf("error %v, want the bound named", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 2<<20 {
		t.Errorf("%d KiB allocated reading a reply refused at 64 KiB", grew>>10)
	}
	if hc.nc != nil {
		t.Error("the connection was kept")
	}
}

// A kept-alive connection is checked before each request: one the server closed while idle is
// redialled, and one on which the server sent bytes nobody asked for is dropped unread; both
// without failing the request.
func TestHookConnChecksTheIdleConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type step struct {
		after string // written after the answer: unsolicited bytes
		close bool   // the server closes the connection after the answer
	}
	steps := make(chan step, 1)
	answered, done := make(chan struct{}), make(chan struct{})
	signal := func() {
		select {
		case answered <- struct{}{}:
		case <-done: // the test failed and left
		}
	}
	var wg sync.WaitGroup
	defer func() {
		close(done)
		close(steps)
		ln.Close()
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(nc)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					break
				}
				io.Copy(io.Discard, req.Body)
				st, ok := <-steps
				if !ok {
					break
				}
				body := fmt.Sprintf(`{"conn":%d}`, n)
				fmt.Fprintf(nc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				signal()
				if st.after != "" {
					<-steps // the bridge has read the answer: the connection is idle now
					io.WriteString(nc, st.after)
				}
				if st.close {
					nc.Close()
				}
				signal()
			}
			nc.Close()
		}
	}()
	u, _ := url.Parse("http://" + ln.Addr().String() + "/hook")
	hc := &hookConn{}
	defer hc.close()
	post := func(st step, want string) {
		t.Helper()
		steps <- st
		resp, body, err := hc.do(context.Background(), &hookRequest{url: u, body: []byte(`{}`)}, 1024)
		if err != nil || resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("answer %v %q %v, want %s", resp, body, err, want)
		}
		<-answered
		if st.after != "" {
			steps <- step{}
		}
		<-answered // everything the server does after the answer is done
	}
	post(step{}, `{"conn":0}`)
	post(step{}, `{"conn":0}`) // kept alive
	post(step{close: true}, `{"conn":0}`)
	post(step{after: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"conn\":9}"}, `{"conn":1}`) // redialled
	post(step{}, `{"conn":2}`)                                                                   // the unsolicited answer was not taken for this one
	post(step{}, `{"conn":2}`)
}

// Over TLS, a second response in its own record can be read ahead by crypto/tls with the first
// and wait there, where neither the buffer check nor the socket peek sees it: the next request
// must not be answered with it.
func TestHookConnTLSReadAhead(t *testing.T) {
	ca := httptest.NewTLSServer(http.NotFoundHandler()) // for its certificate, valid for 127.0.0.1
	serverTLS := ca.TLS.Clone()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	ca.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer func() {
		ln.Close()
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			held := &heldWrites{Conn: raw}
			tc := tls.Server(held, serverTLS)
			br := bufio.NewReader(tc)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					break
				}
				io.Copy(io.Discard, req.Body)
				answer := func(conn int) {
					body := fmt.Sprintf(`{"conn":%d}`, conn)
					fmt.Fprintf(tc, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				}
				// Two records in one TCP write: the answer, and a stale one for conn 9.
				held.hold = true
				answer(n)
				answer(9)
				held.hold = false
				if _, err := held.flush(); err != nil {
					break
				}
			}
			raw.Close()
		}
	}()
	u, _ := url.Parse("https://" + ln.Addr().String() + "/hook")
	hc := &hookConn{tlsConfig: &tls.Config{RootCAs: roots}}
	defer hc.close()
	for i := range 4 {
		resp, body, err := hc.do(context.Background(), &hookRequest{url: u, body: []byte(`{}`)}, 1024)
		// Each request finds the stale answer waiting and goes on a new connection.
		if want := fmt.Sprintf(`{"conn":%d}`, i); err != nil || resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("request %d answered %q (%v), want %s", i, body, err, want)
		}
	}
}

// heldWrites is a net.Conn whose writes can be held and sent as one.
type heldWrites struct {
	net.Conn
	hold bool
	buf  []byte
}

func (c *heldWrites) Write(p []byte) (int, error) {
	if c.hold {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *heldWrites) flush() (int, error) {
	n, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return n, err
}

// Any reply is read whole or refused whole: a refusal returns no answer, an answer keeps at
// most max+1 bytes of body, and a connection is reusable only when the answer ended exactly
// where the bytes did (nothing left behind for the next request).
func FuzzReplyReader(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x\r\n{}\r\n0\r\nT: 1\r\n\r\n",
		"HTTP/1.0 200 OK\r\nX: a\r\n b\r\n\r\n{\"send\":[]}",
		"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n{}HTTP/1.1 200 OK\r\n\r\n",
	} {
		f.Add([]byte(s), uint16(64))
	}
	f.Fuzz(func(t *testing.T, in []byte, max16 uint16) {
		max := int64(max16)
		src := bytes.NewReader(in)
		// One buffer for all the input, as if it had all arrived at once: whatever the answer
		// left unread is then in the buffer.
		rr := replyReader{br: bufio.NewReaderSize(src, len(in)+16)}
		resp, body, reusable, err := rr.read(max)
		if err != nil {
			if resp != nil || body != nil || reusable {
				t.Fatalf("refused (%v) with an answer", err)
			}
			return
		}
		if resp.StatusCode < 200 || resp.StatusCode > 599 || int64(len(body)) > max+1 || resp.Close == reusable {
			t.Fatalf("answer %d with %d bytes (max %d), reusable %v, Close %v", resp.StatusCode, len(body), max, reusable, resp.Close)
		}
		if reusable && (rr.br.Buffered() > 0 || src.Len() > 0) {
			t.Fatalf("reusable with %d bytes left behind", rr.br.Buffered()+src.Len())
		}
	})
}

// BenchmarkReplyRead compares reading a typical message reply (nginx in front of PHP-FPM)
// with net/http's ReadResponse, as the slots did before, and with the strict reader.
func BenchmarkReplyRead(b *testing.B) {
	reply := "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Wed, 02 Dec 2026 01:00:00 GMT\r\n" +
		"Content-Type: application/json\r\nContent-Length: 18\r\nConnection: keep-alive\r\n" +
		"X-Powered-By: PHP/8.2.7\r\n\r\n{\"send\":[\"hello\"]}"
	src := strings.NewReader(reply)
	br := bufio.NewReader(src)
	post := &http.Request{Method: http.MethodPost}
	b.Run("net-http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			src.Reset(reply)
			br.Reset(src)
			resp, err := http.ReadResponse(br, post)
			if err != nil {
				b.Fatal(err)
			}
			if body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20+1)); err != nil || len(body) != 18 {
				b.Fatal(err)
			}
		}
	})
	b.Run("strict", func(b *testing.B) {
		rr := replyReader{br: br}
		b.ReportAllocs()
		for b.Loop() {
			src.Reset(reply)
			br.Reset(src)
			if _, body, _, err := rr.read(1 << 20); err != nil || len(body) != 18 {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHookConnIdleCheck is the check made before each request on a kept-alive
// connection: the buffer, then one non-blocking peek at the socket.
func BenchmarkHookConnIdleCheck(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	if c := <-accepted; c != nil {
		defer c.Close()
	}
	hc := &hookConn{nc: nc, br: bufio.NewReader(nc), probe: newIdleProbe(nc)}
	b.ReportAllocs()
	for b.Loop() {
		if !hc.idle() {
			b.Fatal("not idle")
		}
	}
}
