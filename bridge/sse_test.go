package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// sseEvent is one event as the WHATWG parser dispatches it (HTML §9.2.6), or a comment.
type sseEvent struct {
	Type      string // "message" when no event: field was given
	Data      string
	ID        string
	Retry     string // the retry: field's value, if the event carried one
	Comment   string // a comment line's text, which is no event
	IsComment bool
}

// sseStream reads an event stream exactly as the WHATWG "interpreting an event stream" rules
// say: lines end at CRLF, LF or a lone CR; a leading colon is a comment; one space after the
// field's colon is dropped; data: lines join with LF and one trailing LF is removed; an event
// whose data buffer is empty is not dispatched.
type sseStream struct {
	r        *bufio.Reader
	cur      sseEvent // the event being read: a comment line may come in its middle
	data     []string
	hasData  bool
	resp     *http.Response
	cancel   context.CancelFunc
	lastByte byte
}

// openSSE GETs url as EventSource does and returns the response; the stream is read with next.
func openSSE(t *testing.T, client *http.Client, url string, h http.Header) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range h {
		req.Header[k] = v
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	s := &sseStream{r: bufio.NewReader(resp.Body), resp: resp, cancel: cancel}
	t.Cleanup(s.close)
	return s
}

func (s *sseStream) close() { s.cancel(); s.resp.Body.Close() }

// line reads one line without its terminator (CRLF, LF or CR).
func (s *sseStream) line() (string, error) {
	var b []byte
	for {
		c, err := s.r.ReadByte()
		if err != nil {
			return string(b), err
		}
		if c == '\n' && s.lastByte == '\r' && len(b) == 0 {
			s.lastByte = 0 // the LF of a CRLF whose CR ended the previous line
			continue
		}
		s.lastByte = c
		if c == '\n' || c == '\r' {
			return string(b), nil
		}
		b = append(b, c)
	}
}

// next returns the next event or comment, within waitLimit; io.EOF when the stream ended.
func (s *sseStream) next(t *testing.T) (sseEvent, error) {
	t.Helper()
	type result struct {
		ev  sseEvent
		err error
	}
	done := make(chan result, 1)
	go func() {
		for {
			ev := &s.cur
			l, err := s.line()
			if err != nil {
				done <- result{err: err}
				return
			}
			if l == "" {
				out, data, hasData := *ev, s.data, s.hasData
				s.cur, s.data, s.hasData = sseEvent{}, nil, false
				if !hasData {
					if out.Retry != "" || out.ID != "" {
						// A retry: or an id: alone still tells the client something (the
						// id becomes its last event id, WHATWG HTML §9.2.6).
						done <- result{ev: out}
						return
					}
					continue
				}
				out.Data = strings.Join(data, "\n")
				if out.Type == "" {
					out.Type = "message"
				}
				done <- result{ev: out}
				return
			}
			if strings.HasPrefix(l, ":") {
				done <- result{ev: sseEvent{Comment: l[1:], IsComment: true}}
				return
			}
			field, value, _ := strings.Cut(l, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "data":
				s.data, s.hasData = append(s.data, value), true
			case "event":
				ev.Type = value
			case "id":
				ev.ID = value
			case "retry":
				ev.Retry = value
			}
		}
	}()
	select {
	case r := <-done:
		return r.ev, r.err
	case <-time.After(waitLimit):
		t.Fatalf("no event within %s", waitLimit)
		return sseEvent{}, nil
	}
}

// event returns the next event, skipping comments.
func (s *sseStream) event(t *testing.T) sseEvent {
	t.Helper()
	for {
		ev, err := s.next(t)
		if err != nil {
			t.Fatalf("event stream ended: %v", err)
		}
		if !ev.IsComment {
			return ev
		}
	}
}

// end reads to the end of the stream and returns the events after the last comment.
func (s *sseStream) end(t *testing.T) []sseEvent {
	t.Helper()
	var out []sseEvent
	for {
		ev, err := s.next(t)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("event stream broke instead of ending: %v", err)
		}
		if !ev.IsComment {
			out = append(out, ev)
		}
	}
}

func sseBridge(t *testing.T, handle func(hookCall) (int, any), tweak func(*Config)) (*testBridge, string) {
	t.Helper()
	php := newFakePHP(t, handle)
	b := newBridge(t, php, func(c *Config) {
		c.SSEPath = "/events"
		if tweak != nil {
			tweak(c)
		}
	})
	return b, b.public.URL + "/events"
}

