// Package redisbroker is the bridge.Broker of a cluster whose nodes share one Redis: envelopes
// go through Redis pub/sub, the cluster's connections and nodes are Redis keys changed by Lua
// scripts, and PHP may PUBLISH to <prefix>:publish. It implements every optional interface of
// bridge/cluster.go, BrokerHealth, and prometheus.Collector for its own series.
//
// Every envelope goes to every node on one channel, <prefix>:bus, and each node applies it to
// its own connections: exact, and cheap up to tens of nodes (docs/benchmarks.md). Pub/sub is
// at-most-once: what is published while a node's subscription is down is lost to it, and
// counted when the broker notices (a resubscription, a self-addressed ping that did not come
// back).
package redisbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/wsbridge/wsbridge/bridge"
)

// Options configure a Broker. URL is required; the rest have defaults.
type Options struct {
	// URL is WSBRIDGE_REDIS_URL: redis://, rediss:// or unix:// as redis.ParseURL reads it,
	// or a redis:// URL with ?master_name= for Sentinel (redis.ParseFailoverURL).
	URL string
	// Prefix is WSBRIDGE_CLUSTER_PREFIX, of every key and channel (default "wsbridge").
	Prefix string
	// Queue bounds the envelopes received but not yet handed to the node (default 8192):
	// the goroutine that reads from Redis never waits for the node, so that Redis never
	// sees a slow subscriber; beyond it envelopes are dropped and counted.
	Queue int
	// PingEvery is how often the broker publishes a ping to itself through the bus (default
	// 1s). One that has not come back within StaleAfter (default 5 pings) means the
	// subscription is stale although the connection looks alive (a failover that kept the
	// socket, Centrifugo issue #1189): the broker subscribes afresh and reports unhealthy
	// until a ping comes back.
	PingEvery, StaleAfter time.Duration
	// HistorySize and HistoryTTL are WSBRIDGE_HISTORY_SIZE and _TTL: with a size, the broker
	// keeps the cluster's channel history (history.go); without, its Append and Read fail.
	HistorySize int
	HistoryTTL  time.Duration
	Log         *slog.Logger
}

// Broker is a Redis cluster broker. Build it with New; it is safe for concurrent use.
type Broker struct {
	rdb    redis.UniversalClient
	prefix string
	bus    string // P:bus, the envelopes
	app    string // P:publish, the application's publications
	opts   Options
	log    *slog.Logger

	appFn atomic.Pointer[func([]byte)]
	node  atomic.Pointer[string] // set by Run
	// lastPing is when Redis last confirmed the subscription or a ping of this node came
	// back through the bus (unix ns); 0 before the first.
	lastPing atomic.Int64
	running  atomic.Bool

	dropped, resubscribed, stale, received prometheus.Counter
}

var (
	_ bridge.Broker        = (*Broker)(nil)
	_ bridge.BrokerHealth  = (*Broker)(nil)
	_ bridge.ClusterState  = (*Broker)(nil)
	_ bridge.NodeLiveness  = (*Broker)(nil)
	_ bridge.AppPublisher  = (*Broker)(nil)
	_ prometheus.Collector = (*Broker)(nil)
)

// New returns a broker for opts. It does not connect: Run does, and keeps reconnecting.
func New(opts Options) (*Broker, error) {
	rdb, err := client(opts.URL)
	if err != nil {
		return nil, err
	}
	if opts.Prefix == "" {
		opts.Prefix = "wsbridge"
	}
	if opts.Queue <= 0 {
		opts.Queue = 8192
	}
	if opts.PingEvery <= 0 {
		opts.PingEvery = time.Second
	}
	if opts.StaleAfter <= 0 {
		opts.StaleAfter = 5 * opts.PingEvery
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	// go-redis's logger is global: the first broker's logger gets its lines.
	setLogger.Do(func() { redis.SetLogger(quietLogger{opts.Log.With("broker", "redis")}) })
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"broker": "redis"}})
	}
	return &Broker{rdb: rdb, prefix: opts.Prefix, bus: opts.Prefix + ":bus", app: opts.Prefix + ":publish", opts: opts,
		log:          opts.Log.With("broker", "redis"),
		dropped:      counter("wsbridge_broker_dropped_total", "Envelopes and application publications received from the engine but dropped because this node's queue was full."),
		resubscribed: counter("wsbridge_broker_resubscribes_total", "Times the subscription was made again after the connection to the engine was lost; what was published meanwhile was lost to this node."),
		stale:        counter("wsbridge_broker_stale_total", "Times a self-addressed ping did not come back through the engine in time, and the subscription was made afresh."),
		received:     counter("wsbridge_broker_received_total", "Envelopes and application publications received from the engine."),
	}, nil
}

