package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// appendPublisher is a broker whose history store publishes with the entry
// (HistoryPublisher): it records what AppendPublish and Publish were given.
type appendPublisher struct {
	historyBroker
	mu        sync.Mutex
	appended  []Envelope
	deadlines []bool
	published []Envelope
}

func (b *appendPublisher) AppendPublish(ctx context.Context, ch string, f Frame, e Envelope) (Position, error) {
	pos, err := b.Append(ctx, ch, f)
	if err != nil {
		return pos, err
	}
	_, ok := ctx.Deadline()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.appended = append(b.appended, e)
	b.deadlines = append(b.deadlines, ok)
	return pos, nil
}

func (b *appendPublisher) Publish(ctx context.Context, e Envelope) error {
	b.mu.Lock()
	b.published = append(b.published, e)
	b.mu.Unlock()
	return b.MemoryBroker.Publish(ctx, e)
}

var _ HistoryPublisher = (*appendPublisher)(nil)

// A store that publishes with the entry (HistoryPublisher) is given the envelope of a
// positioned publication, stamped and bounded as Broker.Publish would be, and the envelope is
// not published a second time; a publication without a position still goes through Publish.
// When the store fails, nothing is published or delivered.
func TestHistoryPublisherPublishesOnce(t *testing.T) {
	br := &appendPublisher{historyBroker: historyBroker{MemoryBroker: NewMemoryBroker(), memoryHistory: newMemoryHistory(10, time.Minute, nil)}}
	php := newFakePHP(t, joinFromQuery)
	cfg := testConfig(t, php.URL)
	cfg.HistorySize = 10
	cfg.HistoryChannels = []string{"news"}
	b := &testBridge{srv: New(cfg, testLog(t), br), php: php}
	b.public, b.internal = newServers(t, b.srv)
	b.wsURL = "ws" + strings.TrimPrefix(b.public.URL, "http") + cfg.WSPaths[0]
	c := dialFramed(t, b, "news", "")
	b.php.next(t, EventOpen)
	readFramed(t, c) // sync

	b.publishText(t, channels("news"), "positioned")
	if m := readFramed(t, c); m.Type != "publication" || m.Offset != 1 || deref(m.Data) != "positioned" {
		t.Fatalf("the local client got %+v, want the publication at offset 1", m)
	}
	b.publishText(t, channels("news", "other"), "unpositioned")
	if m := readFramed(t, c); m.Type != "message" || deref(m.Data) != "unpositioned" {
		t.Fatalf("the local client got %+v, want the message without a position", m)
	}
	br.mu.Lock()
	appended, deadlines, published := br.appended, br.deadlines, br.published
	br.mu.Unlock()
	if len(appended) != 1 {
		t.Fatalf("AppendPublish called %d times, want once", len(appended))
	}
	e := appended[0]
	if e.Version != EnvelopeVersion || e.Origin != b.srv.Node() || e.Op != OpPublish || e.Position != nil || e.Publication == nil || deref(e.Publication.Data) != "positioned" {
		t.Fatalf("AppendPublish got %+v, want the stamped envelope without a position", e)
	}
	if !deadlines[0] {
		t.Fatal("AppendPublish had no deadline: WSBRIDGE_BROKER_TIMEOUT must bound it as it bounds Publish")
	}
	var pubs []string
	for _, e := range published {
		if e.Op == OpPublish {
			pubs = append(pubs, deref(e.Publication.Data))
		}
	}
	if strings.Join(pubs, ",") != "unpositioned" {
		t.Fatalf("Publish got %q, want only the unpositioned publication (the other went with its entry)", pubs)
	}

	br.fail.Store(true)
	s := "refused"
	var apiErr struct{ Error, Detail string }
	if st := b.api(t, "POST", "/v1/publish", Publication{To: channels("news"), Data: &s}, &apiErr); st != http.StatusBadGateway {
		t.Fatalf("publish with the store down: %d %+v, want 502", st, apiErr)
	}
	br.fail.Store(false)
	b.publishText(t, channels("news"), "after")
	if m := readFramed(t, c); deref(m.Data) != "after" || m.Offset != 2 {
		t.Fatalf("got %+v: want the next publication at offset 2, the refused one nowhere", m)
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	if len(br.appended) != 2 || len(br.published) != len(published) {
		t.Fatalf("after the refusal: %d appended, %d published; want 2 and %d", len(br.appended), len(br.published), len(published))
	}
}

// The error of a store that took too long names WSBRIDGE_BROKER_TIMEOUT, as Publish's does.
func TestHistoryPublisherTimeout(t *testing.T) {
	h := &history{store: slowPublisher{}}
	hb := newHub("n", boundedBroker{Broker: NewMemoryBroker(), timeout: time.Millisecond})
	s := "x"
	_, _, err := h.appendPublished(context.Background(), hb, "c", Frame{}, &Publication{To: channels("c"), Data: &s})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "WSBRIDGE_BROKER_TIMEOUT") {
		t.Fatalf("err %v, want a deadline naming WSBRIDGE_BROKER_TIMEOUT", err)
	}
}

