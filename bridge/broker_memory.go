package bridge

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// MemoryBroker connects the hubs of one process. With a single hub, the default, it has nobody
// to forward to; with several (tests, or several servers embedded in one program) it behaves as
// a cluster broker would, delivering synchronously. It has no engine that can go away, so it
// needs no health check.
type MemoryBroker struct {
	mu    sync.RWMutex
	nodes map[string]func(Envelope)
}

var (
	_ Broker       = (*MemoryBroker)(nil)
	_ NodeRegistry = (*MemoryBroker)(nil)
)

// NewMemoryBroker returns a broker with no nodes.
func NewMemoryBroker() *MemoryBroker {
	return &MemoryBroker{nodes: make(map[string]func(Envelope))}
}

// Publish delivers e to every running node but its origin, on the caller's goroutine: each
// deliver is a hub's, which never blocks, so Publish returns as soon as every node has queued
// e. A context that has ended delivers nothing.
func (b *MemoryBroker) Publish(ctx context.Context, e Envelope) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory broker: %w", err)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	for node, deliver := range b.nodes {
		if node != e.Origin {
			deliver(e)
		}
	}
	return nil
}

// Run registers node until ctx ends.
func (b *MemoryBroker) Run(ctx context.Context, node string, deliver func(Envelope)) error {
	leave := b.Join(node, deliver)
	defer leave()
	<-ctx.Done()
	return nil
}

// Join registers node at once and returns the function that removes it. Run is Join for the
// lifetime of a context; Join lets an embedding program know when the node is in.
func (b *MemoryBroker) Join(node string, deliver func(Envelope)) (leave func()) {
	b.mu.Lock()
	b.nodes[node] = deliver
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		delete(b.nodes, node)
		b.mu.Unlock()
	}
}

// Nodes returns the nodes joined now.
func (b *MemoryBroker) Nodes(context.Context) ([]string, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	nodes := make([]string, 0, len(b.nodes))
	for n := range b.nodes {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	return nodes, nil
}
