package bridge

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// certDir holds a certificate pair the way certbot does: live/cert.pem and live/key.pem are
// symlinks to numbered files in archive/, and a renewal writes new numbered files and moves the
// symlinks.
type certDir struct {
	ca                *testkit.CA
	dir               string
	certFile, keyFile string // the live symlinks
	n                 int
}

func newCertDir(t *testing.T, ca *testkit.CA) *certDir {
	t.Helper()
	d := &certDir{ca: ca, dir: t.TempDir()}
	for _, sub := range []string{"live", "archive"} {
		if err := os.Mkdir(filepath.Join(d.dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d.certFile, d.keyFile = filepath.Join(d.dir, "live", "cert.pem"), filepath.Join(d.dir, "live", "key.pem")
	return d
}

// renew issues a certificate with the given common name and serial and points the live
// symlinks at it, as certbot renew does.
func (d *certDir) renew(t *testing.T, cn string, serial int64) {
	t.Helper()
	certPEM, keyPEM := d.ca.Issue(t, cn, serial)
	d.install(t, certPEM, keyPEM)
}

// install writes certPEM and keyPEM as the next archive files and moves both symlinks to them,
// each with an atomic rename.
func (d *certDir) install(t *testing.T, certPEM, keyPEM []byte) {
	t.Helper()
	d.n++
	for _, f := range []struct {
		live string
		name string
		pem  []byte
	}{{d.certFile, "cert", certPEM}, {d.keyFile, "privkey", keyPEM}} {
		target := filepath.Join(d.dir, "archive", fmt.Sprintf("%s%d.pem", f.name, d.n))
		if err := os.WriteFile(target, f.pem, 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := f.live + ".new"
		if err := os.Symlink(target, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.live); err != nil {
			t.Fatal(err)
		}
	}
}

// tlsBridge is a Server run by Serve itself, as the binary runs it, on real loopback
// listeners with TLS_CERT_FILE and TLS_KEY_FILE set.
type tlsBridge struct {
	srv      *Server
	addr     string // the public listener
	ca       *testkit.CA
	certs    *certDir
	clock    *fakeClock
	logs     *testkit.SyncBuffer // the server's JSON log lines
	php      *fakePHP
	internal string
}

func startTLSBridge(t *testing.T, php *fakePHP, tweak func(*Config)) *tlsBridge {
	t.Helper()
	ca := testkit.NewCA(t)
	certs := newCertDir(t, ca)
	certs.renew(t, "first.test", 1)
	cfg := testConfig(t, php.URL)
	cfg.TLSCertFile, cfg.TLSKeyFile = certs.certFile, certs.keyFile
	cfg.ShutdownTimeout = waitLimit
	if tweak != nil {
		tweak(&cfg)
	}
	logs := &testkit.SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(io.MultiWriter(logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := New(cfg, log, nil)
	clock := newFakeClock(time.Now())
	srv.certs.now = clock.now

	public, internal, cancel, done := serveLoopback(t, srv)
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(2 * waitLimit):
			t.Errorf("Serve did not return within %s of its context ending", 2*waitLimit)
		}
	})
	return &tlsBridge{srv: srv, addr: public.Addr().String(), ca: ca, certs: certs, clock: clock, logs: logs,
		php: php, internal: internal.Addr().String()}
}

// client returns an HTTP client that trusts the test CA; http2 lets it negotiate h2.
func (b *tlsBridge) client(t *testing.T, http2 bool, nextProtos ...string) *http.Client {
	t.Helper()
	conf := b.ca.ClientConfig()
	conf.NextProtos = nextProtos
	tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: http2}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// handshake completes one TLS handshake with the public listener and returns what it saw.
func (b *tlsBridge) handshake(t *testing.T, conf *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	if conf == nil {
		conf = b.ca.ClientConfig()
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := (&tls.Dialer{Config: conf}).DialContext(ctx, "tcp", b.addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState(), nil
}

// served returns the leaf certificate the next handshake gets.
func (b *tlsBridge) served(t *testing.T) *x509.Certificate {
	t.Helper()
	st, err := b.handshake(t, nil)
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	return st.PeerCertificates[0]
}

// echoPHP accepts every connection and answers each message with "echo: " and the message.
func echoPHP(c hookCall) (int, any) {
	if c.Event.Type == EventMessage && c.Event.Data != nil {
		return http.StatusOK, map[string]any{"send": []string{"echo: " + *c.Event.Data}}
	}
	return http.StatusNoContent, nil
}

// dialWSS opens a wss:// WebSocket through client.
func (b *tlsBridge) dialWSS(t *testing.T, client *http.Client) (*websocket.Conn, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "wss://"+b.addr+"/ws", &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatalf("dial wss: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, resp
}

// TestTLSWebSocket: a wss:// WebSocket, with and without ALPN (browsers offer http/1.1 alone on
// the connection they open for a WebSocket; Go's client offers nothing), gets its open webhook,
// an echo through PHP and one close webhook. Frames the bridge writes itself (internal/wsraw)
// must go through TLS too: a frame written to the raw socket would be garbage to the client.
func TestTLSWebSocket(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		nextProtos []string
		want       string // negotiated protocol
	}{
		{"no ALPN", nil, ""},
		{"ALPN http/1.1", []string{"http/1.1"}, "http/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			php := newFakePHP(t, echoPHP)
			b := startTLSBridge(t, php, nil)
			client := b.client(t, false, tc.nextProtos...)
			if tc.nextProtos != nil {
				// Go's transport drops ALPN for upgrades; dial as a browser would instead.
				client.Transport.(*http.Transport).DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
					conf := b.ca.ClientConfig()
					conf.NextProtos = tc.nextProtos
					return (&tls.Dialer{Config: conf}).DialContext(ctx, network, addr)
				}
			}
			c, resp := b.dialWSS(t, client)
			if resp.TLS == nil || resp.TLS.NegotiatedProtocol != tc.want || resp.TLS.Version < tls.VersionTLS12 {
				t.Fatalf("upgrade's TLS state %+v, want TLS 1.2+ with ALPN %q", resp.TLS, tc.want)
			}
			id := php.next(t, EventOpen).Event.ConnectionID
			for _, msg := range []string{"hello", strings.Repeat("x", 20000)} {
				write(t, c, msg)
				if got := read(t, c); got != "echo: "+msg {
					t.Fatalf("echo of a %d-byte message: got %d bytes %.40q", len(msg), len(got), got)
				}
			}
			c.Close(websocket.StatusNormalClosure, "bye")
			ev := php.nextFor(t, EventClose, id).Event
			if ev.Code == nil || *ev.Code != 1000 || ev.Initiator != InitiatorClient {
				t.Errorf("close webhook: code %v, initiator %q; want 1000 from the client", ev.Code, ev.Initiator)
			}
		})
	}
}

// TestTLSPagesOverHTTP2 proxies a page over h2 and tells the app it was https; a WebSocket
// request on an h2 connection gets 426 without PHP being asked, since an h2 stream cannot be
// taken over.
func TestTLSPagesOverHTTP2(t *testing.T) {
	t.Parallel()
	seen := make(chan *http.Request, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Clone(context.Background())
		io.WriteString(w, "page "+r.URL.Path)
	}))
	t.Cleanup(app.Close)
	up, _ := url.Parse(app.URL)
	php := newFakePHP(t, acceptAll)
	b := startTLSBridge(t, php, func(c *Config) { c.Upstream = up })
	client := b.client(t, true)

	resp, err := client.Get("https://" + b.addr + "/index.php")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" || resp.StatusCode != http.StatusOK || string(body) != "page /index.php" {
		t.Fatalf("proxied page: %s %d %q, want HTTP/2.0 200 \"page /index.php\"", resp.Proto, resp.StatusCode, body)
	}
	if r := <-seen; r.Header.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("app saw X-Forwarded-Proto %q, want https", r.Header.Get("X-Forwarded-Proto"))
	}

	resp, err = client.Get("https://" + b.addr + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" || resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("GET /ws over h2: %s %d, want HTTP/2.0 426", resp.Proto, resp.StatusCode)
	}
	select {
	case c := <-php.calls:
		t.Errorf("PHP got a %s webhook for a request that cannot become a WebSocket", c.Event.Type)
	default:
	}
}

