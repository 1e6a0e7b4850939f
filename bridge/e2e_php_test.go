package bridge

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// phpServer is `php -S` serving testdata/php, the way a developer runs a small app. It can be
// stopped and started again on the same address, as a deploy or a crash would.
type phpServer struct {
	URL      string
	closeLog string
	php      string
	addr     string
	dir      string
	env      []string
	cmd      *exec.Cmd
	// hook, when set, is the bridge's WEBHOOK_URL instead of webhook.php under php -S (php-fpm
	// directly: fcgi_e2e_test.go), and extraEnv more of the bridge's environment.
	hook     string
	extraEnv []string
}

func startPHP(t *testing.T, secret string) *phpServer {
	t.Helper()
	p := newPHP(t, "WSBRIDGE_WEBHOOK_SECRET="+secret)
	p.start(t)
	return p
}

// newPHP prepares a php -S on a free loopback port with env added to its environment; the test
// ends it.
func newPHP(t *testing.T, env ...string) *phpServer {
	t.Helper()
	php := testkit.RequireTool(t, "php-cli", "php")
	addr := testkit.FreeAddr(t) // php -S needs a port number
	dir := t.TempDir()
	p := &phpServer{URL: "http://" + addr, closeLog: filepath.Join(dir, "close.log"), php: php, addr: addr, dir: dir}
	p.env = append(append(os.Environ(), "PHP_CLI_SERVER_WORKERS=4", "CLOSE_LOG="+p.closeLog), env...)
	t.Cleanup(p.stop)
	return p
}

func (p *phpServer) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(p.php, "-d", "variables_order=EGPCS", "-d", "session.save_path="+p.dir, "-S", p.addr, "-t", "testdata/php")
	cmd.Env = p.env
	// With PHP_CLI_SERVER_WORKERS, php -S forks workers that outlive a killed master and keep
	// the port; a process group of its own lets stop end them all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.cmd = cmd
	// php -S prints "Development Server ... started" once it listens; errors go there too.
	started := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "started") {
				started <- true
				break
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case <-started:
	case <-time.After(waitLimit):
		t.Fatalf("php -S did not start on %s", p.addr)
	}
}

// stop kills PHP at once, mid-request if need be, as a crash or `kill -9` would.
func (p *phpServer) stop() {
	if p.cmd == nil {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	p.cmd.Wait()
	p.cmd = nil
}

// closeEvents reads the close webhooks PHP recorded.
func (p *phpServer) closeEvents(t *testing.T) []Event {
	t.Helper()
	return readJSONLines[Event](t, p.closeLog)
}

// readJSONLines decodes a file PHP appends one JSON object per line to; a missing file is empty.
func readJSONLines[T any](t *testing.T, path string) []T {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []T
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if line == "" {
			continue
		}
		var v T
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("%s: line %q: %v", path, line, err)
		}
		out = append(out, v)
	}
	return out
}

// phpBridge starts an in-process bridge in front of real PHP, proxying pages to it.
func phpBridge(t *testing.T, php *phpServer, secret string) (*Server, *httptest.Server, *httptest.Server) {
	t.Helper()
	hook := php.URL + "/webhook.php"
	if php.hook != "" {
		hook = php.hook
	}
	cfg, err := LoadConfig(append([]string{
		"WSBRIDGE_WEBHOOK_URL=" + hook,
		"WSBRIDGE_UPSTREAM=" + php.URL,
		"WSBRIDGE_WEBHOOK_SECRET=" + secret,
		// The chat test sends hundreds of messages as fast as PHP takes them.
		"WSBRIDGE_MESSAGE_RATE=0",
	}, php.extraEnv...))
	if err != nil {
		t.Fatal(err)
	}
	srv := New(cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)), nil)
	pub := httptest.NewServer(srv.PublicHandler())
	in := httptest.NewServer(srv.InternalHandler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		srv.Shutdown(ctx)
		pub.Close()
		in.Close()
	})
	return srv, pub, in
}

// login goes through the bridge's reverse proxy to PHP's login page and returns the session
// cookie header, as a browser would hold it.
func login(t *testing.T, pub *httptest.Server, user string) http.Header {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Get(pub.URL + "/login.php?user=" + user)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "logged in as "+user {
		t.Fatalf("login through the proxy: %d %q", resp.StatusCode, body)
	}
	u, _ := url.Parse(pub.URL)
	h := http.Header{}
	for _, ck := range jar.Cookies(u) {
		h.Add("Cookie", ck.String())
	}
	return h
}

