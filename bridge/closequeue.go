package bridge

import (
	"context"
	"errors"
	"time"
)

// deliverClose delivers one close webhook through the close queue. Every ended connection's
// goroutine waits here, holding nothing but the event, so the queue is bounded by the number
// of connections (MAX_CONNECTIONS) and a mass disconnect cannot lose a close:
//
//   - CLOSE_RATE paces the starts, so that thousands of closes at once leave PHP workers for the
//     connections that stay; shutdown lifts it and only WEBHOOK_CONCURRENCY bounds the drain;
//   - retries and backoff are the webhook's (WEBHOOK_RETRIES), and while PHP is considered down
//     the close waits for it to come back without spending a retry (holdWaits);
//   - only ctx ending (shutdown's deadline) or the retries running out give a close up; both
//     are logged with the event and counted (wsbridge_close_webhooks_failed_total).
func (s *Server) deliverClose(ctx context.Context, c transport, ev *Event) {
	s.metrics.closeQueue.Inc()
	defer s.metrics.closeQueue.Dec()
	if !s.paceClose(ctx) {
		s.closeLost(c.base(), ev, ctx.Err())
		return
	}
	reply, err := s.call(ctx, ev, c.base().traceparent, holdWaits)
	if err == nil {
		err = s.apply(ctx, c, reply)
	}
	switch {
	case err == nil:
	case errors.Is(err, errMalformedReply):
		c.base().log.Error("close reply refused", "event", ev.EventID, "err", err) // PHP has the close
	default:
		s.closeLost(c.base(), ev, err)
	}
}

// paceClose waits for CLOSE_RATE, or for shutdown to begin. It reports false if ctx ended.
func (s *Server) paceClose(ctx context.Context) bool {
	r := s.closeLimiter.Reserve()
	d := r.Delay()
	if d == 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.drainStarted:
		r.Cancel()
		return true
	case <-ctx.Done():
		r.Cancel()
		return false
	}
}

func (s *Server) closeLost(c *session, ev *Event, err error) {
	s.metrics.closeWebhooksLost.Inc()
	c.log.Error("close webhook not delivered", "event", ev.EventID, "user", ev.UserID,
		"code", *ev.Code, "reason", *ev.Reason, "initiator", ev.Initiator, "err", err)
}
