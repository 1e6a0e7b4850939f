package bridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// InternalHandler serves the internal listener: the push API under /v1/ (bearer token when one
// is configured) and the unauthenticated probes /healthz and /readyz.
func (s *Server) InternalHandler() http.Handler {
	api := http.NewServeMux()
	api.HandleFunc("POST /v1/publish", s.handlePublish)
	api.HandleFunc("POST /v1/connections/{id}/close", s.handleCloseConnection)
	api.HandleFunc("POST /v1/users/{id}/close", s.handleCloseUser)
	api.HandleFunc("POST /v1/channels/{name}/join", s.handleSubscribe(false))
	api.HandleFunc("POST /v1/channels/{name}/leave", s.handleSubscribe(true))
	api.HandleFunc("GET /v1/connections", s.handleListConnections)
	api.HandleFunc("GET /v1/connections/{id}", s.handleConnection)
	api.HandleFunc("GET /v1/channels/{name}", s.handleChannel)
	api.HandleFunc("GET /v1/stats", s.handleStats)
	api.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path))
	})

	mux := http.NewServeMux()
	mux.Handle("/v1/", s.requireToken(api))
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.Handle("GET /metrics", s.metrics.handler())
	return s.refuseBrowsers(mux)
}

// refuseBrowsers keeps web pages out of the internal listener. Without API_TOKEN it is open to
// anything on the host, and a page in a local browser can reach it: by a cross-site "simple"
// POST (text/plain needs no CORS preflight), or by DNS rebinding (a name of the attacker's that
// now resolves to 127.0.0.1, which makes the page same-origin with the API). PHP's requests
// carry no Origin and no Sec-Fetch-Site; browsers send them on every such request. The Host
// check stops rebinding even in a browser that sends neither. With a token, the token is the
// protection, so any Host passes (the listener may then sit behind a name of its own).
func (s *Server) refuseBrowsers(next http.Handler) http.Handler {
	checkHost := s.cfg.APIToken == "" && !strings.HasPrefix(s.cfg.InternalListen, "unix:")
	var listenHost string
	if h, _, err := net.SplitHostPort(s.cfg.InternalListen); err == nil {
		listenHost = strings.ToLower(strings.Trim(h, "[]"))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") != "" {
			apiError(w, http.StatusForbidden, "forbidden", "requests from web pages (with an Origin header) are refused: the internal API is for the application's server side")
			return
		}
		switch r.Header.Get("Sec-Fetch-Site") {
		case "cross-site", "same-site":
			apiError(w, http.StatusForbidden, "forbidden", "requests from web pages (Sec-Fetch-Site: cross-site or same-site) are refused")
			return
		}
		if checkHost && !localHost(r.Host, listenHost) {
			apiError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("Host %q is not this listener: without API_TOKEN only localhost, a loopback address or %q is accepted", r.Host, listenHost))
			return
		}
		if r.Method == http.MethodPost && r.ContentLength != 0 {
			if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
				apiError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send the body with Content-Type: application/json")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// localHost reports whether a request's Host names this host's loopback listener: localhost,
// a loopback address, or the configured listen host; the port is not compared. An absent Host
// (HTTP/1.0) passes: browsers always send one.
func localHost(hostport, listenHost string) bool {
	if hostport == "" {
		return true
	}
	h := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		h = hh
	}
	h = strings.ToLower(strings.Trim(h, "[]"))
	if h == "localhost" || (listenHost != "" && h == listenHost) {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// requireToken checks "Authorization: Bearer <API_TOKEN>" in constant time. Both sides are
// hashed first so that the comparison does not even leak the token's length.
func (s *Server) requireToken(next http.Handler) http.Handler {
	if s.cfg.APIToken == "" {
		return next
	}
	want := sha256.Sum256([]byte(s.cfg.APIToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(token))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wsbridge"`)
			apiError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// handlePublish takes one publication or a batch (a JSON array). The whole request is checked
// before anything is delivered, so a batch with one bad item delivers nothing.
func (s *Server) handlePublish(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r, true)
	if !ok {
		return
	}
	pubs, batch, perr := s.decodePublications(body)
	if perr != nil {
		apiError(w, perr.status, perr.code, perr.err.Error())
		return
	}

	results := make([]publishResult, len(pubs))
	total := 0
	for i := range pubs {
		n, err := s.publish(r.Context(), &pubs[i])
		if err != nil {
			// Local delivery happened; only forwarding to other nodes failed.
			s.log.Error("publish: broker failed", "err", err)
			apiError(w, http.StatusBadGateway, "broker_error", fmt.Sprintf("delivered locally, but forwarding to other nodes failed: %v", err))
			return
		}
		results[i] = publishResult{Delivered: n}
		total += n
	}
	if batch {
		writeJSON(w, http.StatusOK, map[string]any{"delivered": total, "results": results})
		return
	}
	writeJSON(w, http.StatusOK, results[0])
}

// decodeError is why a publish body was refused, as the push API answers it.
type decodeError struct {
	status int
	code   string
	err    error
}

// decodePublications decodes and checks one publication or a batch (a JSON array) whole:
// the push API's body, and what PHP publishes through the engine (cluster.go's AppPublisher).
// A batch with one bad item is refused whole.
func (s *Server) decodePublications(body []byte) (pubs []Publication, batch bool, _ *decodeError) {
	batch = len(body) > 0 && body[0] == '['
	if batch {
		if err := decodeStrict(body, &pubs); err != nil {
			return nil, batch, &decodeError{http.StatusBadRequest, "bad_request", err}
		}
		if len(pubs) == 0 {
			return nil, batch, &decodeError{http.StatusBadRequest, "bad_request", errors.New("empty batch")}
		}
		if len(pubs) > s.cfg.MaxBatch {
			s.metrics.limit("batch")
			return nil, batch, &decodeError{http.StatusRequestEntityTooLarge, "too_large", fmt.Errorf("batch of %d items, more than MAX_BATCH=%d", len(pubs), s.cfg.MaxBatch)}
		}
	} else {
		pubs = make([]Publication, 1)
		if err := decodeStrict(body, &pubs[0]); err != nil {
			return nil, batch, &decodeError{http.StatusBadRequest, "bad_request", err}
		}
	}
	for i := range pubs {
		if err := pubs[i].validate(s.limits); err != nil {
			if batch {
				err = fmt.Errorf("item %d: %w", i, err)
			}
			return nil, batch, &decodeError{http.StatusBadRequest, "bad_request", err}
		}
	}
	return pubs, batch, nil
}

type publishResult struct {
	Delivered int `json:"delivered"`
}

func (s *Server) handleCloseConnection(w http.ResponseWriter, r *http.Request) {
	s.closeTargets(w, r, Targets{Connections: []string{r.PathValue("id")}})
}

func (s *Server) handleCloseUser(w http.ResponseWriter, r *http.Request) {
	s.closeTargets(w, r, Targets{Users: []string{r.PathValue("id")}})
}

// closeTargets closes connections with an optional {"code", "reason"} body (default 1000).
func (s *Server) closeTargets(w http.ResponseWriter, r *http.Request, to Targets) {
	body, ok := s.readBody(w, r, false)
	if !ok {
		return
	}
	req := CloseRequest{Code: 1000}
	if len(body) > 0 {
		if err := decodeStrict(body, &req); err != nil {
			apiError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		if req.Code == 0 {
			req.Code = 1000
		}
		if err := req.validate(); err != nil {
			apiError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
	}
	n, err := s.hub.CloseConnections(r.Context(), to, req, InitiatorAPI)
	if err != nil {
		apiError(w, http.StatusBadGateway, "broker_error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"closed": n})
}

// subscribeRequest names who joins or leaves a channel.
type subscribeRequest struct {
	Connections []string `json:"connections"`
	Users       []string `json:"users"`
}

func (s *Server) handleSubscribe(leave bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		channel := r.PathValue("name")
		if err := validateName(channel, s.limits.MaxNameLen); err != nil {
			apiError(w, http.StatusBadRequest, "bad_request", "channel name "+err.Error())
			return
		}
		body, ok := s.readBody(w, r, true)
		if !ok {
			return
		}
		var req subscribeRequest
		if err := decodeStrict(body, &req); err != nil {
			apiError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		to := Targets{Connections: req.Connections, Users: req.Users}
		err := validateNames("connections", req.Connections, s.limits.MaxNameLen)
		if err == nil {
			err = validateNames("users", req.Users, s.limits.MaxNameLen)
		}
		if err == nil && to.empty() {
			err = errors.New(`name "connections" or "users"`)
		}
		if err != nil {
			apiError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		n, err := s.hub.Subscribe(r.Context(), channel, to, leave)
		if l := limitName(err); l != "" {
			s.metrics.limit(l)
			apiError(w, http.StatusConflict, "limit", err.Error())
			return
		}
		if err != nil {
			apiError(w, http.StatusBadGateway, "broker_error", err.Error())
			return
		}
		key := "joined"
		if leave {
			key = "left"
		}
		writeJSON(w, http.StatusOK, map[string]int{key: n})
	}
}

func (s *Server) handleListConnections(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != "user" && k != "channel" {
			apiError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("unknown query parameter %q (use user, channel)", k))
			return
		}
	}
	if s.cluster != nil {
		s.cluster.listConnections(w, r, q.Get("user"), q.Get("channel"))
		return
	}
	conns, total := s.hub.List(q.Get("user"), q.Get("channel"), s.cfg.MaxListResult)
	writeJSON(w, http.StatusOK, map[string]any{"connections": conns, "count": total})
}

func (s *Server) handleConnection(w http.ResponseWriter, r *http.Request) {
	if s.cluster != nil {
		s.cluster.connection(w, r, r.PathValue("id"))
		return
	}
	info, ok := s.hub.Info(r.PathValue("id"))
	if !ok {
		apiError(w, http.StatusNotFound, "not_found", "no such connection on this node")
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) handleChannel(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if s.cluster != nil {
		s.cluster.channel(w, r, name)
		return
	}
	conns, users, count := s.hub.Members(name, s.cfg.MaxListResult)
	writeJSON(w, http.StatusOK, map[string]any{"channel": name, "connections": conns, "users": users, "count": count})
}

// NodeRegistry is implemented by brokers that know which nodes are in the cluster now:
// /v1/stats lists them, and cluster-wide queries and the close webhooks of a node that died
// build on it.
type NodeRegistry interface {
	// Nodes returns the ids of the nodes whose Run is joined now, sorted. It must return once
	// ctx ends.
	Nodes(ctx context.Context) ([]string, error)
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	hs := s.hub.Stats()
	stats := map[string]any{
		"node":             s.node,
		"uptime_seconds":   int64(time.Since(s.start).Seconds()),
		"draining":         s.draining.Load(),
		"connections":      hs.Connections,
		"users":            hs.Users,
		"channels":         hs.Channels,
		"accepted_total":   counterValue(s.metrics.accepted),
		"rejected_total":   counterValue(s.metrics.rejected),
		"publishes_total":  counterValue(s.metrics.publishes),
		"webhook_failures": s.webhookFailures(),
		"php_down":         s.hooks.breaker.open(),
	}
	if s.cluster != nil {
		s.cluster.stats(r.Context(), stats, hs)
	}
	if reg, ok := s.broker.(NodeRegistry); ok {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.BrokerTimeout)
		nodes, err := reg.Nodes(ctx)
		cancel()
		if err != nil {
			// The rest of the answer is this node's own and still true.
			stats["nodes_error"] = err.Error()
		} else {
			stats["nodes"] = nodes
		}
	}
	writeJSON(w, http.StatusOK, stats)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// BrokerHealth is implemented by brokers whose engine can be unreachable (a Redis or NATS
// server). /readyz asks it, so a load balancer takes a node that cannot reach the others out of
// rotation: its clients would miss every push made on another node.
type BrokerHealth interface {
	// Healthy returns nil when the broker can publish and receive now, else why not (shown to
	// the operator as /readyz's detail). It must return once ctx ends.
	Healthy(ctx context.Context) error
}

// handleReady answers 503 once shutdown has begun; while the broker reports itself unhealthy
// (or does not answer within BROKER_TIMEOUT); and while PHP is unreachable: considered
// down after repeated failures, or, when no webhook succeeded lately, not accepting a TCP
// connection at the webhook URL's address. A load balancer then sends browsers elsewhere rather
// than to a bridge that can only answer 503.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	}
	if h, ok := s.broker.(BrokerHealth); ok {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.BrokerTimeout)
		err := h.Healthy(ctx)
		cancel()
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "broker_unreachable", "detail": err.Error()})
			return
		}
	}
	if err := s.hooks.reachable(r.Context()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "php_unreachable", "detail": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// readBody reads a size-limited request body. With required, an empty body is refused.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, required bool) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxPushBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		s.metrics.limit("push_body")
		apiError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body larger than MAX_PUSH_BODY=%d bytes", s.cfg.MaxPushBody))
		return nil, false
	case err != nil:
		apiError(w, http.StatusBadRequest, "bad_request", "reading body: "+err.Error())
		return nil, false
	}
	body = bytes.TrimSpace(body)
	if required && len(body) == 0 {
		apiError(w, http.StatusBadRequest, "bad_request", "empty body: send a JSON object")
		return nil, false
	}
	return body, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":"internal","detail":"encode response"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// apiError writes the push API's error shape: {"error": code, "detail": what is wrong}.
func apiError(w http.ResponseWriter, status int, code, detail string) {
	writeJSON(w, status, map[string]string{"error": code, "detail": detail})
}
