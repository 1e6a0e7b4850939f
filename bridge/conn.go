package bridge

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/wsbridge/wsbridge/bridge/internal/wsraw"
)

// conn is one accepted WebSocket: a read loop (its own goroutine, started as the upgrade handler
// returns) that turns frames into message webhooks one at a time, a writer goroutine that owns
// the socket's writes while there is something to write (a frame to a quiet connection is
// written by its sender instead; writer.go), and a timer that pings every PING_INTERVAL to
// detect dead peers. What is not WebSocket's (who it is, how it ends, its webhooks) is the
// embedded session (session.go).
type conn struct {
	session
	// ws is set once, after the upgrade. The connection is in the hub (and may be sent to or
	// closed) a moment before that; only dropSlow can run then, and it reads ws under closeMu.
	// Every other use is in goroutines started after setSocket.
	ws    *websocket.Conn
	wire  *wsraw.Conn // the socket under ws; the writer corks it during a burst
	burst bool        // the writer is gathering a burst (owned by the writer)
	// framed: the client chose wsbridge.v1+json, and every frame goes to it as JSON that says
	// its channel and position (history.go). Set before the writer starts; in burst's padding.
	framed bool

	// scan follows the frames the client sends, for MESSAGE_RATE (wsraw.FrameScan); used only by
	// whoever reads the socket (coder/websocket serialises its readers).
	scan wsraw.FrameScan

	queue      sendQueue
	lastSend   atomic.Int64    // when Send last ran, in ns since epoch (writer.go)
	ctx        context.Context // the connection's, for pings; set by startWriter
	idle       atomic.Bool     // no writer runs and one may start (false until startWriter)
	wtimer     *time.Timer     // the write timeout, re-armed per write; owned by the writer
	pinger     *time.Timer     // the keepalive; set under closeMu
	writerDone chan struct{}   // closed when the last writer has closed the socket
	busy       atomic.Bool     // a message webhook is in flight and reads are paused
	failing    atomic.Bool     // the bridge failed the connection (§7.1.7); finish skips the handshake
}

var (
	_ transport   = (*conn)(nil)
	_ wsraw.Owner = (*conn)(nil)
)

func (c *conn) ID() string           { return c.id }
func (c *conn) kind() string         { return transportWS }
func (c *conn) base() *session       { return &c.session }
func (c *conn) sendReply(fs []Frame) { c.sendOwn(fs) }

// Close records why the connection ends and wakes the writer, which closes the socket. Only the
// first call counts, so the close webhook reports the real cause, not its echo; it alone reports
// true.
func (c *conn) Close(code int, reason string, by Initiator) bool {
	if !c.recordClose(code, reason, by) {
		return false
	}
	c.kick() // the writer flushes and closes the socket
	return true
}

func (c *conn) setSocket(ws *websocket.Conn) {
	c.closeMu.Lock()
	c.ws = ws
	c.closeMu.Unlock()
}

// readLoop delivers the client's frames to PHP in order, each after PHP answered the previous
// one. While PHP works the socket is not read, so TCP pushes back on a client that sends faster
// than PHP answers.
func (c *conn) readLoop(ctx context.Context) {
	if n := c.scan.Owed; n > 0 {
		// Continuations the client sent behind its handshake (corkingWriter.Hijack).
		c.scan.Owed = 0
		c.allowFrames(int(n))
	}
	var seq uint64
	for c.readMessage(ctx, &seq) {
	}
}

// readMessage reads the client's next message and delivers it, the *seq-th, unless the
// connection is closing or the message is refused; false when reading has ended.
func (c *conn) readMessage(ctx context.Context, seq *uint64) bool {
	typ, r, err := c.ws.Reader(ctx)
	if err != nil {
		c.readFailed(err)
		return false
	}
	buf := msgBufs.Get().(*[]byte)
	defer putMsgBuf(buf)
	data, err := readMessageInto((*buf)[:0], r)
	*buf = data[:0]
	if err != nil {
		c.readFailed(err)
		return false
	}
	if c.isClosing() {
		// The close has begun (the client is being told why); frames it sent meanwhile
		// are not delivered. Reading goes on only to complete the close handshake.
		return true
	}
	if !c.allowFrame() {
		return true
	}
	if typ == websocket.MessageText && !utf8.Valid(data) {
		// coder/websocket does not check UTF-8; §8.1 says the endpoint MUST fail the
		// connection. The whole message is checked, so a character split across
		// fragments passes and a bad one anywhere fails. PHP never sees it: json.Marshal
		// would have turned the bad bytes into U+FFFD, altering what the client sent.
		c.Close(int(websocket.StatusInvalidFramePayloadData), "invalid UTF-8 in text message", InitiatorServer)
		return true
	}
	*seq++
	c.counters.In.Add(1)
	c.srv.metrics.messagesIn.Inc()
	c.srv.metrics.bytesIn.Add(float64(len(data)))
	c.busy.Store(true)
	c.srv.deliverMessage(ctx, c, *seq, typ == websocket.MessageBinary, data)
	c.busy.Store(false)
	return true
}

