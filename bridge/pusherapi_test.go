package bridge

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"github.com/coder/websocket"
)

// The worked example of Pusher's HTTP API reference ("Generating authentication signatures"):
// these values and the signature come from there, so a signing mistake shared by pusherSign and
// verify cannot pass.
var pusherExample = struct {
	app       pusherCreds
	body, sig string
	ts        int64
}{
	app:  pusherCreds{id: "3", key: "278d425bdf160c739803", secret: []byte("7ad3773142a6692b25b8"), maxPayload: 10240},
	body: `{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`,
	sig:  "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
	ts:   1353088179,
}

func TestPusherSignWorkedExample(t *testing.T) {
	ex := pusherExample
	q, err := url.ParseQuery(pusherSign(ex.app, "POST", "/apps/3/events", nil, []byte(ex.body), time.Unix(ex.ts, 0)))
	if err != nil {
		t.Fatal(err)
	}
	if got := q.Get("auth_signature"); got != ex.sig {
		t.Errorf("auth_signature %s, want Pusher's %s", got, ex.sig)
	}
	if got := q.Get("body_md5"); got != "ec365a775a4cd0599faeb73354201b6f" {
		t.Errorf("body_md5 %s, want Pusher's ec365a775a4cd0599faeb73354201b6f", got)
	}
	a := &pusherAPI{app: ex.app}
	u := &url.URL{Path: "/apps/3/events", RawQuery: "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=" + ex.sig}
	if err := a.verify("POST", u, []byte(ex.body), time.Unix(ex.ts, 0)); err != nil {
		t.Errorf("Pusher's own example refused: %d %s", err.status, err.msg)
	}
}

