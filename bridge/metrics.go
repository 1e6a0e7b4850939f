package bridge

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// metrics are the server's Prometheus series, served at /metrics on the internal listener. Each
// server has its own registry, so several servers (tests, embedding) never collide. Labels are
// closed sets (event types, outcomes, reasons, limits): never a connection, user or channel.
type metrics struct {
	reg *prometheus.Registry

	connections       prometheus.Gauge
	accepted          prometheus.Counter
	rejected          *prometheus.CounterVec // reason
	closed            *prometheus.CounterVec // initiator
	slowConsumer      prometheus.Counter
	messagesIn        prometheus.Counter
	messagesOut       prometheus.Counter
	bytesIn           prometheus.Counter
	bytesOut          prometheus.Counter
	webhooks          *prometheus.CounterVec   // event, outcome
	webhookDuration   *prometheus.HistogramVec // event
	webhookRetries    *prometheus.CounterVec   // event
	webhooksInFlight  prometheus.Gauge
	webhookSlotWait   prometheus.Gauge
	closeQueue        prometheus.Gauge
	breakerOpen       prometheus.Gauge
	breakerTrips      prometheus.Counter
	limitHits         *prometheus.CounterVec // limit
	publishes         prometheus.Counter
	deliveries        prometheus.Counter
	closeWebhooksLost prometheus.Counter
	envelopesRefused  prometheus.Counter
	// The cluster's (cluster_server.go).
	nodesClaimed      prometheus.Counter
	appPublishRefused prometheus.Counter
}

// Reasons an upgrade is refused, as the rejected metric labels them.
const (
	rejectOrigin        = "origin"
	rejectDraining      = "shutting_down"
	rejectLimit         = "limit"
	rejectPHP           = "php_refused"
	rejectUnavailable   = "php_unavailable"
	rejectMalformed     = "php_bad_reply"
	rejectUpgradeFailed = "upgrade_failed"
	rejectBadHandshake  = "bad_handshake"  // refused before PHP is asked: not a valid RFC 6455 handshake
	rejectHandshakeRate = "handshake_rate" // HANDSHAKES_PER_IP_RATE or MAX_PENDING_HANDSHAKES_PER_IP
)

