package bridge

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// room joins the connection to the channels and user named in its query: ?user=u&join=a,b.
func room(c hookCall) (int, any) {
	if c.Event.Type != EventOpen {
		return 204, nil
	}
	q := c.Event.Request.Query
	reply := map[string]any{}
	for _, kv := range strings.Split(q, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "user":
			reply["user_id"] = v
		case "join":
			reply["join"] = strings.Split(v, ",")
		}
	}
	return 200, reply
}

type client struct {
	ws *websocket.Conn
	id string
}

func (b *testBridge) clients(t *testing.T, queries ...string) []client {
	t.Helper()
	out := make([]client, len(queries))
	for i, q := range queries {
		c, id := b.openConn(t, q)
		out[i] = client{c, id}
	}
	return out
}

// expectFrames checks that exactly the clients in want receive msg: each of them reads msg
// next, and every other client's next frame is a marker sent to everyone afterwards.
func expectFrames(t *testing.T, b *testBridge, cs []client, msg string, want ...int) {
	t.Helper()
	marker := "marker-" + msg
	if st := b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"all": true}, "data": marker}, nil); st != 200 {
		t.Fatalf("marker publish: %d", st)
	}
	for i, c := range cs {
		got := read(t, c.ws)
		if slices.Contains(want, i) {
			if got != msg {
				t.Errorf("client %d got %q, want %q", i, got, msg)
			}
			if got = read(t, c.ws); got != marker {
				t.Errorf("client %d got %q after the message, want only one copy then the marker", i, got)
			}
		} else if got != marker {
			t.Errorf("client %d got %q, which was not meant for it", i, got)
		}
	}
}

func TestPublishToEachTargetKind(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, room)
	b := newBridge(t, php, nil)
	cs := b.clients(t, "user=ann&join=lobby,a", "user=ann&join=b", "user=bob&join=lobby", "join=a,b")

	for _, tc := range []struct {
		name string
		to   map[string]any
		exc  string
		want []int
	}{
		{"connection", map[string]any{"connections": []string{cs[1].id}}, "", []int{1}},
		{"connections", map[string]any{"connections": []string{cs[1].id, cs[3].id, "nobody.x"}}, "", []int{1, 3}},
		{"user, every tab", map[string]any{"users": []string{"ann"}}, "", []int{0, 1}},
		{"channel", map[string]any{"channels": []string{"lobby"}}, "", []int{0, 2}},
		{"channel except sender", map[string]any{"channels": []string{"lobby"}}, cs[0].id, []int{2}},
		{"overlapping targets once each", map[string]any{"channels": []string{"a", "b"}, "users": []string{"ann"}}, "", []int{0, 1, 3}},
		{"all", map[string]any{"all": true}, "", []int{0, 1, 2, 3}},
		{"all except", map[string]any{"all": true}, cs[3].id, []int{0, 1, 2}},
		{"empty channel", map[string]any{"channels": []string{"nobody-here"}}, "", nil},
	} {
		msg := "msg-" + tc.name
		var out struct{ Delivered int }
		if st := b.api(t, "POST", "/v1/publish", map[string]any{"to": tc.to, "except": tc.exc, "data": msg}, &out); st != 200 {
			t.Fatalf("%s: status %d", tc.name, st)
		}
		if out.Delivered != len(tc.want) {
			t.Errorf("%s: delivered %d, want %d", tc.name, out.Delivered, len(tc.want))
		}
		expectFrames(t, b, cs, msg, tc.want...)
	}
}

