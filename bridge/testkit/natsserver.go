package testkit

import (
	"fmt"
	"net"
	"os"
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
	// started: the server has run once, so its clients know Addr and a restart keeps it.
	started bool
}

// StartNATS starts a nats-server for t (fails under CI when it is not installed, skips
// elsewhere).
func StartNATS(t testing.TB) *NATSServer {
	t.Helper()
	s := &NATSServer{
		Addr: ListenAddr(t),
		bin:  RequireTool(t, "nats-server", "nats-server", "/usr/sbin/nats-server"),
		dir:  t.TempDir(),
	}
	s.Start(t)
	t.Cleanup(func() {
		if t.Failed() && s.log != nil {
			t.Logf("nats-server log:\n%s", s.log.String())
		}
		s.Stop(t)
	})
	return s
}

// URL is the server's nats:// URL.
func (s *NATSServer) URL() string { return "nats://" + s.Addr }

// Start starts the server at its address (again, after Stop), keeping its store unless Clear
// emptied it, and waits until it accepts connections. ListenAddr's port can still be taken by
// another program before the server binds it: the first start then moves to another port, a
// restart tries the same one again, a few times.
func (s *NATSServer) Start(t testing.TB) {
	t.Helper()
	if s.cmd != nil {
		t.Fatal("nats-server: Start while running")
	}
	for try := 1; ; try++ {
		err := s.start(t)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "address already in use") || try == 5 {
			t.Fatalf("nats-server: %v", err)
		}
		if !s.started {
			s.Addr = ListenAddr(t)
		}
	}
}

func (s *NATSServer) start(t testing.TB) error {
	host, port, _ := net.SplitHostPort(s.Addr)
	// A log of this run alone: each run says "Server is ready" once.
	log := &SyncBuffer{}
	cmd := exec.Command(s.bin, "-a", host, "-p", port, "-js", "-sd", s.dir)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		// Ready once it logs so: the port may accept before JetStream is up.
		if strings.Contains(log.String(), "Server is ready") {
			s.cmd, s.done, s.log, s.started = cmd, done, log, true
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("exited at start:\n%s", log.String())
		case <-deadline:
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("not ready within 10s:\n%s", log.String())
		case <-tick.C:
		}
	}
}

// Clear empties the store of a stopped server: the next Start is a server that lost its state
// (JetStream without persistence, or a new machine).
func (s *NATSServer) Clear(t testing.TB) {
	t.Helper()
	if s.cmd != nil {
		t.Fatal("nats-server: Clear while running")
	}
	if err := os.RemoveAll(s.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(s.dir, 0o700); err != nil {
		t.Fatal(err)
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
