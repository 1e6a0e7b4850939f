package bridge

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// The protocol as the bridge speaks it, checked message by message with a plain WebSocket
// client. The real clients (pusher-js in node, Laravel Echo in chromium) are in
// examples/php/e2e (pusher_test.go).

const (
	testPusherKey    = "app-key"
	testPusherSecret = "app-secret"
)

func pusherBridge(t *testing.T, php *fakePHP, tweak func(*Config)) *testBridge {
	t.Helper()
	return newBridge(t, php, func(c *Config) {
		c.PusherAppID, c.PusherKey, c.PusherSecret = "1", testPusherKey, testPusherSecret
		if tweak != nil {
			tweak(c)
		}
	})
}

// pusherMsg is a message as the client receives it; data decoded when it is a JSON string.
type pusherMsg struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	UserID  string          `json:"user_id"`
}

// dataString is the message's data when it is a string (Pusher's own events, publications).
func (m pusherMsg) dataString(t *testing.T) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(m.Data, &s); err != nil {
		t.Fatalf("%s: data %s is not a string", m.Event, m.Data)
	}
	return s
}

func readPusher(t *testing.T, c *websocket.Conn) pusherMsg {
	t.Helper()
	var m pusherMsg
	raw := read(t, c)
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatalf("not a Pusher message: %s", raw)
	}
	return m
}

