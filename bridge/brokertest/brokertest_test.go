package brokertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/wsbridge/wsbridge/bridge"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// engine is a stand-in for a Redis or NATS server that can be stopped and started: it forgets
// every subscription when it stops, and refuses publishes while down. Envelopes cross it as
// JSON, as they cross a network.
type engine struct {
	mu      sync.Mutex
	up      bool
	subs    map[*sub]struct{}
	changed chan struct{} // closed and replaced on every Stop and Start
}

type sub struct {
	node    string
	deliver func(bridge.Envelope)
}

var errDown = errors.New("engine unreachable")

func newEngine() *engine {
	return &engine{up: true, subs: map[*sub]struct{}{}, changed: make(chan struct{})}
}

func (e *engine) set(up bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.up = up
	if !up {
		clear(e.subs)
	}
	close(e.changed)
	e.changed = make(chan struct{})
}

// client is one node's connection to the engine.
type client struct{ e *engine }

var (
	_ bridge.Broker       = client{}
	_ bridge.BrokerHealth = client{}
	_ bridge.NodeRegistry = client{}
)

func (c client) Publish(ctx context.Context, env bridge.Envelope) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	b, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("encode envelope: %w", err)
	}
	c.e.mu.Lock()
	defer c.e.mu.Unlock()
	if !c.e.up {
		return fmt.Errorf("publish: %w", errDown)
	}
	for s := range c.e.subs {
		if s.node == env.Origin {
			continue
		}
		var got bridge.Envelope
		if err := json.Unmarshal(b, &got); err != nil {
			return fmt.Errorf("decode envelope: %w", err)
		}
		s.deliver(got)
	}
	return nil
}

// Run subscribes whenever the engine is up, and again after each restart.
func (c client) Run(ctx context.Context, node string, deliver func(bridge.Envelope)) error {
	for {
		c.e.mu.Lock()
		changed := c.e.changed
		var s *sub
		if c.e.up {
			s = &sub{node, deliver}
			c.e.subs[s] = struct{}{}
		}
		c.e.mu.Unlock()
		select {
		case <-ctx.Done():
			c.e.mu.Lock()
			delete(c.e.subs, s)
			c.e.mu.Unlock()
			return nil
		case <-changed:
		}
	}
}

func (c client) Healthy(context.Context) error {
	c.e.mu.Lock()
	defer c.e.mu.Unlock()
	if !c.e.up {
		return errDown
	}
	return nil
}

func (c client) Nodes(context.Context) ([]string, error) {
	c.e.mu.Lock()
	defer c.e.mu.Unlock()
	if !c.e.up {
		return nil, errDown
	}
	var nodes []string
	for s := range c.e.subs {
		nodes = append(nodes, s.node)
	}
	slices.Sort(nodes)
	return slices.Compact(nodes), nil
}

// The suite runs in full, the engine subtest included, against a broker with an engine that
// goes away and comes back, that has a health check and a node registry.
func TestSuiteWithAnEngine(t *testing.T) {
	Run(t, func(t *testing.T) Cluster {
		e := newEngine()
		return Cluster{
			Node:  func(*testing.T) bridge.Broker { return client{e} },
			Stop:  func(*testing.T) { e.set(false) },
			Start: func(*testing.T) { e.set(true) },
		}
	})
}
