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
	h := newHub("n", NewMemoryBroker())
	h.maxChannels = 100
	var full []string
	for i := range 100 {
		full = append(full, fmt.Sprint("c", i))
	}
	h.Add(&benchClient{id: "n.1"}, connInfo{ID: "n.1"}, &counters{}, "", nil, full)
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

// TestForwardedHeadersAreBounded: a handshake whose forwarded headers exceed
// MAX_FORWARDED_HEADER_BYTES is answered 431 before PHP is asked.
func TestForwardedHeadersAreBounded(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, acceptAll)
	b := newBridge(t, php, func(c *Config) { c.MaxForwardedHeaderBytes = 1000 })
	_, resp, err := b.dialErr(t, "big=1", http.Header{"Cookie": {"s=" + strings.Repeat("x", 2000)}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("2 KiB of cookies with a bound of 1000: %v %v, want 431", resp, err)
	}
	b.dial(t, "small=1")
	if q := php.next(t, EventOpen).Event.Request.Query; q != "small=1" {
		t.Errorf("PHP was asked to open a handshake with oversized headers (query %q)", q)
	}
}

// TestPublicServerBoundsHeaders: the public listener refuses a header block beyond
// MAX_HEADER_BYTES with 431 (net/http's default would read 1 MiB).
func TestPublicServerBoundsHeaders(t *testing.T) {
	t.Parallel()
	b := newBridge(t, newFakePHP(t, acceptAll), nil)
	hs := b.srv.publicServer()
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = hs // httptest's Close waits for every connection to end
	ts.Start()
	defer ts.Close()
	resp := rawRequest(t, ts.Listener.Addr().String(), "GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 200<<10)+"\r\n\r\n")
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("200 KiB of headers: status %d, want 431", resp.StatusCode)
	}
	if hs.ReadHeaderTimeout <= 0 {
		t.Errorf("public server has no ReadHeaderTimeout")
	}
}

// TestProxiedBodyIdleTimeout: a client that starts an upload and then sends nothing is cut off
// after PROXY_BODY_IDLE_TIMEOUT instead of holding a connection (and the app's worker) for ever.
func TestProxiedBodyIdleTimeout(t *testing.T) {
	t.Parallel()
	readErr := make(chan error, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
	}))
	defer app.Close()
	up, _ := url.Parse(app.URL)
	b := newBridge(t, newFakePHP(t, acceptAll), func(c *Config) { c.Upstream = up; c.ProxyBodyIdleTimeout = 50 * time.Millisecond })
	nc, err := net.Dial("tcp", b.public.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
	nc.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := io.Copy(io.Discard, nc); err != nil {
		t.Errorf("the stalled upload's connection was not ended by the bridge: %v", err)
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("the app read a complete body from a stalled upload")
		}
	case <-time.After(waitLimit):
		t.Error("the app is still waiting for the stalled upload")
	}
}

