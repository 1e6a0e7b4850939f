package bridge

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
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
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hook", bytes.NewReader([]byte(`{}`)))
		if header != "" {
			req.Header.Set(header, "1")
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
	req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(nil))
	_, body, err := hc.do(context.Background(), req, 100)
	if err != nil || len(body) != 101 {
		t.Fatalf("got %d bytes, %v; want the limit plus one", len(body), err)
	}
	if hc.nc != nil {
		t.Error("the connection with an unread body was kept")
	}
}
