package bridge

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Server is one wsbridge node: the public listener's WebSocket endpoints and reverse proxy, the
// internal listener's push API, and the connections between them.
type Server struct {
	cfg    *Config
	log    *slog.Logger
	node   string
	hub    *hub
	broker Broker
	hooks  *webhooks
	// cluster is this node's part of the cluster state; nil for a broker without it.
	cluster *clusterNode
	limits  limits
	fwd     []string // canonical names of forwarded handshake headers
	start   time.Time

	// brokerTimeout bounds a call to the broker (BROKER_TIMEOUT); 0 for the MemoryBroker.
	brokerTimeout time.Duration

	// base outlives every connection: it is cancelled only when shutdown gives up waiting, to
	// cut off what is still running.
	base       context.Context
	cancelBase context.CancelFunc

	// mu orders "a connection starts" against "shutdown begins", so that shutdown waits for
	// every connection it did not refuse.
	mu       sync.Mutex
	draining atomic.Bool
	active   sync.WaitGroup
	pending  atomic.Int64 // connections counted in active, for the shutdown report

	metrics *metrics
	// drainStarted is closed when shutdown begins: queued close webhooks stop waiting for
	// CLOSE_RATE and go as fast as WEBHOOK_CONCURRENCY allows.
	drainStarted chan struct{}
	closeLimiter *rate.Limiter
	admission    admission
	certs        *certReloader    // the public listener's certificate; nil without TLS_CERT_FILE
	handshakes   *handshakeLimits // per-address pending handshakes and handshake rate
	trusted      []netip.Prefix   // TRUSTED_PROXIES
	pusherHooks  *pusherHooks     // Pusher-format webhooks (pusherhook.go); nil without PUSHER_WEBHOOK_URL
	pusher       *pusherApp       // the Pusher protocol mode (pusher.go); nil when off
}

// New builds a server from a validated configuration. broker nil means a single node
// (a MemoryBroker of its own).
func New(cfg Config, log *slog.Logger, broker Broker) *Server {
	if broker == nil {
		broker = NewMemoryBroker()
	}
	bounded := boundedBroker{Broker: broker, timeout: cfg.BrokerTimeout}
	if _, ok := broker.(*MemoryBroker); ok {
		bounded.timeout = 0 // it never waits (broker_memory.go)
	}
	node := cfg.NodeID
	if node == "" {
		node = strings.ToLower(rand.Text()[:8])
	}
	base, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:        &cfg,
		log:        log.With("node", node),
		node:       node,
		broker:     broker,
		hub:        newHub(node, bounded),
		limits:     cfg.limits(),
		fwd:        headerCanonical(cfg.ForwardHeaders),
		start:      time.Now(),
		base:       base,
		cancelBase: cancel,

		metrics:      newMetrics(),
		drainStarted: make(chan struct{}),
		closeLimiter: rate.NewLimiter(rate.Limit(cfg.CloseRate), cfg.CloseBurst),
		admission:    admission{max: cfg.MaxConnections, maxPerIP: cfg.MaxConnectionsPerIP, perIP: map[string]int{}},
	}
	s.hub.maxChannels = cfg.MaxChannels
	s.hub.history = newHistory(s.cfg, broker, s.log)
	s.brokerTimeout = bounded.timeout
	s.handshakes = newHandshakeLimits(cfg.MaxPendingHandshakesPerIP, cfg.HandshakeRatePerIP, cfg.HandshakeBurstPerIP)
	s.trusted, _ = parseTrusted(cfg.TrustedProxies) // validated by LoadConfig
	if len(s.trusted) == 0 && cfg.ClientIPHeader != "" {
		s.log.Warn("WSBRIDGE_CLIENT_IP_HEADER is set without WSBRIDGE_TRUSTED_PROXIES: every peer is believed, so a client that reaches this port directly can claim any address; list your proxies in WSBRIDGE_TRUSTED_PROXIES", "header", cfg.ClientIPHeader)
	}
	if cfg.Compression == "on" {
		s.hub.deflateMin = max(cfg.CompressionThreshold, 1)
	}
	s.hooks = newWebhooks(s.cfg, s.metrics)
	s.hooks.log = s.log
	s.joinCluster(broker)
	if app, ok := s.pusherCreds(); ok && cfg.PusherWebhookURL != nil {
		s.pusherHooks = newPusherHooks(cfg.PusherWebhookURL, app, s.cfg, s.log, s.metrics, s.hooks.backoff)
		s.hub.onOccupancy = s.pusherOccupancy
	}
	s.pusher = newPusherApp(s.cfg)
	s.hub.pusher = s.pusher != nil
	if cfg.WebhookSecret == "" {
		s.log.Warn("WSBRIDGE_WEBHOOK_SECRET is not set: webhooks are unsigned, and whoever reaches PHP's webhook URL can forge open, message and close events; set a secret and verify it in PHP (docs/PROTOCOL.md)")
	}
	if cfg.TLSCertFile != "" {
		s.certs = newCertReloader(cfg.TLSCertFile, cfg.TLSKeyFile, s.log)
	}
	return s
}

