package bridge

// The fault suite: real PHP (php -S running testdata/php/fault.php) misbehaving in every way
// the issue lists, at each of open, message and close, and real WebSocket clients. Each test
// asserts the outcome, and logs a "fault:" line with the counts that docs/reliability.md
// tabulates (go test ./bridge -run Fault -v | grep fault:).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/coder/websocket"
	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// faultPHP is php -S serving fault.php, with the faults it plays and the attempts it saw.
type faultPHP struct {
	*phpServer
	faultFile, eventLog string
}

// loggedEvent is one webhook attempt as fault.php recorded it.
type loggedEvent struct {
	Type         EventType `json:"type"`
	ConnectionID string    `json:"connection_id"`
	EventID      string    `json:"event_id"`
	Attempt      int       `json:"attempt"`
	Seq          uint64    `json:"seq"`
	Data         string    `json:"data"`
	Code         int       `json:"code"`
	Reason       string    `json:"reason"`
	Initiator    Initiator `json:"initiator"`
}

func newFaultPHP(t *testing.T) *faultPHP {
	t.Helper()
	dir := t.TempDir()
	f := &faultPHP{faultFile: filepath.Join(dir, "faults.json"), eventLog: filepath.Join(dir, "events.log")}
	f.phpServer = newPHP(t, "FAULT_FILE="+f.faultFile, "EVENT_LOG="+f.eventLog)
	return f
}

// set switches the faults PHP plays, per event type ("ok" when unnamed).
func (f *faultPHP) set(t *testing.T, faults map[EventType]string) {
	t.Helper()
	b, _ := json.Marshal(faults)
	tmp := f.faultFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, f.faultFile); err != nil { // PHP never reads half a file
		t.Fatal(err)
	}
}

func (f *faultPHP) events(t *testing.T) []loggedEvent {
	t.Helper()
	return readJSONLines[loggedEvent](t, f.eventLog)
}

// attempts returns what PHP saw of typ for connection id (any connection when id is "").
func (f *faultPHP) attempts(t *testing.T, typ EventType, id string) []loggedEvent {
	t.Helper()
	var out []loggedEvent
	for _, ev := range f.events(t) {
		if ev.Type == typ && (id == "" || ev.ConnectionID == id) {
			out = append(out, ev)
		}
	}
	return out
}

// faultBridge is an in-process bridge in front of f with short timeouts, so faults show quickly.
func faultBridge(t *testing.T, f *faultPHP, env ...string) (*Server, string) {
	t.Helper()
	cfg, err := LoadConfig(append([]string{
		"WSBRIDGE_WEBHOOK_URL=" + f.URL + "/fault.php",
		// Short enough that "slow" (2 s) times out, long enough for php -S under the race detector.
		"WSBRIDGE_WEBHOOK_TIMEOUT=1s",
		"WSBRIDGE_HANDSHAKE_TIMEOUT=5s",
		"WSBRIDGE_WEBHOOK_RETRIES=2",
		"WSBRIDGE_WEBHOOK_BACKOFF=10ms",
		"WSBRIDGE_WEBHOOK_BACKOFF_MAX=50ms",
		"WSBRIDGE_WEBHOOK_MAX_REPLY=65536",
	}, env...))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	if os.Getenv("WSBRIDGE_TEST_QUIET") != "" {
		log = slog.New(slog.DiscardHandler)
	}
	srv := New(cfg, log, nil)
	pub, _ := newServers(t, srv)
	return srv, "ws" + strings.TrimPrefix(pub.URL, "http") + "/ws"
}

func TestFaultMatrix(t *testing.T) {
	testkit.RequireTool(t, "php-cli", "php")
	for _, event := range []EventType{EventOpen, EventMessage, EventClose} {
		for _, fault := range []string{"down", "slow", "error", "garbage", "huge"} {
			t.Run(string(event)+"/"+fault, func(t *testing.T) {
				t.Parallel()
				php := newFaultPHP(t)
				php.start(t)
				srv, url := faultBridge(t, php)
				switch event {
				case EventOpen:
					faultAtOpen(t, php, srv, url, fault)
				case EventMessage:
					faultAtMessage(t, php, srv, url, fault)
				case EventClose:
					faultAtClose(t, php, srv, url, fault)
				}
			})
		}
	}
}

