package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// metricValue reads one series from the server's registry; labels are name, value pairs.
func metricValue(t *testing.T, s *Server, name string, labels ...string) float64 {
	t.Helper()
	fams, err := s.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if labelValue(m, labels[i]) != labels[i+1] {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// waitFor polls cond until it holds; it synchronises on observable state, never on time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fastRetries makes retries quick so that tests about them stay short.
func fastRetries(c *Config) {
	c.WebhookBackoff = 5 * time.Millisecond
	c.WebhookBackoffMax = 20 * time.Millisecond
	c.BreakerCooldown = 50 * time.Millisecond
}

func TestWebhookRetriedWithSameEventID(t *testing.T) {
	t.Parallel()
	var failures atomic.Int32
	failures.Store(2)
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventMessage && failures.Add(-1) >= 0 {
			return http.StatusServiceUnavailable, "FPM is restarting"
		}
		return http.StatusNoContent, nil
	})
	b := newBridge(t, php, func(c *Config) { fastRetries(c); c.WebhookSecret = "k" })
	c, id := b.openConn(t, "")
	write(t, c, "hello")
	var eventID string
	for attempt := 1; attempt <= 3; attempt++ {
		call := php.nextFor(t, EventMessage, id)
		if eventID == "" {
			eventID = call.Event.EventID
		}
		if call.Event.EventID != eventID || call.Header.Get(HeaderEventID) != eventID {
			t.Errorf("attempt %d carries event id %q, want the first attempt's %q", attempt, call.Event.EventID, eventID)
		}
		if got := call.Header.Get(HeaderAttempt); got != strconv.Itoa(attempt) {
			t.Errorf("attempt %d has %s: %q", attempt, HeaderAttempt, got)
		}
		if err := Verify([]byte("k"), call.Header.Get(HeaderSignature), call.Body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("attempt %d: signature: %v", attempt, err)
		}
	}
	// The connection goes on: the next message is the next event.
	write(t, c, "again")
	if ev := php.nextFor(t, EventMessage, id).Event; *ev.Data != "again" || ev.Seq != 2 {
		t.Errorf("next message webhook: data %q seq %d, want again/2", *ev.Data, ev.Seq)
	}
	if n := metricValue(t, b.srv, "wsbridge_webhook_retries_total", "event", "message"); n != 2 {
		t.Errorf("retries counted: %v, want 2", n)
	}
}

func TestMessageNotRetriedOn4xxButClosedWith1011(t *testing.T) {
	t.Parallel()
	var messageCalls atomic.Int32
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventMessage {
			messageCalls.Add(1)
			return http.StatusUnprocessableEntity, "no"
		}
		return http.StatusNoContent, nil
	})
	b := newBridge(t, php, fastRetries)
	c, id := b.openConn(t, "")
	write(t, c, "hello")
	if ce := readClose(t, c); ce.Code != websocket.StatusInternalError || ce.Reason != "message not delivered" {
		t.Errorf("client got %v %q, want 1011 message not delivered", ce.Code, ce.Reason)
	}
	cl := php.nextFor(t, EventClose, id).Event
	if *cl.Reason != "message not delivered" || cl.Initiator != InitiatorServer {
		t.Errorf("close webhook: %q by %s", *cl.Reason, cl.Initiator)
	}
	// Message attempts all happen before the close webhook, on the same goroutine.
	if n := messageCalls.Load(); n != 1 {
		t.Errorf("PHP got %d attempts of a message it answered 422, want 1", n)
	}
}

