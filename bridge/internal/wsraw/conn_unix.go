//go:build unix

package wsraw

import (
	"io"
	"net"
	"os"
	"syscall"
)

// rawConn returns the socket's file descriptor access for TryWrite, or nil.
func rawConn(nc net.Conn) syscall.RawConn {
	if sc, ok := nc.(syscall.Conn); ok {
		raw, _ := sc.SyscallConn()
		return raw
	}
	return nil
}

// writeNoWait writes c.try to fd as far as the socket takes it now, for TryWrite, leaving in
// c.try what it did not take.
func (c *Conn) writeNoWait(fd uintptr) bool {
	for len(c.try) > 0 {
		m, err := syscall.Write(int(fd), c.try)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			if err != syscall.EAGAIN {
				c.tryErr = int32(syscall.EIO)
				if e, ok := err.(syscall.Errno); ok {
					c.tryErr = int32(e)
				}
			}
			break
		}
		c.try = c.try[m:]
	}
	return true // done either way: never wait for the socket here
}

// readAhead is Read on a socket with a file descriptor: p is filled from the read-ahead buffer,
// which is filled first if empty. Only a read that finds bytes in the socket takes a buffer from
// the pool, so a connection waiting for its client's next frame holds none; and a buffer
// emptied by its caller goes back at once.
func (c *Conn) readAhead(p []byte) (int, error) {
	if c.ahead == nil {
		if err := c.raw.Read(c.readFd); err != nil {
			return 0, err // closed, or the read deadline passed (a *net.OpError, as Read's)
		}
		rb := c.ahead
		if rb.err != nil {
			c.ahead = nil
			err := rb.err
			readBufs.Put(rb)
			return 0, err
		}
	}
	rb := c.ahead
	n := copy(p, rb.b[rb.r:rb.w])
	if rb.r += n; rb.r == rb.w {
		c.ahead = nil
		readBufs.Put(rb)
	}
	return n, nil
}

// readNoWait is what RawConn.Read calls until it reports done, waiting for the socket to be
// readable between calls: one read into a pooled buffer, which goes back to the pool when the
// socket had nothing (EAGAIN), so that the wait holds no buffer. Done, it leaves the buffer in
// c.ahead with what was read, or the error (io.EOF for an orderly end).
func (c *Conn) readNoWait(fd uintptr) bool {
	rb := readBufs.Get().(*readBuf)
	for {
		n, err := syscall.Read(int(fd), rb.b[:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			readBufs.Put(rb)
			return false
		case err != nil:
			rb.r, rb.w = 0, 0
			rb.err = &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", err)}
		case n == 0:
			rb.r, rb.w, rb.err = 0, 0, io.EOF
		default:
			rb.r, rb.w, rb.err = 0, n, nil
		}
		c.ahead = rb
		return true
	}
}
