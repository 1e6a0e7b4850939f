package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// A FastCGI client for PHP-FPM (FastCGI Specification 1.0; Go's net/http/fcgi is the server
// side of the same records). It is the FastCGI twin of hookConn: one kept-alive connection per
// webhook slot (FCGI_KEEP_CONN), one request at a time on it, run on the caller's goroutine,
// and the same rule: the answer read for one event must be that event's answer, so anything
// the client did not expect ends the connection and the attempt fails like an HTTP one
// (errBackend: retried, counted by the breaker).
//
// Each request on a connection gets the next request id, so a record left over from an earlier
// request (a late second answer, stdout after its end) names an id other than the one being
// answered and is refused, rather than read as this event's reply.

// Record types and constants of the FastCGI specification, §8.
const (
	fcgiVersion1     = 1
	fcgiBeginRequest = 1
	fcgiEndRequest   = 3
	fcgiParams       = 4
	fcgiStdin        = 5
	fcgiStdout       = 6
	fcgiStderr       = 7
	fcgiResponder    = 1
	fcgiKeepConn     = 1
	fcgiHeaderLen    = 8
	fcgiMaxContent   = 65535
	fcgiRequestDone  = 0 // FCGI_REQUEST_COMPLETE
	// fcgiStderrLogBytes bounds what one request's stderr puts in the log; the rest is
	// counted.
	fcgiStderrLogBytes = 4096
)

var fcgiProtocolStatus = [...]string{"request complete", "cannot multiplex", "overloaded", "unknown role"}

// fcgiConn is one kept-alive FastCGI connection of a webhook slot. Its buffers are kept
// between requests: a request allocates only the reply it returns.
type fcgiConn struct {
	target *fcgiTarget // what it was dialled for: its network and address
	nc     net.Conn
	br     *bufio.Reader
	probe  *idleProbe
	id     uint16 // the request id of the last request
	// conParams are the params that depend on the connection (REMOTE_*, SERVER_ADDR/PORT).
	conParams []byte
	wbuf      []byte // the request's records
	out       []byte // the answer's stdout
	stderr    []byte // the first fcgiStderrLogBytes of its stderr
	dropped   int    // stderr bytes past those
	head      [fcgiHeaderLen]byte
	rr        replyReader // reads the CGI head in out
	outR      bytes.Reader
	outBR     *bufio.Reader
}

// errFCGI marks answers that break the FastCGI protocol; the connection is closed.
var errFCGI = errors.New("FastCGI protocol error")

// do sends req to t and reads the whole answer, as hookConn.do does over HTTP: at most max+1
// bytes of body are kept, a connection that is not idle is replaced, and a kept-alive
// connection that PHP-FPM closed while it was idle (a child recycled by pm.max_requests, an
// idle child ended) costs one more try on a new one.
func (c *fcgiConn) do(ctx context.Context, t *fcgiTarget, req *hookRequest, max int64, log *slog.Logger) (*http.Response, []byte, error) {
	for try := 0; ; try++ {
		// A connection is to a socket, not to a script: the event types' URLs may name
		// different scripts of one pool.
		reused := c.nc != nil && c.target.network == t.network && c.target.addr == t.addr
		if reused && (c.br.Buffered() > 0 || c.probe != nil && !c.probe.clean()) {
			reused = false // PHP-FPM sent something unasked, or closed it
		}
		if !reused {
			c.close()
			if err := c.dial(ctx, t); err != nil {
				return nil, nil, err
			}
		}
		resp, body, answered, err := c.exchange(ctx, t, req, max)
		c.logStderr(log, t, req)
		if err == nil {
			err = req.answered(resp)
		}
		if err == nil {
			if resp.Close {
				c.close()
			}
			return resp, body, nil
		}
		c.close()
		if !reused || try > 0 || answered || !staleConn(err) || ctx.Err() != nil {
			return nil, nil, err
		}
	}
}