// TestSSEEventFraming: what appendSSEEvent writes, parsed by the WHATWG rules, gives the page
// exactly the frame's data, with every line break as LF; nothing in a text becomes a field.
func TestSSEEventFraming(t *testing.T) {
	cases := []struct {
		name   string
		in     Delivery
		wire   string // exact bytes, when given
		typ    string
		data   string
		fields int // lines in the event
	}{
		{name: "plain", in: Delivery{Data: []byte("hello")}, wire: "data: hello\n\n", typ: "message", data: "hello"},
		{name: "empty", in: Delivery{Data: []byte("")}, wire: "data: \n\n", typ: "message", data: ""},
		{name: "LF lines", in: Delivery{Data: []byte("a\nb\nc")}, wire: "data: a\ndata: b\ndata: c\n\n", typ: "message", data: "a\nb\nc"},
		{name: "CRLF lines", in: Delivery{Data: []byte("a\r\nb")}, wire: "data: a\ndata: b\n\n", typ: "message", data: "a\nb"},
		{name: "lone CR", in: Delivery{Data: []byte("a\rb")}, wire: "data: a\ndata: b\n\n", typ: "message", data: "a\nb"},
		{name: "CR CR LF", in: Delivery{Data: []byte("a\r\r\nb")}, wire: "data: a\ndata: \ndata: b\n\n", typ: "message", data: "a\n\nb"},
		{name: "trailing LF", in: Delivery{Data: []byte("a\n")}, wire: "data: a\ndata: \n\n", typ: "message", data: "a\n"},
		{name: "only LFs", in: Delivery{Data: []byte("\n\n")}, typ: "message", data: "\n\n"},
		{name: "leading space", in: Delivery{Data: []byte("  x")}, wire: "data:   x\n\n", typ: "message", data: "  x"},
		{name: "colon first", in: Delivery{Data: []byte(":not a comment")}, typ: "message", data: ":not a comment"},
		{name: "field injection LF", in: Delivery{Data: []byte("x\nevent: close\nid: 9\n\ndata: y")}, typ: "message", data: "x\nevent: close\nid: 9\n\ndata: y"},
		{name: "field injection CR", in: Delivery{Data: []byte("x\revent: close\rretry: 1")}, typ: "message", data: "x\nevent: close\nretry: 1"},
		{name: "unicode", in: Delivery{Data: []byte("Grüße 👋\u2028end")}, typ: "message", data: "Grüße 👋\u2028end"},
		{name: "binary", in: Delivery{Binary: true, Data: []byte{0, 1, 0xff, '\n', '\r'}}, wire: "event: binary\ndata: AAH/Cg0=\n\n", typ: "binary", data: "AAH/Cg0="},
		{name: "binary empty", in: Delivery{Binary: true, Data: nil}, wire: "event: binary\ndata: \n\n", typ: "binary", data: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wire := appendSSEEvent(nil, tc.in)
			if tc.wire != "" && string(wire) != tc.wire {
				t.Errorf("wire %q, want %q", wire, tc.wire)
			}
			if n := sseEventSize(tc.in); len(wire) > n {
				t.Errorf("sseEventSize %d < the event's %d bytes", n, len(wire))
			}
			s := &sseStream{r: bufio.NewReader(bytes.NewReader(append(wire, "data: after\n\n"...)))}
			ev, err := s.next(t)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Type != tc.typ || ev.Data != tc.data || ev.ID != "" || ev.Retry != "" {
				t.Errorf("parsed %+v, want type %q data %q and no id or retry", ev, tc.typ, tc.data)
			}
			if after, _ := s.next(t); after.Data != "after" {
				t.Errorf("the next event parsed as %+v: the event did not end where it should", after)
			}
			// withSSE makes the same bytes, past the WebSocket frame, without touching it.
			f := tc.in
			f.ws = f.wireFrame()
			frame := slices.Clone(f.ws)
			g := f.withSSE()
			if !g.sseIn || !bytes.Equal(g.sseEvent(), wire) || !bytes.Equal(g.wireFrame(), frame) {
				t.Errorf("withSSE: event %q frame %x, want %q and %x", g.sseEvent(), g.wireFrame(), wire, frame)
			}
		})
	}
}

