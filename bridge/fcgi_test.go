package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/fcgi"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFCGIWebhookURLs(t *testing.T) {
	for _, tc := range []struct {
		name, url, err        string
		network, addr, script string
	}{
		{name: "tcp", url: "fcgi://127.0.0.1:9000/srv/app/ws-webhook.php", network: "tcp", addr: "127.0.0.1:9000", script: "/srv/app/ws-webhook.php"},
		{name: "tcp ipv6", url: "fcgi://[::1]:9000/srv/hook.php", network: "tcp", addr: "[::1]:9000", script: "/srv/hook.php"},
		{name: "unix", url: "fcgi+unix:///run/php/php-fpm.sock?script=/srv/app/ws-webhook.php", network: "unix", addr: "/run/php/php-fpm.sock", script: "/srv/app/ws-webhook.php"},
		{name: "unix script escaped", url: "fcgi+unix:///run/php.sock?script=%2Fsrv%2Fa%20b.php", network: "unix", addr: "/run/php.sock", script: "/srv/a b.php"},
		{name: "tcp without script", url: "fcgi://127.0.0.1:9000", err: "no script"},
		{name: "tcp script /", url: "fcgi://127.0.0.1:9000/", err: "no script"},
		{name: "tcp without port", url: "fcgi://127.0.0.1/srv/hook.php", err: "with host and port"},
		{name: "tcp bad port", url: "fcgi://127.0.0.1:99999/srv/hook.php", err: "bad port"},
		{name: "tcp with a query", url: "fcgi://127.0.0.1:9000/srv/hook.php?script=/x.php", err: `unknown query parameters "script"`},
		{name: "tcp dot segments", url: "fcgi://127.0.0.1:9000/srv/../etc/hook.php", err: "not clean"},
		{name: "tcp NUL in script", url: "fcgi://127.0.0.1:9000/srv/hook.php%00.txt", err: "NUL"},
		{name: "user info", url: "fcgi://u:p@127.0.0.1:9000/srv/hook.php", err: "without user info"},
		{name: "fragment", url: "fcgi://127.0.0.1:9000/srv/hook.php#x", err: "without user info or fragment"},
		{name: "unix without script", url: "fcgi+unix:///run/php.sock", err: "exactly one script="},
		{name: "unix empty script", url: "fcgi+unix:///run/php.sock?script=", err: "exactly one script="},
		{name: "unix two scripts", url: "fcgi+unix:///run/php.sock?script=/a.php&script=/b.php", err: "exactly one script="},
		{name: "unix relative script", url: "fcgi+unix:///run/php.sock?script=app/hook.php", err: "relative path"},
		{name: "unix relative socket", url: "fcgi+unix:run/php.sock?script=/a.php", err: "without user info"},
		{name: "unix with a host", url: "fcgi+unix://run/php.sock?script=/a.php", err: "three slashes"},
		{name: "unix unknown parameter", url: "fcgi+unix:///run/php.sock?script=/a.php&root=/srv", err: `unknown query parameters`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			target, err := parseFCGIURL(u)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parseFCGIURL(%s) = %v, want an error with %q", tc.url, err, tc.err)
				}
				// The same error reaches the operator through LoadConfig, naming the variable.
				_, cerr := LoadConfig([]string{"WSBRIDGE_WEBHOOK_MESSAGE_URL=" + tc.url, "WSBRIDGE_WEBHOOK_URL=" + testWebhookURL})
				checkProblems(t, cerr, map[string]string{"WSBRIDGE_WEBHOOK_MESSAGE_URL": tc.err})
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if target.network != tc.network || target.addr != tc.addr || target.script != tc.script {
				t.Errorf("got %s %s %s, want %s %s %s", target.network, target.addr, target.script, tc.network, tc.addr, tc.script)
			}
			if _, err := LoadConfig([]string{"WSBRIDGE_WEBHOOK_URL=" + tc.url}); err != nil {
				t.Errorf("LoadConfig refuses %s: %v", tc.url, err)
			}
		})
	}
	_, err := LoadConfig([]string{"WSBRIDGE_WEBHOOK_URL=ftp://php.test/hook"})
	checkProblems(t, err, map[string]string{"WSBRIDGE_WEBHOOK_URL": "or a FastCGI URL"})
}

