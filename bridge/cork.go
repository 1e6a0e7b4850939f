package bridge

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// corkConn lets a connection's writer hand a burst of frames to the kernel in one write.
// coder/websocket flushes every message to the socket on its own; during a broadcast that is one
// write system call per frame, and the loopback or network stack behind each call is most of
// what a delivery costs. While corked, writes are gathered here; uncork sends them at once.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
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
	w.conn = &corkConn{Conn: nc}
	brw.Writer.Reset(w.conn) // net/http made it for this hijack; reuse its buffer
	return w.conn, brw, nil
}
