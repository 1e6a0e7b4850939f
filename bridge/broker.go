package bridge

import "context"

// Broker carries operations between the nodes of a cluster. A single node needs none of it: the
// hub always applies an operation to its own connections first and then hands it to the broker
// for the others. Implementations are at-most-once, like the pub/sub engines under them.
type Broker interface {
	// Publish hands e to every other node. It must not wait for slow nodes.
	Publish(ctx context.Context, e Envelope) error
	// Run joins the cluster as node and calls deliver for every envelope other nodes publish,
	// until ctx ends.
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

// Envelope is one operation sent between nodes. It is JSON-encodable for brokers that cross a
// network.
type Envelope struct {
	Origin      string        `json:"origin"`
	Op          Op            `json:"op"`
	Publication *Publication  `json:"publication,omitempty"`
	Targets     Targets       `json:"targets,omitempty"`
	Channel     string        `json:"channel,omitempty"`
	Close       *CloseRequest `json:"close,omitempty"`
}
