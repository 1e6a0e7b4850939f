package wsraw

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// Owner is what a Conn needs of the connection it carries. An interface value is 16 bytes
// where the pointer it replaced was 8; Conn pays for it by following a tryWrite's progress in
// the slice itself, so that it stays in its 144-byte size class (TestConnSize).
type Owner interface {
	// MaxMessageSize is the read limit, stated in the reason of a 1009 Close.
	MaxMessageSize() int64
	// PingTimeout bounds the close handshake once our Close went out, and a failed
	// connection's linger.
	PingTimeout() time.Duration
	// Scanned sees every byte read from the socket, in the reader's goroutine, as it comes.
	Scanned(b []byte)
}

// Conn lets a connection's writer hand a burst of frames to the kernel in one write.
// coder/websocket flushes every message to the socket on its own; during a broadcast that is one
// write system call per frame, and the loopback or network stack behind each call is most of
// what a delivery costs. While corked, writes are gathered here; Uncork sends them at once.
//
// It also lets a sender write without waiting (TryWrite): a frame that the socket buffer takes
// at once needs no writer goroutine at all.
//
// And it is where RFC 6455 §5.5.1 is kept: "after sending a Close frame, the endpoint MUST NOT
// send any more data frames". coder/websocket sends Close on its own (it echoes the client's, and
// fails the connection on a protocol error or an oversized message) while our writer may be
// streaming frames it encoded itself. Every write coder/websocket makes comes through Write, one
// control frame per call, so Write sees each Close as it goes out; from then on, under the same
// lock, WriteData and TryWrite refuse. Write also mends what coder/websocket would get wrong in
// that frame (see closeFrameLocked) and bounds the rest of the close handshake in time.
type Conn struct {
	net.Conn
	raw syscall.RawConn // nil when the socket has no file descriptor; TryWrite then declines
	mu  sync.Mutex
	buf []byte // gathered while corked, or the rest of a TryWrite the socket did not take

	// The state of one TryWrite, under mu, and the function RawConn.Write calls, bound once:
	// a closure per call would cost three allocations per frame. try is what is left to write
	// (its progress is how far it has been resliced); tryErr an errno, which fits 32 bits, so
	// that it, corked and PerMessageDeflate share one word and an idle connection stays in its
	// 144-byte size class (TestConnSize).
	try               []byte
	tryErr            int32
	corked            bool
	PerMessageDeflate bool // negotiated with the client; set before the socket is used
	writeFd           func(fd uintptr) bool

	// owner is the connection this socket carries, set (SetOwner) before anything reads it;
	// nil in tests of the writes alone. sent is set, under mu, once a Close frame has been
	// written or gathered.
	owner Owner
	sent  *sentClose

	// ahead holds what a read took from the socket beyond what its caller asked for, in a
	// pooled buffer taken only once the socket has bytes (readahead.go); nil while nothing is
	// buffered, which is every idle connection's state.
	ahead  *readBuf
	readFd func(fd uintptr) bool // c.readNoWait, bound once as writeFd is
}

// New wraps a hijacked socket.
func New(nc net.Conn) *Conn {
	c := &Conn{Conn: nc, raw: rawConn(nc)}
	c.writeFd, c.readFd = c.writeNoWait, c.readNoWait
	return c
}

// SetOwner names the connection nc carries; call it before the socket is read.
func (c *Conn) SetOwner(o Owner) { c.owner = o }

// Read is coder/websocket's path from the socket, once it has used up what net/http had
// buffered (the bytes Hijack's bufio.Reader holds, which it reads first and which the caller
// must scan itself). The owner's scanner sees each byte as it comes, in the caller's buffer.
func (c *Conn) Read(p []byte) (int, error) {
	var n int
	var err error
	if c.raw != nil && (c.ahead != nil || len(p) < readBufSize) {
		n, err = c.readAhead(p)
	} else {
		n, err = c.Conn.Read(p)
	}
	if n > 0 && c.owner != nil {
		c.owner.Scanned(p[:n])
	}
	return n, err
}

// sentClose is what the connection's Close frame said; code 0: it had no payload.
type sentClose struct {
	code   int
	reason string
}

// corkMax bounds what a corked connection gathers; beyond it the burst goes out in pieces.
const corkMax = 64 << 10

// ErrCloseSent refuses a data frame after the connection's Close frame went out.
var ErrCloseSent = errors.New("close frame already sent")

// opCloseFinal is the first byte of a server's Close frame: FIN and opcode 8, no RSV bits. The
// handshake's "HTTP/1.1 101" never starts with it, and no data frame does.
const opCloseFinal = 0x88

// Write is coder/websocket's path to the socket: the handshake answer, then its control frames.
// coder/websocket v1.8.15 writes each control frame whole in one call: writeFrame puts header
// and payload in its bufio.Writer (the bridge gives it one that holds the largest control frame,
// 127 bytes: hijackedBuffers in package bridge) and flushes it on FIN, which every control frame
// has, and a control payload is at most 125 bytes. So p starts at a frame boundary and a Close
// is known by its first byte.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	if c.sent != nil {
		// Nothing follows a Close: not a second one, nor a ping or pong coder/websocket does
		// not know it must hold back (when the bridge wrote the Close itself, in Fail).
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

