package bridge

import (
	"encoding/json"
	"testing"

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
