package bridge

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// framedIn is any server-to-client message of wsbridge.v1+json, as a client reads it.
type framedIn struct {
	Type       string              `json:"type"`
	Channel    string              `json:"channel"`
	Epoch      string              `json:"epoch"`
	Offset     uint64              `json:"offset"`
	Data       *string             `json:"data"`
	DataBase64 *string             `json:"data_base64"`
	Recovered  bool                `json:"recovered"`
	Positions  map[string]Position `json:"positions"`
	Lost       []string            `json:"lost"`
	Error      string              `json:"error"`
}

// historyBridge is a bridge with history on whose PHP joins every connection to the channels
// named in its query's "join" (comma-separated).
func historyBridge(t *testing.T, tweak func(*Config)) *testBridge {
	t.Helper()
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type != EventOpen {
			return http.StatusNoContent, nil
		}
		q, _ := url.ParseQuery(c.Event.Request.Query)
		var join []string
		if j := q.Get("join"); j != "" {
			join = strings.Split(j, ",")
		}
		return http.StatusOK, map[string]any{"join": join}
	})
	return newBridge(t, php, func(cfg *Config) {
		cfg.HistorySize = 100
		if tweak != nil {
			tweak(cfg)
		}
	})
}

// dialFramed opens a wsbridge.v1+json connection joined to join, resuming token ("": none).
func dialFramed(t *testing.T, b *testBridge, join, token string) *websocket.Conn {
	t.Helper()
	q := url.Values{"join": {join}}
	if token != "" {
		q.Set(resumeParam, token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, _, err := websocket.Dial(ctx, b.wsURL+"?"+q.Encode(), &websocket.DialOptions{Subprotocols: []string{framedSubprotocol}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	if c.Subprotocol() != framedSubprotocol {
		t.Fatalf("subprotocol %q chosen, want %q", c.Subprotocol(), framedSubprotocol)
	}
	return c
}

func readFramed(t *testing.T, c *websocket.Conn) framedIn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m framedIn
	if typ != websocket.MessageText {
		t.Fatalf("a framed client got a binary frame")
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("frame %q is not JSON: %v", b, err)
	}
	return m
}

func (b *testBridge) publishText(t *testing.T, to Targets, data string) {
	t.Helper()
	if st := b.api(t, "POST", "/v1/publish", Publication{To: to, Data: &data}, nil); st != http.StatusOK {
		t.Fatalf("publish: status %d", st)
	}
}

func channels(chs ...string) Targets { return Targets{Channels: chs} }

// A framed client is told its position in each history channel first; publications to one
// history channel carry their position, others none; when it comes back with its positions as
// one token it gets what it missed in every channel, in order, before anything live; PHP sees
// what it asked to resume.
func TestHistoryRecoversEveryChannel(t *testing.T) {
	b := historyBridge(t, func(cfg *Config) { cfg.HistoryChannels = []string{"news", "chat:*"} })
	c := dialFramed(t, b, "news,chat:1,plain", "")
	id := b.php.next(t, EventOpen).Event.ConnectionID
	sync := readFramed(t, c)
	if sync.Type != "sync" || !sync.Recovered || len(sync.Positions) != 2 || sync.Positions["news"].Offset != 0 || sync.Positions["chat:1"].Epoch == "" {
		t.Fatalf("first frame %+v: want a sync at offset 0 in news and chat:1 (plain keeps no history)", sync)
	}
	pos := sync.Positions
	b.publishText(t, channels("news"), "n1")
	b.publishText(t, channels("plain"), "p1")
	b.publishText(t, Targets{Connections: []string{id}}, "direct")
	b.publishText(t, channels("news", "chat:1"), "both")
	for _, want := range []framedIn{
		{Type: "publication", Channel: "news", Offset: 1, Data: ptr("n1")},
		{Type: "message", Data: ptr("p1")},
		{Type: "message", Data: ptr("direct")},
		{Type: "message", Data: ptr("both")},
	} {
		m := readFramed(t, c)
		if m.Type != want.Type || m.Channel != want.Channel || m.Offset != want.Offset || deref(m.Data) != deref(want.Data) {
			t.Fatalf("got %+v, want %+v", m, want)
		}
		if m.Channel != "" {
			pos[m.Channel] = Position{Epoch: m.Epoch, Offset: m.Offset}
		}
	}
	c.Close(websocket.StatusNormalClosure, "")
	b.php.nextFor(t, EventClose, id)

	for i := 2; i <= 4; i++ {
		b.publishText(t, channels("news"), fmt.Sprintf("n%d", i))
	}
	b.publishText(t, channels("chat:1"), "c1")
	b.publishText(t, channels("plain"), "missed for good") // no history: not recovered

	token := resumeToken(pos)
	c = dialFramed(t, b, "news,chat:1,plain", token)
	open := b.php.next(t, EventOpen).Event
	if open.Resume == nil || open.Resume.Error != "" || open.Resume.Positions["news"] != pos["news"] || open.Resume.Positions["chat:1"] != pos["chat:1"] {
		t.Fatalf("open webhook resume %+v, want the positions %+v", open.Resume, pos)
	}
	sync = readFramed(t, c)
	// The notice says where the client stands before the recovered publications reach it.
	if sync.Type != "sync" || !sync.Recovered || len(sync.Lost) != 0 || sync.Positions["news"] != pos["news"] || sync.Positions["chat:1"] != pos["chat:1"] {
		t.Fatalf("sync %+v: want recovered, at the positions resumed %+v", sync, pos)
	}
	// Channel by channel, sorted: chat:1, then news.
	for _, want := range []string{"chat:1 1 c1", "news 2 n2", "news 3 n3", "news 4 n4"} {
		m := readFramed(t, c)
		if got := fmt.Sprintf("%s %d %s", m.Channel, m.Offset, deref(m.Data)); m.Type != "publication" || got != want {
			t.Fatalf("recovered %q (%s), want %q", got, m.Type, want)
		}
	}
	b.publishText(t, channels("news"), "live")
	if m := readFramed(t, c); m.Offset != 5 || deref(m.Data) != "live" {
		t.Fatalf("after the recovery got %+v, want news 5 live", m)
	}
	if r, l := counterValue(b.srv.metrics.recoveries.WithLabelValues("recovered")), counterValue(b.srv.metrics.recoveries.WithLabelValues("lost")); r != 1 || l != 0 {
		t.Fatalf("wsbridge_history_recoveries_total: recovered %d, lost %d; want 1 and 0 (the first connection asked nothing)", r, l)
	}
}

// When the gap cannot be filled the sync notice says so, for each channel, and nothing of the
// channel is sent: no partial recovery. A token that cannot be read is refused whole, plainly.
func TestHistoryUnrecoverable(t *testing.T) {
	clock := newFakeClock(time.Now())
	b := historyBridge(t, func(cfg *Config) { cfg.HistorySize = 3; cfg.HistoryTTL = time.Minute })
	b.srv.hub.history.store.(*memoryHistory).now = clock.now
	c := dialFramed(t, b, "news,old", "")
	b.php.next(t, EventOpen)
	epoch := readFramed(t, c).Positions["news"].Epoch
	c.CloseNow()
	for i := 0; i < 5; i++ {
		b.publishText(t, channels("news"), fmt.Sprint(i)) // offsets 1-5; 1 and 2 evicted
	}
	b.publishText(t, channels("old"), "o1")
	oldEpoch := readFramedNoFail(b, t)
	clock.advance(2 * time.Minute) // o1 expires

	newest := uint64(5) // each case publishes one more
	for _, tc := range []struct {
		name, token, wantLost, wantErr string
	}{
		{"evicted", resumeToken(map[string]Position{"news": {epoch, 1}}), "news", ""},
		{"epoch changed", resumeToken(map[string]Position{"news": {"othr", 5}}), "news", ""},
		{"ahead", resumeToken(map[string]Position{"news": {epoch, 9}}), "news", ""},
		{"expired", resumeToken(map[string]Position{"old": {oldEpoch, 0}}), "old", ""},
		{"not base64url", "%%%", "news,old", "not base64url"},
		{"padded", base64.URLEncoding.EncodeToString([]byte(`{"news":{"epoch":"xy","offset":1}}`)), "news,old", "not base64url"},
		{"not JSON", base64.RawURLEncoding.EncodeToString([]byte(`news:5`)), "news,old", "invalid JSON"},
		{"array", base64.RawURLEncoding.EncodeToString([]byte(`[1]`)), "news,old", "resume token"},
		{"unknown field", base64.RawURLEncoding.EncodeToString([]byte(`{"news":{"epoch":"x","offset":1,"x":1}}`)), "news,old", "unknown field"},
		{"negative offset", base64.RawURLEncoding.EncodeToString([]byte(`{"news":{"epoch":"x","offset":-1}}`)), "news,old", "offset"},
		{"empty epoch", base64.RawURLEncoding.EncodeToString([]byte(`{"news":{"epoch":"","offset":1}}`)), "news,old", "epoch must be"},
		{"control in channel", base64.RawURLEncoding.EncodeToString([]byte(`{"a\u0001":{"epoch":"x","offset":1}}`)), "news,old", "control character"},
		{"too long", strings.Repeat("A", maxResumeToken+1), "news,old", "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialFramed(t, b, "news,old", tc.token)
			open := b.php.next(t, EventOpen).Event
			if open.Resume == nil || !strings.Contains(open.Resume.Error, tc.wantErr) || (tc.wantErr != "") != (open.Resume.Error != "") {
				t.Fatalf("open webhook resume %+v: want error containing %q", open.Resume, tc.wantErr)
			}
			sync := readFramed(t, c)
			if sync.Type != "sync" || sync.Recovered || strings.Join(sync.Lost, ",") != tc.wantLost || !strings.Contains(sync.Error, tc.wantErr) {
				t.Fatalf("sync %+v: want recovered false, lost %q, error containing %q", sync, tc.wantLost, tc.wantErr)
			}
			if p := sync.Positions["news"]; p.Epoch != epoch || p.Offset != newest {
				t.Fatalf("sync positions %+v: want news at %s:%d to go on from", sync.Positions, epoch, newest)
			}
			// Nothing of a lost channel is sent: the next frame is live.
			b.publishText(t, channels("news"), "live")
			if m := readFramed(t, c); deref(m.Data) != "live" || m.Offset != newest+1 {
				t.Fatalf("after a lost recovery got %+v, want the live publication at %d", m, newest+1)
			}
			newest++
			c.CloseNow()
		})
	}
	if l := counterValue(b.srv.metrics.recoveries.WithLabelValues("lost")); l != 13 {
		t.Fatalf("wsbridge_history_recoveries_total{result=lost} = %d, want 13, one per case", l)
	}
}

// readFramedNoFail connects once to learn the epoch of channel old (published to already).
func readFramedNoFail(b *testBridge, t *testing.T) string {
	t.Helper()
	c := dialFramed(t, b, "old", "")
	defer c.CloseNow()
	b.php.next(t, EventOpen)
	return readFramed(t, c).Positions["old"].Epoch
}

// A client without the subprotocol is a raw-frame client: it gets payloads as they are, no
// sync notice, and its query (even with lastEventId) is the app's own.
func TestHistoryRawClientUnchanged(t *testing.T) {
	b := historyBridge(t, nil)
	c := b.dial(t, "join=news&"+resumeParam+"=whatever")
	if open := b.php.next(t, EventOpen).Event; open.Resume != nil {
		t.Fatalf("a raw client's open webhook carries resume %+v", open.Resume)
	}
	if c.Subprotocol() != "" {
		t.Fatalf("subprotocol %q chosen for a client that offered none", c.Subprotocol())
	}
	b.publishText(t, channels("news"), "raw")
	if got := read(t, c); got != "raw" {
		t.Fatalf("raw client got %q, want the payload as published", got)
	}
}

// With history off the subprotocol is not chosen by the bridge, and nothing is numbered.
func TestHistoryOffLeavesSubprotocolToPHP(t *testing.T) {
	b := historyBridge(t, func(cfg *Config) { cfg.HistorySize = 0 })
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, _, err := websocket.Dial(ctx, b.wsURL+"?join=news&"+resumeParam+"=x", &websocket.DialOptions{Subprotocols: []string{framedSubprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if open := b.php.next(t, EventOpen).Event; open.Resume != nil || c.Subprotocol() != "" {
		t.Fatalf("history off: resume %+v, subprotocol %q; want neither", open.Resume, c.Subprotocol())
	}
	if st := b.api(t, "GET", "/v1/channels/news/history", nil, nil); st != http.StatusNotFound {
		t.Fatalf("history API with history off: %d, want 404", st)
	}
}

// Pushes race the reconnects: over many rounds a client drops its connection while
// publications keep coming, and reconnects with its token. Counted over all the connections,
// every offset arrives exactly once and in order: no gap, no duplicate.
func TestHistoryRecoveryRacesPublications(t *testing.T) {
	b := historyBridge(t, func(cfg *Config) { cfg.HistorySize = 1000 })
	const rounds, perRound = 40, 25
	c := dialFramed(t, b, "news", "")
	pos := readFramed(t, c).Positions
	b.php.next(t, EventOpen)
	var got []uint64
	publish := func(n int) {
		for i := 0; i < n; i++ {
			s := "x"
			if _, err := b.srv.publish(context.Background(), &Publication{To: channels("news"), Data: &s}); err != nil {
				t.Error(err)
			}
		}
	}
	take := func(c *websocket.Conn, upTo uint64) {
		for pos["news"].Offset < upTo {
			m := readFramed(t, c)
			if m.Type != "publication" {
				t.Fatalf("got %+v, want publications only", m)
			}
			got = append(got, m.Offset)
			pos["news"] = Position{Epoch: m.Epoch, Offset: m.Offset}
		}
	}
	total := uint64(0)
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		wg.Go(func() { publish(perRound) })
		// Read a few, drop the connection while the publisher runs, come back with the token.
		take(c, pos["news"].Offset+uint64(r%3))
		c.CloseNow()
		c = dialFramed(t, b, "news", resumeToken(pos))
		s := readFramed(t, c)
		if s.Type != "sync" || !s.Recovered {
			t.Fatalf("round %d: sync %+v, want recovered", r, s)
		}
		wg.Wait()
		total += perRound
		take(c, total)
	}
	for i, off := range got {
		if off != uint64(i+1) {
			t.Fatalf("offset %d arrived as the %dth publication: a gap or a duplicate (%v...)", off, i+1, got[max(0, i-3):i+1])
		}
	}
	if len(got) != rounds*perRound {
		t.Fatalf("got %d publications, want %d", len(got), rounds*perRound)
	}
}

// GET /v1/channels/{name}/history: strict parameters, paging with next, a lost position said
// plainly.
func TestHistoryAPI(t *testing.T) {
	b := historyBridge(t, func(cfg *Config) { cfg.HistorySize = 5; cfg.HistoryChannels = []string{"news*"} })
	for i := 1; i <= 7; i++ {
		b.publishText(t, channels("news"), fmt.Sprintf("n%d", i)) // 1 and 2 evicted
	}
	bin := base64.StdEncoding.EncodeToString([]byte{0, 1})
	b.api(t, "POST", "/v1/publish", Publication{To: channels("news"), DataBase64: &bin}, nil) // 8
	type page struct {
		Epoch        string `json:"epoch"`
		Offset       uint64 `json:"offset"`
		Publications []struct {
			Offset     uint64  `json:"offset"`
			Time       string  `json:"time"`
			Data       *string `json:"data"`
			DataBase64 *string `json:"data_base64"`
		} `json:"publications"`
		Next  *string `json:"next"`
		Error string  `json:"error"`
	}
	var all page
	if st := b.api(t, "GET", "/v1/channels/news/history", nil, &all); st != 200 || len(all.Publications) != 5 || all.Offset != 8 || all.Next != nil {
		t.Fatalf("whole history: %d %+v; want the 5 kept, offset 8, no next", st, all)
	}
	if p := all.Publications; p[0].Offset != 4 || deref(p[0].Data) != "n4" || deref(p[4].DataBase64) != bin || p[0].Time == "" {
		t.Fatalf("publications %+v: want n4 first and the binary one last", p)
	}
	// Paging: two at a time from offset 4 on.
	var offs []uint64
	since := all.Epoch + ":4"
	for since != "" {
		var p page
		if st := b.api(t, "GET", "/v1/channels/news/history?limit=2&since="+url.QueryEscape(since), nil, &p); st != 200 {
			t.Fatalf("page since %s: %d %+v", since, st, p)
		}
		for _, x := range p.Publications {
			offs = append(offs, x.Offset)
		}
		since = deref(p.Next)
	}
	if fmt.Sprint(offs) != "[5 6 7 8]" {
		t.Fatalf("paging from 4 read %v, want [5 6 7 8]", offs)
	}
	var at page
	if st := b.api(t, "GET", "/v1/channels/news/history?since="+all.Epoch+":8", nil, &at); st != 200 || len(at.Publications) != 0 || at.Next != nil {
		t.Fatalf("since the newest: %d %+v, want an empty page", st, at)
	}

	for _, tc := range []struct {
		name, query string
		status      int
		code, want  string
	}{
		{"unknown parameter", "?from=1", 400, "bad_request", `unknown query parameter "from"`},
		{"since twice", "?since=a:1&since=a:2", 400, "bad_request", "given 2 times"},
		{"since without offset", "?since=abc", 400, "bad_request", "want epoch:offset"},
		{"since without epoch", "?since=:3", 400, "bad_request", "want epoch:offset"},
		{"since offset not a number", "?since=" + all.Epoch + ":x", 400, "bad_request", "want epoch:offset"},
		{"limit zero", "?limit=0", 400, "bad_request", "from 1 to 5"},
		{"limit too big", "?limit=6", 400, "bad_request", "from 1 to 5"},
		{"limit not a number", "?limit=2x", 400, "bad_request", "from 1 to 5"},
		{"limit empty", "?limit=", 400, "bad_request", "from 1 to 5"},
		{"ahead", "?since=" + all.Epoch + ":9", 400, "bad_request", "ahead"},
		{"evicted", "?since=" + all.Epoch + ":1", 409, "position_lost", "expired or been evicted"},
		{"other epoch", "?since=zz:4", 409, "position_lost", "is gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e struct{ Error, Detail string }
			if st := b.api(t, "GET", "/v1/channels/news/history"+tc.query, nil, &e); st != tc.status || e.Error != tc.code || !strings.Contains(e.Detail, tc.want) {
				t.Fatalf("%d %+v, want %d %s containing %q", st, e, tc.status, tc.code, tc.want)
			}
		})
	}
	var e struct{ Error, Detail string }
	if st := b.api(t, "GET", "/v1/channels/other/history", nil, &e); st != 404 || !strings.Contains(e.Detail, "HISTORY_CHANNELS") {
		t.Fatalf("a channel without history: %d %+v, want 404 naming HISTORY_CHANNELS", st, e)
	}
}

// Only a publication to exactly one history channel is numbered; it is kept once.
func TestHistoryWhatGetsAPosition(t *testing.T) {
	h := &history{patterns: []string{"a", "b/*"}, size: 10, maxRecover: 10, store: newMemoryHistory(10, time.Minute, nil)}
	for _, tc := range []struct {
		name string
		to   Targets
		pos  bool
	}{
		{"one channel", channels("a"), true},
		{"a pattern", channels("b/1"), true},
		{"one channel without history", channels("c"), false},
		{"two channels", channels("a", "b"), false},
		{"channel and user", Targets{Channels: []string{"a"}, Users: []string{"u"}}, false},
		{"connection", Targets{Connections: []string{"n.x"}}, false},
		{"user", Targets{Users: []string{"u"}}, false},
		{"all", Targets{All: true}, false},
	} {
		if tc.name == "two channels" {
			tc.to = channels("a", "b/1")
		}
		t.Run(tc.name, func(t *testing.T) {
			s := "x"
			_, pos, _, err := h.publish(context.Background(), newHub("n", NewMemoryBroker()), &Publication{To: tc.to, Data: &s})
			if err != nil || (pos != nil) != tc.pos {
				t.Fatalf("position %v (err %v), want one: %v", pos, err, tc.pos)
			}
		})
	}
}

// Every history variable is checked.
func TestHistoryConfig(t *testing.T) {
	for _, tc := range []struct {
		name, env, want string
	}{
		{"negative size", "WSBRIDGE_HISTORY_SIZE=-1", "HISTORY_SIZE"},
		{"zero ttl", "WSBRIDGE_HISTORY_TTL=0s", "HISTORY_TTL"},
		{"bad pattern", "WSBRIDGE_HISTORY_CHANNELS=news,[", "HISTORY_CHANNELS"},
		{"empty pattern", "WSBRIDGE_HISTORY_CHANNELS=news,", "HISTORY_CHANNELS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig([]string{"WSBRIDGE_WEBHOOK_URL=http://127.0.0.1:1/", tc.env})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadConfig(%s) = %v, want an error naming %s", tc.env, err, tc.want)
			}
		})
	}
	cfg, err := LoadConfig([]string{"WSBRIDGE_WEBHOOK_URL=http://127.0.0.1:1/"})
	if err != nil || cfg.HistorySize != 0 || cfg.HistoryTTL != 5*time.Minute || strings.Join(cfg.HistoryChannels, ",") != "*" {
		t.Fatalf("defaults %d %s %v (%v), want 0 5m *", cfg.HistorySize, cfg.HistoryTTL, cfg.HistoryChannels, err)
	}
}

// BenchmarkHubPublishHistory is BenchmarkHubPublishChannel with history on: each publication is
// also numbered and kept (memory store, a full ring of 100), under its channel's lock. The
// difference between the two is the cost of history on the broadcast path (docs/benchmarks.md).
func BenchmarkHubPublishHistory(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			h := newHub("bench", NewMemoryBroker())
			h.history = &history{patterns: []string{"*"}, size: 100, maxRecover: 100, store: newMemoryHistory(100, time.Minute, nil)}
			benchPublishChannel(b, h, n, nil, "")
		})
	}
}

