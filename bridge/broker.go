package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Broker carries operations between the nodes of a cluster. A single node needs none of it: the
// hub always applies an operation to its own connections first and then hands it to the broker
// for the others. Implementations are at-most-once, like the pub/sub engines under them.
//
// Broker is all a broker must do. What only some brokers can (a registry of nodes, readiness)
// is an optional interface, defined next to the code that uses it and found by type assertion:
// NodeRegistry and BrokerHealth, both in push.go. bridge/brokertest is the conformance suite every
// broker passes; docs/brokers.md says what it checks.
type Broker interface {
	// Publish hands e to every other node, never back to e.Origin: the publishing node has
	// applied e to its own connections already. It must not wait for slow nodes and must
	// return once ctx ends (with an error wrapping ctx.Err()); it is called on a connection's
	// reader and from the push API, under a deadline of WSBRIDGE_BROKER_TIMEOUT. Envelopes of
	// one origin reach each node in the order they were published.
	Publish(ctx context.Context, e Envelope) error
	// Run joins the cluster as node and calls deliver for every envelope other nodes publish,
	// until ctx ends; it then returns promptly, with nil or ctx.Err(). deliver never blocks and
	// may be called from several goroutines. A broker whose engine goes away keeps running and
	// reconnects; Run returns earlier only when it gives up, with the reason, and the server
	// then stops with that error.
	Run(ctx context.Context, node string, deliver func(Envelope)) error
}

// Op is what an envelope asks the receiving nodes to do.
type Op string

const (
	OpPublish Op = "publish" // deliver Publication
	OpClose   Op = "close"   // close Targets with Close
	OpJoin    Op = "join"    // make Targets join Channel
	OpLeave   Op = "leave"   // make Targets leave Channel
)

// EnvelopeVersion is the version of the envelopes this build publishes and the newest it
// applies. A change that an older node would misread (a new Op, a field whose absence changes
// the meaning) raises it; a node then refuses the newer envelopes rather than half-applying
// them, so that during a rolling upgrade old and new nodes each apply what they understand.
// Adding a field old nodes may ignore does not raise it. The build that introduces version N
// still reads versions oldestEnvelopeVersion to N, so old and new nodes can run side by side.
// An envelope is stamped with the oldest version that has what it carries (envelopeVersion),
// not the newest: an old node refuses only what it cannot apply. Version 2 added opPusher
// (pushercluster.go).
const EnvelopeVersion = 2

// oldestEnvelopeVersion is the oldest version this build still applies.
const oldestEnvelopeVersion = 1

// Envelope is one operation sent between nodes. It is JSON-encodable for brokers that cross a
// network; decode it with encoding/json without DisallowUnknownFields, so that a newer
// envelope is read far enough to be refused by its version.
type Envelope struct {
	// Version is the envelope format (EnvelopeVersion); the server sets it on publishing.
	Version     int           `json:"v"`
	Origin      string        `json:"origin"`
	Op          Op            `json:"op"`
	Publication *Publication  `json:"publication,omitempty"`
	Targets     Targets       `json:"targets,omitempty"`
	Channel     string        `json:"channel,omitempty"`
	Close       *CloseRequest `json:"close,omitempty"`
	// Position is the publication's position in its channel's history, given by the
	// publishing node (history.go); nodes that do not keep history ignore it.
	Position *Position `json:"position,omitempty"`
	// Frame is a Pusher protocol message for the Pusher subscribers of Channel, except the
	// connection Except (opPusher, pushercluster.go).
	Frame  json.RawMessage `json:"frame,omitempty"`
	Except string          `json:"except,omitempty"`
}

// ErrEnvelopeVersion marks an envelope refused for its version (see Envelope.check).
var ErrEnvelopeVersion = errors.New("unknown envelope version")

// check reports why a received envelope cannot be applied, before any of it is: a version this
// build does not know, an unknown op, or an op without its operand.
func (e *Envelope) check() error {
	switch {
	case e.Version > EnvelopeVersion:
		return fmt.Errorf("%w %d from node %q: this node knows versions %d to %d; upgrade it", ErrEnvelopeVersion, e.Version, e.Origin, oldestEnvelopeVersion, EnvelopeVersion)
	case e.Version < oldestEnvelopeVersion:
		return fmt.Errorf("%w %d from node %q: older than this node reads (%d), or not set by a wsbridge node", ErrEnvelopeVersion, e.Version, e.Origin, oldestEnvelopeVersion)
	}
	switch e.Op {
	case OpPublish:
		if e.Publication == nil {
			return errors.New("publish envelope without publication")
		}
	case OpClose:
		if e.Close == nil {
			return errors.New("close envelope without close request")
		}
	case OpJoin, OpLeave:
		if e.Channel == "" {
			return fmt.Errorf("%s envelope without channel", e.Op)
		}
	case opPusher:
		if e.Channel == "" || len(e.Frame) == 0 {
			return errors.New("pusher envelope without channel or frame")
		}
	case opPresence:
		if len(e.Frame) == 0 {
			return errors.New("presence envelope without frame")
		}
	default:
		return fmt.Errorf("unknown op %q", e.Op)
	}
	return nil
}

// boundedBroker is the broker as the hub sees it: every Publish is stamped with the envelope
// version and bounded by WSBRIDGE_BROKER_TIMEOUT, so a slow or unreachable broker holds a
// connection's reader, or a push API request, at most that long. timeout 0 adds no deadline:
// for the MemoryBroker, which never waits, a timer per publication would be pure cost.
type boundedBroker struct {
	Broker
	timeout time.Duration
}

func (b boundedBroker) Publish(ctx context.Context, e Envelope) error {
	e.Version = envelopeVersion(e.Op)
	if b.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.timeout)
		defer cancel()
	}
	err := b.Broker.Publish(ctx, e)
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("broker publish: no answer within WSBRIDGE_BROKER_TIMEOUT (%s): %w", b.timeout, err)
	}
	if err != nil {
		return fmt.Errorf("broker publish: %w", err)
	}
	return nil
}