// msgBufs hold a client message while it is delivered: ws.Read's io.ReadAll allocated and grew
// a new buffer for every message. Nothing keeps the bytes once deliverMessage returns (the
// event carries a copy), so the buffer goes back to the pool; one grown past maxPooledMsg by a
// large message is let go instead, so that the pool does not keep the largest ever read.
var msgBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxPooledMsg = 64 << 10

func putMsgBuf(b *[]byte) {
	if cap(*b) <= maxPooledMsg {
		msgBufs.Put(b)
	}
}

// readMessageInto is io.ReadAll into b (whose length is 0).
func readMessageInto(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// allowFrame applies MESSAGE_RATE to a frame the client sent (a message or a ping) and closes
// a client that sends too fast with 1008.
func (c *conn) allowFrame() bool { return c.allowFrames(1) }

// allowFrames is allowFrame for n frames at once: all of them fit in the bucket or the client
// is closed (the bytes were read together; charging them one by one would end the same way).
func (c *conn) allowFrames(n int) bool {
	if c.rate == nil || c.rate.AllowN(time.Now(), n) {
		return true
	}
	if c.Close(int(websocket.StatusPolicyViolation), "message rate exceeded", InitiatorServer) {
		c.srv.metrics.limit("message_rate")
		c.log.Warn("closing: message rate exceeded", "rate", c.srv.cfg.MessageRate, "burst", c.srv.cfg.MessageBurst)
	}
	return false
}

// MaxMessageSize and PingTimeout are the settings the socket (wsraw.Conn) needs: the read limit
// for a 1009's reason, and how long the close handshake may take once our Close went out.
func (c *conn) MaxMessageSize() int64      { return c.srv.cfg.MaxMessageSize }
func (c *conn) PingTimeout() time.Duration { return c.srv.cfg.PingTimeout }

// Scanned runs in the reader for every read from the socket: the continuation frames that
// began in b count against MESSAGE_RATE, so that a message that never ends is not free. A
// read with none, which is every read of unfragmented messages, costs the scan alone.
func (c *conn) Scanned(b []byte) {
	if c.rate == nil {
		return // no MESSAGE_RATE: nothing to count
	}
	if n := c.scan.Feed(b); n > 0 && !c.isClosing() {
		c.allowFrames(n)
	}
}

// pingReceived runs in the reader for every ping: a ping within MESSAGE_RATE is answered with
// its pong; beyond it the connection is closed and the ping left unanswered.
func (c *conn) pingReceived(context.Context, []byte) bool {
	return c.isClosing() || c.allowFrame()
}

// readFailed records why reading ended, unless something else already closed the connection
// (then this error is only the consequence). The close webhook carries the code the client was
// actually sent: coder/websocket fails the connection itself on a protocol error or an
// oversized message, and wsraw.Conn saw its Close frame go out.
func (c *conn) readFailed(err error) {
	sent, code, reason := c.wire.SentClose()
	var ce websocket.CloseError
	switch {
	case errors.As(err, &ce) && (!sent || code == 0 || code == int(ce.Code)):
		// The client closed; coder/websocket echoed its code.
		c.Close(int(ce.Code), ce.Reason, InitiatorClient)
	case errors.Is(err, websocket.ErrMessageTooBig):
		c.srv.metrics.limit("message_size")
		c.failing.Store(true)
		c.Close(int(websocket.StatusMessageTooBig), reason, InitiatorServer)
	case sent && code != 0:
		// coder/websocket failed the connection (1002), or wsraw.Conn answered a client's close
		// whose reason is not UTF-8 with 1007.
		c.failing.Store(true)
		c.Close(code, reason, InitiatorServer)
	case connLost(err):
		// The socket ended without a close frame: the client vanished or the network broke.
		c.Close(int(websocket.StatusAbnormalClosure), "connection lost", InitiatorClient)
	default:
		// A protocol error coder/websocket reports without sending Close (an unmasked frame,
		// §5.1): the bridge fails the connection with 1002 itself.
		c.log.Debug("closing: protocol error", "err", err)
		c.failing.Store(true)
		c.Close(int(websocket.StatusProtocolError), "protocol error", InitiatorServer)
	}
}

// connLost reports whether a read error is the socket's rather than the peer's protocol's.
func connLost(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, syscall.ECONNRESET) || errors.As(err, &ne)
}

// run is the connection's life once accepted (runSession's serve): it returns when the socket
// is closed and the writer has stopped; the session then ends.
func (c *conn) run(ctx context.Context) {
	c.startWriter(ctx)
	c.readLoop(ctx)
	// The read loop ends when the socket is closed; make sure the writer stops too even if
	// the socket ended without anyone calling Close (then readFailed did).
	<-c.writerDone
}