// fcgiRecord is one record as a test server reads or writes it.
type fcgiRecord struct {
	typ     byte
	id      uint16
	content []byte
}

func readFCGIRecord(br *bufio.Reader) (fcgiRecord, error) {
	var h [8]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return fcgiRecord{}, err
	}
	if h[0] != 1 {
		return fcgiRecord{}, errors.New("bad version")
	}
	r := fcgiRecord{typ: h[1], id: binary.BigEndian.Uint16(h[2:]), content: make([]byte, binary.BigEndian.Uint16(h[4:]))}
	if _, err := io.ReadFull(br, r.content); err != nil {
		return r, err
	}
	_, err := br.Discard(int(h[6]))
	return r, err
}

// rec encodes one record with pad bytes of padding.
func rec(typ byte, id uint16, content string, pad int) string {
	b := appendFCGIHeader(nil, typ, id, len(content))
	b[6] = byte(pad)
	return string(b) + content + strings.Repeat("\x00", pad)
}

// endRec is an FCGI_END_REQUEST with protocol status st.
func endRec(id uint16, st byte) string {
	return rec(fcgiEndRequest, id, "\x00\x00\x00\x00"+string(st)+"\x00\x00\x00", 0)
}

// parseFCGIParams decodes a params stream, as PHP-FPM does.
func parseFCGIParams(b []byte) (map[string]string, error) {
	m := map[string]string{}
	readLen := func() (int, error) {
		if len(b) == 0 {
			return 0, io.ErrUnexpectedEOF
		}
		if b[0] < 128 {
			n := int(b[0])
			b = b[1:]
			return n, nil
		}
		if len(b) < 4 {
			return 0, io.ErrUnexpectedEOF
		}
		n := int(binary.BigEndian.Uint32(b) &^ (1 << 31))
		b = b[4:]
		return n, nil
	}
	for len(b) > 0 {
		nl, err := readLen()
		if err != nil {
			return nil, err
		}
		vl, err := readLen()
		if err != nil {
			return nil, err
		}
		if len(b) < nl+vl {
			return nil, io.ErrUnexpectedEOF
		}
		m[string(b[:nl])] = string(b[nl : nl+vl])
		b = b[nl+vl:]
	}
	return m, nil
}

