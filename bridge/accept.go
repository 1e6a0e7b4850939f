package bridge

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// Headers of PHP's rejection that are passed on to the client with its status and body.
var rejectHeaders = []string{"Content-Type", "Location", "Retry-After", "Www-Authenticate"}

// serveWS handles an upgrade request: origin check, the open webhook, then the upgrade. PHP is
// asked before the upgrade is accepted so that its refusal reaches the client as a real HTTP
// status (401, 403, ...) rather than as a WebSocket that opens and closes at once.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	// Everything websocket.Accept would refuse is refused here, before PHP is asked: PHP must
	// never run its open (and close) logic for a socket that cannot exist.
	if status, why := checkHandshake(w.Header(), r); status != 0 {
		s.metrics.rejected.WithLabelValues(rejectBadHandshake).Inc()
		s.log.Debug("upgrade refused: invalid handshake", "status", status, "err", why)
		http.Error(w, why, status)
		return
	}
	if !s.originAllowed(r) {
		s.metrics.rejected.WithLabelValues(rejectOrigin).Inc()
		s.log.Warn("upgrade refused: origin not allowed", "origin", r.Header.Get("Origin"), "host", r.Host)
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
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
		return
	}
	defer handshakeDone()
	headers, err := s.forwardedHeaders(r, cl)
	if err != nil {
		s.metrics.rejected.WithLabelValues(rejectLimit).Inc()
		s.metrics.limit("forwarded_headers")
		s.log.Debug("upgrade refused: forwarded headers too large", "client", ip, "err", err)
		http.Error(w, err.Error(), http.StatusRequestHeaderFieldsTooLarge)
		return
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
		return
	}
	// Until the connection is handed to its own goroutine, every return gives back what was
	// taken; after that, the connection does (conn.ended, then leave).
	handedOff := false
	defer func() {
		if !handedOff {
			release()
		}
	}()
	if !s.enter() {
		s.metrics.rejected.WithLabelValues(rejectDraining).Inc()
		w.Header().Set("Retry-After", "5")
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return
	}
	defer func() {
		if !handedOff {
			s.leave()
		}
	}()

	id := s.newConnID()
	c := &conn{
		id:          id,
		srv:         s,
		log:         s.log.With("conn", id),
		traceparent: validTraceparent(r.Header.Get("Traceparent")),
		writerDone:  make(chan struct{}),
		release:     release,
	}
	if s.cfg.MessageRate > 0 {
		c.rate = rate.NewLimiter(rate.Limit(s.cfg.MessageRate), s.cfg.MessageBurst)
	}
	offered := subprotocols(r)
	ev := s.newEvent(EventOpen, id, State{})
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
	stop := context.AfterFunc(r.Context(), func() { c.log.Debug("client left during the open webhook", "event", ev.EventID) })
	res, err := s.hooks.send(hctx, ev, c.traceparent, failFast)
	stop()
	cancel()
	handshakeDone() // no longer pending: PHP has answered
	if errors.Is(err, errMalformedReply) {
		s.refuseMalformedOpen(w, c, ev, err)
		return
	}
	if err != nil {
		s.metrics.rejected.WithLabelValues(rejectUnavailable).Inc()
		c.log.Error("upgrade refused with 503: open webhook failed", "event", ev.EventID, "err", err)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "the application is unavailable", http.StatusServiceUnavailable)
		return
	}
	if !res.OK() {
		s.metrics.rejected.WithLabelValues(rejectPHP).Inc()
		c.log.Debug("upgrade refused by PHP", "status", res.Status)
		for _, h := range rejectHeaders {
			if v := res.Header.Get(h); v != "" {
				w.Header().Set(h, v)
			}
		}
		w.WriteHeader(res.Status)
		w.Write(res.Body)
		return
	}
	reply := res.Reply
	if reply.Subprotocol != nil && *reply.Subprotocol != "" && !slices.Contains(offered, *reply.Subprotocol) {
		s.refuseMalformedOpen(w, c, ev, errors.New(`"subprotocol" names one the client did not offer`))
		return
	}

	opts := &websocket.AcceptOptions{
		// originAllowed already applied ALLOWED_ORIGINS with the same rules coder/websocket
		// uses; checking here a second time could only refuse a client PHP already accepted.
		InsecureSkipVerify: true,
		// Pings are frames a client makes the bridge answer: they count against MESSAGE_RATE
		// like messages, or a ping flood would be free.
		OnPingReceived: c.pingReceived,
	}
	if s.cfg.Compression == "on" {
		// No context takeover both ways: each message is compressed alone, so a broadcast is
		// compressed once for all (wsframe.go), and no connection keeps a 32 KiB window.
		opts.CompressionMode = websocket.CompressionNoContextTakeover
	}
	if reply.Subprotocol != nil && *reply.Subprotocol != "" {
		opts.Subprotocols = []string{*reply.Subprotocol}
	}
	// Register before the upgrade completes, so that from the moment the client sees the
	// socket open, pushes reach it and presence lists it.
	c.opened = time.Now()
	s.hub.Add(c, ConnInfo{ID: id, RemoteAddr: cl.remote, Path: r.URL.Path, Subprotocol: deref(reply.Subprotocol), ConnectedAt: c.opened},
		&c.counters, deref(reply.UserID), reply.Meta, reply.Join)
	if r.Context().Err() != nil {
		// The client left while PHP accepted it. Accept would answer a closed socket; PHP is
		// told at once that this connection ended, as for any client that vanishes.
		s.metrics.rejected.WithLabelValues(rejectUpgradeFailed).Inc()
		c.Close(int(websocket.StatusAbnormalClosure), "client left during the handshake", InitiatorClient)
		c.ended(s.base)
		return
	}
	cw := &corkingWriter{ResponseWriter: w, owner: c}
	ws, err := websocket.Accept(cw, r, opts)
	if err != nil {
		// Accept has answered the client. PHP accepted the connection, so it is told that it
		// ended: every accepted open gets exactly one close.
		s.metrics.rejected.WithLabelValues(rejectUpgradeFailed).Inc()
		c.log.Warn("upgrade failed after PHP accepted it", "err", err)
		c.Close(int(websocket.StatusAbnormalClosure), "upgrade failed", InitiatorServer)
		c.ended(s.base)
		return
	}
	s.metrics.accepted.Inc()
	s.metrics.connections.Inc()
	ws.SetReadLimit(s.cfg.MaxMessageSize)
	c.wire = cw.conn // its owner, c, was set in Hijack, before anything read the socket
	c.wire.deflate = strings.HasPrefix(w.Header().Get("Sec-WebSocket-Extensions"), "permessage-deflate")
	c.setSocket(ws)
	// Shutdown may have closed every connection between enter and Add; this one was not in
	// the hub yet, so it closes itself.
	if s.draining.Load() {
		c.Close(1001, "server shutdown", InitiatorShutdown)
	}
	c.log.Debug("connection opened", "user", deref(reply.UserID), "client", ip)
	s.apply(s.base, c, &Reply{Send: reply.Send, Publish: reply.Publish, Close: reply.Close})
	// The handler returns and the connection lives on a fresh goroutine: the handler's stack,
	// grown deep by the open webhook, and net/http's request state would otherwise be held for
	// the socket's whole life (measured: 35 → 23 KiB of RSS per idle connection at 10,000).
	handedOff = true
	go func() {
		defer s.leave()
		c.run(s.base)
		s.metrics.connections.Dec()
	}()
}

