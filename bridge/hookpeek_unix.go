//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package bridge

import (
	"net"
	"syscall"
)

// idleProbe looks at a socket without reading from it or waiting: recv with MSG_PEEK and
// MSG_DONTWAIT. One system call, no allocation; the RawConn and the function handed to it are
// made once per connection, not per request.
type idleProbe struct {
	rc   syscall.RawConn
	peek func(fd uintptr) bool
	n    int
	err  error
	b    [1]byte
}

// newIdleProbe returns a probe of nc's socket, or nil when nc has none.
func newIdleProbe(nc net.Conn) *idleProbe {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &idleProbe{rc: rc}
	p.peek = func(fd uintptr) bool {
		p.n, _, p.err = syscall.Recvfrom(int(fd), p.b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readiness: the answer is wanted now
	}
	return p
}

// clean reports whether nothing is waiting to be read and the peer has not closed: the recv
// would block. A byte waiting, end of file (0) or an error all mean the connection is not
// fit for a request.
func (p *idleProbe) clean() bool {
	if err := p.rc.Read(p.peek); err != nil {
		return false
	}
	return p.err == syscall.EAGAIN || p.err == syscall.EWOULDBLOCK
}