func TestPublishBatchAndBinary(t *testing.T) {
	t.Parallel()
	b := newBridge(t, newFakePHP(t, room), nil)
	cs := b.clients(t, "join=x", "join=y")
	var out struct {
		Delivered int
		Results   []struct{ Delivered int }
	}
	st := b.api(t, "POST", "/v1/publish", `[
		{"to": {"channels": ["x"]}, "data": "one"},
		{"to": {"channels": ["x", "y"]}, "data_base64": "AAEC"}
	]`, &out)
	if st != 200 || out.Delivered != 3 || len(out.Results) != 2 || out.Results[0].Delivered != 1 || out.Results[1].Delivered != 2 {
		t.Fatalf("batch answer %d %+v", st, out)
	}
	if got := read(t, cs[0].ws); got != "one" {
		t.Errorf("first frame %q", got)
	}
	for _, c := range cs {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		typ, data, err := c.ws.Read(ctx)
		cancel()
		if err != nil || typ != websocket.MessageBinary || string(data) != "\x00\x01\x02" {
			t.Errorf("binary frame: %v %v %q", err, typ, data)
		}
	}
}

// Every malformed push is refused with a 4xx that says what is wrong, and nothing of it is
// delivered, not even the good items of a batch.
func TestPublishRefusesMalformedRequests(t *testing.T) {
	t.Parallel()
	b := newBridge(t, newFakePHP(t, room), func(c *Config) { c.MaxBatch = 3; c.MaxPushBody = 4096 })
	cs := b.clients(t, "join=x")
	good := `{"to": {"channels": ["x"]}, "data": "leak"}`
	for _, tc := range []struct {
		name, body string
		status     int
		detail     string
	}{
		{"empty body", ``, 400, "empty body"},
		{"not JSON", `{"to": `, 400, "invalid JSON"},
		{"unknown field", `{"to": {"channels": ["x"]}, "data": "a", "ttl": 5}`, 400, `unknown field "ttl"`},
		{"unknown target", `{"to": {"rooms": ["x"]}, "data": "a"}`, 400, `unknown field "rooms"`},
		{"wrong type", `{"to": {"channels": "x"}, "data": "a"}`, 400, "to.channels"},
		{"no target", `{"to": {}, "data": "a"}`, 400, "names no target"},
		{"no payload", `{"to": {"all": true}}`, 400, `missing "data"`},
		{"both payloads", `{"to": {"all": true}, "data": "a", "data_base64": "AA=="}`, 400, "not both"},
		{"bad base64", `{"to": {"all": true}, "data_base64": "!!"}`, 400, "data_base64"},
		{"empty channel name", `{"to": {"channels": [""]}, "data": "a"}`, 400, "to.channels[0] is empty"},
		{"control character", `{"to": {"users": ["a\u0000b"]}, "data": "a"}`, 400, "to.users[0] contains a control character"},
		{"trailing data", good + ` {}`, 400, "after the JSON value"},
		{"batch with one bad item", `[` + good + `, {"to": {}, "data": "a"}]`, 400, "item 1:"},
		{"empty batch", `[]`, 400, "empty batch"},
		{"batch too long", `[` + strings.Repeat(good+",", 3) + good + `]`, 413, "MAX_BATCH=3"},
		{"body too large", `{"to": {"all": true}, "data": "` + strings.Repeat("a", 5000) + `"}`, 413, "MAX_PUSH_BODY=4096"},
	} {
		var out struct{ Error, Detail string }
		st := b.api(t, "POST", "/v1/publish", tc.body, &out)
		if st != tc.status || out.Error == "" || !strings.Contains(out.Detail, tc.detail) {
			t.Errorf("%s: %d %+v; want %d with detail containing %q", tc.name, st, out, tc.status, tc.detail)
		}
	}
	if b.api(t, "POST", "/v1/publish", `{"to": {"channels": ["x"]}, "data": "after"}`, nil) != 200 {
		t.Fatal("a good push after the refusals failed")
	}
	expectFrames(t, b, cs, "after", 0) // its first frame is "after": nothing refused leaked
}