// TestDeliverySize: the SSE encoding costs a Delivery nothing (it waits by value in send queues);
// history's pointer (hist, history.go) costs it one word, 56 → 64 bytes, one cache line.
func TestDeliverySize(t *testing.T) {
	if n := unsafe.Sizeof(Delivery{}); n != 64 {
		t.Errorf("Delivery is %d bytes, want 64", n)
	}
}

func TestSSEAccept(t *testing.T) {
	cases := []struct {
		name   string
		accept []string
		ok     bool
	}{
		{"none", nil, true},
		{"EventSource", []string{"text/event-stream"}, true},
		{"with parameters", []string{"text/event-stream; charset=utf-8"}, true},
		{"upper case", []string{"Text/Event-Stream"}, true},
		{"in a list", []string{"application/json, text/event-stream;q=0.5"}, true},
		{"two headers", []string{"application/json", "text/event-stream"}, true},
		{"any", []string{"*/*"}, true},
		{"any text", []string{"text/*"}, true},
		{"browser navigation", []string{"text/html,application/xhtml+xml,*/*;q=0.8"}, true},
		{"json only", []string{"application/json"}, false},
		{"html only", []string{"text/html"}, false},
		{"refused with q=0", []string{"text/event-stream;q=0"}, false},
		{"q=0.0", []string{"text/event-stream; q=0.0, application/json"}, false},
		{"empty value", []string{""}, false},
		{"prefix only", []string{"text/event-streams"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := acceptsEventStream(tc.accept); got != tc.ok {
				t.Errorf("acceptsEventStream(%q) = %v, want %v", tc.accept, got, tc.ok)
			}
		})
	}
}

// TestSSEOpen: the open webhook says "transport": "sse" and carries the request; the reply's
// user, meta, join and send apply; the response is an event stream nobody buffers; the push
// API lists the connection with its transport and reaches it by id, user and channel.
func TestSSEOpen(t *testing.T) {
	t.Parallel()
	b, url := sseBridge(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventOpen {
			return 200, map[string]any{"user_id": "u1", "meta": map[string]any{"n": 1}, "join": []string{"news"}, "send": []string{"welcome", "two\nlines"},
				"publish": []map[string]any{{"to": map[string]any{"channels": []string{"news"}}, "data": "u1 is here"}}}
		}
		return 204, nil
	}, nil)
	s := openSSE(t, nil, url+"?x=1", http.Header{"Cookie": {"sid=abc"}})
	open := b.php.next(t, EventOpen)
	if open.Event.Transport != "sse" || open.Event.Request.Path != "/events" || open.Event.Request.Query != "x=1" ||
		open.Event.Request.Method != "GET" || open.Event.Request.Headers["Cookie"] != "sid=abc" {
		t.Errorf("open webhook: transport %q request %+v", open.Event.Transport, open.Event.Request)
	}
	h := s.resp.Header
	if s.resp.StatusCode != 200 || h.Get("Content-Type") != "text/event-stream; charset=utf-8" ||
		!strings.Contains(h.Get("Cache-Control"), "no-cache") || h.Get("X-Accel-Buffering") != "no" ||
		h.Get("Content-Length") != "" || s.resp.ContentLength != -1 {
		t.Errorf("response %d, headers %v", s.resp.StatusCode, h)
	}
	for _, want := range []string{"welcome", "two\nlines", "u1 is here"} {
		if ev := s.event(t); ev.Type != "message" || ev.Data != want {
			t.Errorf("event %+v, want message %q", ev, want)
		}
	}
	id := open.Event.ConnectionID
	var info connInfo
	if st := b.api(t, "GET", "/v1/connections/"+id, nil, &info); st != 200 || info.Transport != "sse" ||
		info.UserID != "u1" || !slices.Equal(info.Channels, []string{"news"}) || string(info.Meta) != `{"n":1}` {
		t.Errorf("GET /v1/connections/%s: %d %+v", id, st, info)
	}
	for _, to := range []map[string]any{{"connections": []string{id}}, {"users": []string{"u1"}}, {"channels": []string{"news"}}} {
		if st := b.api(t, "POST", "/v1/publish", map[string]any{"to": to, "data": "to " + strings.Join(slices.Sorted(mapKeys(to)), "")}, nil); st != 200 {
			t.Fatalf("publish %v: %d", to, st)
		}
	}
	for _, want := range []string{"to connections", "to users", "to channels"} {
		if ev := s.event(t); ev.Data != want {
			t.Errorf("event %+v, want %q", ev, want)
		}
	}
	if st := b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"connections": []string{id}}, "data_base64": base64.StdEncoding.EncodeToString([]byte{1, 2, 3})}, nil); st != 200 {
		t.Fatalf("binary publish: %d", st)
	}
	if ev := s.event(t); ev.Type != "binary" || ev.Data != "AQID" {
		t.Errorf("binary event %+v, want binary AQID", ev)
	}
	var list struct {
		Connections []connInfo `json:"connections"`
	}
	b.api(t, "GET", "/v1/connections?channel=news", nil, &list)
	if len(list.Connections) != 1 || list.Connections[0].Transport != "sse" {
		t.Errorf("GET /v1/connections?channel=news: %+v", list.Connections)
	}
}

func mapKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestSSEAndWebSocketShareChannel: a WebSocket and an SSE client in one channel get the same
// publications, in the same order, from the push API and from a message reply's publish.
func TestSSEAndWebSocketShareChannel(t *testing.T) {
	t.Parallel()
	b, url := sseBridge(t, func(c hookCall) (int, any) {
		switch {
		case c.Event.Type == EventOpen:
			return 200, map[string]any{"join": []string{"room"}}
		case c.Event.Type == EventMessage:
			return 200, map[string]any{"publish": []map[string]any{{"to": map[string]any{"channels": []string{"room"}}, "data": "said: " + *c.Event.Data}}}
		}
		return 204, nil
	}, nil)
	ws := b.dial(t, "")
	b.php.next(t, EventOpen)
	s := openSSE(t, nil, url, nil)
	b.php.next(t, EventOpen)
	var want []string
	for i := range 20 {
		msg := strings.Repeat("x", i*50) + "\nline " + string(rune('a'+i))
		want = append(want, msg)
		if st := b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"channels": []string{"room"}}, "data": msg}, nil); st != 200 {
			t.Fatalf("publish: %d", st)
		}
	}
	write(t, ws, "hi")
	want = append(want, "said: hi")
	for _, w := range want {
		if got := read(t, ws); got != w {
			t.Errorf("WebSocket got %q, want %q", got, w)
		}
		if ev := s.event(t); ev.Data != w || ev.Type != "message" {
			t.Errorf("SSE got %+v, want %q", ev, w)
		}
	}
	var ch struct {
		Count int `json:"count"`
	}
	b.api(t, "GET", "/v1/channels/room", nil, &ch)
	if ch.Count != 2 {
		t.Errorf("channel count %d, want 2", ch.Count)
	}
}

// TestSSEPublicationEncodedOnce: a publication to SSE connections is framed once, and every
// recipient writes the same bytes.
func TestSSEPublicationEncodedOnce(t *testing.T) {
	h := newHub("n", NewMemoryBroker())
	got := make(chan Delivery, 4)
	for i, tr := range []string{"sse", "sse", "ws"} {
		id := "n." + string(rune('a'+i))
		h.Add(deliveryRecorder{id: id, got: got}, connInfo{ID: id, Transport: tr}, &counters{}, "", nil, []string{"c"})
	}
	h.publishLocal(Targets{Channels: []string{"c"}}, "", newDelivery(Frame{Data: []byte("x\ny")}))
	var first []byte
	for range 3 {
		d := <-got
		if !d.sseIn || string(d.sseEvent()) != "data: x\ndata: y\n\n" {
			t.Fatalf("delivery without its SSE event: sseIn %v %q", d.sseIn, d.sseEvent())
		}
		if first == nil {
			first = d.sseEvent()
		} else if &first[0] != &d.sseEvent()[0] {
			t.Error("recipients got different copies of the SSE event")
		}
	}
	// Without an SSE recipient, nothing is made for SSE.
	h.publishLocal(Targets{Connections: []string{"n.c"}}, "", newDelivery(Frame{Data: []byte("z")}))
	if d := <-got; d.sseIn {
		t.Error("a publication to WebSockets alone made an SSE event")
	}
	// The hub counts its SSE members, so that a node without any never looks for them.
	h.Remove("n.a")
	h.Remove("n.b")
	if h.sseConns != 0 {
		t.Errorf("sseConns %d after every SSE member left, want 0", h.sseConns)
	}
	h.publishLocal(Targets{Channels: []string{"c"}}, "", newDelivery(Frame{Data: []byte("w")}))
	if d := <-got; d.sseIn {
		t.Error("a publication made an SSE event after every SSE member left")
	}
}

