// Package natsbroker is the bridge.Broker of a cluster whose nodes meet on a NATS server
// (WSBRIDGE_BROKER=nats). Envelopes travel over core NATS, at most once, as the engine does:
//
//	<prefix>.envelopes   every node's envelopes, JSON; each node drops its own
//	<prefix>.publish     PHP's publications, the body of POST /v1/publish (one or a batch)
//
// and what must be shared lives in JetStream key-value buckets (dots of the prefix made
// underscores): <prefix>_nodes, the running nodes, whose bucket-wide TTL is
// WSBRIDGE_NODE_TIMEOUT (presence.go); <prefix>_conns, one record per connection (state.go);
// <prefix>_live and <prefix>_claims, the liveness registry, claims and orphans (liveness.go).
// nats-server 2.9 (Debian bookworm) has bucket TTL and revision CAS but neither per-key TTL,
// nor expiry events, nor multi-key transactions: registries are read by listing, never by
// watching for expiry, and every change is one key or made exclusive by one revision check.
//
// The client reconnects for ever and replays the subscriptions itself; Run re-registers the
// node as soon as it is back. Publishes while the server is unreachable fail at once (nothing
// is buffered to be sent late) and are counted, and Healthy reports the outage to /readyz.
// docs/cluster-nats.md is the operator's side of this.
package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsbridge/wsbridge/bridge"
)

// Options configures a Broker; zero fields take the documented defaults.
type Options struct {
	// URL is WSBRIDGE_NATS_URL: one server URL or a comma-separated list of them.
	URL string
	// Prefix is WSBRIDGE_CLUSTER_PREFIX (default "wsbridge"): the first token of every subject,
	// and, dots made underscores, the start of the registry bucket's name.
	Prefix string
	// NodeTimeout is WSBRIDGE_NODE_TIMEOUT (default 10s): a node whose heartbeat is older is
	// gone from the registry.
	NodeTimeout time.Duration
	// Log receives the connection's events (disconnects, reconnects, slow consumer, refused
	// messages). Default: slog.Default().
	Log *slog.Logger
}

// Subscription pending limits. deliver never blocks, so a backlog only builds when the node
// is starved of CPU; past these the client drops what arrives (counted, logged once per
// episode) instead of growing without bound or ever stalling the socket reader.
const (
	pendingMsgs  = 100_000
	pendingBytes = 64 << 20
)

// slowLogEvery spaces the slow-consumer log lines: the client reports every dropped burst.
const slowLogEvery = 10 * time.Second

// prefixPattern keeps the prefix a run of plain subject tokens: no wildcard, no space, and
// nothing that a bucket name (letters, digits, - and _) cannot hold once dots are underscores.
var prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

// Broker is a node's client of the NATS server. Make it with New; Close it after Run returns.
type Broker struct {
	nc          *nats.Conn
	js          jetstream.JetStream
	log         *slog.Logger
	envelopes   string // subject of the nodes' envelopes
	publishes   string // subject of PHP's publications
	nodeTimeout time.Duration
	metrics     *metrics

	// running counts Runs whose subscription is made: Healthy is false without one, so that
	// /readyz does not send browsers to a node that cannot receive yet.
	running atomic.Int32
	// slowLogged is when a slow consumer was last logged (unix ns).
	slowLogged atomic.Int64
	appFn      atomic.Pointer[func([]byte)]

	// reconnected wakes the heartbeat after a reconnect, so a node that was away (or whose
	// engine restarted, losing the registry) is listed again at once, not a beat later.
	reconnected chan struct{}

	// presence holds a key per running node (NodeRegistry); conns, live and claims the
	// cluster state (state.go).
	presence, conns, live, claims *bucket

	mu   sync.Mutex
	subs []*nats.Subscription // for the dropped-messages count
	// droppedClosed is what subscriptions closed since had dropped.
	droppedClosed int
}

var (
	_ bridge.Broker        = (*Broker)(nil)
	_ bridge.BrokerHealth  = (*Broker)(nil)
	_ bridge.NodeRegistry  = (*Broker)(nil)
	_ bridge.AppPublisher  = (*Broker)(nil)
	_ prometheus.Collector = (*Broker)(nil)
)

