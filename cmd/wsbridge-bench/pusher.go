package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/coder/websocket"
)

// -pusher: the clients speak the Pusher protocol (as pusher-js does) on /app/{key} instead of
// plain WebSocket on /ws, so that the same scenarios measure a Pusher-mode connection: its idle
// memory, and a broadcast as every Pusher subscriber gets it, {"event","channel","data"} encoded
// once per publication. The bench hook's open reply still joins channel bench and sends the id
// frame; each client also subscribes to bench as pusher-js would, and waits for the answer.
var pusherMode bool

const benchPusherKey = "bench-key"

// pusherEnv turns the started bridge's Pusher mode on.
func pusherEnv() []string {
	return []string{"WSBRIDGE_PUSHER_APP_ID=1", "WSBRIDGE_PUSHER_KEY=" + benchPusherKey, "WSBRIDGE_PUSHER_SECRET=bench-secret"}
}

// pusherPath is the handshake's path and query, as pusher-js 8 sends it.
const pusherPath = "/app/" + benchPusherKey + "?protocol=7&client=js&version=8.6.0"

// pusherEstablished reads pusher:connection_established, the first message of every connection.
func pusherEstablished(ctx context.Context, ws *websocket.Conn) error {
	_, b, err := ws.Read(ctx)
	if err != nil {
		return fmt.Errorf("read connection_established: %w", err)
	}
	if !strings.Contains(string(b), `"pusher:connection_established"`) {
		return fmt.Errorf("first message %q is not pusher:connection_established", b)
	}
	return nil
}

// pusherSubscribe subscribes to channel bench and waits for subscription_succeeded.
func pusherSubscribe(ctx context.Context, ws *websocket.Conn) error {
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"event":"pusher:subscribe","data":{"channel":"bench"}}`)); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	_, b, err := ws.Read(ctx)
	if err != nil {
		return fmt.Errorf("read subscription_succeeded: %w", err)
	}
	if !strings.Contains(string(b), `"pusher_internal:subscription_succeeded"`) {
		return fmt.Errorf("subscribe answered %q", b)
	}
	return nil
}
