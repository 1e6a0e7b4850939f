package bridge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// The contract with PHP, as golden files both sides check (docs/PROTOCOL.md, "Golden files").
// The Go tests write them from the real types of event.go and check that the bridge still sends
// and accepts exactly that; the PHP kit's PHPUnit suite (examples/php/lib/tests/ContractTest.php)
// parses every webhook body with the kit and builds every reply with it. A field renamed, added
// or dropped on one side and not the other fails one of the two.
//
// Regenerate after a deliberate change with `go test ./bridge -run TestContract -update`, then
// make the PHP kit pass again.

// contractDir holds the golden files, relative to this package's directory.
const contractDir = "testdata/contract"

// The fixed ids and times of the golden events, so the files are stable.
const (
	goldenConnID = "k3x9q2ab.QX4TT7UZL2C6MRBE"
	goldenTime   = "2026-11-21T23:22:19.123Z"
)

// goldenEvent starts an event the way the bridge does (Server.newEvent, which needs nothing of
// the server today; if it comes to, this panics rather than drift), then fixes what is random
// or the clock's.
func goldenEvent(t EventType, eventID string, st state) *Event {
	ev := (&Server{}).newEvent(t, transportWS, goldenConnID, st)
	ev.EventID, ev.Time = eventID, goldenTime
	return ev
}

// goldenState is a connection PHP has identified, as message and close webhooks carry it.
var goldenState = state{UserID: "42", Meta: json.RawMessage(`{"name":"Ann","role":"admin"}`), Channels: []string{"room:42", "user:42"}}

// goldenMessage fills a message event as Server.deliverMessage (session.go) does.
func goldenMessage(eventID string, seq uint64, binary bool, data []byte) *Event {
	ev := goldenEvent(EventMessage, eventID, goldenState)
	ev.Seq = seq
	ev.Binary = &binary
	if binary {
		s := base64.StdEncoding.EncodeToString(data)
		ev.DataBase64 = &s
	} else {
		s := string(data)
		ev.Data = &s
	}
	return ev
}

// goldenClose fills a close event as Server.endSession (session.go) does.
func goldenClose(eventID string, st state, code int, reason string, by Initiator, dur int64, in, out uint64) *Event {
	ev := goldenEvent(EventClose, eventID, st)
	ev.Code, ev.Reason, ev.Initiator = &code, &reason, by
	ev.DurationMS, ev.MessagesIn, ev.MessagesOut = &dur, &in, &out
	return ev
}

// goldenWebhooks are every body shape the bridge sends, by file name (without .json). Every
// initiator gets its close file, so the kit is shown to take each one.
func goldenWebhooks() map[string]*Event {
	open := goldenEvent(EventOpen, "OZ6ZB4BUN4W6Z7SQ6H3R2RTJXA", state{})
	open.Request = &HandshakeRequest{
		Method: "GET",
		Path:   "/ws",
		Query:  "room=42&lang=fr",
		Headers: map[string]string{
			"Cookie":          "PHPSESSID=9k2v0s6d1c; theme=dark",
			"Origin":          "https://app.example.com",
			"User-Agent":      "Mozilla/5.0 (X11; Linux x86_64)",
			"X-Forwarded-For": "203.0.113.7",
		},
		RemoteAddr:   "203.0.113.7:53122",
		Subprotocols: []string{"chat.v2", "chat.v1"},
	}
	// An open with nothing optional: no headers forwarded, no subprotocol offered.
	bare := goldenEvent(EventOpen, "4J7Q2NWMV3XKDZB6YHTRL5AFEE", state{})
	bare.Request = &HandshakeRequest{Method: "GET", Path: "/ws", Headers: map[string]string{}, RemoteAddr: "[2001:db8::7]:40100", Subprotocols: []string{}}

	// Text with what encoding/json escapes (<, >, &, U+2028) and what it does not (é, 😀).
	text := goldenMessage("ZKQ6W7DSQ7VQ2PZ5N7Z6BVB4EA", 1, false, []byte(`{"type":"say","text":"<b>héllo</b> & 😀`+"\u2028"+`"}`))
	binary := goldenMessage("M2V5NQ3WZ7YF6R4XKD2TBHPJLA", 2, true, []byte("\x00\xff\xfebin\n"))

	w := map[string]*Event{
		"webhook_open":           open,
		"webhook_open_bare":      bare,
		"webhook_message_text":   text,
		"webhook_message_binary": binary,
		// A client that leaves while PHP accepted it: no state, no time, no messages.
		"webhook_close_client_left": goldenClose("6CQW4GZ3YBNJ7T2VXK5RMDHLPE", state{Channels: []string{}}, 1006, "client left during the handshake", InitiatorClient, 0, 0, 0),
	}
	for i, c := range []struct {
		by     Initiator
		code   int
		reason string
	}{
		{InitiatorClient, 1001, "tab closed"},
		{InitiatorPHP, 4001, "kicked"},
		{InitiatorAPI, 1000, ""},
		{InitiatorServer, 1011, "message not delivered"},
		{InitiatorShutdown, 1001, "server shutdown"},
		{InitiatorSlowConsumer, 1008, "slow consumer"},
		{InitiatorNodeLost, 1006, "node lost"},
	} {
		id := "2GQ3B6VTR7WGN4QX2U2EZ3GTR" + string(rune('A'+i)) // 26 base32 characters, as rand.Text

		w["webhook_close_"+string(c.by)] = goldenClose(id, goldenState, c.code, c.reason, c.by, 163188, 17, 52)
	}
	return w
}

