package bridge

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func acceptAll(hookCall) (int, any) { return http.StatusNoContent, nil }

func TestOpenWebhookCarriesHandshake(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, acceptAll)
	b := newBridge(t, php, func(c *Config) { c.WebhookSecret = "s3cret" })

	h := http.Header{}
	h.Set("Cookie", "PHPSESSID=abc")
	h.Set("User-Agent", "test-agent")
	h.Set("X-Forwarded-For", "203.0.113.9")
	h.Set("X-Not-Forwarded", "nope")
	h.Set("WsBridge-Event", "forged")
	h.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h.Set("Sec-WebSocket-Protocol", "chat.v2, chat.v1")
	if _, _, err := b.dialErr(t, "room=7&token=x", h); err != nil {
		t.Fatal(err)
	}
	call := php.next(t, EventOpen)
	req := call.Event.Request
	if req == nil {
		t.Fatalf("open event has no request: %s", call.Body)
	}
	if req.Method != "GET" || req.Path != "/ws" || req.Query != "room=7&token=x" {
		t.Errorf("request = %s %s ? %s", req.Method, req.Path, req.Query)
	}
	if req.Headers["Cookie"] != "PHPSESSID=abc" || req.Headers["User-Agent"] != "test-agent" {
		t.Errorf("forwarded headers = %v", req.Headers)
	}
	if got := req.Headers["X-Forwarded-For"]; got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want the peer's address alone (the client's own claim is dropped without TRUSTED_PROXIES)", got)
	}
	if _, ok := req.Headers["X-Not-Forwarded"]; ok {
		t.Error("a header outside FORWARD_HEADERS reached PHP")
	}
	if _, ok := req.Headers["Wsbridge-Event"]; ok {
		t.Error("a client WsBridge-* header reached PHP")
	}
	if fmt.Sprint(req.Subprotocols) != "[chat.v2 chat.v1]" {
		t.Errorf("subprotocols = %v", req.Subprotocols)
	}
	if req.RemoteAddr == "" {
		t.Error("remote_addr is empty")
	}
	ev := call.Event
	if call.Header.Get(HeaderEvent) != "open" || call.Header.Get(HeaderConnection) != ev.ConnectionID ||
		call.Header.Get(HeaderEventID) != ev.EventID || ev.EventID == "" {
		t.Errorf("webhook headers %v do not match event %+v", call.Header, ev)
	}
	if call.Header.Get("Traceparent") != h.Get("Traceparent") {
		t.Errorf("traceparent = %q", call.Header.Get("Traceparent"))
	}
	if err := Verify([]byte("s3cret"), call.Header.Get(HeaderSignature), call.Body, time.Now(), time.Minute); err != nil {
		t.Errorf("signature: %v", err)
	}
	if ev.Channels == nil || ev.Meta != nil && string(ev.Meta) != "null" {
		t.Errorf("open event state: channels %v meta %s", ev.Channels, ev.Meta)
	}
}

func TestOpenRejectedWithPHPStatusAndBody(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, func(c hookCall) (int, any) { return http.StatusUnauthorized, "log in first" })
	b := newBridge(t, php, nil)
	_, resp, err := b.dialErr(t, "", nil)
	if err == nil {
		t.Fatal("upgrade succeeded although PHP answered 401")
	}
	if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("response = %v, want 401", resp)
	}
	if body := readAll(t, resp); body != "log in first" {
		t.Errorf("body = %q, want PHP's body", body)
	}
	if n := b.srv.hub.Stats().Connections; n != 0 {
		t.Errorf("hub holds %d connections after a rejection", n)
	}
}

func TestOpenFailsWith503WhenPHPIsDownOrSlow(t *testing.T) {
	t.Parallel()
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		php := newFakePHP(t, acceptAll)
		b := newBridge(t, php, nil)
		php.Close() // nothing listens at the webhook URL any more
		_, resp, err := b.dialErr(t, "", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("err %v, response %v: want 503", err, resp)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		php := newFakePHP(t, func(hookCall) (int, any) { <-release; return 204, nil })
		b := newBridge(t, php, func(c *Config) { c.WebhookTimeout = 100 * time.Millisecond })
		_, resp, err := b.dialErr(t, "", nil)
		close(release)
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("err %v, response %v: want 503", err, resp)
		}
	})
}

