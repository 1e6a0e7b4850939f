package bridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// This file is the server's side of a cluster broker (cluster.go): it keeps this node's
// connections recorded in the cluster state, beats, claims the connections of nodes that fell
// silent and sends their close webhooks, and answers the push API's queries for the cluster.
// A broker without ClusterState (the memory broker) leaves Server.cluster nil and none of it
// runs.

// clusterNode is one node's part of the cluster.
type clusterNode struct {
	s     *Server
	state ClusterState
	live  NodeLiveness // nil if the broker has none: records without node-loss handling
	log   *slog.Logger

	// The state writer: ids whose record must be written (or deleted), each once however often
	// it changed, in the order they first changed. One goroutine writes, so one connection's
	// writes keep their order, and a connection's reader only ever takes mu for a moment.
	mu      sync.Mutex
	pending map[string]struct{}
	order   []string
	wake    chan struct{}
	idle    chan struct{} // closed and replaced when the writer has nothing left (flush)
	busy    bool
	// resync: a write failed (or the engine forgot this node), so the records are no longer
	// known to match the hub; the next good beat uploads them whole and single writes stop
	// until then.
	resync bool
	// during collects the ids that change while an upload runs (nil otherwise). The writer may
	// write them before ReplaceNode, which would then drop a record the snapshot did not have;
	// they are queued again once ReplaceNode is done, so their last write comes after it.
	during map[string]struct{}

	// lost holds the orphans whose close webhook is being sent now, so that a beat does not
	// send one twice.
	lostMu sync.Mutex
	lost   map[string]struct{}
	// lostWG counts the close webhooks of orphans under way; shutdown waits for them.
	lostWG sync.WaitGroup
}

// newClusterNode returns the cluster side of s, or nil if broker keeps no cluster state.
func newClusterNode(s *Server, broker Broker) *clusterNode {
	cs, ok := broker.(ClusterState)
	if !ok {
		return nil
	}
	c := &clusterNode{s: s, state: cs, log: s.log.With("node", s.node), pending: map[string]struct{}{},
		wake: make(chan struct{}, 1), idle: make(chan struct{}), lost: map[string]struct{}{}}
	c.live, _ = broker.(NodeLiveness)
	return c
}

// changed is the hub's hook: connection id's state changed (or it is gone).
func (c *clusterNode) changed(id string) {
	c.mu.Lock()
	if c.during != nil {
		c.during[id] = struct{}{}
	}
	if _, ok := c.pending[id]; !ok && !c.resync {
		c.pending[id] = struct{}{}
		c.order = append(c.order, id)
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run writes records, beats and reaps until ctx ends.
func (c *clusterNode) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.write(ctx) })
	if c.live != nil {
		wg.Go(func() { c.beat(ctx) })
	}
	wg.Wait()
}

// write is the state writer's loop.
func (c *clusterNode) write(ctx context.Context) {
	for {
		c.mu.Lock()
		if len(c.order) == 0 {
			c.busy = false
			close(c.idle)
			c.idle = make(chan struct{})
			c.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-c.wake:
			}
			continue
		}
		c.busy = true
		id := c.order[0]
		c.order = c.order[1:]
		delete(c.pending, id)
		c.mu.Unlock()
		if err := c.writeOne(ctx, id); err != nil {
			c.log.Warn("cluster: recording a connection failed; the node's records will be uploaded whole once the broker answers", "conn", id, "err", err)
			c.needResync()
		}
	}
}

// needResync drops the queued writes: the next good beat uploads every record at once.
func (c *clusterNode) needResync() {
	c.mu.Lock()
	c.resync = true
	clear(c.pending)
	c.order = nil
	c.mu.Unlock()
}

func (c *clusterNode) writeOne(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.BrokerTimeout)
	defer cancel()
	rec, ok := c.s.hub.record(id)
	if !ok {
		return c.state.DeleteConn(ctx, c.s.node, id)
	}
	return c.state.PutConn(ctx, rec)
}

