package bridge

// The life of a connection, whatever carries it. A transport (accept.go for WebSocket; SSE and
// the Pusher protocol next) does only what its protocol needs: it checks its own handshake,
// asks openSession whether the client may connect, completes its upgrade or gives up
// (abortSession), hands the connection over (runSession), turns what the client sends into
// deliverMessage calls and writes what the hub Sends. Everything else happens here, once for
// every transport: admission (origin, per-address handshake limits, connection limits,
// shutdown), the open webhook and its reply's checks, registration in the hub, applying
// replies, and the end, with exactly one close webhook for every open PHP accepted.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// The transports, as every webhook body's "transport" names them (PROTOCOL.md).
const (
	transportWS = "ws"
)

// transport is what a session needs from the connection of one transport. It is the hub's
// recipient (ID, Send, Close) and a little more.
type transport interface {
	recipient
	// kind names the transport in webhook bodies: "ws", "sse" or "pusher". A constant of the
	// type, so that an idle connection does not carry it.
	kind() string
	// base is the session the connection embeds.
	base() *session
	// sendReply hands the frames of a webhook reply to the client, in order. It runs on the
	// goroutine that delivered the webhook (the client's reader, for a message), which waits
	// for the reply anyway and may write them itself.
	sendReply([]Frame)
}

// session is the transport-neutral state of one connection. A transport's connection type
// embeds it by value, so that a connection is still one allocation (an idle connection's size
// is what MAX_CONNECTIONS multiplies), and passes itself to the functions of this file.
type session struct {
	id          string
	srv         *Server
	log         *slog.Logger
	traceparent string
	opened      time.Time
	counters    counters
	release     func()        // gives back the admission place (MAX_CONNECTIONS*)
	rate        *rate.Limiter // MESSAGE_RATE, for what the client sends; nil: no limit

	closeOnce sync.Once
	closing   atomic.Bool // set by the first close; an atomic, not a channel: senders check it per delivery
	closeMu   sync.Mutex  // guards code, reason and initiator; a transport may guard its own close-time state with it (conn: ws, pinger)
	code      int
	reason    string
	initiator Initiator
}

// recordClose records why the session ends. Only the first call counts, so the close webhook
// reports the real cause, not its echo; it alone reports true, and the transport then closes
// its side.
func (ss *session) recordClose(code int, reason string, by Initiator) bool {
	first := false
	ss.closeOnce.Do(func() {
		first = true
		ss.closeMu.Lock()
		ss.code, ss.reason, ss.initiator = code, reason, by
		ss.closeMu.Unlock()
		ss.closing.Store(true)
	})
	return first
}

func (ss *session) closeInfo() (int, string, Initiator) {
	ss.closeMu.Lock()
	defer ss.closeMu.Unlock()
	return ss.code, ss.reason, ss.initiator
}

// opening is what openSession learnt that the rest of the session needs once.
type opening struct {
	reply  *Reply
	client string // the address per-address limits count, for logs
}

