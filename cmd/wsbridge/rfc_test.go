package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// startEchoBridge starts the built binary in front of an app that echoes every message, and
// returns its public address.
func startEchoBridge(t *testing.T, php *testkit.EchoPHP, environ ...string) string {
	t.Helper()
	public, internal := testkit.FreeAddr(t), testkit.FreeAddr(t)
	p := startProc(t, append([]string{
		"WSBRIDGE_LISTEN=" + public,
		"WSBRIDGE_INTERNAL_LISTEN=" + internal,
		"WSBRIDGE_WEBHOOK_URL=" + php.URL,
		"WSBRIDGE_MESSAGE_RATE=0",
	}, environ...)...)
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	p.waitReady(t, client, "http://"+internal+"/readyz")
	return public
}

// TestProcessRFC6455Conformance runs the conformance probes (bridge/testkit/rfccases.go)
// against the built binary: the raw-TCP client checks every byte it sends.
func TestProcessRFC6455Conformance(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	addr := startEchoBridge(t, php)
	testkit.RunRFC6455(t, addr, "/ws", php, 65536)
}

// TestProcessNodeWSClient: node's ws, a second and independent implementation, talks to the
// built binary: text and binary round trips, 1007 for invalid UTF-8 (in a message and in a
// close reason), 1009 over the limit, and every close frame of the bridge accepted as valid.
// Without node or the npm package (npm ci in testdata/wsnode, as .ci/run does) it skips, and
// fails under CI.
func TestProcessNodeWSClient(t *testing.T) {
	node := testkit.RequireTool(t, "nodejs", "node")
	dir, _ := filepath.Abs(filepath.Join("testdata", "wsnode"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "ws")); err != nil {
		testkit.Missing(t, "node's ws is not installed (npm ci --prefix cmd/wsbridge/testdata/wsnode)")
	}
	for _, compression := range []string{"off", "on"} {
		t.Run("compression-"+compression, func(t *testing.T) { runNodeWSClient(t, node, dir, compression) })
	}
}

func runNodeWSClient(t *testing.T, node, dir, compression string) {
	const limit = 4096
	php := testkit.NewEchoPHP(t)
	addr := startEchoBridge(t, php, "WSBRIDGE_MAX_MESSAGE_SIZE="+strconv.Itoa(limit), "WSBRIDGE_COMPRESSION="+compression)
	cmd := exec.Command(node, filepath.Join(dir, "client.mjs"), "ws://"+addr+"/ws", strconv.Itoa(limit))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node client: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	type result struct {
		Check      string   `json:"check"`
		OK         bool     `json:"ok"`
		Code       int      `json:"code"`
		Reason     string   `json:"reason"`
		Errors     []string `json:"errors"`
		Extensions string   `json:"extensions"`
	}
	t.Logf("node client:\n%s", out)
	got := map[string]result{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("node client printed %q: %v", sc.Bytes(), err)
		}
		got[r.Check] = r
	}
	for _, c := range []string{"text", "big-text", "binary"} {
		if !got[c].OK {
			t.Errorf("%s round trip through ws failed: %+v", c, got[c])
		}
	}
	if ext, want := got["big-text"].Extensions, compression == "on"; (ext != "") != want {
		t.Errorf("ws negotiated extensions %q with COMPRESSION=%s", ext, compression)
	}
	for check, code := range map[string]int{"client-close": 1000, "invalid-utf8": 1007, "close-reason-not-utf8": 1007, "too-big": 1009} {
		r, ok := got[check]
		if !ok {
			t.Errorf("%s: no result (stdout %s)", check, out)
			continue
		}
		if r.Code != code || len(r.Errors) != 0 {
			t.Errorf("%s: ws saw close %d %q with errors %v; want %d and no error", check, r.Code, r.Reason, r.Errors, code)
		}
	}
	if r := got["too-big"]; r.Reason != "read limited at "+strconv.Itoa(limit)+" bytes" {
		t.Errorf("1009 reason %q, want the real limit", r.Reason)
	}
}

// TestProcessRFC7692Conformance runs the permessage-deflate probes against the built binary
// with WSBRIDGE_COMPRESSION=on, and the RFC 6455 probes on connections that do not offer it.
func TestProcessRFC7692Conformance(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	addr := startEchoBridge(t, php, "WSBRIDGE_COMPRESSION=on")
	t.Run("deflate", func(t *testing.T) { testkit.RunRFC7692(t, addr, "/ws", php, 65536, 512) })
	t.Run("plain", func(t *testing.T) { testkit.RunRFC6455(t, addr, "/ws", php, 65536) })
}