func faultAtOpen(t *testing.T, php *faultPHP, srv *Server, url, fault string) {
	want := map[string]int{"down": 503, "slow": 503, "error": 500, "garbage": 502, "huge": 502}[fault]
	if fault == "down" {
		php.stop()
	} else {
		php.set(t, map[EventType]string{EventOpen: fault})
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, url, nil)
	if err == nil || resp == nil || resp.StatusCode != want {
		t.Fatalf("upgrade with PHP %s at open: %v %v, want %d", fault, resp, err, want)
	}
	seen := php.attempts(t, EventOpen, "")
	wantAttempts := map[string]int{"down": 0, "slow": 3, "error": 3, "garbage": 1, "huge": 1}[fault]
	if len(seen) != wantAttempts {
		t.Errorf("PHP saw %d attempts of the open webhook, want %d", len(seen), wantAttempts)
	}
	sameEvent(t, seen)
	if n := metricValue(t, srv, "wsbridge_connections_accepted_total"); n != 0 {
		t.Errorf("%v connections accepted", n)
	}
	t.Logf("fault: open | %s | client gets %d | sent 1 | PHP saw %d attempt(s) | accepted 0 | lost 0", fault, want, len(seen))
}

func faultAtMessage(t *testing.T, php *faultPHP, srv *Server, url, fault string) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	id := php.attempts(t, EventOpen, "")[0].ConnectionID
	if fault == "down" {
		php.stop()
	} else {
		php.set(t, map[EventType]string{EventMessage: fault})
	}
	write(t, c, "m1")

	switch fault {
	case "garbage", "huge":
		// PHP has the message; only its answer is refused. The connection goes on.
		php.set(t, nil)
		write(t, c, "m2")
		waitFor(t, "m2 reaches PHP", func() bool { return len(php.attempts(t, EventMessage, id)) == 2 })
		got := php.attempts(t, EventMessage, id)
		if got[0].Data != "m1" || got[1].Data != "m2" || got[1].Seq != 2 {
			t.Errorf("PHP saw %+v, want m1 then m2", got)
		}
		t.Logf("fault: message | %s | reply refused, connection goes on | sent 2 | delivered 2 | lost 0", fault)
		return
	}
	ce := readClose(t, c)
	if ce.Code != websocket.StatusInternalError || ce.Reason != "message not delivered" {
		t.Fatalf("client closed with %v %q, want 1011 message not delivered", ce.Code, ce.Reason)
	}
	if fault == "down" {
		php.start(t) // the close webhook waits for PHP to come back
	} else {
		php.set(t, nil)
	}
	waitFor(t, "close webhook delivered", func() bool { return len(php.attempts(t, EventClose, id)) > 0 })
	cl := php.attempts(t, EventClose, id)[0]
	if cl.Reason != "message not delivered" || cl.Code != 1011 || cl.Initiator != InitiatorServer {
		t.Errorf("close webhook %+v, want 1011 message not delivered by server", cl)
	}
	seen := php.attempts(t, EventMessage, id)
	if want := map[string]int{"down": 0, "slow": 3, "error": 3}[fault]; len(seen) != want {
		t.Errorf("PHP saw %d attempts of the message, want %d", len(seen), want)
	}
	sameEvent(t, seen)
	t.Logf("fault: message | %s | client gets 1011, PHP gets close \"message not delivered\" | sent 1 | PHP saw %d attempt(s) | lost 0 (reported)", fault, len(seen))
}

