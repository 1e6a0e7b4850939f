package bridge

// The Pusher protocol transport (protocol 7, as pusher-js 8 and Laravel Echo speak it) on
// /app/{key} of the public listener. A Pusher connection is a WebSocket connection (conn, with
// its queue, pings and close) whose messages are Pusher's JSON events rather than PHP's: the
// protocol itself (subscriptions, presence, client events, ping) is answered here, in
// pusherproto.go, and only client events reach PHP as message webhooks. Its session is the
// same as every transport's (session.go): PHP's open webhook decides before the upgrade, with
// the handshake's cookies, and the close webhook comes exactly once. docs/PROTOCOL.md ("Pusher
// protocol") is the client-facing contract.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/coder/websocket"
)

const (
	transportPusher = "pusher"
	// pusherProtocol is the only protocol version served: pusher-js 7 and 8 send it.
	pusherProtocol = "7"
	// pusherActivityTimeout (seconds) is what connection_established announces: pusher-js pings
	// after that long without a message from the server. The bridge's own WebSocket pings
	// (PING_INTERVAL) judge whether the client is alive; this only keeps pusher-js content.
	pusherActivityTimeout = 120
)

// Close codes pusher-js interprets (its Protocol.getCloseAction): 4000-4099 it does not
// reconnect, 4100-4199 it backs off and reconnects, 4200-4299 it reconnects at once.
const (
	pusherAppNotFound     = 4001 // wrong key in /app/{key}
	pusherBadVersion      = 4006 // ?protocol= is not a number
	pusherUnsupported     = 4007 // ?protocol= names another version
	pusherNoVersion       = 4008 // no ?protocol=
	pusherUnauthorized    = 4009 // PHP's open webhook refused the connection
	pusherOverCapacity    = 4100 // a connection limit, or PHP unavailable
	pusherMalformed       = 4300 // pusher:error only: a message that is not a Pusher event, or an unknown one
	pusherClientEventDrop = 4301 // pusher:error only: a client event refused (not subscribed, public or encrypted channel, too big)
)

// pusherApp is the Pusher mode's state shared by its connections: the app's credentials and
// the presence rosters of this node.
type pusherApp struct {
	key    string
	secret []byte
	max    int // PUSHER_MAX_PAYLOAD

	// mu orders every presence change against every roster read, so that a subscriber's
	// roster and the member_added / member_removed it is sent after it never disagree.
	mu       sync.Mutex
	presence map[string]map[string]*presenceUser // channel → user id → its subscriptions here
	// remote is what other nodes said they have: channel → user id → node → user_info
	// (pushercluster.go); outbox and sending queue this node's changes for them.
	remote  map[string]map[string]map[string]json.RawMessage
	outbox  [][]byte
	sending bool
}

// presenceUser is one user in one presence channel: the user_info of its first subscription
// (as Pusher, later tabs' user_info is not sent again) and how many of its connections hold it.
type presenceUser struct {
	info  json.RawMessage
	conns int
}

func newPusherApp(cfg *Config) *pusherApp {
	if !cfg.pusherOn() {
		return nil
	}
	return &pusherApp{key: cfg.PusherKey, secret: []byte(cfg.PusherSecret), max: cfg.PusherMaxPayload,
		presence: map[string]map[string]*presenceUser{}}
}

// newSocketID returns a Pusher socket id, "<node>.<random>" in decimal: the Pusher server SDKs
// (and Laravel's toOthers) refuse any other shape than \d+\.\d+. The first number is the FNV-1a
// hash of the node id, so that a cluster can tell the node from the id as it can from a native
// id's prefix; the second is 63 random bits.
func (s *Server) newSocketID() string {
	var b [8]byte
	rand.Read(b[:])
	h := fnv.New32a()
	h.Write([]byte(s.node))
	return strconv.FormatUint(uint64(h.Sum32()), 10) + "." + strconv.FormatUint(binary.BigEndian.Uint64(b[:])>>1, 10)
}

// pusherConn is a WebSocket connection speaking the Pusher protocol.
type pusherConn struct {
	conn
	app *pusherApp
	// subs are the channels the client subscribed through the protocol, each with the user id
	// it subscribed a presence channel as ("" for the others). Only the reader touches it; nil
	// until the first subscription, so a connection that subscribes nothing holds no map.
	subs map[string]string
	seq  uint64 // client events delivered to PHP, the message webhooks' seq
}

