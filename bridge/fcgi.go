package bridge

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// Direct FastCGI webhooks (docs/php.md): a webhook URL may name PHP-FPM itself,
//
//	fcgi://HOST:PORT/path/to/script.php
//	fcgi+unix:///run/php/php-fpm.sock?script=/path/to/script.php
//
// and the event goes to the script as a FastCGI request (fcgiconn.go) instead of an HTTP POST,
// through the same slots, retries, breaker, signature and limits.

const (
	schemeFCGI     = "fcgi"
	schemeFCGIUnix = "fcgi+unix"
)

// isFCGI reports whether u names PHP-FPM over FastCGI.
func isFCGI(u *url.URL) bool { return u.Scheme == schemeFCGI || u.Scheme == schemeFCGIUnix }

// fcgiTarget is a FastCGI webhook URL resolved once, at start: where to dial, and the params
// that do not change between events.
type fcgiTarget struct {
	network, addr string // "tcp" host:port, or "unix" socket path
	script        string // SCRIPT_FILENAME: an absolute, clean path on PHP-FPM's filesystem
	// params are the FastCGI params of every request to this target, encoded once
	// (CONTENT_LENGTH and the webhook headers are added per request).
	params []byte
}

// parseFCGIURL checks a FastCGI webhook URL and resolves it. Its errors say what to fix: the
// URL is an operator's, and php-fpm answers a wrong SCRIPT_FILENAME with a bare "File not
// found." that says nothing of why.
func parseFCGIURL(u *url.URL) (*fcgiTarget, error) {
	if u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("want %s://HOST:PORT/path/to/script.php or %s:///path/to.sock?script=/path/to/script.php, without user info or fragment, got %q", schemeFCGI, schemeFCGIUnix, u.Redacted())
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("query of %q: %w", u.Redacted(), err)
	}
	t := &fcgiTarget{}
	switch u.Scheme {
	case schemeFCGI:
		if len(q) > 0 {
			return nil, fmt.Errorf("%q: unknown query parameters %s (the script is the URL's path)", u.Redacted(), queryKeys(q))
		}
		host, port := u.Hostname(), u.Port()
		if host == "" || port == "" {
			return nil, fmt.Errorf("%q: want fcgi://HOST:PORT/path/to/script.php, with host and port (php-fpm's listen)", u.Redacted())
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%q: bad port %q", u.Redacted(), port)
		}
		t.network, t.addr, t.script = "tcp", net.JoinHostPort(host, port), u.Path
		if t.script == "" || t.script == "/" {
			return nil, fmt.Errorf("%q: no script: the URL's path is the SCRIPT_FILENAME, e.g. fcgi://127.0.0.1:9000/srv/app/ws-webhook.php", u.Redacted())
		}
	case schemeFCGIUnix:
		if u.Host != "" {
			return nil, fmt.Errorf("%q: want fcgi+unix:///path/to/php-fpm.sock?script=/path/to/script.php (three slashes: no host)", u.Redacted())
		}
		for k := range q {
			if k != "script" {
				return nil, fmt.Errorf("%q: unknown query parameters %s (only script is known)", u.Redacted(), queryKeys(q))
			}
		}
		if len(q["script"]) != 1 || q["script"][0] == "" {
			return nil, fmt.Errorf("%q: want exactly one script=/path/to/script.php (the SCRIPT_FILENAME)", u.Redacted())
		}
		t.network, t.addr, t.script = "unix", u.Path, q["script"][0]
		if err := checkFCGIPath(t.addr); err != nil {
			return nil, fmt.Errorf("%q: socket path: %w", u.Redacted(), err)
		}
	default:
		return nil, fmt.Errorf("%q is no FastCGI URL", u.Redacted())
	}
	if err := checkFCGIPath(t.script); err != nil {
		return nil, fmt.Errorf("%q: script: %w", u.Redacted(), err)
	}
	t.params = t.fixedParams()
	return t, nil
}

