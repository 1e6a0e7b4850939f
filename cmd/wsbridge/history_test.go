package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// TestProcessEventSourceResumes: the eventsource npm package, left to reconnect by itself, gets
// what was published while it was away. Its stream is closed by the API; while it comes back,
// PHP holds its second open webhook and three publications are made, which only the history
// has; the client sends its last id as Last-Event-ID, and receives all six publications once
// each, in order, after a sync event that says they were recovered.
func TestProcessEventSourceResumes(t *testing.T) { testProcessResumes(t, "sse-resume.mjs", "/events") }

// TestProcessWSHelperResumes: the same with the PHP kit's browser helper (examples/php/lib/
// wsbridge.js) over node's ws: the wsbridge.v1+json subprotocol, the token built by the helper
// and sent as lastEventId.
func TestProcessWSHelperResumes(t *testing.T) { testProcessResumes(t, "ws-resume.mjs", "/ws") }

func testProcessResumes(t *testing.T, script, path string) {
	node := testkit.RequireTool(t, "nodejs", "node")
	dir, _ := filepath.Abs(filepath.Join("testdata", "wsnode"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "eventsource")); err != nil {
		testkit.Missing(t, "the eventsource and ws packages are not installed (npm ci --prefix cmd/wsbridge/testdata/wsnode)")
	}
	type open struct {
		id     string
		resume json.RawMessage
	}
	opens := make(chan open, 2)
	release := make(chan struct{})
	php := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var h struct {
			Type         string          `json:"type"`
			ConnectionID string          `json:"connection_id"`
			Resume       json.RawMessage `json:"resume"`
		}
		json.NewDecoder(r.Body).Decode(&h)
		if h.Type != "open" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		opens <- open{h.ConnectionID, h.Resume}
		if h.Resume != nil {
			select { // the client is away until the test has published
			case <-release:
			case <-time.After(waitLimit):
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"join": []string{"news"}})
	}))
	t.Cleanup(php.Close)
	public, internal := testkit.FreeAddr(t), testkit.FreeAddr(t)
	p := startProc(t, "WSBRIDGE_LISTEN="+public, "WSBRIDGE_INTERNAL_LISTEN="+internal,
		"WSBRIDGE_WEBHOOK_URL="+php.URL, "WSBRIDGE_SSE_PATH=/events", "WSBRIDGE_HISTORY_SIZE=100")
	client := &http.Client{}
	t.Cleanup(client.CloseIdleConnections)
	p.waitReady(t, client, "http://"+internal+"/readyz")
	api := func(path string, body any) {
		t.Helper()
		b, _ := json.Marshal(body)
		resp, err := client.Post("http://"+internal+path, "application/json", bytes.NewReader(b))
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}
	publish := func(s string) {
		api("/v1/publish", map[string]any{"to": map[string]any{"channels": []string{"news"}}, "data": s})
	}

	cmd := exec.Command(node, filepath.Join(dir, script), "http://"+public+path, "6")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	type seen struct{ Kind, Data, LastEventID string }
	lines := make(chan seen, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var s seen
			json.Unmarshal(sc.Bytes(), &s)
			lines <- s
		}
		close(lines)
	}()
	next := func() seen {
		t.Helper()
		select {
		case s, ok := <-lines:
			if !ok {
				t.Fatalf("the client ended early; stderr:\n%s", stderr.String())
			}
			return s
		case <-time.After(waitLimit):
			t.Fatalf("the client printed nothing within %s", waitLimit)
			return seen{}
		}
	}

	first := <-opens
	if s := next(); s.Kind != "sync" || !strings.Contains(s.Data, `"recovered":true`) {
		t.Fatalf("first %+v, want the sync event", s)
	}
	var got []string
	for i := 1; i <= 3; i++ {
		publish(fmt.Sprintf("m%d", i))
		got = append(got, next().Data)
	}
	api("/v1/connections/"+first.id+"/close", map[string]any{"code": 3000, "reason": "come back"})
	var second open
	select {
	case second = <-opens:
	case <-time.After(waitLimit):
		t.Fatal("the client did not come back")
	}
	if !strings.Contains(string(second.resume), `"offset":3`) {
		t.Fatalf("the second open resumes %s, want news at offset 3", second.resume)
	}
	for i := 4; i <= 6; i++ {
		publish(fmt.Sprintf("m%d", i)) // only the history has these
	}
	close(release)
	if s := next(); s.Kind != "sync" || !strings.Contains(s.Data, `"recovered":true`) || !strings.Contains(s.Data, `"lost":[]`) {
		t.Fatalf("after the reconnect %+v, want a sync event, recovered", s)
	}
	for len(got) < 6 {
		s := next()
		if s.Kind != "message" {
			t.Fatalf("got %+v, want messages only", s)
		}
		got = append(got, s.Data)
	}
	if strings.Join(got, ",") != "m1,m2,m3,m4,m5,m6" {
		t.Fatalf("messages %v, want m1 to m6 once each, in order", got)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client: %v\n%s", err, stderr.String())
	}
}
