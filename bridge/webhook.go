package bridge

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Webhook headers. Clients can never set them: the proxy strips them from requests it forwards
// and FORWARD_HEADERS refuses them.
const (
	HeaderEvent      = "WsBridge-Event"
	HeaderConnection = "WsBridge-Connection"
	HeaderEventID    = "WsBridge-Event-Id"
	HeaderSignature  = "WsBridge-Signature"
	HeaderAttempt    = "WsBridge-Attempt"
)

// webhooks sends events to PHP: an explicit header policy, every answer read whole and
// size-limited, at most WEBHOOK_CONCURRENCY requests at once, each slot holding one keep-alive
// connection (hookconn.go). On top of that it retries with backoff and holds back while PHP is
// down (breaker).
type webhooks struct {
	cfg     *Config
	secret  []byte
	limits  limits
	metrics *metrics
	breaker *breaker
	lastOK  atomic.Int64 // unix nanoseconds of PHP's last answer below 500
	// slots caps the requests in flight over all connections, and each holds the keep-alive
	// connection its requests use. A webhook waits for a slot (WEBHOOK_QUEUE_WAIT) rather than
	// piling up inside PHP-FPM's backlog; the wait is not part of the attempt's timeout.
	slots chan *hookSlot
	// fcgi is the FastCGI URL of each event type (fcgi.go), nil where it is HTTP.
	fcgi fcgiTargets
	log  *slog.Logger // PHP's FastCGI stderr; nil: not logged
	// openGate holds one token per slot an open webhook holds, so that opens never take more
	// than WEBHOOK_OPEN_SHARE of the slots: a flood of handshakes, which any stranger can send,
	// cannot delay the messages of connections PHP accepted. Nil when opens may take them all.
	openGate chan struct{}
}

func newWebhooks(cfg *Config, m *metrics) *webhooks {
	w := &webhooks{
		cfg:     cfg,
		secret:  []byte(cfg.WebhookSecret),
		limits:  cfg.limits(),
		metrics: m,
		breaker: newBreaker(cfg.BreakerFailures, cfg.BreakerCooldown, func(open, tripped bool) {
			if open {
				m.breakerOpen.Set(1)
			} else {
				m.breakerOpen.Set(0)
			}
			if tripped {
				m.breakerTrips.Inc()
			}
		}),
		slots: slotsOf(cfg.WebhookConcurrency),
		fcgi:  newFCGITargets(&cfg.WebhookConfig),
	}
	if n := openSlots(cfg.WebhookConcurrency, cfg.WebhookOpenShare); n < cfg.WebhookConcurrency {
		w.openGate = make(chan struct{}, n)
	}
	return w
}

// openSlots is how many of n slots open webhooks may hold: share of them rounded down, at
// least one (with a single slot, opens and messages share it).
func openSlots(n int, share float64) int {
	return max(1, int(float64(n)*share))
}

// hookSlot is one webhook slot's connections: HTTP/1.1 (hookconn.go) or FastCGI (fcgiconn.go),
// whichever the event's URL names. Only one of them is open unless the event types' URLs mix
// the two.
type hookSlot struct {
	http hookConn
	fcgi fcgiConn
}

func (s *hookSlot) close() {
	s.http.close()
	s.fcgi.close()
}

func slotsOf(n int) chan *hookSlot {
	slots := make(chan *hookSlot, n)
	for range n {
		slots <- &hookSlot{}
	}
	return slots
}

// acquire waits for a free slot for an event of type t, at most WEBHOOK_QUEUE_WAIT or until
// ctx ends. Its error wraps errNoSlot: nothing was sent. The caller gives the slot back with
// release.
func (w *webhooks) acquire(ctx context.Context, t EventType) (*hookSlot, error) {
	gate := w.openGate
	if t != EventOpen {
		gate = nil
	}
	gated := gate == nil
	if !gated {
		select {
		case gate <- struct{}{}:
			gated = true
		default:
		}
	}
	if gated {
		select {
		case hc := <-w.slots: // the usual case: no timer, nothing counted as waiting
			return hc, nil
		default:
		}
	}
	w.metrics.webhookSlotWait.Inc()
	defer w.metrics.webhookSlotWait.Dec()
	timer := time.NewTimer(w.cfg.WebhookQueueWait)
	defer timer.Stop()
	if !gated {
		select {
		case gate <- struct{}{}:
		case <-timer.C:
			return nil, w.noSlot(t, nil)
		case <-ctx.Done():
			return nil, w.noSlot(t, ctx.Err())
		}
	}
	var err error
	select {
	case hc := <-w.slots:
		return hc, nil
	case <-timer.C:
		err = w.noSlot(t, nil)
	case <-ctx.Done():
		err = w.noSlot(t, ctx.Err())
	}
	if gate != nil {
		<-gate
	}
	return nil, err
}