// client builds the go-redis client a URL names: Sentinel when it has master_name.
func client(raw string) (redis.UniversalClient, error) {
	if raw == "" {
		return nil, errors.New("redis broker: no URL (WSBRIDGE_REDIS_URL)")
	}
	if strings.Contains(raw, "master_name=") {
		o, err := redis.ParseFailoverURL(raw)
		if err != nil {
			return nil, fmt.Errorf("redis broker: WSBRIDGE_REDIS_URL: %w", err)
		}
		return redis.NewFailoverClient(o), nil
	}
	o, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("redis broker: WSBRIDGE_REDIS_URL: %w", err)
	}
	return redis.NewClient(o), nil
}

// Close closes the client. Call it after Run has returned.
func (b *Broker) Close() error { return b.rdb.Close() }

// Message kinds on P:bus. A message is "<kind> <origin> <payload>", so that a node skips its
// own envelopes, and reads the pings meant for it, without decoding JSON.
const (
	kindEnvelope = 'e'
	kindPing     = 'p'
)

// Publish sends e to every node on P:bus.
func (b *Broker) Publish(ctx context.Context, e bridge.Envelope) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redis broker: %w", err)
	}
	payload, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("redis broker: encode envelope: %w", err)
	}
	msg := make([]byte, 0, len(payload)+len(e.Origin)+3)
	msg = append(msg, kindEnvelope, ' ')
	msg = append(msg, e.Origin...)
	msg = append(msg, ' ')
	msg = append(msg, payload...)
	if err := b.rdb.Publish(ctx, b.bus, msg).Err(); err != nil {
		return fmt.Errorf("redis broker: publish: %w", err)
	}
	return nil
}

// OnAppPublish sets what Run calls with each payload published to P:publish.
func (b *Broker) OnAppPublish(fn func([]byte)) { b.appFn.Store(&fn) }

// Run subscribes to P:bus and P:publish and hands what arrives to deliver (and to the
// OnAppPublish function) until ctx ends. The goroutine that reads from Redis only queues; a
// second one decodes and delivers. go-redis reconnects and resubscribes by itself after an
// error; a ping of its own that does not come back makes Run subscribe afresh.
func (b *Broker) Run(ctx context.Context, node string, deliver func(bridge.Envelope)) error {
	if !b.running.CompareAndSwap(false, true) {
		return errors.New("redis broker: Run called twice")
	}
	defer b.running.Store(false)
	b.node.Store(&node)
	queue := make(chan *redis.Message, b.opts.Queue)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { b.handle(ctx, node, queue, deliver) })
	wg.Go(func() { b.ping(ctx, node) })
	for ctx.Err() == nil {
		b.subscribe(ctx, node, queue)
	}
	return nil
}

// subscribe holds one subscription until ctx ends or it is found stale.
func (b *Broker) subscribe(ctx context.Context, node string, queue chan<- *redis.Message) {
	ps := b.rdb.Subscribe(ctx, b.bus, b.app)
	defer ps.Close()
	// Receive is not cut short by ctx once it is reading: closing the PubSub is what ends it.
	sub, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		watch := time.NewTicker(b.opts.PingEvery)
		defer watch.Stop()
		started := time.Now()
		for {
			select {
			case <-sub.Done():
				ps.Close()
				return
			case <-watch.C:
				last := time.Unix(0, b.lastPing.Load())
				if last.Before(started) {
					last = started
				}
				if time.Since(last) > b.opts.StaleAfter {
					b.stale.Inc()
					b.log.Warn("redis broker: no ping came back through the bus; subscribing afresh", "node", node, "silent", time.Since(last).Round(time.Millisecond).String())
					cancel()
				}
			}
		}
	}()
	subscribed := 0
	for sub.Err() == nil {
		msg, err := ps.Receive(sub)
		if err != nil {
			if sub.Err() != nil {
				return
			}
			// go-redis reconnects on the next Receive; wait a little so that an engine that
			// is down is not asked in a tight loop.
			b.log.Debug("redis broker: receive", "err", err)
			select {
			case <-sub.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				// Redis confirmed the subscription: it is live from here until pings stop
				// coming back.
				b.lastPing.Store(time.Now().UnixNano())
				subscribed++
				// Two channels per subscription: beyond the first two confirmations, go-redis
				// has reconnected and subscribed again.
				if subscribed > 2 && subscribed%2 == 1 {
					b.resubscribed.Inc()
					b.log.Warn("redis broker: subscribed again after losing the connection; what was published meanwhile is lost to this node", "node", node)
				}
			}
		case *redis.Message:
			select {
			case queue <- m:
			default:
				b.dropped.Inc()
			}
		}
	}
}

