package bridge

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Pusher-format webhooks (https://pusher.com/docs/channels/server_api/webhooks), sent to
// WSBRIDGE_PUSHER_WEBHOOK_URL when it is set, on top of wsbridge's own open, message and close
// webhooks: an app written against Pusher's webhooks keeps working. They are Pusher's: a JSON
// POST {"time_ms": <unix ms>, "events": [...]}, signed with X-Pusher-Key (the app key) and
// X-Pusher-Signature (hex HMAC-SHA256 of the body, keyed with the app secret).
//
// Delivery is Pusher's too: at most once per event, best effort. Events wait in a bounded queue
// and one goroutine sends them, all that waited in one request (up to pusherHookBatch), so a
// burst of joins becomes a few requests rather than one per event. A request that gets no
// answer or a 5xx is retried WEBHOOK_RETRIES times with WEBHOOK_BACKOFF; then its events are
// dropped and logged. Nothing that queues an event ever waits: a full queue drops the event
// (counted in wsbridge_limit_hits_total{limit="pusher_webhook_queue"}, and logged), so a PHP
// that is down or slow never holds a connection, a join, or the hub.

// The event names of Pusher webhooks.
const (
	pusherChannelOccupied = "channel_occupied"
	pusherChannelVacated  = "channel_vacated"
	pusherMemberAdded     = "member_added"
	pusherMemberRemoved   = "member_removed"
	pusherClientEvent     = "client_event"
)

const (
	// pusherHookQueue bounds the events waiting to be sent.
	pusherHookQueue = 4096
	// pusherHookBatch bounds the events of one request.
	pusherHookBatch = 100
	// pusherHookMaxAnswer is the most of an answer's body read (and then dropped): PHP's answer
	// to a Pusher webhook means nothing but its status.
	pusherHookMaxAnswer = 64 << 10
)

// pusherHookEvent is one event of a Pusher webhook. The client-protocol side calls
// Server.pusherEvent with member_added / member_removed (once per user, on a user's first
// subscription to a presence channel and after its last one ends) and client_event; the hub's
// occupancy hook makes channel_occupied / channel_vacated.
type pusherHookEvent struct {
	Name    string // one of the pusher* event names above
	Channel string
	// UserID: member_added and member_removed; client_event on a presence channel (the sender's).
	UserID string
	// Event, Data, SocketID: client_event only. Data is the event's data as the other
	// subscribers get it (a string: JSON the client sent as an object is its JSON text).
	Event, Data, SocketID string
}

// MarshalJSON writes the fields Pusher sends for the event's name, and only those: a
// client_event carries its data even when it is empty, a member event never carries one.
func (e pusherHookEvent) MarshalJSON() ([]byte, error) {
	out := map[string]string{"name": e.Name, "channel": e.Channel}
	switch e.Name {
	case pusherMemberAdded, pusherMemberRemoved:
		out["user_id"] = e.UserID
	case pusherClientEvent:
		out["event"], out["data"], out["socket_id"] = e.Event, e.Data, e.SocketID
		if e.UserID != "" {
			out["user_id"] = e.UserID
		}
	}
	return json.Marshal(out)
}

// pusherHooks sends Pusher-format webhooks. A nil *pusherHooks sends nothing.
type pusherHooks struct {
	url     *url.URL
	key     string
	secret  []byte
	log     *slog.Logger
	metrics *metrics
	retries int
	backoff func(n int) time.Duration
	client  *http.Client
	now     func() time.Time

	queue   chan pusherHookEvent
	start   sync.Once
	dropped atomic.Uint64 // events lost to a full queue or to failed requests, for the logs
}

// newPusherHooks returns the sender of app's webhooks to u, or nil when u is nil.
func newPusherHooks(u *url.URL, app pusherCreds, cfg *Config, log *slog.Logger, m *metrics, backoff func(int) time.Duration) *pusherHooks {
	if u == nil {
		return nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 1 // one sender, one request at a time
	// As wsbridge's own webhooks: straight to the URL given, never through an HTTP_PROXY of the
	// environment, and never on to where a redirect points (the signed body would follow it).
	tr.Proxy = nil
	return &pusherHooks{
		url:     u,
		key:     app.key,
		secret:  app.secret,
		log:     log.With("webhook", "pusher"),
		metrics: m,
		retries: cfg.WebhookRetries,
		backoff: backoff,
		client: &http.Client{Transport: tr, Timeout: cfg.WebhookTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		now:   time.Now,
		queue: make(chan pusherHookEvent, pusherHookQueue),
	}
}

// pusherEvent queues ev for the Pusher webhook, if one is configured, and returns at once.
// It is safe to call under the hub's lock and from any goroutine.
func (s *Server) pusherEvent(ev pusherHookEvent) {
	if s.pusherHooks != nil {
		s.pusherHooks.enqueue(s.base, ev)
	}
}

// pusherOccupancy is the hub's occupancy hook: a channel got its first member or lost its last.
func (s *Server) pusherOccupancy(channel string, occupied bool) {
	name := pusherChannelVacated
	if occupied {
		name = pusherChannelOccupied
	}
	s.pusherEvent(pusherHookEvent{Name: name, Channel: channel})
}

// enqueue queues ev without waiting; the sender starts with the first event and stops when
// ctx (the server's base context, cancelled at the end of shutdown) ends.
func (h *pusherHooks) enqueue(ctx context.Context, ev pusherHookEvent) {
	h.start.Do(func() { go h.run(ctx) })
	select {
	case h.queue <- ev:
	default:
		h.metrics.limit("pusher_webhook_queue")
		if n := h.dropped.Add(1); n&(n-1) == 0 { // 1, 2, 4, 8, ...: the logs see it, not each one
			h.log.Warn("pusher webhook: queue full, event dropped", "event", ev.Name, "channel", ev.Channel, "dropped_total", n)
		}
	}
}

// run sends what the queue holds, a batch at a time, until ctx ends.
func (h *pusherHooks) run(ctx context.Context) {
	defer h.client.CloseIdleConnections()
	batch := make([]pusherHookEvent, 0, pusherHookBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-h.queue:
			batch = append(batch[:0], ev)
		}
	fill:
		for len(batch) < pusherHookBatch {
			select {
			case ev := <-h.queue:
				batch = append(batch, ev)
			default:
				break fill
			}
		}
		if err := h.send(ctx, batch); err != nil && ctx.Err() == nil {
			h.dropped.Add(uint64(len(batch)))
			h.log.Error("pusher webhook: events dropped", "count", len(batch), "err", err)
		}
	}
}

// send posts one batch, retrying a request that got no answer or a 5xx.
func (h *pusherHooks) send(ctx context.Context, batch []pusherHookEvent) error {
	body, err := json.Marshal(struct {
		TimeMS int64             `json:"time_ms"`
		Events []pusherHookEvent `json:"events"`
	}{h.now().UnixMilli(), batch})
	if err != nil {
		return fmt.Errorf("encode pusher webhook: %w", err)
	}
	mac := hmac.New(sha256.New, h.secret)
	mac.Write(body)
	sig := hex.EncodeToString(mac.Sum(nil))
	for n := 0; ; n++ {
		status, err := h.post(ctx, body, sig)
		if err == nil && status < 500 {
			if status >= 300 {
				// PHP read it and refused it: sending it again would be refused again.
				return fmt.Errorf("PHP answered the pusher webhook with status %d", status)
			}
			return nil
		}
		if err == nil {
			err = fmt.Errorf("PHP answered the pusher webhook with status %d", status)
		}
		if n >= h.retries || !sleep(ctx, h.backoff(n+1), nil) {
			return fmt.Errorf("after %d attempt(s): %w", n+1, err)
		}
	}
}

// post makes one attempt and returns PHP's status; the answer's body is read (bounded) and
// dropped so that the connection can be kept.
func (h *pusherHooks) post(ctx context.Context, body []byte, sig string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url.String(), bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("build pusher webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "wsbridge")
	req.Header.Set("X-Pusher-Key", h.key)
	req.Header.Set("X-Pusher-Signature", sig)
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("send pusher webhook: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, pusherHookMaxAnswer))
	resp.Body.Close()
	return resp.StatusCode, nil
}