// The request records: begin with keep-conn, params PHP needs, headers as HTTP_*, a body longer
// than one record split over several stdin records, each stream ended by an empty record.
func TestFCGIRequestRecords(t *testing.T) {
	u, _ := url.Parse("fcgi://127.0.0.1:9000/srv/app/hook.php")
	target, err := parseFCGIURL(u)
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("x"), 70000)
	req := &hookRequest{body: body, header: []headerField{{"Content-Type", "application/json"}, {HeaderSignature, "t=1,v1=ab"}, {HeaderEventID, "e1"}, {"Traceparent", "00-x"}}}
	long := strings.Repeat("v", 200) // a value over 127 bytes takes the four-byte length
	req.header = append(req.header, headerField{"X-Long", long})
	b, err := appendFCGIRequest(nil, 7, target.params, appendFCGIPair(nil, "REMOTE_ADDR", "127.0.0.1"), req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(bytes.NewReader(b))
	var recs []fcgiRecord
	for {
		r, err := readFCGIRecord(br)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.id != 7 {
			t.Fatalf("record with id %d, want 7", r.id)
		}
		recs = append(recs, r)
	}
	wantTypes := []byte{fcgiBeginRequest, fcgiParams, fcgiParams, fcgiStdin, fcgiStdin, fcgiStdin}
	if len(recs) != len(wantTypes) {
		t.Fatalf("%d records, want %d", len(recs), len(wantTypes))
	}
	for i, r := range recs {
		if r.typ != wantTypes[i] {
			t.Fatalf("record %d has type %d, want %d", i, r.typ, wantTypes[i])
		}
	}
	if got := recs[0].content; !bytes.Equal(got, []byte{0, fcgiResponder, fcgiKeepConn, 0, 0, 0, 0, 0}) {
		t.Errorf("begin request body %v, want responder with FCGI_KEEP_CONN", got)
	}
	params, err := parseFCGIParams(recs[1].content)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"SCRIPT_FILENAME": "/srv/app/hook.php", "SCRIPT_NAME": "/hook.php", "REQUEST_URI": "/hook.php",
		"REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "70000",
		"QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1", "GATEWAY_INTERFACE": "CGI/1.1",
		"SERVER_SOFTWARE": "wsbridge", "REMOTE_ADDR": "127.0.0.1", "DOCUMENT_ROOT": "/srv/app",
		"HTTP_WSBRIDGE_SIGNATURE": "t=1,v1=ab", "HTTP_WSBRIDGE_EVENT_ID": "e1", "HTTP_TRACEPARENT": "00-x",
		"HTTP_X_LONG": long,
	} {
		if got, ok := params[k]; !ok || got != v {
			t.Errorf("param %s = %q (set %v), want %q", k, got, ok, v)
		}
	}
	if _, ok := params["HTTP_CONTENT_TYPE"]; ok {
		t.Error("Content-Type went as HTTP_CONTENT_TYPE too; CGI has it as CONTENT_TYPE only")
	}
	if len(recs[2].content) != 0 || len(recs[5].content) != 0 {
		t.Error("the params and stdin streams do not end with an empty record")
	}
	if got := append(recs[3].content, recs[4].content...); !bytes.Equal(got, body) {
		t.Errorf("stdin carries %d bytes, want the %d of the body", len(got), len(body))
	}
}

// fcgiPipeConn is an fcgiConn reading canned server bytes.
func fcgiPipeConn(t *testing.T, id uint16, server string) *fcgiConn {
	t.Helper()
	c := &fcgiConn{id: id, br: bufio.NewReader(strings.NewReader(server))}
	return c
}

