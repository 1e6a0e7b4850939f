package testkit

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// NATSServer is Debian's nats-server with JetStream, on a loopback port of its own and a store
// in the test's temporary directory, stopped when the test ends.
type NATSServer struct {
	Addr string // host:port
	bin  string
	dir  string
	log  *SyncBuffer
	cmd  *exec.Cmd
	done chan struct{}
}

// StartNATS starts a nats-server for t (fails under CI when it is not installed, skips
// elsewhere).
func StartNATS(t testing.TB) *NATSServer {
	t.Helper()
	s := &NATSServer{
		Addr: FreeAddr(t),
		bin:  RequireTool(t, "nats-server", "nats-server", "/usr/sbin/nats-server"),
		dir:  t.TempDir(),
	}
	s.Start(t)
	t.Cleanup(func() { s.Stop(t) })
	return s
}

// URL is the server's nats:// URL.
func (s *NATSServer) URL() string { return "nats://" + s.Addr }

// Start starts the server at its address (again, after Stop), keeping its store, and waits
// until it accepts connections.
func (s *NATSServer) Start(t testing.TB) {
	t.Helper()
	if s.cmd != nil {
		t.Fatal("nats-server: Start while running")
	}
	host, port, _ := net.SplitHostPort(s.Addr)
	// A log of this run alone: each run says "Server is ready" once.
	s.log = &SyncBuffer{}
	s.cmd = exec.Command(s.bin, "-a", host, "-p", port, "-js", "-sd", s.dir)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Ready once it logs so: the port may accept before JetStream is up.
		if strings.Contains(s.log.String(), "Server is ready") {
			return
		}
		select {
		case <-s.done:
			t.Fatalf("nats-server exited at start:\n%s", s.log.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop(t)
			t.Fatalf("nats-server not ready within 10s:\n%s", s.log.String())
		}
	}
}

// Stop kills the server (SIGKILL: no goodbye to its clients, as a crash) and waits for it.
func (s *NATSServer) Stop(t testing.TB) {
	t.Helper()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Errorf("nats-server pid %d did not exit within 10s of SIGKILL", s.cmd.Process.Pid)
	}
	s.cmd = nil
}