// handle decodes and delivers what subscribe queued.
func (b *Broker) handle(ctx context.Context, node string, queue <-chan *redis.Message, deliver func(bridge.Envelope)) {
	for {
		var m *redis.Message
		select {
		case <-ctx.Done():
			return
		case m = <-queue:
		}
		b.received.Inc()
		if m.Channel == b.app {
			if fn := b.appFn.Load(); fn != nil {
				(*fn)([]byte(m.Payload))
			}
			continue
		}
		kind, rest, ok1 := strings.Cut(m.Payload, " ")
		origin, payload, ok2 := strings.Cut(rest, " ")
		if !ok1 || !ok2 || len(kind) != 1 {
			b.log.Error("redis broker: malformed bus message dropped", "len", len(m.Payload))
			continue
		}
		switch kind[0] {
		case kindPing:
			if origin == node {
				b.lastPing.Store(time.Now().UnixNano())
			}
		case kindEnvelope:
			if origin == node {
				continue // applied locally by its publisher
			}
			var e bridge.Envelope
			if err := json.Unmarshal([]byte(payload), &e); err != nil {
				b.log.Error("redis broker: undecodable envelope dropped", "origin", origin, "err", err)
				continue
			}
			deliver(e)
		}
	}
}

// ping publishes a ping to this node through the bus every PingEvery.
func (b *Broker) ping(ctx context.Context, node string) {
	t := time.NewTicker(b.opts.PingEvery)
	defer t.Stop()
	msg := string(kindPing) + " " + node + " ."
	ttl := strconv.FormatInt(b.opts.StaleAfter.Milliseconds(), 10)
	defer func() {
		// Run ended: the node is no longer present (a node killed expires after StaleAfter).
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.opts.PingEvery)
		b.rdb.ZRem(lctx, b.prefix+":running", node)
		cancel()
	}()
	for {
		pctx, cancel := context.WithTimeout(ctx, b.opts.PingEvery)
		b.rdb.Publish(pctx, b.bus, msg) // an error shows as a ping that did not come back
		b.run(pctx, presentScript, node, ttl)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Healthy reports nil when Redis answers a PING and this node's own ping came back through
// the bus lately (while Run runs).
func (b *Broker) Healthy(ctx context.Context) error {
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis broker: %w", err)
	}
	if b.running.Load() {
		last := b.lastPing.Load()
		if last == 0 {
			return errors.New("redis broker: subscribing: Redis has not confirmed the subscription yet")
		}
		if since := time.Since(time.Unix(0, last)); since > b.opts.StaleAfter {
			return fmt.Errorf("redis broker: subscription stale: no ping came back through the bus for %s", since.Round(time.Millisecond))
		}
	}
	return nil
}

// Describe and Collect make the broker's counters part of the server's /metrics.
func (b *Broker) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range b.counters() {
		c.Describe(ch)
	}
}

func (b *Broker) Collect(ch chan<- prometheus.Metric) {
	for _, c := range b.counters() {
		c.Collect(ch)
	}
}

func (b *Broker) counters() []prometheus.Counter {
	return []prometheus.Counter{b.dropped, b.resubscribed, b.stale, b.received}
}

func (b *Broker) run(ctx context.Context, s *redis.Script, args ...any) *redis.Cmd {
	return s.Run(ctx, b.rdb, nil, append([]any{b.prefix}, args...)...)
}

// PutConn records rec.
func (b *Broker) PutConn(ctx context.Context, rec bridge.ConnRecord) error {
	js, err := encodeRecord(rec)
	if err != nil {
		return err
	}
	if err := b.run(ctx, putScript, rec.ID, rec.Node, js).Err(); err != nil {
		return fmt.Errorf("redis broker: record connection: %w", err)
	}
	return nil
}

func encodeRecord(rec bridge.ConnRecord) (string, error) {
	if rec.Channels == nil {
		rec.Channels = []string{}
	}
	js, err := json.Marshal(rec)
	if err != nil {
		return "", fmt.Errorf("redis broker: encode record: %w", err)
	}
	return string(js), nil
}

