package redisbroker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// BenchmarkBusRoundTrip: envelopes published by one node, all received by nodes other nodes
// (1 and 2 receivers): Publish's cost and the bus's throughput through a real redis-server.
// One op is one envelope published and delivered to every receiver.
func BenchmarkBusRoundTrip(b *testing.B) {
	for _, receivers := range []int{1, 2} {
		b.Run("receivers="+string(rune('0'+receivers)), func(b *testing.B) {
			srv := testkit.StartRedis(b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var got atomic.Int64
			done := make(chan struct{}, receivers+1)
			for i := range receivers {
				nb := benchBroker(b, srv.URL())
				go func() {
					nb.Run(ctx, "r"+string(rune('0'+i)), func(bridge.Envelope) { got.Add(1) })
					done <- struct{}{}
				}()
			}
			pub := benchBroker(b, srv.URL())
			data := `{"type":"chat","text":"hello there"}`
			e := bridge.Envelope{Version: bridge.EnvelopeVersion, Origin: "p", Op: bridge.OpPublish,
				Publication: &bridge.Publication{To: bridge.Targets{Channels: []string{"room"}}, Data: &data}}
			// Wait until every receiver is subscribed: probes until each got one.
			deadline := time.Now().Add(10 * time.Second)
			for got.Load() < int64(receivers) {
				if time.Now().After(deadline) {
					b.Fatal("receivers not subscribed within 10s")
				}
				pub.Publish(ctx, e)
				<-time.After(10 * time.Millisecond)
			}
			got.Store(0)
			b.ResetTimer()
			for range b.N {
				if err := pub.Publish(ctx, e); err != nil {
					b.Fatal(err)
				}
			}
			want := int64(b.N * receivers)
			for got.Load() < want {
				if time.Now().After(deadline.Add(time.Minute)) {
					b.Fatalf("delivered %d of %d", got.Load(), want)
				}
				<-time.After(time.Millisecond)
			}
			b.StopTimer()
			cancel()
			for range receivers {
				<-done
			}
		})
	}
}

func benchBroker(b *testing.B, url string) bridge.Broker {
	br, err := newBrokerTB(b, url)
	if err != nil {
		b.Fatal(err)
	}
	return br
}
