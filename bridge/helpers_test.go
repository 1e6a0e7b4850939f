package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait in these tests; it is a guard against hangs, not a timing claim.
const waitLimit = 10 * time.Second

// hookCall is one webhook as the fake PHP received it.
type hookCall struct {
	Event  Event
	Header http.Header
	Body   []byte
}

// fakePHP is an in-process webhook endpoint. handle decides each answer; every call is also
// sent to calls (buffered generously so handlers never block on the test).
type fakePHP struct {
	*httptest.Server
	calls  chan hookCall
	mu     sync.Mutex
	handle func(hookCall) (int, any)
}

func newFakePHP(t *testing.T, handle func(hookCall) (int, any)) *fakePHP {
	t.Helper()
	p := &fakePHP{calls: make(chan hookCall, 100000), handle: handle}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev Event
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("webhook body is not an Event: %v: %s", err, body)
		}
		call := hookCall{Event: ev, Header: r.Header.Clone(), Body: body}
		p.mu.Lock()
		h := p.handle
		p.mu.Unlock()
		status, reply := http.StatusNoContent, any(nil)
		if h != nil {
			status, reply = h(call)
		}
		p.calls <- call
		switch v := reply.(type) {
		case nil:
			w.WriteHeader(status)
		case string:
			w.WriteHeader(status)
			io.WriteString(w, v)
		case []byte:
			w.WriteHeader(status)
			w.Write(v)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(v)
		}
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *fakePHP) setHandler(h func(hookCall) (int, any)) {
	p.mu.Lock()
	p.handle = h
	p.mu.Unlock()
}

// next returns the next webhook of type typ (for any connection), skipping others.
func (p *fakePHP) next(t *testing.T, typ EventType) hookCall {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case c := <-p.calls:
			if c.Event.Type == typ {
				return c
			}
		case <-deadline:
			t.Fatalf("no %s webhook within %s", typ, waitLimit)
		}
	}
}

// nextFor returns the next webhook of type typ (any type when typ is "") for connection id.
func (p *fakePHP) nextFor(t *testing.T, typ EventType, id string) hookCall {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case c := <-p.calls:
			if (typ == "" || c.Event.Type == typ) && c.Event.ConnectionID == id {
				return c
			}
		case <-deadline:
			t.Fatalf("no %s webhook for %s within %s", typ, id, waitLimit)
		}
	}
}

// testBridge is a Server with its public and internal listeners on real loopback HTTP.
type testBridge struct {
	srv      *Server
	public   *httptest.Server
	internal *httptest.Server
	php      *fakePHP
	wsURL    string
}

func testConfig(t *testing.T, webhook string) Config {
	t.Helper()
	cfg, err := LoadConfig([]string{"WSBRIDGE_WEBHOOK_URL=" + webhook})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newBridge starts a bridge in front of php; tweak may change the configuration first.
func newBridge(t *testing.T, php *fakePHP, tweak func(*Config)) *testBridge {
	t.Helper()
	cfg := testConfig(t, php.URL)
	if tweak != nil {
		tweak(&cfg)
	}
	return startBridge(t, cfg, php, nil)
}

func startBridge(t *testing.T, cfg Config, php *fakePHP, broker *MemoryBroker) *testBridge {
	t.Helper()
	log := testLog(t)
	var br Broker
	if broker != nil {
		br = broker
	}
	srv := New(cfg, log, br)
	b := &testBridge{srv: srv, php: php}
	if broker != nil {
		t.Cleanup(broker.Join(srv.Node(), srv.hub.Deliver))
	}
	b.public, b.internal = newServers(t, srv)
	b.wsURL = "ws" + strings.TrimPrefix(b.public.URL, "http") + cfg.WSPaths[0]
	return b
}

// newServers serves srv's public and internal handlers on loopback until the test ends, then
// shuts srv down.
func newServers(t *testing.T, srv *Server) (public, internal *httptest.Server) {
	public = httptest.NewServer(srv.PublicHandler())
	internal = httptest.NewServer(srv.InternalHandler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		public.Close()
		internal.Close()
	})
	return public, internal
}

// testWriter sends logs to t.Log so they show only for failing tests.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// dial opens a WebSocket to the bridge; query is appended to the URL.
func (b *testBridge) dial(t *testing.T, query string) *websocket.Conn {
	t.Helper()
	c, _, err := b.dialErr(t, query, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

func (b *testBridge) dialErr(t *testing.T, query string, h http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	u := b.wsURL
	if query != "" {
		u += "?" + query
	}
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h})
	if err == nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

// openConn dials and returns the client with the connection id from the open webhook.
func (b *testBridge) openConn(t *testing.T, query string) (*websocket.Conn, string) {
	t.Helper()
	c := b.dial(t, query)
	return c, b.php.next(t, EventOpen).Event.ConnectionID
}

// api calls the internal API and decodes the JSON answer into out (when non-nil).
func (b *testBridge) api(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	default:
		j, _ := json.Marshal(v)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, b.internal.URL+path, rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json") // as the PHP kit sends it
	}
	if b.srv.cfg.APIToken != "" {
		req.Header.Set("Authorization", "Bearer "+b.srv.cfg.APIToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: answer %q is not JSON: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode
}

// read returns the next text message on c.
func read(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func write(t *testing.T, c *websocket.Conn, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readClose reads until the connection closes and returns its close status and reason.
func readClose(t *testing.T, c *websocket.Conn) websocket.CloseError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("connection ended without a close frame: %v", err)
		}
		return ce
	}
}

// fakeClock is a clock for tests that moves only when told (the log throttle's windows, the
// certificate reloader's gate), so a test steps past an interval without waiting for it.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// serveLoopback runs srv.Serve in the background on two fresh loopback listeners, as the
// process does; cancel ends Serve's context and done delivers what Serve returned.
func serveLoopback(t *testing.T, srv *Server) (public, internal net.Listener, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	public, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	internal, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		public.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- srv.Serve(ctx, public, internal) }()
	return public, internal, cancel, result
}

// testLog logs to the test at debug level, or nowhere under WSBRIDGE_TEST_QUIET.
func testLog(t *testing.T) *slog.Logger {
	if os.Getenv("WSBRIDGE_TEST_QUIET") != "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