// New checks o and starts connecting. It does not wait for the server: an unreachable one is
// retried for ever in the background, and Healthy says so meanwhile.
func New(o Options) (*Broker, error) {
	if o.Prefix == "" {
		o.Prefix = "wsbridge"
	}
	if !prefixPattern.MatchString(o.Prefix) {
		return nil, fmt.Errorf("nats broker: prefix %q: use dot-separated tokens of letters, digits, - and _", o.Prefix)
	}
	if o.NodeTimeout <= 0 {
		o.NodeTimeout = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if strings.TrimSpace(o.URL) == "" {
		return nil, errors.New("nats broker: no server URL (WSBRIDGE_NATS_URL)")
	}
	b := &Broker{
		log:         o.Log.With("broker", "nats"),
		envelopes:   o.Prefix + ".envelopes",
		publishes:   o.Prefix + ".publish",
		nodeTimeout: o.NodeTimeout,
		metrics:     newMetrics(),
		reconnected: make(chan struct{}, 1),
	}
	// The buckets exist before the connection, whose reconnect handler forgets them; they get
	// their JetStream context once it is made, before New returns and anything opens them.
	name := strings.ReplaceAll(o.Prefix, ".", "_")
	b.presence = &bucket{cfg: jetstream.KeyValueConfig{Bucket: name + "_nodes", TTL: o.NodeTimeout, History: 1,
		Description: "wsbridge: one key per running node, put every third of WSBRIDGE_NODE_TIMEOUT",
		// Presence is worth nothing after a restart: memory, not disk.
		Storage: jetstream.MemoryStorage}}
	b.conns = &bucket{cfg: jetstream.KeyValueConfig{Bucket: name + "_conns", History: 1,
		Description: "wsbridge: one record per connection of the cluster"}}
	b.live = &bucket{cfg: jetstream.KeyValueConfig{Bucket: name + "_live", History: 1,
		Description: "wsbridge: the liveness registry, one key per node, its last beat on the server's clock"}}
	b.claims = &bucket{cfg: jetstream.KeyValueConfig{Bucket: name + "_claims", History: 1,
		Description: "wsbridge: orphans owed a node_lost close webhook, and reaped connections"}}
	nc, err := nats.Connect(o.URL,
		nats.Name("wsbridge"),
		// The defaults give up after 60 tries (about two minutes), leaving a node deaf to the
		// cluster for good; a sidecar waits for its engine however long it takes.
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250*time.Millisecond),
		// No reconnect buffer: a publication made while the server is away fails now, and the
		// caller answers 502, rather than reaching the nodes seconds late or not at all.
		nats.ReconnectBufSize(-1),
		// A dead TCP path (a partition, not a closed socket) is noticed within about 2×2 s.
		nats.PingInterval(2*time.Second),
		nats.MaxPingsOutstanding(2),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				return // Close: not a lost connection
			}
			b.metrics.disconnects.Inc()
			b.log.Warn("nats: disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			b.metrics.reconnects.Inc()
			b.log.Info("nats: reconnected", "server", c.ConnectedUrlRedacted())
			// The server may be a restarted one that lost the buckets. A write to a lost
			// bucket fails (no stream answers), but a read of one waits out its whole
			// deadline, so every bucket is opened (made, if need be) afresh on next use.
			for _, k := range []*bucket{b.presence, b.conns, b.live, b.claims} {
				k.forget()
			}
			select {
			case b.reconnected <- struct{}{}:
			default:
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { b.log.Debug("nats: connection closed") }),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subject := ""
			if s != nil {
				subject = s.Subject
			}
			if errors.Is(err, nats.ErrSlowConsumer) {
				// The client reports this for every burst it drops: logged at most once per
				// slowLogEvery, with the count so far (also wsbridge_nats_dropped_total).
				now := time.Now().UnixNano()
				if last := b.slowLogged.Load(); now-last >= int64(slowLogEvery) && b.slowLogged.CompareAndSwap(last, now) {
					var dropped int
					if s != nil {
						dropped, _ = s.Dropped()
					}
					b.log.Error("nats: slow consumer, messages dropped", "subject", subject, "dropped", dropped)
				}
				return
			}
			b.log.Error("nats: async error", "subject", subject, "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("nats broker: connect to %s: %w", o.URL, err)
	}
	b.nc = nc
	if b.js, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats broker: jetstream: %w", err)
	}
	for _, k := range []*bucket{b.presence, b.conns, b.live, b.claims} {
		k.js = b.js
	}
	return b, nil
}

// Close ends the connection. Call it after Run has returned.
func (b *Broker) Close() error {
	b.nc.Close()
	return nil
}

