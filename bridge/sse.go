package bridge

// The Server-Sent Events transport (WHATWG HTML §9.2, "Server-sent events"): a GET at SSE_PATH
// becomes one long text/event-stream response, and every delivery one event. It receives only:
// what the client would send goes to the app by ordinary requests. Admission, the open webhook,
// the hub and the close webhook are the session's (session.go); this file frames events, keeps
// the stream alive and notices when the client is gone.
//
// The stream is written by the request's handler, which does not return while the connection
// lives: unlike a hijacked WebSocket, an HTTP response (and over HTTP/2 its stream) belongs to its
// handler. The handler is also the connection's writer; Send only queues and wakes it.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// transportSSE names the transport in webhook bodies and in /v1/connections.
const transportSSE = "sse"

// sseConn is one event stream. Like conn it embeds its session, so that a connection is one
// allocation; unlike conn it has no reader (the request has no body) and one writer, its handler.
type sseConn struct {
	session
	queue sendQueue
	// wake tells the writer that something was queued or a close was requested; one pending
	// signal is enough, since the writer empties the queue each time it wakes.
	wake chan struct{}
	w    http.ResponseWriter
	rc   *http.ResponseController
	// positions is where the client stands in its history channels, the id: of its events
	// (history.go, appendResumeID); written by the handler only. nil: history is off.
	positions map[string]Position
	// ended is set, under closeMu, when the handler is about to return: the response is then
	// net/http's again, and dropSlow must not touch it (over HTTP/2 it would panic).
	ended bool
}

var _ transport = (*sseConn)(nil)

func (c *sseConn) ID() string     { return c.id }
func (c *sseConn) kind() string   { return transportSSE }
func (c *sseConn) base() *session { return &c.session }

// sendReply queues a reply's frames; the handler writes them. An SSE client sends no messages,
// so a reply here is the open reply's "send" alone, or a push targeted at this connection.
func (c *sseConn) sendReply(fs []Frame) {
	for _, f := range fs {
		if !c.Send(newDelivery(f)) {
			return
		}
	}
}

// Send queues f for the handler and never blocks. A queue past SEND_QUEUE or SEND_QUEUE_BYTES
// closes the client as a slow consumer, as on a WebSocket (writer.go).
func (c *sseConn) Send(f Delivery) bool {
	if c.closing.Load() {
		return false
	}
	if !c.queue.push(f, c.srv.cfg.SendQueue, c.srv.cfg.SendQueueBytes) {
		c.dropSlow("slow consumer")
		return false
	}
	c.signal()
	return true
}

// Close records why the stream ends and wakes the handler, which writes what is queued and a
// final close event (none for a slow consumer) and ends the response.
func (c *sseConn) Close(code int, reason string, by Initiator) bool {
	if !c.recordClose(code, reason, by) {
		return false
	}
	c.signal()
	return true
}

func (c *sseConn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// dropSlow closes a client that does not read. The handler may be blocked in a write to it:
// moving the write deadline to now cuts that write short (net/http's ResponseController allows
// it from another goroutine, over HTTP/1.1 and HTTP/2), so the stream ends at once rather than
// after WRITE_TIMEOUT.
func (c *sseConn) dropSlow(reason string) {
	if !c.Close(1008, reason, InitiatorSlowConsumer) {
		return
	}
	c.closeMu.Lock()
	if !c.ended {
		c.rc.SetWriteDeadline(time.Now())
	}
	c.closeMu.Unlock()
}

// end marks the response as given back to net/http (ended).
func (c *sseConn) end() {
	c.closeMu.Lock()
	c.ended = true
	c.closeMu.Unlock()
}

// serveSSE is the SSE transport's handler: the request's checks, the session's admission and
// open webhook (openSession), the response's headers, then the stream until it ends.
func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		// HEAD too: a stream that opens and ends at once would cost PHP an open and a close
		// webhook for nothing a client can use.
		s.metrics.rejected.WithLabelValues(rejectBadHandshake).Inc()
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "this is a Server-Sent Events endpoint: open it with a GET (EventSource), not "+r.Method, http.StatusMethodNotAllowed)
		return
	}
	if !acceptsEventStream(r.Header.Values("Accept")) {
		s.metrics.rejected.WithLabelValues(rejectBadHandshake).Inc()
		http.Error(w, "this is a Server-Sent Events endpoint: it answers only Accept: text/event-stream", http.StatusNotAcceptable)
		return
	}
	c := &sseConn{wake: make(chan struct{}, 1), w: w, rc: http.NewResponseController(w)}
	o, ok := s.openSession(w, r, c, []string{})
	if !ok {
		c.end()
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	// no-cache as the HTML standard's examples send it: no cache answers a later GET with this
	// stream. X-Accel-Buffering: no turns off nginx's buffering of this response whatever
	// proxy_buffering says. No Content-Length: the stream is chunked over HTTP/1.1 and framed by
	// DATA frames over HTTP/2.
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	if origin := r.Header.Get("Origin"); crossOrigin(origin, r.Host) {
		// originAllowed let this origin in (ALLOWED_ORIGINS); EventSource is a CORS request,
		// which the browser fails without these, with credentials (cookies) or not.
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Add("Vary", "Origin")
	}
	w.WriteHeader(http.StatusOK)
	c.rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	err := c.rc.Flush()
	c.rc.SetWriteDeadline(time.Time{})
	if err != nil {
		c.log.Debug("event stream failed before it opened", "err", err)
		c.end()
		s.abortSession(c, 1006, "connection lost", InitiatorClient)
		return
	}
	s.startSession(c, o)
	c.serve(s.base, r.Context())
	c.end()
	go s.finishSession(c)
}

