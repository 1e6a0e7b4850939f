package bridge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// pusherReceiver is an app's Pusher webhook endpoint: it checks each request's signature and
// hands the events on, in order. status decides each answer (nil: 200).
type pusherReceiver struct {
	*httptest.Server
	events   chan pusherHookEvent
	requests atomic.Int32
	answered chan int32 // the number of each request refused, once answered
}

func newPusherReceiver(t *testing.T, status func(n int32) int) *pusherReceiver {
	t.Helper()
	rc := &pusherReceiver{events: make(chan pusherHookEvent, 10000), answered: make(chan int32, 100)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := rc.requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, pusherTestApp.secret)
		mac.Write(body)
		if r.Header.Get("X-Pusher-Key") != pusherTestApp.key || r.Header.Get("X-Pusher-Signature") != hex.EncodeToString(mac.Sum(nil)) {
			t.Errorf("pusher webhook signed %q by %q, want the app's HMAC of the body", r.Header.Get("X-Pusher-Signature"), r.Header.Get("X-Pusher-Key"))
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		var msg struct {
			TimeMS int64             `json:"time_ms"`
			Events []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(body, &msg); err != nil || msg.TimeMS < time.Now().Add(-time.Hour).UnixMilli() || len(msg.Events) == 0 {
			t.Errorf("pusher webhook body %s: want {time_ms, events}", body)
		}
		if status != nil {
			if s := status(n); s != 200 {
				w.WriteHeader(s)
				rc.answered <- n
				return
			}
		}
		for _, raw := range msg.Events {
			var ev map[string]string
			json.Unmarshal(raw, &ev)
			rc.events <- pusherHookEvent{Name: ev["name"], Channel: ev["channel"], UserID: ev["user_id"], Event: ev["event"], Data: ev["data"], SocketID: ev["socket_id"]}
		}
	}))
	t.Cleanup(rc.Close)
	return rc
}

// expect waits for the next events and compares them with want, in order.
func (rc *pusherReceiver) expect(t *testing.T, want ...pusherHookEvent) {
	t.Helper()
	for i, w := range want {
		select {
		case got := <-rc.events:
			if got != w {
				t.Errorf("pusher webhook event %d: %+v, want %+v", i, got, w)
			}
		case <-time.After(waitLimit):
			t.Fatalf("pusher webhook event %d (%+v) not sent within %s", i, w, waitLimit)
		}
	}
}

// TestPusherWebhookOccupancy: a channel's first member makes channel_occupied, its last leaving
// channel_vacated, once each, in order, however many connections come and go in between.
func TestPusherWebhookOccupancy(t *testing.T) {
	php := newFakePHP(t, pusherOpen)
	rc := newPusherReceiver(t, nil)
	b, _ := newPusherBridge(t, php, "WSBRIDGE_PUSHER_WEBHOOK_URL="+rc.URL)
	a := b.dial(t, "user=alice&join=room")
	rc.expect(t, pusherHookEvent{Name: "channel_occupied", Channel: "room"})
	c := b.dial(t, "user=carol&join=room")
	a.CloseNow()
	b.php.next(t, EventClose) // alice's: room still has carol, so nothing for it
	// A push API leave makes the channel empty: vacated, once, after carol leaves.
	b.api(t, "POST", "/v1/channels/other/join", map[string]any{"users": []string{"carol"}}, nil)
	rc.expect(t, pusherHookEvent{Name: "channel_occupied", Channel: "other"})
	b.api(t, "POST", "/v1/channels/room/leave", map[string]any{"users": []string{"carol"}}, nil)
	rc.expect(t, pusherHookEvent{Name: "channel_vacated", Channel: "room"})
	c.CloseNow()
	rc.expect(t, pusherHookEvent{Name: "channel_vacated", Channel: "other"})
	select {
	case ev := <-rc.events:
		t.Errorf("unexpected pusher webhook event %+v", ev)
	default:
	}
}

