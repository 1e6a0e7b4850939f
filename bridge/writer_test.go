package bridge

import (
	"strconv"
	"testing"
)

// The send queue keeps frames in order, refuses the frame over the limit, stays within about
// twice the limit when the writer never catches up, and lets a burst's slice go once empty.
func TestSendQueue(t *testing.T) {
	var q sendQueue
	frame := func(i int) Frame { return Frame{Data: []byte(strconv.Itoa(i))} }
	const limit = 8
	for i := range limit {
		if !q.push(frame(i), limit) {
			t.Fatalf("push %d refused below the limit", i)
		}
	}
	if q.push(frame(limit), limit) {
		t.Fatal("push over the limit accepted")
	}
	if q.empty() {
		t.Fatal("a queue of 8 frames reports empty")
	}

	// A writer that stays a few frames behind for a long time: order holds, memory is bounded.
	next, want := limit, 0
	for range 1000 {
		for range 3 {
			f, ok := q.pop()
			if !ok || string(f.Data) != strconv.Itoa(want) {
				t.Fatalf("pop = %q, %v; want %d", f.Data, ok, want)
			}
			want++
		}
		for range 3 {
			if !q.push(frame(next), limit) {
				t.Fatalf("push %d refused with %d waiting", next, next-want)
			}
			next++
		}
		if cap(q.frames) > 2*limit+1 {
			t.Fatalf("queue slice grew to %d for a limit of %d", cap(q.frames), limit)
		}
	}
	for want < next {
		if f, ok := q.pop(); !ok || string(f.Data) != strconv.Itoa(want) {
			t.Fatalf("pop = %q, %v; want %d", f.Data, ok, want)
		}
		want++
	}
	if _, ok := q.pop(); ok {
		t.Fatal("pop from an empty queue returned a frame")
	}

	// A burst of 64 leaves nothing behind once written.
	for i := range 64 {
		q.push(frame(i), 64)
	}
	for range 65 {
		q.pop()
	}
	if q.frames != nil {
		t.Fatalf("an empty queue kept a slice of capacity %d after a burst", cap(q.frames))
	}
}
