//go:build unix

package wsraw

import (
	"net"
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
