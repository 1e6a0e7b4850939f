package bridge

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// A strict HTTP/1.1 response reader for the webhook slots (RFC 9112). It replaces
// http.ReadResponse because a slot connection is shared by every WebSocket connection: the
// answer read for one event must be that event's answer and nothing else, so any doubt about
// where a response ends is an error and the connection is dropped. http.ReadResponse reads
// unbounded headers, takes a 1xx for the final answer and leaves whatever follows a response
// in the buffer for the next request; it also costs more allocations per reply than this.
//
// The field-line parsing is written to be the base of a FastCGI client's CGI header reader too.

// Bounds on one reply. A webhook reply is small JSON with a handful of headers; the bounds are
// far above anything PHP, nginx or php -S send, and far below what could hurt the process.
const (
	// maxReplyHeadBytes bounds the status lines and header fields of a reply, its 1xx
	// responses and trailers included (net/http's server allows requests 1 MiB; a reply to a
	// webhook needs much less, and a slot's buffer must not grow to a 48 MiB header line).
	maxReplyHeadBytes = 64 << 10
	// maxReplyHeaderFields bounds the field lines of one response head (or of the trailers).
	maxReplyHeaderFields = 100
	// maxInformational is how many 1xx responses may precede the final one, as in net/http's
	// Transport (max1xxResponses).
	maxInformational = 5
	// maxChunkLine bounds a chunk-size line with its extensions.
	maxChunkLine = 4096
)

// replyReader reads responses from one connection's buffer. buf holds the current head's field
// lines and is kept between replies, so a reply allocates only what it returns.
type replyReader struct {
	br     *bufio.Reader
	budget int // head bytes left for the reply being read
	buf    []byte
}

var (
	errReplyHeadTooBig    = fmt.Errorf("webhook reply headers exceed %d bytes", maxReplyHeadBytes)
	errReplyTooManyFields = fmt.Errorf("webhook reply has more than %d header fields", maxReplyHeaderFields)
)

// read reads one whole reply to a POST: any 1xx responses, which are skipped, then the final
// response and its body, of which at most max+1 bytes are kept (so the caller can tell "over
// the limit"). reusable is false when the connection must not carry another request: the
// server said Connection: close, the body was not read to its end, or its end is the
// connection's. An error means no answer can be trusted and the connection must be closed.
func (rr *replyReader) read(max int64) (resp *http.Response, body []byte, reusable bool, err error) {
	rr.budget = maxReplyHeadBytes
	for informational := 0; ; informational++ {
		minor, code, fields, err := rr.head()
		if err != nil {
			return nil, nil, false, err
		}
		switch {
		case code == http.StatusSwitchingProtocols:
			// Nothing was asked to upgrade: what follows is no longer HTTP.
			return nil, nil, false, errors.New("webhook reply: 101 Switching Protocols to a POST")
		case code < 200:
			// 100 Continue, 103 Early Hints and the like come before the answer (RFC 9110
			// §15.2); they have no body.
			if informational == maxInformational {
				return nil, nil, false, fmt.Errorf("webhook reply: more than %d 1xx responses", maxInformational)
			}
			continue
		}
		resp = &http.Response{StatusCode: code, ProtoMajor: 1, ProtoMinor: minor, Header: rr.header(fields)}
		body, reusable, err = rr.body(resp, max)
		if err != nil {
			return nil, nil, false, err
		}
		resp.Close = !reusable
		return resp, body, reusable, nil
	}
}

// head reads a status line and the field lines after it into rr.buf, each line ending in '\n'.
func (rr *replyReader) head() (minor, code, fields int, err error) {
	rr.buf = rr.buf[:0]
	line, err := rr.line(&rr.budget, "status line")
	if err != nil {
		return 0, 0, 0, err
	}
	if minor, code, err = parseStatusLine(line); err != nil {
		return 0, 0, 0, err
	}
	rr.buf = rr.buf[:0]
	if fields, err = rr.fields(); err != nil {
		return 0, 0, 0, err
	}
	return minor, code, fields, nil
}

// fields reads field lines up to the empty line that ends them, keeping them in rr.buf.
func (rr *replyReader) fields() (int, error) {
	fields := 0
	for {
		start := len(rr.buf)
		line, err := rr.line(&rr.budget, "header")
		if err != nil {
			return 0, err
		}
		if len(line) == 0 {
			rr.buf = rr.buf[:start]
			return fields, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			// obs-fold: RFC 9112 §5.2 has a user agent replace it with a space; a fold before
			// the first field would continue the status line, which is invalid (§2.2).
			if fields == 0 {
				return 0, errors.New("webhook reply: whitespace before the first header field")
			}
		} else {
			if err := checkFieldLine(line); err != nil {
				return 0, err
			}
			if fields++; fields > maxReplyHeaderFields {
				return 0, errReplyTooManyFields
			}
		}
		rr.buf = append(rr.buf[:start+len(line)], '\n')
	}
}

