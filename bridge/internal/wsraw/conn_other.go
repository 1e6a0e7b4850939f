//go:build !unix

package wsraw

import (
	"net"
	"syscall"
)

// rawConn returns nil where a non-blocking write on the descriptor is not written for (Windows
// sockets are handles, not fds): TryWrite then always declines, and every frame goes through a
// writer goroutine and net.Conn.Write, which is slower per frame but otherwise the same.
func rawConn(net.Conn) syscall.RawConn { return nil }

// writeNoWait is never called: TryWrite declines without a RawConn.
func (c *Conn) writeNoWait(uintptr) bool { return true }

// readAhead is never called: Read reads the socket directly without a RawConn.
func (c *Conn) readAhead(p []byte) (int, error) { return c.Conn.Read(p) }

// readNoWait is never called, as readAhead is not.
func (c *Conn) readNoWait(uintptr) bool { return true }