func faultAtClose(t *testing.T, php *faultPHP, srv *Server, url, fault string) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := php.attempts(t, EventOpen, "")[0].ConnectionID
	if fault == "down" {
		php.stop()
	} else {
		php.set(t, map[EventType]string{EventClose: fault})
	}
	c.Close(websocket.StatusNormalClosure, "bye")

	switch fault {
	case "down":
		// PHP is away longer than every retry would take; the close waits for it.
		waitFor(t, "close queued", func() bool { return metricValue(t, srv, "wsbridge_close_queue") == 1 })
		waitFor(t, "retries spent", func() bool {
			return metricValue(t, srv, "wsbridge_webhook_retries_total", "event", "close") > float64(srv.cfg.WebhookRetries)
		})
		php.start(t)
		waitFor(t, "close webhook delivered", func() bool { return len(php.attempts(t, EventClose, id)) == 1 })
		if cl := php.attempts(t, EventClose, id)[0]; cl.Reason != "bye" || cl.Initiator != InitiatorClient {
			t.Errorf("close webhook %+v", cl)
		}
		waitFor(t, "queue empty", func() bool { return metricValue(t, srv, "wsbridge_close_queue") == 0 })
		lostMetric(t, srv, 0)
		t.Logf("fault: close | down | waits for PHP, delivered once it is back | sent 1 | delivered 1 | lost 0")
	case "slow", "error":
		waitFor(t, "close given up", func() bool { return metricValue(t, srv, "wsbridge_close_webhooks_failed_total") == 1 })
		seen := php.attempts(t, EventClose, id)
		if len(seen) != 3 {
			t.Errorf("PHP saw %d attempts of the close, want 3", len(seen))
		}
		sameEvent(t, seen)
		t.Logf("fault: close | %s | retried, then logged and counted failed | sent 1 | PHP saw %d attempt(s) | lost 0 silently (1 counted)", fault, len(seen))
	case "garbage", "huge":
		waitFor(t, "close reached PHP", func() bool {
			return metricValue(t, srv, "wsbridge_webhook_requests_total", "event", "close", "outcome", "malformed") == 1
		})
		if seen := php.attempts(t, EventClose, id); len(seen) != 1 {
			t.Errorf("PHP saw %d attempts of the close, want 1 (it answered)", len(seen))
		}
		lostMetric(t, srv, 0)
		t.Logf("fault: close | %s | delivered, reply refused | sent 1 | delivered 1 | lost 0", fault)
	}
}

func lostMetric(t *testing.T, srv *Server, want float64) {
	t.Helper()
	if n := metricValue(t, srv, "wsbridge_close_webhooks_failed_total"); n != want {
		t.Errorf("%v close webhooks counted failed, want %v", n, want)
	}
}

// sameEvent checks that retries carry one event id and count their attempts up from 1.
func sameEvent(t *testing.T, seen []loggedEvent) {
	t.Helper()
	for i, ev := range seen {
		if ev.EventID != seen[0].EventID || ev.Attempt < i+1 {
			t.Errorf("attempt %d: event id %s attempt %d; want %s and at least %d", i, ev.EventID, ev.Attempt, seen[0].EventID, i+1)
		}
	}
}

