package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// The Pusher mode with the real clients: pusher-js 8 (its node build, driven by pusher_node.mjs)
// against the wsbridge binary, with the auth endpoint of examples/php/echo served by php -S
// through wsbridge's reverse proxy, and wsbridge's own webhooks recorded here.

const (
	echoKey    = "app-key"
	echoSecret = "app-secret"
)

// pusherHooks records wsbridge's webhooks; refuse makes it answer the next open with 403.
type pusherHooks struct {
	*httptest.Server
	calls  chan map[string]any
	refuse atomic.Bool
}

func newPusherHooks(t *testing.T) *pusherHooks {
	h := &pusherHooks{calls: make(chan map[string]any, 1000)}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev map[string]any
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		if ev["type"] == "open" && h.refuse.CompareAndSwap(true, false) {
			http.Error(w, "not you", http.StatusForbidden)
			ev["refused"] = true
		} else {
			w.WriteHeader(http.StatusNoContent)
		}
		h.calls <- ev
	}))
	t.Cleanup(h.Close)
	return h
}

// next returns the next webhook of type typ, skipping others.
func (h *pusherHooks) next(t *testing.T, typ string) map[string]any {
	t.Helper()
	deadline := time.After(startLimit)
	for {
		select {
		case ev := <-h.calls:
			if ev["type"] == typ {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s webhook within %s", typ, startLimit)
		}
	}
}

// pusherDriver is pusher_node.mjs: commands in, what the clients saw out.
type pusherDriver struct {
	in     io.WriteCloser
	events chan map[string]any
	mu     sync.Mutex
	// pending holds events read while waiting for another client's.
	pending []map[string]any
}

func startPusherDriver(t *testing.T) *pusherDriver {
	t.Helper()
	node := testkit.RequireTool(t, "nodejs", "node")
	if _, err := os.Stat("node_modules/pusher-js/dist/node/pusher.js"); err != nil {
		testkit.Missing(t, "pusher-js is not installed: run `npm ci` in examples/php/e2e")
	}
	cmd := exec.Command(node, "pusher_node.mjs")
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &pusherDriver{in: in, events: make(chan map[string]any, 1000)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				d.events <- ev
			}
		}
		close(d.events)
	}()
	t.Cleanup(func() {
		in.Close() // the driver exits when stdin ends
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("driver stderr:\n%s", stderr.String())
		}
	})
	return d
}

func (d *pusherDriver) do(t *testing.T, cmd map[string]any) {
	t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := d.in.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
}

// expect returns the next event of client id that match accepts; the others of that client
// before it fail the test (so nothing unexpected slips by), other clients' are kept for later.
func (d *pusherDriver) expect(t *testing.T, id, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, ev := range d.pending {
		if ev["id"] == id {
			d.pending = append(d.pending[:i:i], d.pending[i+1:]...)
			if !match(ev) {
				t.Fatalf("%s: want %s, got %v", id, what, ev)
			}
			return ev
		}
	}
	deadline := time.After(startLimit)
	for {
		select {
		case ev, ok := <-d.events:
			if !ok {
				t.Fatalf("%s: driver ended before %s", id, what)
			}
			if ev["type"] == "driver_error" {
				t.Fatalf("driver: %v", ev)
			}
			if ev["id"] != id {
				d.pending = append(d.pending, ev)
				continue
			}
			if ev["type"] == "state" && ev["current"] == "connecting" {
				continue // pusher-js's own step before connected or a refusal
			}
			if !match(ev) {
				t.Fatalf("%s: want %s, got %v", id, what, ev)
			}
			return ev
		case <-deadline:
			t.Fatalf("%s: no %s within %s", id, what, startLimit)
		}
	}
}

func pusherIs(typ string, kv ...string) func(map[string]any) bool {
	return func(ev map[string]any) bool {
		if ev["type"] != typ {
			return false
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if fmt.Sprint(ev[kv[i]]) != kv[i+1] {
				return false
			}
		}
		return true
	}
}

// startEchoApp runs examples/php/echo with php -S, and wsbridge in front of it in Pusher mode.
func startEchoApp(t *testing.T, hooks *pusherHooks) *bridge {
	t.Helper()
	php := testkit.RequireTool(t, "php-cli", "php")
	appAddr := testkit.FreeAddr(t)
	abs, _ := filepath.Abs("node_modules")
	app := start(t, "php-echo", []string{"PUSHER_APP_KEY=" + echoKey, "PUSHER_APP_SECRET=" + echoSecret, "ECHO_ASSETS=" + abs},
		php, "-S", appAddr, filepath.Join(repoRoot, "examples/php/echo/public/index.php"))
	app.waitHTTP(t, "http://"+appAddr+"/")
	return startBridge(t, "wsbridge-pusher", map[string]string{
		"WSBRIDGE_WEBHOOK_URL":   hooks.URL + "/hook",
		"WSBRIDGE_UPSTREAM":      "http://" + appAddr,
		"WSBRIDGE_PUSHER_APP_ID": "1001", "WSBRIDGE_PUSHER_KEY": echoKey, "WSBRIDGE_PUSHER_SECRET": echoSecret,
		"WSBRIDGE_LOG_LEVEL": "debug",
	})
}

