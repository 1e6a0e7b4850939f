package testkit

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// ListenAddr returns a loopback address for a program that will listen on it, with a port
// below the kernel's ephemeral range (Linux's default starts at 32768) that no other call in
// this test binary has returned. A port from the ephemeral range can be taken by an outgoing
// connection between the check and the program's bind (a cluster test opens hundreds), and a
// program restarted on its old port can find it taken; no connect() is ever given this one.
func ListenAddr(t testing.TB) string {
	t.Helper()
	for range 200 {
		port := 20000 + rand.IntN(12000)
		if !claimPort(port) {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken by something else: try another
		}
		ln.Close()
		return addr
	}
	t.Fatal("no free loopback port between 20000 and 32000 in 200 tries")
	return ""
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

// claimPort reports whether port is handed out for the first time in this process: two tests
// running in parallel must not both be given a port that neither has bound yet.
func claimPort(port int) bool {
	portsMu.Lock()
	defer portsMu.Unlock()
	if ports[port] {
		return false
	}
	ports[port] = true
	return true
}