// crossOrigin reports whether a request's Origin is another site than the host it asked for.
func crossOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return origin != "" && (err != nil || !strings.EqualFold(u.Host, host))
}

// serve writes the stream until it ends: a close was requested (and written), the client went
// away (the request's context, cancelled by net/http when the connection or the HTTP/2 stream
// ends), a write failed, or shutdown gave up waiting (base).
func (c *sseConn) serve(base, client context.Context) {
	keepalive := time.NewTicker(c.srv.cfg.SSEKeepalive)
	defer keepalive.Stop()
	for {
		if !c.writeQueued() {
			return
		}
		if c.closing.Load() {
			c.finish()
			return
		}
		select {
		case <-c.wake:
			// Something is written now: the keepalive is due SSE_KEEPALIVE after it.
			keepalive.Reset(c.srv.cfg.SSEKeepalive)
		case <-keepalive.C:
			// A comment line: every SSE parser ignores it, and it is traffic to a proxy.
			if !c.write(sseKeepalive) {
				return
			}
		case <-client.Done():
			// An SSE client has no way to say why it left: closing the EventSource, leaving
			// the page and losing the network all end the request alike. 1001 is WebSocket's
			// "going away", what a browser sends when it leaves a page.
			c.Close(1001, "client went away", InitiatorClient)
			return
		case <-base.Done():
			// Shutdown gave up waiting; every connection was asked to close before that.
			c.Close(1001, "server shutdown", InitiatorShutdown)
			return
		}
	}
}

var sseKeepalive = []byte(":\n\n")

// writeQueued writes every queued delivery, in order, and flushes them together.
func (c *sseConn) writeQueued() bool {
	var buf []byte
	n := 0
	for !c.closing.Load() || c.closeBy() != InitiatorSlowConsumer {
		f, ok := c.queue.pop()
		if !ok {
			break
		}
		buf = c.appendResumeID(buf, f)
		switch {
		case f.hist != nil && f.hist.notice:
			buf = appendSSENotice(buf, f)
		case f.sseIn:
			buf = append(buf, f.sseEvent()...)
		default:
			buf = appendSSEEvent(buf, f)
		}
		n++
		c.counters.Out.Add(1)
		c.srv.metrics.messagesOut.Inc()
		c.srv.metrics.bytesOut.Add(float64(len(f.Data)))
	}
	if n == 0 {
		return true
	}
	return c.write(buf)
}

func (c *sseConn) closeBy() Initiator {
	_, _, by := c.closeInfo()
	return by
}

// write sends b to the client and flushes it, within WRITE_TIMEOUT. A write that fails ends the
// stream: it timed out (a slow consumer), or the client is gone.
func (c *sseConn) write(b []byte) bool {
	start := time.Now()
	c.rc.SetWriteDeadline(start.Add(c.srv.cfg.WriteTimeout))
	_, err := c.w.Write(b)
	if err == nil {
		err = c.rc.Flush()
	}
	if err == nil {
		// Cleared between writes: over HTTP/2 a deadline left set resets the stream when it
		// passes, written to or not, and an idle stream is not a slow one.
		c.rc.SetWriteDeadline(time.Time{})
		return true
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) >= c.srv.cfg.WriteTimeout {
		// Over HTTP/2 a stream past its deadline is reset, and only the time tells.
		c.dropSlow("write timeout")
	} else {
		c.Close(1006, "write failed", InitiatorServer)
	}
	c.log.Debug("event stream write failed", "err", err)
	return false
}

// finish writes the final event and lets the handler end the response. A slow consumer gets
// nothing more: it does not read.
func (c *sseConn) finish() {
	code, reason, by := c.closeInfo()
	if by == InitiatorSlowConsumer || code == 1006 {
		return
	}
	c.write(appendSSEClose(nil, code, reason, by))
}

