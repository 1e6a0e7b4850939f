package natsbroker

// Node liveness (bridge.NodeLiveness) in JetStream KV:
//
//	<prefix>_live    <node>                    its last Beat; the entry's time is the server's
//	<prefix>_claims  orphan.<owner>.<conn>     a record whose close webhook owner owes
//	                 reaped.<node>             ids claimed while node was silent, for its next Beat
//	                 clock                     written to read the server's clock
//
// A claim is made exclusive by one revision check: every claimer reads the dead node's entry,
// and only the first update at that revision (to a claim marker) succeeds. The winner then
// moves the records, writes the reaped list and deletes the entry. A winner that dies half
// way leaves its marker, which goes silent like a beat and is claimed again; moving a record
// is idempotent, so the second claim finishes what the first began. The orphans' close webhooks
// then carry the record's LostEventID however often they are sent.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsbridge/wsbridge/bridge"
)

var _ bridge.NodeLiveness = (*Broker)(nil)

// liveEntry is a node's value in the live bucket: a beat, or the marker of a claim under way.
type liveEntry struct {
	Node      string `json:"node"`
	ClaimedBy string `json:"claimed_by,omitempty"`
}

func orphanKey(owner, id string) string { return "orphan." + owner + "." + connKey(id) }

// serverNow is the server's clock: the time it stamped a write made now. Silence is measured
// on it, so nodes whose clocks disagree still agree on who is silent.
func (b *Broker) serverNow(ctx context.Context) (time.Time, error) {
	var now time.Time
	err := b.claims.do(ctx, func(kv jetstream.KeyValue) error {
		rev, err := kv.Put(ctx, "clock", nil)
		if err != nil {
			return err
		}
		e, err := kv.Get(ctx, "clock")
		if err != nil {
			return err
		}
		if e.Revision() < rev {
			return fmt.Errorf("clock read revision %d before its write %d", e.Revision(), rev)
		}
		now = e.Created()
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("nats liveness: read the server's clock: %w", err)
	}
	return now, nil
}

// Beat records node as alive now, on the server's clock, and hands it the ids claimed while it
// was silent (once).
func (b *Broker) Beat(ctx context.Context, node string) (bridge.Heartbeat, error) {
	var hb bridge.Heartbeat
	value, _ := json.Marshal(liveEntry{Node: node})
	err := b.live.do(ctx, func(kv jetstream.KeyValue) error {
		for {
			e, err := kv.Get(ctx, node)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				if _, err = kv.Create(ctx, node, value); errors.Is(err, jetstream.ErrKeyExists) || isConflict(err) {
					continue // a concurrent first beat: read what it wrote
				}
				hb.Unknown = true
				return err
			}
			if err != nil {
				return err
			}
			var le liveEntry
			if json.Unmarshal(e.Value(), &le) == nil && le.ClaimedBy != "" {
				// A survivor is claiming this node's connections right now: it was dead, and
				// beating over the marker would undo nothing; it beats afresh once the claim
				// has removed the entry.
				hb.Unknown = true
				return nil
			}
			if _, err = kv.Update(ctx, node, value, e.Revision()); !isConflict(err) {
				return err
			}
		}
	})
	if err != nil {
		return hb, fmt.Errorf("nats liveness: beat %s: %w", node, err)
	}
	err = b.claims.do(ctx, func(kv jetstream.KeyValue) error {
		e, err := kv.Get(ctx, "reaped."+node)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var ids []string
		if err := json.Unmarshal(e.Value(), &ids); err != nil {
			return fmt.Errorf("reaped.%s: %w", node, err)
		}
		// Only the beat whose delete succeeds reports them: once.
		if err := kv.Delete(ctx, "reaped."+node, jetstream.LastRevision(e.Revision())); err != nil {
			if isConflict(err) {
				return nil
			}
			return err
		}
		hb.Reaped = ids
		return nil
	})
	if err != nil {
		return hb, fmt.Errorf("nats liveness: reaped of %s: %w", node, err)
	}
	return hb, nil
}

