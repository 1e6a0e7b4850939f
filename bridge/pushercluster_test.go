package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// stateOnly is a broker whose cluster state is what the test put there: the records of other
// nodes, or a failure. It keeps no liveness (the server then runs no heartbeat).
type stateOnly struct {
	*MemoryBroker
	mu   sync.Mutex
	recs []ConnRecord
	fail error
}

func (f *stateOnly) PutConn(context.Context, ConnRecord) error               { return nil }
func (f *stateOnly) DeleteConn(context.Context, string, string) error        { return nil }
func (f *stateOnly) ReplaceNode(context.Context, string, []ConnRecord) error { return nil }
func (f *stateOnly) Totals(context.Context) (ClusterTotals, error)           { return ClusterTotals{}, nil }
func (f *stateOnly) Conn(context.Context, string) (ConnRecord, bool, error) {
	return ConnRecord{}, false, nil
}
func (f *stateOnly) set(fail error, recs ...ConnRecord) {
	f.mu.Lock()
	f.recs, f.fail = recs, fail
	f.mu.Unlock()
}
func (f *stateOnly) snapshot() ([]ConnRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.recs), f.fail
}
func (f *stateOnly) Conns(_ context.Context, q ConnQuery) (ConnPage, error) {
	recs, err := f.snapshot()
	if err != nil {
		return ConnPage{}, err
	}
	return ConnPage{Conns: recs[:min(len(recs), q.Limit)], Total: len(recs)}, nil
}
func (f *stateOnly) Channel(_ context.Context, name string, limit int) (ChannelPage, error) {
	recs, err := f.snapshot()
	if err != nil {
		return ChannelPage{}, err
	}
	page := ChannelPage{Conns: []string{}, Users: []string{}}
	for _, r := range recs {
		if slices.Contains(r.Channels, name) {
			page.Count++
			if len(page.Conns) < limit {
				page.Conns = append(page.Conns, r.ID)
			}
			if r.UserID != "" && !slices.Contains(page.Users, r.UserID) {
				page.Users = append(page.Users, r.UserID)
			}
		}
	}
	slices.Sort(page.Users)
	return page, nil
}

