package bridge

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The hostile webhook suite: raw-TCP webhook servers that break HTTP/1.1 framing in the ways
// servers in front of PHP do (or could), driven by real WebSocket clients through one webhook
// slot (WEBHOOK_CONCURRENCY=1), so that every event shares a connection with the one before.
// Each reply names the connection it answers (user_id, "hello <id>", "for <id>"); a misplaced
// reply, or a poison reply for "admin", shows as a client or an event carrying another id.

// hostileCall is one request as the hostile server read it, recorded after its answer was
// written.
type hostileCall struct {
	typ, conn, event, user string
	attempt                int
	final                  bool // its answer is one the bridge may take (see firstOK)
}

// hostilePHP is a webhook server on a raw TCP listener. answer gives the bytes for a first
// attempt (later attempts always get their own reply, so every event eventually succeeds and
// a test can tell "refused and retried" from "applied").
type hostilePHP struct {
	t      *testing.T
	ln     net.Listener
	url    string
	answer func(c hostileCall, real, poison string) string
	// stream, when set, writes a first attempt's answer itself (the huge header).
	stream func(w io.Writer)
	// early answers from the request's head and reads the body afterwards.
	early bool
	// idlePoison follows a first attempt's answer with a poison reply, in a write of its own.
	idlePoison bool
	// firstOK: a first attempt's answer may be taken (later attempts' always may).
	firstOK bool
	// stale answers each request with the previous one's answer, event id echoed, as a server
	// one answer behind would.
	stale bool

	mu      sync.Mutex
	calls   []hostileCall
	changed chan struct{}
	open    map[net.Conn]bool
	wg      sync.WaitGroup
}

func newHostilePHP(t *testing.T, answer func(c hostileCall, real, poison string) string) *hostilePHP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostilePHP{t: t, ln: ln, url: "http://" + ln.Addr().String() + "/hook", answer: answer,
		changed: make(chan struct{}, 1), open: map[net.Conn]bool{}}
	h.wg.Add(1)
	go h.serve(h.handle)
	t.Cleanup(h.stop)
	return h
}

// serve accepts connections until the listener closes and runs handle on each, keeping the
// open ones for stop: the HTTP servers' handle, or a FastCGI one (fcgi_hostile_test.go).
func (h *hostilePHP) serve(handle func(net.Conn)) {
	defer h.wg.Done()
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		h.open[c] = true
		h.mu.Unlock()
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			handle(c)
			h.mu.Lock()
			delete(h.open, c)
			h.mu.Unlock()
			c.Close()
		}()
	}
}

func (h *hostilePHP) stop() {
	h.ln.Close()
	h.mu.Lock()
	for c := range h.open {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// replies returns the request's own reply and a poison one of the same kind, as raw HTTP;
// with echo, they carry the event id as PHP may send it back.
func replies(c hostileCall, echo bool) (real, poison string) {
	mk := func(id string) string {
		var body string
		switch EventType(c.typ) {
		case EventOpen:
			body = fmt.Sprintf(`{"user_id":%q,"send":[%q]}`, id, "hello "+id)
		case EventMessage:
			body = fmt.Sprintf(`{"send":[%q]}`, "for "+id)
		default:
			body = `{}` // a close reply in a body, so that every case frames one
		}
		head := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		if echo {
			head += HeaderEventID + ": " + c.event + "\r\n"
		}
		return head + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	return mk(c.conn), mk("admin")
}

func (h *hostilePHP) handle(nc net.Conn) {
	br := bufio.NewReader(nc)
	last := "" // the previous answer on this connection, for stale
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		c := hostileCall{typ: req.Header.Get(HeaderEvent), conn: req.Header.Get(HeaderConnection), event: req.Header.Get(HeaderEventID)}
		c.attempt, _ = strconv.Atoi(req.Header.Get(HeaderAttempt))
		readBody := func() bool {
			body, err := io.ReadAll(req.Body)
			var ev Event
			if err != nil || json.Unmarshal(body, &ev) != nil || ev.ConnectionID != c.conn || string(ev.Type) != c.typ {
				h.t.Errorf("webhook request body does not match its headers: %v %q", err, body)
				return false
			}
			c.user = ev.UserID
			return true
		}
		if !h.early && !readBody() {
			return
		}
		real, poison := replies(c, h.stale)
		out := real
		if h.stale {
			// The answer of the connection's previous request, sent again for this one.
			out, last = last, real
			if out == "" {
				out = real
			}
		} else if c.attempt == 1 {
			if h.stream != nil {
				h.stream(nc)
				h.record(c)
				return // the bridge hangs up on it
			}
			out = h.answer(c, real, poison)
		}
		_, err = io.WriteString(nc, out)
		if err == nil && h.idlePoison && c.attempt == 1 {
			_, err = io.WriteString(nc, poison)
		}
		if h.early && !readBody() {
			return
		}
		h.record(c)
		if err != nil {
			return
		}
	}
}

func (h *hostilePHP) record(c hostileCall) {
	c.final = c.attempt > 1 || h.firstOK
	h.mu.Lock()
	h.calls = append(h.calls, c)
	h.mu.Unlock()
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// await waits until a request of type typ for connection id got an answer the bridge may take,
// and everything the server sends after that answer was written.
func (h *hostilePHP) await(t *testing.T, typ EventType, id string) {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		h.mu.Lock()
		for _, c := range h.calls {
			if c.typ == string(typ) && c.conn == id && c.final {
				h.mu.Unlock()
				return
			}
		}
		h.mu.Unlock()
		select {
		case <-h.changed:
		case <-deadline:
			t.Fatalf("no %s webhook for %s answered within %s", typ, id, waitLimit)
		}
	}
}

func (h *hostilePHP) recorded() []hostileCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hostileCall(nil), h.calls...)
}

