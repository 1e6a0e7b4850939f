package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// joinFromQuery is a PHP that joins every connection to the channels of its query's "join".
func joinFromQuery(c hookCall) (int, any) {
	if c.Event.Type != EventOpen {
		return http.StatusNoContent, nil
	}
	q, _ := url.ParseQuery(c.Event.Request.Query)
	return http.StatusOK, map[string]any{"join": strings.Split(q.Get("join"), ",")}
}

// decodeID reads an SSE event's id: back as the positions it stands for.
func decodeID(t *testing.T, id string) map[string]Position {
	t.Helper()
	pos, err := parseResumeToken(id, limits{MaxNameLen: 200})
	if err != nil {
		t.Fatalf("event id %q is not a resume token: %v", id, err)
	}
	return pos
}

// An SSE client's events of history channels carry id:, the token of every history channel of
// the connection; reconnecting with it as Last-Event-ID (as EventSource does), or as the
// lastEventId parameter (as polyfills do), brings what it missed, in order, before anything
// live, after a sync event that says it was recovered.
func TestHistorySSERecovers(t *testing.T) {
	b, u := sseBridge(t, joinFromQuery, func(c *Config) { c.HistorySize = 100; c.HistoryChannels = []string{"news", "chat"} })
	s := openSSE(t, nil, u+"?join=news,chat,plain", nil)
	id := b.php.next(t, EventOpen).Event.ConnectionID
	sync := s.event(t)
	var n syncNotice
	if err := json.Unmarshal([]byte(sync.Data), &n); sync.Type != "sync" || err != nil || !n.Recovered {
		t.Fatalf("first event %+v: want a sync event, recovered", sync)
	}
	if pos := decodeID(t, sync.ID); len(pos) != 2 || pos["news"].Offset != 0 || pos["chat"].Offset != 0 {
		t.Fatalf("sync id stands for %+v, want news and chat at 0", pos)
	}
	b.publishText(t, channels("news"), "n1\nsecond line")
	b.publishText(t, channels("plain"), "p1")
	ev := s.event(t)
	if pos := decodeID(t, ev.ID); ev.Data != "n1\nsecond line" || pos["news"].Offset != 1 || pos["chat"].Offset != 0 {
		t.Fatalf("got %+v (%+v), want n1 with news at 1, chat at 0", ev, decodeID(t, ev.ID))
	}
	if ev := s.event(t); ev.Data != "p1" || ev.ID != "" {
		t.Fatalf("a publication without a position came as %+v: want no id", ev)
	}
	last := ev.ID
	s.close()
	b.php.nextFor(t, EventClose, id)
	b.publishText(t, channels("news"), "n2")
	b.publishText(t, channels("chat"), "c1")

	for _, how := range []string{"Last-Event-ID", resumeParam} {
		t.Run(how, func(t *testing.T) {
			h, q := http.Header{}, ""
			if how == "Last-Event-ID" {
				h.Set("Last-Event-ID", last)
			} else {
				q = "&" + resumeParam + "=" + url.QueryEscape(last)
			}
			s := openSSE(t, nil, u+"?join=news,chat,plain"+q, h)
			open := b.php.next(t, EventOpen).Event
			if open.Resume == nil || open.Resume.Positions["news"].Offset != 1 {
				t.Fatalf("open webhook resume %+v, want news at 1", open.Resume)
			}
			if ev := s.event(t); ev.Type != "sync" || !strings.Contains(ev.Data, `"recovered":true`) {
				t.Fatalf("first event %+v: want sync, recovered", ev)
			}
			var got []string
			for range 2 {
				ev := s.event(t)
				pos := decodeID(t, ev.ID)
				got = append(got, fmt.Sprintf("%s news:%d chat:%d", ev.Data, pos["news"].Offset, pos["chat"].Offset))
			}
			if strings.Join(got, "; ") != "c1 news:1 chat:1; n2 news:2 chat:1" {
				t.Fatalf("recovered %q, want c1 then n2 with their ids", got)
			}
			s.close()
		})
	}
}

