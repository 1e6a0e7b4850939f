package bridge

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"net"
	"net/http"
	"strings"

	"github.com/coder/websocket"
	"github.com/wsbridge/wsbridge/bridge/internal/wsraw"
)

// serveWS is the WebSocket transport: the RFC 6455 handshake's checks, then the session's
// admission and open webhook (openSession), then the upgrade and the hand-off to the
// connection's own goroutine (runSession). Everything that is not WebSocket's is in session.go.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	// Everything websocket.Accept would refuse is refused here, before PHP is asked: PHP must
	// never run its open (and close) logic for a socket that cannot exist.
	if status, why := checkHandshake(w.Header(), r); status != 0 {
		s.metrics.rejected.WithLabelValues(rejectBadHandshake).Inc()
		s.log.Debug("upgrade refused: invalid handshake", "status", status, "err", why)
		http.Error(w, why, status)
		return
	}
	c := &conn{writerDone: make(chan struct{})}
	o, ok := s.openSession(w, r, c, subprotocols(r))
	if !ok {
		return
	}
	opts := &websocket.AcceptOptions{
		// originAllowed already applied ALLOWED_ORIGINS with the same rules coder/websocket
		// uses; checking here a second time could only refuse a client PHP already accepted.
		InsecureSkipVerify: true,
		// Pings are frames a client makes the bridge answer: they count against MESSAGE_RATE
		// like messages, or a ping flood would be free.
		OnPingReceived: c.pingReceived,
		// Set either way, not left to coder/websocket's default: wsframe.go writes data
		// frames itself and must know whether RSV1 may be set.
		CompressionMode: websocket.CompressionDisabled,
	}
	if s.cfg.Compression == "on" {
		// No context takeover both ways: each message is compressed alone, so a broadcast is
		// compressed once for all (wsframe.go), and no connection keeps a 32 KiB window.
		opts.CompressionMode = websocket.CompressionNoContextTakeover
	}
	if sp := deref(o.reply.Subprotocol); sp != "" {
		opts.Subprotocols = []string{sp}
	}
	cw := &corkingWriter{ResponseWriter: w, owner: c}
	ws, err := websocket.Accept(cw, r, opts)
	if err != nil {
		// Accept has answered the client. PHP accepted the connection, so it is told that it
		// ended: every accepted open gets exactly one close.
		c.log.Warn("upgrade failed after PHP accepted it", "err", err)
		s.abortSession(c, int(websocket.StatusAbnormalClosure), "upgrade failed", InitiatorServer)
		return
	}
	ws.SetReadLimit(s.cfg.MaxMessageSize)
	c.wire = cw.conn // its owner, c, was set in Hijack, before anything read the socket
	c.wire.PerMessageDeflate = strings.HasPrefix(w.Header().Get("Sec-WebSocket-Extensions"), "permessage-deflate")
	if deref(o.reply.Subprotocol) == framedSubprotocol {
		// Only ever set to true, and only while the hub sees the connection's recovery in its
		// place (history.go), so no reader of framed runs concurrently with this write.
		c.framed = true
	}
	c.setSocket(ws)
	s.runSession(c, o, c.run)
}

// checkHandshake applies RFC 6455 §4.2.1 as websocket.Accept does, and returns the status and
// reason of a refusal, or 0. It may set headers of the answer (the supported version, §4.4).
func checkHandshake(h http.Header, r *http.Request) (int, string) {
	if !hasToken(r.Header.Values("Connection"), "upgrade") || !hasToken(r.Header.Values("Upgrade"), "websocket") {
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

// subprotocols lists what the client offered in Sec-WebSocket-Protocol, never nil.
func subprotocols(r *http.Request) []string {
	out := []string{}
	for p := range listItems(r.Header.Values("Sec-WebSocket-Protocol")) {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// corkingWriter is the ResponseWriter websocket.Accept hijacks: the socket it gets is wrapped in
// a wsraw.Conn, and so is the buffered writer coder/websocket writes through.
type corkingWriter struct {
	http.ResponseWriter
	owner *conn
	conn  *wsraw.Conn
}

func (w *corkingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = wsraw.New(nc)
	if w.owner != nil {
		w.conn.SetOwner(w.owner)
		// A client may send frames right behind its handshake, and net/http may have read
		// them with the request. coder/websocket v1.8.15 reads those bytes from brw.Reader,
		// not through w.conn (it resets the reader to them followed by the connection), so
		// the scanner takes them here, or it would start in the middle of a frame. They are
		// charged when reading begins, once the connection is fully set up.
		b, _ := brw.Reader.Peek(brw.Reader.Buffered())
		w.owner.scan.Owed = uint32(w.owner.scan.Feed(b))
	}
	return w.conn, hijackedBuffers(brw.Reader, w.conn), nil
}

// maxControlFrame is the largest frame coder/websocket writes on a server connection: a control
// frame, 2 bytes of header and at most 125 of payload, unmasked (RFC 6455 §5.5).
const maxControlFrame = 2 + 125

// hijackedBuffers are the buffers coder/websocket keeps for the connection's life, made as small
// as what it does through them allows; net/http's two 4 KiB ones (half of an idle connection's
// memory, docs/benchmarks.md) are let go.
//   - The writer carries only control frames (the bridge writes data frames to the socket
//     itself), and each must reach wsraw.Conn.Write whole, in one call, at a frame boundary:
//     writeFrame flushes on FIN, which every control frame has, so a buffer that holds the
//     largest one is enough.
//   - The reader is 16 bytes (bufio's least) when wsraw.Conn reads ahead itself, in a pooled
//     buffer held only while bytes wait; else (TLS) net/http's is kept. What net/http had read
//     past the handshake (frames the client sent right behind it) must come first, and
//     coder/websocket takes it from the reader's buffer (accept.go in v1.8.15), so the small
//     reader is handed those bytes already buffered.
func hijackedBuffers(br *bufio.Reader, nc *wsraw.Conn) *bufio.ReadWriter {
	bw := bufio.NewWriterSize(nc, maxControlFrame)
	if !nc.ReadsAhead() {
		return bufio.NewReadWriter(br, bw)
	}
	early, _ := br.Peek(br.Buffered())
	small := bufio.NewReaderSize(bytes.NewReader(bytes.Clone(early)), max(16, len(early)))
	small.Peek(len(early)) // buffered now; coder/websocket then reads on from nc
	return bufio.NewReadWriter(small, bw)
}
