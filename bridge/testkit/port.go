package testkit

import (
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
)

// ListenAddr returns a loopback address for a program that will listen on it, with a port
// below the kernel's ephemeral range (Linux's default starts at 32768). FreeAddr's port comes
// from that range, so with many connections open (a cluster test's nodes, proxies and
// engine) an outgoing connection can take it before the program binds it, and a program
// restarted on its old port can find it taken; this port no connect() is ever given.
func ListenAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(12000)))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken: try another
		}
		ln.Close()
		return addr
	}
	t.Fatal("no free loopback port between 20000 and 32000 in 100 tries")
	return ""
}