// TestFaultPHPRestartedMidStream kills PHP (kill -9, mid-request) and starts it again while
// clients send; every message reaches PHP, in order. A message PHP had received when it was
// killed is sent again with the same event id, so PHP can drop the repeat.
func TestFaultPHPRestartedMidStream(t *testing.T) {
	t.Parallel()
	php := newFaultPHP(t)
	php.start(t)
	_, url := faultBridge(t, php, "WSBRIDGE_MESSAGE_RATE=0", "WSBRIDGE_WEBHOOK_RETRIES=20", "WSBRIDGE_WEBHOOK_BACKOFF_MAX=200ms")
	const clients, perClient = 3, 200
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	defer cancel()
	var wg sync.WaitGroup
	for i := range clients {
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 1; j <= perClient; j++ {
				if err := c.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf("c%d-%d", i, j))); err != nil {
					t.Errorf("client %d write %d: %v", i, j, err)
					return
				}
			}
		}()
	}
	waitFor(t, "a third of the messages in", func() bool { return len(php.attempts(t, EventMessage, "")) >= clients*perClient/3 })
	php.stop()
	php.start(t)
	wg.Wait()
	waitFor(t, "every message in", func() bool { return distinctEvents(php.attempts(t, EventMessage, "")) == clients*perClient })

	seqs := map[string][]uint64{}
	seenIDs := map[string]bool{}
	repeats := 0
	for _, ev := range php.attempts(t, EventMessage, "") {
		if seenIDs[ev.EventID] {
			repeats++ // PHP drops it by event id
			continue
		}
		seenIDs[ev.EventID] = true
		seqs[ev.ConnectionID] = append(seqs[ev.ConnectionID], ev.Seq)
	}
	for id, s := range seqs {
		for i, seq := range s {
			if seq != uint64(i+1) {
				t.Fatalf("connection %s: message %d has seq %d: lost or out of order", id, i+1, seq)
			}
		}
	}
	t.Logf("fault: message | PHP killed and restarted mid-stream | sent %d | delivered %d in order | lost 0 | repeats with the same event id %d",
		clients*perClient, len(seenIDs), repeats)
}

func distinctEvents(evs []loggedEvent) int {
	ids := map[string]bool{}
	for _, ev := range evs {
		ids[ev.EventID] = true
	}
	return len(ids)
}

// TestFaultClientFlood: one client floods; it alone is closed, and another client's messages
// all arrive.
func TestFaultClientFlood(t *testing.T) {
	t.Parallel()
	php := newFaultPHP(t)
	php.start(t)
	// A rate so low that no token comes back during the test: exactly the burst gets through.
	srv, url := faultBridge(t, php, "WSBRIDGE_MESSAGE_RATE=0.001", "WSBRIDGE_MESSAGE_BURST=20")
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	flooder, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	calm, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer calm.CloseNow()
	sent := 0
	for ; sent < 5000; sent++ {
		if flooder.Write(ctx, websocket.MessageText, []byte("spam")) != nil {
			break
		}
	}
	if ce := readClose(t, flooder); ce.Code != websocket.StatusPolicyViolation {
		t.Fatalf("flooder closed with %v %q, want 1008", ce.Code, ce.Reason)
	}
	for i := range 20 {
		write(t, calm, "calm-"+strconv.Itoa(i))
	}
	var calmID string
	waitFor(t, "calm client's messages in", func() bool {
		n := 0
		for _, ev := range php.attempts(t, EventMessage, "") {
			if strings.HasPrefix(ev.Data, "calm-") {
				n, calmID = n+1, ev.ConnectionID
			}
		}
		return n == 20
	})
	spam := 0
	for _, ev := range php.attempts(t, EventMessage, "") {
		if ev.Data == "spam" {
			spam++
		}
	}
	if spam != 20 {
		t.Errorf("%d of the flood reached PHP; the rate allows a burst of 20", spam)
	}
	if len(php.attempts(t, EventClose, calmID)) != 0 {
		t.Errorf("the calm client was closed")
	}
	t.Logf("fault: flood | one client sends %d messages at once | flooder closed 1008 after %d reached PHP | calm client 20/20 delivered | limit hits %v",
		sent, spam, metricValue(t, srv, "wsbridge_limit_hits_total", "limit", "message_rate"))
}