// TestTrustedProxies: the client address, remote_addr and the X-Forwarded-For PHP sees come
// from trusted hops only.
func TestTrustedProxies(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		env        []string
		header     http.Header
		wantXFF    string // in the open webhook
		wantRemote string // "" : the peer's ip:port
		wantProxy  string // X-Forwarded-For the upstream gets for the same headers
	}{
		{"untrusted peer: client XFF dropped", nil, http.Header{"X-Forwarded-For": {"198.51.100.7"}}, "127.0.0.1", "", "127.0.0.1"},
		{"untrusted peer with trusted list", []string{"WSBRIDGE_TRUSTED_PROXIES=10.0.0.0/8", "WSBRIDGE_CLIENT_IP_HEADER=X-Real-IP"},
			http.Header{"X-Forwarded-For": {"198.51.100.7"}, "X-Real-Ip": {"198.51.100.8"}}, "127.0.0.1", "", "127.0.0.1"},
		{"trusted peer: walk past trusted hops", []string{"WSBRIDGE_TRUSTED_PROXIES=127.0.0.1,10.0.0.0/8"},
			http.Header{"X-Forwarded-For": {"6.6.6.6, 203.0.113.9", "10.1.2.3"}}, "203.0.113.9, 10.1.2.3, 127.0.0.1", "203.0.113.9", "203.0.113.9, 10.1.2.3, 127.0.0.1"},
		{"trusted peer, every hop trusted", []string{"WSBRIDGE_TRUSTED_PROXIES=127.0.0.0/8,10.0.0.0/8"},
			http.Header{"X-Forwarded-For": {"10.9.9.9, 10.1.2.3"}}, "10.9.9.9, 10.1.2.3, 127.0.0.1", "10.9.9.9", "10.9.9.9, 10.1.2.3, 127.0.0.1"},
		{"trusted peer, garbage hop", []string{"WSBRIDGE_TRUSTED_PROXIES=127.0.0.0/8"},
			http.Header{"X-Forwarded-For": {"203.0.113.9, not-an-ip"}}, "127.0.0.1", "", "127.0.0.1"},
		{"trusted peer with X-Real-IP", []string{"WSBRIDGE_TRUSTED_PROXIES=127.0.0.1/32", "WSBRIDGE_CLIENT_IP_HEADER=X-Real-IP"},
			http.Header{"X-Real-Ip": {"203.0.113.5"}}, "127.0.0.1", "203.0.113.5", "127.0.0.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			seen := make(chan string, 1)
			app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen <- strings.Join(r.Header.Values("X-Forwarded-For"), ", ")
			}))
			defer app.Close()
			php := newFakePHP(t, acceptAll)
			cfg, err := LoadConfig(append([]string{"WSBRIDGE_WEBHOOK_URL=" + php.URL, "WSBRIDGE_UPSTREAM=" + app.URL}, tc.env...))
			if err != nil {
				t.Fatal(err)
			}
			b := startBridge(t, cfg, php, nil)
			if _, _, err := b.dialErr(t, "", tc.header); err != nil {
				t.Fatal(err)
			}
			req := php.next(t, EventOpen).Event.Request
			if got := req.Headers["X-Forwarded-For"]; got != tc.wantXFF {
				t.Errorf("open webhook X-Forwarded-For = %q, want %q", got, tc.wantXFF)
			}
			if tc.wantRemote == "" {
				if !strings.HasPrefix(req.RemoteAddr, "127.0.0.1:") {
					t.Errorf("remote_addr = %q, want the peer's", req.RemoteAddr)
				}
			} else if req.RemoteAddr != tc.wantRemote {
				t.Errorf("remote_addr = %q, want %q", req.RemoteAddr, tc.wantRemote)
			}
			if v := tc.header.Get("X-Real-Ip"); v != "" && req.Headers["X-Real-Ip"] != "" && tc.wantRemote != v {
				t.Errorf("X-Real-IP from an untrusted peer reached PHP")
			}
			preq, _ := http.NewRequest("GET", b.public.URL+"/page", nil)
			for k, vs := range tc.header {
				preq.Header[k] = vs
			}
			resp, err := http.DefaultClient.Do(preq)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := <-seen; got != tc.wantProxy {
				t.Errorf("upstream X-Forwarded-For = %q, want %q", got, tc.wantProxy)
			}
		})
	}
}

// TestPerAddressLimitsUseTheTrustedClient: MAX_CONNECTIONS_PER_IP counts the client a trusted
// proxy names, and a client cannot dodge it by sending its own X-Forwarded-For.
func TestPerAddressLimitsUseTheTrustedClient(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, acceptAll)
	cfg, err := LoadConfig([]string{"WSBRIDGE_WEBHOOK_URL=" + php.URL, "WSBRIDGE_TRUSTED_PROXIES=127.0.0.1", "WSBRIDGE_MAX_CONNECTIONS_PER_IP=1"})
	if err != nil {
		t.Fatal(err)
	}
	b := startBridge(t, cfg, php, nil)
	from := func(ip string) http.Header { return http.Header{"X-Forwarded-For": {ip}} }
	if _, _, err := b.dialErr(t, "", from("203.0.113.1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.dialErr(t, "", from("203.0.113.2")); err != nil {
		t.Errorf("a second client behind the trusted proxy: %v", err)
	}
	if _, resp, err := b.dialErr(t, "", from("203.0.113.1")); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the first client again: %v, want 429", err)
	}

	// Without a trusted proxy the peer is the client, whatever it claims.
	php2 := newFakePHP(t, acceptAll)
	b2 := newBridge(t, php2, func(c *Config) { c.MaxConnectionsPerIP = 1 })
	if _, _, err := b2.dialErr(t, "", from("203.0.113.1")); err != nil {
		t.Fatal(err)
	}
	if _, resp, err := b2.dialErr(t, "", from("203.0.113.2")); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a forged X-Forwarded-For dodged MAX_CONNECTIONS_PER_IP: %v", err)
	}
}