// hostileCase is one way of breaking the framing, applied to every event's first attempt.
type hostileCase struct {
	name string
	// answer builds the first attempt's bytes from the event's own reply and a poison reply.
	answer     func(c hostileCall, real, poison string) string
	stream     func(w io.Writer)
	early      bool
	idlePoison bool
	stale      bool
	first      firstAnswer
}

// firstAnswer says what the bridge must do with a first attempt's answer.
type firstAnswer int

const (
	refused firstAnswer = iota // broken framing: every event needs a second attempt
	taken                      // good HTTP: taken at once, no event is retried
	either                     // good, then followed by bytes that may or may not be read with it
)

// bodyOf is the body of a raw reply built by replies.
func bodyOf(raw string) string { _, b, _ := strings.Cut(raw, "\r\n\r\n"); return b }

// headOf is a raw reply without its Content-Length and the empty line, for cases that frame
// the body themselves.
func headOf(raw string) string {
	head, _, _ := strings.Cut(raw, "\r\n\r\n")
	var keep []string
	for _, l := range strings.Split(head, "\r\n") {
		if !strings.HasPrefix(l, "Content-Length:") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\r\n") + "\r\n"
}

func chunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

var hostileCases = []hostileCase{
	{name: "100 Continue before the answer", first: taken, answer: func(_ hostileCall, real, _ string) string {
		return "HTTP/1.1 100 Continue\r\n\r\n" + real
	}},
	{name: "103 Early Hints before the answer", first: taken, answer: func(_ hostileCall, real, _ string) string {
		return "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload; as=style\r\n\r\n" + real
	}},
	{name: "several 1xx before the answer", first: taken, answer: func(_ hostileCall, real, _ string) string {
		return "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.js>\r\n\r\n" + real
	}},
	{name: "six 1xx before the answer", answer: func(_ hostileCall, real, _ string) string {
		return strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 6) + real
	}},
	{name: "101 Switching Protocols", answer: func(_ hostileCall, _, poison string) string {
		return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n" + poison
	}},
	{name: "short Content-Length followed by more bytes", answer: func(_ hostileCall, _, poison string) string {
		return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}" + poison
	}},
	{name: "body bytes after a 204", answer: func(_ hostileCall, _, poison string) string {
		return "HTTP/1.1 204 No Content\r\n\r\n" + poison
	}},
	{name: "body bytes after a 304", answer: func(_ hostileCall, _, poison string) string {
		return "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n" + poison
	}},
	{name: "two responses to one request", answer: func(_ hostileCall, real, poison string) string {
		return real + poison
	}},
	{name: "conflicting Content-Length", answer: func(_ hostileCall, real, poison string) string {
		return strings.Replace(real, "Content-Length:", "Content-Length: 2\r\nContent-Length:", 1) + poison
	}},
	{name: "Content-Length and chunked together", answer: func(_ hostileCall, real, poison string) string {
		return headOf(real) + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(bodyOf(real)) + "0\r\n\r\n" + poison
	}},
	{name: "space before the colon", answer: func(_ hostileCall, real, poison string) string {
		return strings.Replace(real, "Content-Length:", "Content-Length : 2\r\nContent-Length:", 1) + poison
	}},
	{name: "chunked reply (nginx)", first: taken, answer: func(_ hostileCall, real, _ string) string {
		b := bodyOf(real)
		return headOf(real) + "Transfer-Encoding: chunked\r\n\r\n" + chunk(b[:len(b)/2]) + chunk(b[len(b)/2:]) + "0\r\n\r\n"
	}},
	{name: "chunked: bad chunk size", answer: func(_ hostileCall, real, poison string) string {
		return headOf(real) + "Transfer-Encoding: chunked\r\n\r\nzz\r\n" + poison
	}},
	{name: "chunked: chunk without its CRLF", answer: func(_ hostileCall, real, poison string) string {
		b := bodyOf(real)
		return headOf(real) + "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s", len(b), b) + "0\r\n\r\n" + poison
	}},
	{name: "chunked: oversize chunk-size line", answer: func(_ hostileCall, real, poison string) string {
		return headOf(real) + "Transfer-Encoding: chunked\r\n\r\n2;" + strings.Repeat("x", 8192) + "\r\n{}\r\n0\r\n\r\n" + poison
	}},
	{name: "too many header fields", answer: func(_ hostileCall, real, poison string) string {
		var sb strings.Builder
		for i := range maxReplyHeaderFields + 1 {
			fmt.Fprintf(&sb, "X-F%d: %d\r\n", i, i)
		}
		return strings.Replace(real, "\r\n", "\r\n"+sb.String(), 1) + poison
	}},
	{name: "answer before the request body is read", first: taken, early: true, answer: func(_ hostileCall, real, _ string) string {
		return real
	}},
	// The poison goes after the answer, in a write of its own, before the next request has
	// arrived: the bridge must find it on the idle connection, not take it for the next answer.
	{name: "response before the next request is read", first: either, idlePoison: true, answer: func(_ hostileCall, real, _ string) string {
		return real
	}},
	// A server one answer behind sends the previous request's answer once the next request has
	// arrived: only the echoed event id tells it from the right one.
	{name: "stale answer once the next request arrived, event id echoed", first: either, stale: true},
}