// goldenReply is a reply file: the event it answers, the status and either the JSON body of an
// accepting reply or the text of a rejection (with its Content-Type).
type goldenReply struct {
	Event       EventType       `json:"event"`
	Status      int             `json:"status"`
	Body        json.RawMessage `json:"body,omitempty"`
	ContentType string          `json:"content_type,omitempty"`
	Text        string          `json:"text,omitempty"`
}

func ptr[T any](v T) *T { return &v }

// goldenReplies are one reply per field and form a reply can take, by file name. The PHP test
// has a builder for each name, and each side fails on a name the other lacks.
func goldenReplies() map[string]goldenReply {
	accept := func(typ EventType, r Reply) goldenReply {
		b, err := json.Marshal(r)
		if err != nil {
			panic(err)
		}
		return goldenReply{Event: typ, Status: http.StatusOK, Body: b}
	}
	text, bin := "{\"type\":\"chat\",\"text\":\"hi <all> & you\"}", base64.StdEncoding.EncodeToString([]byte("\x00\xffbin"))
	return map[string]goldenReply{
		"reply_empty":                       {Event: EventMessage, Status: http.StatusNoContent},
		"reply_open_user":                   accept(EventOpen, Reply{UserID: ptr("42")}),
		"reply_open_anonymous":              accept(EventOpen, Reply{UserID: ptr("")}),
		"reply_open_subprotocol":            accept(EventOpen, Reply{Subprotocol: ptr("chat.v1")}),
		"reply_message_meta":                accept(EventMessage, Reply{Meta: json.RawMessage(`{"name":"Ann","tags":["a","b"],"n":3}`)}),
		"reply_message_meta_empty":          accept(EventMessage, Reply{Meta: json.RawMessage(`{}`)}),
		"reply_message_meta_clear":          accept(EventMessage, Reply{Meta: json.RawMessage(`null`)}),
		"reply_message_join_leave":          accept(EventMessage, Reply{Join: []string{"room:1", "room:2"}, Leave: []string{"lobby"}}),
		"reply_message_send":                accept(EventMessage, Reply{Send: []Frame{{Data: []byte(text)}, {Data: []byte("second")}}}),
		"reply_message_send_binary":         accept(EventMessage, Reply{Send: []Frame{{Binary: true, Data: []byte("\x00\xffbin")}}}),
		"reply_message_publish_connections": accept(EventMessage, Reply{Publish: []Publication{{To: Targets{Connections: []string{goldenConnID, "k3x9q2ab.Z2M7AAAAAAAAAAAA"}}, Data: ptr(text)}}}),
		"reply_message_publish_users":       accept(EventMessage, Reply{Publish: []Publication{{To: Targets{Users: []string{"42", "43"}}, Data: ptr(text)}}}),
		"reply_message_publish_channels":    accept(EventMessage, Reply{Publish: []Publication{{To: Targets{Channels: []string{"room:42"}}, Except: goldenConnID, Data: ptr(text)}}}),
		"reply_message_publish_all":         accept(EventMessage, Reply{Publish: []Publication{{To: Targets{All: true}, DataBase64: ptr(bin)}}}),
		"reply_message_publish_mixed": accept(EventMessage, Reply{Publish: []Publication{
			{To: Targets{Connections: []string{goldenConnID}, Users: []string{"42"}, Channels: []string{"room:42"}}, Except: "k3x9q2ab.Z2M7AAAAAAAAAAAA", Data: ptr(text)},
			{To: Targets{Channels: []string{"room:7"}}, DataBase64: ptr(bin)},
		}}),
		"reply_message_close": accept(EventMessage, Reply{Close: &CloseRequest{Code: 4001, Reason: "kicked"}}),
		"reply_close_publish": accept(EventClose, Reply{Publish: []Publication{{To: Targets{Channels: []string{"room:42"}}, Except: goldenConnID, Data: ptr(`{"type":"left","name":"Ann"}`)}}}),
		"reply_open_everything": accept(EventOpen, Reply{
			UserID:      ptr("42"),
			Meta:        json.RawMessage(`{"name":"Ann","role":"admin"}`),
			Join:        []string{"room:42", "user:42"},
			Leave:       []string{"lobby"},
			Send:        []Frame{{Data: []byte(`{"type":"welcome"}`)}, {Binary: true, Data: []byte("\x00\xffbin")}},
			Publish:     []Publication{{To: Targets{Channels: []string{"room:42"}}, Except: goldenConnID, Data: ptr(`{"type":"joined","name":"Ann"}`)}},
			Close:       &CloseRequest{Code: 1000, Reason: "done"},
			Subprotocol: ptr("chat.v1"),
		}),
		"reply_open_reject": {Event: EventOpen, Status: http.StatusUnauthorized, ContentType: "text/plain; charset=utf-8", Text: "log in first"},
	}
}

