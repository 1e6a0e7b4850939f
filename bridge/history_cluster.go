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