type deliveryRecorder struct {
	id  string
	got chan Delivery
}

func (r deliveryRecorder) ID() string                        { return r.id }
func (r deliveryRecorder) Send(d Delivery) bool              { r.got <- d; return true }
func (r deliveryRecorder) Close(int, string, Initiator) bool { return true }

// TestSSERefusals: what is not an event-stream GET is refused before PHP is asked; PHP's
// refusal reaches the client as it was; the origin check and the limits apply as for a
// WebSocket; a refusal that means "later" is a 200 stream with retry:, which EventSource obeys
// (it gives up for good on any other status).
func TestSSERefusals(t *testing.T) {
	t.Parallel()
	b, url := sseBridge(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventOpen && strings.Contains(c.Event.Request.Query, "deny") {
			return 401, "log in first"
		}
		if c.Event.Type == EventOpen && strings.Contains(c.Event.Request.Query, "down") {
			return 503, "php down"
		}
		return 204, nil
	}, func(c *Config) { c.MaxConnectionsPerIP = 1; c.WebhookRetries = 0 })

	do := func(method, path string, h http.Header) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, b.public.URL+path, nil)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	sse := http.Header{"Accept": {"text/event-stream"}}
	for _, tc := range []struct {
		name, method, path string
		h                  http.Header
		status             int
		body               string
	}{
		{"POST", "POST", "/events", sse, 405, "open it with a GET"},
		{"HEAD", "HEAD", "/events", sse, 405, ""},
		{"OPTIONS", "OPTIONS", "/events", sse, 405, "not OPTIONS"},
		{"json only", "GET", "/events", http.Header{"Accept": {"application/json"}}, 406, "Accept: text/event-stream"},
		{"foreign origin", "GET", "/events", http.Header{"Accept": {"text/event-stream"}, "Origin": {"https://evil.example"}}, 403, "origin not allowed"},
		{"PHP refuses", "GET", "/events?deny", sse, 401, "log in first"},
		{"PHP answers 503", "GET", "/events?down", sse, 503, "php down"},
	} {
		resp, body := do(tc.method, tc.path, tc.h)
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.body) {
			t.Errorf("%s: %d %q, want %d with %q", tc.name, resp.StatusCode, body, tc.status, tc.body)
		}
		if tc.status == 405 && resp.Header.Get("Allow") != "GET" {
			t.Errorf("%s: Allow %q, want GET", tc.name, resp.Header.Get("Allow"))
		}
	}
	// Every open webhook above was PHP's to answer: exactly two, and PHP owes nothing.
	b.php.next(t, EventOpen)
	b.php.next(t, EventOpen)

	// The second stream from one address is past MAX_CONNECTIONS_PER_IP=1: told to come back.
	s := openSSE(t, nil, url, nil)
	b.php.next(t, EventOpen)
	later := openSSE(t, nil, url, nil)
	if later.resp.StatusCode != 200 || later.resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("over the limit: %d %q, want a 200 event stream", later.resp.StatusCode, later.resp.Header.Get("Content-Type"))
	}
	evs := later.end(t)
	if len(evs) != 1 || evs[0].Retry != "5000" || evs[0].Data != "" {
		t.Errorf("over the limit: events %+v, want one retry: 5000 and nothing else", evs)
	}
	s.close()
	b.php.next(t, EventClose)

	// PHP unreachable: the same, never a 503.
	b.php.Close()
	down := openSSE(t, nil, url, nil)
	if down.resp.StatusCode != 200 {
		t.Fatalf("PHP unreachable: %d, want 200", down.resp.StatusCode)
	}
	if evs := down.end(t); len(evs) != 1 || evs[0].Retry != "5000" {
		t.Errorf("PHP unreachable: events %+v, want one retry: 5000", evs)
	}
}