// A history channel joined after the open (by the join API, or by a message reply) is told to
// the framed client with its position, so that a client that leaves before the channel's first
// publication reaches it still resumes it, and misses nothing published meanwhile.
func TestHistoryLateJoin(t *testing.T) {
	php := newFakePHP(t, func(c hookCall) (int, any) {
		switch c.Event.Type {
		case EventMessage:
			return http.StatusOK, map[string]any{"join": []string{deref(c.Event.Data)}}
		case EventOpen:
			if strings.Contains(c.Event.Request.Query, "api") {
				return joinFromQuery(c)
			}
		}
		return http.StatusNoContent, nil
	})
	b := newBridge(t, php, func(cfg *Config) { cfg.HistorySize = 100 })
	c := dialFramed(t, b, "", "")
	id := b.php.next(t, EventOpen).Event.ConnectionID
	if s := readFramed(t, c); s.Type != "sync" || len(s.Positions) != 0 {
		t.Fatalf("sync %+v, want no positions: the connection is in no channel", s)
	}
	b.publishText(t, channels("api"), "before") // api at offset 1, before the join
	if st := b.api(t, "POST", "/v1/channels/api/join", map[string]any{"connections": []string{id}}, nil); st != 200 {
		t.Fatalf("join: %d", st)
	}
	write(t, c, "reply")
	pos := map[string]Position{}
	for _, want := range []string{"api 1", "reply 0"} {
		m := readFramed(t, c)
		if got := fmt.Sprintf("%s %d", m.Channel, m.Offset); m.Type != "join" || got != want || m.Epoch == "" {
			t.Fatalf("got %+v, want a join notice %q", m, want)
		}
		pos[m.Channel] = Position{Epoch: m.Epoch, Offset: m.Offset}
	}
	c.CloseNow()
	b.php.nextFor(t, EventClose, id)
	b.publishText(t, channels("api"), "missed api")
	b.publishText(t, channels("reply"), "missed reply")

	c = dialFramed(t, b, "api,reply", resumeToken(pos))
	b.php.next(t, EventOpen)
	if s := readFramed(t, c); !s.Recovered || len(s.Lost) != 0 {
		t.Fatalf("sync %+v, want recovered", s)
	}
	for _, want := range []string{"api 2 missed api", "reply 1 missed reply"} {
		if m := readFramed(t, c); fmt.Sprintf("%s %d %s", m.Channel, m.Offset, deref(m.Data)) != want {
			t.Fatalf("got %+v, want %q", m, want)
		}
	}
}