func dialWS(t *testing.T, pub *httptest.Server, h http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(pub.URL, "http")+"/ws", &websocket.DialOptions{HTTPHeader: h})
	if err == nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

// A chat through real PHP: session-cookie authentication at open, state kept between
// webhooks, room relay except the sender, ordering, binary frames, PHP's close instruction,
// and a close webhook for every connection by the time shutdown returns.
func TestEndToEndChatWithPHP(t *testing.T) {
	const secret = "e2e-secret"
	testChatWithPHP(t, startPHP(t, secret), secret)
}

func testChatWithPHP(t *testing.T, php *phpServer, secret string) {
	srv, pub, _ := phpBridge(t, php, secret)

	resp, err := http.Get(pub.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(page), "hello from PHP") {
		t.Fatalf("page through the proxy: %q", page)
	}

	if _, resp, err := dialWS(t, pub, nil); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("anonymous socket: %v %v, want PHP's 403", err, resp)
	}
	ann, _, err := dialWS(t, pub, login(t, pub, "ann"))
	if err != nil {
		t.Fatal(err)
	}
	bob, _, err := dialWS(t, pub, login(t, pub, "bob"))
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, ann); got != "welcome ann" {
		t.Fatalf("ann's first frame %q", got)
	}
	if got := read(t, bob); got != "welcome bob" {
		t.Fatalf("bob's first frame %q", got)
	}

	const n = 200
	go func() {
		for i := range n {
			if ann.Write(context.Background(), websocket.MessageText, []byte(fmt.Sprint("m", i))) != nil {
				return
			}
		}
	}()
	for i := range n {
		// The counter in meta proves PHP's state came back on every webhook, in order.
		if got, want := read(t, ann), fmt.Sprintf("ack %d %d", i+1, i+1); got != want {
			t.Fatalf("ann got %q, want %q", got, want)
		}
		if got, want := read(t, bob), fmt.Sprintf("Ann: m%d", i); got != want {
			t.Fatalf("bob got %q, want %q", got, want)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	blob := []byte{0, 1, 2, 250, 255}
	if err := bob.Write(ctx, websocket.MessageBinary, blob); err != nil {
		t.Fatal(err)
	}
	if typ, got, err := bob.Read(ctx); err != nil || typ != websocket.MessageBinary || string(got) != string(blob) {
		t.Fatalf("binary echo: %v %v %v", err, typ, got)
	}

	write(t, bob, "/quit")
	if ce := readClose(t, bob); ce.Code != 4000 || ce.Reason != "bye bob" {
		t.Fatalf("bob closed with %v", ce)
	}

	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if ce := readClose(t, ann); ce.Code != websocket.StatusGoingAway {
		t.Errorf("ann closed with %v", ce)
	}
	byUser := map[string]Event{}
	for _, ev := range php.closeEvents(t) {
		byUser[ev.UserID] = ev
	}
	if ev := byUser["bob"]; ev.Initiator != InitiatorPHP || *ev.Code != 4000 || *ev.MessagesIn != 2 {
		t.Errorf("bob's close webhook: %+v", ev)
	}
	if ev := byUser["ann"]; ev.Initiator != InitiatorShutdown || *ev.Code != 1001 || *ev.MessagesIn != n || *ev.MessagesOut != n+1 {
		t.Errorf("ann's close webhook: %+v", ev)
	}
	if len(byUser) != 2 {
		t.Errorf("PHP recorded close webhooks for %v, want ann and bob", byUser)
	}
}

// PHP checks the signature with hash_equals: the right secret opens, a wrong one is refused by
// PHP itself, and its 401 reaches the client. The same PHP function passes the shared vectors.
func TestEndToEndSignatureCheckedByPHP(t *testing.T) {
	php := startPHP(t, "right")
	_, good, _ := phpBridge(t, php, "right")
	if _, _, err := dialWS(t, good, login(t, good, "ann")); err != nil {
		t.Fatalf("correctly signed open refused: %v", err)
	}
	_, bad, _ := phpBridge(t, php, "wrong")
	_, resp, err := dialWS(t, bad, login(t, bad, "ann"))
	if err == nil || resp.StatusCode != http.StatusUnauthorized || readAll(t, resp) != "bad signature: signature mismatch" {
		t.Fatalf("wrongly signed open: %v %v", err, resp)
	}

	out, err := exec.Command(testkit.RequireTool(t, "php-cli", "php"), "testdata/php/vectors.php", "testdata/signature_vectors.json").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "0 failed") {
		t.Fatalf("PHP against the shared vectors: %v\n%s", err, out)
	}
}
