package natsbroker_test

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/bridge/natsbroker"
	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// BenchmarkEnvelope: one envelope from node a to node b through nats-server (publish to
// delivery, pipelined): the broker's share of a cross-node push.
func BenchmarkEnvelope(b *testing.B) {
	srv := testkit.StartNATS(b)
	a, c := benchBroker(b, srv.URL()), benchBroker(b, srv.URL())
	var got atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, "b", func(bridge.Envelope) { got.Add(1) }) }()
	b.Cleanup(func() { cancel(); <-done })
	text := "a chat line of about sixty bytes, as a room's message would be"
	e := bridge.Envelope{Version: bridge.EnvelopeVersion, Origin: "a", Op: bridge.OpPublish,
		Publication: &bridge.Publication{To: bridge.Targets{Channels: []string{"room"}}, Data: &text}}
	// Joined once an envelope arrives.
	deadline := time.Now().Add(10 * time.Second)
	for got.Load() == 0 {
		if time.Now().After(deadline) {
			b.Fatal("node b never received an envelope")
		}
		_ = a.Publish(context.Background(), e)
		time.Sleep(10 * time.Millisecond)
	}
	start := got.Load()
	// In windows of 1,000 in flight: unpaced, the publisher outruns the subscriber past its
	// pending limits and the client drops (as it must); this measures what flows.
	const window = 1000
	wait := func(n int64) {
		limit := time.Now().Add(time.Minute)
		for got.Load() < start+n && time.Now().Before(limit) {
			time.Sleep(50 * time.Microsecond)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		if i >= window {
			wait(int64(i - window))
		}
		if err := a.Publish(context.Background(), e); err != nil {
			b.Fatal(err)
		}
	}
	wait(int64(b.N))
	b.StopTimer()
	if n := got.Load() - start; n < int64(b.N) {
		b.Fatalf("node b received %d of %d", n, b.N)
	}
}

// BenchmarkConnsQuery: GET /v1/connections?user= on NATS reads every record of the cluster;
// this is its cost at 1,000 and 10,000 connections.
func benchBroker(b *testing.B, url string) *natsbroker.Broker {
	br, err := natsbroker.New(natsbroker.Options{URL: url, Prefix: "bench", Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = br.Close() })
	return br
}

func BenchmarkConnsQuery(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			srv := testkit.StartNATS(b)
			br := benchBroker(b, srv.URL())
			ctx := context.Background()
			for i := range n {
				rec := bridge.ConnRecord{ID: "n.c" + strconv.Itoa(i), Node: "n", UserID: "u" + strconv.Itoa(i%100), Channels: []string{"lobby"}}
				if err := br.PutConn(ctx, rec); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for range b.N {
				p, err := br.Conns(ctx, bridge.ConnQuery{User: "u7", Limit: 100})
				if err != nil || p.Total != n/100 {
					b.Fatalf("Conns = %d, %v", p.Total, err)
				}
			}
		})
	}
}
