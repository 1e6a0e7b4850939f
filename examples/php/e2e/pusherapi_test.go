package e2e

import (
	"bytes"
	"context"
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

	env := append(os.Environ(),
		"WSBRIDGE_TEST_PUSHER_API=http://"+b.internal,
		"WSBRIDGE_TEST_PUSHER_APP_ID="+appID,
		"WSBRIDGE_TEST_PUSHER_KEY="+key,
		"WSBRIDGE_TEST_PUSHER_SECRET="+secret,
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

	// Laravel 8's PusherBroadcaster over the kit's stand-in for the Pusher SDK.
	if _, err := os.Stat("/usr/share/php/Illuminate/Broadcasting/autoload.php"); err != nil {
		testkit.Missing(t, "Laravel is not installed (Debian package php-laravel-framework)")
	}
	runPHPUnit(t, phpunit, env, "LaravelBroadcasterTest.php")
	expect(`{"order":{"id":8}}`)

	resp, err := http.Post("http://"+b.internal+"/v1/publish", "application/json", strings.NewReader(`{"to":{"all":true},"data":"marker"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, got, err := alice.Read(rctx); err != nil || string(got) != "marker" {
		t.Errorf("after PHP's events alice got %q (%v), want the marker: a refused request delivered something", got, err)
	}
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