// TestPusherVerify: each way a request can be wrongly signed is refused with 401 (400 for a
// malformed query) and says what is wrong.
func TestPusherVerify(t *testing.T) {
	ex := pusherExample
	now := time.Unix(ex.ts, 0)
	good := func() url.Values {
		q, _ := url.ParseQuery(pusherSign(ex.app, "POST", "/apps/3/events", nil, []byte(ex.body), now))
		return q
	}
	resign := func(q url.Values, method, path string, body []byte, secret string) url.Values {
		extra := url.Values{}
		for k, v := range q {
			if !strings.HasPrefix(k, "auth_") && k != "body_md5" {
				extra[k] = v
			}
		}
		app := ex.app
		app.secret = []byte(secret)
		signed, _ := url.ParseQuery(pusherSign(app, method, path, extra, body, now))
		if _, ok := q["body_md5"]; !ok {
			signed.Del("body_md5")
			// Signed again without it: the request is well signed, only the MD5 is missing.
			p := map[string]string{}
			for k, v := range signed {
				if k != "auth_signature" {
					p[k] = v[0]
				}
			}
			mac := hmac.New(sha256.New, app.secret)
			mac.Write([]byte(method + "\n" + path + "\n" + pusherQuery(p)))
			signed.Set("auth_signature", hex.EncodeToString(mac.Sum(nil)))
		}
		return signed
	}
	cases := []struct {
		name   string
		query  func() url.Values
		method string
		path   string
		body   string
		now    time.Time
		status int
		want   string
	}{
		{name: "good", query: good},
		{name: "600s late still good", query: good, now: now.Add(600 * time.Second)},
		{name: "600s early still good", query: good, now: now.Add(-600 * time.Second)},
		{name: "601s late", query: good, now: now.Add(601 * time.Second), status: 401, want: "Timestamp expired: Given timestamp (2012-11-16T17:49:39Z) not within 600s of server time"},
		{name: "601s early", query: good, now: now.Add(-601 * time.Second), status: 401, want: "Timestamp expired"},
		{name: "missing key", query: func() url.Values { q := good(); q.Del("auth_key"); return q }, status: 401, want: "Missing auth_key"},
		{name: "wrong key", query: func() url.Values { q := good(); q.Set("auth_key", "nope"); return q }, status: 401, want: "Unknown auth_key"},
		{name: "wrong version", query: func() url.Values { q := good(); q.Set("auth_version", "2.0"); return q }, status: 401, want: `Unsupported auth_version "2.0"`},
		{name: "malformed timestamp", query: func() url.Values { q := good(); q.Set("auth_timestamp", "soon"); return q }, status: 401, want: "malformed auth_timestamp"},
		{name: "wrong body md5", query: good, body: `{"name":"foo","channels":["project-4"],"data":"{}"}`, status: 401, want: "Invalid body_md5"},
		{name: "body without md5", query: func() url.Values {
			q := good()
			q.Del("body_md5")
			return resign(q, "POST", "/apps/3/events", []byte(ex.body), string(ex.app.secret))
		}, status: 401, want: "Missing body_md5"},
		{name: "missing signature", query: func() url.Values { q := good(); q.Del("auth_signature"); return q }, status: 401, want: "Missing auth_signature"},
		{name: "bad signature", query: func() url.Values { q := good(); q.Set("auth_signature", strings.Repeat("0", 64)); return q }, status: 401, want: `Invalid signature: you should have sent HmacSHA256Hex("POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f", your_secret_key)`},
		{name: "signature not hex", query: func() url.Values { q := good(); q.Set("auth_signature", "zz"); return q }, status: 401, want: "Invalid signature"},
		{name: "other secret", query: func() url.Values { return resign(good(), "POST", "/apps/3/events", []byte(ex.body), "not-the-secret") }, status: 401, want: "Invalid signature"},
		{name: "signed for another path", query: good, path: "/apps/3/batch_events", status: 401, want: "Invalid signature"},
		{name: "signed for another method", query: good, method: "PUT", status: 401, want: "Invalid signature"},
		{name: "added parameter", query: func() url.Values { q := good(); q.Set("info", "user_count"); return q }, status: 401, want: "Invalid signature"},
		{name: "parameter twice", query: func() url.Values { q := good(); q.Add("auth_key", ex.app.key); return q }, status: 400, want: `"auth_key" given more than once`},
		{name: "parameter twice in two cases", query: func() url.Values { q := good(); q.Set("AUTH_KEY", ex.app.key); return q }, status: 400, want: "given more than once"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method, path, body, at := cmpOr(tc.method, "POST"), cmpOr(tc.path, "/apps/3/events"), cmpOr(tc.body, ex.body), tc.now
			if at.IsZero() {
				at = now
			}
			a := &pusherAPI{app: ex.app}
			err := a.verify(method, &url.URL{Path: path, RawQuery: tc.query().Encode()}, []byte(body), at)
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("refused: %d %s", err.status, err.msg)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want %d %q", tc.status, tc.want)
			}
			if err.status != tc.status || !strings.Contains(err.msg, tc.want) {
				t.Errorf("got %d %q, want %d containing %q", err.status, err.msg, tc.status, tc.want)
			}
		})
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// pusherTestApp is the app the bridges of these tests serve.
var pusherTestApp = pusherCreds{id: "42", key: "app-key", secret: []byte("app-secret"), maxPayload: 10240}

// newPusherBridge starts a bridge in Pusher mode (pusherTestApp) in front of php, with extra
// WSBRIDGE_* variables, and a second node on the same MemoryBroker whose envelopes land in
// the returned channel: what the API published, as the other nodes get it.
func newPusherBridge(t *testing.T, php *fakePHP, env ...string) (*testBridge, <-chan Envelope) {
	t.Helper()
	cfg, err := LoadConfig(append([]string{
		"WSBRIDGE_WEBHOOK_URL=" + php.URL,
		"WSBRIDGE_PUSHER_APP_ID=" + pusherTestApp.id,
		"WSBRIDGE_PUSHER_KEY=" + pusherTestApp.key,
		"WSBRIDGE_PUSHER_SECRET=" + string(pusherTestApp.secret),
	}, env...))
	if err != nil {
		t.Fatal(err)
	}
	broker := NewMemoryBroker()
	envs := make(chan Envelope, 1000)
	t.Cleanup(broker.Join("other-node", func(e Envelope) { envs <- e }))
	return startBridge(t, cfg, php, broker), envs
}