// Node returns this node's id, the prefix of its connection ids.
func (s *Server) Node() string { return s.node }

// newConnID returns a URL-safe id that names this node: "<node>.<16 random base32 chars>".
func (s *Server) newConnID() string { return s.node + "." + rand.Text()[:16] }

// newEvent starts a webhook body with the fields every event carries.
func (s *Server) newEvent(t EventType, transport, connID string, st state) *Event {
	if st.Channels == nil {
		st.Channels = []string{}
	}
	return &Event{
		Type:         t,
		EventID:      rand.Text(),
		ConnectionID: connID,
		Transport:    transport,
		UserID:       st.UserID,
		Meta:         st.Meta,
		Channels:     st.Channels,
		Time:         eventTime(time.Now()),
	}
}

// errMalformedReply marks a reply PHP sent with a 2xx status but that was refused: the event
// reached PHP, only its answer is unusable.
var errMalformedReply = errors.New("malformed reply")

// call sends a message or close webhook and returns PHP's decoded reply. A non-2xx status or a
// malformed reply is an error, and nothing of such a reply is applied.
func (s *Server) call(ctx context.Context, ev *Event, traceparent string, hold holdPolicy) (*Reply, error) {
	res, err := s.hooks.send(ctx, ev, traceparent, hold)
	if l := limitName(err); l != "" {
		s.metrics.limit(l)
	}
	if err != nil {
		return nil, err
	}
	if !res.OK() {
		return nil, fmt.Errorf("PHP answered the %s webhook with status %d", ev.Type, res.Status)
	}
	return res.Reply, nil
}

// apply carries out a reply for connection c: state first, then frames to c, then
// publications, then the close, so a "send" before a "close" reaches the client. State that
// cannot be applied (a join beyond MAX_CHANNELS) refuses the whole reply.
func (s *Server) apply(ctx context.Context, c transport, r *Reply) error {
	if r.UserID != nil || r.Meta != nil || len(r.Join) > 0 || len(r.Leave) > 0 {
		if err := s.hub.Update(c.ID(), r.UserID, r.Meta, r.Join, r.Leave); err != nil {
			if l := limitName(err); l != "" {
				s.metrics.limit(l)
			}
			return err
		}
		s.hub.history.joined(ctx, s.hub, r.Join, Targets{Connections: []string{c.ID()}}) // history.go
	}
	if len(r.Send) > 0 {
		c.sendReply(r.Send)
	}
	if len(r.Publish) > 1 && s.brokerTimeout > 0 {
		// One bound for the whole reply, not one per publication: this runs on the
		// connection's reader, which a slow broker must not hold longer than BROKER_TIMEOUT.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.brokerTimeout)
		defer cancel()
	}
	for i := range r.Publish {
		if _, err := s.publish(ctx, &r.Publish[i]); err != nil {
			c.base().log.Error("publish from reply failed", "err", err)
		}
	}
	if r.Close != nil {
		c.Close(r.Close.Code, r.Close.Reason, InitiatorPHP)
	}
	return nil
}

// deliver applies an envelope another node published, if this node understands it: one of a
// newer version (a node already upgraded, during a rolling upgrade) or malformed is refused
// whole, logged and counted, never half-applied.
func (s *Server) deliver(e Envelope) {
	if err := e.check(); err != nil {
		s.metrics.envelopesRefused.Inc()
		s.log.Error("broker: envelope refused", "origin", e.Origin, "op", string(e.Op), "version", e.Version, "err", err)
		return
	}
	if e.Op == opPresence {
		s.pusherPresenceDeliver(e) // the Pusher mode's state, not the hub's (pushercluster.go)
		return
	}
	s.hub.Deliver(e)
}

// publish carries out one publication and counts it.
func (s *Server) publish(ctx context.Context, p *Publication) (int, error) {
	n, err := s.hub.Publish(ctx, p)
	if err != nil {
		return n, err
	}
	s.metrics.publishes.Inc()
	s.metrics.deliveries.Add(float64(n))
	return n, nil
}

// enter registers a starting connection unless shutdown has begun.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return false
	}
	s.active.Add(1)
	s.pending.Add(1)
	return true
}

// leave ends what enter began, once the connection's close webhook was answered.
func (s *Server) leave() {
	s.pending.Add(-1)
	s.active.Done()
}

