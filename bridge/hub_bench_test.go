package bridge

import (
	"context"
	"fmt"
	"testing"
)

// benchClient counts frames; it stands in for a connection whose queue always has room.
type benchClient struct {
	id string
	n  int
}

func (c *benchClient) ID() string                        { return c.id }
func (c *benchClient) Send(Delivery) bool                { c.n++; return true }
func (c *benchClient) Close(int, string, Initiator) bool { return true }

// BenchmarkHubPublishChannel measures fan-out of one publication to a channel of n members:
// the frame is built once and shared by every recipient.
func BenchmarkHubPublishChannel(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			benchPublishChannel(b, newHub("bench", NewMemoryBroker()), n, nil, "")
		})
	}
}

// benchPublishChannel measures h publishing one chat line (with Pusher event name event, if
// any) to the channel "room" of n members; member i comes by the transport kind(i) names (nil:
// none). The variants of BenchmarkHubPublishChannel (history, SSE, Pusher) differ only in the
// hub and the members they give it.
func benchPublishChannel(b *testing.B, h *hub, n int, kind func(i int) string, event string) {
	for i := range n {
		id := fmt.Sprintf("bench.%d", i)
		info := connInfo{ID: id}
		if kind != nil {
			info.Transport = kind(i)
		}
		h.Add(&benchClient{id: id}, info, &counters{}, "", nil, []string{"room"})
	}
	data := `{"type":"chat","text":"hello"}`
	p := &Publication{To: Targets{Channels: []string{"room"}}, Event: event, Data: &data}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if got, _ := h.Publish(context.Background(), p); got != n {
			b.Fatalf("delivered %d, want %d", got, n)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkDecodePublication measures the push API's strict decoding and validation of one item.
func BenchmarkDecodePublication(b *testing.B) {
	body := []byte(`{"to": {"channels": ["room:42"], "users": ["7"]}, "except": "n.ABC", "data": "{\"type\":\"chat\",\"text\":\"hello\"}"}`)
	l := limits{MaxNameLen: 200, MaxMetaSize: 8192}
	b.ReportAllocs()
	for b.Loop() {
		var p Publication
		if err := decodeStrict(body, &p); err != nil {
			b.Fatal(err)
		}
		if err := p.validate(l); err != nil {
			b.Fatal(err)
		}
	}
}