func TestBreakerFailsFastThenRecovers(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	down.Store(true)
	var calls atomic.Int32
	php := newFakePHP(t, func(c hookCall) (int, any) {
		calls.Add(1)
		if down.Load() {
			return http.StatusInternalServerError, "boom"
		}
		return http.StatusNoContent, nil
	})
	b := newBridge(t, php, func(c *Config) {
		fastRetries(c)
		c.WebhookRetries = 0
		c.BreakerFailures = 2
		c.BreakerCooldown = time.Hour // opened for the whole test unless a probe is let through
	})
	for i := range 2 {
		_, resp, err := b.dialErr(t, "", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("dial %d while PHP fails: %v %v, want PHP's 500", i, resp, err)
		}
	}
	before := calls.Load()
	_, resp, err := b.dialErr(t, "", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial with the breaker open: %v %v, want 503", resp, err)
	}
	if calls.Load() != before {
		t.Errorf("PHP was called while considered down")
	}
	var ready map[string]string
	if code := b.api(t, "GET", "/readyz", nil, &ready); code != http.StatusServiceUnavailable || ready["status"] != "php_unreachable" {
		t.Errorf("/readyz with PHP down = %d %v, want 503 php_unreachable", code, ready)
	}
	if v := metricValue(t, b.srv, "wsbridge_webhook_breaker_open"); v != 1 {
		t.Errorf("breaker gauge %v, want 1", v)
	}

	// PHP comes back; once the cooldown is over one probe goes through and all traffic flows.
	down.Store(false)
	b.srv.hooks.breaker.mu.Lock()
	b.srv.hooks.breaker.openUntil = time.Now() // end the cooldown now rather than sleep for it
	b.srv.hooks.breaker.mu.Unlock()
	b.dial(t, "")
	if code := b.api(t, "GET", "/readyz", nil, &ready); code != http.StatusOK {
		t.Errorf("/readyz after recovery = %d %v", code, ready)
	}
	if v := metricValue(t, b.srv, "wsbridge_webhook_breaker_open"); v != 0 {
		t.Errorf("breaker gauge %v after recovery, want 0", v)
	}
	if v := metricValue(t, b.srv, "wsbridge_webhook_requests_total", "event", "open", "outcome", "breaker_open"); v != 1 {
		t.Errorf("held-back open webhooks counted %v, want 1", v)
	}
}

func TestReadyzChecksThatPHPListens(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	php := newFakePHP(t, acceptAll)
	cfg := testConfig(t, "http://"+addr+"/hook")
	b := startBridge(t, cfg, php, nil)
	var ready map[string]string
	if code := b.api(t, "GET", "/readyz", nil, &ready); code != http.StatusServiceUnavailable || !strings.Contains(ready["detail"], addr) {
		t.Errorf("/readyz with nothing at the webhook address = %d %v, want 503 naming %s", code, ready, addr)
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("could not listen on %s again: %v", addr, err)
	}
	defer ln.Close()
	if code := b.api(t, "GET", "/readyz", nil, &ready); code != http.StatusOK {
		t.Errorf("/readyz with the webhook address listening = %d %v, want 200", code, ready)
	}
}

func TestCloseWebhookOutlastsAnOutage(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventClose && down.Load() {
			return http.StatusBadGateway, "FPM down" // what nginx says when FPM is not there
		}
		return http.StatusNoContent, nil
	})
	b := newBridge(t, php, func(c *Config) {
		fastRetries(c)
		c.WebhookRetries = 0 // an outage must not spend retries
		c.BreakerFailures = 1
	})
	c, id := b.openConn(t, "")
	down.Store(true)
	c.Close(websocket.StatusNormalClosure, "bye")
	first := php.nextFor(t, EventClose, id)
	for range 3 { // still retrying, each time with the same event
		if again := php.nextFor(t, EventClose, id); again.Event.EventID != first.Event.EventID {
			t.Fatalf("retry carries event id %s, want %s", again.Event.EventID, first.Event.EventID)
		}
	}
	if q := metricValue(t, b.srv, "wsbridge_close_queue"); q != 1 {
		t.Errorf("close queue depth %v during the outage, want 1", q)
	}
	down.Store(false)
	waitFor(t, "close delivered after the outage", func() bool {
		return metricValue(t, b.srv, "wsbridge_webhook_requests_total", "event", "close", "outcome", "ok") == 1
	})
	if lost := metricValue(t, b.srv, "wsbridge_close_webhooks_failed_total"); lost != 0 {
		t.Errorf("%v close webhooks counted lost", lost)
	}
}

