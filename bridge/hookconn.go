package bridge

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// hookConn is one keep-alive HTTP/1.1 connection to the webhook server. The connections live in
// the webhook slots, so there are at most WEBHOOK_CONCURRENCY of them, each carrying one request
// at a time, and a request runs on its caller's goroutine: write it, read the answer. net/http's
// Transport hands every request to two goroutines of its own and back; dropping those wake-ups
// (with the reader writing its own reply) cut the bridge's CPU per message by about a third
// (docs/benchmarks.md, webhook path).
//
// The connection is shared by every WebSocket connection, so an answer must never be read as
// another request's: a reply whose framing is in any doubt (hookreply.go) ends the connection,
// and before a request goes out on a kept-alive one, a check that costs no wait makes sure the
// server has sent nothing since its last answer.
type hookConn struct {
	addr  string   // host:port it is connected to
	url   *url.URL // the webhook URL it was dialled for, whose host:port is addr
	nc    net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	rr    replyReader
	probe *idleProbe // nil where the socket cannot be peeked at (hookpeek_*.go)
	tls   bool
	// tlsConfig, when set, is the base of an https connection's (tests trust their own CA).
	tlsConfig *tls.Config
	// mac signs the requests of this slot (sign); made at the first, then Reset for each.
	mac    hash.Hash
	macKey string
	sig    []byte
}

// sign is Sign(secret, t, body) with this slot's HMAC, which keeps the key's inner and outer
// states between requests: hmac.New per request hashed the key's two pad blocks again and
// allocated two digests, about a quarter of signing a message event (docs/benchmarks.md).
func (hc *hookConn) sign(secret []byte, t time.Time, body []byte) string {
	if hc.mac == nil || hc.macKey != string(secret) {
		hc.mac, hc.macKey = hmac.New(sha256.New, secret), string(secret)
	}
	hc.mac.Reset()
	var ts [20]byte
	tsb := strconv.AppendInt(ts[:0], t.Unix(), 10)
	hc.mac.Write(tsb)
	hc.mac.Write([]byte{'.'})
	hc.mac.Write(body)
	hc.sig = hc.mac.Sum(hc.sig[:0])
	var hexSig [2 * sha256.Size]byte
	hex.Encode(hexSig[:], hc.sig)
	var sb strings.Builder
	sb.Grow(len("t=,v1=") + len(tsb) + len(hexSig))
	sb.WriteString("t=")
	sb.Write(tsb)
	sb.WriteString(",v1=")
	sb.Write(hexSig[:])
	return sb.String()
}

// hookRequest is one webhook: a POST of body to url with header. It is written straight into
// the connection's buffer rather than through net/http's Request, which for every message would
// parse the URL again and canonicalise, map and sort the headers: 27 allocations per exchange,
// and a sixth of the bridge's CPU per message in the pinned webhook benchmark
// (docs/benchmarks.md, change 10).
type hookRequest struct {
	url    *url.URL
	header []headerField // sent in this order, after Host and before Content-Length
	body   []byte
}

// headerField is one request header. Values must not contain CR or LF: every value the bridge
// sends is its own or checked (validTraceparent).
type headerField struct{ name, value string }

// eventIDKey is HeaderEventID as http.Header keys it.
var eventIDKey = textproto.CanonicalMIMEHeaderKey(HeaderEventID)

// answered checks that resp answers r. HTTP/1.1 has no way to say which request an answer is
// for, so a server that answers out of turn (a stale answer sent once the next request has
// arrived) is caught only if it says: PHP may echo the WsBridge-Event-Id it received, and an
// answer naming another event is refused.
func (r *hookRequest) answered(resp *http.Response) error {
	got, ok := resp.Header[eventIDKey]
	if !ok {
		return nil
	}
	for _, f := range r.header {
		if f.name == HeaderEventID && (len(got) != 1 || got[0] != f.value) {
			return fmt.Errorf("webhook reply: %s names another event than %s", HeaderEventID, f.value)
		}
	}
	return nil
}

// writeTo writes r as HTTP/1.1 and flushes it to the socket.
func (r *hookRequest) writeTo(bw *bufio.Writer) error {
	bw.WriteString("POST ")
	bw.WriteString(r.url.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.url.Host)
	for _, f := range r.header {
		bw.WriteString("\r\n")
		bw.WriteString(f.name)
		bw.WriteString(": ")
		bw.WriteString(f.value)
	}
	bw.WriteString("\r\nContent-Length: ")
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(r.body)), 10))
	bw.WriteString("\r\n\r\n")
	bw.Write(r.body)
	return bw.Flush() // bufio's errors stick: the first failed write is reported here
}

