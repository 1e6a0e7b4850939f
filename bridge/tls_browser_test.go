//go:build unix

package bridge

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// browserPage loads over the bridge, opens a WebSocket to it, and reports to /done the protocol
// the page itself came over and the echo it got (or that the socket failed).
const browserPage = `<!doctype html><title>wss</title><script>
const page = performance.getEntriesByType("navigation")[0].nextHopProtocol;
const report = q => fetch("/done?page=" + page + "&" + q);
const ws = new WebSocket("wss://" + location.host + "/ws");
ws.onopen = () => ws.send("from the browser");
ws.onmessage = e => report("echo=" + encodeURIComponent(e.data));
ws.onerror = () => report("error=1");
</script>`

// TestTLSBrowser is what the TLS listener is for: Debian's chromium loads a page through the
// bridge over HTTP/2 and opens a wss:// WebSocket from it, which must work although the page's
// connection is h2 (the browser opens an HTTP/1.1 connection of its own for the WebSocket).
func TestTLSBrowser(t *testing.T) {
	t.Parallel()
	chromium := testkit.RequireTool(t, "chromium", "chromium", "/usr/bin/chromium")
	done := make(chan url.Values, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, browserPage)
		case "/done":
			select {
			case done <- r.URL.Query():
			default:
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(app.Close)
	up, _ := url.Parse(app.URL)
	php := newFakePHP(t, echoPHP)
	b := startTLSBridge(t, php, func(c *Config) { c.Upstream = up })

	// Trust exactly the bridge's key, as a CA in the browser's store would.
	pair, err := tls.LoadX509KeyPair(b.certs.certFile, b.certs.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)

	ctx, cancel := context.WithTimeout(context.Background(), 3*waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--no-first-run", "--user-data-dir="+t.TempDir(),
		"--ignore-certificate-errors-spki-list="+base64.StdEncoding.EncodeToString(spki[:]),
		"https://"+b.addr+"/")
	// chromium starts helper processes: end the whole group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitLimit
	out := &testkit.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel()
		<-exited
	})

	var got url.Values
	select {
	case got = <-done:
	case <-exited:
		t.Fatalf("chromium exited before the page reported:\n%s", out.String())
	case <-time.After(3 * waitLimit):
		t.Fatalf("the page did not report within %s; chromium said:\n%s", 3*waitLimit, out.String())
	}
	if got.Get("page") != "h2" {
		t.Errorf("the page came over %q, want h2", got.Get("page"))
	}
	if got.Get("error") != "" || got.Get("echo") != "echo: from the browser" {
		t.Errorf("the page's WebSocket reported %v, want the echo", got)
	}
	if php.next(t, EventOpen).Event.Request.Headers["User-Agent"] == "" {
		t.Error("the open webhook lacks the browser's User-Agent")
	}
}
