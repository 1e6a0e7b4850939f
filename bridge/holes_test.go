package bridge

// Tests for the smaller holes of issue 10 (section 5) and the per-address handshake limits of
// section 4: each was reproduced against main before its fix.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// rawRequest sends req as written to addr over a fresh TCP connection and returns the answer.
func rawRequest(t *testing.T, addr, req string) *http.Response {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", req, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

const goodKey = "dGhlIHNhbXBsZSBub25jZQ==" // RFC 6455's example: 16 bytes

func upgradeRequest(method, proto, path string, extra ...string) string {
	h := []string{method + " " + path + " " + proto, "Host: wsbridge.test"}
	h = append(h, extra...)
	return strings.Join(h, "\r\n") + "\r\n\r\n"
}

// TestHandshakeValidatedBeforeOpen: a handshake coder/websocket's Accept would refuse never
// reaches PHP, and is answered as RFC 6455 §4.2.1/§4.4 say (426 with the supported version).
func TestHandshakeValidatedBeforeOpen(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, acceptAll)
	b := newBridge(t, php, nil)
	addr := b.public.Listener.Addr().String()
	std := []string{"Connection: Upgrade", "Upgrade: websocket"}
	cases := []struct {
		name    string
		req     string
		status  int
		version string // the Sec-WebSocket-Version the answer must carry
	}{
		{"version 8", upgradeRequest("GET", "HTTP/1.1", "/ws", append(std, "Sec-WebSocket-Version: 8", "Sec-WebSocket-Key: "+goodKey)...), 426, "13"},
		{"no version", upgradeRequest("GET", "HTTP/1.1", "/ws", append(std, "Sec-WebSocket-Key: "+goodKey)...), 426, "13"},
		{"no key", upgradeRequest("GET", "HTTP/1.1", "/ws", append(std, "Sec-WebSocket-Version: 13")...), 400, ""},
		{"short key", upgradeRequest("GET", "HTTP/1.1", "/ws", append(std, "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: c2hvcnRrZXk=")...), 400, ""},
		{"key not base64", upgradeRequest("GET", "HTTP/1.1", "/ws", append(std, "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==")...), 400, ""},
		{"two keys", upgradeRequest("GET", "HTTP/1.1", "/ws", append(std, "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: "+goodKey, "Sec-WebSocket-Key: "+goodKey)...), 400, ""},
		{"HTTP/1.0", upgradeRequest("GET", "HTTP/1.0", "/ws", append(std, "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: "+goodKey)...), 426, ""},
		{"POST", upgradeRequest("POST", "HTTP/1.1", "/ws", append(std, "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: "+goodKey, "Content-Length: 0")...), 405, ""},
		{"no Upgrade token", upgradeRequest("GET", "HTTP/1.1", "/ws", "Connection: Upgrade", "Upgrade: h2c", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: "+goodKey), 426, ""},
	}
	for _, tc := range cases {
		resp := rawRequest(t, addr, tc.req)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
		if tc.version != "" && resp.Header.Get("Sec-WebSocket-Version") != tc.version {
			t.Errorf("%s: Sec-WebSocket-Version %q, want %q", tc.name, resp.Header.Get("Sec-WebSocket-Version"), tc.version)
		}
	}
	// Each refused request was answered before the next was sent; an open webhook for any of
	// them would have been queued before this one's.
	b.dial(t, "good=1")
	if q := php.next(t, EventOpen).Event.Request.Query; q != "good=1" {
		t.Errorf("PHP was asked to open a handshake that cannot succeed (query %q)", q)
	}
	if n := metricValue(t, b.srv, "wsbridge_connections_rejected_total", "reason", rejectBadHandshake); n != float64(len(cases)) {
		t.Errorf("rejected{reason=%s} = %g, want %d", rejectBadHandshake, n, len(cases))
	}
}

// TestClientLeavingDuringSlowOpenGetsItsClose: the open webhook is not cut when the client
// leaves, and when PHP then accepts, its close webhook follows (initiator client, 1006).
func TestClientLeavingDuringSlowOpenGetsItsClose(t *testing.T) {
	t.Parallel()
	cut := make(chan struct{}, 1)
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	calls := make(chan Event, 10)
	php := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev Event
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		if ev.Type == EventOpen {
			select {
			case <-r.Context().Done():
				cut <- struct{}{}
				return
			case <-release:
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"user_id":"u1","join":["room"]}`)
		} else {
			w.WriteHeader(http.StatusNoContent)
		}
		calls <- ev
	}))
	defer php.Close()
	cfg := testConfig(t, php.URL)
	var logs testkit.SyncBuffer
	srv := New(cfg, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	pub, _ := newServers(t, srv)

	nc, err := net.Dial("tcp", pub.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(nc, upgradeRequest("GET", "HTTP/1.1", "/ws", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: "+goodKey))
	nc.Close()
	// Polled as waitFor does; the bug shows as the open webhook being cut or given up.
	deadline := time.Now().Add(waitLimit)
	for !strings.Contains(logs.String(), "client left during the open webhook") {
		select {
		case <-cut:
			t.Fatal("the open webhook was cancelled because the client left")
		default:
		}
		if strings.Contains(logs.String(), "open webhook failed") {
			t.Fatal("the open webhook was given up because the client left")
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bridge did not notice the client leaving within %s", waitLimit)
		}
		time.Sleep(time.Millisecond)
	}
	once.Do(func() { close(release) })
	for {
		select {
		case ev := <-calls:
			if ev.Type != EventClose {
				continue
			}
			if *ev.Code != 1006 || ev.Initiator != InitiatorClient || ev.UserID != "u1" {
				t.Errorf("close webhook: code %d initiator %s user %q, want 1006 client u1", *ev.Code, ev.Initiator, ev.UserID)
			}
			return
		case <-cut:
			t.Fatal("the open webhook was cancelled because the client left")
		case <-time.After(waitLimit):
			t.Fatal("no close webhook for an open PHP accepted")
		}
	}
}

// TestLeaveDuplicatesDoNotBypassMaxChannels: naming a channel many times in "leave" frees one
// place, not one per repetition.
func TestLeaveDuplicatesDoNotBypassMaxChannels(t *testing.T) {
	t.Parallel()
	h := NewHub("n", NewMemoryBroker())
	h.maxChannels = 100
	var full []string
	for i := range 100 {
		full = append(full, fmt.Sprint("c", i))
	}
	h.Add(&benchClient{id: "n.1"}, ConnInfo{ID: "n.1"}, &Counters{}, "", nil, full)
	leave := make([]string, 99)
	for i := range leave {
		leave[i] = "c0"
	}
	var join []string
	for i := range 99 {
		join = append(join, fmt.Sprint("new", i))
	}
	err := h.Update("n.1", nil, nil, join, leave)
	if limitName(err) != "channels" {
		t.Errorf("leave c0 ×99 and join 99: err %v, want the channels limit", err)
	}
	if got := len(h.State("n.1").Channels); got != 100 {
		t.Errorf("connection is in %d channels, want the 100 it had", got)
	}
	// One real leave still makes room for one join.
	if err := h.Update("n.1", nil, nil, []string{"new0"}, []string{"c0", "c0"}); err != nil {
		t.Errorf("leave one, join one: %v", err)
	}
}

// TestBlankWebhookSecretIsAConfigError and the start-up warning without a secret.
func TestWebhookSecretBlankOrMissing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, key, value string
	}{
		{"blank secret", "WSBRIDGE_WEBHOOK_SECRET", "   "},
		{"blank token", "WSBRIDGE_API_TOKEN", " \t"},
	} {
		_, err := LoadConfig([]string{"WSBRIDGE_WEBHOOK_URL=http://127.0.0.1:9/", tc.key + "=" + tc.value})
		if err == nil || !strings.Contains(err.Error(), tc.key+": ") {
			t.Errorf("%s: err %v, want one naming %s", tc.name, err, tc.key)
		}
	}
	for _, secret := range []string{"", "s3cret"} {
		cfg := testConfig(t, "http://127.0.0.1:9/")
		cfg.WebhookSecret = secret
		var logs testkit.SyncBuffer
		New(cfg, slog.New(slog.NewJSONHandler(&logs, nil)), nil)
		warned := strings.Contains(logs.String(), `"level":"WARN"`) && strings.Contains(logs.String(), "WEBHOOK_SECRET")
		if warned != (secret == "") {
			t.Errorf("secret %q: warned %v; logs: %s", secret, warned, logs.String())
		}
	}
}

// TestProxyNeverForwardsToWebhookPaths: a forged webhook posted to the public port does not
// reach PHP's webhook endpoint through the reverse proxy.
func TestProxyNeverForwardsToWebhookPaths(t *testing.T) {
	t.Parallel()
	var reached atomic.Int32
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/page" {
			reached.Add(1)
		}
		io.WriteString(w, "page")
	}))
	defer app.Close()
	up, _ := url.Parse(app.URL)
	hook, _ := url.Parse(app.URL + "/hooks/ws.php")
	msg, _ := url.Parse(app.URL + "/hooks/message")
	php := newFakePHP(t, acceptAll)
	b := newBridge(t, php, func(c *Config) { c.Upstream, c.WebhookURL, c.WebhookMessageURL = up, hook, msg })
	for _, p := range []string{"/hooks/ws.php", "/hooks/ws.php/", "/hooks//ws.php", "/hooks/./ws.php", "/HOOKS/WS.php",
		"/hooks/%77s.php", "/hooks/ws.php/extra", "/hooks/message", "/hooks/message?x=1"} {
		resp, err := http.Post(b.public.URL+p, "application/json", strings.NewReader(`{"type":"message"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST %s: status %d, want 403", p, resp.StatusCode)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("%d forged webhook(s) reached the app", n)
	}
	resp, err := http.Get(b.public.URL + "/page")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /page: %d, want 200", resp.StatusCode)
	}
}

// TestInternalAPIRefusesBrowsers: without a token the internal API is protected from pages a
// browser on the same host loads (CSRF, DNS rebinding) by Origin, Sec-Fetch-Site, Content-Type
// and Host checks; the PHP kit's requests pass.
func TestInternalAPIRefusesBrowsers(t *testing.T) {
	t.Parallel()
	b := newBridge(t, newFakePHP(t, acceptAll), nil)
	_, port, _ := net.SplitHostPort(b.internal.Listener.Addr().String())
	pub := `{"to":{"all":true},"data":"x"}`
	cases := []struct {
		name, method, path, body string
		header                   map[string]string
		status                   int
		code                     string
	}{
		{"kit publish", "POST", "/v1/publish", pub, map[string]string{"Content-Type": "application/json", "Accept": "application/json"}, 200, ""},
		{"json with charset", "POST", "/v1/publish", pub, map[string]string{"Content-Type": "application/json; charset=utf-8"}, 200, ""},
		{"text/plain", "POST", "/v1/publish", pub, map[string]string{"Content-Type": "text/plain"}, 415, "unsupported_media_type"},
		{"no content type", "POST", "/v1/publish", pub, nil, 415, "unsupported_media_type"},
		{"form", "POST", "/v1/users/u/close", "code=1000", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"},
		{"close without body", "POST", "/v1/users/u/close", "", nil, 200, ""},
		{"origin", "POST", "/v1/publish", pub, map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}, 403, "forbidden"},
		{"origin on GET", "GET", "/v1/stats", "", map[string]string{"Origin": "null"}, 403, "forbidden"},
		{"cross-site fetch", "GET", "/v1/connections", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "forbidden"},
		{"same-site fetch", "GET", "/v1/connections", "", map[string]string{"Sec-Fetch-Site": "same-site"}, 403, "forbidden"},
		{"user-typed fetch", "GET", "/v1/connections", "", map[string]string{"Sec-Fetch-Site": "none"}, 200, ""},
		{"rebound host", "GET", "/v1/stats", "", map[string]string{"Host": "evil.example:" + port}, 403, "forbidden"},
		{"localhost", "GET", "/v1/stats", "", map[string]string{"Host": "localhost:" + port}, 200, ""},
		{"ipv6 loopback", "GET", "/v1/stats", "", map[string]string{"Host": "[::1]:" + port}, 200, ""},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, b.internal.URL+tc.path, strings.NewReader(tc.body))
		for k, v := range tc.header {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error, Detail string }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != tc.status || e.Error != tc.code || (tc.code != "" && e.Detail == "") {
			t.Errorf("%s: %d %q %q, want %d %q with a detail", tc.name, resp.StatusCode, e.Error, e.Detail, tc.status, tc.code)
		}
	}
}

// With a token the token is the protection: any Host passes, browsers are still refused.
func TestInternalAPIWithTokenAcceptsAnyHost(t *testing.T) {
	t.Parallel()
	b := newBridge(t, newFakePHP(t, acceptAll), func(c *Config) { c.APIToken = "tok" })
	for _, tc := range []struct {
		name, origin string
		status       int
	}{{"any host", "", 200}, {"origin", "http://evil.example", 403}} {
		req, _ := http.NewRequest("GET", b.internal.URL+"/v1/stats", nil)
		req.Host = "wsbridge.internal:8081"
		req.Header.Set("Authorization", "Bearer tok")
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
	}
}
