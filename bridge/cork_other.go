//go:build !unix

package bridge

import (
	"net"
	"syscall"
)

// rawConn returns nil where a non-blocking write on the descriptor is not written for (Windows
// sockets are handles, not fds): tryWrite then always declines, and every frame goes through a
// writer goroutine and net.Conn.Write, which is slower per frame but otherwise the same.
func rawConn(net.Conn) syscall.RawConn { return nil }

// writeNoWait is never called: tryWrite declines without a RawConn.
func (c *corkConn) writeNoWait(uintptr) bool { return true }