// checkFCGIPath refuses what php-fpm would resolve otherwise than it reads: a relative path
// (against php-fpm's own working directory, chdir), dot segments, and the bytes that end or
// split a C string or a param.
func checkFCGIPath(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("%q is a relative path; give it absolute, as php-fpm sees it", p)
	case strings.ContainsAny(p, "\x00\r\n"):
		return fmt.Errorf("%q holds a NUL, CR or LF", p)
	case path.Clean(p) != p:
		return fmt.Errorf("%q is not clean (want %q)", p, path.Clean(p))
	case len(p) > 4096:
		return fmt.Errorf("longer than 4096 bytes (PATH_MAX)")
	}
	return nil
}

func queryKeys(q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, strconv.Quote(k))
	}
	return strings.Join(keys, ", ")
}

// fixedParams encodes the CGI/1.1 meta-variables (RFC 3875 §4.1) that are the same for every
// event: what PHP-FPM needs to run the script, and what PHP code reads in $_SERVER to learn
// how it was called. The addresses (REMOTE_*, SERVER_ADDR, SERVER_PORT) are the connection's
// and are added when it is dialled (fcgiConn.dial).
func (t *fcgiTarget) fixedParams() []byte {
	name := "/" + path.Base(t.script)
	var b []byte
	for _, kv := range [...][2]string{
		{"GATEWAY_INTERFACE", "CGI/1.1"},
		{"SERVER_SOFTWARE", "wsbridge"},
		{"SERVER_PROTOCOL", "HTTP/1.1"},
		{"SERVER_NAME", "wsbridge"},
		{"REQUEST_METHOD", "POST"},
		{"SCRIPT_FILENAME", t.script},
		{"SCRIPT_NAME", name},
		{"DOCUMENT_ROOT", path.Dir(t.script)},
		{"DOCUMENT_URI", name},
		{"REQUEST_URI", name},
		{"QUERY_STRING", ""},
		{"CONTENT_TYPE", "application/json"},
	} {
		b = appendFCGIPair(b, kv[0], kv[1])
	}
	return b
}

// fcgiTargets holds the resolved FastCGI URL of each event type, nil where the type's webhook
// goes over HTTP.
type fcgiTargets struct{ open, message, close *fcgiTarget }

// newFCGITargets resolves cfg's FastCGI webhook URLs; LoadConfig has checked them.
func newFCGITargets(cfg *WebhookConfig) (ts fcgiTargets) {
	resolve := func(t EventType) *fcgiTarget {
		u := cfg.webhookURL(t)
		if u == nil || !isFCGI(u) {
			return nil
		}
		target, err := parseFCGIURL(u)
		if err != nil {
			panic("bridge: FastCGI webhook URL not checked by LoadConfig: " + err.Error())
		}
		return target
	}
	return fcgiTargets{open: resolve(EventOpen), message: resolve(EventMessage), close: resolve(EventClose)}
}

// of returns the FastCGI target of events of type t, or nil for HTTP.
func (ts *fcgiTargets) of(t EventType) *fcgiTarget {
	switch t {
	case EventOpen:
		return ts.open
	case EventMessage:
		return ts.message
	case EventClose:
		return ts.close
	}
	return nil
}

// checkWebhookURL checks one of the WEBHOOK_*URL variables: http(s), or FastCGI.
func checkWebhookURL(u *url.URL) error {
	if isFCGI(u) {
		_, err := parseFCGIURL(u)
		return err
	}
	if err := checkHTTPURL(u); err != nil {
		return errors.New(err.Error() + ", or a FastCGI URL (fcgi://HOST:PORT/script.php, fcgi+unix:///path.sock?script=/script.php)")
	}
	return nil
}

// dialAddr is where the reachability check dials for u: its TCP address, or a FastCGI unix
// socket.
func dialAddr(u *url.URL) (network, addr string) {
	if isFCGI(u) {
		if t, err := parseFCGIURL(u); err == nil {
			return t.network, t.addr
		}
	}
	return "tcp", hostPort(u)
}