// TestFaultSlowReadersDuringBroadcast: a tenth of the clients stop reading while a broadcast
// runs; they are dropped as slow consumers and everyone else gets every message.
func TestFaultSlowReadersDuringBroadcast(t *testing.T) {
	t.Parallel()
	php := newFaultPHP(t)
	php.start(t)
	srv, url := faultBridge(t, php, "WSBRIDGE_SEND_QUEUE=16", "WSBRIDGE_WRITE_TIMEOUT=2s")
	// 24 clients, 20 of them reading: the 200 messages of 16 KiB are 64 MB of deliveries, which
	// under -race beside the other packages' tests can take most of the bound.
	const n, slow, messages = 24, 4, 200
	ctx, cancel := context.WithTimeout(context.Background(), 6*waitLimit)
	defer cancel()
	received := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		opts := &websocket.DialOptions{}
		if i < slow {
			// A small receive buffer so that not reading fills the socket quickly.
			opts.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: smallBufferDialer}}
		}
		c, _, err := websocket.Dial(ctx, url, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		if i < slow {
			continue // never reads
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for received[i] < messages {
				if _, _, err := c.Read(ctx); err != nil {
					t.Errorf("fast client %d: read after %d: %v", i, received[i], err)
					return
				}
				received[i]++
			}
		}()
	}
	waitFor(t, "all joined", func() bool { return distinctEvents(php.attempts(t, EventOpen, "")) == n })
	payload := strings.Repeat("x", 16<<10) // 3.2 MB in all: more than a stalled socket buffers
	api := httptest.NewServer(srv.InternalHandler())
	defer api.Close()
	for i := range messages {
		body := fmt.Sprintf(`{"to":{"channels":["all"]},"data":"%d %s"}`, i, payload)
		resp, err := http.Post(api.URL+"/v1/publish", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	wg.Wait()
	for i := slow; i < n; i++ {
		if received[i] != messages {
			t.Errorf("fast client %d received %d of %d", i, received[i], messages)
		}
	}
	waitFor(t, "slow clients dropped", func() bool {
		return metricValue(t, srv, "wsbridge_connections_closed_total", "initiator", "slow_consumer") == slow
	})
	waitFor(t, "their close webhooks", func() bool {
		k := 0
		for _, ev := range php.attempts(t, EventClose, "") {
			if ev.Initiator == InitiatorSlowConsumer {
				k++
			}
		}
		return k == slow
	})
	t.Logf("fault: broadcast | %d of %d clients stop reading | %d messages of 16 KiB | fast clients %d/%d received all | slow clients dropped %d, close webhooks %d",
		slow, n, messages, n-slow, n-slow, slow, slow)
}

func smallBufferDialer(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	return d.DialContext(ctx, network, addr)
}

// TestFaultHalfOpenTCP: the peer vanishes without a FIN or RST (a phone leaving coverage); the
// ping timeout notices and PHP gets the close.
func TestFaultHalfOpenTCP(t *testing.T) {
	t.Parallel()
	php := newFaultPHP(t)
	php.start(t)
	_, url := faultBridge(t, php, "WSBRIDGE_PING_INTERVAL=100ms", "WSBRIDGE_PING_TIMEOUT=300ms")
	proxy := newFreezeProxy(t, strings.TrimPrefix(strings.TrimSuffix(url, "/ws"), "ws://"))
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+proxy.addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	go c.Read(ctx) // a live client answers pings while it reads
	id := php.attempts(t, EventOpen, "")[0].ConnectionID
	proxy.freeze()
	waitFor(t, "close webhook", func() bool { return len(php.attempts(t, EventClose, id)) == 1 })
	if cl := php.attempts(t, EventClose, id)[0]; cl.Reason != "ping timeout" || cl.Code != 1006 {
		t.Errorf("close webhook %+v, want 1006 ping timeout", cl)
	}
	t.Logf("fault: half-open TCP | peer silent, socket never closed | detected by ping timeout | close webhook delivered 1/1")
}

// freezeProxy forwards TCP until frozen; then it holds every socket open and silent.
type freezeProxy struct {
	addr   string
	frozen chan struct{}
	once   sync.Once
}

func newFreezeProxy(t *testing.T, target string) *freezeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{addr: ln.Addr().String(), frozen: make(chan struct{})}
	var conns []net.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if err != nil {
				return
			}
			select {
			case <-p.frozen:
				return // drop it and go silent; the sockets stay open
			default:
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			wg.Add(2)
			go pipe(out, in)
			go pipe(in, out)
		}
	}()
	return p
}