// flush waits until the writer has written everything queued before it was called, or ctx
// ends.
func (c *clusterNode) flush(ctx context.Context) error {
	c.mu.Lock()
	if len(c.order) == 0 && !c.busy {
		c.mu.Unlock()
		return nil
	}
	idle := c.idle
	c.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// upload replaces this node's records with the hub's.
func (c *clusterNode) upload(ctx context.Context) error {
	c.mu.Lock()
	c.resync = false
	clear(c.pending)
	c.order = nil
	c.during = map[string]struct{}{}
	c.mu.Unlock()
	recs := c.s.hub.records()
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.BrokerTimeout)
	defer cancel()
	err := c.state.ReplaceNode(ctx, c.s.node, recs)
	c.mu.Lock()
	during := c.during
	c.during = nil
	c.mu.Unlock()
	if err != nil {
		c.needResync()
		return err
	}
	for id := range during {
		c.changed(id) // written again, after ReplaceNode: see during
	}
	c.log.Info("cluster: uploaded this node's connections", "count", len(recs))
	return nil
}

// beat is the liveness loop: every third of NODE_TIMEOUT it beats, acts on what the beat
// says, claims the nodes that fell silent and sends the close webhooks this node owes.
func (c *clusterNode) beat(ctx context.Context) {
	every := max(c.s.cfg.NodeTimeout/3, time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	// A previous run under this node id (a fixed NODE_ID, restarted after a crash) left
	// records that no connection holds now: they are this run's to close.
	c.claim(ctx, c.s.node, 0)
	failing := false
	for {
		hb, err := c.beatOnce(ctx)
		switch {
		case err != nil && !failing:
			failing = true
			c.log.Error("cluster: heartbeat failed; other nodes will count this node dead after NODE_TIMEOUT", "err", err)
		case err == nil:
			if failing {
				failing = false
				c.log.Info("cluster: heartbeat answered again")
			}
			c.afterBeat(ctx, hb)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *clusterNode) beatOnce(ctx context.Context) (Heartbeat, error) {
	bctx, cancel := context.WithTimeout(ctx, c.s.cfg.BrokerTimeout)
	defer cancel()
	return c.live.Beat(bctx, c.s.node)
}

func (c *clusterNode) afterBeat(ctx context.Context, hb Heartbeat) {
	if len(hb.Reaped) > 0 {
		// This node was silent long enough for a survivor to claim these connections and send
		// their close webhooks: they close without one (endSession).
		n := c.s.hub.closeLocal(Targets{Connections: hb.Reaped}, CloseRequest{Code: 1001, Reason: "node was cut off from the cluster"}, InitiatorNodeLost)
		c.log.Warn("cluster: this node was counted dead; closing the connections a survivor already sent close webhooks for", "claimed", len(hb.Reaped), "closed", n)
	}
	c.mu.Lock()
	resync := c.resync
	c.mu.Unlock()
	if hb.Unknown || resync {
		if err := c.upload(ctx); err != nil {
			c.log.Warn("cluster: uploading this node's connections failed", "err", err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, c.s.cfg.BrokerTimeout)
	silent, err := c.live.Silent(sctx, c.s.cfg.NodeTimeout)
	cancel()
	if err != nil {
		c.log.Warn("cluster: listing silent nodes failed", "err", err)
	}
	for _, n := range silent {
		if n != c.s.node {
			c.claim(ctx, n, c.s.cfg.NodeTimeout)
		}
	}
	c.s.pusherNodesGone(silent) // their Pusher presence users leave every view (pushercluster.go)
	c.sendOwed(ctx)
}

// claim takes dead's connections if it is still silent (timeout 0: unconditionally).
func (c *clusterNode) claim(ctx context.Context, dead string, timeout time.Duration) {
	cctx, cancel := context.WithTimeout(ctx, c.s.cfg.BrokerTimeout)
	defer cancel()
	n, err := c.live.Claim(cctx, dead, c.s.node, timeout)
	switch {
	case err != nil:
		c.log.Warn("cluster: claiming a silent node failed", "dead", dead, "err", err)
	case n > 0:
		c.s.metrics.nodesClaimed.Inc()
		c.log.Warn("cluster: claimed the connections of a node that fell silent; sending their close webhooks", "dead", dead, "connections", n)
	}
}

// sendOwed sends the close webhook of every orphan of this node not already under way.
func (c *clusterNode) sendOwed(ctx context.Context) {
	octx, cancel := context.WithTimeout(ctx, c.s.cfg.BrokerTimeout)
	orphans, err := c.live.Orphans(octx, c.s.node)
	cancel()
	if err != nil {
		c.log.Warn("cluster: reading the close webhooks owed failed", "err", err)
		return
	}
	for _, rec := range orphans {
		if _, live := c.s.hub.Info(rec.ID); live {
			// A connection of this run, recorded before the claim of this node's previous run
			// (connection ids are random, so no earlier run had it): it is alive, not owed.
			c.settle(ctx, rec.ID)
			c.changed(rec.ID)
			continue
		}
		c.lostMu.Lock()
		_, busy := c.lost[rec.ID]
		if !busy {
			c.lost[rec.ID] = struct{}{}
		}
		c.lostMu.Unlock()
		if busy {
			continue
		}
		c.lostWG.Go(func() {
			defer func() {
				c.lostMu.Lock()
				delete(c.lost, rec.ID)
				c.lostMu.Unlock()
			}()
			c.sendLost(ctx, rec)
		})
	}
}

// sendLost delivers the close webhook of a connection whose node died, paced and retried as
// every close is (closequeue.go), then settles it. One given up stays owed only if shutdown
// cut it short: another node (or this one's next run) sends it then.
func (c *clusterNode) sendLost(ctx context.Context, rec ConnRecord) {
	s := c.s
	s.metrics.closeQueue.Inc()
	defer s.metrics.closeQueue.Dec()
	ev := lostCloseEvent(rec, time.Now())
	log := c.log.With("conn", rec.ID)
	if !s.paceClose(ctx) {
		return
	}
	reply, err := s.call(ctx, ev, "", holdWaits)
	switch {
	case err == nil:
		// No connection is left to apply state or frames to; the publications still go out.
		for i := range reply.Publish {
			if _, err := s.publish(ctx, &reply.Publish[i]); err != nil {
				log.Error("publish from reply failed", "err", err)
			}
		}
	case ctx.Err() != nil:
		return // owed still: whoever claims this node next sends it
	case errors.Is(err, errMalformedReply):
		log.Error("close reply refused", "event", ev.EventID, "err", err) // PHP has the close
	default:
		s.metrics.closeWebhooksLost.Inc()
		log.Error("close webhook not delivered", "event", ev.EventID, "user", ev.UserID, "initiator", ev.Initiator, "err", err)
	}
	s.metrics.closed.WithLabelValues(string(InitiatorNodeLost)).Inc()
	c.settle(ctx, rec.ID)
}

// settle drops an orphan of this node.
func (c *clusterNode) settle(ctx context.Context, id string) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.s.cfg.BrokerTimeout)
	defer cancel()
	if err := c.live.Settle(sctx, c.s.node, id); err != nil {
		c.log.Warn("cluster: settling a sent close webhook failed: it may be sent again, with the same event id", "conn", id, "err", err)
	}
}

// lostCloseEvent is the close webhook of a connection whose node died.
func lostCloseEvent(rec ConnRecord, now time.Time) *Event {
	code, reason := 1006, "node lost"
	dur := max(now.Sub(rec.ConnectedAt).Milliseconds(), 0)
	in, out := rec.MessagesIn, rec.MessagesOut
	channels := rec.Channels
	if channels == nil {
		channels = []string{}
	}
	id := rec.LostEventID
	if id == "" {
		id = lostEventID(rec.ID)
	}
	return &Event{Type: EventClose, EventID: id, ConnectionID: rec.ID, Transport: rec.Transport,
		UserID: rec.UserID, Meta: rec.Meta, Channels: channels,
		Time: now.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		Code: &code, Reason: &reason, Initiator: InitiatorNodeLost, DurationMS: &dur, MessagesIn: &in, MessagesOut: &out}
}

// lostEventID is the event id of a connection's node_lost close: derived from the connection
// id (itself random and unique), so that it is the same whichever node sends it and however
// often, without being stored anywhere.
func lostEventID(connID string) string {
	sum := sha256.Sum256([]byte("wsbridge node_lost " + connID))
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:16])
}

// leave ends this node's part at shutdown: the records written (every connection has closed
// by now), the orphans' closes under way finished, and the node out of the registry.
func (c *clusterNode) leave(ctx context.Context) error {
	var errs []error
	if err := c.flush(ctx); err != nil {
		errs = append(errs, fmt.Errorf("cluster: writing the last records: %w", err))
	}
	done := make(chan struct{})
	go func() { c.lostWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("cluster: close webhooks of a lost node still under way: %w", ctx.Err()))
	}
	if c.live != nil {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.s.cfg.BrokerTimeout)
		defer cancel()
		if err := c.live.Leave(lctx, c.s.node); err != nil {
			errs = append(errs, fmt.Errorf("cluster: leave: %w", err))
		}
	}
	return errors.Join(errs...)
}