// dialPusher connects and reads connection_established, returning the socket id.
func dialPusher(t *testing.T, b *testBridge) (*websocket.Conn, string) {
	t.Helper()
	c, _, err := dialPusherURL(t, b, "/app/"+testPusherKey+"?protocol=7&client=js&version=8.6.0", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	m := readPusher(t, c)
	if m.Event != "pusher:connection_established" {
		t.Fatalf("first message %q, want pusher:connection_established", m.Event)
	}
	var d struct {
		SocketID        string `json:"socket_id"`
		ActivityTimeout int    `json:"activity_timeout"`
	}
	if err := json.Unmarshal([]byte(m.dataString(t)), &d); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\d+\.\d+$`).MatchString(d.SocketID) || d.ActivityTimeout <= 0 {
		t.Fatalf("connection_established %+v: want a \\d+.\\d+ socket id and an activity_timeout", d)
	}
	return c, d.SocketID
}

func dialPusherURL(t *testing.T, b *testBridge, path string, h http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	u := "ws" + strings.TrimPrefix(b.public.URL, "http") + path
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h})
	if err == nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

func pusherAuth(socketID, channel, channelData string) string {
	m := hmac.New(sha256.New, []byte(testPusherSecret))
	m.Write([]byte(socketID + ":" + channel))
	if channelData != "" {
		m.Write([]byte(":" + channelData))
	}
	return testPusherKey + ":" + hex.EncodeToString(m.Sum(nil))
}

func pusherSend(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	write(t, c, string(b))
}

// pusherSubscribe sends pusher:subscribe and returns the answer.
func pusherSubscribe(t *testing.T, c *websocket.Conn, channel, auth, channelData string) pusherMsg {
	t.Helper()
	d := map[string]any{"channel": channel}
	if auth != "" {
		d["auth"] = auth
	}
	if channelData != "" {
		d["channel_data"] = channelData
	}
	pusherSend(t, c, map[string]any{"event": "pusher:subscribe", "data": d})
	return readPusher(t, c)
}

// TestPusherRefusals: what pusher-js must hear as pusher:error and a close it does not retry
// (4001-4099) or backs off from (4100-4199). None of these reach PHP.
func TestPusherRefusals(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventOpen && strings.Contains(c.Event.Request.Query, "deny") {
			return http.StatusForbidden, "no"
		}
		if c.Event.Type == EventOpen && strings.Contains(c.Event.Request.Query, "down") {
			return http.StatusServiceUnavailable, "down"
		}
		return http.StatusNoContent, nil
	})
	b := pusherBridge(t, php, func(c *Config) { c.WebhookRetries = 0 })
	tests := []struct {
		name, path string
		code       int
		askPHP     bool
	}{
		{"wrong key", "/app/other?protocol=7", pusherAppNotFound, false},
		{"no protocol", "/app/" + testPusherKey, pusherNoVersion, false},
		{"protocol not a number", "/app/" + testPusherKey + "?protocol=7a", pusherBadVersion, false},
		{"protocol 6", "/app/" + testPusherKey + "?protocol=6", pusherUnsupported, false},
		{"PHP refuses", "/app/" + testPusherKey + "?protocol=7&deny=1", pusherUnauthorized, true},
		{"PHP unavailable", "/app/" + testPusherKey + "?protocol=7&down=1", pusherOverCapacity, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := dialPusherURL(t, b, tc.path, nil)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			m := readPusher(t, c)
			var d struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(m.Data, &d); err != nil || m.Event != "pusher:error" || d.Code != tc.code || d.Message == "" {
				t.Fatalf("got %s %s, want pusher:error code %d with a message", m.Event, m.Data, tc.code)
			}
			if ce := readClose(t, c); int(ce.Code) != tc.code {
				t.Fatalf("close %d, want %d", ce.Code, tc.code)
			}
			if tc.askPHP {
				php.next(t, EventOpen)
			}
		})
	}
	// Only the two that PHP refused were asked, and nobody is owed a close.
	select {
	case c := <-php.calls:
		t.Fatalf("unexpected webhook %s", c.Event.Type)
	default:
	}
}

// TestPusherMalformed: nothing a client sends breaks the connection; each gets its error.
func TestPusherMalformed(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, nil)
	b := pusherBridge(t, php, nil)
	c, _ := dialPusher(t, b)
	tests := []struct {
		name, msg, event string
		code             int
	}{
		{"not JSON", `hello`, "pusher:error", pusherMalformed},
		{"no event", `{"data":{}}`, "pusher:error", pusherMalformed},
		{"event not a string", `{"event":7}`, "pusher:error", pusherMalformed},
		{"unknown event", `{"event":"pusher:teleport","data":{}}`, "pusher:error", pusherMalformed},
		{"subscribe without data", `{"event":"pusher:subscribe"}`, "pusher:error", pusherMalformed},
		{"subscribe data not an object", `{"event":"pusher:subscribe","data":[1]}`, "pusher:error", pusherMalformed},
		{"client event unsubscribed", `{"event":"client-x","channel":"private-a","data":{}}`, "pusher:error", pusherClientEventDrop},
		{"signin", `{"event":"pusher:signin","data":{}}`, "pusher:error", pusherMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			write(t, c, tc.msg)
			m := readPusher(t, c)
			var d struct{ Code int }
			json.Unmarshal(m.Data, &d)
			if m.Event != tc.event || d.Code != tc.code {
				t.Fatalf("got %s %s, want %s code %d", m.Event, m.Data, tc.event, tc.code)
			}
		})
	}
	// Still connected: a ping gets its pong.
	write(t, c, `{"event":"pusher:ping","data":{}}`)
	if m := readPusher(t, c); m.Event != "pusher:pong" {
		t.Fatalf("after the errors: got %s, want pusher:pong", m.Event)
	}
}

// TestPusherSubscribe: each channel kind, authorised and not.
func TestPusherSubscribe(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, nil)
	b := pusherBridge(t, php, nil)
	c, sid := dialPusher(t, b)
	presence := `{"user_id":"7","user_info":{"name":"Ann"}}`
	tests := []struct {
		name, channel, auth, channelData, event string
	}{
		{"public", "news", "", "", "pusher_internal:subscription_succeeded"},
		{"bad channel name", "news/1", "", "", "pusher:subscription_error"},
		{"server-to-user", "#server-to-user-1", "", "", "pusher:subscription_error"},
		{"private without auth", "private-a", "", "", "pusher:subscription_error"},
		{"private signed for another socket", "private-a", pusherAuth("1.2", "private-a", ""), "", "pusher:subscription_error"},
		{"private signed for another channel", "private-a", pusherAuth(sid, "private-b", ""), "", "pusher:subscription_error"},
		{"private with another key", "private-a", "k2:" + strings.Split(pusherAuth(sid, "private-a", ""), ":")[1], "", "pusher:subscription_error"},
		{"private not hex", "private-a", testPusherKey + ":zz", "", "pusher:subscription_error"},
		{"private", "private-a", pusherAuth(sid, "private-a", ""), "", "pusher_internal:subscription_succeeded"},
		{"encrypted", "private-encrypted-a", pusherAuth(sid, "private-encrypted-a", ""), "", "pusher_internal:subscription_succeeded"},
		{"presence signed without channel_data", "presence-a", pusherAuth(sid, "presence-a", ""), presence, "pusher:subscription_error"},
		{"presence without user_id", "presence-a", pusherAuth(sid, "presence-a", `{"user_info":{}}`), `{"user_info":{}}`, "pusher:subscription_error"},
		{"presence", "presence-a", pusherAuth(sid, "presence-a", presence), presence, "pusher_internal:subscription_succeeded"},
		{"presence as another user", "presence-b", pusherAuth(sid, "presence-b", `{"user_id":"8"}`), `{"user_id":"8"}`, "pusher:subscription_error"},
		{"presence numeric id, same user", "presence-c", pusherAuth(sid, "presence-c", `{"user_id":7}`), `{"user_id":7}`, "pusher_internal:subscription_succeeded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := pusherSubscribe(t, c, tc.channel, tc.auth, tc.channelData)
			if m.Event != tc.event || m.Channel != tc.channel {
				t.Fatalf("got %s on %q (%s), want %s on %q", m.Event, m.Channel, m.Data, tc.event, tc.channel)
			}
		})
	}
	var info connInfo
	b.api(t, "GET", "/v1/connections/"+sid, nil, &info)
	want := []string{"news", "presence-a", "presence-c", "private-a", "private-encrypted-a"}
	if info.UserID != "7" || strings.Join(info.Channels, ",") != strings.Join(want, ",") {
		t.Fatalf("hub: user %q channels %v; want 7 and %v", info.UserID, info.Channels, want)
	}
}

// TestPusherPresence: rosters, and member events per user, not per tab.
func TestPusherPresence(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, nil)
	b := pusherBridge(t, php, nil)
	join := func(user string) (*websocket.Conn, pusherMsg) {
		c, sid := dialPusher(t, b)
		cd := `{"user_id":"` + user + `","user_info":{"name":"` + user + `"}}`
		return c, pusherSubscribe(t, c, "presence-room", pusherAuth(sid, "presence-room", cd), cd)
	}
	roster := func(m pusherMsg) string {
		var d struct {
			Presence struct {
				IDs   []string
				Hash  map[string]struct{ Name string }
				Count int
			}
		}
		json.Unmarshal([]byte(m.dataString(t)), &d)
		return strings.Join(d.Presence.IDs, ",")
	}
	a, m := join("ann")
	if got := roster(m); got != "ann" {
		t.Fatalf("ann's roster %q", got)
	}
	bob1, m := join("bob")
	if got := roster(m); got != "ann,bob" {
		t.Fatalf("bob's roster %q", got)
	}
	if m := readPusher(t, a); m.Event != "pusher_internal:member_added" || !strings.Contains(m.dataString(t), `"user_id":"bob"`) {
		t.Fatalf("ann got %s %s, want member_added bob", m.Event, m.Data)
	}
	// Bob's second tab: no member_added; its roster lists bob once.
	bob2, m := join("bob")
	if got := roster(m); got != "ann,bob" {
		t.Fatalf("bob's second roster %q", got)
	}
	// A client event from bob's second tab reaches ann and bob's first tab, with user_id.
	pusherSend(t, bob2, map[string]any{"event": "client-typing", "channel": "presence-room", "data": map[string]any{"x": 1}})
	for _, c := range []*websocket.Conn{a, bob1} {
		m := readPusher(t, c)
		if m.Event != "client-typing" || m.UserID != "bob" || string(m.Data) != `{"x":1}` {
			t.Fatalf("got %s user %q data %s, want client-typing from bob", m.Event, m.UserID, m.Data)
		}
	}
	if call := php.next(t, EventMessage); call.Event.Transport != "pusher" || !strings.Contains(*call.Event.Data, "client-typing") {
		t.Fatalf("message webhook %+v", call.Event)
	}
	// Bob's first tab leaves: nobody is told; the second leaves: ann hears member_removed.
	bob1.Close(websocket.StatusNormalClosure, "")
	php.next(t, EventClose)
	bob2.Close(websocket.StatusNormalClosure, "")
	if m := readPusher(t, a); m.Event != "pusher_internal:member_removed" || !strings.Contains(m.dataString(t), `"user_id":"bob"`) {
		t.Fatalf("ann got %s %s, want member_removed bob (once, for the last tab)", m.Event, m.Data)
	}
}

// TestPusherPublication: a native publication reaches Pusher subscribers as a Pusher event,
// except the socket id it names.
func TestPusherPublication(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, nil)
	b := pusherBridge(t, php, nil)
	a, _ := dialPusher(t, b)
	c, sidC := dialPusher(t, b)
	pusherSubscribe(t, a, "orders", "", "")
	pusherSubscribe(t, c, "orders", "", "")
	php.next(t, EventOpen)
	php.next(t, EventOpen)
	native, nid := b.openConn(t, "")
	if code := b.api(t, "POST", "/v1/channels/orders/join", map[string]any{"connections": []string{nid}}, nil); code != http.StatusOK {
		t.Fatalf("join: %d", code)
	}
	if code := b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"channels": []string{"orders"}},
		"event": `App\Events\Shipped`, "data": `{"id":5}`, "except": sidC}, nil); code != http.StatusOK {
		t.Fatalf("publish: %d", code)
	}
	m := readPusher(t, a)
	if m.Event != `App\Events\Shipped` || m.Channel != "orders" || m.dataString(t) != `{"id":5}` {
		t.Fatalf("pusher subscriber got %+v", m)
	}
	if got := read(t, native); got != `{"id":5}` {
		t.Fatalf("native member got %q, want the data alone", got)
	}
	// The excepted socket got nothing: the next thing it reads is its pong.
	write(t, c, `{"event":"pusher:ping"}`)
	if m := readPusher(t, c); m.Event != "pusher:pong" {
		t.Fatalf("excepted socket got %s", m.Event)
	}
	// Without an event name, the default one.
	b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"channels": []string{"orders"}}, "data": "hi"}, nil)
	if m := readPusher(t, a); m.Event != pusherDefaultEvent || m.dataString(t) != "hi" {
		t.Fatalf("got %+v, want %s", m, pusherDefaultEvent)
	}
}

// TestPusherRefusalsAreLimited: refusals upgrade a socket to say why, so a client cannot have
// them for free: they count against HANDSHAKE_RATE_PER_IP as upgrades do.
func TestPusherRefusalsAreLimited(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, nil)
	b := pusherBridge(t, php, func(c *Config) { c.HandshakeRatePerIP, c.HandshakeBurstPerIP = 0.001, 1 })
	c, _, err := dialPusherURL(t, b, "/app/other?protocol=7", nil)
	if err != nil {
		t.Fatalf("first refusal: %v", err)
	}
	if m := readPusher(t, c); m.Event != "pusher:error" {
		t.Fatalf("first refusal: got %s", m.Event)
	}
	_, resp, err := dialPusherURL(t, b, "/app/other?protocol=7", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second refusal: err %v, response %v; want 429 before any upgrade", err, resp)
	}
}

// TestPusherCloseSaysWhy: a close in Pusher's ranges (here the push API's, as the Pusher API's
// terminate_connections sends 4009) comes with pusher:error of the same code first.
func TestPusherCloseSaysWhy(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, nil)
	b := pusherBridge(t, php, nil)
	c, sid := dialPusher(t, b)
	if code := b.api(t, "POST", "/v1/connections/"+sid+"/close", map[string]any{"code": 4009, "reason": "terminated"}, nil); code != http.StatusOK {
		t.Fatalf("close: %d", code)
	}
	m := readPusher(t, c)
	var d struct {
		Code    int
		Message string
	}
	json.Unmarshal(m.Data, &d)
	if m.Event != "pusher:error" || d.Code != 4009 || d.Message != "terminated" {
		t.Fatalf("got %s %s, want pusher:error 4009 terminated", m.Event, m.Data)
	}
	if ce := readClose(t, c); ce.Code != 4009 {
		t.Fatalf("close %d, want 4009", ce.Code)
	}
	if ev := php.next(t, EventClose).Event; ev.Initiator != InitiatorAPI || *ev.Code != 4009 {
		t.Fatalf("close webhook %s %d", ev.Initiator, *ev.Code)
	}
}