func TestCloseUserAndJoinLeaveByAPI(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, room)
	b := newBridge(t, php, nil)
	cs := b.clients(t, "user=ann", "user=ann", "user=bob")

	var joined map[string]int
	if st := b.api(t, "POST", "/v1/channels/news/join", map[string]any{"users": []string{"ann"}, "connections": []string{cs[2].id, "gone.x"}}, &joined); st != 200 || joined["joined"] != 3 {
		t.Fatalf("join: %d %v", st, joined)
	}
	var left map[string]int
	if st := b.api(t, "POST", "/v1/channels/news/leave", map[string]any{"connections": []string{cs[0].id}}, &left); st != 200 || left["left"] != 1 {
		t.Fatalf("leave: %d %v", st, left)
	}
	if st := b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"channels": []string{"news"}}, "data": "news!"}, nil); st != 200 {
		t.Fatal(st)
	}
	expectFrames(t, b, cs, "news!", 1, 2)
	// Joins through the API show in the next webhook's channels.
	write(t, cs[2].ws, "hello")
	if ev := php.nextFor(t, EventMessage, cs[2].id).Event; fmt.Sprint(ev.Channels) != "[news]" {
		t.Errorf("channels in webhook = %v", ev.Channels)
	}

	var closed map[string]int
	if st := b.api(t, "POST", "/v1/users/ann/close", `{"code": 4003, "reason": "logged out"}`, &closed); st != 200 || closed["closed"] != 2 {
		t.Fatalf("close user: %d %v", st, closed)
	}
	// Asked again while those two are still closing: nothing more was closed.
	if st := b.api(t, "POST", "/v1/users/ann/close", `{"code": 4004, "reason": "again"}`, &closed); st != 200 || closed["closed"] != 0 {
		t.Errorf("second close of the same user: %d %v, want 0 closed", st, closed)
	}
	for _, i := range []int{0, 1} {
		if ce := readClose(t, cs[i].ws); ce.Code != 4003 || ce.Reason != "logged out" {
			t.Errorf("client %d closed with %v", i, ce)
		}
		if ev := php.nextFor(t, EventClose, cs[i].id).Event; ev.Initiator != InitiatorAPI || *ev.Code != 4003 {
			t.Errorf("close webhook %s %d", ev.Initiator, *ev.Code)
		}
	}
	for _, body := range []string{`{"code": 1001}`, `{"reason": 5}`, `{"code": 4000, "why": "x"}`} {
		if st := b.api(t, "POST", "/v1/connections/"+cs[2].id+"/close", body, nil); st != 400 {
			t.Errorf("close with %s: %d, want 400", body, st)
		}
	}
	for _, body := range []string{``, `{}`, `{"users": [""]}`, `{"groups": ["a"]}`} {
		if st := b.api(t, "POST", "/v1/channels/news/join", body, nil); st != 400 {
			t.Errorf("join with %q: %d, want 400", body, st)
		}
	}
}

func TestPresenceQueries(t *testing.T) {
	t.Parallel()
	b := newBridge(t, newFakePHP(t, room), nil)
	cs := b.clients(t, "user=ann&join=lobby", "user=ann&join=lobby,vip", "user=bob&join=lobby", "join=lobby")

	var ch struct {
		Channel     string
		Connections []string
		Users       []string
		Count       int
	}
	if st := b.api(t, "GET", "/v1/channels/lobby", nil, &ch); st != 200 || ch.Count != 4 || len(ch.Connections) != 4 || fmt.Sprint(ch.Users) != "[ann bob]" {
		t.Errorf("channel lobby: %d %+v", st, ch)
	}
	if b.api(t, "GET", "/v1/channels/empty", nil, &ch); ch.Count != 0 || len(ch.Connections) != 0 || len(ch.Users) != 0 {
		t.Errorf("empty channel: %+v", ch)
	}

	var list struct {
		Connections []connInfo
		Count       int
	}
	b.api(t, "GET", "/v1/connections?user=ann", nil, &list)
	if list.Count != 2 || !sameIDs(list.Connections, cs[0].id, cs[1].id) {
		t.Errorf("user ann: %+v", list)
	}
	b.api(t, "GET", "/v1/connections?channel=vip", nil, &list)
	if list.Count != 1 || !sameIDs(list.Connections, cs[1].id) {
		t.Errorf("channel vip: %+v", list)
	}
	b.api(t, "GET", "/v1/connections?user=bob&channel=vip", nil, &list)
	if list.Count != 0 {
		t.Errorf("bob in vip: %+v", list)
	}
	b.api(t, "GET", "/v1/connections", nil, &list)
	if list.Count != 4 {
		t.Errorf("all: %+v", list)
	}
	if st := b.api(t, "GET", "/v1/connections?usr=ann", nil, nil); st != 400 {
		t.Errorf("unknown query parameter: %d, want 400", st)
	}

	var info connInfo
	if st := b.api(t, "GET", "/v1/connections/"+cs[1].id, nil, &info); st != 200 || info.UserID != "ann" ||
		fmt.Sprint(info.Channels) != "[lobby vip]" || info.Path != "/ws" || info.ConnectedAt.IsZero() {
		t.Errorf("info: %d %+v", st, info)
	}
	if st := b.api(t, "GET", "/v1/connections/nope.x", nil, nil); st != 404 {
		t.Errorf("unknown connection: %d, want 404", st)
	}
	var stats map[string]any
	if b.api(t, "GET", "/v1/stats", nil, &stats); stats["connections"] != 4.0 || stats["users"] != 2.0 || stats["channels"] != 2.0 {
		t.Errorf("stats: %v", stats)
	}

	// Presence follows departures at once.
	cs[2].ws.Close(websocket.StatusNormalClosure, "")
	b.php.nextFor(t, EventClose, cs[2].id)
	if b.api(t, "GET", "/v1/channels/lobby", nil, &ch); ch.Count != 3 || fmt.Sprint(ch.Users) != "[ann]" {
		t.Errorf("after bob left: %+v", ch)
	}
}