// TestPusherQueriesClusterWide: with a broker that keeps the cluster state, the Pusher API's
// channel queries answer from it (here: connections on two other nodes, none on this one),
// and when it cannot be read they fail with 503 rather than answer for this node alone.
func TestPusherQueriesClusterWide(t *testing.T) {
	php := newFakePHP(t, nil)
	cfg, err := LoadConfig([]string{
		"WSBRIDGE_WEBHOOK_URL=" + php.URL,
		"WSBRIDGE_PUSHER_APP_ID=" + pusherTestApp.id,
		"WSBRIDGE_PUSHER_KEY=" + pusherTestApp.key,
		"WSBRIDGE_PUSHER_SECRET=" + string(pusherTestApp.secret),
		"WSBRIDGE_MAX_LIST_RESULT=4",
	})
	if err != nil {
		t.Fatal(err)
	}
	br := &stateOnly{MemoryBroker: NewMemoryBroker()}
	srv := New(cfg, testLog(t), br)
	if srv.cluster == nil {
		t.Fatal("the broker's ClusterState was not taken up")
	}
	b := &testBridge{srv: srv, php: php}
	b.public, b.internal = newServers(t, srv)

	br.set(nil,
		ConnRecord{ID: "n2.A", Node: "n2", UserID: "alice", Channels: []string{"news", "presence-room"}},
		ConnRecord{ID: "n2.B", Node: "n2", UserID: "alice", Channels: []string{"presence-room"}},
		ConnRecord{ID: "n3.C", Node: "n3", UserID: "bob", Channels: []string{"presence-other", "presence-room"}},
	)
	cases := []struct {
		name, method, path string
		query              url.Values
		body               string
		want               string
	}{
		{"channels", "GET", "/apps/42/channels", nil, "",
			`{"channels":{"news":{},"presence-other":{},"presence-room":{}}}`},
		{"channels with user_count", "GET", "/apps/42/channels", url.Values{"filter_by_prefix": {"presence-"}, "info": {"user_count"}}, "",
			`{"channels":{"presence-other":{"user_count":1},"presence-room":{"user_count":2}}}`},
		{"channel", "GET", "/apps/42/channels/presence-room", url.Values{"info": {"user_count,subscription_count"}}, "",
			`{"occupied":true,"subscription_count":3,"user_count":2}`},
		{"empty channel", "GET", "/apps/42/channels/nobody-here", nil, "", `{"occupied":false}`},
		{"users", "GET", "/apps/42/channels/presence-room/users", nil, "",
			`{"users":[{"id":"alice"},{"id":"bob"}]}`},
		{"events info", "POST", "/apps/42/events", nil, `{"name":"e","channels":["presence-room"],"data":"x","info":"user_count,subscription_count"}`,
			`{"channels":{"presence-room":{"subscription_count":3,"user_count":2}}}`},
		{"batch info", "POST", "/apps/42/batch_events", nil, `{"batch":[{"name":"e","channel":"news","data":"x","info":"subscription_count"}]}`,
			`{"batch":[{"subscription_count":1}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, answer := b.pusherCall(t, tc.method, tc.path, tc.query, tc.body, time.Time{})
			if status != 200 || answer != tc.want {
				t.Errorf("%d %s, want 200 %s", status, answer, tc.want)
			}
		})
	}

	// Unreachable: every query is refused, none answers from the (empty) hub.
	br.set(errors.New("engine down"))
	for _, tc := range cases {
		t.Run("unreachable/"+tc.name, func(t *testing.T) {
			status, answer := b.pusherCall(t, tc.method, tc.path, tc.query, tc.body, time.Time{})
			if status != 503 || !strings.Contains(answer, "engine down") {
				t.Errorf("%d %s, want 503 naming the broker's error", status, answer)
			}
			if tc.method == "POST" && !strings.Contains(answer, "were published") {
				t.Errorf("%s: the refusal does not say the events were published", answer)
			}
		})
	}

	// More connections than MAX_LIST_RESULT: channels cannot be listed from part of them.
	recs := make([]ConnRecord, 5)
	for i := range recs {
		recs[i] = ConnRecord{ID: "n2." + string(rune('A'+i)), Node: "n2", Channels: []string{"news"}}
	}
	br.set(nil, recs...)
	if status, answer := b.pusherCall(t, "GET", "/apps/42/channels", nil, "", time.Time{}); status != 503 || !strings.Contains(answer, "MAX_LIST_RESULT") {
		t.Errorf("channels of a cluster past MAX_LIST_RESULT: %d %s, want 503", status, answer)
	}
	if status, answer := b.pusherCall(t, "GET", "/apps/42/channels/news", url.Values{"info": {"subscription_count"}}, "", time.Time{}); status != 200 || answer != `{"occupied":true,"subscription_count":5}` {
		t.Errorf("one channel of a large cluster: %d %s", status, answer)
	}
}

// TestPusherClientEventCrossesNodes: a client event reaches the channel's Pusher subscribers on
// the other node (with user_id on a presence channel), never the sender, nor a native member of
// the channel there; the envelope that carries it is of version 2, the others stay version 1.
func TestPusherClientEventCrossesNodes(t *testing.T) {
	t.Parallel()
	broker := NewMemoryBroker()
	seen := make(chan Envelope, 100)
	t.Cleanup(broker.Join("watcher", func(e Envelope) { seen <- e }))
	php := newFakePHP(t, room)
	mk := func() *testBridge {
		cfg := testConfig(t, php.URL)
		cfg.PusherAppID, cfg.PusherKey, cfg.PusherSecret = "1", testPusherKey, testPusherSecret
		return brokerBridge(t, cfg, php, broker)
	}
	n1, n2 := mk(), mk()
	sub := func(b *testBridge, ch, cd string) (*websocket.Conn, string) {
		c, sid := dialPusher(t, b)
		if m := pusherSubscribe(t, c, ch, pusherAuth(sid, ch, cd), cd); m.Event != "pusher_internal:subscription_succeeded" {
			t.Fatalf("subscribe %s: %s %s", ch, m.Event, m.Data)
		}
		return c, sid
	}
	for _, ch := range []string{"private-doc", "presence-doc"} {
		t.Run(ch, func(t *testing.T) {
			cd := ""
			if ch == "presence-doc" {
				cd = `{"user_id":"ann"}`
			}
			sender, _ := sub(n1, ch, cd)
			peer, _ := sub(n2, ch, cd)
			native := n2.dial(t, "join="+ch)
			pusherSend(t, sender, map[string]any{"event": "client-typing", "channel": ch, "data": map[string]any{"n": 1}})
			m := readPusher(t, peer)
			if m.Event != "client-typing" || m.Channel != ch || string(m.Data) != `{"n":1}` {
				t.Fatalf("the peer on the other node got %s on %q (%s), want the client event", m.Event, m.Channel, m.Data)
			}
			if want := map[bool]string{true: "ann", false: ""}[cd != ""]; m.UserID != want {
				t.Errorf("user_id %q, want %q", m.UserID, want)
			}
			// Neither the sender nor the native member gets it: each is then sent a marker,
			// which must be the first thing it reads.
			if status := n1.api(t, "POST", "/v1/publish", `{"to":{"channels":["`+ch+`"]},"data":"marker"}`, nil); status != 200 {
				t.Fatalf("publish: %d", status)
			}
			if m := readPusher(t, sender); m.Event != pusherDefaultEvent || m.dataString(t) != "marker" {
				t.Errorf("the sender read %s %s before the marker: its own client event came back", m.Event, m.Data)
			}
			if got := read(t, native); got != "marker" {
				t.Errorf("the native member read %q before the marker, want nothing of the Pusher protocol", got)
			}
			for {
				select {
				case e := <-seen:
					if e.Op == opPusher {
						if e.Version != 2 || e.Except == "" {
							t.Errorf("pusher envelope version %d except %q, want 2 and the sender", e.Version, e.Except)
						}
						return
					}
					if e.Op != opPresence && e.Version != 1 {
						t.Errorf("%s envelope of version %d, want 1 (old nodes apply it)", e.Op, e.Version)
					}
				case <-time.After(waitLimit):
					t.Fatal("no pusher envelope crossed the broker")
				}
			}
		})
	}
}

// TestPusherPresenceAcrossNodes: one roster for the cluster, member_added for a user's first
// connection anywhere and member_removed for its last one anywhere, and a node that joins late
// learns who is there from the others' answers.
func TestPusherPresenceAcrossNodes(t *testing.T) {
	t.Parallel()
	broker := NewMemoryBroker()
	php := newFakePHP(t, nil)
	mk := func() *testBridge {
		cfg := testConfig(t, php.URL)
		cfg.PusherAppID, cfg.PusherKey, cfg.PusherSecret = "1", testPusherKey, testPusherSecret
		return brokerBridge(t, cfg, php, broker)
	}
	n1, n2 := mk(), mk()
	join := func(b *testBridge, user string) (*websocket.Conn, string) {
		c, sid := dialPusher(t, b)
		cd := `{"user_id":"` + user + `","user_info":{"name":"` + user + `"}}`
		m := pusherSubscribe(t, c, "presence-room", pusherAuth(sid, "presence-room", cd), cd)
		var d struct {
			Presence struct {
				IDs  []string
				Hash map[string]struct{ Name string }
			}
		}
		if m.Event != "pusher_internal:subscription_succeeded" || json.Unmarshal([]byte(m.dataString(t)), &d) != nil {
			t.Fatalf("%s's subscription: %s %s", user, m.Event, m.Data)
		}
		for _, id := range d.Presence.IDs {
			if d.Presence.Hash[id].Name != id {
				t.Errorf("%s's roster: user_info of %s is %+v", user, id, d.Presence.Hash[id])
			}
		}
		return c, strings.Join(d.Presence.IDs, ",")
	}
	// marker publishes to the channel: what a client reads before it was sent before it.
	marker := func(b *testBridge) {
		if status := b.api(t, "POST", "/v1/publish", `{"to":{"channels":["presence-room"]},"data":"marker"}`, nil); status != 200 {
			t.Fatalf("publish: %d", status)
		}
	}
	expect := func(c *websocket.Conn, who, want string) {
		t.Helper()
		m := readPusher(t, c)
		got := m.Event
		if m.Event == pusherDefaultEvent {
			got = "marker"
		} else if strings.HasPrefix(m.Event, "pusher_internal:member_") {
			var d struct {
				UserID string `json:"user_id"`
			}
			json.Unmarshal([]byte(m.dataString(t)), &d)
			got = strings.TrimPrefix(m.Event, "pusher_internal:") + " " + d.UserID
		}
		if got != want {
			t.Fatalf("%s read %q (%s), want %q", who, got, m.Data, want)
		}
	}

	// converge reads the member_added a roster lacks until it has want users, each once: a
	// roster may lack the users whose node has not yet told this one.
	converge := func(c *websocket.Conn, who, roster string, want int) {
		t.Helper()
		have := map[string]bool{}
		for _, id := range strings.Split(roster, ",") {
			have[id] = true
		}
		for len(have) < want {
			m := readPusher(t, c)
			if m.Event != "pusher_internal:member_added" {
				t.Fatalf("%s read %s %s, want the members the roster lacks (%v)", who, m.Event, m.Data, have)
			}
			var d struct {
				UserID string `json:"user_id"`
			}
			json.Unmarshal([]byte(m.dataString(t)), &d)
			if have[d.UserID] {
				t.Fatalf("%s was told of %s twice", who, d.UserID)
			}
			have[d.UserID] = true
		}
	}

	ann, roster := join(n1, "ann")
	if roster != "ann" {
		t.Fatalf("ann's roster %q", roster)
	}
	bob1, roster := join(n2, "bob")
	converge(bob1, "bob on n2", roster, 2)
	expect(ann, "ann", "member_added bob")
	// Bob's second tab, on ann's node: bob is there already, nobody is told.
	bob2, roster := join(n1, "bob")
	if roster != "ann,bob" {
		t.Fatalf("bob's second roster %q", roster)
	}
	marker(n1)
	expect(ann, "ann", "marker")
	expect(bob1, "bob on n2", "marker")
	expect(bob2, "bob on n1", "marker")
	// A late node learns the channel from the others' answers: carol's roster may lack them,
	// but then each comes as member_added, once.
	n3 := mk()
	carol, roster := join(n3, "carol")
	converge(carol, "carol", roster, 3)
	expect(ann, "ann", "member_added carol")
	expect(bob1, "bob on n2", "member_added carol")
	// Bob leaves one node: he is still on the other, nobody is told; his last tab leaving
	// tells everyone, once.
	expect(bob2, "bob on n1", "member_added carol")
	bob1.Close(websocket.StatusNormalClosure, "")
	php.next(t, EventClose) // bob1's session has ended: its presence is given up
	marker(n1)
	expect(ann, "ann", "marker")
	expect(carol, "carol", "marker")
	bob2.Close(websocket.StatusNormalClosure, "")
	expect(ann, "ann", "member_removed bob")
	expect(carol, "carol", "member_removed bob")
	marker(n3)
	expect(ann, "ann", "marker")
	expect(carol, "carol", "marker")
}

// BenchmarkPusherRelaySingleNode is what a client event now costs beyond the local fanout on a
// single node (the MemoryBroker, no other node): the relay's envelope.
func BenchmarkPusherRelaySingleNode(b *testing.B) {
	cfg, err := LoadConfig([]string{"WSBRIDGE_WEBHOOK_URL=http://127.0.0.1:1/"})
	if err != nil {
		b.Fatal(err)
	}
	srv := New(cfg, slog.New(slog.DiscardHandler), nil)
	frame := []byte(`{"event":"client-typing","channel":"private-doc","data":{"n":1}}`)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		srv.pusherRelay(ctx, "private-doc", "1.2", frame)
	}
}