// pusherCall sends a request signed as the Pusher SDKs sign it (at now, when not zero) and
// returns the status and the answer's body.
func (b *testBridge) pusherCall(t *testing.T, method, path string, query url.Values, body string, now time.Time) (int, string) {
	t.Helper()
	if now.IsZero() {
		now = time.Now()
	}
	decoded, err := url.PathUnescape(path)
	if err != nil {
		t.Fatal(err)
	}
	u := b.internal.URL + path + "?" + pusherSign(pusherTestApp, method, decoded, query, []byte(body), now)
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json") // as the SDKs send it
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(raw))
}

// pusherOpen answers open webhooks with the user and channels of the handshake's query
// (?user=&join=a,b), so that connections sit in known channels with known users.
func pusherOpen(c hookCall) (int, any) {
	if c.Event.Type != EventOpen {
		return http.StatusNoContent, nil
	}
	q, _ := url.ParseQuery(c.Event.Request.Query)
	reply := map[string]any{"user_id": q.Get("user")}
	if j := q.Get("join"); j != "" {
		reply["join"] = strings.Split(j, ",")
	}
	return http.StatusOK, reply
}

// TestPusherTriggerDelivers: POST events reaches the channels' subscribers, one publication per
// channel with the event name and socket_id as except, carried to the other nodes.
func TestPusherTriggerDelivers(t *testing.T) {
	php := newFakePHP(t, pusherOpen)
	b, envs := newPusherBridge(t, php)
	a := b.dial(t, "user=alice&join=orders")
	c := b.dial(t, "user=carol&join=invoices")
	n := b.dial(t, "user=nobody&join=elsewhere")

	body := `{"name":"order.shipped","channels":["orders","invoices"],"data":"{\"id\":7}","socket_id":"123.456"}`
	status, answer := b.pusherCall(t, "POST", "/apps/42/events", nil, body, time.Time{})
	if status != 200 || answer != "{}" {
		t.Fatalf("trigger: %d %s, want 200 {}", status, answer)
	}
	for _, conn := range []*websocket.Conn{a, c} {
		if got := read(t, conn); !strings.Contains(got, `{\"id\":7}`) && !strings.Contains(got, `{"id":7}`) {
			t.Errorf("subscriber got %q, want the event's data", got)
		}
	}
	var got []Publication
	for len(got) < 2 {
		select {
		case e := <-envs:
			if e.Op == OpPublish {
				got = append(got, *e.Publication)
			}
		case <-time.After(waitLimit):
			t.Fatalf("the other node got %d publications, want 2", len(got))
		}
	}
	for i, ch := range []string{"orders", "invoices"} {
		p := got[i]
		if len(p.To.Channels) != 1 || p.To.Channels[0] != ch || p.Event != "order.shipped" || p.Except != "123.456" || p.Data == nil || *p.Data != `{"id":7}` {
			t.Errorf("publication %d: %+v, want channel %s, event order.shipped, except 123.456", i, p, ch)
		}
	}
	// Nothing reached the connection in neither channel: a push to it comes first.
	b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"users": []string{"nobody"}}, "data": "marker"}, nil)
	if got := read(t, n); got != "marker" {
		t.Errorf("connection in neither channel got %q first", got)
	}
}