func TestFCGIReadAnswer(t *testing.T) {
	const id = 3
	ok := "Status: 201 Created\r\nContent-Type: application/json\r\n\r\n{}"
	for _, tc := range []struct {
		name   string
		server string
		err    string // "" for an answer
		status int
		body   string
		stderr string
	}{
		{name: "one stdout record", server: rec(fcgiStdout, id, ok, 0) + rec(fcgiStdout, id, "", 0) + endRec(id, 0), status: 201, body: "{}"},
		{name: "padded records", server: rec(fcgiStdout, id, ok, 5) + rec(fcgiStdout, id, "", 3) + rec(fcgiEndRequest, id, "\x00\x00\x00\x00\x00\x00\x00\x00", 7), status: 201, body: "{}"},
		{name: "stdout split mid-line", server: rec(fcgiStdout, id, ok[:9], 0) + rec(fcgiStdout, id, ok[9:], 0) + endRec(id, 0), status: 201, body: "{}"},
		{name: "no Status is 200", server: rec(fcgiStdout, id, "Content-Type: text/plain\n\nhi", 0) + endRec(id, 0), status: 200, body: "hi"},
		{name: "Location is 302", server: rec(fcgiStdout, id, "Location: /x\r\n\r\n", 0) + endRec(id, 0), status: 302},
		{name: "stderr logged", server: rec(fcgiStderr, id, "PHP Warning: x", 0) + rec(fcgiStdout, id, ok, 0) + endRec(id, 0), status: 201, body: "{}", stderr: "PHP Warning: x"},
		{name: "matching Content-Length", server: rec(fcgiStdout, id, "Content-Length: 2\r\n\r\n{}", 0) + endRec(id, 0), status: 200, body: "{}"},
		{name: "lying Content-Length", server: rec(fcgiStdout, id, "Content-Length: 3\r\n\r\n{}", 0) + endRec(id, 0), err: "Content-Length 3"},
		{name: "bad version", server: "\x02" + rec(fcgiStdout, id, ok, 0)[1:] + endRec(id, 0), err: "record version 2"},
		{name: "other request id", server: rec(fcgiStdout, id-1, ok, 0) + endRec(id, 0), err: "record for request 2 while 3 is out"},
		{name: "management record", server: rec(10, 0, "", 0), err: "record for request 0"},
		{name: "unknown record type", server: rec(11, id, "\x0c\x00\x00\x00\x00\x00\x00\x00", 0) + endRec(id, 0), err: "unexpected record type 11"},
		{name: "client record type from the server", server: rec(fcgiStdin, id, "", 0) + endRec(id, 0), err: "unexpected record type 5"},
		{name: "short header", server: rec(fcgiStdout, id, ok, 0)[:5], err: "short record header"},
		{name: "short content", server: rec(fcgiStdout, id, ok, 0)[:12], err: "reading stdout"},
		{name: "padding cut short", server: rec(fcgiStdout, id, ok, 8)[:8+len(ok)+3], err: "record cut short"},
		{name: "padding lies", server: rec(fcgiStdout, id, ok, 0)[:6] + "\x09\x00" + ok + endRec(id, 0) + endRec(id, 0), err: "record"},
		{name: "stdout after its end", server: rec(fcgiStdout, id, ok, 0) + rec(fcgiStdout, id, "", 0) + rec(fcgiStdout, id, "x", 0) + endRec(id, 0), err: "stdout after the end"},
		{name: "second response in the buffer", server: rec(fcgiStdout, id, ok, 0) + endRec(id, 0) + rec(fcgiStdout, id, ok, 0) + endRec(id, 0), err: "bytes after the end of the request"},
		{name: "end-request too short", server: rec(fcgiStdout, id, ok, 0) + rec(fcgiEndRequest, id, "\x00\x00", 0), err: "end-request body of 2 bytes"},
		{name: "overloaded", server: endRec(id, 2), err: "overloaded"},
		{name: "cannot multiplex", server: endRec(id, 1), err: "cannot multiplex"},
		{name: "unknown protocol status", server: endRec(id, 9), err: "unknown status 9"},
		{name: "no head end", server: rec(fcgiStdout, id, "Status: 200 OK\r\n", 0) + endRec(id, 0), err: "CGI response head"},
		{name: "bad Status", server: rec(fcgiStdout, id, "Status: abc\r\n\r\n", 0) + endRec(id, 0), err: "bad Status"},
		{name: "1xx Status", server: rec(fcgiStdout, id, "Status: 101 Switching\r\n\r\n", 0) + endRec(id, 0), err: "Status 101"},
		{name: "two Status fields", server: rec(fcgiStdout, id, "Status: 200\r\nStatus: 500\r\n\r\n", 0) + endRec(id, 0), err: "2 Status fields"},
		{name: "Transfer-Encoding", server: rec(fcgiStdout, id, "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0) + endRec(id, 0), err: "Transfer-Encoding"},
		{name: "space before the colon", server: rec(fcgiStdout, id, "Status : 200\r\n\r\n", 0) + endRec(id, 0), err: "header name"},
		{name: "closed before any record", server: "", err: "EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fcgiPipeConn(t, id, tc.server)
			full, _, err := c.readAnswer(maxReplyHeadBytes + 1<<20 + 1)
			if err == nil {
				var r *http.Response
				var b []byte
				if r, b, err = c.parseStdout(1 << 20); err == nil {
					if r.StatusCode != tc.status || string(b) != tc.body || full {
						t.Errorf("answer %d %q (full %v), want %d %q", r.StatusCode, b, full, tc.status, tc.body)
					}
					if _, ok := r.Header["Status"]; ok {
						t.Error("the Status field is left in the header")
					}
				}
			}
			if tc.err == "" {
				if err != nil {
					t.Fatalf("error %v, want an answer", err)
				}
				if string(c.stderr) != tc.stderr {
					t.Errorf("stderr %q, want %q", c.stderr, tc.stderr)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one with %q", err, tc.err)
			}
		})
	}
}

// Bounds: stdout past the head bound and the body limit stops being read; stderr past its log
// bound is counted, not kept; a head past 64 KiB is refused.
func TestFCGIBounds(t *testing.T) {
	const id = 1
	big := strings.Repeat("a", 60000)
	var sb strings.Builder
	sb.WriteString(rec(fcgiStdout, id, "Status: 200 OK\r\n\r\n", 0))
	for range 20 {
		sb.WriteString(rec(fcgiStdout, id, big, 0))
	}
	sb.WriteString(endRec(id, 0))
	c := fcgiPipeConn(t, id, sb.String())
	const max = 100000
	full, _, err := c.readAnswer(maxReplyHeadBytes + max + 1)
	if err != nil || !full {
		t.Fatalf("readAnswer = %v, full %v; want it to stop at the limit", err, full)
	}
	if len(c.out) != maxReplyHeadBytes+max+1 {
		t.Errorf("kept %d bytes of stdout, want %d", len(c.out), maxReplyHeadBytes+max+1)
	}
	_, body, err := c.parseStdout(max)
	if err != nil || len(body) != max+1 {
		t.Errorf("parseStdout kept %d bytes (%v), want max+1 = %d for the caller to refuse", len(body), err, max+1)
	}

	c = fcgiPipeConn(t, id, rec(fcgiStderr, id, big, 0)+rec(fcgiStderr, id, big, 0)+rec(fcgiStdout, id, "\r\n", 0)+endRec(id, 0))
	if _, _, err := c.readAnswer(1 << 20); err != nil {
		t.Fatal(err)
	}
	if len(c.stderr) != fcgiStderrLogBytes || c.dropped != 2*len(big)-fcgiStderrLogBytes {
		t.Errorf("stderr kept %d, dropped %d; want %d and %d", len(c.stderr), c.dropped, fcgiStderrLogBytes, 2*len(big)-fcgiStderrLogBytes)
	}

	sb.Reset()
	sb.WriteString(rec(fcgiStdout, id, "X-Big: ", 0))
	for range 2 {
		sb.WriteString(rec(fcgiStdout, id, big, 0))
	}
	sb.WriteString(rec(fcgiStdout, id, "\r\n\r\n{}", 0) + endRec(id, 0))
	c = fcgiPipeConn(t, id, sb.String())
	if _, _, err := c.readAnswer(1 << 20); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.parseStdout(1 << 20); !errors.Is(err, errFCGI) || !strings.Contains(err.Error(), "exceed") {
		t.Errorf("a 120 KB header: %v, want the head bound's error", err)
	}
}

// Any FastCGI answer is read whole or refused whole: a refusal returns no answer; an answer
// has a final status, at most max+1 bytes of body, and left nothing behind that a next request
// could read as its own, unless it was cut at the limit (then the connection is closed).
func FuzzFCGIAnswer(f *testing.F) {
	for _, s := range []string{
		rec(fcgiStdout, 1, "Status: 200 OK\r\nContent-Type: application/json\r\n\r\n{}", 0) + rec(fcgiStdout, 1, "", 0) + endRec(1, 0),
		rec(fcgiStderr, 1, "PHP Warning", 3) + rec(fcgiStdout, 1, "Content-Length: 2\n\n{}", 1) + endRec(1, 0),
		rec(fcgiStdout, 1, "Location: /x\r\n\r\n", 0) + endRec(1, 0) + endRec(1, 0),
		rec(fcgiStdout, 2, "\r\n", 0) + endRec(1, 2),
	} {
		f.Add([]byte(s), uint16(64))
	}
	f.Fuzz(func(t *testing.T, in []byte, max16 uint16) {
		max := int64(max16)
		src := bytes.NewReader(in)
		c := &fcgiConn{id: 1, br: bufio.NewReaderSize(src, len(in)+16)}
		full, _, err := c.readAnswer(maxReplyHeadBytes + max + 1)
		if err != nil {
			return
		}
		if !full && c.br.Buffered() > 0 {
			t.Fatalf("answer taken with %d bytes after it", c.br.Buffered())
		}
		resp, body, err := c.parseStdout(max)
		if err != nil {
			if resp != nil || body != nil {
				t.Fatalf("refused (%v) with an answer", err)
			}
			return
		}
		if resp.StatusCode < 200 || resp.StatusCode > 599 || int64(len(body)) > max+1 {
			t.Fatalf("answer %d with %d bytes (max %d)", resp.StatusCode, len(body), max)
		}
		if _, ok := resp.Header["Status"]; ok {
			t.Fatal("Status left in the header")
		}
	})
}

// startGoFCGI serves h with Go's own FastCGI server (net/http/fcgi), an implementation of the
// other side written independently of this client.
func startGoFCGI(tb testing.TB, h http.Handler) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fcgi.Serve(ln, h)
	}()
	tb.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// Against net/http/fcgi: the webhook headers arrive as request headers (from the HTTP_*
// params), the body whole, the reply's status, headers and body come back, and one connection
// carries every request.
func TestFCGIAgainstGoServer(t *testing.T) {
	var conns sync.Map
	addr := startGoFCGI(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conns.Store(r.RemoteAddr, true)
		body, _ := io.ReadAll(r.Body)
		env := fcgi.ProcessEnv(r)
		if r.Method != http.MethodPost || r.Header.Get(HeaderEventID) == "" || env["SCRIPT_FILENAME"] != "/srv/app/hook.php" ||
			r.ContentLength != int64(len(body)) || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("request %s %v %v (%d bytes)", r.Method, r.Header, env, len(body))
		}
		w.Header().Set(HeaderEventID, r.Header.Get(HeaderEventID))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		w.Write(body)
	}))
	target, err := parseFCGIURL(mustParseURL(t, "fcgi://"+addr+"/srv/app/hook.php"))
	if err != nil {
		t.Fatal(err)
	}
	// The same URL resolved again, as each event type's is: the same connection serves both.
	again, _ := parseFCGIURL(mustParseURL(t, "fcgi://"+addr+"/srv/app/hook.php"))
	var c fcgiConn
	defer c.close()
	for i := range 5 {
		body := []byte(`{"n":` + strings.Repeat("1", i*30000+1) + `}`) // up to two stdin records
		req := &hookRequest{body: body, header: []headerField{{"Content-Type", "application/json"}, {HeaderEventID, "ev" + string(rune('a'+i))}}}
		tg := target
		if i%2 == 1 {
			tg = again
		}
		resp, got, err := c.do(context.Background(), tg, req, 1<<20, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if resp.StatusCode != http.StatusAccepted || !bytes.Equal(got, body) || resp.Header.Get(HeaderEventID) != "ev"+string(rune('a'+i)) {
			t.Fatalf("request %d: %d %v, %d bytes back of %d", i, resp.StatusCode, resp.Header, len(got), len(body))
		}
	}
	n := 0
	conns.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Errorf("%d connections for 5 requests, want 1 kept alive", n)
	}
}

