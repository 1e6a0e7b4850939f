// Package brokertest is the conformance suite every bridge.Broker passes: the memory broker in
// bridge's tests, and each cluster broker (bridge/redisbroker, bridge/natsbroker) in its own
// package against a real engine:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, func(t *testing.T) brokertest.Cluster {
//			srv := startRedis(t) // a fresh engine, stopped by t.Cleanup
//			return brokertest.Cluster{
//				Node:  func(t *testing.T) bridge.Broker { return redisbroker.New(srv.URL()) },
//				Stop:  srv.Stop,
//				Start: srv.Start,
//			}
//		})
//	}
//
// Each subtest starts nodes, each one Run of a broker from Cluster.Node under a node id of its
// own, and checks what the hub relies on (bridge/broker.go): every other node gets each
// envelope exactly once and the publisher never gets its own, one origin's envelopes arrive in
// order and whole, Run and Publish end with their context, and an engine that goes away and
// comes back leaves the brokers working. Brokers are at-most-once, so a node counts as joined
// once it has received a probe published after its Run started (a subscription may take a
// moment to be in place); nothing is published to it before.
package brokertest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
)

// waitLimit bounds every wait of the suite: a broker that has not delivered by then fails.
const waitLimit = 10 * time.Second

// probeEvery is how often an unanswered probe is published again while nodes join, or while an
// engine comes back: brokers drop what is published before a subscription is in place.
const probeEvery = 20 * time.Millisecond

// probePrefix marks the channel of the suite's probe envelopes, which the checks ignore.
const probePrefix = "brokertest.probe/"

// Cluster is one engine shared by the nodes of a subtest; Run asks for a fresh one per subtest.
type Cluster struct {
	// Node returns the broker of one more node: for a network broker a new client of the
	// cluster's engine; for the memory broker the same broker every time. The suite calls Run
	// on it once; closing it is the caller's (t.Cleanup).
	Node func(t *testing.T) bridge.Broker
	// Stop takes the engine away (the server killed, connections cut) and Start brings it back
	// at the same address. Both nil: the broker has no engine (the memory broker), and the
	// subtest that needs them is skipped.
	Stop, Start func(t *testing.T)
	// AppPublish publishes payload to the engine as the application does (for Redis,
	// PUBLISH <prefix>:publish), for brokers that implement bridge.AppPublisher; nil skips
	// that subtest.
	AppPublish func(t *testing.T, payload []byte)
}

// Run runs every conformance check as a subtest, each against a cluster from newCluster.
func Run(t *testing.T, newCluster func(t *testing.T) Cluster) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Cluster)
	}{
		{"EveryOtherNodeOnce", everyOtherNodeOnce},
		{"OrderPerOrigin", orderPerOrigin},
		{"EveryFieldArrives", everyFieldArrives},
		{"RunEndsWithContext", runEndsWithContext},
		{"PublishHonoursContext", publishHonoursContext},
		{"NodeRegistry", nodeRegistry},
		{"EngineGoesAwayAndComesBack", engineGoesAwayAndComesBack},
		{"History", history},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newCluster(t)) })
	}
	for _, tc := range clusterChecks {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newCluster(t)) })
	}
}

// node is one running Run and what it received.
type node struct {
	name   string
	broker bridge.Broker
	cancel context.CancelFunc
	done   chan error // Run's result

	mu     sync.Mutex
	got    []bridge.Envelope   // every envelope but probes, in arrival order
	probes map[string]struct{} // probe rounds that arrived (joined)
	notify chan struct{}       // signalled after each arrival
}

// start runs a node named name on a broker of c until the test ends.
func start(t *testing.T, c Cluster, name string) *node {
	t.Helper()
	return startWith(t, c, name, nil)
}

// startWith is start with before called on the broker before its Run (nil: nothing).
func startWith(t *testing.T, c Cluster, name string, before func(bridge.Broker)) *node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{name: name, broker: c.Node(t), cancel: cancel, done: make(chan error, 1),
		probes: map[string]struct{}{}, notify: make(chan struct{}, 1)}
	if before != nil {
		before(n.broker)
	}
	go func() { n.done <- n.broker.Run(ctx, name, n.deliver) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-n.done:
		case <-time.After(waitLimit):
			t.Errorf("node %s: Run did not return within %s of its context ending", name, waitLimit)
		}
	})
	return n
}