func TestCloseWebhookGivenUpAfterRetriesIsCounted(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventClose {
			return http.StatusInternalServerError, "fatal error" // PHP fails on this event
		}
		return http.StatusNoContent, nil
	})
	b := newBridge(t, php, func(c *Config) { fastRetries(c); c.WebhookRetries = 2 })
	c, id := b.openConn(t, "")
	c.Close(websocket.StatusNormalClosure, "bye")
	for range 3 {
		php.nextFor(t, EventClose, id)
	}
	waitFor(t, "the close counted as failed", func() bool {
		return metricValue(t, b.srv, "wsbridge_close_webhooks_failed_total") == 1
	})
}

func TestClosesArePacedAndShutdownDrainsThem(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, acceptAll)
	b := newBridge(t, php, func(c *Config) { c.CloseRate = 0.01; c.CloseBurst = 1 })
	const n = 10
	clients := make([]*websocket.Conn, n)
	for i := range clients {
		clients[i], _ = b.openConn(t, "")
	}
	for _, c := range clients {
		c.Close(websocket.StatusNormalClosure, "bye")
	}
	// One close goes at once (the burst); at 0.01/s the rest would wait for minutes.
	waitFor(t, "closes queued", func() bool { return metricValue(t, b.srv, "wsbridge_close_queue") == n-1 })
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := b.srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if got := metricValue(t, b.srv, "wsbridge_webhook_requests_total", "event", "close", "outcome", "ok"); got != n {
		t.Errorf("%v close webhooks delivered by the end of shutdown, want %d", got, n)
	}
}

func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, acceptAll)
	b := newBridge(t, php, func(c *Config) { c.MaxConnections = 2 })
	c1, id1 := b.openConn(t, "")
	b.openConn(t, "")
	_, resp, err := b.dialErr(t, "", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third connection with MAX_CONNECTIONS=2: %v %v, want 503 with Retry-After", resp, err)
	}
	if v := metricValue(t, b.srv, "wsbridge_limit_hits_total", "limit", "connections"); v != 1 {
		t.Errorf("limit hits %v, want 1", v)
	}
	if v := metricValue(t, b.srv, "wsbridge_webhook_requests_total", "event", "open", "outcome", "ok"); v != 2 {
		t.Errorf("%v open webhooks, want 2: a refused connection must not cost PHP anything", v)
	}
	c1.Close(websocket.StatusNormalClosure, "")
	php.nextFor(t, EventClose, id1)
	b.dial(t, "") // the place was given back

	pb := newBridge(t, php, func(c *Config) { c.MaxConnectionsPerIP = 1; c.ClientIPHeader = "X-Real-IP" })
	from := func(ip string) http.Header { return http.Header{"X-Real-Ip": {ip}} }
	if _, _, err := pb.dialErr(t, "", from("10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pb.dialErr(t, "", from("10.0.0.2")); err != nil {
		t.Errorf("a second address was refused: %v", err)
	}
	_, resp, err = pb.dialErr(t, "", from("10.0.0.1"))
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("second connection from 10.0.0.1: %v %v, want 429", resp, err)
	}
}