// release gives back a slot acquire handed out for an event of type t.
func (w *webhooks) release(hc *hookSlot, t EventType) {
	w.slots <- hc
	if t == EventOpen && w.openGate != nil {
		<-w.openGate
	}
}

func (w *webhooks) noSlot(t EventType, cause error) error {
	held := cap(w.slots)
	if t == EventOpen && w.openGate != nil {
		held = cap(w.openGate)
	}
	if cause != nil {
		return fmt.Errorf("%w for the %s webhook (%d may be in flight): %w", errNoSlot, t, held, cause)
	}
	return fmt.Errorf("%w for the %s webhook (%d may be in flight) within WEBHOOK_QUEUE_WAIT=%s", errNoSlot, t, held, w.cfg.WebhookQueueWait)
}

// closeIdle closes the kept-alive connections of the slots that are free; at shutdown, all.
func (w *webhooks) closeIdle() {
	var free []*hookSlot
	for len(free) < cap(w.slots) {
		select {
		case hc := <-w.slots:
			hc.close()
			free = append(free, hc)
			continue
		default:
		}
		break
	}
	for _, hc := range free {
		w.slots <- hc
	}
}

// webhookResult is PHP's answer to one webhook.
type webhookResult struct {
	Status int
	Header http.Header
	Body   []byte
	Reply  *Reply // decoded when the status is 2xx
}

// OK reports a 2xx status.
func (r *webhookResult) OK() bool { return r.Status >= 200 && r.Status < 300 }

var (
	// errBackend marks failures to get any answer from PHP: unreachable, timed out, cut off,
	// or held back because PHP is considered down.
	errBackend = errors.New("PHP backend unavailable")
	// errBreakerOpen marks an attempt that was not sent because PHP is considered down.
	errBreakerOpen = fmt.Errorf("%w: held back after repeated failures (BREAKER_FAILURES)", errBackend)
	// errNoSlot marks an attempt that was not sent because every webhook slot stayed busy: PHP
	// is slow or overloaded, not failing, and the breaker does not count it.
	errNoSlot = fmt.Errorf("%w: no free webhook slot", errBackend)
)

// holdPolicy says what a webhook does while the breaker holds PHP back.
type holdPolicy int

const (
	// failFast gives up at once: an open webhook, whose client should get 503 now.
	failFast holdPolicy = iota
	// holdCounts counts each held-back attempt as a failed one and waits for the next probe
	// time: a message webhook, whose client is paused meanwhile and must not wait forever.
	holdCounts
	// holdWaits waits for PHP to come back without spending retries while it is unreachable
	// (held back, connection refused, 502/503/504): a close webhook, which has no client
	// waiting and must outlast an FPM restart. Timeouts and other 5xx still count.
	holdWaits
)

// send posts ev and returns PHP's answer, whatever its status, retrying (same event id) on no
// answer and on 5xx up to WEBHOOK_RETRIES times. A 2xx answer's reply is decoded into
// res.Reply. An error means no usable answer arrived; it wraps errBackend, or errMalformedReply
// for a 2xx reply that was refused (too large, or not a valid reply: nothing of it applies).
func (w *webhooks) send(ctx context.Context, ev *Event, traceparent string, hold holdPolicy) (*webhookResult, error) {
	body, err := encodeEvent(ev)
	if err != nil {
		return nil, fmt.Errorf("encode %s event: %w", ev.Type, err)
	}
	sent, spent := 0, 0 // attempts sent; failures that count against WEBHOOK_RETRIES
	for round := 1; ; round++ {
		ok, probe, retryAt, changed := w.breaker.enter(time.Now())
		var res *webhookResult
		if ok {
			var took time.Duration
			res, took, err = w.attempt(ctx, ev, body, traceparent, sent+1)
			switch {
			case errors.Is(err, errNoSlot):
				// Never sent: it says nothing about PHP, and is no attempt PHP could count.
				w.breaker.abandon(probe)
				w.metrics.webhookAttempt(ev.Type, outcomeNoSlot, 0)
			default:
				sent++
				success := err == nil && res.Status < 500 || errors.Is(err, errMalformedReply)
				if !success && ctx.Err() != nil {
					w.breaker.abandon(probe) // the caller gave up; PHP is not to blame
				} else {
					w.breaker.exit(probe, success)
				}
				w.metrics.webhookAttempt(ev.Type, attemptOutcome(res, err), took)
				if success || !retryable(res, err) {
					return res, err
				}
			}
			if ctx.Err() != nil {
				return res, err
			}
		} else {
			w.metrics.webhookAttempt(ev.Type, outcomeBreakerOpen, 0)
			res, err = nil, errBreakerOpen
			if hold == failFast {
				return nil, err
			}
		}
		if hold != holdWaits || !(errors.Is(err, errBreakerOpen) || errors.Is(err, errNoSlot) || unreachable(res, err)) {
			if spent++; spent > w.cfg.WebhookRetries {
				return res, err
			}
		}
		wait := w.backoff(round)
		if !ok {
			wait = max(wait, time.Until(retryAt)) // retryAt is zero while a probe is out
		}
		if !sleep(ctx, wait, changed) {
			return res, err
		}
	}
}