// WriteData writes one data frame the bridge encoded, unless the Close frame went out before it.
func (c *Conn) WriteData(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sent != nil {
		return 0, ErrCloseSent
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
func (c *Conn) closeFrameLocked(p []byte) []byte {
	c.sent = &sentClose{}
	if c.owner != nil {
		c.Conn.SetReadDeadline(time.Now().Add(c.owner.PingTimeout()))
	}
	n := int(p[1] & 0x7F)
	if n < 2 || n > 125 || len(p) != 2+n {
		return p // no status code: nothing to mend or to record
	}
	code, reason := int(binary.BigEndian.Uint16(p[2:4])), string(p[4:])
	switch {
	case !utf8.ValidString(reason):
		code, reason = 1007, "invalid UTF-8 in close reason"
	case code == 1009 && c.owner != nil:
		reason = "read limited at " + strconv.FormatInt(c.owner.MaxMessageSize(), 10) + " bytes"
	default:
		c.sent.code, c.sent.reason = code, reason
		return p
	}
	c.sent.code, c.sent.reason = code, reason
	return CloseFrame(code, reason)
}

// CloseFrame encodes a server Close frame; reason is at most 123 bytes.
func CloseFrame(code int, reason string) []byte {
	out := make([]byte, 0, 4+len(reason))
	out = append(out, opCloseFinal, byte(2+len(reason)))
	out = binary.BigEndian.AppendUint16(out, uint16(code))
	return append(out, reason...)
}

// SentClose reports whether a Close frame went out, and its code (0: none in it) and reason.
func (c *Conn) SentClose() (sent bool, code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sent == nil {
		return false, 0, ""
	}
	return true, c.sent.code, c.sent.reason
}

// Fail ends a connection the bridge failed (§7.1.7: a protocol error, an oversized message):
// its Close frame (unless coder/websocket sent one), then a TCP FIN, then whatever the client
// still sends is read and dropped until it closes its end or PING_TIMEOUT passes (or ctx ends).
// The stream is out of step after such an error, so there is no close handshake to wait for; but
// closing at once with unread bytes makes the kernel send RST, which can destroy the Close frame
// before the client reads it.
func (c *Conn) Fail(ctx context.Context, code int, reason string) {
	c.mu.Lock()
	err := c.flushLocked()
	if err == nil && c.sent == nil {
		_, err = c.Conn.Write(c.closeFrameLocked(CloseFrame(code, reason)))
	}
	c.mu.Unlock()
	if err != nil {
		return // the socket is gone; there is nothing to linger for
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	if c.owner != nil {
		c.Conn.SetReadDeadline(time.Now().Add(c.owner.PingTimeout()))
	}
	stop := context.AfterFunc(ctx, func() { c.Conn.SetReadDeadline(time.Now()) })
	io.Copy(io.Discard, c.Conn)
	stop()
}

func (c *Conn) writeLocked(p []byte) (int, error) {
	if c.corked && len(c.buf)+len(p) <= corkMax {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// Cork starts gathering writes.
func (c *Conn) Cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// Uncork writes what was gathered, in one call, and stops gathering.
func (c *Conn) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

// TryWrite writes p if that needs no waiting. taken is false when nothing was done: the
// connection is busy (another write holds it, is corked, or has bytes pending), has no file
// descriptor, or its Close went out, and the caller queues p for the writer instead (which
// drops it in the last case). When taken, whatever the socket buffer did not accept is kept,
// and pending reports it: the writer must flush it before the connection is idle again. A write
// goes to the kernel without blocking, so a sender serving many connections (a broadcast) is
// never held by one slow client.
func (c *Conn) TryWrite(p []byte) (taken, pending bool, err error) {
	if c.raw == nil || !c.mu.TryLock() {
		return false, false, nil
	}
	defer c.mu.Unlock()
	if c.corked || len(c.buf) > 0 || c.sent != nil || len(p) > math.MaxInt32 {
		return false, false, nil
	}
	c.try, c.tryErr = p, 0
	err = c.raw.Write(c.writeFd)
	rest := c.try
	if err == nil && c.tryErr != 0 {
		err = syscall.Errno(c.tryErr)
	}
	c.try, c.tryErr = nil, 0
	if err != nil {
		return true, false, err
	}
	if len(rest) > 0 {
		c.buf = append(c.buf, rest...)
		return true, true, nil
	}
	return true, false, nil
}

// HasPending reports whether gathered or left-over bytes wait for a flush.
func (c *Conn) HasPending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf) > 0
}

func (c *Conn) flushLocked() error {
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

// readBufSize is the read-ahead buffer's size: a read asking for at least this much (the rest
// of a large payload) goes straight to the socket instead.
const readBufSize = 4 << 10

// readBuf is one read-ahead buffer: b[r:w] is unread; err, when set, is what the read that
// filled it returned instead of bytes.
type readBuf struct {
	b    [readBufSize]byte
	r, w int
	err  error
}

// readBufs are the read-ahead buffers of every connection, held only while a read's bytes wait
// to be taken: coder/websocket's own reader is given a 16-byte one (ReadsAhead), so that these
// 4 KiB are not kept by each idle connection as net/http's bufio.Reader was.
var readBufs = sync.Pool{New: func() any { return new(readBuf) }}

// ReadsAhead reports whether Read buffers what it takes from the socket (in a pooled buffer,
// held only while bytes wait): then whoever reads through Conn needs no buffer of its own.
func (c *Conn) ReadsAhead() bool { return c.raw != nil }
