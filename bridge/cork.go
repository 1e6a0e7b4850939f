package bridge

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// corkConn lets a connection's writer hand a burst of frames to the kernel in one write.
// coder/websocket flushes every message to the socket on its own; during a broadcast that is one
// write system call per frame, and the loopback or network stack behind each call is most of
// what a delivery costs. While corked, writes are gathered here; uncork sends them at once.
//
// It also lets a sender write without waiting (tryWrite): a frame that the socket buffer takes
// at once needs no writer goroutine at all.
//
// And it is where RFC 6455 §5.5.1 is kept: "after sending a Close frame, the endpoint MUST NOT
// send any more data frames". coder/websocket sends Close on its own (it echoes the client's, and
// fails the connection on a protocol error or an oversized message) while our writer may be
// streaming frames it encoded itself. Every write coder/websocket makes comes through Write, one
// control frame per call, so Write sees each Close as it goes out; from then on, under the same
// lock, writeData and tryWrite refuse. Write also mends what coder/websocket would get wrong in
// that frame (see closeFrameLocked) and bounds the rest of the close handshake in time.
type corkConn struct {
	net.Conn
	raw syscall.RawConn // nil when the socket has no file descriptor; tryWrite then declines
	mu  sync.Mutex
	buf []byte // gathered while corked, or the rest of a tryWrite the socket did not take

	// The state of one tryWrite, under mu, and the function RawConn.Write calls, bound once:
	// a closure per call would cost three allocations per frame. tried is an int32 and tryErr
	// an Errno, and corked and deflate sit in tried's padding, so that what RFC 6455 needs below costs an
	// idle connection nothing: the struct stays in its 128-byte size class.
	try     []byte
	tried   int32
	corked  bool
	deflate bool // permessage-deflate was negotiated (conn.encode); set before the socket is used
	tryErr  syscall.Errno
	writeFd func(fd uintptr) bool

	// owner is the connection this socket carries, set in Hijack before anything reads it (nil
	// in tests of the writes alone). Its Config gives MAX_MESSAGE_SIZE (for the 1009 reason)
	// and PING_TIMEOUT (how long the peer may take to finish the close handshake once our Close
	// went out); its frame scanner sees every byte read (Read). A pointer to the connection
	// rather than to its Config: the scanner's state lives in conn, whose size class has room,
	// and corkConn stays at 128 bytes. sent is set, under mu, once a Close frame has been
	// written or gathered.
	owner *conn
	sent  *sentClose
}

// config is the owner's Config, or nil.
func (c *corkConn) config() *Config {
	if c.owner == nil {
		return nil
	}
	return c.owner.srv.cfg
}

// Read is coder/websocket's path from the socket, once it has used up what net/http had
// buffered (see Hijack). The frame scanner sees each byte as it comes, in the caller's buffer.
func (c *corkConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.owner != nil {
		c.owner.scanned(p[:n])
	}
	return n, err
}

// sentClose is what the connection's Close frame said; code 0: it had no payload.
type sentClose struct {
	code   int
	reason string
}

func newCorkConn(nc net.Conn) *corkConn {
	c := &corkConn{Conn: nc, raw: rawConn(nc)}
	c.writeFd = c.writeNoWait
	return c
}

// corkMax bounds what a corked connection gathers; beyond it the burst goes out in pieces.
const corkMax = 64 << 10

// errCloseSent refuses a data frame after the connection's Close frame went out.
var errCloseSent = errors.New("close frame already sent")

// opCloseFinal is the first byte of a server's Close frame: FIN and opcode 8, no RSV bits. The
// handshake's "HTTP/1.1 101" never starts with it, and no data frame does.
const opCloseFinal = 0x88

// Write is coder/websocket's path to the socket: the handshake answer, then its control frames.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	if c.sent != nil {
		// Nothing follows a Close: not a second one, nor a ping or pong coder/websocket does
		// not know it must hold back (when the bridge wrote the Close itself, in fail).
		return 0, net.ErrClosed
	}
	if len(p) >= 2 && p[0] == opCloseFinal {
		// Not gathered even during a burst: coder/websocket may close the socket right after
		// (when it echoes the client's Close), before the writer would uncork.
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if _, err := c.Conn.Write(c.closeFrameLocked(p)); err != nil {
			return 0, err
		}
		return n, nil
	}
	if _, err := c.writeLocked(p); err != nil {
		return 0, err
	}
	return n, nil
}

// writeData writes one data frame the bridge encoded, unless the Close frame went out before it.
func (c *corkConn) writeData(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sent != nil {
		return 0, errCloseSent
	}
	return c.writeLocked(p)
}