// Webhook outcomes, as the webhooks metric labels them; one per attempt.
const (
	outcomeOK          = "ok"           // 2xx with a usable reply
	outcomeStatus      = "status"       // non-2xx answer (for open: PHP refused the client)
	outcomeMalformed   = "malformed"    // 2xx whose reply was refused, or an oversize reply
	outcomeError       = "error"        // no answer: refused, cut, timed out
	outcomeBreakerOpen = "breaker_open" // not sent: PHP is considered down
	outcomeNoSlot      = "no_slot"      // not sent: no free slot within WEBHOOK_QUEUE_WAIT (or the caller's deadline)
)

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		f(c)
		return c
	}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		f(g)
		return g
	}
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		f(c)
		return c
	}
	m := &metrics{
		reg:          reg,
		connections:  gauge("wsbridge_connections", "WebSocket connections open now."),
		accepted:     counter("wsbridge_connections_accepted_total", "WebSocket upgrades completed."),
		rejected:     counterVec("wsbridge_connections_rejected_total", "Upgrade requests refused, by reason.", "reason"),
		closed:       counterVec("wsbridge_connections_closed_total", "Connections ended, by who ended them (the close webhook's initiator).", "initiator"),
		slowConsumer: counter("wsbridge_slow_consumer_closes_total", "Clients dropped because they read too slowly (send queue full or write timeout)."),
		messagesIn:   counter("wsbridge_messages_received_total", "Messages received from clients."),
		messagesOut:  counter("wsbridge_messages_sent_total", "Messages written to clients."),
		bytesIn:      counter("wsbridge_received_bytes_total", "Payload bytes of messages received from clients."),
		bytesOut:     counter("wsbridge_sent_bytes_total", "Payload bytes of messages written to clients."),
		webhooks:     counterVec("wsbridge_webhook_requests_total", "Webhook attempts, by event type and outcome (ok, status, malformed, error, breaker_open, no_slot).", "event", "outcome"),
		webhookDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wsbridge_webhook_duration_seconds", Help: "Time of one webhook attempt, from sending to PHP's complete answer.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"event"}),
		webhookRetries:    counterVec("wsbridge_webhook_retries_total", "Webhook attempts that were retries, by event type.", "event"),
		webhooksInFlight:  gauge("wsbridge_webhooks_in_flight", "Webhook requests PHP is working on now (at most WEBHOOK_CONCURRENCY)."),
		webhookSlotWait:   gauge("wsbridge_webhook_slot_queue", "Webhooks waiting for a free WEBHOOK_CONCURRENCY slot."),
		closeQueue:        gauge("wsbridge_close_queue", "Close webhooks waiting to be delivered (rate limit, retries, PHP down)."),
		breakerOpen:       gauge("wsbridge_webhook_breaker_open", "1 while PHP is considered down and webhooks are held back, else 0."),
		breakerTrips:      counter("wsbridge_webhook_breaker_trips_total", "Times PHP was considered down after BREAKER_FAILURES failures in a row."),
		limitHits:         counterVec("wsbridge_limit_hits_total", "Requests, messages and replies refused by a limit, by limit.", "limit"),
		publishes:         counter("wsbridge_publishes_total", "Publications carried out (push API and webhook replies)."),
		deliveries:        counter("wsbridge_deliveries_total", "Messages queued to clients by publications on this node."),
		closeWebhooksLost: counter("wsbridge_close_webhooks_failed_total", "Close webhooks given up after every retry (each is also logged with its event)."),
		envelopesRefused:  counter("wsbridge_broker_envelopes_refused_total", "Envelopes from other nodes refused unapplied: a newer version than this node knows (a rolling upgrade under way), or malformed. Each is also logged."),
		nodesClaimed:      counter("wsbridge_cluster_nodes_claimed_total", "Silent nodes whose connections this node claimed, to send their close webhooks (initiator node_lost)."),
		appPublishRefused: counter("wsbridge_app_publishes_refused_total", "Publications PHP sent through the engine (<prefix>:publish) refused unapplied, as the push API would refuse them. Each is also logged."),
	}
	f(m.webhookDuration)
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Label values that exist from the start, so dashboards and alerts see zeros rather than
	// missing series.
	for _, ev := range []EventType{EventOpen, EventMessage, EventClose} {
		for _, o := range []string{outcomeOK, outcomeStatus, outcomeMalformed, outcomeError, outcomeBreakerOpen, outcomeNoSlot} {
			m.webhooks.WithLabelValues(string(ev), o)
		}
		m.webhookRetries.WithLabelValues(string(ev))
		m.webhookDuration.WithLabelValues(string(ev))
	}
	for _, r := range []string{rejectOrigin, rejectDraining, rejectLimit, rejectPHP, rejectUnavailable, rejectMalformed, rejectUpgradeFailed, rejectBadHandshake, rejectHandshakeRate} {
		m.rejected.WithLabelValues(r)
	}
	for _, l := range []string{"connections", "connections_per_ip", "message_size", "message_rate", "meta_size", "channels", "push_body", "batch"} {
		m.limitHits.WithLabelValues(l)
	}
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

func (m *metrics) webhookAttempt(ev EventType, outcome string, took time.Duration) {
	m.webhooks.WithLabelValues(string(ev), outcome).Inc()
	if outcome != outcomeBreakerOpen && outcome != outcomeNoSlot { // neither was sent
		m.webhookDuration.WithLabelValues(string(ev)).Observe(took.Seconds())
	}
}

func (m *metrics) limit(name string) { m.limitHits.WithLabelValues(name).Inc() }

// counterValue sums a counter, or every series of a counter vector, for /v1/stats.
func counterValue(c prometheus.Collector) uint64 {
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	var sum float64
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) == nil && d.Counter != nil {
			sum += d.Counter.GetValue()
		}
	}
	return uint64(sum)
}

// webhookFailures counts webhook attempts that did not get a usable answer.
func (s *Server) webhookFailures() uint64 {
	var n uint64
	for _, ev := range []EventType{EventOpen, EventMessage, EventClose} {
		for _, o := range []string{outcomeMalformed, outcomeError, outcomeBreakerOpen, outcomeNoSlot} {
			n += counterValue(s.metrics.webhooks.WithLabelValues(string(ev), o))
		}
		if ev != EventOpen { // a non-2xx open answer is PHP refusing a client, not a failure
			n += counterValue(s.metrics.webhooks.WithLabelValues(string(ev), outcomeStatus))
		}
	}
	return n
}