// TestPusherReplayRefused: a captured request is accepted while its timestamp is within 600 s
// and refused after, whatever else is right about it.
func TestPusherReplayRefused(t *testing.T) {
	php := newFakePHP(t, pusherOpen)
	b, _ := newPusherBridge(t, php)
	clock := newFakeClock(time.Now())
	body := `{"name":"e","channel":"room","data":"x"}`
	signedAt := clock.now()
	query := pusherSign(pusherTestApp, "POST", "/apps/42/events", nil, []byte(body), signedAt)
	replay := func() (int, string) {
		req, _ := http.NewRequest("POST", "/apps/42/events?"+query, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h := &pusherAPI{s: b.srv, app: pusherTestApp, now: clock.now}
		h.authenticate(http.HandlerFunc(h.handleEvents)).ServeHTTP(w, req)
		return w.Code, w.Body.String()
	}
	if status, answer := replay(); status != 200 {
		t.Fatalf("fresh request: %d %s", status, answer)
	}
	clock.advance(599 * time.Second)
	if status, answer := replay(); status != 200 {
		t.Fatalf("replay at 599 s: %d %s (Pusher's window is 600 s)", status, answer)
	}
	clock.advance(2 * time.Second)
	status, answer := replay()
	if status != 401 || !strings.Contains(answer, "Timestamp expired") {
		t.Fatalf("replay at 601 s: %d %s, want 401 Timestamp expired", status, answer)
	}
}

// TestPusherEventsRefused: each malformed event gets Pusher's status and a clear text, and
// nothing is published, not even to the channels before the bad one.
func TestPusherEventsRefused(t *testing.T) {
	php := newFakePHP(t, pusherOpen)
	b, envs := newPusherBridge(t, php)
	big := strings.Repeat("x", 10241)
	many := make([]string, 101)
	for i := range many {
		many[i] = "c" + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + strings.Repeat("y", i/26)
	}
	manyJSON, _ := json.Marshal(many)
	cases := []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"no name", "events", `{"channels":["a"],"data":"x"}`, 400, `Missing event "name"`},
		{"name too long", "events", `{"name":"` + strings.Repeat("n", 201) + `","channels":["a"],"data":"x"}`, 400, "Event name too long"},
		{"reserved name", "events", `{"name":"pusher_internal:member_added","channels":["presence-a"],"data":"{}"}`, 400, "the protocol's own"},
		{"no data", "events", `{"name":"e","channels":["a"]}`, 400, `Missing "data"`},
		{"data not a string", "events", `{"name":"e","channels":["a"],"data":{"x":1}}`, 400, "Malformed JSON body"},
		{"data too large", "events", `{"name":"e","channels":["a"],"data":"` + big + `"}`, 413, "exceeds the allowed maximum (10240 bytes)"},
		{"no channel", "events", `{"name":"e","data":"x"}`, 400, `Missing "channels"`},
		{"empty channels", "events", `{"name":"e","channels":[],"data":"x"}`, 400, `Missing "channels"`},
		{"both channel and channels", "events", `{"name":"e","channel":"a","channels":["b"],"data":"x"}`, 400, "not both"},
		{"101 channels", "events", `{"name":"e","channels":` + string(manyJSON) + `,"data":"x"}`, 400, "Too many channels: 101, at most 100"},
		{"bad channel after a good one", "events", `{"name":"e","channels":["good","bad channel"],"data":"x"}`, 400, `Invalid channel name "bad channel"`},
		{"channel name too long", "events", `{"name":"e","channels":["` + strings.Repeat("c", 201) + `"],"data":"x"}`, 400, "Channel name too long"},
		{"channel twice", "events", `{"name":"e","channels":["a","a"],"data":"x"}`, 400, `Channel "a" is named twice`},
		{"bad socket id", "events", `{"name":"e","channels":["a"],"data":"x","socket_id":"abc.def"}`, 400, "Invalid socket_id"},
		{"user_count of a public channel", "events", `{"name":"e","channels":["a"],"data":"x","info":"user_count"}`, 400, "only available for presence channels"},
		{"unknown info", "events", `{"name":"e","channels":["a"],"data":"x","info":"cache"}`, 400, `Unknown info attribute "cache"`},
		{"unknown field", "events", `{"name":"e","channels":["a"],"data":"x","extra":1}`, 400, "Malformed JSON body"},
		{"empty body", "events", ``, 400, "Empty body"},
		{"batch of 11", "batch_events", `{"batch":[` + strings.TrimSuffix(strings.Repeat(`{"name":"e","channel":"a","data":"x"},`, 11), ",") + `]}`, 400, "Batch too large: 11 events, at most 10"},
		{"empty batch", "batch_events", `{"batch":[]}`, 400, `empty "batch"`},
		{"batch with channels", "batch_events", `{"batch":[{"name":"e","channels":["a"],"data":"x"}]}`, 400, `names one "channel"`},
		{"batch: bad second event", "batch_events", `{"batch":[{"name":"e","channel":"a","data":"x"},{"name":"e","channel":"a","data":"` + big + `"}]}`, 413, "Event 1 of the batch: The data content"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, answer := b.pusherCall(t, "POST", "/apps/42/"+tc.path, nil, tc.body, time.Time{})
			if status != tc.status || !strings.Contains(answer, tc.want) {
				t.Errorf("got %d %q, want %d containing %q", status, answer, tc.status, tc.want)
			}
		})
	}
	if v := metricValue(t, b.srv, "wsbridge_limit_hits_total", "limit", "pusher_payload"); v != 2 {
		t.Errorf("wsbridge_limit_hits_total{limit=pusher_payload} = %v, want 2 (the two oversized events)", v)
	}
	// A good request after all of them: the only publication the other node ever sees.
	if status, answer := b.pusherCall(t, "POST", "/apps/42/events", nil, `{"name":"last","channel":"a","data":"x"}`, time.Time{}); status != 200 {
		t.Fatalf("good request: %d %s", status, answer)
	}
	select {
	case e := <-envs:
		if e.Op != OpPublish || e.Publication.Event != "last" {
			t.Errorf("first envelope published: %+v, want the good request's", e)
		}
	case <-time.After(waitLimit):
		t.Fatal("the good request published nothing")
	}
}

