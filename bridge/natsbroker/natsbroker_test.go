package natsbroker_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/bridge/brokertest"
	"github.com/wsbridge/wsbridge/bridge/natsbroker"
	"github.com/wsbridge/wsbridge/bridge/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitLimit bounds every wait here; it is a guard against hangs, not a timing claim.
const waitLimit = 10 * time.Second

// newBroker is one node's broker on srv, closed when the test ends (after the suite's Run,
// whose cleanup was registered later and so runs first).
func newBroker(t *testing.T, url string, nodeTimeout time.Duration) *natsbroker.Broker {
	t.Helper()
	// The client logs from its own goroutines, possibly after the test: into a buffer, shown
	// when the test failed.
	log := &testkit.SyncBuffer{}
	b, err := natsbroker.New(natsbroker.Options{URL: url, Prefix: "wsb.test", NodeTimeout: nodeTimeout,
		Log: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		if t.Failed() {
			t.Logf("broker log:\n%s", log.String())
		}
	})
	return b
}

// TestConformance runs the broker suite against a real nats-server per subtest, which
// EngineGoesAwayAndComesBack kills (SIGKILL) and starts again at the same address.
func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokertest.Cluster {
		srv := testkit.StartNATS(t)
		return brokertest.Cluster{
			// A short node timeout, so that NodeRegistry sees a node expire within its bound.
			Node:  func(t *testing.T) bridge.Broker { return newBroker(t, srv.URL(), 3*time.Second) },
			Stop:  func(t *testing.T) { srv.Stop(t) },
			Start: func(t *testing.T) { srv.Start(t) },
			AppPublish: func(t *testing.T, payload []byte) {
				nc, err := nats.Connect(srv.URL())
				if err != nil {
					t.Fatalf("app publish: %v", err)
				}
				defer nc.Close()
				if err := nc.Publish("wsb.test.publish", payload); err != nil {
					t.Fatalf("app publish: %v", err)
				}
				if err := nc.Flush(); err != nil {
					t.Fatalf("app publish: %v", err)
				}
			},
		}
	})
}

func TestNewRefusesBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    natsbroker.Options
		want string
	}{
		{"no URL", natsbroker.Options{}, "no server URL"},
		{"wildcard in prefix", natsbroker.Options{URL: "nats://127.0.0.1:1", Prefix: "ws.*"}, "prefix"},
		{"space in prefix", natsbroker.Options{URL: "nats://127.0.0.1:1", Prefix: "ws bridge"}, "prefix"},
		{"empty token in prefix", natsbroker.Options{URL: "nats://127.0.0.1:1", Prefix: "ws..b"}, "prefix"},
		{"trailing dot", natsbroker.Options{URL: "nats://127.0.0.1:1", Prefix: "ws."}, "prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := natsbroker.New(tc.o)
			if err == nil {
				_ = b.Close()
				t.Fatalf("New(%+v) = nil error, want one about %q", tc.o, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestPublishFailsWhileDisconnected: with the server gone, Publish says so at once (no
// buffer sends it late), and Healthy reports it.
func TestPublishFailsWhileDisconnected(t *testing.T) {
	srv := testkit.StartNATS(t)
	b := newBroker(t, srv.URL(), 3*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := b.Healthy(ctx); err == nil || !strings.Contains(err.Error(), "not joined") {
		t.Errorf("Healthy before Run = %v, want not joined: the node cannot receive yet", err)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Run(runCtx, "a", func(bridge.Envelope) {}) }()
	t.Cleanup(func() { stopRun(); <-done })
	retry(t, "Healthy once Run has subscribed", func() bool { return b.Healthy(ctx) == nil })
	srv.Stop(t)
	e := bridge.Envelope{Version: bridge.EnvelopeVersion, Origin: "a", Op: bridge.OpJoin, Channel: "c", Targets: bridge.Targets{All: true}}
	retry(t, "Healthy reports the server gone", func() bool { return b.Healthy(ctx) != nil })
	// The client knows it is disconnected: every Publish now fails, none is kept to be sent
	// late.
	for i := range 3 {
		if err := b.Publish(ctx, e); err == nil {
			t.Fatalf("Publish %d while disconnected = nil, want an error", i)
		}
	}
}

// TestNodeExpiresWithoutLeaving: a node that stops heartbeating without deleting its key (a
// kill -9, a partition) is gone from Nodes once the node timeout has passed.
func TestNodeExpiresWithoutLeaving(t *testing.T) {
	srv := testkit.StartNATS(t)
	a := newBroker(t, srv.URL(), 2*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, "a", func(bridge.Envelope) {}) }()
	t.Cleanup(func() { cancel(); <-done })
	observer := newBroker(t, srv.URL(), 2*time.Second)
	nodes := func() []string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ns, err := observer.Nodes(ctx)
		if err != nil {
			t.Logf("Nodes: %v", err)
		}
		return ns
	}
	retry(t, "node a listed", func() bool { return slices.Contains(nodes(), "a") })
	// Cut a off the server without Run ending, so its key is never deleted.
	_ = a.Close()
	retry(t, "node a expired", func() bool { return !slices.Contains(nodes(), "a") })
}

// TestRegistersAgainAfterEngineRestart: a restarted server has lost the registry (it lives in
// memory); each node is listed again once it has reconnected, without restarting anything.
func TestRegistersAgainAfterEngineRestart(t *testing.T) {
	srv := testkit.StartNATS(t)
	// A timeout far longer than the test: the node must come back by its reconnect, not by
	// its next regular beat.
	a := newBroker(t, srv.URL(), time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, "a", func(bridge.Envelope) {}) }()
	t.Cleanup(func() { cancel(); <-done })
	observer := newBroker(t, srv.URL(), time.Hour)
	listed := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ns, _ := observer.Nodes(ctx)
		return slices.Contains(ns, "a")
	}
	retry(t, "node a listed", listed)
	srv.Stop(t)
	srv.Start(t)
	retry(t, "node a listed again after the restart", listed)
}

func retry(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(waitLimit)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: not within %s", what, waitLimit)
		}
	}
}