// line reads one line, without its CRLF (a bare LF is accepted, RFC 9112 §2.2), onto rr.buf
// and returns it. A line longer than budget is refused when the budget is spent, not after
// reading it whole.
func (rr *replyReader) line(budget *int, what string) ([]byte, error) {
	start := len(rr.buf)
	for {
		frag, err := rr.br.ReadSlice('\n')
		if len(frag) > *budget {
			if budget == &rr.budget {
				return nil, errReplyHeadTooBig
			}
			return nil, fmt.Errorf("webhook reply: %s longer than %d bytes", what, maxChunkLine)
		}
		*budget -= len(frag)
		rr.buf = append(rr.buf, frag...)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			// EOF stays visible: on a kept-alive connection it means the server had closed it.
			return nil, fmt.Errorf("webhook reply: reading %s: %w", what, err)
		}
	}
	line := rr.buf[start : len(rr.buf)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	// A CR that ends no line, or a NUL, is how responses get split differently by different
	// parsers (RFC 9110 §5.5 has a recipient reject them or replace them).
	if bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, 0) >= 0 {
		return nil, fmt.Errorf("webhook reply: CR or NUL inside a %s", what)
	}
	return line, nil
}

// parseStatusLine parses "HTTP/1.x NNN reason" (the reason may be empty or missing).
func parseStatusLine(line []byte) (minor, code int, err error) {
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[7] < '0' || line[7] > '1' || line[8] != ' ' ||
		(len(line) > 12 && line[12] != ' ') {
		return 0, 0, fmt.Errorf("webhook reply: bad status line (%d bytes; want HTTP/1.x and a status code)", len(line))
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, 0, errors.New("webhook reply: status code is not 3 digits")
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 || code > 599 {
		return 0, 0, fmt.Errorf("webhook reply: status code %d", code)
	}
	return int(line[7] - '0'), code, nil
}

// checkFieldLine checks "name: value": the name a token right before the colon (RFC 9112 §5.1
// forbids whitespace there, a known way to smuggle a second Content-Length).
func checkFieldLine(line []byte) error {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return errors.New("webhook reply: header line without a name and a colon")
	}
	for _, c := range line[:colon] {
		if !isTokenByte(c) {
			return fmt.Errorf("webhook reply: header name with %q", c)
		}
	}
	return nil
}

// isTokenByte: RFC 9110 §5.6.2 tchar.
func isTokenByte(c byte) bool { return tokenBytes[c] }

var tokenBytes = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", byte(c)) >= 0
	}
	return t
}()