func (p *freezeProxy) freeze() { p.once.Do(func() { close(p.frozen) }) }

// TestFaultConnectionLimitReached: beyond MAX_CONNECTIONS the client gets a clear 503 and PHP
// is not asked.
func TestFaultConnectionLimitReached(t *testing.T) {
	t.Parallel()
	php := newFaultPHP(t)
	php.start(t)
	_, url := faultBridge(t, php, "WSBRIDGE_MAX_CONNECTIONS=20")
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for i := range 20 {
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.CloseNow()
	}
	_, resp, err := websocket.Dial(ctx, url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("21st connection: %v %v, want 503", resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "connections") {
		t.Errorf("refusal body %q does not say why", body)
	}
	if n := distinctEvents(php.attempts(t, EventOpen, "")); n != 20 {
		t.Errorf("PHP saw %d opens, want 20", n)
	}
	t.Logf("fault: limit | MAX_CONNECTIONS=20, 21 clients | 21st gets 503 %q | PHP asked 20 times", strings.TrimSpace(string(body)))
}

// TestFaultSIGTERMWithThousandsOfConnections runs the real binary in front of real PHP, holds
// 2,000 connections, sends SIGTERM, and checks that PHP got every close before the exit.
func TestFaultSIGTERMWithThousandsOfConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and holds 2,000 sockets")
	}
	t.Parallel()
	const n = 2000
	php := newFaultPHP(t)
	php.env = append(php.env, "PHP_CLI_SERVER_WORKERS=8")
	php.start(t)
	bin := filepath.Join(t.TempDir(), "wsbridge")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/wsbridge").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	addr := testkit.FreeAddr(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "WSBRIDGE_LISTEN="+addr, "WSBRIDGE_INTERNAL_LISTEN=127.0.0.1:0",
		"WSBRIDGE_WEBHOOK_URL="+php.URL+"/fault.php", "WSBRIDGE_WEBHOOK_CONCURRENCY=8", "WSBRIDGE_LOG_LEVEL=warn",
		"WSBRIDGE_MAX_PENDING_HANDSHAKES_PER_IP=0") // 100 dials at once from one address
	stderr := &testkit.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	ctx, cancel := context.WithTimeout(context.Background(), 6*waitLimit)
	defer cancel()
	waitFor(t, "wsbridge listening", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", nil)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
			go func() { // read until the server closes, answering its close frame
				for {
					if _, _, err := c.Read(ctx); err != nil {
						return
					}
				}
			}()
		}()
		if i%100 == 99 {
			wg.Wait() // in steps, so php -S is not asked for 2,000 opens at once
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("dial: %v", err)
	}
	defer func() {
		for _, c := range conns {
			c.CloseNow()
		}
	}()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("wsbridge exited with %v\n%s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("wsbridge did not exit after SIGTERM")
	}
	// Read the log only after the exit: everything in it arrived before.
	closes := map[string]int{}
	for _, ev := range php.attempts(t, EventClose, "") {
		if ev.Code != 1001 || ev.Initiator != InitiatorShutdown {
			t.Errorf("close webhook %+v, want 1001 by shutdown", ev)
		}
		closes[ev.ConnectionID]++ // a timed-out attempt that PHP saw may come again
	}
	opens := php.attempts(t, EventOpen, "")
	if distinctEvents(opens) != n || len(closes) != n {
		t.Fatalf("PHP saw %d opens and closes for %d connections before exit, want %d each", distinctEvents(opens), len(closes), n)
	}
	for _, ev := range opens {
		if closes[ev.ConnectionID] < 1 {
			t.Errorf("connection %s: %d close webhooks", ev.ConnectionID, closes[ev.ConnectionID])
		}
	}
	t.Logf("fault: SIGTERM | %d connections to the real binary, real PHP | exit 0 | close webhooks before exit %d/%d | lost 0", n, len(closes), n)
}
