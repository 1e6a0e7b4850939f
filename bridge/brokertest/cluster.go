package brokertest

// The checks of the optional cluster interfaces (bridge/cluster.go). A broker that does not
// implement one skips its subtests; one that does must pass them against its real engine.

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
)

// clusterChecks are run by Run after the Broker checks.
var clusterChecks = []struct {
	name string
	fn   func(*testing.T, Cluster)
}{
	{"ClusterStateRecordsAndQueries", clusterStateRecordsAndQueries},
	{"ClusterStateReplaceNode", clusterStateReplaceNode},
	{"NodeLivenessBeatAndSilence", nodeLivenessBeatAndSilence},
	{"NodeLivenessClaimExactlyOnce", nodeLivenessClaimExactlyOnce},
	{"NodeLivenessClaimOwnPreviousRun", nodeLivenessClaimOwnPreviousRun},
	{"NodeLivenessLeave", nodeLivenessLeave},
	{"AppPublisherHandsOverPayloads", appPublisherHandsOverPayloads},
}

// bounded returns a context that ends after waitLimit, cancelled when the test ends.
func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// stateOf starts a node and returns its broker as a ClusterState, or skips the test.
func stateOf(t *testing.T, c Cluster, name string) (*node, bridge.ClusterState) {
	t.Helper()
	n := start(t, c, name)
	cs, ok := n.broker.(bridge.ClusterState)
	if !ok {
		t.Skipf("%T does not implement bridge.ClusterState", n.broker)
	}
	return n, cs
}

func livenessOf(t *testing.T, c Cluster, name string) (*node, bridge.NodeLiveness, bridge.ClusterState) {
	t.Helper()
	n, cs := stateOf(t, c, name)
	nl, ok := n.broker.(bridge.NodeLiveness)
	if !ok {
		t.Skipf("%T does not implement bridge.NodeLiveness", n.broker)
	}
	return n, nl, cs
}

// record is a full record of connection id on node, every field set, so that a field a
// broker drops shows in the deep comparison.
func record(node, id, user string, channels ...string) bridge.ConnRecord {
	if channels == nil {
		channels = []string{}
	}
	return bridge.ConnRecord{ID: id, Node: node, Transport: "ws", UserID: user, Channels: channels,
		Meta: json.RawMessage(`{"room":"` + id + `"}`), RemoteAddr: "192.0.2.1:5000", Path: "/ws",
		Subprotocol: "chat", ConnectedAt: time.Date(2026, 12, 2, 3, 4, 5, 6_000_000, time.UTC),
		MessagesIn: 3, MessagesOut: 4, LostEventID: "LOST" + id}
}

func put(t *testing.T, cs bridge.ClusterState, recs ...bridge.ConnRecord) {
	t.Helper()
	for _, r := range recs {
		if err := cs.PutConn(bounded(t), r); err != nil {
			t.Fatalf("PutConn %s: %v", r.ID, err)
		}
	}
}