// TestSSELimits: the node's connection limit and the per-address handshake rate apply to event
// streams, and their "later" reaches an EventSource as retry: with the Retry-After delay.
func TestSSELimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		tweak func(*Config)
		retry string
	}{
		{"MAX_CONNECTIONS", func(c *Config) { c.MaxConnections = 1 }, "5000"},
		{"HANDSHAKE_RATE_PER_IP", func(c *Config) { c.HandshakeRatePerIP = 0.001; c.HandshakeBurstPerIP = 1 }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, url := sseBridge(t, acceptAll, tc.tweak)
			first := openSSE(t, nil, url, nil)
			b.php.next(t, EventOpen)
			later := openSSE(t, nil, url, nil)
			evs := later.end(t)
			if later.resp.StatusCode != 200 || len(evs) != 1 || evs[0].Retry == "" || (tc.retry != "" && evs[0].Retry != tc.retry) {
				t.Errorf("second stream: %d %+v, want 200 and one retry: %s", later.resp.StatusCode, evs, tc.retry)
			}
			if ms, _ := strconv.Atoi(evs[0].Retry); ms < 1000 || ms%1000 != 0 {
				t.Errorf("retry %q: want whole seconds of Retry-After, in ms", evs[0].Retry)
			}
			first.close()
			b.php.next(t, EventClose)
			select {
			case c := <-b.php.calls:
				t.Errorf("PHP got a %s webhook for the refused stream", c.Event.Type)
			default:
			}
		})
	}
}

// TestSSECrossOrigin: an origin ALLOWED_ORIGINS lets in gets the CORS headers EventSource needs.
func TestSSECrossOrigin(t *testing.T) {
	t.Parallel()
	_, url := sseBridge(t, acceptAll, func(c *Config) { c.AllowedOrigins = []string{"app.example"} })
	s := openSSE(t, nil, url, http.Header{"Origin": {"https://app.example"}})
	if s.resp.StatusCode != 200 || s.resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		s.resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("cross-origin stream: %d %v", s.resp.StatusCode, s.resp.Header)
	}
}

// TestSSECloseByAPI: closing by API (and by PHP's reply) writes what was queued, then one
// "close" event with the code and reason, and ends the stream; the close webhook says who.
func TestSSECloseByAPI(t *testing.T) {
	t.Parallel()
	b, url := sseBridge(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventOpen && c.Event.Request.Query == "php" {
			return 200, map[string]any{"send": []string{"bye soon"}, "close": map[string]any{"code": 4001, "reason": "not today"}}
		}
		return 204, nil
	}, nil)
	s := openSSE(t, nil, url, nil)
	id := b.php.next(t, EventOpen).Event.ConnectionID
	b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"connections": []string{id}}, "data": "last"}, nil)
	if st := b.api(t, "POST", "/v1/connections/"+id+"/close", map[string]any{"code": 4000, "reason": "kicked"}, nil); st != 200 {
		t.Fatalf("close: %d", st)
	}
	evs := s.end(t)
	if len(evs) != 2 || evs[0].Data != "last" || evs[1].Type != "close" || evs[1].Data != `{"code":4000,"reason":"kicked"}` {
		t.Errorf("events %+v, want \"last\" then close {4000 kicked}", evs)
	}
	cl := b.php.nextFor(t, EventClose, id)
	if cl.Event.Initiator != InitiatorAPI || *cl.Event.Code != 4000 || *cl.Event.Reason != "kicked" || cl.Event.Transport != "sse" || *cl.Event.MessagesOut != 1 {
		t.Errorf("close webhook: %s %d %q %q out %d", cl.Event.Initiator, *cl.Event.Code, *cl.Event.Reason, cl.Event.Transport, *cl.Event.MessagesOut)
	}

	s = openSSE(t, nil, url+"?php", nil)
	id = b.php.next(t, EventOpen).Event.ConnectionID
	evs = s.end(t)
	if len(evs) != 2 || evs[0].Data != "bye soon" || evs[1].Type != "close" || evs[1].Data != `{"code":4001,"reason":"not today"}` {
		t.Errorf("events %+v, want \"bye soon\" then close {4001 not today}", evs)
	}
	if cl := b.php.nextFor(t, EventClose, id); cl.Event.Initiator != InitiatorPHP || *cl.Event.Code != 4001 {
		t.Errorf("close webhook: %s %d", cl.Event.Initiator, *cl.Event.Code)
	}
}

