package bridge

// The seam by which a cluster broker keeps a channel's history and publishes it in one step.

import (
	"context"
	"errors"
	"fmt"
)

// HistoryPublisher is a History that can keep a publication and hand its envelope to the other
// nodes in one atomic step (the Redis broker: one script that appends to the channel's stream
// and publishes on the bus). A broker that keeps the cluster's history should implement it:
// with Append and Broker.Publish apart, two nodes publishing to one channel could put offsets
// 5 and 6 on the bus as 6, 5, and a third node would deliver them out of order; and a node
// that fails between the two would keep a publication no other node ever delivers.
type HistoryPublisher interface {
	History
	// AppendPublish keeps f as channel's next publication, as Append does, and publishes e
	// to every other node with e.Position set to that position, as Broker.Publish does, both
	// or neither. Envelopes of one channel reach every node in offset order. e.Position is
	// nil when called.
	AppendPublish(ctx context.Context, channel string, f Frame, e Envelope) (Position, error)
}

// appendPublished keeps f as ch's next publication and, when the store can (HistoryPublisher),
// publishes p's envelope with it: published says so, and hub.Publish then publishes nothing
// more. The envelope is stamped and bounded as boundedBroker does for Publish, because it
// replaces that call.
func (h *history) appendPublished(ctx context.Context, hb *hub, ch string, f Frame, p *Publication) (pos Position, published bool, err error) {
	hp, ok := h.store.(HistoryPublisher)
	if !ok {
		pos, err = h.store.Append(ctx, ch, f)
		return pos, false, err
	}
	if bb, ok := hb.broker.(boundedBroker); ok && bb.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, bb.timeout)
		defer cancel()
		defer func() {
			if err != nil && errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("no answer within WSBRIDGE_BROKER_TIMEOUT (%s): %w", bb.timeout, err)
			}
		}()
	}
	pos, err = hp.AppendPublish(ctx, ch, f, Envelope{Version: EnvelopeVersion, Origin: hb.node, Op: OpPublish, Publication: p})
	return pos, err == nil, err
}

// inFlight returns what a recovery must still filter once live: with a store of the whole
// cluster (HistoryPublisher), a publication another node made can be in the history the
// recovery read, and so already with the client, while its envelope is still on its way to
// this node; delivered then, it would reach the client twice. The bus brings a channel's
// publications in offset order, so the first one beyond the position read ends that channel's
// filter. With the memory store every publication is numbered and delivered under the
// channel's lock, which the recovery held: nothing is in flight.
func (rc *recovery) inFlight(tops map[string]Position) map[string]Position {
	if _, cluster := rc.srv.hub.history.store.(HistoryPublisher); !cluster {
		return nil
	}
	after := make(map[string]Position, len(tops))
	for ch, top := range tops {
		if top.Epoch != "" && top.Offset > 0 {
			after[ch] = top
		}
	}
	return after
}

// pass says whether a live delivery goes to the client (not one it has from the history), and
// whether the recovery's filter is done with it. rc.mu is held.
func (rc *recovery) pass(d Delivery) (send, done bool) {
	if len(rc.after) == 0 || d.hist == nil || d.hist.pos.Epoch == "" {
		return true, false
	}
	top, in := rc.after[d.hist.channel]
	if !in {
		return true, false
	}
	if top.Epoch == d.hist.pos.Epoch && d.hist.pos.Offset <= top.Offset {
		return false, false
	}
	delete(rc.after, d.hist.channel)
	return true, len(rc.after) == 0
}

// kind is the transport's, for the connection's record (recordOf) while the recovery stands in.
func (rc *recovery) kind() string { return rc.t.kind() }
