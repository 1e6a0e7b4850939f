package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// bucket is one JetStream key-value bucket, opened (or created) on first use and made again
// when the server has lost it: a server restarted without its store, or memory storage.
type bucket struct {
	js  jetstream.JetStream
	cfg jetstream.KeyValueConfig

	mu sync.Mutex
	kv jetstream.KeyValue // nil until opened
}

func (k *bucket) open(ctx context.Context) (jetstream.KeyValue, error) {
	k.mu.Lock()
	kv := k.kv
	k.mu.Unlock()
	if kv != nil {
		return kv, nil
	}
	// CreateOrUpdate, not Create: nodes configured with another NODE_TIMEOUT bring the TTL
	// of the presence bucket to theirs, so keep it the same on every node.
	kv, err := k.js.CreateOrUpdateKeyValue(ctx, k.cfg)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", k.cfg.Bucket, err)
	}
	k.mu.Lock()
	k.kv = kv
	k.mu.Unlock()
	return kv, nil
}

// forget drops the handle, so that the next use opens the bucket again (creating it if the
// server no longer has it).
func (k *bucket) forget() {
	k.mu.Lock()
	k.kv = nil
	k.mu.Unlock()
}

// lost reports errors that mean the bucket's stream is gone from the server.
func lost(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, jetstream.ErrBucketNotFound)
}

// do runs fn on the bucket; if the server had lost it, once more on the bucket made afresh.
func (k *bucket) do(ctx context.Context, fn func(jetstream.KeyValue) error) error {
	for try := 0; ; try++ {
		kv, err := k.open(ctx)
		if err != nil {
			return err
		}
		err = fn(kv)
		if err == nil || !lost(err) || try > 0 {
			return err
		}
		k.forget()
	}
}

// scan calls fn with every live entry of the bucket (or of the keys matching filter), in one
// pass of an ordered consumer rather than a round trip per key.
func scan(ctx context.Context, kv jetstream.KeyValue, filter string, fn func(jetstream.KeyValueEntry) error) error {
	var w jetstream.KeyWatcher
	var err error
	if filter == "" {
		w, err = kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	} else {
		w, err = kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	}
	if err != nil {
		return fmt.Errorf("read bucket %s: %w", kv.Bucket(), err)
	}
	defer w.Stop()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("read bucket %s: watcher stopped", kv.Bucket())
			}
			if e == nil {
				return nil // the initial values are all in
			}
			if err := fn(e); err != nil {
				return err
			}
		case <-ctx.Done():
			return fmt.Errorf("read bucket %s: %w", kv.Bucket(), ctx.Err())
		}
	}
}