var _ transport = (*pusherConn)(nil)

func (p *pusherConn) kind() string { return transportPusher }

// Send hands the client a delivery of the hub: a publication's Pusher envelope, made once for
// all its Pusher recipients (hub.publicationDelivery), or the frame as it is when it has none.
func (p *pusherConn) Send(d Delivery) bool {
	if d.hist != nil && d.hist.pusher != nil {
		pd := *d.hist.pusher
		// The hub decides per publication whether its frames queue for the writers' bursts
		// (publishLocal); the envelope was made before that decision and must follow it, or
		// every Pusher recipient of a flood is one write per frame.
		pd.queue = d.queue
		return p.conn.Send(pd)
	}
	return p.conn.Send(d)
}

// Close closes the connection as conn.Close does; a close in Pusher's ranges (4000-4299: PHP's
// reply, the push API, the Pusher API's terminate_connections) is preceded by pusher:error with
// that code and the reason, as a Pusher server says why, so that the app's error callback hears
// it. Queued directly: a full queue is no reason to call the client slow, and the frame is only
// a courtesy beside the close frame, which carries the same code.
func (p *pusherConn) Close(code int, reason string, by Initiator) bool {
	if code >= 4000 && code < 4300 && !p.isClosing() {
		p.queue.push(Delivery{Data: pusherErrorFrame(code, reason)}, p.srv.cfg.SendQueue, p.srv.cfg.SendQueueBytes)
	}
	return p.conn.Close(code, reason, by)
}

// servePusher is the Pusher transport's handshake: /app/{key}?protocol=7. A wrong key or
// protocol is told the Pusher way, with pusher:error and a 4xxx close on an upgraded socket,
// because that is what stops pusher-js from reconnecting; an HTTP error would only make it try
// again for ever. PHP is never asked about such a connection. A refusal by the session (a limit,
// PHP's no) is turned into the same: 4100 (back off) for limits and an unavailable PHP, 4009
// (do not reconnect) for PHP's refusal.
func (s *Server) servePusher(w http.ResponseWriter, r *http.Request) {
	if status, why := checkHandshake(w.Header(), r); status != 0 {
		s.metrics.rejected.WithLabelValues(rejectBadHandshake).Inc()
		http.Error(w, why, status)
		return
	}
	if code, msg := s.pusherCheckURL(r); code != 0 {
		// No session, but not free either: the refusal holds a socket for its close handshake,
		// so it counts against the per-address handshake limits as an upgrade does.
		done, limit := s.handshakes.begin(s.clientOf(r).ip)
		if limit != "" {
			s.metrics.rejected.WithLabelValues(rejectHandshakeRate).Inc()
			w.Header().Set("Retry-After", s.handshakes.retryAfter(limit))
			http.Error(w, "too many handshakes from your address", http.StatusTooManyRequests)
			return
		}
		defer done()
		s.metrics.rejected.WithLabelValues(rejectBadHandshake).Inc()
		s.log.Debug("pusher connection refused", "code", code, "err", msg)
		s.refusePusher(w, r, code, msg)
		return
	}
	p := &pusherConn{conn: conn{writerDone: make(chan struct{})}, app: s.pusher}
	p.id = s.newSocketID()
	// connection_established is queued before the connection is in the hub, so that it is the
	// first message whatever else is sent to it (the open reply's frames, a publication to a
	// channel the reply joined): pusher-js reads the first message as the handshake. The writer
	// starts with it queued (startWriter, in run).
	p.queue.push(Delivery{Data: pusherEnvelope("pusher:connection_established", "",
		fmt.Sprintf(`{"socket_id":%q,"activity_timeout":%d}`, p.id, pusherActivityTimeout))}, 1, 1<<20)
	var held refusal
	o, ok := s.openSession(&held, r, p, []string{})
	if !ok {
		code, msg := held.pusherCode()
		s.refusePusher(w, r, code, msg)
		return
	}
	opts := &websocket.AcceptOptions{InsecureSkipVerify: true, OnPingReceived: p.pingReceived,
		CompressionMode: websocket.CompressionDisabled}
	if s.cfg.Compression == "on" {
		opts.CompressionMode = websocket.CompressionNoContextTakeover
	}
	cw := &corkingWriter{ResponseWriter: w, owner: &p.conn}
	ws, err := websocket.Accept(cw, r, opts)
	if err != nil {
		p.log.Warn("upgrade failed after PHP accepted it", "err", err)
		s.abortSession(p, int(websocket.StatusAbnormalClosure), "upgrade failed", InitiatorServer)
		return
	}
	ws.SetReadLimit(s.cfg.MaxMessageSize)
	p.wire = cw.conn
	p.wire.PerMessageDeflate = strings.HasPrefix(w.Header().Get("Sec-WebSocket-Extensions"), "permessage-deflate")
	p.setSocket(ws)
	s.runSession(p, o, p.run)
}

