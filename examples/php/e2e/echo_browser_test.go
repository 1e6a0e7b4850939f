package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// TestEchoBrowser runs examples/php/echo in Debian's chromium: Laravel Echo and pusher-js as a
// Laravel page loads them, against wsbridge's Pusher mode with the app behind its reverse proxy
// (echo_browser.mjs). The open webhooks must carry the session cookie of the handshake.
func TestEchoBrowser(t *testing.T) {
	node := testkit.RequireTool(t, "nodejs", "node")
	chromium := testkit.RequireTool(t, "chromium", "chromium", "/usr/bin/chromium")
	testkit.RequireTool(t, "php-cli", "php")
	for _, m := range []string{"playwright-core/package.json", "pusher-js/dist/web/pusher.min.js", "laravel-echo/dist/echo.iife.js"} {
		if _, err := os.Stat(filepath.Join("node_modules", m)); err != nil {
			testkit.Missing(t, m+" is not installed: run `npm ci` in examples/php/e2e")
		}
	}
	hooks := newPusherHooks(t)
	b := startEchoApp(t, hooks)
	artifacts := os.Getenv("WSBRIDGE_ARTIFACTS")
	if artifacts == "" {
		artifacts = t.TempDir()
	} else if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "echo_browser.mjs")
	cmd.Env = append(os.Environ(), "APP_URL=http://"+b.public, "API_URL=http://"+b.internal,
		"ARTIFACTS="+artifacts, "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	t.Logf("echo_browser.mjs:\n%s", out)
	if err != nil || !strings.Contains(string(out), " passed, 0 failed") {
		t.Fatalf("echo_browser.mjs: %v (screenshots in %s)", err, artifacts)
	}
	// Both pages' handshakes reached PHP with their session cookie, as "pusher" connections.
	for _, user := range []string{"ann", "bob"} {
		ev := hooks.next(t, "open")
		req, _ := ev["request"].(map[string]any)
		headers, _ := req["headers"].(map[string]any)
		if ev["transport"] != "pusher" || !strings.Contains(fmt.Sprint(headers["Cookie"]), "demo_user=") {
			t.Errorf("open webhook for %s: transport %v, Cookie %v; want pusher and the session cookie", user, ev["transport"], headers["Cookie"])
		}
	}
}