// record is the cluster record of local connection id.
func (h *hub) record(id string) (ConnRecord, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	m, ok := h.conns[id]
	if !ok {
		return ConnRecord{}, false
	}
	return h.recordOf(m), true
}

// records are the cluster records of every local connection.
func (h *hub) records() []ConnRecord {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]ConnRecord, 0, len(h.conns))
	for _, m := range h.conns {
		out = append(out, h.recordOf(m))
	}
	return out
}

func (h *hub) recordOf(m *member) ConnRecord {
	info := m.describe()
	transport := ""
	if k, ok := m.client.(interface{ kind() string }); ok {
		transport = k.kind()
	}
	return ConnRecord{ID: info.ID, Node: h.node, Transport: transport, UserID: info.UserID,
		Channels: info.Channels, Meta: info.Meta, RemoteAddr: info.RemoteAddr, Path: info.Path,
		Subprotocol: info.Subprotocol, ConnectedAt: info.ConnectedAt, MessagesIn: info.MessagesIn,
		MessagesOut: info.MessagesOut, LostEventID: lostEventID(info.ID)}
}

// clusterConn is a connection as the push API describes it in a cluster: with its node.
type clusterConn struct {
	connInfo
	Node string `json:"node"`
}

// conn describes a record; one of this node's is read from the hub, which is fresher (live
// counts, and no write lag).
func (c *clusterNode) conn(rec ConnRecord) clusterConn {
	if rec.Node == c.s.node {
		if info, ok := c.s.hub.Info(rec.ID); ok {
			return clusterConn{info, rec.Node}
		}
	}
	ch := rec.Channels
	if ch == nil {
		ch = []string{}
	}
	return clusterConn{connInfo{ID: rec.ID, UserID: rec.UserID, Channels: ch, Meta: rec.Meta, RemoteAddr: rec.RemoteAddr,
		Path: rec.Path, Subprotocol: rec.Subprotocol, ConnectedAt: rec.ConnectedAt, MessagesIn: rec.MessagesIn,
		MessagesOut: rec.MessagesOut}, rec.Node}
}

