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

// heartbeat is a node's entry in the registry bucket. The key is the node id; the value says
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
	kv, err := b.openBucket(ctx)
	if err != nil {
		return err
	}
	value, _ := json.Marshal(heartbeat{Node: node, At: time.Now().UTC()})
	_, err = kv.Put(ctx, node, value)
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrStreamNotFound) {
		// A server that restarted has lost the bucket (memory storage): make it again now,
		// so a node is listed again as soon as its engine is back.
		b.forgetBucket()
		if kv, err = b.openBucket(ctx); err != nil {
			return err
		}
		_, err = kv.Put(ctx, node, value)
	}
	if err != nil {
		return fmt.Errorf("put heartbeat in %s: %w", b.bucket, err)
	}
	return nil
}

// openBucket returns the registry bucket, creating it on first use. Its TTL is the node timeout;
// nodes configured with another timeout update it to theirs, so keep the value the same on
// every node (docs/cluster-nats.md).
func (b *Broker) openBucket(ctx context.Context) (jetstream.KeyValue, error) {
	if kv := b.bucketIfOpen(); kv != nil {
		return kv, nil
	}
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      b.bucket,
		Description: "wsbridge nodes: one key per live node, put every third of WSBRIDGE_NODE_TIMEOUT",
		TTL:         b.nodeTimeout,
		History:     1,
		// Heartbeats are worth nothing after a restart: memory, not disk.
		Storage: jetstream.MemoryStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", b.bucket, err)
	}
	b.mu.Lock()
	b.kv = kv
	b.mu.Unlock()
	return kv, nil
}

func (b *Broker) bucketIfOpen() jetstream.KeyValue {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.kv
}

func (b *Broker) forgetBucket() {
	b.mu.Lock()
	b.kv = nil
	b.mu.Unlock()
}

// Nodes lists the nodes whose heartbeat is younger than the node timeout, sorted.
func (b *Broker) Nodes(ctx context.Context) ([]string, error) {
	kv, err := b.openBucket(ctx)
	if err != nil {
		return nil, fmt.Errorf("nats nodes: %w", err)
	}
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return []string{}, nil
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			b.forgetBucket()
		}
		return nil, fmt.Errorf("nats nodes: list %s: %w", b.bucket, err)
	}
	slices.Sort(keys)
	return keys, nil
}
