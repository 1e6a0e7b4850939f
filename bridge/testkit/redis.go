package testkit

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Redis is a redis-server of the test's own on a loopback port, without persistence: no state
// shared with anything else on the machine, and a restart loses everything, as a Redis
// restarted without persistence does.
type Redis struct {
	Addr string
	bin  string
	cmd  *exec.Cmd
	log  *SyncBuffer
	done chan struct{}
}

// StartRedis starts redis-server (Debian package redis-server) and stops it when the test ends.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r := &Redis{Addr: ListenAddr(t), bin: RequireTool(t, "redis-server", "redis-server")}
	r.Start(t)
	t.Cleanup(func() { r.Stop(t) })
	return r
}

// URL is the server's WSBRIDGE_REDIS_URL.
func (r *Redis) URL() string { return "redis://" + r.Addr + "/0" }

// Start starts the server at Addr (again, after Stop) and waits until it answers PING.
func (r *Redis) Start(t testing.TB) {
	t.Helper()
	if r.cmd != nil {
		t.Fatal("redis-server already running")
	}
	_, port, _ := net.SplitHostPort(r.Addr)
	r.log = &SyncBuffer{}
	r.cmd = exec.Command(r.bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no")
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	r.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(r.cmd, r.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := r.ping(); err == nil {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("redis-server at %s did not answer PING within 10s (%v); its output:\n%s", r.Addr, err, r.log.String())
		}
		select {
		case <-r.done:
			t.Fatalf("redis-server exited at start; its output:\n%s", r.log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop kills the server (SIGKILL: connections are cut, nothing is saved) and waits for it.
func (r *Redis) Stop(t testing.TB) {
	t.Helper()
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Errorf("redis-server (pid %d) did not exit within 10s of SIGKILL", r.cmd.Process.Pid)
	}
	r.cmd = nil
}

// Do sends one command in RESP and returns the first line of the answer.
func (r *Redis) Do(t testing.TB, args ...string) string {
	t.Helper()
	line, err := r.do(args...)
	if err != nil {
		t.Fatalf("redis %v: %v", args, err)
	}
	return line
}

func (r *Redis) ping() error {
	line, err := r.do("PING")
	if err == nil && line != "+PONG" {
		err = fmt.Errorf("PING answered %q", line)
	}
	return err
}

func (r *Redis) do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}