// appendSSEClose appends the event that ends a stream the bridge closes: "event: close" with
// the code and reason as JSON, as a WebSocket client would see them in its close frame. An
// EventSource reconnects when the stream ends, so a page that must stay away (closed by PHP or
// the API) listens for this event and calls close(); at shutdown a retry: line asks it to come
// back after a while, to this node or another.
func appendSSEClose(dst []byte, code int, reason string, by Initiator) []byte {
	if by == InitiatorShutdown {
		dst = append(dst, "retry: 5000\n"...)
	}
	data, _ := json.Marshal(struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}{code, reason})
	dst = append(dst, "event: close\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}

// appendSSEEvent appends f as one event, for the WHATWG parser to give the page exactly f's data
// (as MessageEvent.data). A text is one data: line per line of it. The parser ends a line at
// CRLF, at LF and at a lone CR, and joins data: lines with LF: so a text's line breaks, of any of
// the three kinds, reach the page as LF (a lone CR included), and nothing after one can become a
// field of its own (an id: or event: line smuggled in a message). A binary frame is "event:
// binary" with its bytes in standard base64, which has no line breaks.
//
// This is the one place an event is framed; a field every event carries (an id:) is added here.
func appendSSEEvent(dst []byte, f Delivery) []byte {
	if f.Binary {
		dst = append(dst, "event: binary\ndata: "...)
		dst = base64.StdEncoding.AppendEncode(dst, f.Data)
		return append(dst, "\n\n"...)
	}
	d := f.Data
	for {
		// "data: " with its space: the parser drops one space after the colon, so a text
		// that itself begins with a space keeps it.
		dst = append(dst, "data: "...)
		i := indexLineBreak(d)
		if i < 0 {
			dst = append(dst, d...)
			break
		}
		dst = append(dst, d[:i]...)
		dst = append(dst, '\n')
		if d[i] == '\r' && i+1 < len(d) && d[i+1] == '\n' {
			i++
		}
		d = d[i+1:]
	}
	return append(dst, "\n\n"...)
}

func indexLineBreak(b []byte) int {
	for i, c := range b {
		if c == '\n' || c == '\r' {
			return i
		}
	}
	return -1
}

// withSSE returns f with its SSE event made, for a publication with SSE recipients
// (hub.publishLocal). The event follows f's WebSocket frames in one buffer, past the end of ws
// and within its capacity, and sseIn says it is there: Delivery keeps its size (no field of its own), and
// every recipient shares the one encoding.
func (f Delivery) withSSE() Delivery {
	b := make([]byte, len(f.ws), len(f.ws)+sseEventSize(f))
	copy(b, f.ws)
	b = appendSSEEvent(b, f)
	f.ws, f.sseIn = b[:len(f.ws):len(b)], true
	return f
}

// sseEvent is the event withSSE made; only when sseIn.
func (f Delivery) sseEvent() []byte { return f.ws[len(f.ws):cap(f.ws)] }

// sseEventSize is an upper bound of appendSSEEvent's length for f, to make its buffer once.
func sseEventSize(f Delivery) int {
	if f.Binary {
		return len("event: binary\ndata: \n\n") + base64.StdEncoding.EncodedLen(len(f.Data))
	}
	lines := 1
	for _, c := range f.Data {
		if c == '\n' || c == '\r' {
			lines++
		}
	}
	return len(f.Data) + lines*len("data: \n") + 1
}

// acceptsEventStream reports whether an Accept header lets the answer be text/event-stream
// (RFC 9110 §12.5.1): no Accept at all (any type), or a range that matches it, text/event-stream,
// text/* or */*, without q=0. EventSource always sends Accept: text/event-stream.
func acceptsEventStream(vs []string) bool {
	if len(vs) == 0 {
		return true
	}
	for item := range listItems(vs) {
		typ, params, _ := strings.Cut(item, ";")
		switch strings.ToLower(strings.TrimSpace(typ)) {
		case "text/event-stream", "text/*", "*/*":
		default:
			continue
		}
		if !zeroQuality(params) {
			return true
		}
	}
	return false
}

// zeroQuality reports whether media-range parameters carry q=0 ("not acceptable").
func zeroQuality(params string) bool {
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(k), "q") {
			q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return err == nil && q == 0
		}
	}
	return false
}

// refuseLater answers a client that may try again later (a per-address limit, a full node,
// shutdown, PHP unavailable) with status and Retry-After. An EventSource would take any status
// but 200 as final and never reconnect, so an SSE client gets instead a 200 event stream that
// holds only retry: (Retry-After, in milliseconds) and a comment saying why, and ends: the
// browser reconnects after that delay, as it would after a dropped stream.
func refuseLater(w http.ResponseWriter, t transport, status int, retryAfter, msg string) {
	if _, ok := t.(*sseConn); !ok {
		w.Header().Set("Retry-After", retryAfter)
		http.Error(w, msg, status)
		return
	}
	secs, err := strconv.Atoi(retryAfter)
	if err != nil || secs < 1 {
		secs = 1
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	w.Write([]byte("retry: " + strconv.Itoa(secs*1000) + "\n: " + strconv.Itoa(status) + " " + msg + "\n\n"))
}