// header builds the http.Header of the field lines in rr.buf: one string for all of them, the
// names canonical (no copy when they already are) and the values slices of that string.
func (rr *replyReader) header(fields int) http.Header {
	h := make(http.Header, fields)
	if fields == 0 {
		return h
	}
	s := string(rr.buf)
	values := make([]string, fields)
	var last string // the name of the previous field, for obs-fold
	for len(s) > 0 {
		i := strings.IndexByte(s, '\n')
		line := s[:i]
		s = s[i+1:]
		if line[0] == ' ' || line[0] == '\t' {
			vs := h[last]
			vs[len(vs)-1] = trimOWS(vs[len(vs)-1] + " " + trimOWS(line))
			continue
		}
		colon := strings.IndexByte(line, ':')
		last = textproto.CanonicalMIMEHeaderKey(line[:colon])
		v := trimOWS(line[colon+1:])
		if vs, ok := h[last]; ok {
			h[last] = append(vs, v)
		} else {
			values[0] = v
			h[last], values = values[:1:1], values[1:]
		}
	}
	return h
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// body reads resp's body as RFC 9112 §6.3 frames it for a response to a POST, and checks that
// nothing follows it in the buffer: bytes there are no answer to anything the bridge asked,
// and would be read as the answer to the next event.
func (rr *replyReader) body(resp *http.Response, max int64) (body []byte, reusable bool, err error) {
	h := resp.Header
	reusable = resp.ProtoMinor == 1 && !hasToken(h["Connection"], "close")
	cl, hasCL, err := contentLength(h["Content-Length"])
	if err != nil {
		return nil, false, err
	}
	te := h["Transfer-Encoding"]
	switch {
	case resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified:
		// No body, whatever the fields say (a 304's Content-Length is the resource's).
		if n := rr.br.Buffered(); n > 0 {
			return nil, false, fmt.Errorf("webhook reply: %d bytes after a %d response", n, resp.StatusCode)
		}
		return nil, reusable, nil
	case te != nil:
		if resp.ProtoMinor == 0 {
			return nil, false, errors.New("webhook reply: Transfer-Encoding in an HTTP/1.0 response")
		}
		if hasCL {
			// RFC 9112 §6.3: a sign of smuggling, to be handled as an error.
			return nil, false, errors.New("webhook reply: both Transfer-Encoding and Content-Length")
		}
		if len(te) != 1 || !asciiEqualFold(te[0], "chunked") {
			// Nothing but chunked is asked for (no TE header is sent).
			return nil, false, errors.New("webhook reply: Transfer-Encoding other than chunked")
		}
		var complete bool
		body, complete, err = rr.chunked(max)
		if err != nil || !complete {
			return body, false, err
		}
	case hasCL:
		if cl > max {
			body = make([]byte, max+1)
			if _, err := io.ReadFull(rr.br, body); err != nil {
				return nil, false, fmt.Errorf("webhook reply: reading body: %w", err)
			}
			return body, false, nil // the rest is not read: the connection goes
		}
		body = make([]byte, cl)
		if _, err := io.ReadFull(rr.br, body); err != nil {
			return nil, false, fmt.Errorf("webhook reply: reading body: %w", err)
		}
	default:
		// No framing: the body ends with the connection (RFC 9112 §6.3 rule 8).
		body, err = io.ReadAll(io.LimitReader(rr.br, max+1))
		if err != nil {
			return nil, false, fmt.Errorf("webhook reply: reading body to the end of the connection: %w", err)
		}
		return body, false, nil
	}
	if n := rr.br.Buffered(); n > 0 {
		return nil, false, fmt.Errorf("webhook reply: %d bytes after the response", n)
	}
	return body, reusable, nil
}

// contentLength parses the Content-Length values: repeated fields or a list are allowed only
// when every value is the same (RFC 9110 §8.6).
func contentLength(vs []string) (n int64, ok bool, err error) {
	if len(vs) == 0 {
		return 0, false, nil
	}
	n = -1
	for item := range listItems(vs) {
		m, err := strconv.ParseUint(item, 10, 63)
		if err != nil || item[0] == '+' {
			return 0, false, errors.New("webhook reply: bad Content-Length")
		}
		if n >= 0 && int64(m) != n {
			return 0, false, errors.New("webhook reply: conflicting Content-Length values")
		}
		n = int64(m)
	}
	if n < 0 {
		return 0, false, errors.New("webhook reply: empty Content-Length")
	}
	return n, true, nil
}

// chunked reads a chunked body (RFC 9112 §7.1), keeping at most max+1 bytes; complete is false
// when it stopped there.
func (rr *replyReader) chunked(max int64) (body []byte, complete bool, err error) {
	for {
		budget := maxChunkLine
		rr.buf = rr.buf[:0]
		line, err := rr.line(&budget, "chunk-size line")
		if err != nil {
			return nil, false, err
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return nil, false, err
		}
		if size == 0 {
			break
		}
		n := int64(len(body))
		if size > max+1-n {
			// Over the limit: keep max+1 bytes and leave the rest unread.
			body = append(body, make([]byte, max+1-n)...)
			if _, err := io.ReadFull(rr.br, body[n:]); err != nil {
				return nil, false, fmt.Errorf("webhook reply: reading chunk: %w", err)
			}
			return body, false, nil
		}
		body = append(body, make([]byte, size)...)
		if _, err := io.ReadFull(rr.br, body[n:]); err != nil {
			return nil, false, fmt.Errorf("webhook reply: reading chunk: %w", err)
		}
		crlf, err := rr.br.Peek(2)
		if err != nil || crlf[0] != '\r' || crlf[1] != '\n' {
			return nil, false, errors.New("webhook reply: chunk data not followed by CRLF")
		}
		rr.br.Discard(2)
	}
	// Trailer fields, counted against the head's bound, then discarded: a webhook reply's
	// meaning is in its status and body.
	rr.buf = rr.buf[:0]
	if _, err := rr.fields(); err != nil {
		return nil, false, err
	}
	return body, true, nil
}

// parseChunkSize parses a chunk-size line: hex digits, then optionally whitespace and chunk
// extensions after ';', which are ignored.
func parseChunkSize(line []byte) (int64, error) {
	var size int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto ext
		}
		if i == 15 {
			return 0, errors.New("webhook reply: chunk size over 15 hex digits")
		}
		size = size<<4 | int64(d)
	}
ext:
	if i == 0 {
		return 0, errors.New("webhook reply: bad chunk size")
	}
	rest := bytes.TrimLeft(line[i:], " \t")
	if len(rest) > 0 && rest[0] != ';' {
		return 0, errors.New("webhook reply: bad chunk size")
	}
	return size, nil
}

// hasToken reports whether a comma-separated header value lists token (case-insensitively).
func hasToken(vs []string, token string) bool {
	for item := range listItems(vs) {
		if asciiEqualFold(item, token) {
			return true
		}
	}
	return false
}

// listItems yields the items of comma-separated header values, each trimmed of optional white
// space (RFC 9110 §5.6.1), empty ones included: a caller decides whether they are an error.
func listItems(vs []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range vs {
			for len(v) > 0 {
				item := v
				if i := strings.IndexByte(v, ','); i >= 0 {
					item, v = v[:i], v[i+1:]
				} else {
					v = ""
				}
				if !yield(trimOWS(item)) {
					return
				}
			}
		}
	}
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
