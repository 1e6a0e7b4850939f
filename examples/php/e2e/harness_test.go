// Package e2e runs the PHP kit's PHPUnit suite and the example apps in a real browser, each
// against the real wsbridge binary (and nginx + php-fpm for the apps), all started here on
// loopback and stopped when the test ends. It holds only tests.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"github.com/wsbridge/wsbridge/bridge/testkit"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startLimit bounds every wait for a process to come up; the machine is shared, so generous.
const startLimit = 30 * time.Second

// repoRoot is where go.mod is: tests run in the package directory.
var repoRoot, _ = filepath.Abs("../../..")

var build struct {
	once sync.Once
	path string
	err  error
}

// wsbridgeBinary builds cmd/wsbridge once per test binary run, into a directory removed by TestMain.
func wsbridgeBinary(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		dir, err := os.MkdirTemp("", "wsbridge-e2e-")
		if err != nil {
			build.err = err
			return
		}
		buildDir = dir
		build.path = filepath.Join(dir, "wsbridge")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", build.path, "./cmd/wsbridge")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/wsbridge: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

var buildDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// proc is a started program whose output goes to a log file in the test's temp dir.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs a program in a process group of its own (so its workers, as php-fpm's or
// nginx's, are stopped with it) and stops the whole group when the test ends.
func start(t *testing.T, name string, env []string, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, log: filepath.Join(t.TempDir(), name+".log"), done: make(chan struct{})}
	out, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); out.Close(); close(p.done) }()
	t.Cleanup(func() {
		// TERM first so wsbridge delivers its close webhooks and nginx/php-fpm exit cleanly;
		// KILL the group if that takes too long.
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			p.dump(t)
		}
	})
	return p
}

// dump logs the program's output (the last 8 KiB), for a failed test.
func (p *proc) dump(t *testing.T) {
	b, _ := os.ReadFile(p.log)
	if len(b) > 8192 {
		b = b[len(b)-8192:]
	}
	t.Logf("--- %s output:\n%s", p.name, b)
}

var errExited = errors.New("exited")

// untilReady polls ready until it succeeds, the program exits (errExited), or startLimit passes.
func (p *proc) untilReady(ready func() error) error {
	deadline := time.Now().Add(startLimit)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%w before it was ready: %v", errExited, err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v: %v", startLimit, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a readiness probe, not a sync
	}
}

// waitUntil is untilReady that fails the test, with the program's output.
func (p *proc) waitUntil(t *testing.T, what string, ready func() error) {
	t.Helper()
	if err := p.untilReady(ready); err != nil {
		p.dump(t)
		t.Fatalf("%s: waiting for %s: %v", p.name, what, err)
	}
}

// waitHTTP waits until url answers with any HTTP status.
func (p *proc) waitHTTP(t *testing.T, url string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	p.waitUntil(t, "answer on "+url, func() error {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
}

// bridge is a running wsbridge binary.
type bridge struct {
	*proc
	public   string // host:port
	internal string // host:port, or unix:/path
}

// startBridge runs the wsbridge binary with the given WSBRIDGE_* settings and waits until both
// listeners answer. Ports not set in env are picked free on loopback; since a port picked free
// can be taken (by another test's process or an outgoing connection) before wsbridge binds it,
// a start that fails with "address already in use" is retried with new ports.
func startBridge(t *testing.T, name string, env map[string]string) *bridge {
	t.Helper()
	bin := wsbridgeBinary(t)
	for attempt := 1; ; attempt++ {
		b := &bridge{public: env["WSBRIDGE_LISTEN"], internal: env["WSBRIDGE_INTERNAL_LISTEN"]}
		if b.public == "" {
			b.public = testkit.FreeAddr(t)
		}
		if b.internal == "" {
			b.internal = testkit.FreeAddr(t)
		}
		vars := []string{"WSBRIDGE_LISTEN=" + b.public, "WSBRIDGE_INTERNAL_LISTEN=" + b.internal, "WSBRIDGE_SHUTDOWN_TIMEOUT=10s"}
		for k, v := range env {
			if k != "WSBRIDGE_LISTEN" && k != "WSBRIDGE_INTERNAL_LISTEN" {
				vars = append(vars, k+"="+v)
			}
		}
		b.proc = start(t, name, vars, bin)
		err := b.untilReady(func() error {
			if err := probeHTTP(b.internal, "/readyz"); err != nil {
				return err
			}
			c, err := net.DialTimeout("tcp", b.public, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return b
		}
		log, _ := os.ReadFile(b.log)
		if attempt < 3 && errors.Is(err, errExited) && strings.Contains(string(log), "address already in use") {
			t.Logf("%s: a port was taken meanwhile; retrying with new ports", name)
			continue
		}
		b.dump(t)
		t.Fatalf("%s: %v", name, err)
	}
}

// probeHTTP GETs path on addr (host:port or unix:/path) and returns nil on any HTTP answer.
func probeHTTP(addr, path string) error {
	tr := &http.Transport{}
	host := addr
	if sock, ok := strings.CutPrefix(addr, "unix:"); ok {
		host = "wsbridge"
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Timeout: 2 * time.Second, Transport: tr}).Get("http://" + host + path)
	if err == nil {
		resp.Body.Close()
	}
	return err
}
