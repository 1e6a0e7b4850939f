package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// TestPusherAPIPHPUnit runs the kit's PusherClient (examples/php/lib/src/PusherClient.php, signed
// as the Pusher PHP SDK signs) against the real wsbridge binary in Pusher mode: the PHPUnit test
// (pusher/PusherApiTest.php) triggers an event and checks the refusals of a bad signature, a
// stale timestamp and a wrong body MD5; this test checks that the event reached the socket of
// the channel's subscriber, and only the events PHP sent.
func TestPusherAPIPHPUnit(t *testing.T) {
	testkit.RequireTool(t, "php-cli", "php")
	phpunit := testkit.RequireTool(t, "phpunit", "phpunit")
	if out, err := exec.Command("php", "-r", `exit(extension_loaded("curl") ? 0 : 1);`).CombinedOutput(); err != nil {
		testkit.Missing(t, "the PHP curl extension is not loaded (Debian package php-curl): "+string(out))
	}
	stub := openStub(t)
	const appID, key, secret = "phpunit-app", "phpunit-key", "phpunit-secret"
	b := startBridge(t, "wsbridge-pusher", map[string]string{
		"WSBRIDGE_WEBHOOK_URL":   stub.URL,
		"WSBRIDGE_PUSHER_APP_ID": appID,
		"WSBRIDGE_PUSHER_KEY":    key,
		"WSBRIDGE_PUSHER_SECRET": secret,
	})
	alice := dial(t, b, "alice", "orders")
	bob, bobSocket := pusherSubscriber(t, b, key, "orders")

	env := append(os.Environ(),
		"WSBRIDGE_TEST_PUSHER_API=http://"+b.internal,
		"WSBRIDGE_TEST_PUSHER_APP_ID="+appID,
		"WSBRIDGE_TEST_PUSHER_KEY="+key,
		"WSBRIDGE_TEST_PUSHER_SECRET="+secret,
		"WSBRIDGE_TEST_PUSHER_SOCKET="+bobSocket,
	)
	rctx, rcancel := context.WithTimeout(context.Background(), startLimit)
	defer rcancel()
	expect := func(wants ...string) {
		t.Helper()
		for _, want := range wants {
			typ, got, err := alice.Read(rctx)
			if err != nil {
				t.Fatalf("alice's socket: %v", err)
			}
			if typ != websocket.MessageText || string(got) != want {
				t.Errorf("alice got %q, want %q", got, want)
			}
		}
	}

	// A native WebSocket subscriber gets each event's data alone, in order: the trigger, the
	// second trigger, the one signed 590 s ago. The refused requests delivered nothing.
	runPHPUnit(t, phpunit, env, "PusherApiTest.php")
	expect(`{"id":7}`, "plain text", "x")
	// bob, a Pusher-protocol subscriber, gets the same events as Pusher envelopes.
	expectPusher := func(want string) {
		t.Helper()
		_, got, err := bob.Read(rctx)
		if err != nil {
			t.Fatalf("bob's socket: %v", err)
		}
		if string(got) != want {
			t.Errorf("bob got %s, want %s", got, want)
		}
	}
	expectPusher(`{"event":"order.shipped","channel":"orders","data":"{\"id\":7}"}`)
	expectPusher(`{"event":"order.counted","channel":"orders","data":"plain text"}`)
	expectPusher(`{"event":"e","channel":"orders","data":"x"}`)

	// Laravel 8's PusherBroadcaster over the kit's stand-in for the Pusher SDK.
	if _, err := os.Stat("/usr/share/php/Illuminate/Broadcasting/autoload.php"); err != nil {
		testkit.Missing(t, "Laravel is not installed (Debian package php-laravel-framework)")
	}
	runPHPUnit(t, phpunit, env, "LaravelBroadcasterTest.php")
	expect(`{"order":{"id":8}}`)
	// toOthers() named bob's socket: bob's next event is the marker below, not the broadcast.

	resp, err := http.Post("http://"+b.internal+"/v1/publish", "application/json", strings.NewReader(`{"to":{"all":true},"data":"marker"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, got, err := alice.Read(rctx); err != nil || string(got) != "marker" {
		t.Errorf("after PHP's events alice got %q (%v), want the marker: a refused request delivered something", got, err)
	}
	expectPusher(`{"event":"wsbridge:message","data":"marker"}`)
}

// pusherSubscriber connects as pusher-js does to /app/{key}, subscribes a public channel and returns
// the connection and its socket id.
func pusherSubscriber(t *testing.T, b *bridge, key, channel string) (*websocket.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startLimit)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+b.public+"/app/"+key+"?protocol=7&client=js&version=8.6.0&user=bob", nil)
	if err != nil {
		t.Fatalf("dial /app/%s: %v", key, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	var msg struct{ Event, Data string }
	_, raw, err := c.Read(ctx)
	if err != nil || json.Unmarshal(raw, &msg) != nil || msg.Event != "pusher:connection_established" {
		t.Fatalf("first message %s (%v), want pusher:connection_established", raw, err)
	}
	var est struct {
		SocketID string `json:"socket_id"`
	}
	if err := json.Unmarshal([]byte(msg.Data), &est); err != nil || est.SocketID == "" {
		t.Fatalf("connection_established data %q", msg.Data)
	}
	sub, _ := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": map[string]string{"channel": channel}})
	if err := c.Write(ctx, websocket.MessageText, sub); err != nil {
		t.Fatal(err)
	}
	if _, raw, err = c.Read(ctx); err != nil || json.Unmarshal(raw, &msg) != nil || msg.Event != "pusher_internal:subscription_succeeded" {
		t.Fatalf("subscribe %s: %s (%v)", channel, raw, err)
	}
	return c, est.SocketID
}

// runPHPUnit runs one test file of examples/php/e2e/pusher with the kit's autoloader.
func runPHPUnit(t *testing.T, phpunit string, env []string, file string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, phpunit, "--fail-on-skipped", "--fail-on-risky", "--fail-on-warning", "--do-not-cache-result",
		"--bootstrap", filepath.Join(repoRoot, "examples/php/lib/autoload.php"),
		filepath.Join(repoRoot, "examples/php/e2e/pusher", file))
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	t.Logf("phpunit %s:\n%s", file, out)
	if err != nil {
		t.Fatalf("phpunit %s: %v", file, err)
	}
	if !bytes.Contains(out, []byte("OK (")) {
		t.Fatalf("phpunit %s did not report OK", file)
	}
}

// TestPusherWebhooksToPHP: the binary's Pusher-format webhooks reach a PHP endpoint (php -S) that
// verifies them with the kit (PusherSignature::verifyWebhook): a channel's first member makes
// channel_occupied, its last one leaving channel_vacated, in that order, none refused.
func TestPusherWebhooksToPHP(t *testing.T) {
	php := testkit.RequireTool(t, "php-cli", "php")
	stub := openStub(t)
	const appID, key, secret = "hooks-app", "hooks-key", "hooks-secret"
	events := filepath.Join(t.TempDir(), "events.jsonl")
	addr := testkit.FreeAddr(t)
	app := start(t, "php-pusher-webhook", []string{"WSBRIDGE_TEST_PUSHER_EVENTS=" + events,
		"WSBRIDGE_TEST_PUSHER_KEY=" + key, "WSBRIDGE_TEST_PUSHER_SECRET=" + secret},
		php, "-S", addr, filepath.Join(repoRoot, "examples/php/e2e/pusher/webhook.php"))
	app.waitHTTP(t, "http://"+addr+"/")
	os.Remove(events) // the readiness probe's unsigned request was refused and noted
	b := startBridge(t, "wsbridge-pusher-hooks", map[string]string{
		"WSBRIDGE_WEBHOOK_URL":        stub.URL,
		"WSBRIDGE_PUSHER_APP_ID":      appID,
		"WSBRIDGE_PUSHER_KEY":         key,
		"WSBRIDGE_PUSHER_SECRET":      secret,
		"WSBRIDGE_PUSHER_WEBHOOK_URL": "http://" + addr + "/",
	})

	// waitEvents waits until PHP has recorded n lines and returns them.
	waitEvents := func(n int) []map[string]any {
		t.Helper()
		var got []map[string]any
		app.waitUntil(t, fmt.Sprintf("%d pusher webhook events", n), func() error {
			raw, _ := os.ReadFile(events)
			got = nil
			for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
				var ev map[string]any
				if line != "" && json.Unmarshal([]byte(line), &ev) == nil {
					got = append(got, ev)
				}
			}
			if len(got) < n {
				return fmt.Errorf("%d recorded", len(got))
			}
			return nil
		})
		return got
	}
	c := dial(t, b, "alice", "room")
	got := waitEvents(1)
	if got[0]["name"] != "channel_occupied" || got[0]["channel"] != "room" {
		t.Fatalf("first event %v, want channel_occupied room", got[0])
	}
	c.Close(websocket.StatusNormalClosure, "")
	got = waitEvents(2)
	if got[1]["name"] != "channel_vacated" || got[1]["channel"] != "room" {
		t.Errorf("second event %v, want channel_vacated room", got[1])
	}
	for _, ev := range got {
		if _, refused := ev["refused"]; refused {
			t.Errorf("PHP refused a pusher webhook: %v", ev)
		}
		if ms, _ := ev["time_ms"].(float64); ms < float64(time.Now().Add(-time.Hour).UnixMilli()) {
			t.Errorf("time_ms %v is not the time of sending", ev["time_ms"])
		}
	}
	if len(got) != 2 {
		t.Errorf("PHP recorded %v, want exactly the two events", got)
	}
}