// pusherPublish pushes through the native API (the Pusher HTTP API is another branch's).
func pusherPublish(t *testing.T, b *bridge, body map[string]any) {
	t.Helper()
	raw, _ := json.Marshal(body)
	resp, err := http.Post("http://"+b.internal+"/v1/publish", "application/json", strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("publish: %d", resp.StatusCode)
	}
}

// TestPusherJS walks pusher-js through every part of the protocol wsbridge serves.
func TestPusherJS(t *testing.T) {
	hooks := newPusherHooks(t)
	b := startEchoApp(t, hooks)
	d := startPusherDriver(t)
	host, port, _ := strings.Cut(b.public, ":")
	var portN int
	fmt.Sscan(port, &portN)
	auth := "http://" + b.public + "/broadcasting/auth"
	connect := func(id, cookie string, extra map[string]any) string {
		cmd := map[string]any{"op": "connect", "id": id, "key": echoKey, "host": host, "port": portN, "auth": auth, "cookie": cookie}
		for k, v := range extra {
			cmd[k] = v
		}
		d.do(t, cmd)
		ev := d.expect(t, id, "connected", pusherIs("state", "current", "connected"))
		sid := fmt.Sprint(ev["socket_id"])
		if !regexp.MustCompile(`^\d+\.\d+$`).MatchString(sid) {
			t.Fatalf("%s: socket_id %q is not \\d+.\\d+", id, sid)
		}
		open := hooks.next(t, "open")
		if open["transport"] != "pusher" || open["connection_id"] != sid {
			t.Fatalf("open webhook %v: want transport pusher and connection_id %s", open, sid)
		}
		return sid
	}

	t.Run("wrong key: 4001, no reconnect", func(t *testing.T) {
		d.do(t, map[string]any{"op": "connect", "id": "wrong", "key": "nope", "host": host, "port": portN, "auth": auth})
		d.expect(t, "wrong", "error 4001", pusherIs("error", "code", "4001"))
		d.expect(t, "wrong", "disconnected", pusherIs("state", "current", "disconnected"))
	})
	t.Run("PHP refuses the open: 4009", func(t *testing.T) {
		hooks.refuse.Store(true)
		d.do(t, map[string]any{"op": "connect", "id": "refused", "key": echoKey, "host": host, "port": portN, "auth": auth})
		if ev := hooks.next(t, "open"); ev["refused"] != true || ev["transport"] != "pusher" {
			t.Fatalf("open webhook %v", ev)
		}
		d.expect(t, "refused", "error 4009", pusherIs("error", "code", "4009"))
		d.expect(t, "refused", "disconnected", pusherIs("state", "current", "disconnected"))
	})

	sidAnn := connect("ann", "demo_user=ann", nil)
	connect("bob", "demo_user=bob", nil)
	connect("bob2", "demo_user=bob", nil)

	t.Run("public channel and a native publication", func(t *testing.T) {
		d.do(t, map[string]any{"op": "subscribe", "id": "ann", "channel": "news"})
		d.expect(t, "ann", "subscribed news", pusherIs("subscribed", "channel", "news"))
		pusherPublish(t, b, map[string]any{"to": map[string]any{"channels": []string{"news"}}, "event": "App\\Events\\Headline", "data": `{"title":"hi"}`})
		ev := d.expect(t, "ann", "the headline", pusherIs("event", "event", "App\\Events\\Headline"))
		if fmt.Sprint(ev["data"]) != "map[title:hi]" {
			t.Fatalf("data %v", ev["data"])
		}
	})
	t.Run("private channel: authorised through the proxy with the cookie, refused, forged", func(t *testing.T) {
		d.do(t, map[string]any{"op": "subscribe", "id": "ann", "channel": "private-user.ann"})
		d.expect(t, "ann", "subscribed", pusherIs("subscribed", "channel", "private-user.ann"))
		d.do(t, map[string]any{"op": "subscribe", "id": "bob", "channel": "private-user.ann"})
		ev := d.expect(t, "bob", "the app's refusal", pusherIs("subscription_error", "channel", "private-user.ann"))
		if !strings.Contains(fmt.Sprint(ev["error"]), "403") {
			t.Fatalf("refusal %v: want the app's 403", ev)
		}
	})
	t.Run("server refuses a forged signature", func(t *testing.T) {
		d.do(t, map[string]any{"op": "connect", "id": "forger", "key": echoKey, "host": host, "port": portN, "auth": auth, "forge": "private-"})
		d.expect(t, "forger", "connected", pusherIs("state", "current", "connected"))
		hooks.next(t, "open")
		d.do(t, map[string]any{"op": "subscribe", "id": "forger", "channel": "private-chat"})
		ev := d.expect(t, "forger", "the server's refusal", pusherIs("subscription_error", "channel", "private-chat"))
		if fmt.Sprint(ev["status"]) != "401" || fmt.Sprint(ev["kind"]) != "AuthError" {
			t.Fatalf("refusal %v: want AuthError 401", ev)
		}
		d.do(t, map[string]any{"op": "disconnect", "id": "forger"})
		d.expect(t, "forger", "disconnected", pusherIs("state", "current", "disconnected"))
		hooks.next(t, "close")
	})
	t.Run("presence: roster, joining per user, whisper with user_id, toOthers, leaving", func(t *testing.T) {
		members := func(ev map[string]any) string {
			var ids []string
			for _, m := range ev["members"].([]any) {
				ids = append(ids, fmt.Sprint(m.(map[string]any)["id"]))
			}
			return strings.Join(ids, ",")
		}
		d.do(t, map[string]any{"op": "subscribe", "id": "ann", "channel": "presence-room", "whispers": []string{"client-typing"}})
		if ev := d.expect(t, "ann", "here", pusherIs("subscribed", "channel", "presence-room")); members(ev) != "ann" || ev["me"] != "ann" {
			t.Fatalf("ann here: %v", ev)
		}
		d.do(t, map[string]any{"op": "subscribe", "id": "bob", "channel": "presence-room", "whispers": []string{"client-typing"}})
		if ev := d.expect(t, "bob", "here", pusherIs("subscribed", "channel", "presence-room")); members(ev) != "ann,bob" {
			t.Fatalf("bob here: %v", ev)
		}
		if ev := d.expect(t, "ann", "bob joining", pusherIs("member_added", "user_id", "bob")); fmt.Sprint(ev["info"]) != "map[name:Bob]" {
			t.Fatalf("joining %v", ev)
		}
		d.do(t, map[string]any{"op": "subscribe", "id": "bob2", "channel": "presence-room"})
		d.expect(t, "bob2", "here", pusherIs("subscribed", "channel", "presence-room"))
		// bob's second tab added nobody: ann's next event is the whisper, not a member_added.
		d.do(t, map[string]any{"op": "trigger", "id": "bob2", "channel": "presence-room", "event": "client-typing", "data": map[string]any{"typing": true}})
		d.expect(t, "bob2", "triggered", pusherIs("triggered", "ok", "true"))
		for _, id := range []string{"ann", "bob"} {
			d.expect(t, id, "the whisper from bob", pusherIs("event", "event", "client-typing", "user_id", "bob"))
		}
		msg := hooks.next(t, "message")
		if msg["transport"] != "pusher" || msg["user_id"] != "bob" || !strings.Contains(fmt.Sprint(msg["data"]), "client-typing") {
			t.Fatalf("message webhook %v", msg)
		}
		// toOthers: a publication except ann's socket reaches the others; ann's next event is
		// the one after it.
		pusherPublish(t, b, map[string]any{"to": map[string]any{"channels": []string{"presence-room"}}, "event": "App\\Events\\Said", "data": `{"n":1}`, "except": sidAnn})
		pusherPublish(t, b, map[string]any{"to": map[string]any{"channels": []string{"presence-room"}}, "event": "App\\Events\\Said", "data": `{"n":2}`})
		for _, id := range []string{"bob", "bob2"} {
			// bob2, the whisper's sender, did not get it back: its next event is said 1.
			d.expect(t, id, "said 1", pusherIs("event", "event", "App\\Events\\Said", "data", "map[n:1]"))
			d.expect(t, id, "said 2", pusherIs("event", "data", "map[n:2]"))
		}
		d.expect(t, "ann", "said 2 only", pusherIs("event", "data", "map[n:2]"))
		// bob's first tab leaves: bob is still here; the second leaves: ann hears it.
		d.do(t, map[string]any{"op": "disconnect", "id": "bob"})
		d.expect(t, "bob", "disconnected", pusherIs("state", "current", "disconnected"))
		if ev := hooks.next(t, "close"); ev["transport"] != "pusher" || ev["initiator"] != "client" {
			t.Fatalf("close webhook %v", ev)
		}
		d.do(t, map[string]any{"op": "disconnect", "id": "bob2"})
		d.expect(t, "ann", "bob leaving, once", pusherIs("member_removed", "user_id", "bob"))
		hooks.next(t, "close")
	})
	t.Run("a publication to a socket id: a global event", func(t *testing.T) {
		pusherPublish(t, b, map[string]any{"to": map[string]any{"connections": []string{sidAnn}}, "event": "direct", "data": "x"})
		d.expect(t, "ann", "the direct event", pusherIs("global", "event", "direct", "data", "x"))
	})
	t.Run("ping and pong", func(t *testing.T) {
		// A client activity timeout of 300 ms makes pusher-js ping after 300 ms of silence; the
		// connection stays (no state change comes between the pongs).
		connect("pinger", "", map[string]any{"activityTimeout": 300})
		for range 2 {
			d.expect(t, "pinger", "pong", pusherIs("pong"))
		}
		d.do(t, map[string]any{"op": "disconnect", "id": "pinger"})
	})
}