func sameIDs(infos []connInfo, ids ...string) bool {
	got := make([]string, len(infos))
	for i, in := range infos {
		got[i] = in.ID
	}
	slices.Sort(got)
	slices.Sort(ids)
	return slices.Equal(got, ids)
}

func TestInternalAPIToken(t *testing.T) {
	t.Parallel()
	b := newBridge(t, newFakePHP(t, room), func(c *Config) { c.APIToken = "tok" })
	for _, tc := range []struct {
		auth string
		want int
	}{{"", 401}, {"Bearer wrong", 401}, {"tok", 401}, {"Bearer tok", 200}} {
		req, _ := http.NewRequest("GET", b.internal.URL+"/v1/stats", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("Authorization %q: %d, want %d", tc.auth, resp.StatusCode, tc.want)
		}
	}
	for _, probe := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(b.internal.URL + probe)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s without a token: %d, want 200", probe, resp.StatusCode)
		}
	}
	if st := b.api(t, "GET", "/v1/nothing", nil, nil); st != 404 {
		t.Errorf("unknown endpoint: %d", st)
	}
}

// Two nodes sharing a broker behave as one: a push on either reaches connections on both.
func TestTwoNodesShareABroker(t *testing.T) {
	t.Parallel()
	broker := NewMemoryBroker()
	php := newFakePHP(t, room)
	cfgA, cfgB := testConfig(t, php.URL), testConfig(t, php.URL)
	cfgA.NodeID, cfgB.NodeID = "a", "b"
	a := startBridge(t, cfgA, php, broker)
	bb := startBridge(t, cfgB, php, broker)
	ca := a.clients(t, "user=ann&join=lobby")[0]
	cb := bb.clients(t, "user=bob&join=lobby")[0]
	if !strings.HasPrefix(ca.id, "a.") || !strings.HasPrefix(cb.id, "b.") {
		t.Fatalf("connection ids %s %s do not name their nodes", ca.id, cb.id)
	}
	a.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"channels": []string{"lobby"}}, "data": "hi all"}, nil)
	for _, c := range []client{ca, cb} {
		if got := read(t, c.ws); got != "hi all" {
			t.Errorf("%s got %q", c.id, got)
		}
	}
	var out map[string]int
	a.api(t, "POST", "/v1/users/bob/close", nil, &out)
	if ce := readClose(t, cb.ws); ce.Code != websocket.StatusNormalClosure {
		t.Errorf("bob on node b closed with %v", ce)
	}
}
