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
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Webhook headers. Clients can never set them: the proxy strips them from requests it forwards
// and FORWARD_HEADERS refuses them.
const (
	HeaderEvent      = "WsBridge-Event"
	HeaderConnection = "WsBridge-Connection"
	HeaderEventID    = "WsBridge-Event-Id"
	HeaderSignature  = "WsBridge-Signature"
)

// webhooks sends events to PHP. It is built like the outbound half of httputil.ReverseProxy:
// one tuned client, an explicit header policy, every body drained, closed and size-limited,
// and a concurrency cap sized to the PHP-FPM pool.
type webhooks struct {
	cfg    *Config
	client *http.Client
	secret []byte
	// slots caps the requests in flight over all connections. A webhook waits for a slot
	// within its own timeout rather than piling up inside PHP-FPM's backlog.
	slots chan struct{}
}

func newWebhooks(cfg *Config) *webhooks {
	transport := &http.Transport{
		Proxy:       nil, // webhooks go straight to the PHP backend, never via HTTP_PROXY
		DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		// Keep one idle connection per slot so steady traffic never re-dials.
		MaxIdleConns:        cfg.WebhookConcurrency,
		MaxIdleConnsPerHost: cfg.WebhookConcurrency,
		IdleConnTimeout:     90 * time.Second,
		// PHP replies are small JSON; asking for gzip would only cost CPU on both sides.
		DisableCompression:    true,
		ResponseHeaderTimeout: cfg.WebhookTimeout,
	}
	return &webhooks{
		cfg:    cfg,
		client: &http.Client{Transport: transport, CheckRedirect: noRedirects},
		secret: []byte(cfg.WebhookSecret),
		slots:  make(chan struct{}, cfg.WebhookConcurrency),
	}
}

// A webhook is a POST to a fixed URL; following a redirect would turn it into a GET.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// webhookResult is PHP's answer to one webhook.
type webhookResult struct {
	Status int
	Header http.Header
	Body   []byte
}

// OK reports a 2xx status.
func (r *webhookResult) OK() bool { return r.Status >= 200 && r.Status < 300 }

// errBackend marks failures to get any answer from PHP: unreachable, timed out, cut off.
var errBackend = errors.New("PHP backend unavailable")

// send posts ev and returns PHP's answer, whatever its status. An error means no usable answer
// arrived; it wraps errBackend unless ctx itself was cancelled by the caller.
func (w *webhooks) send(ctx context.Context, ev *Event, traceparent string) (*webhookResult, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.WebhookTimeout)
	defer cancel()

	body, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode %s event: %w", ev.Type, err)
	}
	select {
	case w.slots <- struct{}{}:
		defer func() { <-w.slots }()
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: no free webhook slot (WEBHOOK_CONCURRENCY=%d) within %s", errBackend, cap(w.slots), w.cfg.WebhookTimeout)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.webhookURL(ev.Type).String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build %s webhook: %w", ev.Type, err)
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "wsbridge")
	h.Set(HeaderEvent, string(ev.Type))
	h.Set(HeaderConnection, ev.ConnectionID)
	h.Set(HeaderEventID, ev.EventID)
	if len(w.secret) > 0 {
		h.Set(HeaderSignature, Sign(w.secret, time.Now(), body))
	}
	if traceparent != "" {
		h.Set("Traceparent", traceparent)
	}

	resp, err := w.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s webhook: %v", errBackend, ev.Type, err)
	}
	defer resp.Body.Close()
	// Read one byte more than allowed to tell "exactly at the limit" from "over it".
	b, err := io.ReadAll(io.LimitReader(resp.Body, w.cfg.WebhookMaxReply+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s reply: %v", errBackend, ev.Type, err)
	}
	if int64(len(b)) > w.cfg.WebhookMaxReply {
		// Drain nothing more: closing the body drops the connection, which beats reading an
		// unbounded reply.
		return &webhookResult{Status: resp.StatusCode, Header: resp.Header},
			fmt.Errorf("%w: %s reply is larger than WEBHOOK_MAX_REPLY (%d bytes)", errMalformedReply, ev.Type, w.cfg.WebhookMaxReply)
	}
	return &webhookResult{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
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