// cannedFCGI is a FastCGI responder that answers every request with one canned reply, reading
// the request into a reused buffer: as little as a server can cost, so that a benchmark
// measures the bridge's side (net/http/fcgi allocates tens of KiB per request).
func cannedFCGI(tb testing.TB, cgi string) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open[nc] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				br := bufio.NewReader(nc)
				var h [8]byte
				buf := make([]byte, 65536+255)
				var out []byte
				for {
					if _, err := io.ReadFull(br, h[:]); err != nil {
						return
					}
					n := int(binary.BigEndian.Uint16(h[4:])) + int(h[6])
					if _, err := io.ReadFull(br, buf[:n]); err != nil {
						return
					}
					if h[1] == fcgiStdin && n == int(h[6]) {
						id := binary.BigEndian.Uint16(h[2:])
						out = appendFCGIHeader(out[:0], fcgiStdout, id, len(cgi))
						out = append(out, cgi...)
						out = appendFCGIHeader(out, fcgiStdout, id, 0)
						out = appendFCGIHeader(out, fcgiEndRequest, id, 8)
						out = append(out, 0, 0, 0, 0, 0, 0, 0, 0)
						if _, err := nc.Write(out); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for nc := range open {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// BenchmarkMessageWebhookExchangeFCGI is BenchmarkMessageWebhookExchange over direct FastCGI,
// a canned responder on loopback standing in for PHP-FPM.
func BenchmarkMessageWebhookExchangeFCGI(b *testing.B) {
	addr := cannedFCGI(b, "X-Powered-By: PHP/8.2.7\r\nContent-Type: application/json\r\n\r\n{\"send\":[\"hello\"]}")
	benchMessageExchange(b, benchServer(b, "WSBRIDGE_WEBHOOK_URL=fcgi://"+addr+"/srv/app/hook.php"))
}

// BenchmarkFCGIAnswer is the client's side of reading one answer: records, CGI head, body.
func BenchmarkFCGIAnswer(b *testing.B) {
	answer := rec(fcgiStdout, 1, "X-Powered-By: PHP/8.2.7\r\nContent-Type: application/json\r\n\r\n{\"send\":[\"hello\"]}", 0) +
		rec(fcgiStdout, 1, "", 0) + endRec(1, 0)
	src := strings.NewReader(answer)
	c := &fcgiConn{id: 1, br: bufio.NewReader(src)}
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(answer)
		c.br.Reset(src)
		if _, _, err := c.readAnswer(1 << 20); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.parseStdout(1 << 20); err != nil {
			b.Fatal(err)
		}
	}
}

// Params that would not fit one record (PHP-FPM reads pairs record by record) are refused
// before anything is written, not split or truncated.
func TestFCGIHugeParams(t *testing.T) {
	target, err := parseFCGIURL(mustParseURL(t, "fcgi://127.0.0.1:9000/srv/hook.php"))
	if err != nil {
		t.Fatal(err)
	}
	req := &hookRequest{body: []byte(`{}`), header: []headerField{{"X-Big", strings.Repeat("v", fcgiMaxContent)}}}
	if _, err := appendFCGIRequest(nil, 1, target.params, nil, req); err == nil || !strings.Contains(err.Error(), "exceed one record") {
		t.Fatalf("appendFCGIRequest = %v, want the params bound's error", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer nc.Close()
		n, _ := io.Copy(io.Discard, nc)
		got <- int(n)
	}()
	target, _ = parseFCGIURL(mustParseURL(t, "fcgi://"+ln.Addr().String()+"/srv/hook.php"))
	var c fcgiConn
	if _, _, err := c.do(context.Background(), target, req, 1<<20, nil); err == nil {
		t.Fatal("a request with oversize params was sent")
	}
	if c.nc != nil {
		t.Error("the connection was kept")
	}
	select {
	case n := <-got:
		if n != 0 {
			t.Errorf("%d bytes reached the server, want none", n)
		}
	case <-time.After(waitLimit):
		t.Fatal("the connection stayed open")
	}
}