// goldenBytes is how a golden file is written: indented JSON (whitespace changes nothing for a
// JSON parser, and keeps the files reviewable) with encoding/json's escaping left as it is.
func goldenBytes(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatalf("encode golden value: %v", err)
	}
	return append(b, '\n')
}

// checkGolden compares the file name.json with want, or writes it under -update.
func checkGolden(t *testing.T, name string, want []byte) {
	t.Helper()
	path := filepath.Join(contractDir, name+".json")
	if *update {
		if err := os.MkdirAll(contractDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v; run `go test ./bridge -run TestContract -update` to write it", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what the Go types encode; if the change is meant, run `go test ./bridge -run TestContract -update`, commit it and update the PHP kit until its ContractTest passes\n got: %s\nwant: %s", path, got, want)
	}
}

// The golden directory holds exactly the files the Go side writes: a file left over from a
// removed case would go on being checked by PHP alone.
func TestContractFilesAreExactlyTheCases(t *testing.T) {
	if *update {
		t.Skip("-update rewrites the files")
	}
	var want []string
	for name := range goldenWebhooks() {
		want = append(want, name+".json")
	}
	for name := range goldenReplies() {
		want = append(want, name+".json")
	}
	entries, err := os.ReadDir(contractDir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s holds %v, the cases are %v", contractDir, got, want)
	}
}

func TestContractWebhooks(t *testing.T) {
	for name, ev := range goldenWebhooks() {
		t.Run(name, func(t *testing.T) {
			b := goldenBytes(t, ev)
			checkGolden(t, name, b)
			// What PHP parses must be what the bridge means: the file decodes back to the event.
			var back Event
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("golden body is not an Event: %v", err)
			}
			if again := goldenBytes(t, &back); !bytes.Equal(again, b) {
				t.Errorf("golden body does not round-trip:\n got: %s\nwant: %s", again, b)
			}
		})
	}
}

func TestContractReplies(t *testing.T) {
	cfg := testConfig(t, testWebhookURL)
	l := cfg.limits()
	for name, gr := range goldenReplies() {
		t.Run(name, func(t *testing.T) {
			checkGolden(t, name, goldenBytes(t, gr))
			if gr.Status < 200 || gr.Status > 299 {
				if gr.Body != nil {
					t.Fatal("a rejection carries text, not a reply")
				}
				return
			}
			// Every accepting reply is one decodeReply takes for its event, whole, and the real
			// Reply type encodes it back unchanged: no field of the file is unknown to Go.
			r, err := decodeReply(gr.Event, gr.Body, l)
			if err != nil {
				t.Fatalf("decodeReply(%s) refuses the golden reply: %v", gr.Event, err)
			}
			if gr.Body == nil {
				if !isEmptyReply(r) {
					t.Errorf("an empty body decodes to %+v, want an empty reply", r)
				}
				return
			}
			again, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, gr.Body) {
				t.Errorf("decoded reply encodes as %s, golden is %s", again, gr.Body)
			}
		})
	}
}

