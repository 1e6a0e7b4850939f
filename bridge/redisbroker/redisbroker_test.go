package redisbroker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"go.uber.org/goleak"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/bridge/brokertest"
	"github.com/wsbridge/wsbridge/bridge/redisbroker"
	"github.com/wsbridge/wsbridge/bridge/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newBroker is a broker of the test's Redis with a short ping, so that a stale subscription is
// found within the suite's bounds, keeping history (the suite's History subtest).
func newBroker(t *testing.T, url string) *redisbroker.Broker {
	t.Helper()
	b, err := newBrokerTB(t, url)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newBrokerTB(t testing.TB, url string) (*redisbroker.Broker, error) {
	b, err := redisbroker.New(redisbroker.Options{URL: url, Prefix: "t", PingEvery: 50 * time.Millisecond, HistorySize: 100, HistoryTTL: time.Minute})
	if err == nil {
		t.Cleanup(func() { b.Close() })
	}
	return b, err
}

// The Redis broker passes the conformance suite against a real redis-server, fresh per subtest.
func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokertest.Cluster {
		srv := testkit.StartRedis(t)
		return brokertest.Cluster{
			Node:  func(t *testing.T) bridge.Broker { return newBroker(t, srv.URL()) },
			Stop:  func(t *testing.T) { srv.Stop(t) },
			Start: func(t *testing.T) { srv.Start(t) },
			AppPublish: func(t *testing.T, payload []byte) {
				srv.Do(t, "PUBLISH", "t:publish", string(payload))
			},
		}
	})
}

// TestStaleSubscriptionDetected: a path to Redis that stays up but carries nothing (a failover
// that kept the socket, Centrifugo #1189) is noticed by the self-addressed pings: Healthy
// reports it, the stale counter rises, and once the path carries again the node receives again
// without a restart.
func TestStaleSubscriptionDetected(t *testing.T) {
	srv := testkit.StartRedis(t)
	proxy := testkit.StartTCPProxy(t, srv.Addr)
	a := newBroker(t, "redis://"+proxy.Addr+"/0")
	pub := newBroker(t, srv.URL())
	ctx, cancel := context.WithCancel(context.Background())
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		a.Run(ctx, "a", func(bridge.Envelope) { got.Add(1) })
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		proxy.Cut() // a Receive held by the stalled path returns
		<-done
	})
	e := bridge.Envelope{Version: bridge.EnvelopeVersion, Origin: "p", Op: bridge.OpJoin, Targets: bridge.Targets{Users: []string{"u"}}, Channel: "c"}
	delivered := func(what string) {
		t.Helper()
		before := got.Load()
		retryFor(t, what, func() bool {
			pub.Publish(context.Background(), e)
			return got.Load() > before
		})
	}
	delivered("delivery before the stall")
	proxy.Stall()
	retryFor(t, "Healthy reports the stalled path", func() bool {
		hctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		return a.Healthy(hctx) != nil
	})
	retryFor(t, "the stale subscription counted", func() bool { return counter(t, a, "wsbridge_broker_stale_total") > 0 })
	proxy.Unstall()
	delivered("delivery after the path carries again")
	retryFor(t, "Healthy again", func() bool { return a.Healthy(context.Background()) == nil })
}

// retryFor polls cond every 20ms for at most 10s.
func retryFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		<-time.After(20 * time.Millisecond)
	}
}

// counter reads one of the broker's own series.
func counter(t *testing.T, b *redisbroker.Broker, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(b); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no series %s", name)
	return 0
}