// TestPusherAPIRouting: the app id must be this app's; unknown endpoints and methods are refused.
func TestPusherAPIRouting(t *testing.T) {
	php := newFakePHP(t, pusherOpen)
	b, _ := newPusherBridge(t, php, "WSBRIDGE_MAX_PUSH_BODY=1024")
	cases := []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"other app", "POST", "/apps/43/events", `{"name":"e","channel":"a","data":"x"}`, 404, `Unknown app_id "43"`},
		{"body over MAX_PUSH_BODY", "POST", "/apps/42/batch_events", `{"batch":[{"name":"e","channel":"a","data":"` + strings.Repeat("x", 2000) + `"}]}`, 413, "Request body larger than 1024 bytes"},
		{"unknown endpoint", "GET", "/apps/42/nothing", "", 404, "404 page not found"},
		{"wrong method", "GET", "/apps/42/events", "", 405, ""},
		{"users of a public channel", "GET", "/apps/42/channels/room/users", "", 400, "only be listed for presence channels"},
		{"bad channel name", "GET", "/apps/42/channels/a%20b", "", 400, "Invalid channel name"},
		{"unknown query parameter", "GET", "/apps/42/channels", "", 0, ""},
	}
	for _, tc := range cases {
		if tc.status == 0 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			status, answer := b.pusherCall(t, tc.method, tc.path, nil, tc.body, time.Time{})
			if status != tc.status || !strings.Contains(answer, tc.want) {
				t.Errorf("got %d %q, want %d containing %q", status, answer, tc.status, tc.want)
			}
		})
	}
	status, answer := b.pusherCall(t, "GET", "/apps/42/channels", url.Values{"limit": {"3"}}, "", time.Time{})
	if status != 400 || !strings.Contains(answer, `Unknown query parameter "limit"`) {
		t.Errorf("unknown query parameter: %d %q", status, answer)
	}
	// A POST body that does not say it is JSON is refused as on /v1/ (the SDKs say so).
	body := `{"name":"e","channel":"a","data":"x"}`
	req, _ := http.NewRequest("POST", b.internal.URL+"/apps/42/events?"+pusherSign(pusherTestApp, "POST", "/apps/42/events", nil, []byte(body), time.Now()), strings.NewReader(body))
	req.Header.Set("Content-Type", "text/plain")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 415 {
		t.Errorf("text/plain body: %v %v, want 415", resp, err)
	} else {
		resp.Body.Close()
	}
	// A web page is refused before its signature is even looked at, as on /v1/.
	req, _ = http.NewRequest("GET", b.internal.URL+"/apps/42/channels", nil)
	req.Header.Set("Origin", "https://evil.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("request with an Origin: %d, want 403", resp.StatusCode)
	}
}

