package bridge

import (
	"context"
	"fmt"
	"testing"
)

// A publication is encoded once, however many recipients it has and on however many goroutines
// they are sent to: every recipient of a split fan-out gets the same WebSocket bytes (one
// backing array), both of them when compression is on; a reply's frame, for one connection,
// comes unencoded and is encoded by its recipient only.
func TestDeliveryEncodedOncePerPublication(t *testing.T) {
	for _, tc := range []struct {
		name       string
		deflateMin int
		data       string
		wantZ      bool
	}{
		{"plain", 0, "hello, room", false},
		{"deflated", 16, fmt.Sprintf("%0200d", 7), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHub("n", NewMemoryBroker())
			h.deflateMin = tc.deflateMin
			clients := make([]*countClient, 2*fanoutChunk+1)
			for i := range clients {
				id := fmt.Sprintf("n.%d", i)
				clients[i] = &countClient{id: id}
				h.Add(clients[i], connInfo{ID: id}, &counters{}, "", nil, []string{"room"})
			}
			if _, err := h.Publish(context.Background(), &Publication{To: Targets{Channels: []string{"room"}}, Data: &tc.data}); err != nil {
				t.Fatal(err)
			}
			first := clients[0].frames[0]
			if len(first.ws) == 0 || (first.wsZ > 0) != tc.wantZ {
				t.Fatalf("the hub handed out ws %d bytes, wsZ %d; want an encoding, compressed: %v", len(first.ws), first.wsZ, tc.wantZ)
			}
			for i, c := range clients {
				if len(c.frames) != 1 {
					t.Fatalf("client %d got %d deliveries, want 1", i, len(c.frames))
				}
				if d := c.frames[0]; &d.ws[0] != &first.ws[0] || d.wsZ != first.wsZ {
					t.Fatalf("client %d got an encoding of its own: the publication was encoded more than once", i)
				}
			}
		})
	}
	if d := newDelivery(Frame{Data: []byte("reply")}); d.ws != nil || d.wsZ != 0 {
		t.Fatal("a reply's frame came encoded: it would be encoded for transports that do not take it")
	}
}