func (c *fcgiConn) dial(ctx context.Context, t *fcgiTarget) error {
	d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, t.network, t.addr)
	if err != nil {
		return err
	}
	c.target, c.nc, c.probe = t, nc, newIdleProbe(nc)
	if c.br == nil {
		c.br = bufio.NewReaderSize(nc, 16<<10)
	} else {
		c.br.Reset(nc)
	}
	// The bridge is PHP's client here: REMOTE_* is its end of the connection, SERVER_* PHP-FPM's.
	// Over a unix socket both are on this host.
	remoteAddr, remotePort, serverAddr, serverPort := "127.0.0.1", "0", "127.0.0.1", "0"
	if t.network == "tcp" {
		remoteAddr, remotePort, _ = net.SplitHostPort(nc.LocalAddr().String())
		serverAddr, serverPort, _ = net.SplitHostPort(nc.RemoteAddr().String())
	}
	c.conParams = appendFCGIPair(c.conParams[:0], "REMOTE_ADDR", remoteAddr)
	c.conParams = appendFCGIPair(c.conParams, "REMOTE_PORT", remotePort)
	c.conParams = appendFCGIPair(c.conParams, "SERVER_ADDR", serverAddr)
	c.conParams = appendFCGIPair(c.conParams, "SERVER_PORT", serverPort)
	return nil
}

func (c *fcgiConn) close() {
	if c.nc != nil {
		c.nc.Close()
		c.nc, c.probe, c.target = nil, nil, nil
	}
}

// exchange writes one request and reads its answer. answered reports whether any record of
// the answer arrived: an EOF after that is PHP-FPM failing this request, not a stale
// connection.
func (c *fcgiConn) exchange(ctx context.Context, t *fcgiTarget, req *hookRequest, max int64) (resp *http.Response, body []byte, answered bool, err error) {
	defer boundByContext(ctx, c.nc)()
	if c.id++; c.id == 0 {
		c.id = 1 // 0 is the management records' id
	}
	if c.wbuf, err = appendFCGIRequest(c.wbuf[:0], c.id, t.params, c.conParams, req); err != nil {
		return nil, nil, false, err
	}
	if _, err := c.nc.Write(c.wbuf); err != nil {
		return nil, nil, false, err
	}
	c.stderr, c.dropped = c.stderr[:0], 0
	full, answered, err := c.readAnswer(maxReplyHeadBytes + max + 1)
	if err != nil {
		return nil, nil, answered, err
	}
	resp, body, err = c.parseStdout(max)
	if err != nil {
		return nil, nil, true, err
	}
	resp.Close = full
	return resp, body, true, nil
}

// readAnswer reads the records of the current request up to its FCGI_END_REQUEST, keeping at
// most limit bytes of stdout; full reports that it stopped there (the rest is unread, and the
// connection must go).
func (c *fcgiConn) readAnswer(limit int64) (full, answered bool, err error) {
	c.out = c.out[:0]
	stdoutDone := false
	for {
		typ, n, pad, err := c.readHeader()
		if err != nil {
			return false, answered, err
		}
		answered = true
		switch typ {
		case fcgiStdout:
			if stdoutDone {
				return false, true, fmt.Errorf("%w: stdout after the end of the stdout stream", errFCGI)
			}
			if n == 0 {
				stdoutDone = true
				break
			}
			if int64(len(c.out)+n) > limit {
				keep := int(limit) - len(c.out)
				c.out = slices.Grow(c.out, keep)[:len(c.out)+keep]
				if _, err := io.ReadFull(c.br, c.out[len(c.out)-keep:]); err != nil {
					return false, true, fmt.Errorf("%w: reading stdout: %w", errFCGI, err)
				}
				return true, true, nil
			}
			c.out = slices.Grow(c.out, n)[:len(c.out)+n]
			if _, err := io.ReadFull(c.br, c.out[len(c.out)-n:]); err != nil {
				return false, true, fmt.Errorf("%w: reading stdout: %w", errFCGI, err)
			}
		case fcgiStderr:
			keep := min(n, fcgiStderrLogBytes-len(c.stderr))
			c.stderr = slices.Grow(c.stderr, keep)[:len(c.stderr)+keep]
			if _, err := io.ReadFull(c.br, c.stderr[len(c.stderr)-keep:]); err != nil {
				return false, true, fmt.Errorf("%w: reading stderr: %w", errFCGI, err)
			}
			if err := c.discard(n - keep); err != nil {
				return false, true, err
			}
			c.dropped += n - keep
		case fcgiEndRequest:
			if n != 8 {
				return false, true, fmt.Errorf("%w: end-request body of %d bytes, want 8", errFCGI, n)
			}
			if _, err := io.ReadFull(c.br, c.head[:]); err != nil {
				return false, true, fmt.Errorf("%w: reading end-request: %w", errFCGI, err)
			}
			if err := c.discard(pad); err != nil {
				return false, true, err
			}
			if st := c.head[4]; st != fcgiRequestDone {
				what := "unknown status " + strconv.Itoa(int(st))
				if int(st) < len(fcgiProtocolStatus) {
					what = fcgiProtocolStatus[st]
				}
				return false, true, fmt.Errorf("%w: PHP-FPM ended the request: %s", errFCGI, what)
			}
			// Anything already here is no answer to anything asked: a second response, or
			// stdout after the end. The idle probe catches what arrives later.
			if n := c.br.Buffered(); n > 0 {
				return false, true, fmt.Errorf("%w: %d bytes after the end of the request", errFCGI, n)
			}
			return false, true, nil
		default:
			return false, true, fmt.Errorf("%w: unexpected record type %d", errFCGI, typ)
		}
		if err := c.discard(pad); err != nil {
			return false, true, err
		}
	}
}

