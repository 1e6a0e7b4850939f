package bridge

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	limits  Limits
	metrics *metrics
	breaker *breaker
	lastOK  atomic.Int64 // unix nanoseconds of PHP's last answer below 500
	// slots caps the requests in flight over all connections, and each holds the keep-alive
	// connection its requests use. A webhook waits for a slot within its attempt's timeout
	// rather than piling up inside PHP-FPM's backlog.
	slots chan *hookConn
}

func newWebhooks(cfg *Config, m *metrics) *webhooks {
	return &webhooks{
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
	}
}

func slotsOf(n int) chan *hookConn {
	slots := make(chan *hookConn, n)
	for range n {
		slots <- &hookConn{}
	}
	return slots
}

// closeIdle closes the kept-alive connections of the slots that are free; at shutdown, all.
func (w *webhooks) closeIdle() {
	var free []*hookConn
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
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode %s event: %w", ev.Type, err)
	}
	sent, spent := 0, 0 // attempts sent; failures that count against WEBHOOK_RETRIES
	for round := 1; ; round++ {
		ok, probe, retryAt, changed := w.breaker.enter(time.Now())
		var res *webhookResult
		if ok {
			sent++
			if sent > 1 {
				w.metrics.webhookRetries.WithLabelValues(string(ev.Type)).Inc()
			}
			start := time.Now()
			res, err = w.attempt(ctx, ev, body, traceparent, sent)
			success := err == nil && res.Status < 500 || errors.Is(err, errMalformedReply)
			if !success && ctx.Err() != nil {
				w.breaker.abandon(probe) // the caller gave up; PHP is not to blame
			} else {
				w.breaker.exit(probe, success)
			}
			w.metrics.webhookAttempt(ev.Type, attemptOutcome(res, err), time.Since(start))
			if success || !retryable(res, err) || ctx.Err() != nil {
				return res, err
			}
		} else {
			w.metrics.webhookAttempt(ev.Type, outcomeBreakerOpen, 0)
			res, err = nil, errBreakerOpen
			if hold == failFast {
				return nil, err
			}
		}
		if hold != holdWaits || !(errors.Is(err, errBreakerOpen) || unreachable(res, err)) {
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

// attempt is one POST of body; the per-attempt timeout covers the wait for a slot too.
func (w *webhooks) attempt(ctx context.Context, ev *Event, body []byte, traceparent string, n int) (*webhookResult, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.WebhookTimeout)
	defer cancel()
	var hc *hookConn
	select {
	case hc = <-w.slots:
	default:
		w.metrics.webhookSlotWait.Inc()
		select {
		case hc = <-w.slots:
			w.metrics.webhookSlotWait.Dec()
		case <-ctx.Done():
			w.metrics.webhookSlotWait.Dec()
			return nil, fmt.Errorf("%w: no free webhook slot (WEBHOOK_CONCURRENCY=%d) within %s", errBackend, cap(w.slots), w.cfg.WebhookTimeout)
		}
	}
	w.metrics.webhooksInFlight.Inc()
	defer func() {
		w.metrics.webhooksInFlight.Dec()
		w.slots <- hc
	}()

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
		req.header = append(req.header, headerField{HeaderSignature, Sign(w.secret, time.Now(), body)})
	}
	if traceparent != "" {
		req.header = append(req.header, headerField{"Traceparent", traceparent})
	}

	// Redirects are not followed (a webhook is a POST to a fixed URL), no proxy is used, and no
	// compression is asked for: PHP's replies are small JSON.
	resp, b, err := hc.do(ctx, req, w.cfg.WebhookMaxReply)
	if err != nil {
		return nil, fmt.Errorf("%w: %s webhook: %w", errBackend, ev.Type, err)
	}
	if int64(len(b)) > w.cfg.WebhookMaxReply {
		// The rest is not read: the connection is dropped, which beats reading an unbounded
		// reply.
		return &webhookResult{Status: resp.StatusCode, Header: resp.Header},
			fmt.Errorf("%w: %s reply is larger than WEBHOOK_MAX_REPLY (%d bytes)", errMalformedReply, ev.Type, w.cfg.WebhookMaxReply)
	}
	res := &webhookResult{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if res.Status < 500 {
		w.lastOK.Store(time.Now().UnixNano())
	}
	if res.OK() {
		if res.Reply, err = DecodeReply(ev.Type, b, w.limits); err != nil {
			return res, fmt.Errorf("%w: %s reply refused: %w", errMalformedReply, ev.Type, err)
		}
	}
	return res, nil
}

// reachable reports why PHP cannot be reached, or nil: it is considered down and being left
// alone (breaker cooldown), or no webhook succeeded in the last 10 s and its address refuses a
// TCP connection. After the cooldown a reachable address is enough: a bridge taken out of
// rotation gets no traffic to probe PHP with, and must not stay unready for ever.
func (w *webhooks) reachable(ctx context.Context) error {
	if w.breaker.holding(time.Now()) {
		return errBreakerOpen
	}
	if time.Since(time.Unix(0, w.lastOK.Load())) < 10*time.Second {
		return nil
	}
	addrs := map[string]bool{}
	for _, t := range []EventType{EventOpen, EventMessage, EventClose} {
		addrs[hostPort(w.cfg.webhookURL(t))] = true
	}
	for addr := range addrs {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
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
