package bridge

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
)

// The Pusher HTTP API's channel queries for the cluster: with a broker that keeps the cluster
// state (ClusterState, as the Redis and NATS brokers do), channels, channels/{name},
// channels/{name}/users and the info of events and batch_events count every node's
// connections, read from the engine as the native GET /v1/channels/{name} reads them; without
// one (a single node on the memory broker) they count the hub's. When the engine cannot answer,
// the query fails with 503 rather than answering for this node alone: a Laravel app that asks
// whether a presence channel is empty must not be told "yes" because the other nodes are out
// of sight. docs/pusher.md ("Several nodes") says what is cluster-wide and what is not.

// pusherMembers returns channel ch's distinct users (sorted) and its connection count.
func (a *pusherAPI) pusherMembers(ctx context.Context, ch string) ([]string, int, *pusherError) {
	c := a.s.cluster
	if c == nil {
		_, users, count := a.s.hub.Members(ch, 0)
		return users, count, nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.s.cfg.BrokerTimeout)
	defer cancel()
	// Limit 0: only the users and the count are wanted, not the connection ids.
	page, err := c.state.Channel(ctx, ch, 0)
	if err != nil {
		a.s.log.Warn("pusher api: the cluster state cannot be read", "channel", ch, "err", err)
		return nil, 0, pusherErrorf(http.StatusServiceUnavailable, "The cluster state cannot be read: %v", err)
	}
	if len(page.Missing) > 0 {
		return nil, 0, pusherErrorf(http.StatusServiceUnavailable, "Nodes %s did not answer: channel %q cannot be counted for the cluster", strings.Join(page.Missing, ", "), ch)
	}
	return page.Users, page.Count, nil
}