// readHeader reads one record header and checks it belongs to the current request.
func (c *fcgiConn) readHeader() (typ byte, n, pad int, err error) {
	if _, err := io.ReadFull(c.br, c.head[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, 0, 0, fmt.Errorf("%w: short record header: %w", errFCGI, err)
		}
		return 0, 0, 0, err // io.EOF before any byte: PHP-FPM closed the connection
	}
	h := c.head
	if h[0] != fcgiVersion1 {
		return 0, 0, 0, fmt.Errorf("%w: record version %d", errFCGI, h[0])
	}
	if id := binary.BigEndian.Uint16(h[2:4]); id != c.id {
		return 0, 0, 0, fmt.Errorf("%w: record for request %d while %d is out", errFCGI, id, c.id)
	}
	return h[1], int(binary.BigEndian.Uint16(h[4:6])), int(h[6]), nil
}

func (c *fcgiConn) discard(n int) error {
	if _, err := c.br.Discard(n); err != nil {
		return fmt.Errorf("%w: record cut short: %w", errFCGI, err)
	}
	return nil
}

// parseStdout reads the CGI response in c.out (RFC 3875 §6): header fields, the empty line,
// the body. The fields are read with the HTTP reply's strict rules and bounds (hookreply.go);
// Status gives the status code, 200 without it.
func (c *fcgiConn) parseStdout(max int64) (*http.Response, []byte, error) {
	c.outR.Reset(c.out)
	if c.outBR == nil {
		c.outBR = bufio.NewReaderSize(&c.outR, 4096)
	} else {
		c.outBR.Reset(&c.outR)
	}
	c.rr.br, c.rr.budget, c.rr.buf = c.outBR, maxReplyHeadBytes, c.rr.buf[:0]
	fields, err := c.rr.fields()
	if err != nil {
		// %v: an EOF here is a truncated response, not a closed connection.
		return nil, nil, fmt.Errorf("%w: CGI response head: %v", errFCGI, err)
	}
	h := c.rr.header(fields)
	code := http.StatusOK
	if vs, ok := h["Status"]; ok {
		if code, err = parseCGIStatus(vs); err != nil {
			return nil, nil, err
		}
		delete(h, "Status")
	} else if _, ok := h["Location"]; ok {
		code = http.StatusFound // RFC 3875 §6.2.4: a client redirect
	}
	if _, ok := h["Transfer-Encoding"]; ok {
		return nil, nil, fmt.Errorf("%w: Transfer-Encoding in a CGI response", errFCGI)
	}
	rest := c.outBR.Buffered() + c.outR.Len()
	body := c.out[len(c.out)-rest:]
	if int64(len(body)) > max {
		return &http.Response{StatusCode: code, ProtoMajor: 1, ProtoMinor: 1, Header: h}, slices.Clone(body[:max+1]), nil
	}
	if cl, ok, err := contentLength(h["Content-Length"]); err != nil {
		return nil, nil, err
	} else if ok && cl != int64(len(body)) {
		return nil, nil, fmt.Errorf("%w: Content-Length %d but a body of %d bytes", errFCGI, cl, len(body))
	}
	return &http.Response{StatusCode: code, ProtoMajor: 1, ProtoMinor: 1, Header: h}, slices.Clone(body), nil
}