// TestPusherWebhookEvents: the client-protocol side's member and client events go out with
// exactly Pusher's fields.
func TestPusherWebhookEvents(t *testing.T) {
	php := newFakePHP(t, pusherOpen)
	var bodies = make(chan string, 10)
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		bodies <- string(body)
	}))
	defer rc.Close()
	b, _ := newPusherBridge(t, php, "WSBRIDGE_PUSHER_WEBHOOK_URL="+rc.URL)
	clock := newFakeClock(time.UnixMilli(1700000000123))
	b.srv.pusherHooks.now = clock.now
	// They may go in one request or several (the sender takes what waits); the events are
	// collected over the requests, in order.
	b.srv.pusherEvent(pusherHookEvent{Name: pusherMemberAdded, Channel: "presence-room", UserID: "7"})
	b.srv.pusherEvent(pusherHookEvent{Name: pusherClientEvent, Channel: "presence-room", Event: "client-typing", Data: `{"on":true}`, SocketID: "1.2", UserID: "7"})
	b.srv.pusherEvent(pusherHookEvent{Name: pusherClientEvent, Channel: "private-x", Event: "client-empty", Data: "", SocketID: "3.4"})
	b.srv.pusherEvent(pusherHookEvent{Name: pusherMemberRemoved, Channel: "presence-room", UserID: "7"})
	want := []string{
		`{"channel":"presence-room","name":"member_added","user_id":"7"}`,
		`{"channel":"presence-room","data":"{\"on\":true}","event":"client-typing","name":"client_event","socket_id":"1.2","user_id":"7"}`,
		`{"channel":"private-x","data":"","event":"client-empty","name":"client_event","socket_id":"3.4"}`,
		`{"channel":"presence-room","name":"member_removed","user_id":"7"}`,
	}
	var got []string
	for len(got) < len(want) {
		select {
		case body := <-bodies:
			var msg struct {
				TimeMS int64             `json:"time_ms"`
				Events []json.RawMessage `json:"events"`
			}
			if err := json.Unmarshal([]byte(body), &msg); err != nil {
				t.Fatalf("body %s: %v", body, err)
			}
			if msg.TimeMS != 1700000000123 {
				t.Errorf("time_ms %d, want the clock's 1700000000123", msg.TimeMS)
			}
			for _, e := range msg.Events {
				got = append(got, string(e))
			}
		case <-time.After(waitLimit):
			t.Fatalf("got %d events, want %d", len(got), len(want))
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestPusherWebhookRetries: a 5xx is retried (WEBHOOK_RETRIES) and the events arrive once; a
// 4xx is PHP's refusal and is not sent again.
func TestPusherWebhookRetries(t *testing.T) {
	php := newFakePHP(t, pusherOpen)
	rc := newPusherReceiver(t, func(n int32) int {
		switch n {
		case 1, 2:
			return 503
		case 3:
			return 200
		case 4:
			return 400
		}
		return 200
	})
	b, _ := newPusherBridge(t, php, "WSBRIDGE_PUSHER_WEBHOOK_URL="+rc.URL, "WSBRIDGE_WEBHOOK_RETRIES=3", "WSBRIDGE_WEBHOOK_BACKOFF=1ms", "WSBRIDGE_WEBHOOK_BACKOFF_MAX=2ms")
	b.srv.pusherEvent(pusherHookEvent{Name: pusherMemberAdded, Channel: "presence-a", UserID: "1"})
	rc.expect(t, pusherHookEvent{Name: pusherMemberAdded, Channel: "presence-a", UserID: "1"})
	if n := rc.requests.Load(); n != 3 {
		t.Errorf("%d requests, want 3 (two 503s, then 200)", n)
	}
	b.srv.pusherEvent(pusherHookEvent{Name: pusherMemberAdded, Channel: "presence-b", UserID: "2"}) // refused with 400
	for n := int32(0); n != 4; {                                                                    // the two 503s were refusals too
		select {
		case n = <-rc.answered:
		case <-time.After(waitLimit):
			t.Fatal("the 4th request never came")
		}
	}
	b.srv.pusherEvent(pusherHookEvent{Name: pusherMemberAdded, Channel: "presence-c", UserID: "3"})
	// The next event to arrive is presence-c, in the 5th request: presence-b was not sent again.
	rc.expect(t, pusherHookEvent{Name: pusherMemberAdded, Channel: "presence-c", UserID: "3"})
	if n := rc.requests.Load(); n != 5 {
		t.Errorf("%d requests, want 5: the one PHP refused with 400 is not retried", n)
	}
}

// TestPusherWebhookNoRedirect: a redirect is an answer (3xx, not retried), not followed: the
// signed events go nowhere but the configured URL.
func TestPusherWebhookNoRedirect(t *testing.T) {
	php := newFakePHP(t, pusherOpen)
	elsewhere := newPusherReceiver(t, nil)
	redirects := make(chan struct{}, 10)
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirects <- struct{}{}
		http.Redirect(w, r, elsewhere.URL, http.StatusTemporaryRedirect)
	}))
	defer rc.Close()
	b, _ := newPusherBridge(t, php, "WSBRIDGE_PUSHER_WEBHOOK_URL="+rc.URL)
	b.srv.pusherEvent(pusherHookEvent{Name: pusherMemberAdded, Channel: "presence-a", UserID: "1"})
	select {
	case <-redirects:
	case <-time.After(waitLimit):
		t.Fatal("no pusher webhook sent")
	}
	// Once the sender is done with that request (it takes the next event only then), nothing
	// reached the redirect's target.
	b.srv.pusherEvent(pusherHookEvent{Name: pusherMemberAdded, Channel: "presence-b", UserID: "2"})
	select {
	case <-redirects:
	case <-time.After(waitLimit):
		t.Fatal("the second pusher webhook was not sent")
	}
	if n := elsewhere.requests.Load(); n != 0 {
		t.Errorf("the redirect was followed: %d requests reached its target", n)
	}
}