// DeleteConn removes id's record if node holds it.
func (b *Broker) DeleteConn(ctx context.Context, node, id string) error {
	if err := b.run(ctx, deleteScript, id, node).Err(); err != nil {
		return fmt.Errorf("redis broker: delete connection: %w", err)
	}
	return nil
}

// ReplaceNode makes recs node's whole state, in one script.
func (b *Broker) ReplaceNode(ctx context.Context, node string, recs []bridge.ConnRecord) error {
	args := make([]any, 0, 1+2*len(recs))
	args = append(args, node)
	for _, r := range recs {
		js, err := encodeRecord(r)
		if err != nil {
			return err
		}
		args = append(args, r.ID, js)
	}
	if err := b.run(ctx, replaceScript, args...).Err(); err != nil {
		return fmt.Errorf("redis broker: upload node state: %w", err)
	}
	return nil
}

// Conn returns id's record.
func (b *Broker) Conn(ctx context.Context, id string) (bridge.ConnRecord, bool, error) {
	js, err := b.rdb.HGet(ctx, b.prefix+":conns", id).Result()
	if errors.Is(err, redis.Nil) {
		return bridge.ConnRecord{}, false, nil
	}
	if err != nil {
		return bridge.ConnRecord{}, false, fmt.Errorf("redis broker: read connection: %w", err)
	}
	var rec bridge.ConnRecord
	if err := json.Unmarshal([]byte(js), &rec); err != nil {
		return bridge.ConnRecord{}, false, fmt.Errorf("redis broker: decode record of %s: %w", id, err)
	}
	return rec, true, nil
}

// Conns reads the ids from the index the query names, sorts them, and reads the records of
// the first Limit.
func (b *Broker) Conns(ctx context.Context, q bridge.ConnQuery) (bridge.ConnPage, error) {
	var ids []string
	var err error
	switch {
	case q.User != "" && q.Channel != "":
		ids, err = b.rdb.SInter(ctx, b.prefix+":user:"+q.User, b.prefix+":chan:"+q.Channel).Result()
	case q.User != "":
		ids, err = b.rdb.SMembers(ctx, b.prefix+":user:"+q.User).Result()
	case q.Channel != "":
		ids, err = b.rdb.SMembers(ctx, b.prefix+":chan:"+q.Channel).Result()
	default:
		ids, err = b.rdb.HKeys(ctx, b.prefix+":conns").Result()
	}
	if err != nil {
		return bridge.ConnPage{}, fmt.Errorf("redis broker: list connections: %w", err)
	}
	slices.Sort(ids)
	page := bridge.ConnPage{Total: len(ids), Conns: []bridge.ConnRecord{}}
	ids = ids[:min(len(ids), max(q.Limit, 0))]
	if len(ids) == 0 {
		return page, nil
	}
	recs, err := b.records(ctx, ids)
	if err != nil {
		return bridge.ConnPage{}, err
	}
	page.Conns = recs
	return page, nil
}

// records reads the records of ids; one deleted between the index and this read is left out.
func (b *Broker) records(ctx context.Context, ids []string) ([]bridge.ConnRecord, error) {
	vals, err := b.rdb.HMGet(ctx, b.prefix+":conns", ids...).Result()
	if err != nil {
		return nil, fmt.Errorf("redis broker: read connections: %w", err)
	}
	out := make([]bridge.ConnRecord, 0, len(vals))
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var rec bridge.ConnRecord
		if err := json.Unmarshal([]byte(s), &rec); err != nil {
			return nil, fmt.Errorf("redis broker: decode record of %s: %w", ids[i], err)
		}
		out = append(out, rec)
	}
	return out, nil
}

// Channel lists a channel's members; its distinct users come from every member's record.
func (b *Broker) Channel(ctx context.Context, name string, limit int) (bridge.ChannelPage, error) {
	ids, err := b.rdb.SMembers(ctx, b.prefix+":chan:"+name).Result()
	if err != nil {
		return bridge.ChannelPage{}, fmt.Errorf("redis broker: list channel: %w", err)
	}
	slices.Sort(ids)
	page := bridge.ChannelPage{Count: len(ids), Conns: ids[:min(len(ids), max(limit, 0))], Users: []string{}}
	if len(ids) == 0 {
		return page, nil
	}
	recs, err := b.records(ctx, ids)
	if err != nil {
		return bridge.ChannelPage{}, err
	}
	for _, r := range recs {
		if r.UserID != "" {
			page.Users = append(page.Users, r.UserID)
		}
	}
	slices.Sort(page.Users)
	page.Users = slices.Compact(page.Users)
	return page, nil
}