// parseCGIStatus parses a Status field: "NNN reason", the reason optional.
func parseCGIStatus(vs []string) (int, error) {
	if len(vs) != 1 {
		return 0, fmt.Errorf("%w: %d Status fields", errFCGI, len(vs))
	}
	v := vs[0]
	if len(v) < 3 || len(v) > 3 && v[3] != ' ' {
		return 0, fmt.Errorf("%w: bad Status %q", errFCGI, v)
	}
	code := 0
	for _, ch := range []byte(v[:3]) {
		if ch < '0' || ch > '9' {
			return 0, fmt.Errorf("%w: bad Status %q", errFCGI, v)
		}
		code = code*10 + int(ch-'0')
	}
	if code < 200 || code > 599 {
		return 0, fmt.Errorf("%w: Status %d", errFCGI, code)
	}
	return code, nil
}

func (c *fcgiConn) logStderr(log *slog.Logger, t *fcgiTarget, req *hookRequest) {
	if len(c.stderr) == 0 || log == nil {
		return
	}
	ev := ""
	for _, f := range req.header {
		if f.name == HeaderEvent {
			ev = f.value
		}
	}
	log.Warn("PHP wrote to FastCGI stderr", "event", ev, "script", t.script,
		"stderr", string(c.stderr), "stderr_dropped_bytes", c.dropped)
}

// appendFCGIRequest appends the records of one request with id: BEGIN_REQUEST (responder,
// keep the connection), the params (fixed, the connection's, CONTENT_LENGTH and each header as
// HTTP_*) and the body as stdin, each stream ended by an empty record.
func appendFCGIRequest(b []byte, id uint16, fixed, conParams []byte, req *hookRequest) ([]byte, error) {
	b = appendFCGIHeader(b, fcgiBeginRequest, id, 8)
	b = append(b, 0, fcgiResponder, fcgiKeepConn, 0, 0, 0, 0, 0)
	// PHP-FPM reads name-value pairs record by record (a pair must not span two), so the
	// params go in one record; what a webhook sends is a few hundred bytes.
	start := len(b)
	b = appendFCGIHeader(b, fcgiParams, id, 0)
	b = append(b, fixed...)
	b = append(b, conParams...)
	var num [20]byte
	b = appendFCGIPair(b, "CONTENT_LENGTH", string(strconv.AppendInt(num[:0], int64(len(req.body)), 10)))
	for _, f := range req.header {
		if f.name == "Content-Type" {
			continue // CONTENT_TYPE, a fixed param
		}
		b = appendFCGIHeaderPair(b, f.name, f.value)
	}
	n := len(b) - start - fcgiHeaderLen
	if n > fcgiMaxContent {
		return b, fmt.Errorf("FastCGI params of %d bytes exceed one record", n)
	}
	binary.BigEndian.PutUint16(b[start+4:], uint16(n))
	b = appendFCGIHeader(b, fcgiParams, id, 0)
	for body := req.body; len(body) > 0; {
		k := min(len(body), fcgiMaxContent)
		b = appendFCGIHeader(b, fcgiStdin, id, k)
		b = append(b, body[:k]...)
		body = body[k:]
	}
	return appendFCGIHeader(b, fcgiStdin, id, 0), nil
}

func appendFCGIHeader(b []byte, typ byte, id uint16, n int) []byte {
	return append(b, fcgiVersion1, typ, byte(id>>8), byte(id), byte(n>>8), byte(n), 0, 0)
}

// appendFCGILen appends a name-value pair length: one byte below 128, else four with the high
// bit set (§3.4).
func appendFCGILen(b []byte, n int) []byte {
	if n < 128 {
		return append(b, byte(n))
	}
	return append(b, byte(n>>24)|0x80, byte(n>>16), byte(n>>8), byte(n))
}

func appendFCGIPair(b []byte, name, value string) []byte {
	b = appendFCGILen(b, len(name))
	b = appendFCGILen(b, len(value))
	return append(append(b, name...), value...)
}

// appendFCGIHeaderPair appends a request header as CGI does (RFC 3875 §4.1.18): HTTP_, then
// the name upper-cased with '-' as '_'. The header names are the bridge's own.
func appendFCGIHeaderPair(b []byte, name, value string) []byte {
	b = appendFCGILen(b, len("HTTP_")+len(name))
	b = appendFCGILen(b, len(value))
	b = append(b, "HTTP_"...)
	for i := 0; i < len(name); i++ {
		ch := name[i]
		switch {
		case 'a' <= ch && ch <= 'z':
			ch -= 'a' - 'A'
		case ch == '-':
			ch = '_'
		}
		b = append(b, ch)
	}
	return append(b, value...)
}