// TestTLSHTTP2NoExtendedConnect reads the server's HTTP/2 SETTINGS: it must not announce RFC
// 8441's SETTINGS_ENABLE_CONNECT_PROTOCOL, or browsers would send WebSockets as h2 streams,
// which coder/websocket cannot accept.
func TestTLSHTTP2NoExtendedConnect(t *testing.T) {
	t.Parallel()
	b := startTLSBridge(t, newFakePHP(t, acceptAll), nil)
	conf := b.ca.ClientConfig()
	conf.NextProtos = []string{"h2", "http/1.1"}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	nc, err := (&tls.Dialer{Config: conf}).DialContext(ctx, "tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(waitLimit))
	if p := nc.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN chose %q for a client offering h2 and http/1.1, want h2", p)
	}
	// The client preface, then an empty SETTINGS frame (RFC 9113 §3.4).
	if _, err := io.WriteString(nc, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
		t.Fatal(err)
	}
	// The server's first frame is its SETTINGS (§3.4): 9-byte header, then 6-byte entries.
	br := bufio.NewReader(nc)
	var hdr [9]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		t.Fatal(err)
	}
	length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
	if hdr[3] != 0x4 || length%6 != 0 {
		t.Fatalf("first frame: type %d, length %d; want SETTINGS", hdr[3], length)
	}
	payload := make([]byte, length)
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < length; i += 6 {
		id, val := binary.BigEndian.Uint16(payload[i:]), binary.BigEndian.Uint32(payload[i+2:])
		if id == 0x8 && val != 0 { // SETTINGS_ENABLE_CONNECT_PROTOCOL
			t.Errorf("server announces extended CONNECT (setting 0x8 = %d)", val)
		}
	}
}