// TestPusherWebhookNeverBlocks: with PHP hanging, queueing events never waits; what the queue
// cannot hold is dropped and counted.
func TestPusherWebhookNeverBlocks(t *testing.T) {
	php := newFakePHP(t, pusherOpen)
	release := make(chan struct{})
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer stalled.Close()
	defer close(release)
	b, _ := newPusherBridge(t, php, "WSBRIDGE_PUSHER_WEBHOOK_URL="+stalled.URL)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range pusherHookQueue + pusherHookBatch + 100 {
			b.srv.pusherEvent(pusherHookEvent{Name: pusherMemberAdded, Channel: "presence-a", UserID: "1"})
		}
	}()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatal("queueing pusher webhook events blocked while PHP hangs")
	}
	if n := b.srv.pusherHooks.dropped.Load(); n < 100 {
		t.Errorf("%d events dropped, want at least the 100 beyond queue and batch", n)
	}
	if v := metricValue(t, b.srv, "wsbridge_limit_hits_total", "limit", "pusher_webhook_queue"); v < 100 {
		t.Errorf("wsbridge_limit_hits_total{limit=pusher_webhook_queue} = %v, want at least 100", v)
	}
	// A connection still opens and joins while the webhook is stuck.
	c := b.dial(t, "user=u&join=busy")
	c.CloseNow()
}

// BenchmarkHubJoinLeave measures a reply's join and leave of one channel by a connection, with
// the occupancy hook off (no Pusher webhook URL: one nil check per change) and on (it queues
// channel_occupied / channel_vacated, here into a discarding hook).
func BenchmarkHubJoinLeave(b *testing.B) {
	for _, hook := range []bool{false, true} {
		b.Run(map[bool]string{false: "hook=off", true: "hook=on"}[hook], func(b *testing.B) {
			h := newHub("bench", NewMemoryBroker())
			if hook {
				n := 0
				h.onOccupancy = func(string, bool) { n++ }
			}
			h.Add(&benchClient{id: "bench.0"}, connInfo{ID: "bench.0"}, &counters{}, "", nil, nil)
			join, leave := []string{"room"}, []string{"room"}
			b.ReportAllocs()
			for b.Loop() {
				h.Update("bench.0", nil, nil, join, nil)
				h.Update("bench.0", nil, nil, nil, leave)
			}
		})
	}
}

// TestPusherWebhookFromClients: the client protocol's own member and client events reach the
// Pusher webhook: member_added on a user's first tab only, client_event with the sender's socket
// id and user, member_removed once the user's last tab has gone, before channel_vacated.
func TestPusherWebhookFromClients(t *testing.T) {
	events := make(chan map[string]string, 100)
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var msg struct {
			Events []map[string]string `json:"events"`
		}
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &msg); err != nil {
			t.Errorf("pusher webhook body %s: %v", body, err)
		}
		for _, e := range msg.Events {
			events <- e
		}
	}))
	defer rc.Close()
	hookURL, _ := url.Parse(rc.URL)
	php := newFakePHP(t, nil)
	b := pusherBridge(t, php, func(c *Config) { c.PusherWebhookURL = hookURL })
	join := func(user string) (*websocket.Conn, string) {
		c, sid := dialPusher(t, b)
		cd := `{"user_id":"` + user + `"}`
		pusherSubscribe(t, c, "presence-room", pusherAuth(sid, "presence-room", cd), cd)
		return c, sid
	}
	next := func(want string) map[string]string {
		t.Helper()
		select {
		case e := <-events:
			if e["name"] != want {
				t.Fatalf("pusher webhook event %v, want %s", e, want)
			}
			return e
		case <-time.After(waitLimit):
			t.Fatalf("no %s pusher webhook within %s", want, waitLimit)
		}
		return nil
	}
	tab1, _ := join("ann")
	next("channel_occupied")
	if e := next("member_added"); e["user_id"] != "ann" || e["channel"] != "presence-room" {
		t.Fatalf("member_added %v", e)
	}
	tab2, sid2 := join("ann") // a second tab of the same user adds nobody
	pusherSend(t, tab2, map[string]any{"event": "client-typing", "channel": "presence-room", "data": "on"})
	if e := next("client_event"); e["event"] != "client-typing" || e["data"] != "on" || e["socket_id"] != sid2 || e["user_id"] != "ann" {
		t.Fatalf("client_event %v, want client-typing from %s as ann", e, sid2)
	}
	php.next(t, EventMessage)
	tab1.Close(websocket.StatusNormalClosure, "")
	php.next(t, EventClose)
	tab2.Close(websocket.StatusNormalClosure, "")
	if e := next("member_removed"); e["user_id"] != "ann" {
		t.Fatalf("member_removed %v", e)
	}
	next("channel_vacated")
}