// TestBeatAfterEngineLostState: a server restarted without its store has lost the registry;
// the next Beat says Unknown (the node then uploads its records again), and records can be
// written again.
func TestBeatAfterEngineLostState(t *testing.T) {
	srv := testkit.StartNATS(t)
	b := newBroker(t, srv.URL(), time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if hb, err := b.Beat(ctx, "n1"); err != nil || !hb.Unknown {
		t.Fatalf("first Beat = %+v, %v; want Unknown", hb, err)
	}
	if err := b.PutConn(ctx, bridge.ConnRecord{ID: "n1.a", Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	srv.Clear(t)
	srv.Start(t)
	retry(t, "Beat answers Unknown after the restart", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		hb, err := b.Beat(ctx, "n1")
		if err != nil {
			t.Logf("Beat: %v", err)
		}
		return err == nil && hb.Unknown
	})
	if _, found, err := b.Conn(ctx, "n1.a"); err != nil || found {
		t.Fatalf("Conn after the restart = found %v, %v; want not found, no error", found, err)
	}
	if err := b.PutConn(ctx, bridge.ConnRecord{ID: "n1.a", Node: "n1"}); err != nil {
		t.Fatalf("PutConn after the restart: %v", err)
	}
}

// TestSlowConsumerDropsAndCounts: a node that falls behind (its deliver held here; a real one
// never blocks, but a starved CPU has the same effect) has messages dropped by the client past
// the pending limits, counted in wsbridge_nats_dropped_total; the publisher never waits for
// it, and the node receives again once it catches up.
func TestSlowConsumerDropsAndCounts(t *testing.T) {
	srv := testkit.StartNATS(t)
	a, slow := newBroker(t, srv.URL(), time.Hour), newBroker(t, srv.URL(), time.Hour)
	held := make(chan struct{})
	var got atomic.Int64
	var marker atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- slow.Run(ctx, "slow", func(e bridge.Envelope) {
			got.Add(1)
			if e.Channel == "marker" {
				marker.Store(true)
			}
			<-held
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	e := bridge.Envelope{Version: bridge.EnvelopeVersion, Origin: "a", Op: bridge.OpJoin, Channel: "c", Targets: bridge.Targets{All: true}}
	retry(t, "slow joined", func() bool {
		_ = a.Publish(context.Background(), e)
		return got.Load() > 0
	})
	// Far past the 100,000 pending messages; each Publish returns without waiting for slow.
	const flood = 150_000
	for i := range flood {
		pctx, pcancel := context.WithTimeout(context.Background(), waitLimit)
		err := a.Publish(pctx, e)
		pcancel()
		if err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(slow)
	dropped := func() float64 {
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() == "wsbridge_nats_dropped_total" {
				return f.GetMetric()[0].GetCounter().GetValue()
			}
		}
		t.Fatal("no wsbridge_nats_dropped_total")
		return 0
	}
	retry(t, "drops counted", func() bool { return dropped() > 0 })
	if got.Load() >= flood {
		t.Errorf("slow received %d of %d while held: nothing was dropped", got.Load(), flood)
	}
	close(held)
	// Caught up: what is published now arrives.
	m := e
	m.Channel = "marker"
	retry(t, "delivery after catching up", func() bool {
		_ = a.Publish(context.Background(), m)
		return marker.Load()
	})
}

// TestStalledPathDetected: a path to the server that stays up but carries nothing (a failover
// that kept the socket, Centrifugo #1189) shows in Healthy at once (its round trip does not
// come back), and once the path carries again the node receives again without a restart. (A
// stall longer than two missed client pings, 4 s, also makes the client reconnect and replay
// the subscription; this one is shorter.)
func TestStalledPathDetected(t *testing.T) {
	srv := testkit.StartNATS(t)
	proxy := testkit.StartTCPProxy(t, srv.Addr)
	a := newBroker(t, "nats://"+proxy.Addr, time.Hour)
	pub := newBroker(t, srv.URL(), time.Hour)
	var got atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, "a", func(bridge.Envelope) { got.Add(1) }) }()
	t.Cleanup(func() { cancel(); proxy.Cut(); <-done })
	e := bridge.Envelope{Version: bridge.EnvelopeVersion, Origin: "p", Op: bridge.OpJoin, Channel: "c", Targets: bridge.Targets{All: true}}
	delivered := func(what string) {
		t.Helper()
		before := got.Load()
		retry(t, what, func() bool {
			_ = pub.Publish(context.Background(), e)
			return got.Load() > before
		})
	}
	healthy := func() error {
		hctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		return a.Healthy(hctx)
	}
	delivered("delivery before the stall")
	proxy.Stall()
	retry(t, "Healthy reports the stalled path", func() bool { return healthy() != nil })
	proxy.Unstall()
	delivered("delivery after the path carries again")
	retry(t, "Healthy again", func() bool { return healthy() == nil })
}