func (n *node) deliver(e bridge.Envelope) {
	n.mu.Lock()
	if strings.HasPrefix(e.Channel, probePrefix) {
		n.probes[e.Channel[:strings.LastIndexByte(e.Channel, '/')]] = struct{}{}
	} else {
		n.got = append(n.got, e)
	}
	n.mu.Unlock()
	select {
	case n.notify <- struct{}{}:
	default:
	}
}

// received returns a copy of what n got so far.
func (n *node) received() []bridge.Envelope {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.got)
}

// waitFor waits until cond holds for what n received, or fails the test after waitLimit.
func (n *node) waitFor(t *testing.T, what string, cond func([]bridge.Envelope) bool) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		if cond(n.received()) {
			return
		}
		select {
		case <-n.notify:
		case <-deadline.C:
			t.Fatalf("node %s: %s: not within %s; received %d envelope(s): %v", n.name, what, waitLimit, len(n.received()), tags(n.received()))
		}
	}
}

// rounds numbers the calls of joined, so that each waits for probes of its own.
var rounds atomic.Int64

// joined waits until every node in to has received a probe that from published in this call,
// publishing a new one every probeEvery until then.
func joined(t *testing.T, from *node, to ...*node) {
	t.Helper()
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	deadline := time.After(waitLimit)
	round := fmt.Sprintf("%s%s/%d", probePrefix, from.name, rounds.Add(1))
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := from.broker.Publish(ctx, envelope(from.name, round+"/"+strconv.Itoa(i)))
		cancel()
		waiting := 0
		for _, n := range to {
			n.mu.Lock()
			if _, ok := n.probes[round]; !ok {
				waiting++
			}
			n.mu.Unlock()
		}
		if waiting == 0 {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%d node(s) did not receive a probe from %s within %s (last Publish error: %v)", waiting, from.name, waitLimit, err)
		}
	}
}

// envelope is a minimal valid envelope whose Channel is its tag. The broker does not read
// envelopes, so the op does not matter.
func envelope(origin, tag string) bridge.Envelope {
	return bridge.Envelope{Version: bridge.EnvelopeVersion, Origin: origin, Op: bridge.OpJoin,
		Targets: bridge.Targets{Connections: []string{"conn"}}, Channel: tag}
}

func tags(es []bridge.Envelope) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Channel
	}
	return out
}

// publish publishes e from n under waitLimit and fails the test on an error.
func publish(t *testing.T, n *node, e bridge.Envelope) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := n.broker.Publish(ctx, e); err != nil {
		t.Fatalf("node %s: Publish %s: %v", n.name, e.Channel, err)
	}
}

func has(tag string) func([]bridge.Envelope) bool {
	return func(es []bridge.Envelope) bool { return slices.Contains(tags(es), tag) }
}

// everyOtherNodeOnce: each envelope reaches every other node once, and never its publisher,
// which applied it itself.
func everyOtherNodeOnce(t *testing.T, c Cluster) {
	a, b, d := start(t, c, "a"), start(t, c, "b"), start(t, c, "d")
	joined(t, a, b, d)
	joined(t, b, a, d)
	const count = 50
	for i := range count {
		publish(t, a, envelope("a", "a/"+strconv.Itoa(i)))
	}
	publish(t, a, envelope("a", "a/end"))
	publish(t, b, envelope("b", "b/end"))
	for _, n := range []*node{b, d} {
		n.waitFor(t, "a/end", has("a/end"))
		seen := map[string]int{}
		for _, tag := range tags(n.received()) {
			if strings.HasPrefix(tag, "a/") {
				seen[tag]++
			}
		}
		for i := range count {
			if tag := "a/" + strconv.Itoa(i); seen[tag] != 1 {
				t.Errorf("node %s received %s %d times, want exactly once", n.name, tag, seen[tag])
			}
		}
	}
	a.waitFor(t, "b/end", has("b/end"))
	d.waitFor(t, "b/end", has("b/end"))
	for _, e := range a.received() {
		if e.Origin == "a" {
			t.Errorf("node a received its own envelope %s: the publisher applies its own locally, so it must not come back", e.Channel)
		}
	}
	b.mu.Lock()
	for round := range b.probes {
		if strings.HasPrefix(round, probePrefix+"b/") {
			t.Errorf("node b received its own probe %s", round)
		}
	}
	b.mu.Unlock()
}

