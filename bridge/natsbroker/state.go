package natsbroker

// The cluster state (bridge.ClusterState) in JetStream KV. nats-server 2.9 has no multi-key
// transaction and no secondary index, so a connection is one key holding its whole record
// (node, user, meta, channels): each write is atomic by being one put, and the queries read
// the whole bucket in one ordered-consumer pass and filter it. That is exact, and costs a
// query O(connections of the cluster); docs/cluster-nats.md says when that stops being fine.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsbridge/wsbridge/bridge"
)

var _ bridge.ClusterState = (*Broker)(nil)

// plainKey is what a KV key may hold as is (a NATS subject without wildcards); connection ids
// made by wsbridge (<node>.<base32>) always do.
var plainKey = regexp.MustCompile(`^[-/_a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*$`)

// connKey is the key of a connection id: the id itself, or "=" and its base64url form for an
// id a key cannot hold (no wsbridge id is one, but the push API passes ids through).
func connKey(id string) string {
	if plainKey.MatchString(id) && !strings.HasPrefix(id, "=") {
		return id
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(id))
}

// stored is a connection's value in the conns bucket: its record, or (Gone) the tombstone a
// claim leaves. A tombstone keeps a reaped node from writing a claimed connection back (a
// late join, its re-upload): a second death would claim it, and send its close, again.
// Tombstones stay; a claim leaves one per connection it took, and ids are never reused.
type stored struct {
	bridge.ConnRecord
	Gone bool `json:"gone,omitempty"`
}

func decodeStored(e jetstream.KeyValueEntry) (stored, error) {
	var st stored
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return st, fmt.Errorf("record %s in %s: %w", e.Key(), e.Bucket(), err)
	}
	return st, nil
}

// decodeRecord decodes an orphan (claims bucket), which is never a tombstone.
func decodeRecord(e jetstream.KeyValueEntry) (bridge.ConnRecord, error) {
	st, err := decodeStored(e)
	return st.ConnRecord, err
}

// PutConn records rec, replacing its earlier record, unless a claim took the connection: the
// write is conditional on the revision read, so it never lands on a tombstone made meanwhile.
func (b *Broker) PutConn(ctx context.Context, rec bridge.ConnRecord) error {
	value, err := json.Marshal(stored{ConnRecord: rec})
	if err != nil {
		return fmt.Errorf("nats state: encode record %s: %w", rec.ID, err)
	}
	key := connKey(rec.ID)
	err = b.conns.do(ctx, func(kv jetstream.KeyValue) error {
		for {
			e, err := kv.Get(ctx, key)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
				_, err = kv.Create(ctx, key, value)
			case err != nil:
				return err
			default:
				if st, derr := decodeStored(e); derr == nil && st.Gone {
					return nil // claimed: its close webhook is a survivor's now
				}
				_, err = kv.Update(ctx, key, value, e.Revision())
			}
			if !isConflict(err) {
				return err
			}
		}
	})
	if err != nil {
		return fmt.Errorf("nats state: put %s: %w", rec.ID, err)
	}
	return nil
}

// DeleteConn removes id's record if node still holds it: the delete is conditional on the
// revision read, so a survivor's claim in between is never undone.
func (b *Broker) DeleteConn(ctx context.Context, node, id string) error {
	err := b.conns.do(ctx, func(kv jetstream.KeyValue) error { return deleteIfHeld(ctx, kv, node, id) })
	if err != nil {
		return fmt.Errorf("nats state: delete %s: %w", id, err)
	}
	return nil
}

func deleteIfHeld(ctx context.Context, kv jetstream.KeyValue, node, id string) error {
	for {
		e, err := kv.Get(ctx, connKey(id))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		st, err := decodeStored(e)
		if err == nil && (st.Node != node || st.Gone) {
			return nil
		}
		err = kv.Delete(ctx, connKey(id), jetstream.LastRevision(e.Revision()))
		if !isConflict(err) {
			return err
		}
		// Written again since: look at what it is now.
	}
}

// tombstone replaces the record of r.ID by a tombstone, if dead still holds it, and returns
// the record it replaced (the latest: a write of the dead node's that came in between is
// taken, not lost). ok is false when there was nothing of dead's to take.
func (b *Broker) tombstone(ctx context.Context, dead, id string) (rec bridge.ConnRecord, ok bool, err error) {
	key := connKey(id)
	err = b.conns.do(ctx, func(kv jetstream.KeyValue) error {
		for {
			e, err := kv.Get(ctx, key)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			st, err := decodeStored(e)
			if err != nil || st.Node != dead || st.Gone {
				return nil
			}
			value, _ := json.Marshal(stored{ConnRecord: bridge.ConnRecord{ID: id, Node: dead}, Gone: true})
			if _, err = kv.Update(ctx, key, value, e.Revision()); !isConflict(err) {
				rec, ok = st.ConnRecord, err == nil
				return err
			}
		}
	})
	return rec, ok, err
}

// isConflict reports a revision check that failed: someone wrote the key in between.
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) ||
		(errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant))
}

