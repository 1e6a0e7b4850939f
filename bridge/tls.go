package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// certCheckEvery is how often, at most, a handshake looks at the certificate files. Renewals
// happen weeks apart; a few seconds of delay cost nothing, and between checks a handshake pays
// one atomic load rather than two stat calls.
const certCheckEvery = 5 * time.Second

// pairError says which of the two files a pair failed on, so that the configuration error
// names the right variable.
type pairError struct {
	variable string // TLS_CERT_FILE or TLS_KEY_FILE
	err      error
}

func (e *pairError) Error() string { return e.err.Error() }
func (e *pairError) Unwrap() error { return e.err }

// readKeyPair reads and parses a certificate and its key. An unreadable file is blamed on its
// own variable; a pair that does not parse or match is blamed on TLS_CERT_FILE, and the message
// names both, since either file may be the wrong one.
func readKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, certErr := os.ReadFile(certFile)
	keyPEM, keyErr := os.ReadFile(keyFile)
	switch {
	case certErr != nil: // and maybe the key too: validateTLS reports that one as well
		return nil, &pairError{"TLS_CERT_FILE", fmt.Errorf("cannot read %q: %w", certFile, unwrapPath(certErr))}
	case keyErr != nil:
		return nil, &pairError{"TLS_KEY_FILE", fmt.Errorf("cannot read %q: %w", keyFile, unwrapPath(keyErr))}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &pairError{"TLS_CERT_FILE", fmt.Errorf("%q and %sTLS_KEY_FILE %q are not a valid pair: %w",
			certFile, EnvPrefix, keyFile, err)}
	}
	if cert.Leaf == nil { // GODEBUG=x509keypairleaf=0 leaves it unparsed
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, &pairError{"TLS_CERT_FILE", fmt.Errorf("parse %q: %w", certFile, err)}
		}
	}
	return &cert, nil
}

// unwrapPath drops os.PathError's repetition of the operation and path.
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// validateTLS is validate's part for TLS_CERT_FILE and TLS_KEY_FILE.
func (c *Config) validateTLS(add func(key, format string, args ...any)) {
	switch {
	case c.TLSCertFile == "" && c.TLSKeyFile == "":
		return
	case c.TLSKeyFile == "":
		add("TLS_KEY_FILE", "required because %sTLS_CERT_FILE is set (set both or neither)", EnvPrefix)
		return
	case c.TLSCertFile == "":
		add("TLS_CERT_FILE", "required because %sTLS_KEY_FILE is set (set both or neither)", EnvPrefix)
		return
	}
	_, err := readKeyPair(c.TLSCertFile, c.TLSKeyFile)
	pe, _ := err.(*pairError)
	if pe == nil {
		return
	}
	add(pe.variable, "%v", pe.err)
	if pe.variable == "TLS_CERT_FILE" {
		// The key file may be unreadable too; say so now rather than after the next start.
		if _, err := os.ReadFile(c.TLSKeyFile); err != nil {
			add("TLS_KEY_FILE", "cannot read %q: %v", c.TLSKeyFile, unwrapPath(err))
		}
	}
}

// fileStamp is what a cheap look at one file tells: which file it is (device and inode, so a
// moved symlink or a file renamed over the old one is seen), its size and modification time.
type fileStamp struct{ fi os.FileInfo }

func (a fileStamp) same(b fileStamp) bool {
	return a.fi != nil && b.fi != nil && os.SameFile(a.fi, b.fi) &&
		a.fi.Size() == b.fi.Size() && a.fi.ModTime().Equal(b.fi.ModTime())
}

// certReloader serves the pair of TLS_CERT_FILE and TLS_KEY_FILE to every TLS handshake and
// picks up new files without a restart. It has no goroutine: a handshake that finds the last
// look at the files older than every looks again (os.Stat follows symlinks, as certbot's live/
// directory uses), and loads the pair when either file changed. A pair that does not load
// (certbot writes the two files one after the other; an operator may copy the wrong key) is
// logged and the old one kept; the failed files' stamps are remembered, so the error is logged
// once per change rather than once per handshake, and the next change is tried again.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	every             time.Duration
	now               func() time.Time // injectable so tests can pass the gate without waiting

	cert      atomic.Pointer[tls.Certificate]
	nextCheck atomic.Int64 // unix nanoseconds; handshakes before it skip the files

	mu         sync.Mutex // one look at the files at a time
	certStamp  fileStamp  // the files as last loaded or last tried
	keyStamp   fileStamp
	everLoaded bool
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) *certReloader {
	return &certReloader{certFile: certFile, keyFile: keyFile, log: log, every: certCheckEvery, now: time.Now}
}

// load reads the pair for the first time; Serve refuses to start without it.
func (r *certReloader) load() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nextCheck.Store(r.now().Add(r.every).UnixNano())
	if err := r.reloadLocked(); err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	return nil
}

