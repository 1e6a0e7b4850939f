package bridge

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
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
