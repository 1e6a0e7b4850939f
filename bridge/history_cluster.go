package bridge

// The seam by which a cluster broker keeps a channel's history and publishes it in one step.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
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

// publishCluster numbers, keeps, publishes and delivers p on this node when the store is the
// whole cluster's (HistoryPublisher). The channel's lock is not held across the store's round
// trip: this node's delivery of the publication waits until the ones before it, which other
// nodes made and the bus is still bringing, have been delivered here (sequencer), and one of
// them needs the lock. A recovery that reads the history meanwhile and so already has this
// publication filters it out (recovery.inFlight).
func (h *history) publishCluster(ctx context.Context, hb *hub, p *Publication, d Delivery, ch string) (int, *Position, bool, error) {
	at, published, err := h.appendPublished(ctx, hb, ch, Frame{Binary: d.Binary, Data: d.Data}, p)
	if err != nil {
		return 0, nil, false, fmt.Errorf("%w of channel %q: %w", errHistory, ch, err)
	}
	d.hist.channel, d.hist.pos = ch, at
	if !h.seq.wait(ch, at, hb) {
		// Another node's later publication was delivered first (this one's round trip was
		// slow): delivering it now would put it out of order. It is in the history.
		return 0, &at, published, nil
	}
	mu := &h.locks[channelLock(ch)]
	mu.Lock()
	defer mu.Unlock()
	n := hb.publishLocal(p.To, p.Except, d)
	h.seq.done(ch, at) // under the lock, with the delivery (delivered)
	return n, &at, published, nil
}

// sequencer puts a channel's positioned deliveries on this node in offset order when the
// offsets are the cluster's: the bus brings other nodes' publications in offset order, but
// this node's own are delivered by it without the bus, and can be ready before an earlier one
// of another node has arrived. A delivery waits for its predecessor, at most the broker's
// timeout (the bus is at-most-once: a lost envelope must not hold the channel for ever), and
// one whose successor has gone out already is dropped rather than delivered out of order.
type sequencer struct {
	mu   sync.Mutex
	cond *sync.Cond
	last map[string]seqMark // the newest position delivered per channel
	// prunedAt is len(last) after the last prune: marks older than seqKeep go when it doubles.
	prunedAt int
}

type seqMark struct {
	pos Position
	at  time.Time
}

// seqKeep is how long a channel's newest delivered position is remembered. A channel quiet for
// longer starts afresh: its next delivery waits for nothing.
const seqKeep = time.Minute

// seqWait bounds a wait when the broker has no timeout.
const seqWait = time.Second

func newSequencer() *sequencer {
	s := &sequencer{last: make(map[string]seqMark), prunedAt: 64}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// wait blocks until the delivery at p may go out: its predecessor was delivered here, the
// channel has no earlier mark in p's epoch, or the wait timed out. It reports false for a
// delivery that comes after its successor.
func (s *sequencer) wait(ch string, p Position, hb *hub) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var timer *time.Timer
	expired := false
	for {
		m, ok := s.last[ch]
		switch {
		case !ok || m.pos.Epoch != p.Epoch || m.pos.Offset+1 == p.Offset:
			return true
		case p.Offset <= m.pos.Offset:
			return false
		case expired:
			return true // the predecessor is lost to this node (or very late): go on
		}
		if timer == nil {
			limit := seqWait
			if bb, ok := hb.broker.(boundedBroker); ok && bb.timeout > 0 {
				limit = bb.timeout
			}
			timer = time.AfterFunc(limit, func() {
				s.mu.Lock()
				expired = true
				s.cond.Broadcast()
				s.mu.Unlock()
			})
			defer timer.Stop()
		}
		s.cond.Wait()
	}
}

// done records that the delivery at p went out, and wakes the waiting successors.
func (s *sequencer) done(ch string, p Position) {
	if s == nil {
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.last[ch]; !ok || m.pos.Epoch != p.Epoch || m.pos.Offset < p.Offset {
		s.last[ch] = seqMark{pos: p, at: now}
	}
	if len(s.last) >= 2*s.prunedAt {
		for c, m := range s.last {
			if now.Sub(m.at) > seqKeep {
				delete(s.last, c)
			}
		}
		s.prunedAt = max(len(s.last), 64)
	}
	s.cond.Broadcast()
}

// delivered returns where a client that joins ch on this node now stands: top, the store's
// newest, unless this node has delivered less of top's epoch so far, the rest being still on
// its way from other nodes; then the last position delivered here, so that the rest reaches
// the client live, after its join notice, and its position never moves back. Called under the
// channel's lock, under which done is called with each delivery. nil: top.
func (s *sequencer) delivered(ch string, top Position) Position {
	if s == nil {
		return top
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.last[ch]; ok && m.pos.Epoch == top.Epoch && m.pos.Offset < top.Offset {
		return m.pos
	}
	return top
}