// TestPendingHandshakesPerAddress: no more than MAX_PENDING_HANDSHAKES_PER_IP upgrades of one
// address wait for PHP at once; one more gets 429 with Retry-After before PHP is asked.
func TestPendingHandshakesPerAddress(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var once sync.Once
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventOpen && c.Event.Request.Query == "slow" {
			<-release
		}
		return http.StatusNoContent, nil
	})
	// Registered after newFakePHP's, so it runs first: PHP's handlers return before it closes.
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	b := newBridge(t, php, func(c *Config) { c.MaxPendingHandshakesPerIP = 2 })
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, _, err := b.dialErr(t, "slow", nil)
			errs <- err
		}()
	}
	waitFor(t, "two opens waiting in PHP", func() bool {
		return metricValue(t, b.srv, "wsbridge_webhooks_in_flight") == 2
	})
	_, resp, err := b.dialErr(t, "third", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a third pending handshake: %v %v, want 429 with Retry-After", resp, err)
	}
	once.Do(func() { close(release) })
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("a pending handshake failed: %v", err)
		}
	}
	b.dial(t, "after") // the places are given back
	seen := map[string]int{}
	for range 3 {
		seen[php.next(t, EventOpen).Event.Request.Query]++
	}
	if seen["slow"] != 2 || seen["after"] != 1 {
		t.Errorf("PHP saw opens %v, want slow ×2 and after, never the refused third", seen)
	}
	if n := metricValue(t, b.srv, "wsbridge_connections_rejected_total", "reason", rejectHandshakeRate); n != 1 {
		t.Errorf("rejected{reason=%s} = %g, want 1", rejectHandshakeRate, n)
	}
}

// TestHandshakeRatePerAddress: every attempt counts, PHP's refusals too; beyond the burst the
// client gets 429 before PHP is asked.
func TestHandshakeRatePerAddress(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventOpen && c.Event.Request.Query == "nosession" {
			return http.StatusUnauthorized, "log in first"
		}
		return http.StatusNoContent, nil
	})
	// A rate so low that no token comes back during the test.
	b := newBridge(t, php, func(c *Config) { c.HandshakeRatePerIP = 0.001; c.HandshakeBurstPerIP = 3 })
	for range 2 {
		if _, resp, _ := b.dialErr(t, "nosession", nil); resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("refused by PHP: %v, want 401", resp)
		}
	}
	b.dial(t, "ok")
	_, resp, err := b.dialErr(t, "fourth", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a fourth handshake with burst 3: %v %v, want 429 with Retry-After", resp, err)
	}
	for _, q := range []string{"nosession", "nosession", "ok"} {
		if got := php.next(t, EventOpen).Event.Request.Query; got != q {
			t.Errorf("PHP saw open %q, want %q", got, q)
		}
	}
	select {
	case c := <-php.calls:
		if c.Event.Type == EventOpen {
			t.Errorf("PHP was asked about a handshake beyond the rate (query %q)", c.Event.Request.Query)
		}
	default:
	}
}

// TestHandshakeLimiterMemoryIsBounded: per-address buckets of addresses gone idle are evicted.
func TestHandshakeLimiterMemoryIsBounded(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	h := newHandshakeLimits(0, 10, 5)
	h.now = func() time.Time { return now }
	for i := range 100000 {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		done, limit := h.begin(ip)
		if limit != "" {
			t.Fatalf("first handshake of %s refused: %s", ip, limit)
		}
		done()
		now = now.Add(10 * time.Millisecond) // 100 new addresses per second, each idle after
	}
	if n := h.tracked(); n > 2*minSweep {
		t.Errorf("%d addresses tracked after 100,000 idle ones, want at most %d", n, 2*minSweep)
	}
	// A busy address is remembered: its bucket is not reset by a sweep.
	for range 5 {
		h.begin("192.0.2.1")
	}
	if _, limit := h.begin("192.0.2.1"); limit != "handshake_rate" {
		t.Errorf("sixth handshake with burst 5: %q, want handshake_rate", limit)
	}
}