// closeFrameLocked records the Close frame p, starts the close handshake's time bound, and
// returns the frame to send in its place when coder/websocket's would be wrong:
//   - it echoes the client's close reason as it came; one that is not UTF-8 must fail the
//     connection with 1007 (§5.5.1, §8.1) rather than be sent back (node's ws refuses it);
//   - its 1009 reason states the limit plus the one byte it reads past it.
//
// The read deadline bounds what coder/websocket's close handshake leaves unbounded: after a
// 1009 it discards the rest of the announced payload (up to 2^63 bytes) with no deadline.
func (c *corkConn) closeFrameLocked(p []byte) []byte {
	c.sent = &sentClose{}
	cfg := c.config()
	if cfg != nil {
		c.Conn.SetReadDeadline(time.Now().Add(cfg.PingTimeout))
	}
	n := int(p[1] & 0x7F)
	if n < 2 || n > 125 || len(p) != 2+n {
		return p // no status code: nothing to mend or to record
	}
	code, reason := int(binary.BigEndian.Uint16(p[2:4])), string(p[4:])
	switch {
	case !utf8.ValidString(reason):
		code, reason = 1007, "invalid UTF-8 in close reason"
	case code == 1009 && cfg != nil:
		reason = "read limited at " + strconv.FormatInt(cfg.MaxMessageSize, 10) + " bytes"
	default:
		c.sent.code, c.sent.reason = code, reason
		return p
	}
	c.sent.code, c.sent.reason = code, reason
	return closeFrame(code, reason)
}

// closeFrame encodes a server Close frame; reason is at most 123 bytes.
func closeFrame(code int, reason string) []byte {
	out := make([]byte, 0, 4+len(reason))
	out = append(out, opCloseFinal, byte(2+len(reason)))
	out = binary.BigEndian.AppendUint16(out, uint16(code))
	return append(out, reason...)
}

// sentClose reports whether a Close frame went out, and its code (0: none in it) and reason.
func (c *corkConn) sentClose() (sent bool, code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sent == nil {
		return false, 0, ""
	}
	return true, c.sent.code, c.sent.reason
}

// fail ends a connection the bridge failed (§7.1.7: a protocol error, an oversized message):
// its Close frame (unless coder/websocket sent one), then a TCP FIN, then whatever the client
// still sends is read and dropped until it closes its end or PING_TIMEOUT passes (or ctx ends).
// The stream is out of step after such an error, so there is no close handshake to wait for; but
// closing at once with unread bytes makes the kernel send RST, which can destroy the Close frame
// before the client reads it.
func (c *corkConn) fail(ctx context.Context, code int, reason string) {
	c.mu.Lock()
	err := c.flushLocked()
	if err == nil && c.sent == nil {
		_, err = c.Conn.Write(c.closeFrameLocked(closeFrame(code, reason)))
	}
	c.mu.Unlock()
	if err != nil {
		return // the socket is gone; there is nothing to linger for
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	if cfg := c.config(); cfg != nil {
		c.Conn.SetReadDeadline(time.Now().Add(cfg.PingTimeout))
	}
	stop := context.AfterFunc(ctx, func() { c.Conn.SetReadDeadline(time.Now()) })
	io.Copy(io.Discard, c.Conn)
	stop()
}

func (c *corkConn) writeLocked(p []byte) (int, error) {
	if c.corked && len(c.buf)+len(p) <= corkMax {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// cork starts gathering writes.
func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// uncork writes what was gathered, in one call, and stops gathering.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

// tryWrite writes p if that needs no waiting. taken is false when nothing was done: the
// connection is busy (another write holds it, is corked, or has bytes pending), has no file
// descriptor, or its Close went out, and the caller queues p for the writer instead (which
// drops it in the last case). When taken, whatever the socket
// buffer did not accept is kept, and pending reports it: the writer must flush it before the
// connection is idle again. A write goes to the kernel without blocking, so a sender serving
// many connections (a broadcast) is never held by one slow client.
func (c *corkConn) tryWrite(p []byte) (taken, pending bool, err error) {
	if c.raw == nil || !c.mu.TryLock() {
		return false, false, nil
	}
	defer c.mu.Unlock()
	if c.corked || len(c.buf) > 0 || c.sent != nil || len(p) > math.MaxInt32 {
		return false, false, nil
	}
	c.try, c.tried, c.tryErr = p, 0, 0
	err = c.raw.Write(c.writeFd)
	n := int(c.tried)
	if err == nil && c.tryErr != 0 {
		err = c.tryErr
	}
	c.try, c.tryErr = nil, 0
	if err != nil {
		return true, false, err
	}
	if n < len(p) {
		c.buf = append(c.buf, p[n:]...)
		return true, true, nil
	}
	return true, false, nil
}

// hasPending reports whether gathered or left-over bytes wait for a flush.
func (c *corkConn) hasPending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf) > 0
}

func (c *corkConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > 4<<10 {
		c.buf = nil // a big burst's buffer is not kept by a connection that may now idle
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// corkingWriter is the ResponseWriter websocket.Accept hijacks: the socket it gets is wrapped in
// a corkConn, and so is the buffered writer coder/websocket writes through.
type corkingWriter struct {
	http.ResponseWriter
	owner *conn
	conn  *corkConn
}

func (w *corkingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = newCorkConn(nc)
	w.conn.owner = w.owner
	if w.owner != nil {
		// A client may send frames right behind its handshake, and net/http may have read
		// them with the request. coder/websocket reads those bytes from brw.Reader, not
		// through w.conn (it resets the reader to them followed by the connection), so the
		// scanner takes them here, or it would start in the middle of a frame. They are
		// charged when reading begins, once the connection is fully set up.
		b, _ := brw.Reader.Peek(brw.Reader.Buffered())
		w.owner.scan.owed = uint32(w.owner.scan.feed(b))
	}
	brw.Writer.Reset(w.conn) // net/http made it for this hijack; reuse its buffer
	return w.conn, brw, nil
}