// Shutdown closes every connection with 1001 and waits until each close webhook was answered,
// or ctx ends. New connections are refused with 503 from the moment it is called, and
// /readyz answers 503.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.draining.Swap(true) {
		close(s.drainStarted)
	}
	s.mu.Unlock()
	n := s.hub.CloseAll(1001, "server shutdown", InitiatorShutdown)
	s.log.Info("shutdown: closing connections", "count", n)

	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("shutdown: gave up waiting for %d connection(s) to close and deliver their close webhook: %w", s.pending.Load(), ctx.Err())
		s.cancelBase()
		// With base cancelled every read and webhook returns at once. A close handshake already
		// under way cannot be cut short (coder/websocket waits up to 5 s for the peer), so the
		// stragglers get one second and are then abandoned: the deadline is the operator's.
		select {
		case <-done:
		case <-time.After(time.Second):
		}
	}
	s.cancelBase()
	s.hooks.closeIdle()
	return err
}

// Serve runs the public and internal listeners until ctx ends, then shuts down in order: stop
// accepting, close every connection with 1001, deliver every close webhook, stop the internal
// listener. It is bounded by SHUTDOWN_TIMEOUT.
func (s *Server) Serve(ctx context.Context, public, internal net.Listener) error {
	pub := s.publicServer()
	in := &http.Server{Handler: s.InternalHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	if s.certs != nil {
		// The files were checked at start but may have changed since: nothing is served
		// without a certificate, and never plain HTTP in place of TLS.
		if err := s.certs.load(); err != nil {
			public.Close()
			internal.Close()
			return fmt.Errorf("public listener: %w", err)
		}
		pub.TLSConfig = s.certs.tlsConfig()
		// GODEBUG is read here, not in main: it is not wsbridge's configuration but the
		// process environment net/http itself read at init, and it must be the same one.
		pub.Protocols = publicProtocols(os.Getenv("GODEBUG"), s.log)
		pub.ErrorLog = log.New(handshakeErrorLog{s.log}, "", 0)
	}

	// The broker outlives ctx: close webhooks answered during the drain may still publish to
	// the other nodes. It stops last.
	brokerCtx, stopBroker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBroker()
	brokerDone := make(chan error, 1)
	go func() { brokerDone <- s.broker.Run(brokerCtx, s.node, s.deliver) }()
	clusterDone := s.runCluster(brokerCtx)
	defer s.sweepHistory(brokerCtx)()

	errc := make(chan error, 2)
	go func() { errc <- fmt.Errorf("public listener: %w", servePublic(pub, public)) }()
	go func() { errc <- fmt.Errorf("internal listener: %w", in.Serve(internal)) }()
	s.log.Info("listening", "public", public.Addr().String(), "internal", internal.Addr().String(), "tls", s.certs != nil)

	var runErr error
	brokerEnded := false
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	case err := <-brokerDone:
		// A broker that gives up leaves this node deaf to the others: serving on would answer
		// pushes that half the cluster never sees. Stop, and say why.
		brokerEnded = true
		if err == nil {
			err = errors.New("Run returned before shutdown")
		}
		runErr = fmt.Errorf("broker stopped: %w", err)
		s.log.Error("broker stopped: shutting down", "err", err)
	}

	s.log.Info("shutting down", "timeout", s.cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	// http.Server.Shutdown stops the listener and waits for plain requests, but ignores
	// hijacked WebSockets; s.Shutdown handles those. Both run at once under one deadline.
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Shutdown(sctx) }()
	drainErr := s.Shutdown(sctx)
	pubErr := <-pubDone
	inErr := in.Shutdown(sctx)
	clusterErr := s.leaveCluster(sctx)
	stopBroker()
	<-clusterDone
	var brokerErr error
	if !brokerEnded {
		select {
		case err := <-brokerDone:
			if err != nil && !errors.Is(err, context.Canceled) {
				brokerErr = fmt.Errorf("broker: %w", err)
			}
		case <-sctx.Done():
			brokerErr = errors.New("broker: Run did not return within SHUTDOWN_TIMEOUT of being stopped")
		}
	}
	return errors.Join(runErr, drainErr, pubErr, inErr, clusterErr, brokerErr)
}

// publicServer is the public listener's HTTP server.
func (s *Server) publicServer() *http.Server {
	// Headers are bounded in time and size here; bodies (only proxied requests have one) by
	// PROXY_BODY_IDLE_TIMEOUT between reads, which lets a slow upload that keeps sending finish.
	return &http.Server{Handler: s.PublicHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: s.cfg.MaxHeaderBytes, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
}

// Listen opens a listener for addr: host:port, or unix:/path for a unix socket (a stale socket
// file is replaced).
func Listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, err
		}
		// The push API can reach every client: only the owner and its group may connect.
		if err := os.Chmod(path, 0o660); err != nil {
			ln.Close()
			return nil, fmt.Errorf("restrict socket %s: %w", path, err)
		}
		return ln, nil
	}
	return net.Listen("tcp", addr)
}