// openSession admits the client of r, asks PHP in the open webhook whether it may connect,
// checks the answer and registers the connection t in the hub. PHP is asked before the
// transport accepts, so that its refusal reaches the client as a real HTTP status (401, 403,
// ...) rather than as a connection that opens and closes at once. offered are the
// subprotocols the client offered (empty for a transport without them); PHP may choose one.
//
// On false the answer has been written, nothing is held, and PHP is owed nothing (or, when
// the client left during the open webhook, it already had its close). On true the connection
// is in the hub, holds its admission place and a place in what shutdown waits for, and PHP is
// owed a close: the transport must end it with abortSession or runSession.
func (s *Server) openSession(w http.ResponseWriter, r *http.Request, t transport, offered []string) (opening, bool) {
	if !s.originAllowed(r) {
		s.metrics.rejected.WithLabelValues(rejectOrigin).Inc()
		s.log.Warn("upgrade refused: origin not allowed", "origin", r.Header.Get("Origin"), "host", r.Host)
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return opening{}, false
	}
	cl := s.clientOf(r)
	ip := cl.ip
	// Per-address handshake limits come first, so every attempt counts against the rate, and
	// a flood from one address never reaches the connection limits or PHP.
	handshakeDone, hlimit := s.handshakes.begin(ip)
	if hlimit != "" {
		s.metrics.rejected.WithLabelValues(rejectHandshakeRate).Inc()
		s.metrics.limit(hlimit)
		s.log.Debug("upgrade refused: handshake limit", "limit", hlimit, "client", ip)
		w.Header().Set("Retry-After", s.handshakes.retryAfter(hlimit))
		http.Error(w, "too many handshakes from your address", http.StatusTooManyRequests)
		return opening{}, false
	}
	defer handshakeDone()
	headers, err := s.forwardedHeaders(r, cl)
	if err != nil {
		s.metrics.rejected.WithLabelValues(rejectLimit).Inc()
		s.metrics.limit("forwarded_headers")
		s.log.Debug("upgrade refused: forwarded headers too large", "client", ip, "err", err)
		http.Error(w, err.Error(), http.StatusRequestHeaderFieldsTooLarge)
		return opening{}, false
	}
	release, limit := s.admission.admit(ip)
	if limit != "" {
		s.metrics.rejected.WithLabelValues(rejectLimit).Inc()
		s.metrics.limit(limit)
		s.log.Warn("upgrade refused: connection limit", "limit", limit, "client", ip)
		w.Header().Set("Retry-After", "5")
		if limit == "connections_per_ip" {
			http.Error(w, "too many connections from your address", http.StatusTooManyRequests)
		} else {
			http.Error(w, "this server holds as many connections as it may", http.StatusServiceUnavailable)
		}
		return opening{}, false
	}
	if !s.enter() {
		release()
		s.metrics.rejected.WithLabelValues(rejectDraining).Inc()
		w.Header().Set("Retry-After", "5")
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return opening{}, false
	}
	// Until the connection is registered, every refusal gives back what was taken; after
	// that, endSession does.
	registered := false
	defer func() {
		if !registered {
			release()
			s.leave()
		}
	}()

	id := s.newConnID()
	ss := t.base()
	ss.id, ss.srv, ss.log, ss.release = id, s, s.log.With("conn", id), release
	ss.traceparent = validTraceparent(r.Header.Get("Traceparent"))
	if s.cfg.MessageRate > 0 {
		ss.rate = rate.NewLimiter(rate.Limit(s.cfg.MessageRate), s.cfg.MessageBurst)
	}
	ev := s.newEvent(EventOpen, t.kind(), id, state{})
	ev.Request = &HandshakeRequest{
		Method:       r.Method,
		Path:         r.URL.Path,
		Query:        r.URL.RawQuery,
		Headers:      headers,
		RemoteAddr:   cl.remote,
		Subprotocols: offered,
	}

	// The open webhook is bound by HANDSHAKE_TIMEOUT and the server's life, not by the
	// request: a client that leaves while PHP decides must not cut PHP off mid-answer, for PHP
	// may have accepted it (and then is owed a close webhook).
	hctx, cancel := context.WithTimeout(s.base, s.cfg.HandshakeTimeout)
	stop := context.AfterFunc(r.Context(), func() { ss.log.Debug("client left during the open webhook", "event", ev.EventID) })
	res, err := s.hooks.send(hctx, ev, ss.traceparent, failFast)
	stop()
	cancel()
	handshakeDone() // no longer pending: PHP has answered
	if errors.Is(err, errMalformedReply) {
		s.refuseMalformedOpen(w, ss, ev, err)
		return opening{}, false
	}
	if err != nil {
		s.metrics.rejected.WithLabelValues(rejectUnavailable).Inc()
		ss.log.Error("upgrade refused with 503: open webhook failed", "event", ev.EventID, "err", err)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "the application is unavailable", http.StatusServiceUnavailable)
		return opening{}, false
	}
	if !res.OK() {
		s.metrics.rejected.WithLabelValues(rejectPHP).Inc()
		ss.log.Debug("upgrade refused by PHP", "status", res.Status)
		for _, h := range rejectHeaders {
			if v := res.Header.Get(h); v != "" {
				w.Header().Set(h, v)
			}
		}
		w.WriteHeader(res.Status)
		w.Write(res.Body)
		return opening{}, false
	}
	reply := res.Reply
	if reply.Subprotocol != nil && *reply.Subprotocol != "" && !slices.Contains(offered, *reply.Subprotocol) {
		s.refuseMalformedOpen(w, ss, ev, errors.New(`"subprotocol" names one the client did not offer`))
		return opening{}, false
	}

	// Register before the transport accepts, so that from the moment the client sees the
	// connection open, pushes reach it and presence lists it.
	ss.opened = time.Now()
	s.hub.Add(t, connInfo{ID: id, RemoteAddr: cl.remote, Path: r.URL.Path, Subprotocol: deref(reply.Subprotocol), ConnectedAt: ss.opened},
		&ss.counters, deref(reply.UserID), reply.Meta, reply.Join)
	registered = true
	if r.Context().Err() != nil {
		// The client left while PHP accepted it. Accepting would answer a closed socket; PHP
		// is told at once that this connection ended, as for any client that vanishes.
		s.abortSession(t, int(websocket.StatusAbnormalClosure), "client left during the handshake", InitiatorClient)
		return opening{}, false
	}
	return opening{reply: reply, client: ip}, true
}