// hugeHeader streams a 48 MiB header line from a small buffer, so that only the bridge could
// hold it.
func hugeHeader(w io.Writer) {
	if _, err := io.WriteString(w, "HTTP/1.1 200 OK\r\nX-Huge: "); err != nil {
		return
	}
	buf := []byte(strings.Repeat("a", 64<<10))
	for range 48 << 20 / len(buf) {
		if _, err := w.Write(buf); err != nil {
			return
		}
	}
	io.WriteString(w, "\r\nContent-Length: 2\r\n\r\n{}")
}

func TestHostileWebhookServers(t *testing.T) {
	cases := append(hostileCases, hostileCase{name: "48 MiB header line", stream: hugeHeader})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			h := newHostilePHP(t, tc.answer)
			h.stream, h.early, h.idlePoison, h.stale = tc.stream, tc.early, tc.idlePoison, tc.stale
			h.firstOK = tc.first != refused
			runHostile(t, h, tc.first)
			if tc.stream != nil {
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
					t.Errorf("%d MiB allocated while the webhook server sent 48 MiB header lines; the bound is %d bytes",
						grew>>20, maxReplyHeadBytes)
				}
			}
		})
	}
}

// runHostile drives three WebSocket clients through h with one webhook slot: all open, each
// sends a message, all close. It checks that every event got its own reply and no other,
// whatever the server did to the framing.
func runHostile(t *testing.T, h *hostilePHP, first firstAnswer) {
	t.Helper()
	cfg := testConfig(t, h.url)
	cfg.WebhookConcurrency = 1
	cfg.WebhookRetries = 3
	cfg.WebhookBackoff, cfg.WebhookBackoffMax = time.Millisecond, 5*time.Millisecond
	cfg.WebhookTimeout = waitLimit
	cfg.BreakerFailures = 0 // every first attempt may fail: that is not PHP being down
	b := startBridge(t, cfg, nil, nil)

	const clients = 3
	ws := make([]*websocket.Conn, clients)
	ids := make([]string, clients)
	for i := range ws {
		ws[i] = b.dial(t, "")
		hello := read(t, ws[i])
		id, ok := strings.CutPrefix(hello, "hello ")
		if !ok || id == "admin" || !strings.HasPrefix(id, b.srv.Node()+".") {
			t.Fatalf("client %d: first frame %q, want hello and its own connection id", i, hello)
		}
		for _, other := range ids[:i] {
			if other == id {
				t.Fatalf("client %d was given the open reply of connection %s", i, id)
			}
		}
		ids[i] = id
		h.await(t, EventOpen, id)
	}
	for i, c := range ws {
		write(t, c, "hi")
		if got := read(t, c); got != "for "+ids[i] {
			t.Fatalf("client %s: reply %q to its message, want %q", ids[i], got, "for "+ids[i])
		}
		h.await(t, EventMessage, ids[i])
	}
	for i, c := range ws {
		c.Close(websocket.StatusNormalClosure, "")
		h.await(t, EventClose, ids[i])
	}

	mine := map[string]bool{}
	for _, id := range ids {
		mine[id] = true
	}
	closes := map[string]map[string]bool{} // connection → close event ids
	events := map[string]int{}             // event id → highest attempt
	for _, c := range h.recorded() {
		if !mine[c.conn] {
			t.Errorf("%s webhook for unknown connection %q", c.typ, c.conn)
		}
		if c.typ != string(EventOpen) && c.user != c.conn {
			t.Errorf("%s webhook of %s carries user_id %q: another event's open reply was applied", c.typ, c.conn, c.user)
		}
		if c.typ == string(EventClose) {
			if closes[c.conn] == nil {
				closes[c.conn] = map[string]bool{}
			}
			closes[c.conn][c.event] = true
		}
		events[c.event] = max(events[c.event], c.attempt)
	}
	for _, id := range ids {
		if len(closes[id]) != 1 {
			t.Errorf("connection %s got %d close webhooks, want exactly 1", id, len(closes[id]))
		}
	}
	for ev, attempts := range events {
		if first == taken && attempts != 1 {
			t.Errorf("event %s took %d attempts; the first answer was valid and should have been taken", ev, attempts)
		}
		if first == refused && attempts < 2 {
			t.Errorf("event %s was taken from its first, broken answer", ev)
		}
	}
}