// ReplaceNode makes recs node's whole state: every record of recs is put, then node's other
// records are deleted, each only if node still holds it and it was written before the
// replace began. A record the node's writer puts meanwhile (a connection opened after the
// server took recs) is newer, and stays. Queries in between may see both.
func (b *Broker) ReplaceNode(ctx context.Context, node string, recs []bridge.ConnRecord) error {
	began, err := b.serverNow(ctx)
	if err != nil {
		return fmt.Errorf("nats state: replace %s: %w", node, err)
	}
	keep := make(map[string]bool, len(recs))
	for _, r := range recs {
		if err := b.PutConn(ctx, r); err != nil {
			return err
		}
		keep[r.ID] = true
	}
	var stale []string
	err = b.conns.do(ctx, func(kv jetstream.KeyValue) error {
		stale = stale[:0]
		return scan(ctx, kv, "", func(e jetstream.KeyValueEntry) error {
			st, err := decodeStored(e)
			if err == nil && !st.Gone && st.Node == node && !keep[st.ID] && e.Created().Before(began) {
				stale = append(stale, st.ID)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("nats state: replace %s: %w", node, err)
	}
	for _, id := range stale {
		if err := b.DeleteConn(ctx, node, id); err != nil {
			return err
		}
	}
	return nil
}

// all reads every record of the cluster.
func (b *Broker) all(ctx context.Context) ([]bridge.ConnRecord, error) {
	var recs []bridge.ConnRecord
	err := b.conns.do(ctx, func(kv jetstream.KeyValue) error {
		recs = recs[:0]
		return scan(ctx, kv, "", func(e jetstream.KeyValueEntry) error {
			st, err := decodeStored(e)
			if err != nil || st.Gone {
				// A tombstone is no connection; one bad record (written by hand?) must not
				// hide the others.
				return nil
			}
			recs = append(recs, st.ConnRecord)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("nats state: %w", err)
	}
	slices.SortFunc(recs, func(a, b bridge.ConnRecord) int { return strings.Compare(a.ID, b.ID) })
	return recs, nil
}

func (b *Broker) recordsOf(ctx context.Context, node string) ([]bridge.ConnRecord, error) {
	recs, err := b.all(ctx)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(recs, func(r bridge.ConnRecord) bool { return r.Node != node }), nil
}

// Conn returns id's record.
func (b *Broker) Conn(ctx context.Context, id string) (bridge.ConnRecord, bool, error) {
	var rec bridge.ConnRecord
	found := false
	err := b.conns.do(ctx, func(kv jetstream.KeyValue) error {
		e, err := kv.Get(ctx, connKey(id))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		st, err := decodeStored(e)
		rec, found = st.ConnRecord, err == nil && !st.Gone
		return err
	})
	if err != nil {
		return bridge.ConnRecord{}, false, fmt.Errorf("nats state: get %s: %w", id, err)
	}
	return rec, found, nil
}

// Conns answers q from one pass over the records.
func (b *Broker) Conns(ctx context.Context, q bridge.ConnQuery) (bridge.ConnPage, error) {
	recs, err := b.all(ctx)
	if err != nil {
		return bridge.ConnPage{}, err
	}
	page := bridge.ConnPage{Conns: []bridge.ConnRecord{}}
	for _, r := range recs {
		if (q.User != "" && r.UserID != q.User) || (q.Channel != "" && !slices.Contains(r.Channels, q.Channel)) {
			continue
		}
		page.Total++
		if len(page.Conns) < q.Limit {
			page.Conns = append(page.Conns, r)
		}
	}
	return page, nil
}

// Channel lists a channel's members and their distinct users.
func (b *Broker) Channel(ctx context.Context, name string, limit int) (bridge.ChannelPage, error) {
	recs, err := b.all(ctx)
	if err != nil {
		return bridge.ChannelPage{}, err
	}
	page := bridge.ChannelPage{Conns: []string{}, Users: []string{}}
	users := map[string]bool{}
	for _, r := range recs {
		if !slices.Contains(r.Channels, name) {
			continue
		}
		page.Count++
		if len(page.Conns) < limit {
			page.Conns = append(page.Conns, r.ID)
		}
		if r.UserID != "" && !users[r.UserID] {
			users[r.UserID] = true
			page.Users = append(page.Users, r.UserID)
		}
	}
	slices.Sort(page.Users)
	return page, nil
}

// Totals counts the records, their distinct users and the channels they are in.
func (b *Broker) Totals(ctx context.Context) (bridge.ClusterTotals, error) {
	recs, err := b.all(ctx)
	if err != nil {
		return bridge.ClusterTotals{}, err
	}
	users, channels := map[string]bool{}, map[string]bool{}
	for _, r := range recs {
		if r.UserID != "" {
			users[r.UserID] = true
		}
		for _, c := range r.Channels {
			channels[c] = true
		}
	}
	return bridge.ClusterTotals{Connections: len(recs), Users: len(users), Channels: len(channels)}, nil
}