// pusherCheckURL checks the key and protocol version of the handshake's URL, as pusher-js sends
// them: /app/{key}?protocol=7&client=js&version=8.6.0.
func (s *Server) pusherCheckURL(r *http.Request) (int, string) {
	key := r.PathValue("key")
	if key != s.pusher.key { // not a secret: every page that connects carries it
		return pusherAppNotFound, fmt.Sprintf("App key %q does not exist", pusherClip(key, 64))
	}
	v := r.URL.Query().Get("protocol")
	switch {
	case v == "":
		return pusherNoVersion, "No protocol version supplied"
	case strings.Trim(v, "0123456789") != "":
		return pusherBadVersion, "Invalid version string format"
	case v != pusherProtocol:
		return pusherUnsupported, "Unsupported protocol version " + v + "; this server speaks protocol " + pusherProtocol
	}
	return 0, ""
}

// refusePusher upgrades a connection only to tell it, with pusher:error and a close of the same
// code, why it may not stay. No session exists: nothing is registered and PHP is owed nothing.
func (s *Server) refusePusher(w http.ResponseWriter, r *http.Request, code int, msg string) {
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept answered the client
	}
	defer ws.CloseNow()
	ctx, cancel := context.WithTimeout(s.base, s.cfg.WriteTimeout)
	defer cancel()
	// coder/websocket keeps a close reason within 123 bytes; the message says it in full.
	reason := msg
	if len(reason) > 123 {
		reason = reason[:123]
	}
	ws.Write(ctx, websocket.MessageText, pusherErrorFrame(code, msg))
	ws.Close(websocket.StatusCode(code), strings.ToValidUTF8(reason, ""))
}

// refusal is the ResponseWriter openSession answers a refused Pusher handshake into: the status
// is kept to choose the Pusher close code, and nothing reaches the client over HTTP.
type refusal struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *refusal) Header() http.Header {
	if h.header == nil {
		h.header = http.Header{}
	}
	return h.header
}

func (h *refusal) WriteHeader(status int) {
	if h.status == 0 {
		h.status = status
	}
}

func (h *refusal) Write(b []byte) (int, error) {
	h.WriteHeader(http.StatusOK)
	if h.body.Len() < 256 { // a message for the client, not PHP's whole page
		h.body.Write(b[:min(len(b), 256-h.body.Len())])
	}
	return len(b), nil
}

// pusherCode maps the session's refusal to a Pusher close: PHP's own refusal (its 4xx) and a
// disallowed origin are final (4009), everything else is worth trying later (4100).
func (h *refusal) pusherCode() (int, string) {
	switch {
	case h.status == http.StatusTooManyRequests || h.status >= 500:
		return pusherOverCapacity, fmt.Sprintf("Over capacity: %d %s", h.status, http.StatusText(h.status))
	default:
		return pusherUnauthorized, fmt.Sprintf("Connection is unauthorized: %d %s", h.status, http.StatusText(h.status))
	}
}

// run is the connection's life once accepted: the writer, the Pusher read loop, and, once the
// client is gone, its presence given up (member_removed to those who stay) before the session
// ends and PHP gets the close webhook.
func (p *pusherConn) run(ctx context.Context) {
	p.startWriter(ctx)
	p.readLoop(ctx)
	<-p.writerDone
	p.unsubscribeAll()
}