// Totals counts the cluster in one round trip.
func (b *Broker) Totals(ctx context.Context) (bridge.ClusterTotals, error) {
	pipe := b.rdb.Pipeline()
	conns := pipe.HLen(ctx, b.prefix+":conns")
	users := pipe.HLen(ctx, b.prefix+":users")
	chans := pipe.HLen(ctx, b.prefix+":chans")
	if _, err := pipe.Exec(ctx); err != nil {
		return bridge.ClusterTotals{}, fmt.Errorf("redis broker: count: %w", err)
	}
	return bridge.ClusterTotals{Connections: int(conns.Val()), Users: int(users.Val()), Channels: int(chans.Val())}, nil
}

// Nodes lists the nodes whose Run is present (it refreshes its presence with every ping),
// sorted. The liveness registry (Beat, Silent) is apart: it is the server's, and says who owes
// whom close webhooks.
func (b *Broker) Nodes(ctx context.Context) ([]string, error) {
	nodes, err := b.run(ctx, runningScript).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("redis broker: list nodes: %w", err)
	}
	slices.Sort(nodes)
	return nodes, nil
}

// Beat registers node now, on the Redis server's clock.
func (b *Broker) Beat(ctx context.Context, node string) (bridge.Heartbeat, error) {
	res, err := b.run(ctx, beatScript, node).Slice()
	if err != nil {
		return bridge.Heartbeat{}, fmt.Errorf("redis broker: heartbeat: %w", err)
	}
	var hb bridge.Heartbeat
	if len(res) == 2 {
		known, _ := res[0].(int64)
		hb.Unknown = known == 0
		if ids, ok := res[1].([]any); ok {
			for _, id := range ids {
				if s, ok := id.(string); ok {
					hb.Reaped = append(hb.Reaped, s)
				}
			}
		}
	}
	return hb, nil
}

// Silent lists the nodes whose last beat is older than timeout on the Redis server's clock.
func (b *Broker) Silent(ctx context.Context, timeout time.Duration) ([]string, error) {
	nodes, err := b.run(ctx, silentScript, timeout.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("redis broker: silent nodes: %w", err)
	}
	slices.Sort(nodes)
	return nodes, nil
}

// Claim takes dead's records for claimer in one script.
func (b *Broker) Claim(ctx context.Context, dead, claimer string, timeout time.Duration) (int, error) {
	ms := timeout.Milliseconds()
	if timeout > 0 && ms == 0 {
		ms = 1
	}
	n, err := b.run(ctx, claimScript, dead, claimer, strconv.FormatInt(ms, 10)).Int()
	if err != nil {
		return 0, fmt.Errorf("redis broker: claim node %s: %w", dead, err)
	}
	return n, nil
}

// Orphans returns node's unsettled orphans.
func (b *Broker) Orphans(ctx context.Context, node string) ([]bridge.ConnRecord, error) {
	kv, err := b.rdb.HGetAll(ctx, b.prefix+":orphans:"+node).Result()
	if err != nil {
		return nil, fmt.Errorf("redis broker: read orphans: %w", err)
	}
	out := make([]bridge.ConnRecord, 0, len(kv))
	for id, js := range kv {
		var rec bridge.ConnRecord
		if err := json.Unmarshal([]byte(js), &rec); err != nil {
			return nil, fmt.Errorf("redis broker: decode orphan %s: %w", id, err)
		}
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b bridge.ConnRecord) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Settle drops one orphan.
func (b *Broker) Settle(ctx context.Context, node, id string) error {
	if err := b.rdb.HDel(ctx, b.prefix+":orphans:"+node, id).Err(); err != nil {
		return fmt.Errorf("redis broker: settle orphan: %w", err)
	}
	return nil
}

// Leave takes node out of the registry with its records.
func (b *Broker) Leave(ctx context.Context, node string) error {
	if err := b.run(ctx, leaveScript, node).Err(); err != nil {
		return fmt.Errorf("redis broker: leave: %w", err)
	}
	return nil
}

// quietLogger sends go-redis's own log lines (every failed dial while Redis is down) to the
// broker's slog logger at debug level: the broker reports outages itself, once, through
// Healthy and its counters.
type quietLogger struct{ log *slog.Logger }

func (q quietLogger) Printf(ctx context.Context, format string, v ...any) {
	q.log.DebugContext(ctx, "go-redis", "msg", fmt.Sprintf(format, v...))
}

var setLogger sync.Once