// TestTLSDefaults: TLS 1.0 and 1.1 are refused, 1.2 and 1.3 accepted, and no client
// certificate is asked for.
func TestTLSDefaults(t *testing.T) {
	t.Parallel()
	b := startTLSBridge(t, newFakePHP(t, acceptAll), nil)
	for _, tc := range []struct {
		name    string
		version uint16
		ok      bool
	}{
		{"TLS 1.0 refused", tls.VersionTLS10, false},
		{"TLS 1.1 refused", tls.VersionTLS11, false},
		{"TLS 1.2", tls.VersionTLS12, true},
		{"TLS 1.3", tls.VersionTLS13, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := b.ca.ClientConfig()
			conf.MinVersion, conf.MaxVersion = tc.version, tc.version
			asked := false
			conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				asked = true
				return &tls.Certificate{}, nil
			}
			st, err := b.handshake(t, conf)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("handshake refused: %v", err)
			case !tc.ok && err == nil:
				t.Fatalf("handshake with version %x accepted", st.Version)
			case tc.ok && st.Version != tc.version:
				t.Errorf("negotiated version %x, want %x", st.Version, tc.version)
			}
			if asked {
				t.Error("the server asked for a client certificate")
			}
		})
	}
	// What clients get wrong in handshakes is theirs to fix: the refusals above are logged at
	// debug level only, so that scanners on a public port do not flood the warnings.
	for line := range strings.SplitSeq(b.logs.String(), "\n") {
		if strings.Contains(line, "TLS handshake error") && !strings.Contains(line, `"level":"DEBUG"`) {
			t.Errorf("a client's failed handshake is logged above debug: %s", line)
		}
	}
	if !strings.Contains(b.logs.String(), "TLS handshake error") {
		t.Error("the refused handshakes are not logged at all")
	}
}

// TestTLSCertificateReload renews the certificate the way certbot does, with the bridge
// running: the next handshake once the gate is open serves the new one, a connection opened
// before goes on, and a broken renewal keeps the old certificate and is logged once.
func TestTLSCertificateReload(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, echoPHP)
	b := startTLSBridge(t, php, nil)
	if got := b.served(t); got.SerialNumber.Int64() != 1 || got.Subject.CommonName != "first.test" {
		t.Fatalf("served %s serial %d, want first.test serial 1", got.Subject.CommonName, got.SerialNumber)
	}
	c, _ := b.dialWSS(t, b.client(t, false))
	php.next(t, EventOpen)

	b.certs.renew(t, "second.test", 2)
	if got := b.served(t); got.SerialNumber.Int64() != 1 {
		t.Errorf("served serial %d before the reload gate opened, want 1 (files looked at once per %s)", got.SerialNumber, certCheckEvery)
	}
	b.clock.advance(certCheckEvery)
	if got := b.served(t); got.SerialNumber.Int64() != 2 || got.Subject.CommonName != "second.test" {
		t.Fatalf("after renewal served %s serial %d, want second.test serial 2", got.Subject.CommonName, got.SerialNumber)
	}
	if !strings.Contains(b.logs.String(), `"msg":"tls: certificate reloaded"`) {
		t.Error("the reload was not logged")
	}
	write(t, c, "still here")
	if got := read(t, c); got != "echo: still here" {
		t.Errorf("connection opened before the renewal: got %q", got)
	}

	// A renewal whose key belongs to another certificate.
	certPEM, _ := b.ca.Issue(t, "third.test", 3)
	_, otherKey := b.ca.Issue(t, "other.test", 4)
	b.certs.install(t, certPEM, otherKey)
	for range 2 {
		b.clock.advance(certCheckEvery)
		if got := b.served(t); got.SerialNumber.Int64() != 2 {
			t.Fatalf("after a broken renewal served serial %d, want the previous 2", got.SerialNumber)
		}
	}
	const refused = `"msg":"tls: new certificate files do not load; still serving the previous certificate"`
	if n := strings.Count(b.logs.String(), refused); n != 1 {
		t.Errorf("broken renewal logged %d times, want once (per change)", n)
	}
	if log := b.logs.String(); !strings.Contains(log, "private key does not match public key") {
		t.Errorf("the error log does not say why:\n%s", log)
	}

	b.certs.renew(t, "fourth.test", 5)
	b.clock.advance(certCheckEvery)
	if got := b.served(t); got.SerialNumber.Int64() != 5 {
		t.Errorf("after a good renewal that followed a broken one served serial %d, want 5", got.SerialNumber)
	}
}

