package bridge

import (
	"context"
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
