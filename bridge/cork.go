package bridge

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"syscall"
)

// corkConn lets a connection's writer hand a burst of frames to the kernel in one write.
// coder/websocket flushes every message to the socket on its own; during a broadcast that is one
// write system call per frame, and the loopback or network stack behind each call is most of
// what a delivery costs. While corked, writes are gathered here; uncork sends them at once.
//
// It also lets a sender write without waiting (tryWrite): a frame that the socket buffer takes
// at once needs no writer goroutine at all.
type corkConn struct {
	net.Conn
	raw    syscall.RawConn // nil when the socket has no file descriptor; tryWrite then declines
	mu     sync.Mutex
	corked bool
	buf    []byte // gathered while corked, or the rest of a tryWrite the socket did not take

	// The state of one tryWrite, under mu, and the function RawConn.Write calls, bound once:
	// a closure per call would cost three allocations per frame.
	try     []byte
	tried   int
	tryErr  error
	writeFd func(fd uintptr) bool
}

func newCorkConn(nc net.Conn) *corkConn {
	c := &corkConn{Conn: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	c.writeFd = c.writeNoWait
	return c
}

// corkMax bounds what a corked connection gathers; beyond it the burst goes out in pieces.
const corkMax = 64 << 10

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
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
// connection is busy (another write holds it, is corked, or has bytes pending) or has no file
// descriptor, and the caller queues p for the writer instead. When taken, whatever the socket
// buffer did not accept is kept, and pending reports it: the writer must flush it before the
// connection is idle again. A write goes to the kernel without blocking, so a sender serving
// many connections (a broadcast) is never held by one slow client.
func (c *corkConn) tryWrite(p []byte) (taken, pending bool, err error) {
	if c.raw == nil || !c.mu.TryLock() {
		return false, false, nil
	}
	defer c.mu.Unlock()
	if c.corked || len(c.buf) > 0 {
		return false, false, nil
	}
	c.try, c.tried, c.tryErr = p, 0, nil
	err = c.raw.Write(c.writeFd)
	n := c.tried
	if err == nil {
		err = c.tryErr
	}
	c.try, c.tryErr = nil, nil
	if err != nil {
		return true, false, err
	}
	if n < len(p) {
		c.buf = append(c.buf, p[n:]...)
		return true, true, nil
	}
	return true, false, nil
}

// writeNoWait writes c.try to fd as far as the socket takes it now, for tryWrite.
func (c *corkConn) writeNoWait(fd uintptr) bool {
	for c.tried < len(c.try) {
		m, err := syscall.Write(int(fd), c.try[c.tried:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			if err != syscall.EAGAIN {
				c.tryErr = err
			}
			break
		}
		c.tried += m
	}
	return true // done either way: never wait for the socket here
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
	conn *corkConn
}

func (w *corkingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = newCorkConn(nc)
	brw.Writer.Reset(w.conn) // net/http made it for this hijack; reuse its buffer
	return w.conn, brw, nil
}