// orderPerOrigin: two nodes publish at once; a third gets each one's envelopes whole and in
// the order published (how they interleave is free).
func orderPerOrigin(t *testing.T, c Cluster) {
	a, b, d := start(t, c, "a"), start(t, c, "b"), start(t, c, "d")
	joined(t, a, d)
	joined(t, b, d)
	const count = 200
	var wg sync.WaitGroup
	for _, n := range []*node{a, b} {
		wg.Go(func() {
			for i := range count {
				ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
				err := n.broker.Publish(ctx, envelope(n.name, n.name+"/"+strconv.Itoa(i)))
				cancel()
				if err != nil {
					t.Errorf("node %s: Publish %d: %v", n.name, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	last := fmt.Sprintf("/%d", count-1)
	d.waitFor(t, "the last of both origins", func(es []bridge.Envelope) bool {
		return has("a"+last)(es) && has("b"+last)(es)
	})
	next := map[string]int{}
	for _, e := range d.received() {
		want := fmt.Sprintf("%s/%d", e.Origin, next[e.Origin])
		if e.Channel != want {
			t.Fatalf("node d received %s where %s was next from %s: envelopes of one origin out of order or lost", e.Channel, want, e.Origin)
		}
		next[e.Origin]++
	}
}

// everyFieldArrives: an envelope of each op arrives as it was published, every field intact.
func everyFieldArrives(t *testing.T, c Cluster) {
	a, b := start(t, c, "a"), start(t, c, "b")
	joined(t, a, b)
	text, b64 := "héllo \"wörld\"\n", "AAEC/w=="
	sent := []bridge.Envelope{
		{Version: bridge.EnvelopeVersion, Origin: "a", Op: bridge.OpPublish, Channel: "f/1", Publication: &bridge.Publication{
			To: bridge.Targets{Connections: []string{"n.1"}, Users: []string{"u1", "u2"}, Channels: []string{"room"}}, Except: "n.2", Data: &text}},
		{Version: bridge.EnvelopeVersion, Origin: "a", Op: bridge.OpPublish, Channel: "f/2", Publication: &bridge.Publication{
			To: bridge.Targets{All: true}, DataBase64: &b64}},
		{Version: bridge.EnvelopeVersion, Origin: "a", Op: bridge.OpClose, Channel: "f/3", Targets: bridge.Targets{Users: []string{"u1"}},
			Close: &bridge.CloseRequest{Code: 4000, Reason: "bye"}},
		{Version: bridge.EnvelopeVersion, Origin: "a", Op: bridge.OpJoin, Channel: "f/4", Targets: bridge.Targets{Connections: []string{"n.1", "n.3"}}},
		{Version: bridge.EnvelopeVersion, Origin: "a", Op: bridge.OpLeave, Channel: "f/5", Targets: bridge.Targets{Users: []string{"u3"}}},
	}
	for _, e := range sent {
		publish(t, a, e)
	}
	b.waitFor(t, "f/5", has("f/5"))
	got := b.received()
	if !reflect.DeepEqual(got, sent) {
		t.Fatalf("envelopes changed on the way:\n got %+v\nwant %+v", got, sent)
	}
}

// runEndsWithContext: Run returns once its context ends, and the node then receives nothing.
func runEndsWithContext(t *testing.T, c Cluster) {
	a, b, d := start(t, c, "a"), start(t, c, "b"), start(t, c, "d")
	joined(t, a, b, d)
	b.cancel()
	select {
	case err := <-b.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v when its context ended, want nil or context.Canceled", err)
		}
		b.done <- err // for the cleanup
	case <-time.After(waitLimit):
		t.Fatalf("Run did not return within %s of its context ending", waitLimit)
	}
	publish(t, a, envelope("a", "a/after"))
	d.waitFor(t, "a/after", has("a/after"))
	if has("a/after")(b.received()) {
		t.Error("a node whose Run had returned still received an envelope")
	}
}

// publishHonoursContext: Publish with an ended context returns at once with its error and
// sends nothing.
func publishHonoursContext(t *testing.T, c Cluster) {
	a, b := start(t, c, "a"), start(t, c, "b")
	joined(t, a, b)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"cancelled", cancelled, context.Canceled},
		{"deadline passed", expired, context.DeadlineExceeded},
	} {
		errc := make(chan error, 1)
		go func() { errc <- a.broker.Publish(tc.ctx, envelope("a", "a/"+tc.name)) }()
		select {
		case err := <-errc:
			if !errors.Is(err, tc.want) {
				t.Errorf("%s: Publish returned %v, want an error wrapping %v", tc.name, err, tc.want)
			}
		case <-time.After(waitLimit):
			t.Fatalf("%s: Publish did not return within %s", tc.name, waitLimit)
		}
	}
	// One origin's envelopes arrive in order: once the marker is in, the refused ones would be.
	publish(t, a, envelope("a", "a/marker"))
	b.waitFor(t, "a/marker", has("a/marker"))
	if got := tags(b.received()); !slices.Equal(got, []string{"a/marker"}) {
		t.Errorf("node b received %v, want only a/marker: a Publish whose context had ended still sent", got)
	}
}

// nodeRegistry: a broker that lists nodes lists those whose Run is joined, and drops one whose
// Run ended.
func nodeRegistry(t *testing.T, c Cluster) {
	a, b := start(t, c, "a"), start(t, c, "b")
	reg, ok := a.broker.(bridge.NodeRegistry)
	if !ok {
		t.Skipf("%T does not implement bridge.NodeRegistry", a.broker)
	}
	joined(t, a, b)
	joined(t, b, a)
	nodes := func() []string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ns, err := reg.Nodes(ctx)
		if err != nil {
			t.Fatalf("Nodes: %v", err)
		}
		return ns
	}
	if ns := nodes(); !slices.Contains(ns, "a") || !slices.Contains(ns, "b") || !slices.IsSorted(ns) {
		t.Fatalf("Nodes = %v, want both a and b, sorted", ns)
	}
	b.cancel()
	retry(t, "node b gone from Nodes", func() bool { return !slices.Contains(nodes(), "b") })
}

// engineGoesAwayAndComesBack: with the engine gone, Publish still returns by its deadline and a
// broker with a health check reports it; Run keeps running; once the engine is back, delivery
// and health come back without restarting anything.
func engineGoesAwayAndComesBack(t *testing.T, c Cluster) {
	if c.Stop == nil || c.Start == nil {
		t.Skip("the broker under test has no engine to stop and start (Cluster.Stop/Start are nil)")
	}
	a, b := start(t, c, "a"), start(t, c, "b")
	joined(t, a, b)
	health, hasHealth := a.broker.(bridge.BrokerHealth)
	healthy := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return health.Healthy(ctx)
	}
	if hasHealth {
		if err := healthy(); err != nil {
			t.Fatalf("Healthy with the engine up: %v", err)
		}
	}

	c.Stop(t)
	errc := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	go func() { errc <- a.broker.Publish(ctx, envelope("a", "a/while-down")) }()
	select {
	case <-errc: // an error, or nil from a broker that buffers: both are at-most-once
	case <-time.After(waitLimit):
		t.Fatalf("Publish with the engine gone did not return within %s (its deadline was 1s)", waitLimit)
	}
	if hasHealth {
		retry(t, "Healthy reports the engine gone", func() bool { return healthy() != nil })
	}
	for _, n := range []*node{a, b} {
		select {
		case err := <-n.done:
			t.Fatalf("node %s: Run returned %v when the engine went away; it must keep running and reconnect", n.name, err)
		default:
		}
	}

	c.Start(t)
	joined(t, a, b)
	if hasHealth {
		retry(t, "Healthy once the engine is back", func() bool { return healthy() == nil })
	}
	publish(t, a, envelope("a", "a/after"))
	b.waitFor(t, "a/after", has("a/after"))
}

// retry polls cond every probeEvery until it holds, or fails the test after waitLimit: for
// states a broker reaches on its own (a reconnect, a node expiring) that it signals nowhere.
func retry(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	deadline := time.After(waitLimit)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: not within %s", what, waitLimit)
		}
	}
}
