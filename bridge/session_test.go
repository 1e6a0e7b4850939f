package bridge

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Every webhook body names the transport the connection came by (PROTOCOL.md, "transport"), so
// that PHP can tell a WebSocket from an SSE or Pusher client: the open, every message and the
// close of a WebSocket say "ws".
func TestSessionWebhooksNameTransport(t *testing.T) {
	php := newFakePHP(t, nil)
	b := newBridge(t, php, nil)
	c := b.dial(t, "")
	open := php.next(t, EventOpen)
	id := open.Event.ConnectionID
	write(t, c, "hello")
	msg := php.nextFor(t, EventMessage, id)
	c.Close(websocket.StatusNormalClosure, "")
	closed := php.nextFor(t, EventClose, id)
	for _, call := range []hookCall{open, msg, closed} {
		assertTransport(t, call, "ws")
	}
}

func assertTransport(t *testing.T, call hookCall, want string) {
	t.Helper()
	var body map[string]json.RawMessage
	if err := json.Unmarshal(call.Body, &body); err != nil {
		t.Fatalf("%s webhook: %v", call.Event.Type, err)
	}
	if got := string(body["transport"]); got != `"`+want+`"` {
		t.Errorf("%s webhook: \"transport\" is %s, want %q", call.Event.Type, got, want)
	}
}

// fakeTransport is a transport as an SSE or Pusher one will be: one type over the session,
// with no lifecycle of its own. It records what the session and the hub hand it.
type fakeTransport struct {
	session
	got     chan Delivery // Send and sendReply, in order
	closed  chan struct{} // closed by the first Close: serve returns
	closeBy chan Initiator
}

func (f *fakeTransport) ID() string     { return f.id }
func (f *fakeTransport) kind() string   { return "sse" }
func (f *fakeTransport) base() *session { return &f.session }
func (f *fakeTransport) Send(d Delivery) bool {
	if f.closing.Load() {
		return false
	}
	f.got <- d
	return true
}
func (f *fakeTransport) sendReply(fs []Frame) {
	for _, fr := range fs {
		f.Send(newDelivery(fr))
	}
}
func (f *fakeTransport) Close(code int, reason string, by Initiator) bool {
	if !f.recordClose(code, reason, by) {
		return false
	}
	f.closeBy <- by
	close(f.closed)
	return true
}

// A transport other than WebSocket gets the whole life of a connection from the session alone:
// the open webhook (naming its transport) and its reply's frames, registration (a push reaches
// it), message webhooks, and when it is closed exactly one close webhook, after which the hub
// no longer lists it.
func TestSessionServesAnotherTransport(t *testing.T) {
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventOpen {
			return http.StatusOK, map[string]any{"user_id": "7", "join": []string{"room"}, "send": []string{"welcome"}}
		}
		return http.StatusOK, map[string]any{"send": []string{"echo"}}
	})
	b := newBridge(t, php, nil)
	s := b.srv
	ft := &fakeTransport{got: make(chan Delivery, 16), closed: make(chan struct{}), closeBy: make(chan Initiator, 1)}
	served := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o, ok := s.openSession(w, r, ft, nil)
		if !ok {
			return
		}
		s.runSession(ft, o, func(context.Context) { close(served); <-ft.closed })
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hs.Close()
	res, err := hs.Client().Get(hs.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d, want 204", res.StatusCode)
	}
	open := php.next(t, EventOpen)
	assertTransport(t, open, "sse")
	id := open.Event.ConnectionID
	next := func(what string) string {
		t.Helper()
		select {
		case d := <-ft.got:
			return string(d.Data)
		case <-time.After(waitLimit):
			t.Fatalf("%s did not reach the transport within %s", what, waitLimit)
			return ""
		}
	}
	if got := next("the open reply's frame"); got != "welcome" {
		t.Fatalf("open reply delivered %q, want welcome", got)
	}
	waitClosed(t, served)

	data := "to the room"
	if n, err := s.publish(t.Context(), &Publication{To: Targets{Channels: []string{"room"}}, Data: &data}); err != nil || n != 1 {
		t.Fatalf("publish delivered %d (err %v), want 1", n, err)
	}
	if got := next("a publication"); got != data {
		t.Fatalf("publication delivered %q, want %q", got, data)
	}

	s.deliverMessage(t.Context(), ft, 1, false, []byte("hi"))
	msg := php.nextFor(t, EventMessage, id)
	assertTransport(t, msg, "sse")
	if msg.Event.Data == nil || *msg.Event.Data != "hi" || msg.Event.UserID != "7" {
		t.Fatalf("message webhook carries data %v user %q, want hi from 7", msg.Event.Data, msg.Event.UserID)
	}
	if got := next("the message reply's frame"); got != "echo" {
		t.Fatalf("message reply delivered %q, want echo", got)
	}

	if n, err := s.hub.CloseConnections(t.Context(), Targets{Connections: []string{id}}, CloseRequest{Code: 4000, Reason: "bye"}, InitiatorAPI); err != nil || n != 1 {
		t.Fatalf("close reached %d (err %v), want 1", n, err)
	}
	closed := php.nextFor(t, EventClose, id)
	assertTransport(t, closed, "sse")
	if c := closed.Event; c.Code == nil || *c.Code != 4000 || c.Initiator != InitiatorAPI {
		t.Fatalf("close webhook: code %v initiator %q, want 4000 by api", c.Code, c.Initiator)
	}
	if ft.Close(1000, "again", InitiatorPHP) {
		t.Error("a second Close was taken as the first")
	}
	// Shutdown returns once every session has ended: any second close webhook was sent by then.
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if s.hub.State(id).UserID != "" {
		t.Error("the hub still holds the ended connection's state")
	}
	for {
		select {
		case c := <-php.calls:
			if c.Event.ConnectionID == id && c.Event.Type == EventClose {
				t.Fatal("a second close webhook for one connection")
			}
			continue
		default:
		}
		break
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		t.Fatalf("not within %s", waitLimit)
	}
}
