package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// heartbeat is a running node's entry in the presence bucket (NodeRegistry). The key is the node id; the value says
// when it was put, for an operator reading the bucket with the nats CLI.
type heartbeat struct {
	Node string    `json:"node"`
	At   time.Time `json:"at"`
}

// heartbeat puts node's key every third of the node timeout until ctx ends, and at once after
// a reconnect. A put that fails (server away, bucket lost with a restarted server) is retried
// on the next beat, reopening or recreating the bucket; nothing else waits for it.
func (b *Broker) heartbeat(ctx context.Context, node string) {
	every := b.nodeTimeout / 3
	tick := time.NewTicker(every)
	defer tick.Stop()
	failing := false
	for {
		pctx, cancel := context.WithTimeout(ctx, every)
		err := b.beat(pctx, node)
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil && !failing:
			failing = true
			b.log.Warn("nats: heartbeat failed; retrying every beat", "node", node, "err", err)
		case err == nil && failing:
			failing = false
			b.log.Info("nats: heartbeat back", "node", node)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-b.reconnected:
		}
	}
}

func (b *Broker) beat(ctx context.Context, node string) error {
	value, _ := json.Marshal(heartbeat{Node: node, At: time.Now().UTC()})
	// A server that restarted has lost the bucket (memory storage): do makes it again now, so
	// a node is listed again as soon as its engine is back, not a beat later.
	err := b.presence.do(ctx, func(kv jetstream.KeyValue) error {
		_, err := kv.Put(ctx, node, value)
		return err
	})
	if err != nil {
		return fmt.Errorf("put heartbeat in %s: %w", b.presence.cfg.Bucket, err)
	}
	return nil
}

// Nodes lists the nodes whose Run is present: its heartbeat younger than the node timeout,
// sorted.
func (b *Broker) Nodes(ctx context.Context) ([]string, error) {
	var keys []string
	err := b.presence.do(ctx, func(kv jetstream.KeyValue) error {
		var err error
		keys, err = kv.Keys(ctx)
		return err
	})
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return []string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nats nodes: list %s: %w", b.presence.cfg.Bucket, err)
	}
	slices.Sort(keys)
	return keys, nil
}