// TestPusherChannelQueries: channels, channels/{name} and channels/{name}/users as Pusher
// answers them, counted from the hub: users are distinct hub users, subscriptions connections.
func TestPusherChannelQueries(t *testing.T) {
	php := newFakePHP(t, pusherOpen)
	b, _ := newPusherBridge(t, php)
	b.dial(t, "user=alice&join=presence-room,news")
	b.dial(t, "user=alice&join=presence-room")
	b.dial(t, "user=bob&join=presence-room,presence-other")

	get := func(path string, q url.Values) (int, map[string]any) {
		t.Helper()
		status, answer := b.pusherCall(t, "GET", path, q, "", time.Time{})
		var out map[string]any
		if status == 200 {
			if err := json.Unmarshal([]byte(answer), &out); err != nil {
				t.Fatalf("%s: %q is not JSON", path, answer)
			}
		}
		return status, out
	}
	expect := func(name string, got any, want string) {
		t.Helper()
		j, _ := json.Marshal(got)
		if string(j) != want {
			t.Errorf("%s: %s, want %s", name, j, want)
		}
	}
	_, all := get("/apps/42/channels", nil)
	expect("channels", all, `{"channels":{"news":{},"presence-other":{},"presence-room":{}}}`)
	_, pres := get("/apps/42/channels", url.Values{"filter_by_prefix": {"presence-"}, "info": {"user_count"}})
	expect("presence channels with user_count", pres, `{"channels":{"presence-other":{"user_count":1},"presence-room":{"user_count":2}}}`)
	if status, _ := get("/apps/42/channels", url.Values{"info": {"user_count"}}); status != 400 {
		t.Errorf("user_count without a presence- prefix: %d, want 400", status)
	}
	_, room := get("/apps/42/channels/presence-room", url.Values{"info": {"user_count,subscription_count"}})
	expect("presence-room", room, `{"occupied":true,"subscription_count":3,"user_count":2}`)
	_, news := get("/apps/42/channels/news", url.Values{"info": {"subscription_count"}})
	expect("news", news, `{"occupied":true,"subscription_count":1}`)
	_, empty := get("/apps/42/channels/nobody-here", nil)
	expect("empty channel", empty, `{"occupied":false}`)
	if status, _ := get("/apps/42/channels/news", url.Values{"info": {"user_count"}}); status != 400 {
		t.Errorf("user_count of a public channel: %d, want 400", status)
	}
	_, users := get("/apps/42/channels/presence-room/users", nil)
	expect("users", users, `{"users":[{"id":"alice"},{"id":"bob"}]}`)

	// info on POST events answers with the counts after publishing.
	status, answer := b.pusherCall(t, "POST", "/apps/42/events", nil, `{"name":"e","channels":["presence-room"],"data":"x","info":"user_count,subscription_count"}`, time.Time{})
	if status != 200 || answer != `{"channels":{"presence-room":{"subscription_count":3,"user_count":2}}}` {
		t.Errorf("events with info: %d %s", status, answer)
	}
	status, answer = b.pusherCall(t, "POST", "/apps/42/batch_events", nil, `{"batch":[{"name":"e","channel":"news","data":"x","info":"subscription_count"},{"name":"e","channel":"presence-room","data":"x"}]}`, time.Time{})
	if status != 200 || answer != `{"batch":[{"subscription_count":1},{}]}` {
		t.Errorf("batch with info: %d %s", status, answer)
	}
}

