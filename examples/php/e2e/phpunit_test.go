package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// openStub answers open webhooks as a minimal app would: the user is ?user=, the channels
// ?channels= (comma-separated). It stands in for PHP so the PHPUnit suite tests only the
// client, against connections whose state is known.
func openStub(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			Type    string `json:"type"`
			Request struct {
				Query string `json:"query"`
			} `json:"request"`
		}
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if ev.Type != "open" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		q, _ := url.ParseQuery(ev.Request.Query)
		reply := map[string]any{"user_id": q.Get("user")}
		if ch := q.Get("channels"); ch != "" {
			reply["join"] = strings.Split(ch, ",")
		}
		json.NewEncoder(w).Encode(reply)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// dial opens a WebSocket to a bridge as user, in channels.
func dial(t *testing.T, b *bridge, user, channels string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startLimit)
	defer cancel()
	u := "ws://" + b.public + "/ws?" + url.Values{"user": {user}, "channels": {channels}}.Encode()
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("dial %s as %s: %v", b.name, user, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// TestPHPUnit runs the kit's PHPUnit suite (examples/php/lib) with the client tests pointed at
// two real wsbridge processes: one with its push API on TCP behind a token, one on a unix socket.
// Then it checks on the sockets that what PHP sent arrived: the kick and a binary publication.
func TestPHPUnit(t *testing.T) {
	testkit.RequireTool(t, "php-cli", "php")
	phpunit := testkit.RequireTool(t, "phpunit", "phpunit")
	if out, err := exec.Command("php", "-r", `exit(extension_loaded("curl") ? 0 : 1);`).CombinedOutput(); err != nil {
		testkit.Missing(t, "the PHP curl extension is not loaded (Debian package php-curl): "+string(out))
	}

	stub := openStub(t)
	const token = "phpunit-token"
	tcp := startBridge(t, "wsbridge-tcp", map[string]string{
		"WSBRIDGE_WEBHOOK_URL":  stub.URL,
		"WSBRIDGE_API_TOKEN":    token,
		"WSBRIDGE_MAX_CHANNELS": "3", // testJoinBeyondTheChannelLimit
	})
	sock := filepath.Join(t.TempDir(), "api.sock")
	unix := startBridge(t, "wsbridge-unix", map[string]string{
		"WSBRIDGE_WEBHOOK_URL":     stub.URL,
		"WSBRIDGE_INTERNAL_LISTEN": "unix:" + sock,
	})

	dial(t, tcp, "alice", "room:a")
	dial(t, tcp, "alice", "room:a")
	dial(t, tcp, "bob", "room:a")
	carol := dial(t, tcp, "carol", "")
	erin := dial(t, tcp, "erin", "")
	dial(t, unix, "dave", "")

	blob := make([]byte, 4096)
	rand.Read(blob)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, phpunit, "--fail-on-skipped", "--fail-on-risky", "-c", filepath.Join(repoRoot, "examples/php/lib/phpunit.xml.dist"))
	cmd.Env = append(cmd.Environ(),
		"WSBRIDGE_TEST_API=http://"+tcp.internal,
		"WSBRIDGE_TEST_TOKEN="+token,
		"WSBRIDGE_TEST_SOCKET="+sock,
		"WSBRIDGE_TEST_BLOB_HEX="+hex.EncodeToString(blob),
		"WSBRIDGE_TEST_CLOSED_URL=http://"+testkit.FreeAddr(t),
	)
	out, err := cmd.CombinedOutput()
	t.Logf("phpunit:\n%s", out)
	if err != nil {
		t.Fatalf("phpunit: %v", err)
	}
	if !bytes.Contains(out, []byte("OK (")) {
		t.Fatalf("phpunit did not report OK")
	}

	// The kick reached carol's socket with PHP's code and reason.
	rctx, rcancel := context.WithTimeout(context.Background(), startLimit)
	defer rcancel()
	for err == nil { // frames published to everyone came first
		_, _, err = carol.Read(rctx)
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4001 || ce.Reason != "kicked" {
		t.Errorf("carol's socket after closeUser: %v, want close 4001 kicked", err)
	}
	// erin's first frames: the text to everyone, then PHP's binary publication, byte for byte.
	for {
		typ, got, err := erin.Read(rctx)
		if err != nil {
			t.Fatalf("erin's socket: %v", err)
		}
		if typ == websocket.MessageBinary {
			if !bytes.Equal(got, blob) {
				t.Errorf("binary publication: got %d bytes, want the %d sent", len(got), len(blob))
			}
			break
		}
		if string(got) != "everyone" {
			t.Errorf("erin got text %q", got)
		}
	}
}
