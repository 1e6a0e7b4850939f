package bridge

import (
	"context"
	"encoding/json"
	"time"
)

// This file holds what a cluster broker may do beyond Broker (broker.go): keep the cluster's
// connections where every node can query them, know which nodes are alive, hand a dead node's
// connections to exactly one survivor, and carry the application's own publications. Each is
// an optional interface found by type assertion, like NodeRegistry and BrokerHealth; the
// memory broker implements none of them, so a single node pays nothing for them.
// docs/cluster.md says what the server builds on them; bridge/brokertest checks them.

// ConnRecord is one connection as the cluster state holds it: what the API's queries answer
// for a connection on any node, and what the close webhook of a lost node's connection carries.
// Its JSON is the push API's connection object plus node, transport and lost_event_id.
type ConnRecord struct {
	ID          string          `json:"id"`
	Node        string          `json:"node"`
	Transport   string          `json:"transport"`
	UserID      string          `json:"user_id"`
	Channels    []string        `json:"channels"` // sorted, distinct
	Meta        json.RawMessage `json:"meta"`
	RemoteAddr  string          `json:"remote_addr"`
	Path        string          `json:"path"`
	Subprotocol string          `json:"subprotocol"`
	ConnectedAt time.Time       `json:"connected_at"`
	// MessagesIn and MessagesOut are as of the record's last write (a state change), not live:
	// writing per message would put the engine on every message's path.
	MessagesIn  uint64 `json:"messages_in"`
	MessagesOut uint64 `json:"messages_out"`
	// LostEventID is the event_id of the node_lost close webhook, chosen when the connection
	// opened, so that whichever survivor sends it, and however often it retries, PHP sees one
	// event id per connection.
	LostEventID string `json:"lost_event_id"`
}

// ConnQuery selects the records GET /v1/connections lists: those of User and/or Channel (both
// empty: every connection), sorted by id, at most Limit (MAX_LIST_RESULT) of them.
type ConnQuery struct {
	User, Channel string
	Limit         int
}

// ConnPage is a ConnQuery's answer: the first Limit records and how many matched in all.
type ConnPage struct {
	Conns []ConnRecord
	Total int
	// Missing lists the nodes that did not answer in time, for a broker that asks the nodes
	// rather than the engine; the answer is then partial and says so. Empty when complete.
	Missing []string
}

// ChannelPage is a channel's membership: its first Limit connection ids (sorted), its distinct
// users (sorted), and its connection count.
type ChannelPage struct {
	Conns   []string
	Users   []string
	Count   int
	Missing []string // as in ConnPage
}

// ClusterTotals counts the whole cluster for /v1/stats.
type ClusterTotals struct {
	Connections, Users, Channels int
	Missing                      []string // as in ConnPage
}

// ClusterState is implemented by brokers that keep every node's connections in the engine (or
// can ask the nodes for them). With it the push API's queries answer for the cluster. Each
// write changes one connection's record and its indexes atomically; the server writes from
// one goroutine per node, off the connections' readers, so the order of one connection's
// writes is kept. Every method must return once ctx ends.
type ClusterState interface {
	// PutConn records rec (rec.Node is the caller) or replaces its earlier record.
	PutConn(ctx context.Context, rec ConnRecord) error
	// DeleteConn removes the record of id if node still holds it (a survivor may have
	// claimed it: then nothing changes).
	DeleteConn(ctx context.Context, node, id string) error
	// ReplaceNode makes recs the whole of node's records: the re-upload after the engine lost
	// its state, or after writes were lost.
	ReplaceNode(ctx context.Context, node string, recs []ConnRecord) error
	// Conn returns the record of id; false if there is none.
	Conn(ctx context.Context, id string) (ConnRecord, bool, error)
	// Conns answers a ConnQuery.
	Conns(ctx context.Context, q ConnQuery) (ConnPage, error)
	// Channel returns a channel's members, at most limit connection ids.
	Channel(ctx context.Context, name string, limit int) (ChannelPage, error)
	// Totals counts connections, distinct users and non-empty channels of the cluster.
	Totals(ctx context.Context) (ClusterTotals, error)
}

// Heartbeat is what a node learns from its heartbeat.
type Heartbeat struct {
	// Unknown: the engine did not know the node (its first heartbeat, or an engine that lost
	// its state): the node re-uploads its records (ClusterState.ReplaceNode).
	Unknown bool
	// Reaped lists the node's connections that a survivor claimed while the node was silent:
	// their close webhooks have been sent, so the node closes them without one.
	Reaped []string
}

// NodeLiveness is implemented by brokers that keep a registry of nodes with heartbeats (the
// engine's clock decides who is silent) and can hand a dead node's connections to exactly one
// survivor. It needs ClusterState: the connections handed over are its records.
type NodeLiveness interface {
	NodeRegistry
	// Beat records that node is alive now and tells it what happened while it was silent.
	Beat(ctx context.Context, node string) (Heartbeat, error)
	// Silent returns the registered nodes not heard from for longer than timeout, sorted.
	Silent(ctx context.Context, timeout time.Duration) ([]string, error)
	// Claim makes claimer the owner of dead's records, atomically and only if dead is still
	// silent for longer than timeout (timeout 0: unconditionally, for a node taking over its
	// own previous run): dead leaves the registry, its records leave every index (queries no
	// longer list them) and become claimer's orphans, as do dead's own unsettled orphans, so
	// that nothing is lost if claimer dies in turn. Of concurrent claims of one node exactly
	// one gets anything; Claim reports how many records it took. Unless dead == claimer, the
	// ids claimed are kept for dead's next Beat (Heartbeat.Reaped).
	Claim(ctx context.Context, dead, claimer string, timeout time.Duration) (int, error)
	// Orphans returns the records node owes a close webhook for.
	Orphans(ctx context.Context, node string) ([]ConnRecord, error)
	// Settle drops one orphan once its close webhook was answered (or given up).
	Settle(ctx context.Context, node, id string) error
	// Leave takes node out of the registry at shutdown, with any records it still has; a node
	// with unsettled orphans stays registered so that a survivor claims them.
	Leave(ctx context.Context, node string) error
}

// AppPublisher is implemented by brokers that carry the application's own publications: PHP
// publishes the JSON of POST /v1/publish (one object, or a batch as an array) to the engine
// (Redis channel <prefix>:publish, NATS subject <prefix>.publish) and every node applies it
// to its own connections. The broker only hands the bytes over; the server decodes them as
// strictly as the API does, and a bad one is logged, counted and applied not at all.
type AppPublisher interface {
	// OnAppPublish sets the function Run calls with each such message's payload. The server
	// calls it before Run. fn never blocks; the payload is not used by the broker afterwards.
	OnAppPublish(fn func(payload []byte))
}
