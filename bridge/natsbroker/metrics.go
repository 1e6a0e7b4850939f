package natsbroker

import "github.com/prometheus/client_golang/prometheus"

// metrics are the broker's own series. The Broker is a prometheus.Collector: the server
// registers it beside its own on /metrics.
type metrics struct {
	disconnects     prometheus.Counter
	reconnects      prometheus.Counter
	publishFailures prometheus.Counter
	undecodable     prometheus.Counter
	dropped         *prometheus.Desc
}

func newMetrics() *metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	return &metrics{
		disconnects:     counter("wsbridge_nats_disconnects_total", "Times the connection to the NATS server was lost."),
		reconnects:      counter("wsbridge_nats_reconnects_total", "Times the connection to the NATS server came back (subscriptions replayed, node registered again)."),
		publishFailures: counter("wsbridge_nats_publish_failures_total", "Envelopes not sent to the other nodes: the server was unreachable (the caller got an error)."),
		undecodable:     counter("wsbridge_nats_undecodable_total", "Messages on the envelopes subject that were not JSON envelopes, dropped."),
		dropped: prometheus.NewDesc("wsbridge_nats_dropped_total",
			"Messages the NATS client dropped because this node fell behind (slow consumer: more than the pending limits waiting).", nil, nil),
	}
}

// Describe and Collect make the broker a prometheus.Collector.
func (b *Broker) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range b.metrics.counters() {
		c.Describe(ch)
	}
	ch <- b.metrics.dropped
}

func (b *Broker) Collect(ch chan<- prometheus.Metric) {
	for _, c := range b.metrics.counters() {
		c.Collect(ch)
	}
	b.mu.Lock()
	total := float64(b.droppedClosed)
	for _, s := range b.subs {
		if n, err := s.Dropped(); err == nil {
			total += float64(n)
		}
	}
	b.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(b.metrics.dropped, prometheus.CounterValue, total)
}

func (m *metrics) counters() []prometheus.Counter {
	return []prometheus.Counter{m.disconnects, m.reconnects, m.publishFailures, m.undecodable}
}
