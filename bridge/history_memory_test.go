package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func appendN(t *testing.T, m *memoryHistory, ch string, n int) []Position {
	t.Helper()
	var out []Position
	for i := 0; i < n; i++ {
		next := uint64(1) // each payload names the offset it is to get
		if c := m.chans[ch]; c != nil {
			next = c.last + 1
		}
		p, err := m.Append(context.Background(), ch, Frame{Data: []byte(fmt.Sprintf("%s-%d", ch, next))})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func offsets(es []HistoryEntry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Position.Offset
	}
	return out
}

// Offsets follow each other from 1 per channel, in one epoch; the ring keeps the newest
// HISTORY_SIZE in order through growth and wrapping; Read honours since and limit.
func TestMemoryHistoryBounds(t *testing.T) {
	clock := newFakeClock(time.Unix(1e9, 0))
	m := newMemoryHistory(5, time.Minute, clock.now)
	ctx := context.Background()
	ps := appendN(t, m, "a", 12)
	for i, p := range ps {
		if p.Offset != uint64(i+1) || p.Epoch != ps[0].Epoch {
			t.Fatalf("publication %d got %+v, want offset %d in epoch %q", i, p, i+1, ps[0].Epoch)
		}
	}
	if b := appendN(t, m, "b", 1)[0]; b.Offset != 1 || b.Epoch == ps[0].Epoch {
		t.Fatalf("another channel's first publication got %+v: want offset 1 in an epoch of its own", b)
	}
	es, top, _ := m.Read(ctx, "a", Position{}, 100)
	if got := fmt.Sprint(offsets(es)); got != "[8 9 10 11 12]" || top.Offset != 12 {
		t.Fatalf("kept %s (top %d), want the newest 5 [8 9 10 11 12] (top 12)", got, top.Offset)
	}
	if string(es[0].Frame.Data) != "a-8" || string(es[4].Frame.Data) != "a-12" {
		t.Fatalf("payloads %q..%q do not match their offsets", es[0].Frame.Data, es[4].Frame.Data)
	}
	es, _, _ = m.Read(ctx, "a", Position{Epoch: top.Epoch, Offset: 9}, 2)
	if got := fmt.Sprint(offsets(es)); got != "[10 11]" {
		t.Fatalf("since 9, limit 2: %s, want [10 11]", got)
	}
	if es, _, _ := m.Read(ctx, "a", Position{Epoch: "other", Offset: 1}, 100); len(es) != 0 {
		t.Fatalf("a position of another epoch read %d publications", len(es))
	}
}

// Publications expire after HISTORY_TTL, found by the next Read (lazily) or by the sweep; a
// channel's record outlives them (recordKeep), and once it is forgotten the channel starts a
// new epoch, so an old position is never taken for a new one.
func TestMemoryHistoryTTL(t *testing.T) {
	clock := newFakeClock(time.Unix(1e9, 0))
	m := newMemoryHistory(100, time.Minute, clock.now)
	ctx := context.Background()
	first := appendN(t, m, "a", 3)
	clock.advance(40 * time.Second)
	appendN(t, m, "a", 2)
	clock.advance(30 * time.Second) // the first three are 70s old, the last two 30s
	es, top, _ := m.Read(ctx, "a", Position{}, 100)
	if got := fmt.Sprint(offsets(es)); got != "[4 5]" || top.Offset != 5 {
		t.Fatalf("after 70s kept %s (top %d), want [4 5] (top 5)", got, top.Offset)
	}

	appendN(t, m, "quiet", 1)
	clock.advance(2 * time.Minute)
	m.sweep()
	if c := m.chans["quiet"]; c == nil || c.n != 0 || c.ring != nil {
		t.Fatalf("after the sweep the quiet channel holds %+v: want its record, without publications or ring", c)
	}
	if _, top, _ := m.Read(ctx, "quiet", Position{}, 1); top.Offset != 1 {
		t.Fatalf("the quiet channel's record says offset %d, want 1 (its record is kept)", top.Offset)
	}
	clock.advance(recordKeep + time.Second)
	m.sweep()
	if len(m.chans) != 0 {
		t.Fatalf("after recordKeep the sweep left %d channels", len(m.chans))
	}
	_, top, _ = m.Read(ctx, "a", Position{}, 1)
	if top.Epoch == first[0].Epoch || top.Offset != 0 {
		t.Fatalf("a forgotten channel came back as %+v: want a new epoch at offset 0", top)
	}
}

// A channel nobody published to gets its record on first Read, so a subscriber has a position.
func TestMemoryHistoryReadMakesRecord(t *testing.T) {
	m := newMemoryHistory(10, time.Minute, nil)
	_, top, _ := m.Read(context.Background(), "new", Position{}, 0)
	p := appendN(t, m, "new", 1)[0]
	if top.Epoch == "" || top.Offset != 0 || p.Epoch != top.Epoch || p.Offset != 1 {
		t.Fatalf("Read gave %+v and the first publication %+v: want one epoch, offsets 0 then 1", top, p)
	}
}

// A full ring costs an Append no allocation beyond the stored frame (the broadcast path).
func BenchmarkMemoryHistoryAppend(b *testing.B) {
	m := newMemoryHistory(100, time.Minute, nil)
	f := Frame{Data: []byte("hello")}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		m.Append(ctx, "room", f)
	}
}

// The ring grows after it wrapped (expired items freed its front) without losing order.
func TestMemoryHistoryGrowsAfterWrap(t *testing.T) {
	clock := newFakeClock(time.Unix(1e9, 0))
	m := newMemoryHistory(8, time.Minute, clock.now)
	appendN(t, m, "a", 2)
	clock.advance(30 * time.Second)
	appendN(t, m, "a", 2)
	clock.advance(40 * time.Second) // the first two expire at the next Append
	appendN(t, m, "a", 5)           // wraps into their places, then grows
	es, _, _ := m.Read(context.Background(), "a", Position{}, 100)
	if got := fmt.Sprint(offsets(es)); got != "[3 4 5 6 7 8 9]" {
		t.Fatalf("kept %s, want [3 4 5 6 7 8 9] in order", got)
	}
	for _, e := range es {
		if want := fmt.Sprintf("a-%d", e.Position.Offset); string(e.Frame.Data) != want {
			t.Fatalf("offset %d holds %q, want %q", e.Position.Offset, e.Frame.Data, want)
		}
	}
}