func TestMessageRateLimitClosesOnlyTheFlooder(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, acceptAll)
	b := newBridge(t, php, func(c *Config) { c.MessageRate = 0.001; c.MessageBurst = 3 })
	flooder, fid := b.openConn(t, "")
	calm, cid := b.openConn(t, "")
	for i := range 10 {
		if err := flooder.Write(context.Background(), websocket.MessageText, []byte(strconv.Itoa(i))); err != nil {
			break
		}
	}
	if ce := readClose(t, flooder); ce.Code != websocket.StatusPolicyViolation || ce.Reason != "message rate exceeded" {
		t.Errorf("flooder closed with %v %q, want 1008 message rate exceeded", ce.Code, ce.Reason)
	}
	delivered := 0
	for {
		call := php.nextFor(t, "", fid)
		if call.Event.Type == EventClose {
			if call.Event.Initiator != InitiatorServer || *call.Event.Code != 1008 {
				t.Errorf("close webhook %s %d", call.Event.Initiator, *call.Event.Code)
			}
			break
		}
		delivered++
	}
	if delivered != 3 {
		t.Errorf("%d of the flood's messages reached PHP, want the burst of 3", delivered)
	}
	write(t, calm, "still here")
	if ev := php.nextFor(t, EventMessage, cid).Event; *ev.Data != "still here" {
		t.Errorf("the other client's message: %q", *ev.Data)
	}
	if v := metricValue(t, b.srv, "wsbridge_limit_hits_total", "limit", "message_rate"); v < 1 {
		t.Errorf("message_rate limit hits %v", v)
	}
}

func TestChannelLimitRefusesWholeChanges(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, func(c hookCall) (int, any) {
		switch {
		case c.Event.Type == EventOpen && c.Event.Request.Query == "three":
			return 200, map[string]any{"join": []string{"a", "b", "c"}}
		case c.Event.Type == EventOpen:
			return 200, map[string]any{"join": []string{"a", "b"}, "meta": map[string]int{"v": 1}}
		case c.Event.Type == EventMessage && *c.Event.Data == "swap":
			return 200, map[string]any{"leave": []string{"a"}, "join": []string{"c"}}
		case c.Event.Type == EventMessage:
			return 200, map[string]any{"join": []string{"d"}, "meta": map[string]int{"v": 2}}
		}
		return http.StatusNoContent, nil
	})
	b := newBridge(t, php, func(c *Config) { c.MaxChannels = 2 })
	if _, resp, err := b.dialErr(t, "three", nil); err == nil || resp.StatusCode != http.StatusBadGateway {
		t.Errorf("open reply joining 3 channels with MAX_CHANNELS=2: %v %v, want 502", resp, err)
	}
	php.next(t, EventOpen) // the refused connection's
	c, id := b.openConn(t, "")
	write(t, c, "more")
	php.nextFor(t, EventMessage, id)
	var info connInfo
	waitFor(t, "reply handled", func() bool {
		return metricValue(t, b.srv, "wsbridge_limit_hits_total", "limit", "channels") == 2
	})
	b.api(t, "GET", "/v1/connections/"+id, nil, &info)
	if strings.Join(info.Channels, ",") != "a,b" || string(info.Meta) != `{"v":1}` {
		t.Errorf("after a refused reply: channels %v meta %s, want a,b and the old meta", info.Channels, info.Meta)
	}
	var apiErr map[string]string
	if code := b.api(t, "POST", "/v1/channels/z/join", map[string]any{"connections": []string{id}}, &apiErr); code != http.StatusConflict || apiErr["error"] != "limit" {
		t.Errorf("API join beyond the limit = %d %v, want 409 limit", code, apiErr)
	}
	write(t, c, "swap") // leave one, join one: stays at 2
	php.nextFor(t, EventMessage, id)
	waitFor(t, "swap applied", func() bool {
		b.api(t, "GET", "/v1/connections/"+id, nil, &info)
		return strings.Join(info.Channels, ",") == "b,c"
	})
}