// TestPusherTerminate closes every connection of the user with 4009, and only theirs.
func TestPusherTerminate(t *testing.T) {
	php := newFakePHP(t, pusherOpen)
	b, _ := newPusherBridge(t, php)
	a1 := b.dial(t, "user=alice")
	a2 := b.dial(t, "user=alice")
	bob := b.dial(t, "user=bob")
	status, answer := b.pusherCall(t, "POST", "/apps/42/users/alice/terminate_connections", nil, "{}", time.Time{})
	if status != 200 || answer != "{}" {
		t.Fatalf("terminate: %d %s", status, answer)
	}
	for _, c := range []*websocket.Conn{a1, a2} {
		if ce := readClose(t, c); ce.Code != pusherTerminateCode {
			t.Errorf("alice's connection closed with %d, want %d", ce.Code, pusherTerminateCode)
		}
	}
	b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"users": []string{"bob"}}, "data": "still here"}, nil)
	if got := read(t, bob); got != "still here" {
		t.Errorf("bob got %q", got)
	}
}

// TestPusherAPIWithPusherClients: the API against Pusher-protocol connections. socket_id leaves
// out the sender (Laravel's toOthers), the event reaches the others as Pusher's envelope,
// presence counts and users come from channel_data's user_id, terminate closes with 4009.
func TestPusherAPIWithPusherClients(t *testing.T) {
	php := newFakePHP(t, nil)
	b, _ := newPusherBridge(t, php)
	join := func(channel, user string) (*websocket.Conn, string) {
		c, sid := dialPusher(t, b)
		cd, auth := "", ""
		if user != "" {
			cd = `{"user_id":"` + user + `"}`
			auth = pusherAuth(sid, channel, cd)
		}
		if m := pusherSubscribe(t, c, channel, auth, cd); m.Event != "pusher_internal:subscription_succeeded" {
			t.Fatalf("subscribe %s: %s %s", channel, m.Event, m.Data)
		}
		return c, sid
	}
	sender, senderID := join("presence-room", "7")
	other, _ := join("presence-room", "8")
	if m := readPusher(t, sender); m.Event != "pusher_internal:member_added" {
		t.Fatalf("sender got %s, want member_added of 8", m.Event)
	}
	tab, _ := join("presence-room", "8") // user 8's second tab

	status, answer := b.pusherCall(t, "POST", "/apps/42/events", nil, `{"name":"App\\Events\\Said","channels":["presence-room"],"data":"{\"text\":\"hi\"}","socket_id":"`+senderID+`"}`, time.Time{})
	if status != 200 {
		t.Fatalf("trigger: %d %s", status, answer)
	}
	for _, c := range []*websocket.Conn{other, tab} {
		m := readPusher(t, c)
		if m.Event != `App\Events\Said` || m.Channel != "presence-room" || m.dataString(t) != `{"text":"hi"}` {
			t.Errorf("subscriber got %s on %s data %s", m.Event, m.Channel, m.Data)
		}
	}
	// The sender's first event is the next one, not the one its socket_id excluded.
	if status, answer := b.pusherCall(t, "POST", "/apps/42/events", nil, `{"name":"second","channel":"presence-room","data":"2"}`, time.Time{}); status != 200 {
		t.Fatalf("second trigger: %d %s", status, answer)
	}
	if m := readPusher(t, sender); m.Event != "second" {
		t.Errorf("sender got %s first, want second: socket_id did not leave it out", m.Event)
	}

	status, answer = b.pusherCall(t, "GET", "/apps/42/channels/presence-room", url.Values{"info": {"user_count,subscription_count"}}, "", time.Time{})
	if status != 200 || answer != `{"occupied":true,"subscription_count":3,"user_count":2}` {
		t.Errorf("channel info: %d %s, want 2 users over 3 connections", status, answer)
	}
	status, answer = b.pusherCall(t, "GET", "/apps/42/channels/presence-room/users", nil, "", time.Time{})
	if status != 200 || answer != `{"users":[{"id":"7"},{"id":"8"}]}` {
		t.Errorf("users: %d %s", status, answer)
	}
	status, answer = b.pusherCall(t, "POST", "/apps/42/users/8/terminate_connections", nil, "{}", time.Time{})
	if status != 200 {
		t.Fatalf("terminate: %d %s", status, answer)
	}
	for _, c := range []*websocket.Conn{other, tab} {
		var ce websocket.CloseError
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		for {
			if _, _, err := c.Read(ctx); err != nil {
				if !errors.As(err, &ce) {
					t.Errorf("user 8's connection ended with %v, want a close", err)
				}
				break
			}
		}
		cancel()
		if ce.Code != pusherTerminateCode {
			t.Errorf("user 8's connection closed with %d, want %d (pusher-js does not reconnect)", ce.Code, pusherTerminateCode)
		}
	}
}