// A Last-Event-ID that is no token of ours is said plainly: the sync event reports nothing
// recovered, every history channel lost, and why; the stream goes on from now.
func TestHistorySSEGarbageLastEventID(t *testing.T) {
	b, u := sseBridge(t, joinFromQuery, func(c *Config) { c.HistorySize = 100 })
	for _, tc := range []struct{ name, id, want string }{
		{"not base64url", "42", "resume token"},
		{"a number as id", "1234", "resume token"},
		{"JSON but not positions", "eyJhIjoxfQ", "expected bridge.Position"},
		{"spaces", "a b", "not base64url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openSSE(t, nil, u+"?join=news", http.Header{"Last-Event-ID": {tc.id}})
			if open := b.php.next(t, EventOpen).Event; open.Resume == nil || open.Resume.Error == "" {
				t.Fatalf("open webhook resume %+v: want the error", open.Resume)
			}
			ev := s.event(t)
			var n syncNotice
			json.Unmarshal([]byte(ev.Data), &n)
			if ev.Type != "sync" || n.Recovered || strings.Join(n.Lost, ",") != "news" || !strings.Contains(n.Error, tc.want) {
				t.Fatalf("sync %+v: want recovered false, news lost, error containing %q", ev, tc.want)
			}
			if pos := decodeID(t, ev.ID); pos["news"].Epoch == "" {
				t.Fatalf("the sync id %q gives no position to go on from", ev.ID)
			}
			s.close()
		})
	}
}

// An SSE client that joins a history channel after the open gets an event with only an id:,
// which moves its last event id on to cover the channel (no event reaches the page).
func TestHistorySSELateJoin(t *testing.T) {
	b, u := sseBridge(t, nil, func(c *Config) { c.HistorySize = 100 })
	s := openSSE(t, nil, u, nil)
	id := b.php.next(t, EventOpen).Event.ConnectionID
	if ev := s.event(t); ev.Type != "sync" || len(decodeID(t, ev.ID)) != 0 {
		t.Fatalf("first event %+v: want a sync with no positions", ev)
	}
	b.publishText(t, channels("late"), "before")
	if st := b.api(t, "POST", "/v1/channels/late/join", map[string]any{"connections": []string{id}}, nil); st != 200 {
		t.Fatalf("join: %d", st)
	}
	ev := s.event(t)
	if pos := decodeID(t, ev.ID); ev.Data != "" || pos["late"].Offset != 1 {
		t.Fatalf("after the join got %+v (%+v), want an id-only event with late at 1", ev, pos)
	}
}

// BenchmarkSSEResumeID is the per-recipient cost of an SSE event's id: for a client in one
// history channel (the token shared by every such recipient) and in three (its own token).
func BenchmarkSSEResumeID(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			c := &sseConn{positions: map[string]Position{}}
			for i := range n {
				c.positions[fmt.Sprintf("room:%d", i)] = Position{Epoch: "k3j9x2ab0q", Offset: 1}
			}
			d := Delivery{Data: []byte("x"), hist: &stamped{channel: "room:0", pos: Position{Epoch: "k3j9x2ab0q", Offset: 2}}}
			buf := make([]byte, 0, 256)
			b.ReportAllocs()
			for b.Loop() {
				buf = c.appendResumeID(buf[:0], d)
			}
		})
	}
}

// TestHistorySSERecoveryRacesPublications is TestHistoryRecoveryRacesPublications over SSE:
// the stream is dropped while publications keep coming, and reopened with the last event's id
// as Last-Event-ID, over many rounds; every offset arrives once, in order.
func TestHistorySSERecoveryRacesPublications(t *testing.T) {
	b, u := sseBridge(t, joinFromQuery, func(c *Config) { c.HistorySize = 1000 })
	const rounds, perRound = 30, 25
	open := func(id string) *sseStream {
		s := openSSE(t, nil, u+"?join=news", http.Header{"Last-Event-ID": {id}})
		b.php.next(t, EventOpen)
		ev := s.event(t)
		if ev.Type != "sync" || !strings.Contains(ev.Data, `"recovered":true`) {
			t.Fatalf("first event %+v, want sync, recovered", ev)
		}
		return s
	}
	s := openSSE(t, nil, u+"?join=news", nil)
	b.php.next(t, EventOpen)
	last := s.event(t).ID
	var got []uint64
	offset := uint64(0)
	take := func(s *sseStream, upTo uint64) {
		for offset < upTo {
			ev := s.event(t)
			offset = decodeID(t, ev.ID)["news"].Offset
			got = append(got, offset)
			last = ev.ID
		}
	}
	total := uint64(0)
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		wg.Go(func() {
			for range perRound {
				x := "x"
				if _, err := b.srv.publish(context.Background(), &Publication{To: channels("news"), Data: &x}); err != nil {
					t.Error(err)
				}
			}
		})
		take(s, offset+uint64(r%3))
		s.close()
		s = open(last)
		wg.Wait()
		total += perRound
		take(s, total)
	}
	for i, off := range got {
		if off != uint64(i+1) {
			t.Fatalf("offset %d arrived as the %dth publication: a gap or a duplicate", off, i+1)
		}
	}
	if len(got) != rounds*perRound {
		t.Fatalf("got %d publications, want %d", len(got), rounds*perRound)
	}
}
