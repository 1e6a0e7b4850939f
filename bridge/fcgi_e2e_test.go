package bridge

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// fpmServer is Debian's php-fpm started by the test with a pool of its own, serving the same
// testdata/php scripts as php (the pages stay on php -S; the webhooks go to php-fpm directly).
type fpmServer struct {
	hookURL string // the FastCGI webhook URL of testdata/php/webhook.php
	listen  string // its socket path or address
	cmd     *exec.Cmd
	log     *testkit.SyncBuffer // php-fpm's own log (stderr)
}

// fpmPool is what a test sets of the pool.
type fpmPool struct {
	unix        bool   // listen on a unix socket, else on a loopback port
	children    int    // pm.max_children (pm = static)
	maxRequests int    // pm.max_requests: a child ends after this many, and its connection with it
	script      string // the webhook script; empty: testdata/php/webhook.php
}

// startFPM starts php-fpm in the foreground with php's environment and session directory, so
// that a session started through php -S is read by the webhook under php-fpm.
//
// A TCP port picked free can be taken before php-fpm binds it (the machine is shared): that
// start is retried on a new port.
func startFPM(t *testing.T, php *phpServer, pool fpmPool) *fpmServer {
	t.Helper()
	return startFPMAt(t, php, pool, "")
}

// startFPMAt is startFPM on the unix socket sock (empty: a new one, or a TCP port).
func startFPMAt(t *testing.T, php *phpServer, pool fpmPool, sock string) *fpmServer {
	t.Helper()
	for attempt := 1; ; attempt++ {
		f, log, err := tryStartFPM(t, php, pool, sock)
		if err == nil {
			return f
		}
		f.stop()
		if attempt < 3 && strings.Contains(log, "Address already in use") {
			t.Logf("php-fpm: its port was taken meanwhile; retrying with a new one")
			continue
		}
		t.Fatalf("%v:\n%s", err, log)
	}
}