type slowPublisher struct{ History }

func (slowPublisher) AppendPublish(ctx context.Context, ch string, f Frame, e Envelope) (Position, error) {
	<-ctx.Done()
	return Position{}, ctx.Err()
}

// The sequencer lets a channel's deliveries out in offset order: a delivery waits for its
// predecessor, one that comes after its successor is refused, another epoch or a first mark
// waits for nothing, and a lost predecessor holds the channel only until the broker's timeout.
func TestSequencer(t *testing.T) {
	patient := newHub("n", boundedBroker{Broker: NewMemoryBroker(), timeout: waitLimit})
	at := func(off uint64) Position { return Position{Epoch: "e", Offset: off} }
	t.Run("first and next", func(t *testing.T) {
		s := newSequencer()
		if !s.wait("c", at(7), patient) {
			t.Fatal("a channel's first delivery was refused")
		}
		s.done("c", at(7))
		if !s.wait("c", at(8), patient) {
			t.Fatal("the successor was refused")
		}
	})
	t.Run("waits for its predecessor", func(t *testing.T) {
		s := newSequencer()
		s.done("c", at(1))
		var mu sync.Mutex
		var order []uint64
		note := func(o uint64) { mu.Lock(); order = append(order, o); mu.Unlock() }
		out := make(chan bool)
		go func() {
			ok := s.wait("c", at(3), patient)
			note(3)
			out <- ok
		}()
		note(2)
		s.done("c", at(2))
		if !<-out {
			t.Fatal("offset 3 refused after 2")
		}
		if mu.Lock(); order[0] != 2 || order[1] != 3 {
			t.Fatalf("order %v, want 3 only after 2 was done", order)
		}
		mu.Unlock()
	})
	t.Run("after its successor", func(t *testing.T) {
		s := newSequencer()
		s.done("c", at(5))
		if s.wait("c", at(4), patient) || s.wait("c", at(5), patient) {
			t.Fatal("a delivery at or before the last one delivered was let out")
		}
	})
	t.Run("another epoch", func(t *testing.T) {
		s := newSequencer()
		s.done("c", at(5))
		if !s.wait("c", Position{Epoch: "f", Offset: 9}, patient) || !s.wait("d", at(9), patient) {
			t.Fatal("another epoch, or another channel, waited")
		}
	})
	t.Run("lost predecessor", func(t *testing.T) {
		s := newSequencer()
		s.done("c", at(1))
		hasty := newHub("n", boundedBroker{Broker: NewMemoryBroker(), timeout: time.Millisecond})
		if !s.wait("c", at(3), hasty) {
			t.Fatal("after the timeout, offset 3 was refused")
		}
	})
}

// A client that joins a history channel while publications of other nodes are still on their
// way to its node is told the position this node has delivered, not the store's newest: the
// ones in flight then reach it live, after the join notice and in order, and its position
// never moves back. Told the newest, it would get offsets 4 and 5 after a join at 5.
func TestHistoryJoinWhilePublicationsInFlight(t *testing.T) {
	br := &appendPublisher{historyBroker: historyBroker{MemoryBroker: NewMemoryBroker(), memoryHistory: newMemoryHistory(10, time.Minute, nil)}}
	php := newFakePHP(t, joinFromQuery)
	cfg := testConfig(t, php.URL)
	cfg.HistorySize = 10
	cfg.HistoryChannels = []string{"news"}
	b := &testBridge{srv: New(cfg, testLog(t), br), php: php}
	b.public, b.internal = newServers(t, b.srv)
	b.wsURL = "ws" + strings.TrimPrefix(b.public.URL, "http") + cfg.WSPaths[0]
	c := dialFramed(t, b, "plain", "")
	id := b.php.next(t, EventOpen).Event.ConnectionID
	readFramed(t, c) // sync, no history channel yet

	// Another node published 1 to 5; this node has received 1 to 3 so far.
	envs := make([]Envelope, 5)
	for i := range envs {
		s := fmt.Sprintf("p%d", i+1)
		pos, err := br.memoryHistory.Append(context.Background(), "news", Frame{Data: []byte(s)})
		if err != nil {
			t.Fatal(err)
		}
		envs[i] = Envelope{Version: EnvelopeVersion, Origin: "other", Op: OpPublish, Position: &pos,
			Publication: &Publication{To: channels("news"), Data: &s}}
	}
	for _, e := range envs[:3] {
		b.srv.deliver(e)
	}
	if _, err := b.srv.hub.Subscribe(context.Background(), "news", Targets{Connections: []string{id}}, false); err != nil {
		t.Fatal(err)
	}
	join := readFramed(t, c)
	if join.Type != "join" || join.Offset != 3 {
		t.Fatalf("join notice %+v, want offset 3: what this node has delivered", join)
	}
	for _, e := range envs[3:] {
		b.srv.deliver(e)
	}
	for want := uint64(4); want <= 5; want++ {
		if m := readFramed(t, c); m.Type != "publication" || m.Offset != want || m.Epoch != join.Epoch {
			t.Fatalf("after the join: %+v, want offset %d", m, want)
		}
	}
}