// do sends req and reads the whole answer, keeping at most max+1 bytes of body (so the caller
// can tell "over the limit"). The connection is dialled when there is none (or it goes to
// another address, or is not idle) and kept for the next request unless the answer or an error
// ends it. An answer whose framing is in doubt is an error, never a response.
func (hc *hookConn) do(ctx context.Context, req *hookRequest, max int64) (*http.Response, []byte, error) {
	addr := hc.addr
	if req.url != hc.url || hc.nc == nil {
		addr = hostPort(req.url) // per dial, not per request: the URLs are the configuration's
	}
	for try := 0; ; try++ {
		reused := hc.nc != nil && hc.addr == addr
		if reused && !hc.idle() {
			// The server sent something while no request was out (a late second answer, a
			// 408 before closing) or closed the connection: a request written now would be
			// answered with those bytes, or fail. That is no failure of this request.
			reused = false
		}
		if !reused {
			hc.close()
			if err := hc.dial(ctx, req.url, addr); err != nil {
				return nil, nil, err
			}
		}
		resp, body, err := hc.exchange(ctx, req, max)
		if err == nil {
			err = req.answered(resp)
		}
		if err == nil {
			if resp.Close {
				hc.close() // the server ends it, or the rest of an oversize body is unread
			}
			return resp, body, nil
		}
		hc.close() // whatever was read, nothing more on it can be trusted
		// A kept-alive connection that the server closed while it was idle fails before any
		// answer. That says nothing about PHP: the request goes once more, on a new connection,
		// with the same event id (at least once, as every retry).
		if !reused || try > 0 || !staleConn(err) || ctx.Err() != nil {
			return nil, nil, err
		}
	}
}

func (hc *hookConn) exchange(ctx context.Context, req *hookRequest, max int64) (*http.Response, []byte, error) {
	defer boundByContext(ctx, hc.nc)()
	if err := req.writeTo(hc.bw); err != nil {
		return nil, nil, err
	}
	resp, body, _, err := hc.rr.read(max)
	return resp, body, err
}

// idle reports whether the kept-alive connection is as its last answer left it: nothing
// buffered, nothing waiting in the socket, not closed by the server. It costs one
// non-blocking peek at the socket per request, never a wait.
func (hc *hookConn) idle() bool {
	if hc.br.Buffered() > 0 || hc.probe != nil && !hc.probe.clean() {
		return false
	}
	return !hc.tls || hc.tlsIdle()
}

// tlsIdle looks for records crypto/tls read ahead of the last answer, which are in no buffer
// the peek sees. A read with a deadline already past decrypts what it holds and returns it,
// and otherwise fails at once without touching the socket (a timeout does not break a
// tls.Conn).
func (hc *hookConn) tlsIdle() bool {
	hc.nc.SetReadDeadline(time.Unix(1, 0))
	_, err := hc.br.Peek(1)
	hc.nc.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (hc *hookConn) dial(ctx context.Context, u *url.URL, addr string) error {
	d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	probe := newIdleProbe(nc) // the TCP socket, under TLS too: any record there is unasked for
	hc.tls = u.Scheme == "https"
	if hc.tls {
		cfg := &tls.Config{}
		if hc.tlsConfig != nil {
			cfg = hc.tlsConfig.Clone()
		}
		cfg.ServerName, cfg.NextProtos = u.Hostname(), []string{"http/1.1"}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return err
		}
		nc = tc
	}
	hc.addr, hc.url, hc.nc, hc.probe = addr, u, nc, probe
	if hc.br == nil {
		hc.br, hc.bw = bufio.NewReader(nc), bufio.NewWriter(nc)
	} else {
		hc.br.Reset(nc)
		hc.bw.Reset(nc)
	}
	hc.rr.br = hc.br
	return nil
}

func (hc *hookConn) close() {
	if hc.nc != nil {
		hc.nc.Close()
		hc.nc, hc.probe = nil, nil
	}
}

// staleConn: the error of a request on a connection the peer had already closed.
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// hostPort is u's host and port, the port from the scheme when the URL has none.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// boundByContext gives nc ctx's deadline, and makes cancelling ctx (shutdown giving up, the
// handshake deadline) cut a blocked read or write on it. The returned func undoes the
// cancellation hook; if the cut has begun, it waits for it, so that it cannot touch the
// connection's next use. Both webhook transports (HTTP, FastCGI) run each exchange under it.
func boundByContext(ctx context.Context, nc net.Conn) (release func()) {
	if d, ok := ctx.Deadline(); ok {
		nc.SetDeadline(d)
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		nc.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	return func() {
		if !stop() {
			<-fired
		}
	}
}