// The hand-written token reads back as the positions it was made of, whatever the names hold.
func TestResumeTokenRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		pos  map[string]Position
	}{
		{"none", map[string]Position{}},
		{"one", map[string]Position{"news": {"k3j9x2ab0q", 8}}},
		{"quotes and backslashes", map[string]Position{`a"b\c`: {`e"\`, 1}, "z": {"e", 0}}},
		{"unicode", map[string]Position{"héllo 😀 \u2028": {"e", 18446744073709551615}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := resumeToken(tc.pos)
			raw, _ := base64.RawURLEncoding.DecodeString(tok)
			var got map[string]Position
			if err := decodeStrict(raw, &got); err != nil || len(got) != len(tc.pos) {
				t.Fatalf("token %s (%s) reads back as %v, %v", tok, raw, got, err)
			}
			for k, v := range tc.pos {
				if got[k] != v {
					t.Fatalf("%q: got %+v, want %+v", k, got[k], v)
				}
			}
		})
	}
}

// "*", the default, keeps every channel, those with a "/" too; other patterns are path.Match's.
func TestHistoryChannelPatterns(t *testing.T) {
	for _, tc := range []struct {
		patterns []string
		ch       string
		want     bool
	}{
		{[]string{"*"}, "news", true},
		{[]string{"*"}, "room/42", true},
		{[]string{"room:*"}, "room:42", true},
		{[]string{"room:*"}, "lobby", false},
		{[]string{"chat/*"}, "chat/a/b", false},
		{[]string{"lobby", "chat/*"}, "chat/a", true},
	} {
		h := &history{patterns: tc.patterns}
		if got := h.keeps(tc.ch); got != tc.want {
			t.Errorf("patterns %q, channel %q: keeps %v, want %v", tc.patterns, tc.ch, got, tc.want)
		}
	}
}

// gap's verdicts, by name.
func TestHistoryGap(t *testing.T) {
	e := "k3j9x2ab0q"
	for _, tc := range []struct {
		name       string
		since, top Position
		read, max  int
		want       string
	}{
		{"nothing missed", Position{e, 5}, Position{e, 5}, 0, 10, ""},
		{"all kept", Position{e, 2}, Position{e, 5}, 3, 10, ""},
		{"from the start", Position{e, 0}, Position{e, 3}, 3, 10, ""},
		{"epoch changed", Position{"other", 2}, Position{e, 5}, 0, 10, "epoch changed"},
		{"ahead", Position{e, 6}, Position{e, 5}, 0, 10, "ahead"},
		{"too many", Position{e, 0}, Position{e, 11}, 11, 10, "more publications missed"},
		{"expired", Position{e, 2}, Position{e, 5}, 2, 10, "expired or evicted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gap(tc.since, tc.top, tc.read, tc.max); !strings.Contains(got, tc.want) || (tc.want == "") != (got == "") {
				t.Fatalf("gap = %q, want %q", got, tc.want)
			}
		})
	}
}

// historyBroker is a broker that keeps the history itself (the seam a cluster broker fills):
// here a memory store that can be made to fail.
type historyBroker struct {
	*MemoryBroker
	*memoryHistory
	fail atomic.Bool
}

func (b *historyBroker) Append(ctx context.Context, ch string, f Frame) (Position, error) {
	if b.fail.Load() {
		return Position{}, fmt.Errorf("history store unreachable")
	}
	return b.memoryHistory.Append(ctx, ch, f)
}

func (b *historyBroker) Read(ctx context.Context, ch string, since Position, limit int) ([]HistoryEntry, Position, error) {
	if b.fail.Load() {
		return nil, Position{}, fmt.Errorf("history store unreachable")
	}
	return b.memoryHistory.Read(ctx, ch, since, limit)
}

// A broker that implements History takes the history over. When its store fails, a publication
// is refused before anything is delivered (502), the API says so, and a recovery reports the
// channel lost.
func TestHistoryBrokerStore(t *testing.T) {
	br := &historyBroker{MemoryBroker: NewMemoryBroker(), memoryHistory: newMemoryHistory(10, time.Minute, nil)}
	php := newFakePHP(t, joinFromQuery)
	cfg := testConfig(t, php.URL)
	cfg.HistorySize = 10
	b := &testBridge{srv: New(cfg, testLog(t), br), php: php}
	b.public, b.internal = newServers(t, b.srv)
	b.wsURL = "ws" + strings.TrimPrefix(b.public.URL, "http") + cfg.WSPaths[0]
	if b.srv.hub.history.store != History(br) || b.srv.hub.history.sweep != nil {
		t.Fatal("the broker's History was not taken, or the memory sweeper runs beside it")
	}
	c := dialFramed(t, b, "news", "")
	b.php.next(t, EventOpen)
	pos := readFramed(t, c).Positions
	b.publishText(t, channels("news"), "kept by the broker")
	if _, top, _ := br.memoryHistory.Read(context.Background(), "news", Position{}, 0); top.Offset != 1 {
		t.Fatalf("the broker's store is at %+v, want offset 1", top)
	}
	readFramed(t, c)

	br.fail.Store(true)
	s := "not delivered"
	var e struct{ Error, Detail string }
	if st := b.api(t, "POST", "/v1/publish", Publication{To: channels("news"), Data: &s}, &e); st != http.StatusBadGateway || !strings.Contains(e.Detail, "not delivered: keeping the publication in the history failed") || !strings.Contains(e.Detail, "unreachable") {
		t.Fatalf("publish with the store down: %d %+v, want 502 saying why", st, e)
	}
	if st := b.api(t, "GET", "/v1/channels/news/history", nil, &e); st != http.StatusBadGateway {
		t.Fatalf("history API with the store down: %d %+v, want 502", st, e)
	}
	c.CloseNow()
	c = dialFramed(t, b, "news", resumeToken(pos))
	b.php.next(t, EventOpen)
	if sync := readFramed(t, c); sync.Recovered || strings.Join(sync.Lost, ",") != "news" {
		t.Fatalf("sync with the store down %+v, want news lost", sync)
	}
	br.fail.Store(false)
	b.publishText(t, channels("news"), "after")
	if m := readFramed(t, c); deref(m.Data) != "after" {
		t.Fatalf("got %+v: the refused publication reached the client", m)
	}
}