// attempt is one POST of body, attempt number n, once a slot is free: WEBHOOK_TIMEOUT starts
// when the slot is held, so time spent queueing behind other webhooks never makes an attempt
// PHP answered in time look like a PHP failure. took is the time from holding the slot to the
// answer. An error wrapping errNoSlot means nothing was sent.
func (w *webhooks) attempt(ctx context.Context, ev *Event, body []byte, traceparent string, n int) (res *webhookResult, took time.Duration, err error) {
	hc, err := w.acquire(ctx, ev.Type)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	w.metrics.webhooksInFlight.Inc()
	defer func() {
		took = time.Since(start)
		w.metrics.webhooksInFlight.Dec()
		w.release(hc, ev.Type)
	}()
	if n > 1 {
		w.metrics.webhookRetries.WithLabelValues(string(ev.Type)).Inc()
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.WebhookTimeout)
	defer cancel()

	req := &hookRequest{url: w.cfg.webhookURL(ev.Type), body: body, header: make([]headerField, 0, 8)}
	req.header = append(req.header,
		headerField{"Content-Type", "application/json"},
		headerField{"User-Agent", "wsbridge"},
		headerField{HeaderEvent, string(ev.Type)},
		headerField{HeaderConnection, ev.ConnectionID},
		headerField{HeaderEventID, ev.EventID},
		headerField{HeaderAttempt, strconv.Itoa(n)})
	if len(w.secret) > 0 {
		// Signed per attempt, so a retry carries a fresh timestamp within PHP's tolerance.
		req.header = append(req.header, headerField{HeaderSignature, hc.http.sign(w.secret, time.Now(), body)})
	}
	if traceparent != "" {
		req.header = append(req.header, headerField{"Traceparent", traceparent})
	}

	// Redirects are not followed (a webhook is a POST to a fixed URL), no proxy is used, and no
	// compression is asked for: PHP's replies are small JSON.
	var resp *http.Response
	var b []byte
	if t := w.fcgi.of(ev.Type); t != nil {
		resp, b, err = hc.fcgi.do(ctx, t, req, w.cfg.WebhookMaxReply, w.log)
	} else {
		resp, b, err = hc.http.do(ctx, req, w.cfg.WebhookMaxReply)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %s webhook: %w", errBackend, ev.Type, err)
	}
	if int64(len(b)) > w.cfg.WebhookMaxReply {
		// The rest is not read: the connection is dropped, which beats reading an unbounded
		// reply.
		return &webhookResult{Status: resp.StatusCode, Header: resp.Header}, 0,
			fmt.Errorf("%w: %s reply is larger than WEBHOOK_MAX_REPLY (%d bytes)", errMalformedReply, ev.Type, w.cfg.WebhookMaxReply)
	}
	res = &webhookResult{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if res.Status < 500 {
		w.lastOK.Store(time.Now().UnixNano())
	}
	if res.OK() {
		if res.Reply, err = decodeReply(ev.Type, b, w.limits); err != nil {
			return res, 0, fmt.Errorf("%w: %s reply refused: %w", errMalformedReply, ev.Type, err)
		}
	}
	return res, 0, nil
}

// readyFresh is how old the last webhook outcomes may be and still decide readiness on their
// own: what PHP did in the last second is the best evidence there is. Older than that (a quiet
// bridge, or one taken out of rotation that gets no traffic to judge by), a TCP dial decides.
const readyFresh = time.Second

// readyFailures failed attempts in a row, over all connections, make the bridge unready: one
// may be PHP failing on one event (a fatal error in its handler); two in a row, with no answer
// below 500 between them, is PHP failing.
const readyFailures = 2

// reachable reports why PHP cannot be reached, or nil. It follows what the webhooks see, so
// that /readyz turns as soon as they fail rather than a window later: PHP is unreachable while
// the breaker refuses opens (cooldown, or the probe out), or when the last readyFailures
// attempts failed within readyFresh. Evidence older than readyFresh, or none, is checked by
// dialling the webhook addresses: a bridge taken out of rotation gets no traffic to probe PHP
// with, and must not stay unready for ever.
func (w *webhooks) reachable(ctx context.Context) error {
	now := time.Now()
	refusing, failures, lastFail := w.breaker.health(now)
	if refusing {
		return errBreakerOpen
	}
	if failures >= readyFailures && now.Sub(lastFail) < readyFresh {
		return fmt.Errorf("%w: the last %d webhook attempts failed", errBackend, failures)
	}
	if failures < readyFailures && now.Sub(time.Unix(0, w.lastOK.Load())) < readyFresh {
		return nil
	}
	addrs := map[[2]string]bool{}
	for _, t := range []EventType{EventOpen, EventMessage, EventClose} {
		network, addr := dialAddr(w.cfg.webhookURL(t))
		addrs[[2]string{network, addr}] = true
	}
	for na := range addrs {
		network, addr := na[0], na[1]
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := (&net.Dialer{}).DialContext(dctx, network, addr)
		cancel()
		if err != nil {
			return fmt.Errorf("webhook address %s: %w", addr, err)
		}
		c.Close()
	}
	return nil
}

// retryable: no answer at all, or a 5xx (PHP-FPM restarting, nginx's 502/504, a fatal error).
// A 4xx is PHP's decision and is final.
func retryable(res *webhookResult, err error) bool {
	if err != nil {
		return errors.Is(err, errBackend)
	}
	return res.Status >= 500
}

// unreachable tells "PHP is not there" from "PHP failed on this event": the connection was
// refused, or the gateway in front of PHP says so (502, 503, 504: FPM restarting or
// overloaded). A close webhook waits through such an outage without spending its retries.
func unreachable(res *webhookResult, err error) bool {
	if err != nil {
		var op *net.OpError
		return errors.As(err, &op) && op.Op == "dial"
	}
	switch res.Status {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

func attemptOutcome(res *webhookResult, err error) string {
	switch {
	case errors.Is(err, errMalformedReply):
		return outcomeMalformed
	case err != nil:
		return outcomeError
	case !res.OK():
		return outcomeStatus
	}
	return outcomeOK
}

// backoff returns the wait before retry n (n ≥ 1): WEBHOOK_BACKOFF doubled per retry, capped at
// WEBHOOK_BACKOFF_MAX, half of it random ("equal jitter": never shorter than half the step, and
// retries of many connections spread out).
func (w *webhooks) backoff(n int) time.Duration {
	d := w.cfg.WebhookBackoff << min(n-1, 30)
	if d <= 0 || d > w.cfg.WebhookBackoffMax {
		d = w.cfg.WebhookBackoffMax
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits for d, or until wake is closed; it reports false when ctx ended first.
func sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	if d <= 0 && wake == nil {
		return ctx.Err() == nil
	}
	var tc <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		tc = t.C
	}
	select {
	case <-tc:
		return true
	case <-wake:
		return true
	case <-ctx.Done():
		return false
	}
}

// Sign returns the WsBridge-Signature value for body at time t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(signature(secret, ts, body))
}

func signature(secret []byte, ts string, body []byte) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil)
}

// Verify checks a WsBridge-Signature header against body, in constant time, and refuses
// signatures older or newer than tolerance (0: no time check). It is what PHP does; the Go side
// uses it in tests and for PHP kit test vectors.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs [][]byte
	for part := range bytes.SplitSeq([]byte(header), []byte{','}) {
		k, v, ok := bytes.Cut(bytes.TrimSpace(part), []byte{'='})
		if !ok {
			return fmt.Errorf("signature header: %q is not key=value", part)
		}
		switch string(k) {
		case "t":
			ts = string(v)
		case "v1":
			sig, err := hex.DecodeString(string(v))
			if err != nil {
				return fmt.Errorf("signature header: v1 is not hex: %w", err)
			}
			sigs = append(sigs, sig)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("signature header: missing or bad t=")
	}
	if len(sigs) == 0 {
		return errors.New("signature header: no v1= signature")
	}
	if tolerance > 0 {
		if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
			return fmt.Errorf("signature timestamp is %s away from now, more than %s", d.Round(time.Second), tolerance)
		}
	}
	want := signature(secret, ts, body)
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			return nil
		}
	}
	return errors.New("signature does not match")
}