func tryStartFPM(t *testing.T, php *phpServer, pool fpmPool, sock string) (*fpmServer, string, error) {
	t.Helper()
	bin := testkit.RequireTool(t, "php-fpm", "php-fpm8.2", "/usr/sbin/php-fpm8.2", "php-fpm")
	script, err := filepath.Abs("testdata/php/webhook.php")
	if err != nil {
		return nil, "", err
	}
	if pool.script != "" {
		script = pool.script
	}
	dir := t.TempDir()
	listen, hook := testkit.FreeAddr(t), ""
	if pool.unix {
		listen = filepath.Join(dir, "fpm.sock")
		if sock != "" {
			listen = sock
		}
		hook = "fcgi+unix://" + listen + "?script=" + script
	} else {
		hook = "fcgi://" + listen + script
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user = root\ngroup = root\n" // with -R: the test's files are root's
	}
	conf := fmt.Sprintf(`[global]
error_log = /proc/self/fd/2
log_level = notice
daemonize = no
pid = %[1]s/fpm.pid

[wsbridge]
%[2]slisten = %[3]s
pm = static
pm.max_children = %[4]d
pm.max_requests = %[5]d
clear_env = no
catch_workers_output = yes
php_admin_value[session.save_path] = %[6]s
php_admin_value[variables_order] = EGPCS
`, dir, user, listen, pool.children, pool.maxRequests, php.dir)
	confPath := filepath.Join(dir, "php-fpm.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-F", "-O", "-y", confPath}
	if os.Geteuid() == 0 {
		args = append(args, "-R")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = php.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &fpmServer{hookURL: hook, listen: listen, cmd: cmd, log: &testkit.SyncBuffer{}}
	t.Cleanup(f.stop)
	ready := make(chan bool, 1)
	log := f.log
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(log, sc.Text())
			switch {
			case strings.Contains(sc.Text(), "ready to handle connections"):
				ready <- true
			case strings.Contains(sc.Text(), "FPM initialization failed"):
				ready <- false
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case ok := <-ready:
		if !ok {
			return f, log.String(), fmt.Errorf("php-fpm did not start on %s", listen)
		}
	case <-time.After(waitLimit):
		return f, log.String(), fmt.Errorf("php-fpm did not start on %s within %s", listen, waitLimit)
	}
	return f, "", nil
}

func (f *fpmServer) stop() {
	if f == nil || f.cmd == nil {
		return
	}
	syscall.Kill(-f.cmd.Process.Pid, syscall.SIGKILL)
	f.cmd.Wait()
	f.cmd = nil
}

// The end-to-end chat with the webhooks sent to php-fpm directly, over TCP and over a unix
// socket, the PHP scripts unchanged: the signature is checked by PHP from
// $_SERVER['HTTP_WSBRIDGE_SIGNATURE'], the session read from the cookie of the handshake, and
// the per-connection counter in meta proves every reply came back to its own connection, in
// order. pm.max_requests=5 ends a child every few webhooks, with the kept-alive connection it
// held: a recycled child is a retried failure, never a lost or misplaced reply.
func TestEndToEndChatWithPHPFPM(t *testing.T) {
	for _, unix := range []bool{false, true} {
		name := "tcp"
		if unix {
			name = "unix socket"
		}
		t.Run(name, func(t *testing.T) {
			const secret = "e2e-secret"
			php := startPHP(t, secret)
			// As many children as webhook slots: a kept-alive connection holds its child
			// (docs/php.md).
			fpm := startFPM(t, php, fpmPool{unix: unix, children: 4, maxRequests: 5})
			php.hook = fpm.hookURL
			php.extraEnv = []string{"WSBRIDGE_WEBHOOK_CONCURRENCY=4"}
			testChatWithPHP(t, php, secret)
			// 400-odd webhooks over 4 children that each end after 5: most connections the
			// bridge kept alive were ended under it.
			if n := strings.Count(fpm.log.String(), "exited with code 0"); n < 20 {
				t.Errorf("php-fpm recycled %d children, want at least 20 (pm.max_requests not in effect?):\n%s", n, fpm.log.String())
			}
		})
	}
}

// A wrong secret is refused by PHP itself under php-fpm too, and its 401 and body, read from
// the CGI response, reach the client.
func TestEndToEndSignatureCheckedByPHPFPM(t *testing.T) {
	php := startPHP(t, "right")
	fpm := startFPM(t, php, fpmPool{children: 2, maxRequests: 100})
	php.hook = fpm.hookURL
	_, good, _ := phpBridge(t, php, "right")
	if _, _, err := dialWS(t, good, login(t, good, "ann")); err != nil {
		t.Fatalf("correctly signed open refused: %v", err)
	}
	_, bad, _ := phpBridge(t, php, "wrong")
	_, resp, err := dialWS(t, bad, login(t, bad, "ann"))
	if err == nil || resp.StatusCode != 401 || readAll(t, resp) != "bad signature: signature mismatch" {
		t.Fatalf("wrongly signed open: %v %v", err, resp)
	}
}

// What PHP writes to its error log under php-fpm comes back as FastCGI stderr, and the bridge
// logs it (bounded, throttled), with the answer still taken.
func TestFastCGIStderrLogged(t *testing.T) {
	php := newPHP(t)
	script := filepath.Join(t.TempDir(), "hook.php")
	if err := os.WriteFile(script, []byte(`<?php error_log("from the webhook script"); header('Content-Type: application/json'); echo '{"user_id":"u1"}';`), 0o644); err != nil {
		t.Fatal(err)
	}
	fpm := startFPM(t, php, fpmPool{children: 1, maxRequests: 100, script: script})
	var logs testkit.SyncBuffer
	cfg := testConfig(t, fpm.hookURL)
	cfg.WebhookConcurrency = 1 // one child
	srv := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	b := &testBridge{srv: srv}
	b.public, b.internal = newServers(t, srv)
	b.wsURL = "ws" + strings.TrimPrefix(b.public.URL, "http") + cfg.WSPaths[0]
	c := b.dial(t, "")
	c.CloseNow()
	if got := logs.String(); !strings.Contains(got, `msg="PHP wrote to FastCGI stderr"`) || !strings.Contains(got, "from the webhook script") {
		t.Fatalf("bridge log %q, want PHP's stderr line", got)
	}
}

// A php-fpm killed and started again (a deploy, a crash) is a retried failure: the kept-alive
// connections it took with it are dialled again, a message sent while it is down is retried
// until it is back, and the connection's state (PHP's counter in meta) goes on where it was.
func TestEndToEndPHPFPMRestart(t *testing.T) {
	const secret = "e2e-secret"
	php := startPHP(t, secret)
	pool := fpmPool{unix: true, children: 2, maxRequests: 100}
	fpm := startFPM(t, php, pool)
	php.hook = fpm.hookURL
	php.extraEnv = []string{"WSBRIDGE_WEBHOOK_CONCURRENCY=2", "WSBRIDGE_WEBHOOK_RETRIES=50",
		"WSBRIDGE_WEBHOOK_BACKOFF=20ms", "WSBRIDGE_WEBHOOK_BACKOFF_MAX=100ms", "WSBRIDGE_BREAKER_FAILURES=0"}
	srv, pub, _ := phpBridge(t, php, secret)
	ann, _, err := dialWS(t, pub, login(t, pub, "ann"))
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, ann); got != "welcome ann" {
		t.Fatalf("first frame %q", got)
	}
	write(t, ann, "m0")
	if got := read(t, ann); got != "ack 1 1" {
		t.Fatalf("before the restart: %q", got)
	}

	fpm.stop() // SIGKILL: the kept-alive connections die with it
	write(t, ann, "m1")
	// The same pool on the same socket, as systemd would start it again.
	again := startFPMAt(t, php, pool, fpm.listen)
	if again.hookURL != fpm.hookURL {
		t.Fatalf("restarted on %s, want %s", again.hookURL, fpm.hookURL)
	}
	if got := read(t, ann); got != "ack 2 2" {
		t.Fatalf("across the restart: %q, want ack 2 2 (no message lost, meta kept)", got)
	}
	write(t, ann, "m2")
	if got := read(t, ann); got != "ack 3 3" {
		t.Fatalf("after the restart: %q", got)
	}
	// Shut down while php-fpm is up: the close webhook goes over a connection dialled anew.
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if evs := php.closeEvents(t); len(evs) != 1 || evs[0].UserID != "ann" || *evs[0].MessagesIn != 3 {
		t.Errorf("close webhooks PHP recorded: %+v, want ann's with 3 messages in", evs)
	}
}
