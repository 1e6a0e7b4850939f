package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// waitLimit bounds every wait; it guards against hangs and makes no timing claim.
const waitLimit = 20 * time.Second

var (
	binDir    string // created by TestMain, holds the binary built by buildBinary
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsbridge-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildBinary builds the command once per test binary run, from this package's directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(binDir, "wsbridge"), ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		binPath = filepath.Join(binDir, "wsbridge")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestRunHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"-h", "-help", "--help"} {
		t.Run(arg, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			if code := run([]string{arg}, nil, &stderr); code != 0 {
				t.Errorf("run(%s) = %d, want 0", arg, code)
			}
			out := stderr.String()
			if !strings.Contains(out, "Usage: wsbridge") {
				t.Errorf("no usage line in:\n%s", out)
			}
			for _, v := range bridge.ConfigVars() {
				if !strings.Contains(out, v.Name) {
					t.Errorf("help does not list %s", v.Name)
				}
			}
		})
	}
}

func TestRunBadCommandLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"stray argument", []string{"serve"}, `takes no arguments (got ["serve"])`},
		{"unknown flag", []string{"-port=80"}, "flag provided but not defined: -port"},
		{"unknown flag before argument", []string{"-v", "x"}, "flag provided but not defined: -v"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			// A valid environment, so that only the command line can be the problem.
			code := run(tc.args, []string{"WSBRIDGE_WEBHOOK_URL=http://127.0.0.1:9/hook"}, &stderr)
			if code != 2 {
				t.Errorf("run(%q) = %d, want 2", tc.args, code)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr does not contain %q:\n%s", tc.want, stderr.String())
			}
		})
	}
}

func TestRunBadEnvironment(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		environ []string
		bad     []string
	}{
		{
			name:    "nothing set",
			environ: []string{"HOME=/nonexistent"},
			bad:     []string{"WSBRIDGE_WEBHOOK_URL"},
		},
		{
			name: "several at once",
			environ: []string{
				"WSBRIDGE_WEBHOOK_URL=ftp://php.test/",
				"WSBRIDGE_WEBHOOK_TIMEOUT=later",
				"WSBRIDGE_SEND_QUEUE=-3",
				"WSBRIDGE_INTERNAL_LISTEN=0.0.0.0:8081",
				"WSBRIDGE_NODE_ID=no spaces",
				"WSBRIDGE_LOG_LEVEL=chatty",
			},
			bad: []string{"WSBRIDGE_WEBHOOK_URL", "WSBRIDGE_WEBHOOK_TIMEOUT", "WSBRIDGE_SEND_QUEUE",
				"WSBRIDGE_API_TOKEN", "WSBRIDGE_NODE_ID", "WSBRIDGE_LOG_LEVEL"},
		},
		{
			name:    "TLS certificate without key",
			environ: []string{"WSBRIDGE_WEBHOOK_URL=http://127.0.0.1:9/hook", "WSBRIDGE_TLS_CERT_FILE=/etc/ssl/cert.pem"},
			bad:     []string{"WSBRIDGE_TLS_KEY_FILE"},
		},
		{
			name:    "a broker that does not exist",
			environ: []string{"WSBRIDGE_WEBHOOK_URL=http://127.0.0.1:9/hook", "WSBRIDGE_BROKER=kafka", "WSBRIDGE_BROKER_TIMEOUT=0s"},
			bad:     []string{"WSBRIDGE_BROKER", "WSBRIDGE_BROKER_TIMEOUT"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			if code := run(nil, tc.environ, &stderr); code != 2 {
				t.Errorf("run = %d, want 2", code)
			}
			out := stderr.String()
			for _, name := range tc.bad {
				if !strings.Contains(out, name+":") {
					t.Errorf("stderr does not name %s:\n%s", name, out)
				}
			}
			if n := strings.Count(out, "\n  WSBRIDGE_"); n != len(tc.bad) {
				t.Errorf("stderr has %d problem lines, want %d:\n%s", n, len(tc.bad), out)
			}
		})
	}
}

// proc is a running wsbridge process.
type proc struct {
	cmd    *exec.Cmd
	stderr *testkit.SyncBuffer
	exited chan struct{} // closed once Wait has returned
}