// queryFailed answers a cluster query the broker could not: 503, the node itself is fine but
// cannot see the cluster.
func queryFailed(w http.ResponseWriter, err error) {
	apiError(w, http.StatusServiceUnavailable, "broker_unavailable", fmt.Sprintf("the cluster state cannot be read: %v", err))
}

func (c *clusterNode) listConnections(w http.ResponseWriter, r *http.Request, user, channel string) {
	ctx, cancel := context.WithTimeout(r.Context(), c.s.cfg.BrokerTimeout)
	defer cancel()
	page, err := c.state.Conns(ctx, ConnQuery{User: user, Channel: channel, Limit: c.s.cfg.MaxListResult})
	if err != nil {
		queryFailed(w, err)
		return
	}
	conns := make([]clusterConn, len(page.Conns))
	for i, rec := range page.Conns {
		conns[i] = c.conn(rec)
	}
	body := map[string]any{"connections": conns, "count": page.Total}
	if len(page.Missing) > 0 {
		body["missing_nodes"] = page.Missing
	}
	writeJSON(w, http.StatusOK, body)
}

func (c *clusterNode) connection(w http.ResponseWriter, r *http.Request, id string) {
	ctx, cancel := context.WithTimeout(r.Context(), c.s.cfg.BrokerTimeout)
	defer cancel()
	rec, ok, err := c.state.Conn(ctx, id)
	if err != nil {
		queryFailed(w, err)
		return
	}
	if !ok {
		// Written a moment ago and not yet recorded: the hub knows it.
		if info, ok := c.s.hub.Info(id); ok {
			writeJSON(w, http.StatusOK, clusterConn{info, c.s.node})
			return
		}
		apiError(w, http.StatusNotFound, "not_found", "no such connection in the cluster")
		return
	}
	writeJSON(w, http.StatusOK, c.conn(rec))
}