// TestSSEClientGoes: the browser closing the stream is seen through the request's context: one
// close webhook, initiator client, 1001, with the state PHP set.
func TestSSEClientGoes(t *testing.T) {
	t.Parallel()
	b, url := sseBridge(t, room, nil)
	s := openSSE(t, nil, url+"?user=ann&join=a", nil)
	id := b.php.next(t, EventOpen).Event.ConnectionID
	s.close()
	cl := b.php.nextFor(t, EventClose, id)
	if cl.Event.Initiator != InitiatorClient || *cl.Event.Code != 1001 || cl.Event.UserID != "ann" || !slices.Equal(cl.Event.Channels, []string{"a"}) {
		t.Errorf("close webhook: %s %d user %q channels %q", cl.Event.Initiator, *cl.Event.Code, cl.Event.UserID, cl.Event.Channels)
	}
	var stats hubStats
	b.api(t, "GET", "/v1/stats", nil, &stats)
	if stats.Connections != 0 {
		t.Errorf("%d connections left, want 0", stats.Connections)
	}
}

// TestSSEKeepalive: an idle stream gets a comment line every SSE_KEEPALIVE.
func TestSSEKeepalive(t *testing.T) {
	t.Parallel()
	b, url := sseBridge(t, acceptAll, func(c *Config) { c.SSEKeepalive = 20 * time.Millisecond })
	s := openSSE(t, nil, url, nil)
	b.php.next(t, EventOpen)
	for range 3 {
		ev, err := s.next(t)
		if err != nil {
			t.Fatal(err)
		}
		if !ev.IsComment || ev.Comment != "" {
			t.Errorf("idle stream: %+v, want the keepalive comment", ev)
		}
	}
}

// TestSSESlowConsumer: a client that stops reading is closed as a slow consumer, as on a
// WebSocket, by the send queue's bounds or by WRITE_TIMEOUT, and the stream is cut.
func TestSSESlowConsumer(t *testing.T) {
	t.Parallel()
	b, _ := sseBridge(t, acceptAll, func(c *Config) { c.SendQueue = 4; c.WriteTimeout = 200 * time.Millisecond })
	nc, err := net.Dial("tcp", b.public.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.(*net.TCPConn).SetReadBuffer(4096)
	io.WriteString(nc, "GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
	id := b.php.next(t, EventOpen).Event.ConnectionID
	big := strings.Repeat("y", 64<<10)
	deadline := time.Now().Add(waitLimit)
	for {
		var res struct {
			Delivered int `json:"delivered"`
		}
		b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"connections": []string{id}}, "data": big}, &res)
		select {
		case c := <-b.php.calls:
			if c.Event.Type == EventClose {
				if c.Event.Initiator != InitiatorSlowConsumer || *c.Event.Code != 1008 {
					t.Errorf("close webhook: %s %d %q, want slow_consumer 1008", c.Event.Initiator, *c.Event.Code, *c.Event.Reason)
				}
				return
			}
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the client that does not read was not closed")
		}
	}
}

// TestSSEShutdown: shutdown ends every stream with a close event 1001 and a retry:, so the
// browser comes back (to another node) after a while, and each gets its close webhook.
func TestSSEShutdown(t *testing.T) {
	t.Parallel()
	b, url := sseBridge(t, acceptAll, nil)
	s := openSSE(t, nil, url, nil)
	id := b.php.next(t, EventOpen).Event.ConnectionID
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		done <- b.srv.Shutdown(ctx)
	}()
	evs := s.end(t)
	if len(evs) != 1 || evs[0].Type != "close" || evs[0].Retry != "5000" || evs[0].Data != `{"code":1001,"reason":"server shutdown"}` {
		t.Errorf("events %+v, want one close 1001 with retry 5000", evs)
	}
	if cl := b.php.nextFor(t, EventClose, id); cl.Event.Initiator != InitiatorShutdown {
		t.Errorf("close webhook initiator %s", cl.Event.Initiator)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
}