// refuseMalformedOpen answers 502: PHP said yes in a way that cannot be carried out, and
// accepting the client without what PHP asked for (its user id, its channels) would be wrong.
func (s *Server) refuseMalformedOpen(w http.ResponseWriter, ss *session, ev *Event, err error) {
	s.metrics.rejected.WithLabelValues(rejectMalformed).Inc()
	if l := limitName(err); l != "" {
		s.metrics.limit(l)
	}
	ss.log.Error("upgrade refused with 502: open reply refused", "event", ev.EventID, "err", err)
	http.Error(w, "the application sent an invalid answer", http.StatusBadGateway)
}

// abortSession ends a registered connection that never got going (its transport failed to
// accept it): it is closed with code and reason, and PHP, which accepted it, gets its close.
func (s *Server) abortSession(t transport, code int, reason string, by Initiator) {
	s.metrics.rejected.WithLabelValues(rejectUpgradeFailed).Inc()
	t.Close(code, reason, by)
	s.endSession(s.base, t)
}

// runSession starts an accepted connection: the open reply's frames, publications and close
// are applied, and serve, the transport's loop, runs on a goroutine of its own until the
// client is gone; then the session ends. The handler returns at once: its stack, grown deep
// by the open webhook, and net/http's request state would otherwise be held for the
// connection's whole life (measured: 35 → 23 KiB of RSS per idle WebSocket at 10,000).
func (s *Server) runSession(t transport, o opening, serve func(context.Context)) {
	ss := t.base()
	s.metrics.accepted.Inc()
	s.metrics.connections.Inc()
	// Shutdown may have closed every connection between enter and Add; this one was not in
	// the hub yet, so it closes itself.
	if s.draining.Load() {
		t.Close(1001, "server shutdown", InitiatorShutdown)
	}
	ss.log.Debug("connection opened", "user", deref(o.reply.UserID), "client", o.client)
	s.apply(s.base, t, &Reply{Send: o.reply.Send, Publish: o.reply.Publish, Close: o.reply.Close})
	go func() {
		serve(s.base)
		s.metrics.connections.Dec()
		s.endSession(s.base, t)
	}()
}

// endSession takes the connection out of the hub, gives its admission place back (the client
// may reconnect at once), delivers its close webhook and lets shutdown stop waiting for it.
// It runs once per registered connection, after the transport has let go of the client: from
// abortSession, or when runSession's serve returns. It returns only after the close webhook was
// answered (or given up), which is what shutdown waits for.
func (s *Server) endSession(ctx context.Context, t transport) {
	defer s.leave()
	ss := t.base()
	st := s.hub.Remove(ss.id)
	ss.release()
	code, reason, by := ss.closeInfo()
	s.metrics.closed.WithLabelValues(string(by)).Inc()
	if by == InitiatorSlowConsumer {
		s.metrics.slowConsumer.Inc()
	}
	ev := s.newEvent(EventClose, t.kind(), ss.id, st)
	dur := time.Since(ss.opened).Milliseconds()
	in, out := ss.counters.In.Load(), ss.counters.Out.Load()
	ev.Code, ev.Reason, ev.Initiator = &code, &reason, by
	ev.DurationMS, ev.MessagesIn, ev.MessagesOut = &dur, &in, &out
	ss.log.Debug("connection closed", "code", code, "reason", reason, "initiator", by, "dur", (time.Duration(dur) * time.Millisecond).String())
	if by == InitiatorNodeLost {
		return // a surviving node sent this close while this one was cut off (cluster_server.go)
	}
	s.deliverClose(ctx, t, ev)
}

