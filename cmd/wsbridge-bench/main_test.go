package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
)

func TestCheckLoopback(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"ws://127.0.0.1:8080/ws", true},
		{"ws://127.0.0.42/ws", true},
		{"http://localhost:8081", true},
		{"ws://[::1]:8080/ws", true},
		{"ws://10.0.0.1:8080/ws", false},
		{"ws://0.0.0.0:8080/ws", false},
		{"ws://example.com/ws", false},
		{"ws://127.0.0.1.example.com/ws", false},
		{"ws:///ws", false},
	} {
		if err := checkLoopback(tc.url); (err == nil) != tc.ok {
			t.Errorf("checkLoopback(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

// A non-loopback target is refused before anything is dialled: exit status 2.
func TestRunRefusesRemoteTarget(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"-scenario", "connect", "-ws", "ws://192.0.2.1:8080/ws", "-api", "http://127.0.0.1:8081"}, io.Discard, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "only loopback") {
		t.Fatalf("exit %d, stderr %q; want 2 and a loopback refusal", code, stderr.String())
	}
}

func TestSourceAddrsSpreadOverLoopback(t *testing.T) {
	ips, err := sourceAddrs("ws://127.0.0.1:1/ws", 25000, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if len(ips) != 3 || !ips[0].Equal(net.IPv4(127, 0, 0, 1)) || !ips[2].Equal(net.IPv4(127, 0, 0, 3)) {
		t.Fatalf("sources %v, want 127.0.0.1-3", ips)
	}
}

func TestParseWrk(t *testing.T) {
	out := []byte(`Running 5s test @ http://127.0.0.1:1/bench.php
  Latency Distribution
     50%  547.00us
     75%  700.00us
     90%    1.20ms
     99%    2.00s
  67085 requests in 5.00s, 10.30MB read
Requests/sec:  13417.05
`)
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.PerSec != 13417.05 || r.P50MS != 0.547 || r.P90MS != 1.2 || r.P99MS != 2000 {
		t.Fatalf("parsed %+v", r)
	}
	if _, err := parseWrk(append(out, "Non-2xx or 3xx responses: 12\n"...)); err == nil {
		t.Fatal("error responses were not reported")
	}
}

// A tiny run of each load scenario against an in-process bridge whose webhooks the bench hook
// answers: every expected delivery arrives and the counts add up.
func TestScenariosAgainstInProcessBridge(t *testing.T) {
	hook := httptest.NewServer(benchHook())
	defer hook.Close()
	// MESSAGE_RATE=0 as the tool sets it: the echo loop sends as fast as the hook answers.
	cfg, err := bridge.LoadConfig([]string{"WSBRIDGE_WEBHOOK_URL=" + hook.URL, "WSBRIDGE_LISTEN=127.0.0.1:0", "WSBRIDGE_INTERNAL_LISTEN=127.0.0.2:0", "WSBRIDGE_MESSAGE_RATE=0", "WSBRIDGE_SSE_PATH=/events"})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	internal, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- bridge.New(cfg, slog.New(slog.DiscardHandler), nil).Serve(ctx, pub, internal)
	}()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("bridge: %v", err)
		}
	}()

	var log bytes.Buffer
	opt := options{conns: 20, messages: 5, rate: 200, dialConc: 4, workers: 2, batch: 7, hookClients: 2,
		duration: 200 * time.Millisecond, drain: 10 * time.Second}
	e := &env{opt: opt, wsURL: "ws://" + pub.Addr().String() + "/ws", apiURL: "http://" + internal.Addr().String(),
		api: &http.Client{}, log: &log}
	rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	c, err := runConnect(rctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if c.Conns != 20 || c.Handshake.N != 20 || c.ConnsPerSec <= 0 {
		t.Errorf("connect: %+v", c)
	}
	b, err := runBroadcast(rctx, e)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range b.Phases {
		if p.Expected != 100 || p.Delivered != 100 || p.Latency.N != 100 {
			t.Errorf("broadcast phase %q: %d of %d delivered, %d latencies; want 100", p.Name, p.Delivered, p.Expected, p.Latency.N)
		}
	}
	ps, err := runPush(rctx, e)
	if err != nil {
		t.Fatal(err)
	}
	wantReqs := map[string]int{"push per connection": 20, "push per user": 20, "push batch of 7": 3}
	for _, p := range ps.Phases {
		if p.Delivered != 20 || p.Items != 20 || p.Requests != wantReqs[p.Name] {
			t.Errorf("push phase %q: %d requests, %d items, %d delivered; want %d requests, 20 items, 20 delivered", p.Name, p.Requests, p.Items, p.Delivered, wantReqs[p.Name])
		}
	}
	w, err := e.echoLoop(rctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if w.Messages == 0 || int64(w.LatencyMS.N) != w.Messages {
		t.Errorf("webhook: %d echoes, %d latencies; want equal and above zero", w.Messages, w.LatencyMS.N)
	}

	// The same fan-out and pushes to event streams (-transport sse).
	useSSE = true
	defer func() { useSSE = false }()
	e.wsURL = "http://" + pub.Addr().String() + "/events"
	if b, err = runBroadcast(rctx, e); err != nil {
		t.Fatal(err)
	}
	for _, p := range b.Phases {
		if p.Expected != 100 || p.Delivered != 100 || p.Latency.N != 100 {
			t.Errorf("SSE broadcast phase %q: %d of %d delivered, %d latencies; want 100", p.Name, p.Delivered, p.Expected, p.Latency.N)
		}
	}
	if ps, err = runPush(rctx, e); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps.Phases {
		if p.Delivered != 20 || p.Items != 20 {
			t.Errorf("SSE push phase %q: %d items, %d delivered; want 20 and 20", p.Name, p.Items, p.Delivered)
		}
	}
	if t.Failed() {
		t.Log(log.String())
	}
}

func TestParseCPUPlan(t *testing.T) {
	for _, tc := range []struct {
		list       string
		ncpu       int
		php, rest  string
		errContain string
	}{
		{list: "", ncpu: 2},
		{list: "0", ncpu: 2, php: "0", rest: "1"},
		{list: "2, 0,2", ncpu: 4, php: "0,2", rest: "1,3"},
		{list: "0,1", ncpu: 2, errContain: "leaves no CPU"},
		{list: "2", ncpu: 2, errContain: "within 0..1"},
		{list: "x", ncpu: 2, errContain: `"x" is not a CPU number`},
	} {
		p, err := parseCPUPlan(tc.list, tc.ncpu)
		if tc.errContain != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errContain) {
				t.Errorf("%q on %d CPUs: err %v, want one saying %q", tc.list, tc.ncpu, err, tc.errContain)
			}
			continue
		}
		if err != nil || p.php != tc.php || p.rest != tc.rest {
			t.Errorf("%q on %d CPUs: php %q rest %q err %v, want %q and %q", tc.list, tc.ncpu, p.php, p.rest, err, tc.php, tc.rest)
		}
	}
}

func TestPinnedCommand(t *testing.T) {
	if bin, args := pinned("", "nginx", "-c", "x"); bin != "nginx" || strings.Join(args, " ") != "-c x" {
		t.Errorf("unpinned: %s %q", bin, args)
	}
	if bin, args := pinned("0", "nginx", "-c", "x"); bin != "taskset" || strings.Join(args, " ") != "-c 0 nginx -c x" {
		t.Errorf("pinned: %s %q", bin, args)
	}
}