func ids(recs []bridge.ConnRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// sameRecord compares records with ConnectedAt compared as an instant (a broker may hand it
// back in another location) and an empty Meta equal to none.
func sameRecord(a, b bridge.ConnRecord) bool {
	if !a.ConnectedAt.Equal(b.ConnectedAt) {
		return false
	}
	a.ConnectedAt, b.ConnectedAt = time.Time{}, time.Time{}
	if len(a.Meta) == 0 {
		a.Meta = nil
	}
	if len(b.Meta) == 0 {
		b.Meta = nil
	}
	return reflect.DeepEqual(a, b)
}

// clusterStateRecordsAndQueries: records written on two nodes answer every query from either,
// a rewrite moves the record between indexes, and a delete by a node that does not hold the
// record changes nothing.
func clusterStateRecordsAndQueries(t *testing.T, c Cluster) {
	_, a := stateOf(t, c, "a")
	_, b := stateOf(t, c, "b")
	put(t, a, record("a", "a.1", "alice", "lobby", "room1"), record("a", "a.2", "bob", "lobby"))
	put(t, b, record("b", "b.1", "alice", "room1"), record("b", "b.2", "", "lobby"))

	for _, cs := range []bridge.ClusterState{a, b} {
		got, ok, err := cs.Conn(bounded(t), "a.1")
		if err != nil || !ok || !sameRecord(got, record("a", "a.1", "alice", "lobby", "room1")) {
			t.Errorf("Conn(a.1) = %+v, %v, %v; want the record as written", got, ok, err)
		}
		if _, ok, err := cs.Conn(bounded(t), "nobody"); err != nil || ok {
			t.Errorf("Conn(nobody) = found %v, %v; want not found, no error", ok, err)
		}
	}
	for _, tc := range []struct {
		name  string
		q     bridge.ConnQuery
		want  []string
		total int
	}{
		{"all", bridge.ConnQuery{Limit: 100}, []string{"a.1", "a.2", "b.1", "b.2"}, 4},
		{"all, limited", bridge.ConnQuery{Limit: 3}, []string{"a.1", "a.2", "b.1"}, 4},
		{"user on two nodes", bridge.ConnQuery{User: "alice", Limit: 100}, []string{"a.1", "b.1"}, 2},
		{"channel on two nodes", bridge.ConnQuery{Channel: "lobby", Limit: 100}, []string{"a.1", "a.2", "b.2"}, 3},
		{"user and channel", bridge.ConnQuery{User: "alice", Channel: "lobby", Limit: 100}, []string{"a.1"}, 1},
		{"channel, limited", bridge.ConnQuery{Channel: "lobby", Limit: 1}, []string{"a.1"}, 3},
		{"unknown user", bridge.ConnQuery{User: "carol", Limit: 100}, []string{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page, err := b.Conns(bounded(t), tc.q)
			if err != nil {
				t.Fatalf("Conns: %v", err)
			}
			if got := ids(page.Conns); !slices.Equal(got, tc.want) || page.Total != tc.total || len(page.Missing) > 0 {
				t.Errorf("Conns(%+v) = %v total %d missing %v; want %v total %d", tc.q, got, page.Total, page.Missing, tc.want, tc.total)
			}
		})
	}
	ch, err := a.Channel(bounded(t), "lobby", 2)
	if err != nil || !slices.Equal(ch.Conns, []string{"a.1", "a.2"}) || !slices.Equal(ch.Users, []string{"alice", "bob"}) || ch.Count != 3 {
		t.Errorf("Channel(lobby, 2) = %+v, %v; want conns [a.1 a.2], users [alice bob], count 3", ch, err)
	}
	tot, err := a.Totals(bounded(t))
	if err != nil || tot.Connections != 4 || tot.Users != 2 || tot.Channels != 2 {
		t.Errorf("Totals = %+v, %v; want 4 connections, 2 users, 2 channels", tot, err)
	}

	// a.1 leaves room1 and lobby and becomes carol's: every index follows.
	put(t, a, record("a", "a.1", "carol"))
	if page, _ := b.Conns(bounded(t), bridge.ConnQuery{User: "alice", Limit: 100}); !slices.Equal(ids(page.Conns), []string{"b.1"}) {
		t.Errorf("after a.1 became carol's, alice's connections = %v; want [b.1]", ids(page.Conns))
	}
	if ch, _ := b.Channel(bounded(t), "room1", 100); !slices.Equal(ch.Conns, []string{"b.1"}) || ch.Count != 1 {
		t.Errorf("after a.1 left room1, room1 = %+v; want [b.1]", ch)
	}

	// b does not hold a.2: its delete must not remove a's record.
	if err := b.DeleteConn(bounded(t), "b", "a.2"); err != nil {
		t.Fatalf("DeleteConn by the wrong node: %v", err)
	}
	if _, ok, _ := a.Conn(bounded(t), "a.2"); !ok {
		t.Error("DeleteConn(b, a.2) removed node a's record")
	}
	if err := a.DeleteConn(bounded(t), "a", "a.2"); err != nil {
		t.Fatalf("DeleteConn: %v", err)
	}
	if _, ok, _ := b.Conn(bounded(t), "a.2"); ok {
		t.Error("a.2 still recorded after its node deleted it")
	}
	if ch, _ := b.Channel(bounded(t), "lobby", 100); !slices.Equal(ch.Conns, []string{"b.2"}) || len(ch.Users) != 0 {
		t.Errorf("after a.2 was deleted, lobby = %+v; want [b.2] without users", ch)
	}
	if tot, _ := a.Totals(bounded(t)); tot.Connections != 3 || tot.Users != 2 || tot.Channels != 2 {
		t.Errorf("Totals after the changes = %+v; want 3 connections, 2 users (alice, carol), 2 channels", tot)
	}
}

// clusterStateReplaceNode: a re-upload leaves the node with exactly the records it sent and
// touches no other node's.
func clusterStateReplaceNode(t *testing.T, c Cluster) {
	_, a := stateOf(t, c, "a")
	put(t, a, record("a", "a.1", "alice", "lobby"), record("a", "a.2", "bob", "lobby"), record("b", "b.1", "bob", "lobby"))
	if err := a.ReplaceNode(bounded(t), "a", []bridge.ConnRecord{record("a", "a.2", "bob", "room"), record("a", "a.3", "", "room")}); err != nil {
		t.Fatalf("ReplaceNode: %v", err)
	}
	page, err := a.Conns(bounded(t), bridge.ConnQuery{Limit: 100})
	if err != nil || !slices.Equal(ids(page.Conns), []string{"a.2", "a.3", "b.1"}) {
		t.Fatalf("after ReplaceNode, connections = %v, %v; want [a.2 a.3 b.1]", ids(page.Conns), err)
	}
	if ch, _ := a.Channel(bounded(t), "lobby", 100); !slices.Equal(ch.Conns, []string{"b.1"}) {
		t.Errorf("after ReplaceNode, lobby = %v; want [b.1]", ch.Conns)
	}
	if err := a.ReplaceNode(bounded(t), "a", nil); err != nil {
		t.Fatalf("ReplaceNode with nothing: %v", err)
	}
	if tot, _ := a.Totals(bounded(t)); tot.Connections != 1 {
		t.Errorf("after ReplaceNode(a, nothing), %d connections; want 1 (b.1)", tot.Connections)
	}
}

// nodeLivenessBeatAndSilence: a node's first beat is Unknown, later ones are not; a node that
// stops beating turns up in Silent, one that beats does not.
func nodeLivenessBeatAndSilence(t *testing.T, c Cluster) {
	_, nl, _ := livenessOf(t, c, "watcher")
	hb, err := nl.Beat(bounded(t), "x")
	if err != nil || !hb.Unknown || len(hb.Reaped) > 0 {
		t.Fatalf("first Beat(x) = %+v, %v; want Unknown", hb, err)
	}
	hb, err = nl.Beat(bounded(t), "x")
	if err != nil || hb.Unknown || len(hb.Reaped) > 0 {
		t.Fatalf("second Beat(x) = %+v, %v; want neither unknown nor reaped", hb, err)
	}
	if _, err := nl.Beat(bounded(t), "y"); err != nil {
		t.Fatal(err)
	}
	const timeout = 200 * time.Millisecond
	// y keeps beating, x does not: x turns silent on the engine's clock.
	retry(t, "x silent, y not", func() bool {
		if _, err := nl.Beat(bounded(t), "y"); err != nil {
			t.Fatalf("Beat(y): %v", err)
		}
		silent, err := nl.Silent(bounded(t), timeout)
		if err != nil {
			t.Fatalf("Silent: %v", err)
		}
		if slices.Contains(silent, "y") {
			t.Fatalf("Silent(%s) = %v lists y, which beat just now", timeout, silent)
		}
		return slices.Contains(silent, "x")
	})
}

// nodeLivenessClaimExactlyOnce: five survivors claim a dead node at once; one gets all of its
// records, as orphans; the queries drop them; the dead node's next beat lists them as reaped;
// Settle drops an orphan.
func nodeLivenessClaimExactlyOnce(t *testing.T, c Cluster) {
	_, nl, cs := livenessOf(t, c, "watcher")
	if _, err := nl.Beat(bounded(t), "dead"); err != nil {
		t.Fatal(err)
	}
	recs := []bridge.ConnRecord{record("dead", "dead.1", "alice", "lobby"), record("dead", "dead.2", "", "lobby", "room"), record("dead", "dead.3", "bob")}
	put(t, cs, recs...)
	put(t, cs, record("alive", "alive.1", "alice", "lobby"))
	// A claim of a node that is not silent takes nothing.
	if n, err := nl.Claim(bounded(t), "dead", "s0", time.Hour); err != nil || n != 0 {
		t.Fatalf("Claim of a node that beat just now = %d, %v; want 0", n, err)
	}
	const timeout = 100 * time.Millisecond
	retry(t, "dead silent", func() bool {
		silent, err := nl.Silent(bounded(t), timeout)
		return err == nil && slices.Contains(silent, "dead")
	})

	claimers := make([]bridge.NodeLiveness, 5)
	for i := range claimers {
		_, claimers[i], _ = livenessOf(t, c, "s"+strconv.Itoa(i))
		if _, err := claimers[i].Beat(bounded(t), "s"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]int, len(claimers))
	errs := make([]error, len(claimers))
	var wg sync.WaitGroup
	for i, cl := range claimers {
		wg.Go(func() { got[i], errs[i] = cl.Claim(bounded(t), "dead", "s"+strconv.Itoa(i), timeout) })
	}
	wg.Wait()
	winner := -1
	for i := range got {
		if errs[i] != nil {
			t.Fatalf("Claim by s%d: %v", i, errs[i])
		}
		if got[i] > 0 {
			if winner >= 0 {
				t.Fatalf("both s%d and s%d claimed the dead node (%v): a claim must be exclusive", winner, i, got)
			}
			winner = i
		}
	}
	if winner < 0 || got[winner] != len(recs) {
		t.Fatalf("claims took %v records; want one claimer to take all %d", got, len(recs))
	}
	owner := "s" + strconv.Itoa(winner)
	orphans, err := nl.Orphans(bounded(t), owner)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(orphans, func(a, b bridge.ConnRecord) int { return strings.Compare(a.ID, b.ID) })
	if len(orphans) != len(recs) {
		t.Fatalf("Orphans(%s) = %v; want %v", owner, ids(orphans), ids(recs))
	}
	for i := range recs {
		if !sameRecord(orphans[i], recs[i]) {
			t.Errorf("orphan %d = %+v; want the record as written, %+v", i, orphans[i], recs[i])
		}
	}
	for i := range claimers {
		if o, _ := nl.Orphans(bounded(t), "s"+strconv.Itoa(i)); i != winner && len(o) > 0 {
			t.Errorf("s%d, which lost the claim, has orphans %v", i, ids(o))
		}
	}
	page, err := cs.Conns(bounded(t), bridge.ConnQuery{Limit: 100})
	if err != nil || !slices.Equal(ids(page.Conns), []string{"alive.1"}) {
		t.Errorf("after the claim, connections = %v, %v; want only alive.1", ids(page.Conns), err)
	}
	if ch, _ := cs.Channel(bounded(t), "lobby", 100); !slices.Equal(ch.Conns, []string{"alive.1"}) {
		t.Errorf("after the claim, lobby = %v; want [alive.1]", ch.Conns)
	}
	if silent, _ := nl.Silent(bounded(t), timeout); slices.Contains(silent, "dead") {
		t.Errorf("Silent after the claim = %v; the claimed node is still registered", silent)
	}

	// The dead node, back before its next beat, writes a claimed connection's record again (a
	// join it applied): the record must not come back, its close webhook is sent.
	put(t, cs, record("dead", "dead.1", "alice", "lobby", "late"))
	if _, ok, _ := cs.Conn(bounded(t), "dead.1"); ok {
		t.Error("a reaped node wrote a claimed connection's record back into the cluster state")
	}

	// The dead node comes back: it learns what was claimed, once.
	hb, err := nl.Beat(bounded(t), "dead")
	slices.Sort(hb.Reaped)
	if err != nil || !slices.Equal(hb.Reaped, ids(recs)) {
		t.Errorf("the reaped node's Beat = %+v, %v; want Reaped %v", hb, err, ids(recs))
	}
	if hb, _ := nl.Beat(bounded(t), "dead"); len(hb.Reaped) > 0 {
		t.Errorf("its next Beat still reports Reaped %v", hb.Reaped)
	}
	// Even after its beat, a write it had queued before closing a claimed connection, or its
	// re-upload, must not bring the record back: a second death would claim it again.
	put(t, cs, record("dead", "dead.3", "bob"))
	if err := cs.ReplaceNode(bounded(t), "dead", []bridge.ConnRecord{record("dead", "dead.2", ""), record("dead", "dead.9", "")}); err != nil {
		t.Fatal(err)
	}
	if page, _ := cs.Conns(bounded(t), bridge.ConnQuery{Limit: 100}); !slices.Equal(ids(page.Conns), []string{"alive.1", "dead.9"}) {
		t.Errorf("after the reaped node's late writes, connections = %v; want [alive.1 dead.9]: claimed ones stay gone", ids(page.Conns))
	}
	if err := cs.DeleteConn(bounded(t), "dead", "dead.9"); err != nil {
		t.Fatal(err)
	}

	if err := nl.Settle(bounded(t), owner, "dead.2"); err != nil {
		t.Fatal(err)
	}
	if o, _ := nl.Orphans(bounded(t), owner); len(o) != len(recs)-1 || slices.Contains(ids(o), "dead.2") {
		t.Errorf("after Settle(dead.2), orphans = %v", ids(o))
	}

	// The owner dies in turn before settling: its orphans go to whoever claims it.
	retry(t, owner+" silent", func() bool {
		silent, err := nl.Silent(bounded(t), timeout)
		return err == nil && slices.Contains(silent, owner)
	})
	if n, err := nl.Claim(bounded(t), owner, "heir", timeout); err != nil || n != len(recs)-1 {
		t.Errorf("Claim of the dead claimer = %d, %v; want its %d unsettled orphans", n, err, len(recs)-1)
	}
	if o, _ := nl.Orphans(bounded(t), "heir"); len(o) != len(recs)-1 {
		t.Errorf("the heir's orphans = %v; want the %d unsettled ones", ids(o), len(recs)-1)
	}
}

// nodeLivenessClaimOwnPreviousRun: a node restarting under its id claims its previous run's
// records unconditionally, and its own beat then reports nothing reaped.
func nodeLivenessClaimOwnPreviousRun(t *testing.T, c Cluster) {
	_, nl, cs := livenessOf(t, c, "n")
	if _, err := nl.Beat(bounded(t), "n"); err != nil {
		t.Fatal(err)
	}
	put(t, cs, record("n", "n.1", "alice", "lobby"))
	if n, err := nl.Claim(bounded(t), "n", "n", 0); err != nil || n != 1 {
		t.Fatalf("Claim(n, n, 0) = %d, %v; want 1", n, err)
	}
	if o, _ := nl.Orphans(bounded(t), "n"); !slices.Equal(ids(o), []string{"n.1"}) {
		t.Errorf("Orphans(n) = %v; want [n.1]", ids(o))
	}
	if hb, err := nl.Beat(bounded(t), "n"); err != nil || len(hb.Reaped) > 0 {
		t.Errorf("Beat after claiming its own run = %+v, %v; want nothing reaped", hb, err)
	}
}

// nodeLivenessLeave: a node leaving with no orphans is gone from the registry with its
// records; one with unsettled orphans stays registered.
func nodeLivenessLeave(t *testing.T, c Cluster) {
	_, nl, cs := livenessOf(t, c, "n")
	for _, n := range []string{"a", "b"} {
		if _, err := nl.Beat(bounded(t), n); err != nil {
			t.Fatal(err)
		}
	}
	put(t, cs, record("a", "a.1", "alice", "lobby"), record("b", "b.1", "bob"))
	if err := nl.Leave(bounded(t), "a"); err != nil {
		t.Fatalf("Leave(a): %v", err)
	}
	// Whether a node is registered shows in its next beat: Unknown means it was not.
	if hb, err := nl.Beat(bounded(t), "a"); err != nil || !hb.Unknown {
		t.Errorf("Beat(a) after Leave(a) = %+v, %v; want Unknown: a left the registry", hb, err)
	}
	if page, _ := cs.Conns(bounded(t), bridge.ConnQuery{Limit: 100}); !slices.Equal(ids(page.Conns), []string{"b.1"}) {
		t.Errorf("connections after Leave(a) = %v; want [b.1]", ids(page.Conns))
	}
	// b claims its own previous run, so it has an orphan: it must stay registered.
	if _, err := nl.Claim(bounded(t), "b", "b", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := nl.Beat(bounded(t), "b"); err != nil {
		t.Fatal(err)
	}
	if err := nl.Leave(bounded(t), "b"); err != nil {
		t.Fatal(err)
	}
	if hb, err := nl.Beat(bounded(t), "b"); err != nil || hb.Unknown {
		t.Errorf("Beat(b) after Leave(b) with an unsettled orphan = %+v, %v; b must stay registered for a survivor to claim", hb, err)
	}
}

// appPublisherHandsOverPayloads: bytes the application publishes to the engine reach every
// running node's handler unchanged, including bytes that are not JSON (the server refuses
// those, not the broker).
func appPublisherHandsOverPayloads(t *testing.T, c Cluster) {
	if c.AppPublish == nil {
		t.Skip("Cluster.AppPublish is nil: the broker under test takes no application publications")
	}
	type got struct {
		mu sync.Mutex
		p  []string
	}
	var nodes []*got
	for _, name := range []string{"a", "b"} {
		g := &got{}
		nodes = append(nodes, g)
		startWith(t, c, name, func(b bridge.Broker) {
			ap, ok := b.(bridge.AppPublisher)
			if !ok {
				t.Skipf("%T does not implement bridge.AppPublisher", b)
			}
			ap.OnAppPublish(func(p []byte) {
				g.mu.Lock()
				g.p = append(g.p, string(p))
				g.mu.Unlock()
			})
		})
	}
	seen := func(g *got, want string) bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return slices.Contains(g.p, want)
	}
	// A subscription may take a moment: probe until both have one, then publish for real.
	for i := 0; ; i++ {
		probe := fmt.Sprintf("probe %d", i)
		c.AppPublish(t, []byte(probe))
		if seen(nodes[0], probe) && seen(nodes[1], probe) {
			break
		}
		retryOnce(t, i)
	}
	const payload = `[{"to":{"all":true},"data":"hi"}]`
	c.AppPublish(t, []byte(payload))
	c.AppPublish(t, []byte("not json {"))
	for i, g := range nodes {
		retry(t, fmt.Sprintf("node %d: both payloads", i), func() bool { return seen(g, payload) && seen(g, "not json {") })
	}
}

// retryOnce waits probeEvery between the probes of a loop, failing it after waitLimit.
func retryOnce(t *testing.T, i int) {
	t.Helper()
	if time.Duration(i)*probeEvery > waitLimit {
		t.Fatalf("no probe arrived within %s", waitLimit)
	}
	<-time.After(probeEvery)
}
