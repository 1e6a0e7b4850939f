package bridge

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// EnginePublisher is implemented by brokers through which PHP can publish without an HTTP hop:
// Redis `PUBLISH <prefix>:publish '<body>'`, NATS subject `<prefix>.publish`. Every node
// receives each message and applies it to its own connections, so nothing is forwarded again.
type EnginePublisher interface {
	// ServePublishes calls apply with the body of each message PHP published, until ctx ends,
	// then returns (nil or ctx.Err()). apply never blocks on the network; it returns why it
	// refused a body (the server has logged and counted it by then).
	ServePublishes(ctx context.Context, apply func(body []byte) error) error
}

// serveEnginePublishes runs the broker's ServePublishes, if it has one, until ctx ends. The
// channel it returns is closed once that has returned.
func (s *Server) serveEnginePublishes(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	ep, ok := s.broker.(EnginePublisher)
	if !ok {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		if err := ep.ServePublishes(ctx, s.applyEnginePublish); err != nil && !errors.Is(err, context.Canceled) {
			s.log.Error("broker: engine publishes stopped", "err", err)
		}
	}()
	return done
}

// applyEnginePublish carries out a body PHP published through the engine: decoded and checked
// whole exactly as POST /v1/publish does, so a batch with one bad item delivers nothing. Each
// node applies it to its own connections only, since every node receives it.
func (s *Server) applyEnginePublish(body []byte) error {
	var pubs []Publication
	err := fmt.Errorf("body of %d bytes, more than MAX_PUSH_BODY=%d", len(body), s.cfg.MaxPushBody)
	if int64(len(body)) <= s.cfg.MaxPushBody {
		pubs, _, _, err = s.decodePublications(body)
	}
	if err != nil {
		s.metrics.enginePublishesRefused.Inc()
		// The body is PHP's data: its size, never its bytes.
		s.log.Error("broker: engine publish refused", "bytes", len(body), "err", err)
		return err
	}
	for i := range pubs {
		s.hub.Deliver(Envelope{Version: EnvelopeVersion, Origin: engineOrigin, Op: OpPublish, Publication: &pubs[i]})
		s.metrics.publishes.Inc()
	}
	return nil
}

// engineOrigin is the origin of the publications PHP hands the engine: no node's id (node ids
// have no spaces), so every node applies them.
const engineOrigin = "php via broker"

// registerBrokerMetrics adds a broker's own series (reconnects, drops) to /metrics when it
// has any.
func (m *metrics) registerBrokerMetrics(b Broker) {
	if c, ok := b.(prometheus.Collector); ok {
		m.reg.MustRegister(c)
	}
}
