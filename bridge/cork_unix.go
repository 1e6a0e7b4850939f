//go:build unix

package bridge

import (
	"net"
	"syscall"
)

// rawConn returns the socket's file descriptor access for tryWrite, or nil.
func rawConn(nc net.Conn) syscall.RawConn {
	if sc, ok := nc.(syscall.Conn); ok {
		raw, _ := sc.SyscallConn()
		return raw
	}
	return nil
}

// writeNoWait writes c.try to fd as far as the socket takes it now, for tryWrite.
func (c *corkConn) writeNoWait(fd uintptr) bool {
	for int(c.tried) < len(c.try) {
		m, err := syscall.Write(int(fd), c.try[c.tried:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			if err != syscall.EAGAIN {
				c.tryErr = syscall.EIO
				if e, ok := err.(syscall.Errno); ok {
					c.tryErr = e
				}
			}
			break
		}
		c.tried += int32(m)
	}
	return true // done either way: never wait for the socket here
}