// refuseMalformedOpen answers 502: PHP said yes in a way that cannot be carried out, and
// accepting the client without what PHP asked for (its user id, its channels) would be wrong.
func (s *Server) refuseMalformedOpen(w http.ResponseWriter, c *conn, ev *Event, err error) {
	s.metrics.rejected.WithLabelValues(rejectMalformed).Inc()
	if l := limitName(err); l != "" {
		s.metrics.limit(l)
	}
	c.log.Error("upgrade refused with 502: open reply refused", "event", ev.EventID, "err", err)
	http.Error(w, "the application sent an invalid answer", http.StatusBadGateway)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// checkHandshake applies RFC 6455 §4.2.1 as websocket.Accept does, and returns the status and
// reason of a refusal, or 0. It may set headers of the answer (the supported version, §4.4).
func checkHandshake(h http.Header, r *http.Request) (int, string) {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		h.Set("Connection", "Upgrade")
		h.Set("Upgrade", "websocket")
		return http.StatusUpgradeRequired, "this is a WebSocket endpoint: send a GET with Connection: Upgrade and Upgrade: websocket"
	}
	if !r.ProtoAtLeast(1, 1) {
		return http.StatusUpgradeRequired, "a WebSocket handshake needs HTTP/1.1 or later, not " + r.Proto
	}
	if r.Method != http.MethodGet {
		h.Set("Allow", http.MethodGet)
		return http.StatusMethodNotAllowed, "a WebSocket handshake is a GET, not " + r.Method
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		h.Set("Sec-WebSocket-Version", "13")
		return http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version: only 13 is supported"
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 {
		return http.StatusBadRequest, "a WebSocket handshake needs exactly one Sec-WebSocket-Key"
	}
	if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(k) != 16 {
		return http.StatusBadRequest, "Sec-WebSocket-Key must be 16 bytes in base64"
	}
	return 0, ""
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// subprotocols lists what the client offered in Sec-WebSocket-Protocol, never nil.
func subprotocols(r *http.Request) []string {
	out := []string{}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
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
