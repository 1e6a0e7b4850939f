package bridge

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The send queue keeps frames in order, refuses the frame over the limit, stays within about
// twice the limit when the writer never catches up, and lets a burst's slice go once empty.
func TestSendQueue(t *testing.T) {
	var q sendQueue
	frame := func(i int) Delivery { return Delivery{Data: []byte(strconv.Itoa(i))} }
	const limit = 8
	for i := range limit {
		if !q.push(frame(i), limit, 1<<20) {
			t.Fatalf("push %d refused below the limit", i)
		}
	}
	if q.push(frame(limit), limit, 1<<20) {
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
			if !q.push(frame(next), limit, 1<<20) {
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
		q.push(frame(i), 64, 1<<20)
	}
	for range 65 {
		q.pop()
	}
	if q.frames != nil {
		t.Fatalf("an empty queue kept a slice of capacity %d after a burst", cap(q.frames))
	}
}

// countClient records the frames it is sent; safe for the goroutines of a split fan-out.
type countClient struct {
	id     string
	mu     sync.Mutex
	frames []Delivery
}

func (c *countClient) ID() string { return c.id }
func (c *countClient) Send(f Delivery) bool {
	c.mu.Lock()
	c.frames = append(c.frames, f)
	c.mu.Unlock()
	return true
}
func (c *countClient) Close(int, string, Initiator) bool { return true }

// A publication to a channel large enough to be split over goroutines still reaches every
// member exactly once, skips the excepted one, and reports the right count; sequential
// publications arrive in order.
func TestPublishSplitFanOut(t *testing.T) {
	h := newHub("n", NewMemoryBroker())
	const n = 3*fanoutChunk + 17
	clients := make([]*countClient, n)
	for i := range clients {
		id := fmt.Sprintf("n.%d", i)
		clients[i] = &countClient{id: id}
		h.Add(clients[i], connInfo{ID: id}, &counters{}, "", nil, []string{"room"})
	}
	for k := range 3 {
		data := strconv.Itoa(k)
		got, err := h.Publish(context.Background(), &Publication{To: Targets{Channels: []string{"room"}}, Except: "n.5", Data: &data})
		if err != nil || got != n-1 {
			t.Fatalf("publication %d delivered %d (err %v), want %d", k, got, err, n-1)
		}
	}
	for i, c := range clients {
		want := "012"
		if i == 5 {
			want = ""
		}
		var got string
		for _, f := range c.frames {
			got += string(f.Data)
			if f.queue {
				t.Fatalf("client %d: a lone publication was not to be written on the spot", i)
			}
		}
		if got != want {
			t.Fatalf("client %d got %q, want %q", i, got, want)
		}
	}

	// With writers still busy on many connections, frames pile up: a big publication leaves
	// them to the writers; a small one (a push to one connection) still writes on the spot.
	h.writing.Store(n / backlogShare)
	data := "busy"
	h.Publish(context.Background(), &Publication{To: Targets{Channels: []string{"room"}}, Data: &data})
	h.Publish(context.Background(), &Publication{To: Targets{Connections: []string{"n.5"}}, Data: &data})
	if f := clients[0].frames[3]; !f.queue {
		t.Error("a big publication during a backlog was written on the spot")
	}
	if f := clients[5].frames[1]; f.queue {
		t.Error("a push to one connection during a backlog was queued")
	}
}

// A client that stops reading while large frames are sent to it: the first is written on the
// sender's goroutine as far as the socket takes it, the rest of it and the frames after it wait
// for the writer, and once the client reads it gets every frame whole and in order.
func TestSendLeftoverGoesOutInOrder(t *testing.T) {
	php := newFakePHP(t, acceptAll)
	// The client reads only after all 12 MiB were pushed: a queue that holds them (the
	// default SEND_QUEUE_BYTES would call the client slow, rightly, which is not this test's
	// subject).
	b := newBridge(t, php, func(c *Config) { c.SendQueueBytes = 64 << 20 })
	c, id := b.openConn(t, "")
	c.SetReadLimit(-1)

	// One frame bigger than the socket buffers, and nothing after it: only the writer's flush
	// of the leftover gets its end out.
	huge := strings.Repeat("h", 16<<20)
	if n, err := b.srv.hub.Publish(context.Background(), &Publication{To: Targets{Connections: []string{id}}, Data: &huge}); n != 1 || err != nil {
		t.Fatalf("publish: delivered %d, err %v", n, err)
	}
	if got := read(t, c); got != huge {
		t.Fatalf("huge frame: read %d bytes, want %d", len(got), len(huge))
	}

	const frames, size = 24, 512 << 10 // 12 MiB: more than loopback's socket buffers hold
	for i := range frames {
		data := strings.Repeat(string(rune('a'+i)), size)
		var out struct{ Delivered int }
		if code := b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"connections": []string{id}}, "data": data}, &out); code != 200 || out.Delivered != 1 {
			t.Fatalf("publish %d: status %d, delivered %d", i, code, out.Delivered)
		}
	}
	for i := range frames {
		got := read(t, c)
		if len(got) != size || strings.Trim(got, string(rune('a'+i))) != "" {
			t.Fatalf("frame %d: %d bytes starting %q, want %d bytes of %q", i, len(got), got[:min(8, len(got))], size, rune('a'+i))
		}
	}
}

// TestSendQueueBytes: the queue refuses a frame that would take it past its byte bound, even
// below its frame bound, and counts bytes out as frames are popped.
func TestSendQueueBytes(t *testing.T) {
	var q sendQueue
	big := Delivery{Data: make([]byte, 600)}
	if !q.push(big, 100, 1000) {
		t.Fatal("first 600-byte frame refused under a 1000-byte bound")
	}
	if q.push(big, 100, 1000) {
		t.Fatal("second 600-byte frame accepted: 1200 bytes over a 1000-byte bound")
	}
	if !q.push(Delivery{Data: make([]byte, 400)}, 100, 1000) {
		t.Fatal("a frame that fills the bound exactly was refused")
	}
	q.pop()
	if !q.push(big, 100, 1000) {
		t.Fatal("600 bytes refused after 600 were popped")
	}
}

// TestBatchDeliveredToAReadingClient: what the push API accepts in one batch (MAX_BATCH
// items) to one connection reaches a client that reads; it is not dropped as a slow consumer.
func TestBatchDeliveredToAReadingClient(t *testing.T) {
	php := newFakePHP(t, acceptAll)
	b := newBridge(t, php, nil)
	c, id := b.openConn(t, "")
	n := b.srv.cfg.MaxBatch
	pubs := make([]map[string]any, n)
	for i := range pubs {
		pubs[i] = map[string]any{"to": map[string]any{"connections": []string{id}}, "data": strconv.Itoa(i) + strings.Repeat("x", 200)}
	}
	if st := b.api(t, "POST", "/v1/publish", pubs, nil); st != 200 {
		t.Fatalf("batch publish = %d", st)
	}
	for i := range n {
		if got := read(t, c); got != strconv.Itoa(i)+strings.Repeat("x", 200) {
			t.Fatalf("message %d = %.20q", i, got)
		}
	}
}