func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, acceptAll)
	b := newBridge(t, php, nil)
	c, _ := b.openConn(t, "")
	write(t, c, "hi")
	waitFor(t, "message webhook answered", func() bool {
		return metricValue(t, b.srv, "wsbridge_webhook_duration_seconds", "event", "message") == 1
	})
	b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"all": true}, "data": "pushed"}, nil)
	if got := read(t, c); got != "pushed" {
		t.Fatalf("read %q", got)
	}
	waitFor(t, "write counted", func() bool { return metricValue(t, b.srv, "wsbridge_messages_sent_total") == 1 })
	resp, err := http.Get(b.internal.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		"wsbridge_connections 1",
		`wsbridge_webhook_requests_total{event="open",outcome="ok"} 1`,
		"wsbridge_messages_received_total 1",
		"wsbridge_received_bytes_total 2",
		"wsbridge_sent_bytes_total 6",
		"wsbridge_deliveries_total 1",
		`wsbridge_webhook_duration_seconds_count{event="message"} 1`,
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.Contains(line, "conn=") || strings.Contains(line, `user="`) || strings.Contains(line, `channel="`) {
			t.Errorf("per-connection label in %q", line)
		}
	}
}

func TestHandshakeTimeoutAnswers503(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	php := newFakePHP(t, func(c hookCall) (int, any) {
		<-release
		return http.StatusNoContent, nil
	})
	t.Cleanup(func() { close(release) })
	b := newBridge(t, php, func(c *Config) { c.HandshakeTimeout = 100 * time.Millisecond })
	_, resp, err := b.dialErr(t, "", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("open webhook slower than HANDSHAKE_TIMEOUT: %v %v, want 503", resp, err)
	}
}

func TestLogsCarryNoSecretsOrBodies(t *testing.T) {
	t.Parallel()
	const secret, token, body, reply = "webhook-secret-4c1e", "api-token-77aa", "client-body-9f3b", "php-reply-e21d"
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventMessage {
			return 200, `{"send":[{"data":"` + reply + `"}],"bogus":1}` // refused: logged
		}
		return http.StatusNoContent, nil
	})
	cfg := testConfig(t, php.URL)
	cfg.WebhookSecret, cfg.APIToken = secret, token
	var logs testkit.SyncBuffer
	srv := New(cfg, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	b := &testBridge{srv: srv, php: php}
	b.public, b.internal = newServers(t, srv)
	b.wsURL = "ws" + strings.TrimPrefix(b.public.URL, "http") + "/ws"
	c, id := b.openConn(t, "")
	write(t, c, body)
	php.nextFor(t, EventMessage, id)
	b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"all": true}, "data": body}, nil)
	read(t, c)
	c.Close(websocket.StatusNormalClosure, "")
	php.nextFor(t, EventClose, id)
	waitFor(t, "close logged", func() bool { return strings.Contains(logs.String(), "connection closed") })
	out := logs.String()
	if !strings.Contains(out, "message reply refused") {
		t.Fatalf("the refused reply was not logged; logs:\n%s", out)
	}
	for _, s := range []string{secret, token, body, reply} {
		if strings.Contains(out, s) {
			t.Errorf("logs contain %q", s)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["msg"] == nil || rec["level"] == nil {
			t.Errorf("log line is not a JSON record with msg and level: %s", line)
		}
	}
}

// TestReliabilityDocDefaults keeps the limits table of docs/reliability.md equal to the code's
// defaults.
func TestReliabilityDocDefaults(t *testing.T) {
	raw, err := os.ReadFile("../docs/reliability.md")
	if err != nil {
		t.Fatal(err)
	}
	defaults := map[string]string{}
	for _, v := range ConfigVars() {
		defaults[v.Name] = v.Default
	}
	rows := 0
	for _, line := range strings.Split(string(raw), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`WSBRIDGE_") {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		doc := strings.TrimSpace(cells[2])
		doc = strings.Trim(strings.TrimSuffix(doc, " (none)"), "`")
		want, ok := defaults[name]
		if !ok {
			t.Errorf("reliability.md names %s, which is not a variable", name)
			continue
		}
		if want == "" {
			want = "0"
		}
		if doc != want {
			t.Errorf("reliability.md gives %s a default of %q; the code's is %q", name, doc, want)
		}
		rows++
	}
	if rows < 10 {
		t.Errorf("found only %d limit rows in reliability.md", rows)
	}
}