// TestCertReloaderChanges checks which changes to the files are seen, against the reloader
// alone: each case changes the files one way, opens the gate and looks at what is served.
func TestCertReloaderChanges(t *testing.T) {
	t.Parallel()
	ca := testkit.NewCA(t)
	tests := []struct {
		name   string
		change func(t *testing.T, d *certDir) // may write files; returns nothing
		serial int64                          // served afterwards; 1 is the original
	}{
		{"unchanged", func(*testing.T, *certDir) {}, 1},
		{"symlinks moved", func(t *testing.T, d *certDir) { d.renew(t, "new.test", 2) }, 2},
		{"rewritten in place", func(t *testing.T, d *certDir) {
			certPEM, keyPEM := ca.Issue(t, "new.test", 2)
			for _, f := range []struct {
				path string
				pem  []byte
			}{{d.certFile, certPEM}, {d.keyFile, keyPEM}} {
				if err := os.WriteFile(f.path, f.pem, 0o600); err != nil { // through the symlink
					t.Fatal(err)
				}
				// The file system's clock may not have ticked since the first write; a real
				// rewrite happens later.
				later := time.Now().Add(time.Minute)
				if err := os.Chtimes(f.path, later, later); err != nil {
					t.Fatal(err)
				}
			}
		}, 2},
		{"renamed over", func(t *testing.T, d *certDir) {
			certPEM, keyPEM := ca.Issue(t, "new.test", 2)
			for _, f := range []struct {
				path string
				pem  []byte
			}{{d.certFile, certPEM}, {d.keyFile, keyPEM}} {
				tmp := f.path + ".tmp"
				if err := os.WriteFile(tmp, f.pem, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, f.path); err != nil { // replaces the symlink itself
					t.Fatal(err)
				}
			}
		}, 2},
		{"key removed", func(t *testing.T, d *certDir) {
			if err := os.Remove(d.keyFile); err != nil {
				t.Fatal(err)
			}
		}, 1},
		{"key not PEM", func(t *testing.T, d *certDir) {
			certPEM, _ := ca.Issue(t, "new.test", 2)
			d.install(t, certPEM, []byte("-----BEGIN GARBAGE\n"))
		}, 1},
		{"certificate truncated", func(t *testing.T, d *certDir) {
			certPEM, keyPEM := ca.Issue(t, "new.test", 2)
			d.install(t, certPEM[:len(certPEM)/2], keyPEM)
		}, 1},
		{"only the certificate renewed so far", func(t *testing.T, d *certDir) {
			certPEM, _ := ca.Issue(t, "new.test", 2)
			target := filepath.Join(d.dir, "archive", "cert-next.pem")
			if err := os.WriteFile(target, certPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(d.certFile); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, d.certFile); err != nil {
				t.Fatal(err)
			}
		}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newCertDir(t, ca)
			d.renew(t, "old.test", 1)
			logs := &testkit.SyncBuffer{}
			r := newCertReloader(d.certFile, d.keyFile, slog.New(slog.NewJSONHandler(logs, nil)))
			clock := newFakeClock(time.Now())
			r.now = clock.now
			if err := r.load(); err != nil {
				t.Fatal(err)
			}
			first, _ := r.getCertificate(nil)

			tc.change(t, d)
			clock.advance(certCheckEvery)
			// Handshakes run at once: one looks, the others serve what is there.
			var wg sync.WaitGroup
			got := make([]*tls.Certificate, 8)
			for i := range got {
				wg.Go(func() { got[i], _ = r.getCertificate(nil) })
			}
			wg.Wait()
			after, _ := r.getCertificate(nil)
			if s := after.Leaf.SerialNumber.Int64(); s != tc.serial {
				t.Fatalf("serving serial %d, want %d; log:\n%s", s, tc.serial, logs.String())
			}
			for _, c := range got {
				if c != first && c != after {
					t.Errorf("a concurrent handshake got a certificate that is neither the old nor the new one")
				}
			}
			log := logs.String()
			switch {
			case tc.name == "unchanged":
				if after != first {
					t.Error("unchanged files were loaded again")
				}
			case tc.serial == 1:
				if !strings.Contains(log, `"level":"ERROR"`) || !strings.Contains(log, `"err":`) {
					t.Errorf("the refused files were not logged as an error:\n%s", log)
				}
			default:
				if !strings.Contains(log, `"msg":"tls: certificate reloaded"`) {
					t.Errorf("the reload was not logged:\n%s", log)
				}
			}
		})
	}
}