// Publish sends e to the other nodes. It fails at once while the server is unreachable.
func (b *Broker) Publish(ctx context.Context, e bridge.Envelope) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nats publish: %w", err)
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("nats publish: encode envelope: %w", err)
	}
	if !b.nc.IsConnected() {
		b.metrics.publishFailures.Inc()
		return fmt.Errorf("nats publish: not connected to the server (%s)", statusText(b.nc.Status()))
	}
	if err := b.nc.Publish(b.envelopes, data); err != nil {
		b.metrics.publishFailures.Inc()
		return fmt.Errorf("nats publish: %w", err)
	}
	return nil
}

// Run subscribes node to the envelopes and keeps it in the registry until ctx ends.
func (b *Broker) Run(ctx context.Context, node string, deliver func(bridge.Envelope)) error {
	sub, err := b.subscribe(b.envelopes, func(m *nats.Msg) {
		var e bridge.Envelope
		// Not strict: a newer node's envelope must be read far enough to be refused by its
		// version (docs/brokers.md).
		if err := json.Unmarshal(m.Data, &e); err != nil {
			b.metrics.undecodable.Inc()
			b.log.Error("nats: undecodable envelope dropped", "bytes", len(m.Data), "err", err)
			return
		}
		if e.Origin == node {
			return // its publisher applied it already
		}
		deliver(e)
	})
	if err != nil {
		return err
	}
	defer b.unsubscribe(sub)
	app, err := b.subscribe(b.publishes, func(m *nats.Msg) {
		if fn := b.appFn.Load(); fn != nil {
			(*fn)(m.Data)
		}
	})
	if err != nil {
		return err
	}
	defer b.unsubscribe(app)
	b.running.Add(1)
	defer b.running.Add(-1)
	b.heartbeat(ctx, node)
	// Gone from the registry now rather than NodeTimeout later. The context has ended, so
	// the delete gets a short one of its own.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if err := b.presence.do(dctx, func(kv jetstream.KeyValue) error { return kv.Delete(dctx, node) }); err != nil {
		b.log.Warn("nats: could not leave the node registry; it expires by itself", "node", node, "err", err)
	}
	return nil
}

// OnAppPublish sets what Run calls with the payload of each message PHP published on
// <prefix>.publish. Every node receives each one and the server applies it to its own
// connections; it decodes the payload as strictly as POST /v1/publish and refuses a bad one.
func (b *Broker) OnAppPublish(fn func(payload []byte)) { b.appFn.Store(&fn) }

func (b *Broker) subscribe(subject string, cb nats.MsgHandler) (*nats.Subscription, error) {
	// With RetryOnFailedConnect the subscription is recorded while the server is away and
	// sent once it is reached, like every subscription after a reconnect.
	sub, err := b.nc.Subscribe(subject, cb)
	if err != nil {
		return nil, fmt.Errorf("nats: subscribe %s: %w", subject, err)
	}
	if err := sub.SetPendingLimits(pendingMsgs, pendingBytes); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("nats: pending limits of %s: %w", subject, err)
	}
	b.mu.Lock()
	b.subs = append(b.subs, sub)
	b.mu.Unlock()
	return sub, nil
}

func (b *Broker) unsubscribe(sub *nats.Subscription) {
	b.mu.Lock()
	// Its drops stay counted after it: the counter must not go down.
	if n, err := sub.Dropped(); err == nil {
		b.droppedClosed += n
	}
	b.subs = slices.DeleteFunc(b.subs, func(s *nats.Subscription) bool { return s == sub })
	b.mu.Unlock()
	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		b.log.Warn("nats: unsubscribe", "subject", sub.Subject, "err", err)
	}
}

// Healthy reports whether Run has subscribed and the server answers a round trip now (which
// also means the server has that subscription).
func (b *Broker) Healthy(ctx context.Context) error {
	if b.running.Load() == 0 {
		return errors.New("nats: not joined to the cluster yet (Run has not subscribed)")
	}
	if !b.nc.IsConnected() {
		return fmt.Errorf("nats: not connected to the server (%s)", statusText(b.nc.Status()))
	}
	if err := b.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("nats: no answer from the server: %w", err)
	}
	return nil
}

func statusText(s nats.Status) string {
	switch s {
	case nats.RECONNECTING:
		return "reconnecting"
	case nats.CLOSED:
		return "closed"
	default:
		return s.String()
	}
}