// TestPusherAPIOff: without the Pusher mode, /apps/ says how to turn it on, signed or not.
func TestPusherAPIOff(t *testing.T) {
	php := newFakePHP(t, pusherOpen)
	b := newBridge(t, php, nil)
	status, answer := b.pusherCall(t, "POST", "/apps/42/events", nil, `{"name":"e","channel":"a","data":"x"}`, time.Time{})
	if status != 404 || !strings.Contains(answer, "The Pusher HTTP API is off: set WSBRIDGE_PUSHER_APP_ID") {
		t.Errorf("got %d %q, want 404 saying how to turn the mode on", status, answer)
	}
}

// FuzzPusherAPI: whatever a correctly signed request carries, the API answers 200 or a 4xx
// with a text, never a 5xx or a panic, and a refused request publishes nothing.
func FuzzPusherAPI(f *testing.F) {
	f.Add("events", []byte(`{"name":"e","channels":["a","b"],"data":"x","socket_id":"1.2","info":"subscription_count"}`))
	f.Add("batch_events", []byte(`{"batch":[{"name":"e","channel":"presence-a","data":"x","info":"user_count"}]}`))
	f.Add("events", []byte(`{"name":"pusher:x","channel":"a","data":"x"}`))
	f.Add("users/7/terminate_connections", []byte(`{}`))
	cfg, err := LoadConfig([]string{"WSBRIDGE_WEBHOOK_URL=http://127.0.0.1:9/", "WSBRIDGE_PUSHER_APP_ID=42",
		"WSBRIDGE_PUSHER_KEY=" + pusherTestApp.key, "WSBRIDGE_PUSHER_SECRET=" + string(pusherTestApp.secret)})
	if err != nil {
		f.Fatal(err)
	}
	broker := NewMemoryBroker()
	var published atomic.Int64
	f.Cleanup(broker.Join("other-node", func(e Envelope) {
		if e.Op == OpPublish {
			published.Add(1)
		}
	}))
	srv := New(cfg, slog.New(slog.DiscardHandler), broker)
	h := srv.InternalHandler()
	f.Fuzz(func(t *testing.T, endpoint string, body []byte) {
		path := "/apps/42/" + endpoint
		if _, err := url.ParseRequestURI(path); err != nil || strings.ContainsAny(path, "?#%") || strings.ContainsFunc(path, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) {
			return // not a path a client could send
		}
		before := published.Load()
		req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8081"+path+"?"+pusherSign(pusherTestApp, "POST", path, nil, body, time.Now()), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code >= 500:
			t.Fatalf("POST %s %q: status %d: %s", path, body, rec.Code, rec.Body)
		case rec.Code != 200 && published.Load() != before:
			t.Fatalf("POST %s %q: refused with %d but published", path, body, rec.Code)
		case rec.Code >= 400 && rec.Code != http.StatusMethodNotAllowed && strings.TrimSpace(rec.Body.String()) == "":
			t.Fatalf("POST %s %q: %d without an explanation", path, body, rec.Code)
		}
	})
}