// pusherChannelList lists the occupied channels whose name starts with prefix, sorted, with
// their distinct users counted when users is set. In a cluster it is made from every
// connection's record, since the cluster state keeps no list of channels: at most
// MAX_LIST_RESULT records are read, and a larger cluster is refused with 503 rather than
// answered from part of it.
func (a *pusherAPI) pusherChannelList(ctx context.Context, prefix string, users bool) ([]pusherChannel, *pusherError) {
	c := a.s.cluster
	if c == nil {
		return a.s.hub.pusherChannels(prefix, users), nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.s.cfg.BrokerTimeout)
	defer cancel()
	limit := a.s.cfg.MaxListResult
	page, err := c.state.Conns(ctx, ConnQuery{Limit: limit})
	switch {
	case err != nil:
		a.s.log.Warn("pusher api: the cluster state cannot be read", "err", err)
		return nil, pusherErrorf(http.StatusServiceUnavailable, "The cluster state cannot be read: %v", err)
	case len(page.Missing) > 0:
		return nil, pusherErrorf(http.StatusServiceUnavailable, "Nodes %s did not answer: channels cannot be listed for the cluster", strings.Join(page.Missing, ", "))
	case page.Total > limit:
		return nil, pusherErrorf(http.StatusServiceUnavailable, "The cluster has %d connections, more than the %d (WSBRIDGE_MAX_LIST_RESULT) read to list its channels; ask channels/{name} for one channel", page.Total, limit)
	}
	distinct := map[string]map[string]struct{}{}
	for _, rec := range page.Conns {
		for _, ch := range rec.Channels {
			if !strings.HasPrefix(ch, prefix) {
				continue
			}
			set := distinct[ch]
			if set == nil {
				set = map[string]struct{}{}
				distinct[ch] = set
			}
			if users && rec.UserID != "" {
				set[rec.UserID] = struct{}{}
			}
		}
	}
	out := make([]pusherChannel, 0, len(distinct))
	for name, set := range distinct {
		out = append(out, pusherChannel{name: name, users: len(set)})
	}
	slices.SortFunc(out, func(a, b pusherChannel) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// opPusher carries a Pusher protocol message between nodes: a client event, which every node
// hands to its own Pusher subscribers of the channel except the sender, as the sender's node
// did. Natively connected members get nothing, and no history records it: it is the
// protocol's own traffic, not a publication. Unexported: only this build makes and reads it.
const opPusher Op = "pusher"

// envelopeVersion is the version an envelope of op is stamped with: the oldest that knows op,
// so that during a rolling upgrade a node of version 1 still applies every publication, join,
// leave and close of a newer node and refuses only what it would not understand.
func envelopeVersion(op Op) int {
	if op == opPusher || op == opPresence {
		return 2
	}
	return 1
}

// pusherRelay carries a Pusher message the node has just sent to its own subscribers of ch to
// the other nodes' (hub.pusherFanout there). A broker that fails loses it for the other
// nodes only: the client is not told, as Pusher does not confirm client events either.
func (s *Server) pusherRelay(ctx context.Context, ch, except string, frame []byte) {
	if err := s.hub.broker.Publish(ctx, Envelope{Origin: s.node, Op: opPusher, Channel: ch, Except: except, Frame: frame}); err != nil {
		s.log.Warn("pusher: a client event did not reach the other nodes", "channel", ch, "conn", except, "err", err)
	}
}

// pusherFanout sends a Pusher message, encoded once, to the Pusher connections of channel ch on
// this node, except one. Natively connected members of the channel get nothing: these are the
// protocol's own messages.
func (h *hub) pusherFanout(ch, except string, msg []byte) {
	d := h.encoded(Delivery{Data: msg})
	for _, m := range h.match(Targets{Channels: []string{ch}}) {
		if pc, ok := m.client.(*pusherConn); ok && pc.id != except {
			pc.conn.Send(d)
		}
	}
}

// Presence across nodes. Each node keeps, beside its own rosters (pusherApp.presence), the
// users other nodes told it they have in each presence channel (pusherApp.remote), learnt from
// opPresence envelopes: a node sends "join" when a user's first connection here subscribes a
// presence channel, "leave" when the user's last one here leaves, and answers a join with
// "state", its own users of that channel, so that a node that joins late learns who is there.
// Every node then decides for its own subscribers alone: member_added when a user goes from
// absent to present in its view (here or on any node), member_removed the other way. So a user
// on two nodes is added once and removed once, wherever the tabs are. A node counted silent
// (the heartbeat's Silent) loses its users in every other node's view.
//
// What is not exact: envelopes are at most once (a lost one leaves a view wrong until the
// user's next join or leave), and a subscriber's roster may lack a user whose node has not
// answered yet; that user then comes as member_added just after the roster.

// opPresence carries a presence change of one node (Frame is its pusherPresenceMsg).
const opPresence Op = "presence"

// pusherPresenceMsg is one node's presence change in one channel.
type pusherPresenceMsg struct {
	Kind    string                     `json:"kind"` // "join", "leave" or "state"
	Channel string                     `json:"channel"`
	Users   map[string]json.RawMessage `json:"users"` // user id → user_info (null for leave)
}

// queuePresenceLocked queues a presence change here for the other nodes, in the order the
// changes happened (under a.mu). It reports whether the caller must send the queue
// (sendPresence, after unlocking): one caller at a time sends, never under a.mu, since a
// broker may deliver synchronously (the MemoryBroker) into another node that answers at once.
func (a *pusherApp) queuePresenceLocked(kind, ch string, users map[string]json.RawMessage) bool {
	frame, _ := json.Marshal(pusherPresenceMsg{Kind: kind, Channel: ch, Users: users})
	a.outbox = append(a.outbox, frame)
	if a.sending {
		return false // the sender under way takes it
	}
	a.sending = true
	return true
}

// sendPresence publishes the queued presence changes until none is left.
func (s *Server) sendPresence() {
	a := s.pusher
	for {
		a.mu.Lock()
		out := a.outbox
		a.outbox = nil
		if len(out) == 0 {
			a.sending = false
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		for _, frame := range out {
			ctx, cancel := context.WithTimeout(s.base, s.cfg.BrokerTimeout)
			err := s.hub.broker.Publish(ctx, Envelope{Origin: s.node, Op: opPresence, Frame: frame})
			cancel()
			if err != nil {
				s.log.Warn("pusher: a presence change did not reach the other nodes", "err", err)
			}
		}
	}
}

// pusherPresenceDeliver applies another node's presence change to this node's view.
func (s *Server) pusherPresenceDeliver(e Envelope) {
	a := s.pusher
	if a == nil || e.Origin == s.node {
		return
	}
	var m pusherPresenceMsg
	if err := json.Unmarshal(e.Frame, &m); err != nil || m.Channel == "" || pusherChannelKind(m.Channel) != pusherPresence {
		s.log.Warn("pusher: a presence envelope refused", "origin", e.Origin, "err", err)
		return
	}
	send := false
	defer func() {
		if send {
			s.sendPresence()
		}
	}()
	a.mu.Lock()
	defer a.mu.Unlock()
	for user, info := range m.Users {
		if m.Kind == "leave" {
			a.remoteLeaveLocked(s, m.Channel, user, e.Origin)
		} else {
			a.remoteJoinLocked(s, m.Channel, user, e.Origin, info)
		}
	}
	if m.Kind == "join" {
		if local := a.presence[m.Channel]; len(local) > 0 {
			users := make(map[string]json.RawMessage, len(local))
			for id, u := range local {
				users[id] = u.info
			}
			send = a.queuePresenceLocked("state", m.Channel, users)
		}
	}
}

// presentLocked tells whether user is in ch here or, as far as this node knows, elsewhere.
func (a *pusherApp) presentLocked(ch, user string) bool {
	return a.presence[ch][user] != nil || len(a.remote[ch][user]) > 0
}

func (a *pusherApp) remoteJoinLocked(s *Server, ch, user, node string, info json.RawMessage) {
	was := a.presentLocked(ch, user)
	if a.remote == nil {
		a.remote = map[string]map[string]map[string]json.RawMessage{}
	}
	users := a.remote[ch]
	if users == nil {
		users = map[string]map[string]json.RawMessage{}
		a.remote[ch] = users
	}
	if users[user] == nil {
		users[user] = map[string]json.RawMessage{}
	}
	users[user][node] = info
	if !was {
		s.pusherFanout(ch, "", pusherEnvelope("pusher_internal:member_added", ch, presenceJSON(user, info)))
	}
}

func (a *pusherApp) remoteLeaveLocked(s *Server, ch, user, node string) {
	if _, in := a.remote[ch][user][node]; !in {
		return
	}
	delete(a.remote[ch][user], node)
	if len(a.remote[ch][user]) == 0 {
		delete(a.remote[ch], user)
	}
	if len(a.remote[ch]) == 0 {
		delete(a.remote, ch)
	}
	if !a.presentLocked(ch, user) {
		s.pusherFanout(ch, "", pusherEnvelope("pusher_internal:member_removed", ch, presenceJSON(user, nil)))
	}
}

// pusherNodesGone drops the users of nodes counted silent from this node's view.
func (s *Server) pusherNodesGone(nodes []string) {
	a := s.pusher
	if a == nil || len(nodes) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for ch, users := range a.remote {
		for user, on := range users {
			for _, n := range nodes {
				if _, in := on[n]; in {
					a.remoteLeaveLocked(s, ch, user, n)
				}
			}
		}
	}
}