// startProc starts the built binary with environ (plus nothing of the test's own WSBRIDGE_*
// variables); t.Cleanup kills it if it is still running.
func startProc(t *testing.T, environ ...string) *proc {
	t.Helper()
	bin := buildBinary(t)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, bridge.EnvPrefix) {
			env = append(env, kv)
		}
	}
	p := &proc{cmd: exec.Command(bin), stderr: &testkit.SyncBuffer{}, exited: make(chan struct{})}
	p.cmd.Env = append(env, environ...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("wsbridge stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

// exitCode waits for the process to exit and returns its status.
func (p *proc) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(waitLimit):
		t.Fatalf("wsbridge did not exit within %s", waitLimit)
		return -1
	}
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// waitReady polls GET url until it answers 200. Polling is the only way to learn that another
// process has started listening; the loop is bounded and stops early if the process exits.
func (p *proc) waitReady(t *testing.T, client *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 10s (last: %v)", url, err)
		}
		select {
		case <-p.exited:
			t.Fatalf("wsbridge exited with status %d before %s answered", p.cmd.ProcessState.ExitCode(), url)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// hook is the part of a webhook body the fake PHP looks at.
type hook struct {
	Type         string `json:"type"`
	ConnectionID string `json:"connection_id"`
	UserID       string `json:"user_id"`
	Initiator    string `json:"initiator"`
	Code         *int   `json:"code"`
}

// fakePHP accepts every open as user u1 (with a welcome frame, so that a client knows it is
// registered) and records every webhook it receives.
type fakePHP struct {
	*httptest.Server
	mu    sync.Mutex
	hooks []hook
}

func newFakePHP(t *testing.T) *fakePHP {
	t.Helper()
	p := &fakePHP{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var h hook
		if err := json.NewDecoder(r.Body).Decode(&h); err != nil {
			t.Errorf("webhook body is not JSON: %v", err)
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		p.hooks = append(p.hooks, h)
		p.mu.Unlock()
		switch h.Type {
		case "open":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"user_id":"u1","send":["welcome"]}`)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *fakePHP) received(typ string) []hook {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []hook
	for _, h := range p.hooks {
		if h.Type == typ {
			out = append(out, h)
		}
	}
	return out
}

func getJSON(t *testing.T, client *http.Client, url string, out any) int {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s: %q is not JSON: %v", url, body, err)
	}
	return resp.StatusCode
}

// TestProcessGracefulShutdown runs the real binary: 50 clients connect, SIGTERM closes each with
// 1001, PHP gets one shutdown close webhook per client, and the process exits 0.
func TestProcessGracefulShutdown(t *testing.T) {
	t.Parallel()
	const clients = 50
	php := newFakePHP(t)
	public, internal := testkit.FreeAddr(t), testkit.FreeAddr(t)
	p := startProc(t,
		"WSBRIDGE_LISTEN="+public,
		"WSBRIDGE_INTERNAL_LISTEN="+internal,
		"WSBRIDGE_WEBHOOK_URL="+php.URL,
		"WSBRIDGE_SHUTDOWN_TIMEOUT=10s",
	)
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	p.waitReady(t, client, "http://"+internal+"/readyz")

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		c, _, err := websocket.Dial(ctx, "ws://"+public+"/ws", nil)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		t.Cleanup(func() { c.CloseNow() })
		conns[i] = c
		// The welcome frame is sent after the connection is in the hub.
		if _, msg, err := c.Read(ctx); err != nil || string(msg) != "welcome" {
			t.Fatalf("client %d: first message %q, %v; want welcome", i, msg, err)
		}
	}
	if n := len(php.received("open")); n != clients {
		t.Errorf("PHP received %d open webhooks, want %d", n, clients)
	}

	var stats struct {
		Connections *int `json:"connections"`
		Users       int  `json:"users"`
	}
	if code := getJSON(t, client, "http://"+internal+"/v1/stats", &stats); code != http.StatusOK {
		t.Fatalf("GET /v1/stats = %d", code)
	}
	if stats.Connections == nil || *stats.Connections != clients {
		t.Fatalf("stats report %v connections, want %d", stats.Connections, clients)
	}
	if stats.Users != 1 {
		t.Errorf("stats report %d users, want 1 (everyone is u1)", stats.Users)
	}

	// Each client reads until its connection ends; coder/websocket answers the close frame.
	results := make(chan error, clients)
	for _, c := range conns {
		go func() {
			_, _, err := c.Read(ctx)
			results <- err
		}()
	}
	p.signal(t, syscall.SIGTERM)

	for i := range clients {
		select {
		case err := <-results:
			if st := websocket.CloseStatus(err); st != websocket.StatusGoingAway {
				t.Errorf("client %d: read ended with %v (status %d), want a close frame with 1001", i, err, st)
			}
		case <-ctx.Done():
			t.Fatalf("only %d of %d clients saw their connection end", i, clients)
		}
	}
	if code := p.exitCode(t); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}

	// The process delivered every close webhook before exiting, so the count is final.
	closes := php.received("close")
	if len(closes) != clients {
		t.Errorf("PHP received %d close webhooks, want %d", len(closes), clients)
	}
	ids := map[string]bool{}
	for _, h := range closes {
		if h.Initiator != "shutdown" || h.Code == nil || *h.Code != 1001 {
			t.Errorf("close webhook %+v (code %v), want initiator shutdown and code 1001", h, h.Code)
		}
		if h.UserID != "u1" {
			t.Errorf("close webhook for user %q, want u1", h.UserID)
		}
		if ids[h.ConnectionID] {
			t.Errorf("two close webhooks for %s", h.ConnectionID)
		}
		ids[h.ConnectionID] = true
	}
	if log := p.stderr.String(); !strings.Contains(log, `"msg":"stopped"`) {
		t.Errorf("no clean stop logged:\n%s", log)
	}
}

// TestProcessUnixSocket serves the internal API on a unix socket, without a token.
func TestProcessUnixSocket(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "wsb") // short: socket paths are limited to ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	php := newFakePHP(t) // /readyz needs PHP reachable
	p := startProc(t,
		"WSBRIDGE_LISTEN="+testkit.FreeAddr(t),
		"WSBRIDGE_INTERNAL_LISTEN=unix:"+sock,
		"WSBRIDGE_WEBHOOK_URL="+php.URL,
	)
	transport := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	client := &http.Client{Transport: transport, Timeout: 5 * time.Second}
	t.Cleanup(transport.CloseIdleConnections)
	p.waitReady(t, client, "http://wsbridge/readyz")

	var health struct{ Status string }
	if code := getJSON(t, client, "http://wsbridge/healthz", &health); code != http.StatusOK || health.Status != "ok" {
		t.Errorf("GET /healthz over %s = %d %+v, want 200 ok", sock, code, health)
	}
	var stats struct{ Connections *int }
	if code := getJSON(t, client, "http://wsbridge/v1/stats", &stats); code != http.StatusOK || stats.Connections == nil || *stats.Connections != 0 {
		t.Errorf("GET /v1/stats over the socket = %d, connections %v; want 200, 0", code, stats.Connections)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode: %v %v, want 0660 (owner and group only)", fi.Mode(), err)
	}
	transport.CloseIdleConnections()

	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file left behind after exit: %v", err)
	}
}

// TestProcessPublicInternalNeedsToken refuses to expose the push API without a token.
func TestProcessPublicInternalNeedsToken(t *testing.T) {
	t.Parallel()
	_, port, _ := net.SplitHostPort(testkit.FreeAddr(t))
	p := startProc(t,
		"WSBRIDGE_LISTEN="+testkit.FreeAddr(t),
		"WSBRIDGE_INTERNAL_LISTEN=0.0.0.0:"+port,
		"WSBRIDGE_WEBHOOK_URL=http://127.0.0.1:9/never-called",
	)
	if code := p.exitCode(t); code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
	if out := p.stderr.String(); !strings.Contains(out, "WSBRIDGE_API_TOKEN:") {
		t.Errorf("stderr does not name WSBRIDGE_API_TOKEN:\n%s", out)
	}
}

// TestProcessLogsAreThrottled: every line of the process goes through the log throttle, and
// what it held back is summed up before the process exits.
func TestProcessLogsAreThrottled(t *testing.T) {
	t.Parallel()
	const clients = 5
	php := newFakePHP(t)
	public, internal := testkit.FreeAddr(t), testkit.FreeAddr(t)
	p := startProc(t,
		"WSBRIDGE_LISTEN="+public,
		"WSBRIDGE_INTERNAL_LISTEN="+internal,
		"WSBRIDGE_WEBHOOK_URL="+php.URL,
		"WSBRIDGE_LOG_LEVEL=debug", // one "connection opened" and one "connection closed" each
		"WSBRIDGE_LOG_REPEAT_LIMIT=2",
		"WSBRIDGE_LOG_REPEAT_INTERVAL=1h", // no interval ends during the test: exit sums up
	)
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	p.waitReady(t, client, "http://"+internal+"/readyz")
	for range clients {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		c, _, err := websocket.Dial(ctx, "ws://"+public+"/ws", nil)
		if err != nil {
			cancel()
			t.Fatalf("dial: %v", err)
		}
		if _, msg, err := c.Read(ctx); err != nil || string(msg) != "welcome" {
			t.Fatalf("first frame %q %v, want welcome", msg, err)
		}
		cancel()
		defer c.CloseNow()
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}

	written := map[string]int{}
	summed := map[string]float64{}
	for line := range strings.SplitSeq(strings.TrimSpace(p.stderr.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		msg, _ := rec["msg"].(string)
		written[msg]++
		if msg == "suppressed similar log lines" {
			n, _ := rec["suppressed"].(float64)
			summed[rec["message"].(string)] += n
		}
	}
	for _, msg := range []string{"connection opened", "connection closed"} {
		if written[msg] != 2 || summed[msg] != clients-2 {
			t.Errorf("%q: %d lines written and %v summed up, want 2 and %d", msg, written[msg], summed[msg], clients-2)
		}
	}
}

// TestProcessServesWSS runs the binary with TLS_CERT_FILE and TLS_KEY_FILE: a wss:// client
// that trusts only the test CA connects, is accepted by PHP and gets its welcome frame.
func TestProcessServesWSS(t *testing.T) {
	t.Parallel()
	ca := testkit.NewCA(t)
	certFile, keyFile := ca.WritePair(t, "wsbridge.test", 7)
	php := newFakePHP(t)
	public, internal := testkit.FreeAddr(t), testkit.FreeAddr(t)
	p := startProc(t,
		"WSBRIDGE_LISTEN="+public,
		"WSBRIDGE_INTERNAL_LISTEN="+internal,
		"WSBRIDGE_WEBHOOK_URL="+php.URL,
		"WSBRIDGE_TLS_CERT_FILE="+certFile,
		"WSBRIDGE_TLS_KEY_FILE="+keyFile,
	)
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	p.waitReady(t, client, "http://"+internal+"/readyz")

	tr := &http.Transport{TLSClientConfig: ca.ClientConfig()}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "wss://"+public+"/ws", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("dial wss: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	if resp.TLS == nil || resp.TLS.PeerCertificates[0].SerialNumber.Int64() != 7 {
		t.Errorf("upgrade TLS state %+v, want the configured certificate (serial 7)", resp.TLS)
	}
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "welcome" {
		t.Fatalf("first message %q, %v; want welcome", msg, err)
	}
	// Go's TLS server answers a plain HTTP request with a bare 400 and nothing else.
	if resp, err := client.Get("http://" + public + "/"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS server") {
			t.Errorf("plain HTTP to the TLS listener: %d %q, want 400", resp.StatusCode, body)
		}
	}
	c.Close(websocket.StatusNormalClosure, "")
	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	if n := len(php.received("open")); n != 1 {
		t.Errorf("PHP received %d open webhooks, want 1", n)
	}
	if log := p.stderr.String(); !strings.Contains(log, `"msg":"tls: certificate loaded"`) || !strings.Contains(log, `"tls":true`) {
		t.Errorf("the certificate and TLS listener are not logged:\n%s", log)
	}
}

// TestProcessTLSWithExtendedConnect: GODEBUG=http2xconnect=1 would make net/http announce RFC
// 8441 and browsers would send their WebSockets as HTTP/2 streams, which cannot be accepted.
// The binary then serves HTTP/1.1 only, says why, and WebSockets keep working.
func TestProcessTLSWithExtendedConnect(t *testing.T) {
	t.Parallel()
	ca := testkit.NewCA(t)
	certFile, keyFile := ca.WritePair(t, "wsbridge.test", 8)
	php := newFakePHP(t)
	public, internal := testkit.FreeAddr(t), testkit.FreeAddr(t)
	p := startProc(t,
		"GODEBUG=http2xconnect=1",
		"WSBRIDGE_LISTEN="+public,
		"WSBRIDGE_INTERNAL_LISTEN="+internal,
		"WSBRIDGE_WEBHOOK_URL="+php.URL,
		"WSBRIDGE_TLS_CERT_FILE="+certFile,
		"WSBRIDGE_TLS_KEY_FILE="+keyFile,
	)
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	p.waitReady(t, client, "http://"+internal+"/readyz")

	conf := ca.ClientConfig()
	conf.NextProtos = []string{"h2", "http/1.1"}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	nc, err := (&tls.Dialer{Config: conf}).DialContext(ctx, "tcp", public)
	if err != nil {
		t.Fatal(err)
	}
	if got := nc.(*tls.Conn).ConnectionState().NegotiatedProtocol; got != "http/1.1" {
		t.Errorf("ALPN chose %q with GODEBUG=http2xconnect=1, want http/1.1", got)
	}
	nc.Close()

	tr := &http.Transport{TLSClientConfig: ca.ClientConfig()}
	t.Cleanup(tr.CloseIdleConnections)
	c, _, err := websocket.Dial(ctx, "wss://"+public+"/ws", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("dial wss: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "welcome" {
		t.Fatalf("first message %q, %v; want welcome", msg, err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	p.signal(t, syscall.SIGTERM)
	if code := p.exitCode(t); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	if log := p.stderr.String(); !strings.Contains(log, "http2xconnect=1") {
		t.Errorf("the fallback to HTTP/1.1 is not logged:\n%s", log)
	}
}