// deliverMessage sends one message of the client's, the seq-th, to PHP and applies the reply.
// It returns when that is done: a transport reads the next message only then, so PHP sees a
// client's messages in order and a client that sends faster than PHP answers is held back.
func (s *Server) deliverMessage(ctx context.Context, t transport, seq uint64, binary bool, data []byte) {
	ss := t.base()
	ev := s.newEvent(EventMessage, t.kind(), ss.id, s.hub.State(ss.id))
	ev.Seq = seq
	ev.Binary = &binary
	if binary {
		b64 := base64.StdEncoding.EncodeToString(data)
		ev.DataBase64 = &b64
	} else {
		text := string(data)
		ev.Data = &text
	}
	reply, err := s.call(ctx, ev, ss.traceparent, holdCounts)
	if err == nil {
		err = s.apply(ctx, t, reply)
	}
	switch {
	case err == nil:
	case errors.Is(err, errMalformedReply), limitName(err) != "":
		// PHP has the message; only its answer is refused, whole. The connection goes on.
		ss.log.Error("message reply refused", "event", ev.EventID, "seq", seq, "err", err)
	case ctx.Err() != nil:
		// Shutdown gave up waiting; the connection is being cut off anyway.
	default:
		// The message did not reach PHP, even after the retries. Going on would silently
		// lose it, so the client is told with 1011 and PHP gets a close webhook that says why.
		ss.log.Error("message webhook failed; closing the connection", "event", ev.EventID, "seq", seq, "err", err)
		t.Close(int(websocket.StatusInternalError), "message not delivered", InitiatorServer)
	}
}

// Headers of PHP's rejection that are passed on to the client with its status and body.
var rejectHeaders = []string{"Content-Type", "Location", "Retry-After", "Www-Authenticate"}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// originAllowed applies ALLOWED_ORIGINS with coder/websocket's rules: no Origin header (a
// non-browser client) passes; the request's own host passes; otherwise a pattern must match the
// Origin's host, or scheme://host when the pattern contains "://".
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, p := range s.cfg.AllowedOrigins {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

// forwardedHeaders copies the configured handshake headers for the open webhook. Only these
// reach PHP; X-Forwarded-For is the chain clientOf believes with the peer's address appended,
// as a reverse proxy would, and CLIENT_IP_HEADER is passed on only from a trusted peer. Their
// total size is bounded by MAX_FORWARDED_HEADER_BYTES: net/http reads up to MAX_HEADER_BYTES,
// and all of it would otherwise go to PHP with every open.
func (s *Server) forwardedHeaders(r *http.Request, cl clientAddr) (map[string]string, error) {
	out := make(map[string]string, len(s.fwd))
	size := 0
	for _, name := range s.fwd {
		var v string
		switch {
		case name == "X-Forwarded-For":
			v = cl.xff(peerIP(r))
		case !cl.trusted && s.cfg.ClientIPHeader != "" && name == http.CanonicalHeaderKey(s.cfg.ClientIPHeader):
			continue // a client's claim about its own address
		case name == "Cookie":
			v = strings.Join(r.Header.Values(name), "; ")
		default:
			v = strings.Join(r.Header.Values(name), ", ")
		}
		if v != "" {
			out[name] = v
			size += len(name) + len(v)
		}
	}
	if size > s.cfg.MaxForwardedHeaderBytes {
		return nil, fmt.Errorf("the forwarded headers (%s) are %d bytes, more than WSBRIDGE_MAX_FORWARDED_HEADER_BYTES=%d", strings.Join(s.fwd, ", "), size, s.cfg.MaxForwardedHeaderBytes)
	}
	return out, nil
}

// validTraceparent returns s if it is a W3C trace context header (version-traceid-parentid-flags,
// lowercase hex, 55 bytes), else "". It is passed on to every webhook of the connection as it
// came, so nothing else (no CR or LF above all) may reach the request written to PHP.
func validTraceparent(s string) string {
	if len(s) != 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return ""
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case i == 2 || i == 35 || i == 52:
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		default:
			return ""
		}
	}
	return s
}