// getCertificate is tls.Config.GetCertificate.
func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.maybeReload()
	return r.cert.Load(), nil
}

// maybeReload looks at the files if the gate is open. A handshake that finds another one
// already looking does not wait for it: it serves the current pair.
func (r *certReloader) maybeReload() {
	now := r.now()
	if now.UnixNano() < r.nextCheck.Load() || !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	if now.UnixNano() < r.nextCheck.Load() { // another handshake looked meanwhile
		return
	}
	r.nextCheck.Store(now.Add(r.every).UnixNano())
	certStamp, keyStamp := r.stamps()
	if certStamp.same(r.certStamp) && keyStamp.same(r.keyStamp) {
		return
	}
	if err := r.reloadLocked(); err != nil {
		r.log.Error("tls: new certificate files do not load; still serving the previous certificate",
			"cert_file", r.certFile, "key_file", r.keyFile, "err", err)
	}
}

func (r *certReloader) stamps() (cert, key fileStamp) {
	// A file that cannot be stat'ed has a nil stamp, which is never the same as any other:
	// the load that follows reports why.
	cfi, _ := os.Stat(r.certFile)
	kfi, _ := os.Stat(r.keyFile)
	return fileStamp{cfi}, fileStamp{kfi}
}

// reloadLocked loads the pair and, if it is good, serves it from the next handshake on. The
// stamps are taken before reading, so a file replaced while it is read is seen as changed at
// the next look.
func (r *certReloader) reloadLocked() error {
	r.certStamp, r.keyStamp = r.stamps()
	cert, err := readKeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cert.Store(cert)
	attrs := []any{"cert_file", r.certFile, "subject", cert.Leaf.Subject.String(),
		"serial", cert.Leaf.SerialNumber.String(), "not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339)}
	switch {
	case r.now().After(cert.Leaf.NotAfter):
		r.log.Warn("tls: certificate loaded, but it has expired: clients will refuse it", attrs...)
	case r.everLoaded:
		r.log.Info("tls: certificate reloaded", attrs...)
	default:
		r.log.Info("tls: certificate loaded", attrs...)
	}
	r.everLoaded = true
	return nil
}

// tlsConfig is the public listener's TLS configuration. Versions below 1.2 are refused (RFC
// 9113 §9.2 requires 1.2 for HTTP/2, and browsers have dropped 1.0 and 1.1); cipher suites are
// Go's defaults, which are kept current with each release; no client certificate is asked for.
// ALPN offers h2 and http/1.1: pages may use HTTP/2, while a WebSocket needs a connection it can
// take over (http.Hijacker), which HTTP/2 streams are not. Browsers open WebSockets on an
// HTTP/1.1 connection of their own unless the server announces RFC 8441's extended CONNECT,
// which net/http's HTTP/2 server does not (see publicProtocols for the one setting that would).
func (r *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.getCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// publicProtocols returns the protocols the TLS listener offers: nil (net/http's default, h2
// and HTTP/1.1) unless godebug (the GODEBUG variable) has http2xconnect=1. That setting makes
// net/http's HTTP/2 server announce extended CONNECT, and browsers then send WebSockets as
// HTTP/2 streams, which coder/websocket cannot accept: every WebSocket would fail. HTTP/2 is
// turned off instead, so WebSockets work and pages use HTTP/1.1. The test is net/http's own
// (h2_bundle.go reads GODEBUG with strings.Contains at init).
func publicProtocols(godebug string, log *slog.Logger) *http.Protocols {
	if !strings.Contains(godebug, "http2xconnect=1") {
		return nil
	}
	log.Warn("tls: GODEBUG has http2xconnect=1, which would send browsers' WebSockets over HTTP/2 where wsbridge cannot accept them; serving HTTP/1.1 only")
	var p http.Protocols
	p.SetHTTP1(true)
	return &p
}

// handshakeErrorLog is the TLS listener's http.Server.ErrorLog. net/http reports every failed
// TLS handshake there ("http: TLS handshake error from ...": a scanner, an old client, a port
// check, a browser that does not trust the certificate); those are the client's to fix and come
// by the thousand on a public port, so they go to debug level, as nginx logs them at info.
// Everything else net/http reports stays a warning.
type handshakeErrorLog struct{ log *slog.Logger }

func (w handshakeErrorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	level := slog.LevelWarn
	if strings.HasPrefix(msg, "http: TLS handshake error") {
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, msg)
	return len(p), nil
}

// servePublic serves the public listener, over TLS when TLS_CERT_FILE is set.
func servePublic(srv *http.Server, l net.Listener) error {
	if srv.TLSConfig != nil {
		// Empty file names: the certificate comes from TLSConfig.GetCertificate. ServeTLS, not
		// Serve on a tls.Listener of our own, so that net/http fits ALPN to srv.Protocols: h2
		// is offered only while HTTP/2 is on.
		return srv.ServeTLS(l, "", "")
	}
	return srv.Serve(l)
}