func isEmptyReply(r *Reply) bool {
	b, _ := json.Marshal(r)
	return string(b) == "{}"
}

// jsonShape describes a JSON value by its kinds and keys, not its values: what the bridge
// sends must have the shape of the golden file, whatever the ids, times and counts.
func jsonShape(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = jsonShape(e)
		}
		return m
	case []any:
		if len(v) == 0 {
			return "array"
		}
		return []any{jsonShape(v[0])}
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func shapeOf(t *testing.T, b []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	s, _ := json.Marshal(jsonShape(v))
	return string(s)
}

// The golden events are built by copies of what session.go does; this checks the
// copies against a real bridge over TCP: each webhook it sends has the shape (every key, every
// kind of value) of its golden file, so a field added or renamed where the bridge builds an
// event shows here even if the copy above was not updated.
func TestContractMatchesBridge(t *testing.T) {
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventOpen {
			return http.StatusOK, map[string]any{"user_id": goldenState.UserID, "meta": goldenState.Meta, "join": goldenState.Channels}
		}
		return http.StatusNoContent, nil
	})
	b := newBridge(t, php, nil)
	// The headers the golden open forwards, so that its request.headers has the same keys.
	h := http.Header{
		"Cookie":                 {"PHPSESSID=9k2v0s6d1c"},
		"Origin":                 {b.public.URL},
		"User-Agent":             {"contract-test"},
		"Sec-Websocket-Protocol": {"chat.v1"},
	}
	c, _, err := b.dialErr(t, "room=42", h)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	open := php.next(t, EventOpen)
	id := open.Event.ConnectionID
	ctx := t.Context()
	if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	text := php.nextFor(t, EventMessage, id)
	if err := c.Write(ctx, websocket.MessageBinary, []byte{0, 1}); err != nil {
		t.Fatal(err)
	}
	binary := php.nextFor(t, EventMessage, id)
	c.Close(websocket.StatusGoingAway, "tab closed")
	closed := php.nextFor(t, EventClose, id)

	for _, tc := range []struct {
		golden string
		got    hookCall
	}{
		{"webhook_open", open},
		{"webhook_message_text", text},
		{"webhook_message_binary", binary},
		{"webhook_close_client", closed},
	} {
		want, err := os.ReadFile(filepath.Join(contractDir, tc.golden+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if g, w := shapeOf(t, tc.got.Body), shapeOf(t, want); g != w {
			t.Errorf("the bridge's %s webhook has another shape than %s.json:\n got: %s\nwant: %s", tc.got.Event.Type, tc.golden, g, w)
		}
	}
}

// The golden rejection, answered by PHP, is what the browser gets: the status, the body and
// its Content-Type (PROTOCOL.md, open: "any other status").
func TestContractRejectReachesBrowser(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(contractDir, "reply_open_reject.json"))
	if err != nil {
		t.Fatal(err)
	}
	var gr goldenReply
	if err := json.Unmarshal(raw, &gr); err != nil {
		t.Fatal(err)
	}
	// Not fakePHP: it lets net/http sniff a Content-Type, which would hide a dropped header.
	php := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", gr.ContentType)
		w.WriteHeader(gr.Status)
		io.WriteString(w, gr.Text)
	}))
	defer php.Close()
	b := startBridge(t, testConfig(t, php.URL), nil, nil)
	_, resp, err := b.dialErr(t, "", nil)
	if err == nil {
		t.Fatal("the upgrade succeeded; PHP refused it")
	}
	if resp == nil {
		t.Fatalf("no HTTP answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != gr.Status || resp.Header.Get("Content-Type") != gr.ContentType || strings.TrimSpace(string(body)) != gr.Text {
		t.Errorf("browser got %d %q %q, want %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body, gr.Status, gr.ContentType, gr.Text)
	}
}
