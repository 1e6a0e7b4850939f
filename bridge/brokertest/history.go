package brokertest

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/wsbridge/wsbridge/bridge"
)

// history: a broker that implements bridge.History (docs/brokers.md, "History") numbers a
// channel's publications with one sequence for every node: a new channel has a record at
// offset 0, Appends from two nodes follow it with no gap, Read gives what came after a
// position, bounded, oldest first, and nothing of another epoch. A bridge.HistoryPublisher's
// AppendPublish reaches the other nodes with the position its entry got, and never its
// publisher. Skipped for brokers without History; Cluster.Node must give brokers that keep it.
func history(t *testing.T, c Cluster) {
	a, b := start(t, c, "h1"), start(t, c, "h2")
	ha, ok := a.broker.(bridge.History)
	if !ok {
		t.Skip("the broker does not implement bridge.History")
	}
	hb := b.broker.(bridge.History)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	const ch = "brokertest.history"
	es, top, err := hb.Read(ctx, ch, bridge.Position{}, 10)
	if err != nil || len(es) != 0 || top.Epoch == "" || top.Offset != 0 {
		t.Fatalf("Read of a new channel: %v at %+v (%v), want nothing at a new epoch, offset 0", es, top, err)
	}
	for i := 1; i <= 4; i++ {
		h := []bridge.History{ha, hb}[i%2]
		pos, err := h.Append(ctx, ch, bridge.Frame{Data: fmt.Appendf(nil, "m%d", i)})
		if err != nil || pos != (bridge.Position{Epoch: top.Epoch, Offset: uint64(i)}) {
			t.Fatalf("Append %d: %+v (%v), want %s:%d", i, pos, err, top.Epoch, i)
		}
	}
	es, top, err = ha.Read(ctx, ch, bridge.Position{Epoch: top.Epoch, Offset: 1}, 2)
	if err != nil || top.Offset != 4 || len(es) != 2 || es[0].Position.Offset != 2 || string(es[0].Frame.Data) != "m2" || es[1].Position.Offset != 3 {
		t.Fatalf("Read after 1, limit 2: %+v at %+v (%v), want m2, m3 of 4", es, top, err)
	}
	if es, _, err := ha.Read(ctx, ch, bridge.Position{Epoch: top.Epoch + "x"}, 10); err != nil || len(es) != 0 {
		t.Fatalf("Read of another epoch: %+v (%v), want nothing", es, err)
	}
	hp, ok := a.broker.(bridge.HistoryPublisher)
	if !ok {
		return
	}
	joined(t, a, b)
	data := "published"
	e := bridge.Envelope{Version: bridge.EnvelopeVersion, Origin: a.name, Op: bridge.OpPublish,
		Publication: &bridge.Publication{To: bridge.Targets{Channels: []string{ch}}, Data: &data}}
	pos, err := hp.AppendPublish(ctx, ch, bridge.Frame{Data: []byte(data)}, e)
	if err != nil || pos.Offset != 5 {
		t.Fatalf("AppendPublish: %+v (%v), want offset 5", pos, err)
	}
	b.waitFor(t, "the AppendPublish envelope", func(es []bridge.Envelope) bool {
		return slices.ContainsFunc(es, func(e bridge.Envelope) bool { return e.Position != nil })
	})
	for _, got := range b.received() {
		if got.Position != nil && (*got.Position != pos || got.Publication == nil || *got.Publication.Data != data) {
			t.Fatalf("received %+v at %v, want the publication at %+v", got.Publication, got.Position, pos)
		}
	}
	if slices.ContainsFunc(a.received(), func(e bridge.Envelope) bool { return e.Position != nil }) {
		t.Fatal("the publisher received its own AppendPublish envelope")
	}
}