func (c *clusterNode) channel(w http.ResponseWriter, r *http.Request, name string) {
	ctx, cancel := context.WithTimeout(r.Context(), c.s.cfg.BrokerTimeout)
	defer cancel()
	page, err := c.state.Channel(ctx, name, c.s.cfg.MaxListResult)
	if err != nil {
		queryFailed(w, err)
		return
	}
	body := map[string]any{"channel": name, "connections": page.Conns, "users": page.Users, "count": page.Count}
	if len(page.Missing) > 0 {
		body["missing_nodes"] = page.Missing
	}
	writeJSON(w, http.StatusOK, body)
}

// stats adds the cluster's totals to /v1/stats: connections, users and channels become the
// cluster's, and "local" keeps this node's own.
func (c *clusterNode) stats(ctx context.Context, stats map[string]any, local hubStats) {
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.BrokerTimeout)
	defer cancel()
	stats["local"] = local
	tot, err := c.state.Totals(ctx)
	if err != nil {
		stats["cluster_error"] = err.Error()
		return
	}
	stats["connections"], stats["users"], stats["channels"] = tot.Connections, tot.Users, tot.Channels
	if len(tot.Missing) > 0 {
		stats["missing_nodes"] = tot.Missing
	}
}

// joinCluster wires s to a cluster broker's optional parts: the cluster state (the hub tells
// it every change), PHP's publications through the engine, and the broker's own metrics.
func (s *Server) joinCluster(broker Broker) {
	if c, ok := broker.(prometheus.Collector); ok {
		if err := s.metrics.reg.Register(c); err != nil {
			s.log.Warn("broker metrics not registered", "err", err)
		}
	}
	if ap, ok := broker.(AppPublisher); ok {
		ap.OnAppPublish(s.appPublish)
	}
	s.cluster = newClusterNode(s, broker)
	if s.cluster != nil {
		s.hub.onChange = s.cluster.changed
	}
}

// runCluster runs the cluster side until ctx ends; the channel is closed when it has.
func (s *Server) runCluster(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if s.cluster == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		s.cluster.run(ctx)
	}()
	return done
}

// leaveCluster is the cluster side of shutdown, once every connection has closed.
func (s *Server) leaveCluster(ctx context.Context) error {
	if s.cluster == nil {
		return nil
	}
	return s.cluster.leave(ctx)
}

// appPublish applies what PHP published through the engine: decoded and checked as strictly
// as POST /v1/publish, whole or not at all, and applied to this node's connections only
// (every node receives it).
func (s *Server) appPublish(payload []byte) {
	body := bytes.TrimSpace(payload)
	var pubs []Publication
	var derr *decodeError
	switch {
	case int64(len(body)) > s.cfg.MaxPushBody:
		derr = &decodeError{err: fmt.Errorf("%d bytes, more than MAX_PUSH_BODY=%d", len(body), s.cfg.MaxPushBody)}
	case len(body) == 0:
		derr = &decodeError{err: errors.New("empty message: publish a JSON object or array")}
	default:
		pubs, _, derr = s.decodePublications(body)
	}
	if derr != nil {
		s.metrics.appPublishRefused.Inc()
		s.log.Error("publish through the broker refused", "len", len(payload), "err", derr.err)
		return
	}
	for i := range pubs {
		p := &pubs[i]
		n := s.hub.publishLocal(p.To, p.Except, s.hub.publicationDelivery(p))
		s.metrics.publishes.Inc()
		s.metrics.deliveries.Add(float64(n))
	}
}
