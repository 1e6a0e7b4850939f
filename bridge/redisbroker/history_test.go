package redisbroker_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/bridge/redisbroker"
	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// histBroker is a broker of url that keeps size publications per channel for ttl.
func histBroker(t *testing.T, url string, size int, ttl time.Duration) *redisbroker.Broker {
	t.Helper()
	b, err := redisbroker.New(redisbroker.Options{URL: url, Prefix: "t", PingEvery: 50 * time.Millisecond, HistorySize: size, HistoryTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func text(s string) bridge.Frame { return bridge.Frame{Data: []byte(s)} }

func mustAppend(t *testing.T, b *redisbroker.Broker, ch string, f bridge.Frame) bridge.Position {
	t.Helper()
	pos, err := b.Append(bounded(t), ch, f)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return pos
}

func mustRead(t *testing.T, b *redisbroker.Broker, ch string, since bridge.Position, limit int) ([]bridge.HistoryEntry, bridge.Position) {
	t.Helper()
	es, top, err := b.Read(bounded(t), ch, since, limit)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return es, top
}

func offsets(es []bridge.HistoryEntry) []uint64 {
	var out []uint64
	for _, e := range es {
		out = append(out, e.Position.Offset)
	}
	return out
}

// Append numbers a channel's publications from 1 in one epoch; Read gives those after a
// position, oldest first, bounded by its limit, with their data and kind intact, and nothing of
// another epoch. A channel never used gets a record at offset 0.
func TestHistoryAppendRead(t *testing.T) {
	srv := testkit.StartRedis(t)
	b := histBroker(t, srv.URL(), 10, time.Minute)
	es, top := mustRead(t, b, "quiet", bridge.Position{}, 10)
	if len(es) != 0 || top.Epoch == "" || top.Offset != 0 {
		t.Fatalf("a new channel: %v at %+v, want nothing at a new epoch, offset 0", es, top)
	}
	if _, again := mustRead(t, b, "quiet", bridge.Position{}, 10); again != top {
		t.Fatalf("read again: %+v, want the same record %+v", again, top)
	}

	frames := []bridge.Frame{text("one"), {Binary: true, Data: []byte{0, 0xff, '\n', 0}}, text("three\nlines\n")}
	var pos []bridge.Position
	for _, f := range frames {
		pos = append(pos, mustAppend(t, b, "news", f))
	}
	for i, p := range pos {
		if p.Epoch != pos[0].Epoch || p.Offset != uint64(i+1) {
			t.Fatalf("positions %+v: want one epoch, offsets 1, 2, 3", pos)
		}
	}
	es, top = mustRead(t, b, "news", bridge.Position{}, 10)
	if top != pos[2] || !slices.Equal(offsets(es), []uint64{1, 2, 3}) {
		t.Fatalf("read all: offsets %v top %+v, want 1 2 3 and %+v", offsets(es), top, pos[2])
	}
	for i, e := range es {
		if e.Frame.Binary != frames[i].Binary || string(e.Frame.Data) != string(frames[i].Data) || e.Position != pos[i] {
			t.Errorf("entry %d: %+v, want %+v at %+v", i, e, frames[i], pos[i])
		}
		if e.Time.IsZero() || time.Since(e.Time) > time.Minute || time.Until(e.Time) > time.Minute {
			t.Errorf("entry %d: time %v is not about now", i, e.Time)
		}
	}
	for _, tc := range []struct {
		name  string
		since bridge.Position
		limit int
		want  []uint64
	}{
		{"after the first", pos[0], 10, []uint64{2, 3}},
		{"after the first, limit 1", pos[0], 1, []uint64{2}},
		{"at the newest", pos[2], 10, nil},
		{"ahead of the newest", bridge.Position{Epoch: pos[0].Epoch, Offset: 99}, 10, nil},
		{"beyond a double's precision", bridge.Position{Epoch: pos[0].Epoch, Offset: 1<<64 - 1}, 10, nil},
		{"another epoch", bridge.Position{Epoch: "other", Offset: 0}, 10, nil},
		{"limit 0", bridge.Position{}, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es, top := mustRead(t, b, "news", tc.since, tc.limit)
			if !slices.Equal(offsets(es), tc.want) || top != pos[2] {
				t.Fatalf("offsets %v top %+v, want %v and %+v", offsets(es), top, tc.want, pos[2])
			}
		})
	}
	// A channel's name may hold the braces of a hash tag, and is still a channel of its own.
	if p := mustAppend(t, b, "a}b{c", text("x")); p.Offset != 1 {
		t.Fatalf("channel with braces: %+v, want offset 1", p)
	}
}

// HISTORY_SIZE bounds the stream (MAXLEN), oldest out first; the offsets go on.
func TestHistorySizeBound(t *testing.T) {
	srv := testkit.StartRedis(t)
	b := histBroker(t, srv.URL(), 3, time.Minute)
	for i := range 5 {
		mustAppend(t, b, "c", text(strconv.Itoa(i+1)))
	}
	es, top := mustRead(t, b, "c", bridge.Position{}, 10)
	if !slices.Equal(offsets(es), []uint64{3, 4, 5}) || top.Offset != 5 || string(es[0].Frame.Data) != "3" {
		t.Fatalf("offsets %v top %+v, want 3 4 5 of 5", offsets(es), top)
	}
	if n := srv.Do(t, "XLEN", "t:hist:{c}"); n != ":3" {
		t.Fatalf("XLEN %s, want 3", n)
	}
}

// HISTORY_TTL, on Redis's clock: an entry older than it is no longer read, and is trimmed from
// the stream, while the channel's record (epoch, offset) stays, so that a client that saw the
// last publication resumes without loss. Both keys expire together, after the record's keep.
func TestHistoryTTL(t *testing.T) {
	srv := testkit.StartRedis(t)
	b := histBroker(t, srv.URL(), 10, 50*time.Millisecond)
	first := mustAppend(t, b, "c", text("old"))
	retryFor(t, "the entry expires", func() bool {
		es, _ := mustRead(t, b, "c", bridge.Position{}, 10)
		return len(es) == 0
	})
	if n := srv.Do(t, "XLEN", "t:hist:{c}"); n != ":0" {
		t.Fatalf("XLEN %s after expiry, want 0: expired entries are trimmed", n)
	}
	es, top := mustRead(t, b, "c", first, 10)
	if len(es) != 0 || top != first {
		t.Fatalf("after expiry: %v at %+v, want nothing at the same record %+v", es, top, first)
	}
	// A new publication follows in the same epoch.
	if p := mustAppend(t, b, "c", text("new")); p.Epoch != first.Epoch || p.Offset != 2 {
		t.Fatalf("after expiry: %+v, want epoch %s offset 2", p, first.Epoch)
	}
	for _, k := range []string{"t:hist:{c}", "t:hist:{c}:meta"} {
		ms, err := strconv.ParseInt(strings.TrimPrefix(srv.Do(t, "PTTL", k), ":"), 10, 64)
		if err != nil || ms <= 0 || ms > time.Hour.Milliseconds() {
			t.Errorf("PTTL %s = %d (%v), want up to an hour", k, ms, err)
		}
	}
}

// The epoch changes, and nothing of the old one is read, whenever offsets could repeat or
// entries were lost without a trace.
func TestHistoryEpochChange(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(t *testing.T, srv *testkit.Redis)
	}{
		{"stream deleted", func(t *testing.T, srv *testkit.Redis) { srv.Do(t, "DEL", "t:hist:{c}") }},
		{"record deleted", func(t *testing.T, srv *testkit.Redis) { srv.Do(t, "DEL", "t:hist:{c}:meta") }},
		{"FLUSHALL", func(t *testing.T, srv *testkit.Redis) { srv.Do(t, "FLUSHALL") }},
		{"restart without persistence", func(t *testing.T, srv *testkit.Redis) { srv.Stop(t); srv.Start(t) }},
		// What a restart from an older snapshot, or a failover to a replica, leaves: the
		// record as it was, written by another Redis process.
		{"record of another Redis process", func(t *testing.T, srv *testkit.Redis) {
			srv.Do(t, "HSET", "t:hist:{c}:meta", "run", "0123456789abcdef")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testkit.StartRedis(t)
			b := histBroker(t, srv.URL(), 10, time.Minute)
			mustAppend(t, b, "c", text("1"))
			before := mustAppend(t, b, "c", text("2"))
			tc.lose(t, srv)
			es, top := mustRead(t, b, "c", bridge.Position{Epoch: before.Epoch}, 10)
			if top.Epoch == before.Epoch || top.Offset != 0 || len(es) != 0 {
				t.Fatalf("after the loss: %v at %+v, want nothing at a new epoch (was %+v)", offsets(es), top, before)
			}
			if p := mustAppend(t, b, "c", text("3")); p != (bridge.Position{Epoch: top.Epoch, Offset: 1}) {
				t.Fatalf("next append %+v, want %s:1", p, top.Epoch)
			}
		})
	}
	t.Run("nothing lost", func(t *testing.T) {
		srv := testkit.StartRedis(t)
		b := histBroker(t, srv.URL(), 10, time.Minute)
		first := mustAppend(t, b, "c", text("1"))
		if p := mustAppend(t, histBroker(t, srv.URL(), 10, time.Minute), "c", text("2")); p.Epoch != first.Epoch {
			t.Fatalf("another node's append %+v changed the epoch of %+v", p, first)
		}
	})
}

// Two nodes appending to one channel at once get distinct, consecutive offsets of one epoch.
func TestHistoryConcurrentAppends(t *testing.T) {
	srv := testkit.StartRedis(t)
	nodes := []*redisbroker.Broker{histBroker(t, srv.URL(), 1000, time.Minute), histBroker(t, srv.URL(), 1000, time.Minute)}
	const each = 200
	got := make([][]bridge.Position, len(nodes))
	var wg sync.WaitGroup
	for i, b := range nodes {
		wg.Go(func() {
			for j := range each {
				p, err := b.Append(context.Background(), "c", text(fmt.Sprintf("%d/%d", i, j)))
				if err != nil {
					t.Errorf("node %d: %v", i, err)
					return
				}
				got[i] = append(got[i], p)
			}
		})
	}
	wg.Wait()
	var all []uint64
	for i := range got {
		for j, p := range got[i] {
			if p.Epoch != got[0][0].Epoch {
				t.Fatalf("node %d append %d: epoch %s, want %s", i, j, p.Epoch, got[0][0].Epoch)
			}
			if j > 0 && p.Offset <= got[i][j-1].Offset {
				t.Fatalf("node %d: offset %d after %d", i, p.Offset, got[i][j-1].Offset)
			}
			all = append(all, p.Offset)
		}
	}
	slices.Sort(all)
	for i, o := range all {
		if o != uint64(i+1) {
			t.Fatalf("offsets %v...: want 1 to %d, each once", all[:i+1], 2*each)
		}
	}
	// And the stream holds them in that order, each with its own data.
	es, _ := mustRead(t, nodes[0], "c", bridge.Position{}, 1000)
	if len(es) != 2*each {
		t.Fatalf("read %d entries, want %d", len(es), 2*each)
	}
	for i, p := range got[0] {
		if string(es[p.Offset-1].Frame.Data) != fmt.Sprintf("0/%d", i) {
			t.Fatalf("entry %d: %q, want node 0's append %d", p.Offset, es[p.Offset-1].Frame.Data, i)
		}
	}
}

// AppendPublish keeps the entry and publishes the envelope with its position in one step: a
// third node receives the publications of two nodes racing on one channel in offset order,
// each with the position its entry has.
func TestAppendPublishInOffsetOrder(t *testing.T) {
	srv := testkit.StartRedis(t)
	a, c := histBroker(t, srv.URL(), 1000, time.Minute), histBroker(t, srv.URL(), 1000, time.Minute)
	recv := histBroker(t, srv.URL(), 1000, time.Minute)
	const each = 150
	envs := make(chan bridge.Envelope, 4*each)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		recv.Run(ctx, "r", func(e bridge.Envelope) {
			if e.Op == bridge.OpPublish {
				envs <- e
			}
		})
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	retryFor(t, "the receiver subscribed", func() bool { return recv.Healthy(context.Background()) == nil })

	var wg sync.WaitGroup
	for i, b := range []*redisbroker.Broker{a, c} {
		wg.Go(func() {
			for j := range each {
				s := fmt.Sprintf("%d/%d", i, j)
				e := bridge.Envelope{Version: bridge.EnvelopeVersion, Origin: fmt.Sprint("n", i), Op: bridge.OpPublish,
					Publication: &bridge.Publication{To: bridge.Targets{Channels: []string{"c"}}, Data: &s}}
				if _, err := b.AppendPublish(context.Background(), "c", text(s), e); err != nil {
					t.Errorf("node %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	es, top := mustRead(t, a, "c", bridge.Position{}, 1000)
	if top.Offset != 2*each {
		t.Fatalf("top %+v, want offset %d", top, 2*each)
	}
	for i := range 2 * each {
		var e bridge.Envelope
		select {
		case e = <-envs:
		case <-time.After(10 * time.Second):
			t.Fatalf("envelope %d not received within 10s", i+1)
		}
		if e.Position == nil || *e.Position != es[i].Position {
			t.Fatalf("envelope %d: position %v, want %+v", i+1, e.Position, es[i].Position)
		}
		if e.Publication == nil || e.Publication.Data == nil || *e.Publication.Data != string(es[i].Frame.Data) {
			t.Fatalf("envelope %d: publication %+v, want the entry's data %q", i+1, e.Publication, es[i].Frame.Data)
		}
	}
}

// Without HISTORY_SIZE passed in its options the broker refuses to keep history, plainly,
// rather than keep a stream without bound.
func TestHistoryOffInOptions(t *testing.T) {
	srv := testkit.StartRedis(t)
	b := histBroker(t, srv.URL(), 0, time.Minute)
	if _, err := b.Append(context.Background(), "c", text("x")); err == nil || !strings.Contains(err.Error(), "HistorySize") {
		t.Fatalf("Append: %v, want an error naming Options.HistorySize", err)
	}
	if _, _, err := b.Read(context.Background(), "c", bridge.Position{}, 1); err == nil {
		t.Fatal("Read: no error")
	}
}

// BenchmarkPublishWithHistory: what keeping the history adds to a positioned publication
// through Redis (one script: record, XADD, trim, PUBLISH) over a plain Publish, per call, one
// client, nobody subscribed.
func BenchmarkPublishWithHistory(b *testing.B) {
	srv := testkit.StartRedis(b)
	br, err := redisbroker.New(redisbroker.Options{URL: srv.URL(), Prefix: "t", HistorySize: 100, HistoryTTL: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	data := `{"type":"chat","text":"hello there"}`
	e := bridge.Envelope{Version: bridge.EnvelopeVersion, Origin: "p", Op: bridge.OpPublish,
		Publication: &bridge.Publication{To: bridge.Targets{Channels: []string{"room"}}, Data: &data}}
	ctx := context.Background()
	b.Run("Publish", func(b *testing.B) {
		for range b.N {
			if err := br.Publish(ctx, e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendPublish", func(b *testing.B) {
		for range b.N {
			if _, err := br.AppendPublish(ctx, "room", bridge.Frame{Data: []byte(data)}, e); err != nil {
				b.Fatal(err)
			}
		}
	})
}