// TestSSEOverHTTP2: with TLS the public listener serves h2, and an event stream works there:
// events arrive as they are published, the API closes it, and the client leaving is seen.
func TestSSEOverHTTP2(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventOpen {
			return 200, map[string]any{"send": []string{"hello over h2"}}
		}
		return 204, nil
	})
	b := startTLSBridge(t, php, func(c *Config) { c.SSEPath = "/events" })
	client := b.client(t, true)
	for _, how := range []string{"api", "client"} {
		s := openSSE(t, client, "https://"+b.addr+"/events", nil)
		if s.resp.Proto != "HTTP/2.0" || s.resp.StatusCode != 200 {
			t.Fatalf("%s %d, want HTTP/2.0 200", s.resp.Proto, s.resp.StatusCode)
		}
		id := php.next(t, EventOpen).Event.ConnectionID
		if ev := s.event(t); ev.Data != "hello over h2" {
			t.Errorf("event %+v", ev)
		}
		post := func(path, body string) {
			req, _ := http.NewRequest("POST", "http://"+b.internal+path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != 200 {
				t.Fatalf("POST %s: %d", path, res.StatusCode)
			}
		}
		post("/v1/publish", `{"to":{"connections":["`+id+`"]},"data":"pushed"}`)
		if ev := s.event(t); ev.Data != "pushed" {
			t.Errorf("event %+v", ev)
		}
		if how == "api" {
			post("/v1/connections/"+id+"/close", `{"code":4000,"reason":"done"}`)
			if evs := s.end(t); len(evs) != 1 || evs[0].Type != "close" {
				t.Errorf("events %+v, want one close", evs)
			}
			if cl := php.nextFor(t, EventClose, id); cl.Event.Initiator != InitiatorAPI {
				t.Errorf("close webhook initiator %s", cl.Event.Initiator)
			}
		} else {
			s.close()
			if cl := php.nextFor(t, EventClose, id); cl.Event.Initiator != InitiatorClient {
				t.Errorf("close webhook initiator %s", cl.Event.Initiator)
			}
		}
	}
}

// BenchmarkHubPublishChannelSSE is BenchmarkHubPublishChannel with SSE members (half of them,
// or all): the event is framed once per publication, beside the WebSocket frame.
func BenchmarkHubPublishChannelSSE(b *testing.B) {
	for _, share := range []struct {
		name  string
		every int // one member in every is an SSE connection
	}{{"half", 2}, {"all", 1}} {
		b.Run("10000-"+share.name, func(b *testing.B) {
			benchPublishChannel(b, newHub("bench", NewMemoryBroker()), 10000, func(i int) string {
				if i%share.every == 0 {
					return transportSSE
				}
				return transportWS
			}, "")
		})
	}
}

// TestSSESlowConsumerHTTP2: over HTTP/2 a stream whose client stops reading (its flow-control
// window full) is closed as a slow consumer too, and cutting its blocked write resets that
// stream alone: the connection's other stream goes on.
func TestSSESlowConsumerHTTP2(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, acceptAll)
	b := startTLSBridge(t, php, func(c *Config) { c.SSEPath = "/events"; c.SendQueue = 4 })
	client := b.client(t, true)
	slow := openSSE(t, client, "https://"+b.addr+"/events", nil)
	slowID := php.next(t, EventOpen).Event.ConnectionID
	other := openSSE(t, client, "https://"+b.addr+"/events", nil)
	otherID := php.next(t, EventOpen).Event.ConnectionID
	if slow.resp.Proto != "HTTP/2.0" {
		t.Fatalf("%s, want HTTP/2.0", slow.resp.Proto)
	}
	big := strings.Repeat("z", 64<<10)
	// Go's HTTP/2 client opens a 4 MiB window per stream: some 64 publications of 64 KiB go out
	// before the writer blocks, each a push API request, which under -race on a loaded machine
	// can take longer than one waitLimit in all.
	deadline := time.Now().Add(3 * waitLimit)
	for closed := false; !closed; {
		req, _ := http.NewRequest("POST", "http://"+b.internal+"/v1/publish",
			strings.NewReader(`{"to":{"connections":["`+slowID+`"]},"data":"`+big+`"}`))
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		select {
		case c := <-php.calls:
			if c.Event.Type != EventClose {
				continue
			}
			if c.Event.ConnectionID != slowID || c.Event.Initiator != InitiatorSlowConsumer {
				t.Fatalf("close webhook for %s by %s, want %s by slow_consumer", c.Event.ConnectionID, c.Event.Initiator, slowID)
			}
			closed = true
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the stream that does not read was not closed")
		}
	}
	req, _ := http.NewRequest("POST", "http://"+b.internal+"/v1/publish", strings.NewReader(`{"to":{"connections":["`+otherID+`"]},"data":"still here"}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if ev := other.event(t); ev.Data != "still here" {
		t.Errorf("the other stream got %+v", ev)
	}
}