// Silent lists the registered nodes whose last beat (or unfinished claim) is older than
// timeout on the server's clock, sorted.
func (b *Broker) Silent(ctx context.Context, timeout time.Duration) ([]string, error) {
	now, err := b.serverNow(ctx)
	if err != nil {
		return nil, err
	}
	silent := []string{}
	err = b.live.do(ctx, func(kv jetstream.KeyValue) error {
		silent = silent[:0]
		return scan(ctx, kv, "", func(e jetstream.KeyValueEntry) error {
			if now.Sub(e.Created()) > timeout {
				silent = append(silent, e.Key())
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("nats liveness: %w", err)
	}
	slices.Sort(silent)
	return silent, nil
}

// Claim takes dead's records and orphans for claimer if dead is silent (timeout 0: at once).
func (b *Broker) Claim(ctx context.Context, dead, claimer string, timeout time.Duration) (int, error) {
	won, err := b.win(ctx, dead, claimer, timeout)
	if err != nil || !won {
		return 0, err
	}
	n := 0
	var ids []string
	recs, err := b.recordsOf(ctx, dead)
	if err != nil {
		return 0, fmt.Errorf("nats claim of %s: %w", dead, err)
	}
	for _, r := range recs {
		// Orphan first, tombstone second: a claimer that dies in between leaves both, and the
		// next claim takes the record again. The tombstone's revision check takes the
		// latest record; if that is newer than the orphan written, the orphan is rewritten.
		if err := b.putOrphan(ctx, claimer, r); err != nil {
			return n, fmt.Errorf("nats claim of %s: %w", dead, err)
		}
		latest, ok, err := b.tombstone(ctx, dead, r.ID)
		if err != nil {
			return n, fmt.Errorf("nats claim of %s: %w", dead, err)
		}
		if !ok {
			// Deleted meanwhile: the node closed it (and sent its close) before dying.
			if err := b.Settle(ctx, claimer, r.ID); err != nil {
				return n, fmt.Errorf("nats claim of %s: %w", dead, err)
			}
			continue
		}
		if !reflect.DeepEqual(latest, r) {
			if err := b.putOrphan(ctx, claimer, latest); err != nil {
				return n, fmt.Errorf("nats claim of %s: %w", dead, err)
			}
		}
		ids = append(ids, r.ID)
		n++
	}
	if dead != claimer {
		moved, err := b.moveOrphans(ctx, dead, claimer)
		n += len(moved)
		ids = append(ids, moved...)
		if err != nil {
			return n, fmt.Errorf("nats claim of %s: %w", dead, err)
		}
		if err := b.addReaped(ctx, dead, ids); err != nil {
			return n, fmt.Errorf("nats claim of %s: %w", dead, err)
		}
	} else {
		// Its own previous run: its unsettled orphans stay its own, and count as taken.
		own, err := b.Orphans(ctx, dead)
		if err != nil {
			return n, err
		}
		n = len(own)
	}
	err = b.live.do(ctx, func(kv jetstream.KeyValue) error { return kv.Delete(ctx, dead) })
	if err != nil {
		return n, fmt.Errorf("nats claim of %s: leave the registry: %w", dead, err)
	}
	return n, nil
}

// win makes claimer the one claimer of dead, if dead is registered and silent: the update of
// its entry at the revision read succeeds for one claimer only.
func (b *Broker) win(ctx context.Context, dead, claimer string, timeout time.Duration) (bool, error) {
	var now time.Time
	if timeout > 0 {
		var err error
		if now, err = b.serverNow(ctx); err != nil {
			return false, err
		}
	}
	marker, _ := json.Marshal(liveEntry{Node: dead, ClaimedBy: claimer})
	won := false
	err := b.live.do(ctx, func(kv jetstream.KeyValue) error {
		e, err := kv.Get(ctx, dead)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil // not registered: claimed already, or it left
		}
		if err != nil {
			return err
		}
		if timeout > 0 && now.Sub(e.Created()) <= timeout {
			return nil // not silent
		}
		_, err = kv.Update(ctx, dead, marker, e.Revision())
		if isConflict(err) {
			return nil // another claimer, or a beat, came first
		}
		won = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("nats claim of %s: %w", dead, err)
	}
	return won, nil
}

func (b *Broker) putOrphan(ctx context.Context, owner string, r bridge.ConnRecord) error {
	value, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.claims.do(ctx, func(kv jetstream.KeyValue) error {
		_, err := kv.Put(ctx, orphanKey(owner, r.ID), value)
		return err
	})
}

// moveOrphans hands from's unsettled orphans to to, and returns their ids.
func (b *Broker) moveOrphans(ctx context.Context, from, to string) ([]string, error) {
	orphans, err := b.Orphans(ctx, from)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range orphans {
		if err := b.putOrphan(ctx, to, r); err != nil {
			return ids, err
		}
		if err := b.Settle(ctx, from, r.ID); err != nil {
			return ids, err
		}
		ids = append(ids, r.ID)
	}
	return ids, nil
}

// addReaped adds ids to the list node's next Beat reports.
func (b *Broker) addReaped(ctx context.Context, node string, ids []string) error {
	return b.claims.do(ctx, func(kv jetstream.KeyValue) error {
		for {
			var have []string
			var rev uint64
			e, err := kv.Get(ctx, "reaped."+node)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
			case err != nil:
				return err
			default:
				rev = e.Revision()
				if err := json.Unmarshal(e.Value(), &have); err != nil {
					return fmt.Errorf("reaped.%s: %w", node, err)
				}
			}
			for _, id := range ids {
				if !slices.Contains(have, id) {
					have = append(have, id)
				}
			}
			value, _ := json.Marshal(have)
			if rev == 0 {
				_, err = kv.Create(ctx, "reaped."+node, value)
			} else {
				_, err = kv.Update(ctx, "reaped."+node, value, rev)
			}
			if err == nil || !(isConflict(err) || errors.Is(err, jetstream.ErrKeyExists)) {
				return err
			}
		}
	})
}

// Orphans returns the records node owes a close webhook for.
func (b *Broker) Orphans(ctx context.Context, node string) ([]bridge.ConnRecord, error) {
	var out []bridge.ConnRecord
	err := b.claims.do(ctx, func(kv jetstream.KeyValue) error {
		out = out[:0]
		return scan(ctx, kv, "orphan."+node+".>", func(e jetstream.KeyValueEntry) error {
			rec, err := decodeRecord(e)
			if err != nil {
				return err
			}
			out = append(out, rec)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("nats liveness: orphans of %s: %w", node, err)
	}
	slices.SortFunc(out, func(a, b bridge.ConnRecord) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Settle drops one orphan of node.
func (b *Broker) Settle(ctx context.Context, node, id string) error {
	err := b.claims.do(ctx, func(kv jetstream.KeyValue) error { return kv.Delete(ctx, orphanKey(node, id)) })
	if err != nil {
		return fmt.Errorf("nats liveness: settle %s of %s: %w", id, node, err)
	}
	return nil
}

// Leave removes node's records and, unless it still owes close webhooks, its registration.
func (b *Broker) Leave(ctx context.Context, node string) error {
	recs, err := b.recordsOf(ctx, node)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := b.DeleteConn(ctx, node, r.ID); err != nil {
			return err
		}
	}
	orphans, err := b.Orphans(ctx, node)
	if err != nil || len(orphans) > 0 {
		return err
	}
	err = b.live.do(ctx, func(kv jetstream.KeyValue) error { return kv.Delete(ctx, node) })
	if err != nil {
		return fmt.Errorf("nats liveness: leave %s: %w", node, err)
	}
	return nil
}