func TestMalformedOpenReplyIsRefusedWith502(t *testing.T) {
	t.Parallel()
	for name, reply := range map[string]string{
		"not JSON":           `{"user_id": `,
		"unknown field":      `{"user": "7"}`,
		"meta not object":    `{"meta": [1]}`,
		"bad channel":        `{"join": [""]}`,
		"bad close code":     `{"close": {"code": 1006}}`,
		"unoffered protocol": `{"subprotocol": "mqtt"}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			php := newFakePHP(t, func(hookCall) (int, any) { return 200, reply })
			b := newBridge(t, php, nil)
			_, resp, err := b.dialErr(t, "", nil)
			if err == nil || resp == nil || resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("err %v, response %v: want 502", err, resp)
			}
		})
	}
}

func TestSubprotocolChosenByPHP(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, func(hookCall) (int, any) { return 200, map[string]any{"subprotocol": "chat.v1"} })
	b := newBridge(t, php, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, _, err := websocket.Dial(ctx, b.wsURL, &websocket.DialOptions{Subprotocols: []string{"chat.v2", "chat.v1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if c.Subprotocol() != "chat.v1" {
		t.Errorf("subprotocol = %q, want PHP's choice chat.v1", c.Subprotocol())
	}
}

func TestStateRoundTrip(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, func(c hookCall) (int, any) {
		switch c.Event.Type {
		case EventOpen:
			return 200, map[string]any{"user_id": "42", "meta": map[string]any{"name": "ann"}, "join": []string{"room:1", "lobby"},
				"send": []any{"welcome", map[string]string{"data_base64": base64.StdEncoding.EncodeToString([]byte{0, 1, 2})}}}
		case EventMessage:
			if c.Event.Data != nil && *c.Event.Data == "rename" {
				return 200, map[string]any{"meta": map[string]any{"name": "bea"}, "leave": []string{"lobby"}, "send": []string{"ok"}}
			}
		}
		return 204, nil
	})
	b := newBridge(t, php, nil)
	c, id := b.openConn(t, "")
	if got := read(t, c); got != "welcome" {
		t.Fatalf("first frame = %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	typ, bin, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageBinary || string(bin) != "\x00\x01\x02" {
		t.Fatalf("binary frame: %v %v %q", err, typ, bin)
	}

	write(t, c, "rename")
	m := php.nextFor(t, EventMessage, id).Event
	if m.UserID != "42" || string(m.Meta) != `{"name":"ann"}` || fmt.Sprint(m.Channels) != "[lobby room:1]" {
		t.Errorf("message carries user %q meta %s channels %v", m.UserID, m.Meta, m.Channels)
	}
	if got := read(t, c); got != "ok" {
		t.Fatalf("reply frame = %q", got)
	}
	if err := c.Write(ctx, websocket.MessageBinary, []byte{0xff, 0}); err != nil {
		t.Fatal(err)
	}
	m = php.nextFor(t, EventMessage, id).Event
	if string(m.Meta) != `{"name":"bea"}` || fmt.Sprint(m.Channels) != "[room:1]" {
		t.Errorf("after the reply: meta %s channels %v", m.Meta, m.Channels)
	}
	if m.Binary == nil || !*m.Binary || m.DataBase64 == nil || *m.DataBase64 != "/wA=" || m.Data != nil || m.Seq != 2 {
		t.Errorf("binary message event = %+v", m)
	}
	c.Close(websocket.StatusNormalClosure, "")
	cl := php.nextFor(t, EventClose, id).Event
	if cl.UserID != "42" || string(cl.Meta) != `{"name":"bea"}` || fmt.Sprint(cl.Channels) != "[room:1]" {
		t.Errorf("close carries user %q meta %s channels %v", cl.UserID, cl.Meta, cl.Channels)
	}
	if *cl.MessagesIn != 2 || *cl.MessagesOut != 3 {
		t.Errorf("close counts in=%d out=%d, want 2 and 3", *cl.MessagesIn, *cl.MessagesOut)
	}
}

// One connection's messages reach PHP in order, one at a time: the next webhook starts only
// after PHP answered the previous one.
func TestMessageOrderingOnOneConnection(t *testing.T) {
	t.Parallel()
	const n = 1000
	var inFlight, overlap atomic.Int32
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventMessage {
			if inFlight.Add(1) > 1 {
				overlap.Add(1)
			}
			defer inFlight.Add(-1)
		}
		return 204, nil
	})
	b := newBridge(t, php, func(c *Config) { c.WebhookConcurrency = 16; c.MessageRate = 0 })
	c, id := b.openConn(t, "")
	go func() {
		for i := range n {
			if err := c.Write(context.Background(), websocket.MessageText, []byte(strconv.Itoa(i))); err != nil {
				return
			}
		}
	}()
	for i := range n {
		ev := php.nextFor(t, EventMessage, id).Event
		if *ev.Data != strconv.Itoa(i) || ev.Seq != uint64(i+1) {
			t.Fatalf("webhook %d carries data %q seq %d", i, *ev.Data, ev.Seq)
		}
	}
	if overlap.Load() != 0 {
		t.Errorf("%d message webhooks of one connection overlapped", overlap.Load())
	}
}

// Different connections are served in parallel, up to WEBHOOK_CONCURRENCY and never beyond.
func TestParallelismAcrossConnectionsIsCapped(t *testing.T) {
	t.Parallel()
	const limit, conns = 4, 8
	var inFlight, peak atomic.Int32
	reached := make(chan struct{})
	var once sync.Once
	release := make(chan struct{})
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type != EventMessage {
			return 204, nil
		}
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if n == limit {
			once.Do(func() { close(reached) })
		}
		<-release
		return 204, nil
	})
	b := newBridge(t, php, func(c *Config) { c.WebhookConcurrency = limit })
	// Open every connection first: open webhooks need a slot too.
	var clients []*websocket.Conn
	for range conns {
		c, _ := b.openConn(t, "")
		clients = append(clients, c)
	}
	for _, c := range clients {
		write(t, c, "hi")
	}
	select {
	case <-reached:
	case <-time.After(waitLimit):
		t.Fatalf("only %d webhooks ran at once, want %d", peak.Load(), limit)
	}
	close(release)
	for range conns {
		php.next(t, EventMessage)
	}
	if p := peak.Load(); p != limit {
		t.Errorf("peak concurrency %d, want exactly WEBHOOK_CONCURRENCY=%d", p, limit)
	}
}

func TestMalformedMessageReplyAppliesNothing(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, func(c hookCall) (int, any) {
		switch {
		case c.Event.Type == EventOpen:
			return 200, `{"meta": {"v": 1}}`
		case c.Event.Type == EventMessage && *c.Event.Data == "bad":
			// Valid meta and send, then a field that does not exist: all of it is refused.
			return 200, `{"meta": {"v": 2}, "send": ["leaked"], "user_id": "x"}`
		case c.Event.Type == EventMessage:
			return 200, `{"send": ["pong"]}`
		}
		return 204, nil
	})
	b := newBridge(t, php, nil)
	c, id := b.openConn(t, "")
	write(t, c, "bad")
	php.nextFor(t, EventMessage, id)
	write(t, c, "ping")
	if ev := php.nextFor(t, EventMessage, id).Event; string(ev.Meta) != `{"v":1}` {
		t.Errorf("meta = %s: part of a refused reply was applied", ev.Meta)
	}
	if got := read(t, c); got != "pong" {
		t.Errorf("first frame = %q: part of a refused reply was sent", got)
	}
}

// closeCase ends a connection one way and says what the close webhook must report.
type closeCase struct {
	name      string
	tweak     func(*Config)
	reply     func(hookCall) (int, any)
	end       func(t *testing.T, b *testBridge, c *websocket.Conn, id string)
	code      int
	initiator Initiator
	reason    string
}

func TestCloseWebhookForEveryEnding(t *testing.T) {
	t.Parallel()
	cases := []closeCase{
		{name: "client close", code: 4001, initiator: InitiatorClient, reason: "bye",
			end: func(t *testing.T, b *testBridge, c *websocket.Conn, id string) { c.Close(4001, "bye") }},
		{name: "network drop", code: 1006, initiator: InitiatorClient, reason: "connection lost",
			end: func(t *testing.T, b *testBridge, c *websocket.Conn, id string) { c.CloseNow() }},
		{name: "php close", code: 4000, initiator: InitiatorPHP, reason: "kicked",
			reply: func(c hookCall) (int, any) {
				if c.Event.Type == EventMessage {
					return 200, map[string]any{"send": []string{"last words"}, "close": map[string]any{"code": 4000, "reason": "kicked"}}
				}
				return 204, nil
			},
			end: func(t *testing.T, b *testBridge, c *websocket.Conn, id string) {
				write(t, c, "x")
				if got := read(t, c); got != "last words" {
					t.Errorf("frame before close = %q", got)
				}
				if ce := readClose(t, c); ce.Code != 4000 || ce.Reason != "kicked" {
					t.Errorf("client saw close %v", ce)
				}
			}},
		{name: "message not delivered", code: 1011, initiator: InitiatorServer, reason: "message not delivered",
			reply: func(c hookCall) (int, any) {
				if c.Event.Type == EventMessage {
					return http.StatusInternalServerError, "PHP Fatal error"
				}
				return 204, nil
			},
			end: func(t *testing.T, b *testBridge, c *websocket.Conn, id string) {
				write(t, c, "lost?")
				if ce := readClose(t, c); ce.Code != websocket.StatusInternalError {
					t.Errorf("client saw close %v", ce)
				}
			}},
		{name: "api close", code: 4002, initiator: InitiatorAPI, reason: "banned",
			end: func(t *testing.T, b *testBridge, c *websocket.Conn, id string) {
				var out map[string]int
				if st := b.api(t, "POST", "/v1/connections/"+id+"/close", `{"code":4002,"reason":"banned"}`, &out); st != 200 || out["closed"] != 1 {
					t.Errorf("close API: %d %v", st, out)
				}
				if ce := readClose(t, c); ce.Code != 4002 {
					t.Errorf("client saw close %v", ce)
				}
			}},
		{name: "message too big", code: 1009, initiator: InitiatorServer, reason: "read limited at 16 bytes",
			tweak: func(c *Config) { c.MaxMessageSize = 16 },
			end: func(t *testing.T, b *testBridge, c *websocket.Conn, id string) {
				write(t, c, "this message is longer than sixteen bytes")
				if ce := readClose(t, c); ce.Code != websocket.StatusMessageTooBig || ce.Reason != "read limited at 16 bytes" {
					t.Errorf("client saw close %v", ce)
				}
			}},
		{name: "ping timeout", code: 1006, initiator: InitiatorServer, reason: "ping timeout",
			tweak: func(c *Config) { c.PingInterval, c.PingTimeout = 20*time.Millisecond, 50*time.Millisecond },
			// The client never reads, so it never answers pings: a half-open peer.
			end: func(t *testing.T, b *testBridge, c *websocket.Conn, id string) {}},
		{name: "slow consumer", code: 1008, initiator: InitiatorSlowConsumer, reason: "slow consumer",
			tweak: func(c *Config) { c.SendQueue = 4 },
			end:   floodUntilClosed},
		{name: "write timeout", code: 1008, initiator: InitiatorSlowConsumer, reason: "write timeout",
			tweak: func(c *Config) { c.SendQueue = 100000; c.WriteTimeout = 50 * time.Millisecond },
			end:   floodUntilClosed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reply := tc.reply
			if reply == nil {
				reply = acceptAll
			}
			php := newFakePHP(t, reply)
			b := newBridge(t, php, tc.tweak)
			c, id := b.openConn(t, "")
			tc.end(t, b, c, id)
			ev := php.nextFor(t, EventClose, id).Event
			if *ev.Code != tc.code || ev.Initiator != tc.initiator || *ev.Reason != tc.reason {
				t.Errorf("close webhook: code %d initiator %s reason %q; want %d %s %q", *ev.Code, ev.Initiator, *ev.Reason, tc.code, tc.initiator, tc.reason)
			}
			if ev.DurationMS == nil || *ev.DurationMS < 0 {
				t.Errorf("duration_ms = %v", ev.DurationMS)
			}
		})
	}
}

func TestShutdownDrainsEveryConnection(t *testing.T) {
	t.Parallel()
	const n = 300
	php := newFakePHP(t, acceptAll)
	b := newBridge(t, php, nil)
	clients := make([]*websocket.Conn, n)
	ids := map[string]bool{}
	for i := range clients {
		clients[i] = b.dial(t, "")
		ids[php.next(t, EventOpen).Event.ConnectionID] = true
	}
	codes := make(chan websocket.StatusCode, n)
	for _, c := range clients {
		go func() {
			_, _, err := c.Read(context.Background())
			codes <- websocket.CloseStatus(err)
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := b.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// Shutdown returned, so every close webhook has already been answered.
	closed := map[string]bool{}
	for len(closed) < n {
		select {
		case c := <-php.calls:
			if c.Event.Type == EventClose {
				if c.Event.Initiator != InitiatorShutdown || *c.Event.Code != 1001 {
					t.Errorf("close webhook %s: %s %d", c.Event.ConnectionID, c.Event.Initiator, *c.Event.Code)
				}
				closed[c.Event.ConnectionID] = true
			}
		default:
			t.Fatalf("Shutdown returned with %d of %d close webhooks delivered", len(closed), n)
		}
	}
	for id := range ids {
		if !closed[id] {
			t.Errorf("no close webhook for %s", id)
		}
	}
	for range n {
		if code := <-codes; code != websocket.StatusGoingAway {
			t.Errorf("client saw close code %d, want 1001", code)
		}
	}
	if st := b.api(t, "GET", "/readyz", nil, nil); st != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d after shutdown, want 503", st)
	}
	if _, resp, err := b.dialErr(t, "", nil); err == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("new connection during shutdown: %v %v, want 503", err, resp)
	}
}

func TestOriginAllowList(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, acceptAll)
	b := newBridge(t, php, func(c *Config) { c.AllowedOrigins = []string{"*.example.com", "https://app.test"} })
	host := b.public.Listener.Addr().String()
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"http://" + host, true},
		{"https://chat.example.com", true},
		{"https://app.test", true},
		{"http://app.test", false},
		{"https://evil.test", false},
		{"https://example.com.evil.test", false},
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		c, resp, err := b.dialErr(t, "", h)
		if tc.ok && err != nil {
			t.Errorf("origin %q refused: %v", tc.origin, err)
		}
		if !tc.ok && (err == nil || resp.StatusCode != http.StatusForbidden) {
			t.Errorf("origin %q: err %v resp %v, want 403", tc.origin, err, resp)
		}
		if c != nil {
			c.CloseNow()
		}
	}
	// PHP is never asked about a refused origin.
	opens := 0
	for len(php.calls) > 0 {
		if (<-php.calls).Event.Type == EventOpen {
			opens++
		}
	}
	if opens != 4 {
		t.Errorf("PHP saw %d open webhooks, want 4 (only the allowed origins)", opens)
	}
}

func TestNonUpgradeRequestOnWSPath(t *testing.T) {
	t.Parallel()
	b := newBridge(t, newFakePHP(t, acceptAll), nil)
	resp, err := http.Get(b.public.URL + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("status %d, want 426", resp.StatusCode)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// floodUntilClosed pushes large frames to a client that never reads: the socket buffers fill,
// then the send queue, until the bridge cuts the client off.
func floodUntilClosed(t *testing.T, b *testBridge, c *websocket.Conn, id string) {
	data := base64.StdEncoding.EncodeToString(make([]byte, 256<<10))
	for i := 0; i < 500 && b.srv.hub.Stats().Connections > 0; i++ {
		b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"connections": []string{id}}, "data_base64": data}, nil)
	}
}

func TestOversizeRepliesAreRefused(t *testing.T) {
	t.Parallel()
	huge := `{"send": ["` + strings.Repeat("x", 2048) + `"]}`
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventMessage && *c.Event.Data == "huge" {
			return 200, huge
		}
		if c.Event.Type == EventMessage {
			return 200, `{"send": ["small"]}`
		}
		return 204, nil
	})
	b := newBridge(t, php, func(c *Config) { c.WebhookMaxReply = 1024 })
	c, _ := b.openConn(t, "")
	write(t, c, "huge")
	write(t, c, "next")
	if got := read(t, c); got != "small" {
		t.Errorf("first frame %q: the oversize reply was applied, or the connection was lost", got)
	}

	php.setHandler(func(hookCall) (int, any) { return 200, huge })
	if _, resp, err := b.dialErr(t, "", nil); err == nil || resp.StatusCode != http.StatusBadGateway {
		t.Errorf("oversize open reply: %v %v, want 502", err, resp)
	}
}

// Shutdown is bounded: when PHP does not answer the close webhooks in time, Shutdown gives up at
// its deadline, says how many connections were left, and cuts off what still runs.
func TestShutdownGivesUpAtItsDeadline(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventClose {
			<-release
		}
		return 204, nil
	})
	t.Cleanup(func() { close(release) }) // runs before the fake PHP closes (cleanups are LIFO)
	b := newBridge(t, php, nil)
	b.openConn(t, "")
	b.openConn(t, "")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := b.srv.Shutdown(ctx)
	if err == nil || !strings.Contains(err.Error(), "gave up waiting for 2 connection(s)") {
		t.Fatalf("Shutdown = %v, want it to give up", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap the deadline", err)
	}
}