// TestTLSServeRefusesBadPair: files that went bad between the configuration check and Serve
// make Serve fail with a clear error rather than serve plain HTTP or no certificate.
func TestTLSServeRefusesBadPair(t *testing.T) {
	t.Parallel()
	ca := testkit.NewCA(t)
	certFile, keyFile := ca.WritePair(t, "a.test", 1)
	cfg := testConfig(t, "http://127.0.0.1:9/never")
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	srv := New(cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)), nil)
	public, _, cancel, done := serveLoopback(t, srv)
	var err error
	select {
	case err = <-done:
	case <-time.After(waitLimit):
		cancel()
		<-done
		t.Fatalf("Serve still serving %s after the key file was removed", waitLimit)
	}
	cancel()
	if err == nil || !strings.Contains(err.Error(), "load TLS certificate") || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Serve = %v, want a TLS certificate error", err)
	}
	if _, err := net.Dial("tcp", public.Addr().String()); err == nil {
		t.Error("the public listener is still open after Serve failed")
	}
}

// BenchmarkConnWriterTLS is BenchmarkConnWriter over TLS: a TLS socket has no file descriptor
// of its own to write to without waiting, so every frame goes through the writer goroutine.
func BenchmarkConnWriterTLS(b *testing.B) { benchConnWriter(b, true) }

func TestPublicProtocols(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, godebug string
		h2            bool
	}{
		{"unset", "", true},
		{"other settings", "http2debug=1,tlsrsakex=1", true},
		{"extended CONNECT off", "http2xconnect=0", true},
		{"extended CONNECT on", "tlsrsakex=1,http2xconnect=1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logs := &testkit.SyncBuffer{}
			p := publicProtocols(tc.godebug, slog.New(slog.NewJSONHandler(logs, nil)))
			if tc.h2 {
				if p != nil || logs.String() != "" {
					t.Errorf("protocols %v, log %q; want net/http's defaults and no log", p, logs.String())
				}
				return
			}
			if p == nil || p.HTTP2() || !p.HTTP1() || !strings.Contains(logs.String(), `"level":"WARN"`) {
				t.Errorf("protocols %v, log %q; want HTTP/1.1 only and a warning", p, logs.String())
			}
		})
	}
}

// BenchmarkIdleConnHeap opens idle WebSockets, plain and over TLS, and reports the Go heap and
// stacks they hold per connection, both ends together (client and bridge are one process here):
// the difference between the two is what TLS adds to an idle connection. Run it with
// -benchtime=1x; each iteration opens and closes all of them.
func BenchmarkIdleConnHeap(b *testing.B) {
	const n = 500
	php := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer php.Close()
	for _, useTLS := range []bool{false, true} {
		name := "plain"
		if useTLS {
			name = "tls"
		}
		b.Run(name, func(b *testing.B) {
			s := benchServer(b, "WSBRIDGE_WEBHOOK_URL="+php.URL, "WSBRIDGE_MESSAGE_RATE=0")
			hs := httptest.NewUnstartedServer(s.PublicHandler())
			if useTLS {
				hs.StartTLS()
			} else {
				hs.Start()
			}
			defer hs.Close()
			u := "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
			var perConn float64
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				conns := make([]*websocket.Conn, n)
				for i := range conns {
					c, _, err := websocket.Dial(context.Background(), u, &websocket.DialOptions{HTTPClient: hs.Client()})
					if err != nil {
						b.Fatal(err)
					}
					conns[i] = c
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perConn = float64(int64(after.HeapInuse+after.StackInuse)-int64(before.HeapInuse+before.StackInuse)) / n
				for _, c := range conns {
					c.CloseNow()
				}
			}
			b.ReportMetric(perConn, "heap+stack-B/conn")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s.Shutdown(ctx)
		})
	}
}
