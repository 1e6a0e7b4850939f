package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// sseTexts are messages whose line breaks and field-like lines the SSE framing must carry
// exactly: a WHATWG parser gives the page each one with its line breaks as LF.
var sseTexts = []struct{ sent, seen string }{
	{"plain", "plain"},
	{"two\nlines", "two\nlines"},
	{"crlf\r\nline", "crlf\nline"},
	{"lone\rcr", "lone\ncr"},
	{"trailing\n", "trailing\n"},
	{"", ""},
	{"  leading spaces", "  leading spaces"},
	{"x\nevent: close\nid: 7\nretry: 1\n\ndata: injected", "x\nevent: close\nid: 7\nretry: 1\n\ndata: injected"},
	{"x\revent: close\r\rdata: y", "x\nevent: close\n\ndata: y"},
	{"h\u00e9llo \U0001F600 \u2028 <&>", "h\u00e9llo \U0001F600 \u2028 <&>"},
}

// TestProcessEventSourceClient: the eventsource npm package, an independent WHATWG parser,
// reads the built binary's event stream. Its first attempt finds PHP unreachable and gets the
// 200 stream with retry: that keeps it trying (it would give up for good on a 503); the second
// is accepted and receives every text exactly, a binary frame as "binary" in base64, and the
// close event, on which the page stops. Without node or the package (npm ci in testdata/wsnode,
// as .ci/run does) it skips, and fails under CI.
func TestProcessEventSourceClient(t *testing.T) {
	node := testkit.RequireTool(t, "nodejs", "node")
	dir, _ := filepath.Abs(filepath.Join("testdata", "wsnode"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "eventsource")); err != nil {
		testkit.Missing(t, "the eventsource package is not installed (npm ci --prefix cmd/wsbridge/testdata/wsnode)")
	}
	var opens atomic.Int32
	php := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var h hook
		json.NewDecoder(r.Body).Decode(&h)
		switch h.Type {
		case "open":
			if opens.Add(1) == 1 {
				// PHP unreachable for the first attempt: the connection drops unanswered.
				c, _, _ := http.NewResponseController(w).Hijack()
				c.Close()
				return
			}
			send := []any{}
			for _, tc := range sseTexts {
				send = append(send, tc.sent)
			}
			send = append(send, map[string]any{"data_base64": "AP8KDQ=="})
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"send": send, "close": map[string]any{"code": 4000, "reason": "done"}})
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(php.Close)
	public, internal := testkit.FreeAddr(t), testkit.FreeAddr(t)
	p := startProc(t, "WSBRIDGE_LISTEN="+public, "WSBRIDGE_INTERNAL_LISTEN="+internal,
		"WSBRIDGE_WEBHOOK_URL="+php.URL, "WSBRIDGE_WEBHOOK_RETRIES=0", "WSBRIDGE_SSE_PATH=/events")
	client := &http.Client{}
	t.Cleanup(client.CloseIdleConnections)
	p.waitReady(t, client, "http://"+internal+"/readyz")

	cmd := exec.Command(node, filepath.Join(dir, "sse.mjs"), "http://"+public+"/events")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Logf("eventsource client:\n%s", out)
	if err != nil {
		t.Fatalf("eventsource client: %v\nstderr:\n%s", err, stderr.String())
	}
	type seen struct {
		Kind       string `json:"kind"`
		Data       string `json:"data"`
		Hex        string `json:"hex"`
		N          int    `json:"n"`
		ReadyState int    `json:"readyState"`
	}
	var got []seen
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var s seen
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("client printed %q: %v", sc.Bytes(), err)
		}
		got = append(got, s)
	}
	// The refused attempt: open (a 200 event stream), then error with readyState CONNECTING
	// (0): the client reconnects, as it would not after a 503.
	if len(got) < 3 || got[0].Kind != "open" || got[1].Kind != "error" || got[1].ReadyState != 0 || got[2].Kind != "open" || got[2].N != 2 {
		t.Fatalf("first events %+v, want open, error (readyState 0: reconnecting), open", got[:min(3, len(got))])
	}
	rest := got[3:]
	var messages []string
	for _, s := range rest {
		if s.Kind == "message" {
			messages = append(messages, s.Data)
		}
	}
	want := []string{}
	for _, tc := range sseTexts {
		want = append(want, tc.seen)
	}
	if !slices.Equal(messages, want) {
		t.Errorf("messages\n%q\nwant\n%q", messages, want)
	}
	i := slices.IndexFunc(rest, func(s seen) bool { return s.Kind == "binary" })
	if i < 0 || rest[i].Hex != "00ff0a0d" {
		t.Errorf("binary event: %+v, want bytes 00ff0a0d", rest)
	}
	if last := rest[len(rest)-1]; last.Kind != "close" || last.Data != `{"code":4000,"reason":"done"}` {
		t.Errorf("last event %+v, want the close event", last)
	}
	if n := opens.Load(); n != 2 {
		t.Errorf("%d open webhooks, want 2 (the refused one and the accepted one)", n)
	}
}
