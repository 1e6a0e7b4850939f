package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// env is what a scenario runs against.
type env struct {
	opt     options
	wsURL   string
	apiURL  string
	hookURL string // the webhook endpoint, for the wrk ceiling
	pid     int    // the bridge's pid; 0: memory is not measured
	pids    []int  // every bridge's pid (-nodes): CPU is summed over them
	// brokerPID is the broker engine's pid (redis-server, -redis): its CPU per publication.
	brokerPID int
	tree      bool     // pid is Pushpin's runner: its children are measured with it
	gc        *gcTrace // nil: Go heap and stacks are not measured
	api       *http.Client
	log       io.Writer
}

// cpu is the bridge's CPU seconds so far (0 when its pid is unknown).
func (e *env) cpu() float64 {
	if len(e.pids) > 1 {
		total := 0.0
		for _, p := range e.pids {
			total += cpuSeconds(p)
		}
		return total
	}
	if e.pid == 0 {
		return 0
	}
	return e.cpuTree()
}

func (e *env) logf(format string, args ...any) { fmt.Fprintf(e.log, format+"\n", args...) }

// post sends one push API request and returns its status and body.
func (e *env) post(ctx context.Context, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.apiURL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.api.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// IdlePoint is the bridge's memory with Conns idle connections open.
type IdlePoint struct {
	Conns           int     `json:"conns"`
	RSSKiB          int64   `json:"rss_kib"`
	RSSPerConnKiB   float64 `json:"rss_per_conn_kib"`
	HeapPerConnKiB  float64 `json:"heap_per_conn_kib,omitempty"`
	StackPerConnKiB float64 `json:"stack_per_conn_kib,omitempty"`
}

// IdleResult is the idle-memory scenario's outcome.
type IdleResult struct {
	BaselineRSSKiB int64       `json:"baseline_rss_kib"`
	Points         []IdlePoint `json:"points"`
}

func runIdle(ctx context.Context, e *env) (*IdleResult, error) {
	if e.pid == 0 {
		return nil, errors.New("idle needs the bridge's pid (-bridge, or -pid with -ws/-api)")
	}
	f, err := newFleet(e.wsURL, e.opt.counts[len(e.opt.counts)-1])
	if err != nil {
		return nil, err
	}
	defer f.close()
	base, err := settledRSS(ctx, e.rssTree)
	if err != nil {
		return nil, err
	}
	_, live0, stk0 := e.nudgeGC(ctx)
	res := &IdleResult{BaselineRSSKiB: base}
	for _, n := range e.opt.counts {
		t0 := time.Now()
		if _, err := f.connect(ctx, n, e.opt.dialConc); err != nil {
			return res, err
		}
		rss, err := settledRSS(ctx, e.rssTree)
		if err != nil {
			return res, err
		}
		p := IdlePoint{Conns: n, RSSKiB: rss, RSSPerConnKiB: float64(rss-base) / float64(n)}
		if ok, live, stk := e.nudgeGC(ctx); ok {
			p.HeapPerConnKiB = float64(live-live0) * 1024 / float64(n)
			p.StackPerConnKiB = float64(stk-stk0) * 1024 / float64(n)
		}
		res.Points = append(res.Points, p)
		goMem := fmt.Sprintf("; Go heap %.1f KiB/conn, stacks %.1f KiB/conn", p.HeapPerConnKiB, p.StackPerConnKiB)
		if e.gc == nil {
			goMem = "" // not a Go process of ours (Pushpin), or attached without its gctrace
		}
		e.logf("idle %6d conns (connected in %s): RSS %d KiB, %.1f KiB/conn over baseline %d KiB%s",
			n, time.Since(t0).Round(time.Millisecond), rss, p.RSSPerConnKiB, base, goMem)
	}
	return res, nil
}

// settledRSS waits until the process's RSS stops moving (two reads 500 ms apart within 0.5 %,
// at most 10 s) and returns it.
func settledRSS(ctx context.Context, rss func() (int64, error)) (int64, error) {
	prev, err := rss()
	if err != nil {
		return 0, err
	}
	for range 20 {
		select {
		case <-ctx.Done():
			return prev, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		cur, err := rss()
		if err != nil {
			return 0, err
		}
		if d := cur - prev; d*200 <= cur && -d*200 <= cur {
			return cur, nil
		}
		prev = cur
	}
	return prev, nil
}

// nudgeGC makes the bridge collect garbage so that gctrace prints the live heap as it is now:
// it posts push bodies of whitespace just under MAX_PUSH_BODY, which the API reads whole
// (allocating) and refuses. It returns the first gc line printed after the call began.
func (e *env) nudgeGC(ctx context.Context) (ok bool, liveMB, stacksMB int64) {
	if e.gc == nil {
		return false, 0, 0
	}
	n0, _, _ := e.gc.last()
	body := bytes.Repeat([]byte{' '}, 1<<20-64)
	for range 5000 {
		if ctx.Err() != nil {
			return false, 0, 0
		}
		e.post(ctx, "/v1/publish", body)
		if n, live, stk := e.gc.last(); n > n0 {
			return true, live, stk
		}
	}
	return false, 0, 0
}

// ConnectResult is the connect-rate scenario's outcome.
type ConnectResult struct {
	Conns       int     `json:"conns"`
	Seconds     float64 `json:"seconds"`
	ConnsPerSec float64 `json:"conns_per_sec"`
	Handshake   Dist    `json:"handshake"`
	// OpenCeiling is wrk posting the open event straight to the PHP script (-php), and Ratio
	// the connects per second over its requests per second.
	OpenCeiling *WrkResult `json:"open_ceiling,omitempty"`
	Ratio       float64    `json:"ratio,omitempty"`
	// BridgeCPUus and ToolCPUus are the server's and the clients' CPU time per connect, in
	// microseconds (PHP's, under -php, is neither).
	BridgeCPUus float64 `json:"bridge_cpu_us_per_connect,omitempty"`
	ToolCPUus   float64 `json:"tool_cpu_us_per_connect,omitempty"`
}

// openEvent is an open webhook as the bridge sends it for one of the tool's clients.
const openEvent = `{"type":"open","event_id":"ABCDEFGHIJKLMNOPQRSTUVWXYZ","connection_id":"benchnode.ABCDEFGHIJKLMNOP","transport":"ws","user_id":"","meta":null,"channels":[],"time":"2026-01-01T00:00:00.000Z","request":{"method":"GET","path":"/ws","query":"u=u1","headers":{"User-Agent":"Go-http-client/1.1","X-Forwarded-For":"127.0.0.1"},"remote_addr":"127.0.0.1:40000","subprotocols":[]}}`

func runConnect(ctx context.Context, e *env) (*ConnectResult, error) {
	f, err := newFleet(e.wsURL, e.opt.conns)
	if err != nil {
		return nil, err
	}
	defer f.close()
	// The ceiling first, so that no close webhook of this run's clients competes with it: the
	// open event the bridge sends, posted by wrk straight to the same script, with as many
	// requests in flight as dials.
	var ceiling *WrkResult
	if _, lerr := exec.LookPath("wrk"); lerr == nil && e.opt.php && e.hookURL != "" && e.opt.target != targetPushpin {
		if ceiling, err = e.wrkPost(ctx, e.opt.dialConc, openEvent, "application/json"); err != nil {
			return nil, err
		}
	}
	cpu0, self0 := e.cpu(), cpuSeconds(os.Getpid())
	t0 := time.Now()
	hs, err := f.connect(ctx, e.opt.conns, e.opt.dialConc)
	el := time.Since(t0)
	if err != nil {
		return nil, err
	}
	r := &ConnectResult{Conns: e.opt.conns, Seconds: el.Seconds(), ConnsPerSec: float64(e.opt.conns) / el.Seconds(), Handshake: hs}
	if e.pid != 0 {
		r.BridgeCPUus = (e.cpu() - cpu0) * 1e6 / float64(r.Conns)
	}
	r.ToolCPUus = (cpuSeconds(os.Getpid()) - self0) * 1e6 / float64(r.Conns)
	e.logf("connect %d conns in %s: %.0f conns/s (CPU µs each: server %.1f, clients %.1f); handshake (dial to first frame) %s",
		r.Conns, el.Round(time.Millisecond), r.ConnsPerSec, r.BridgeCPUus, r.ToolCPUus, hs)
	if ceiling != nil {
		r.OpenCeiling, r.Ratio = ceiling, r.ConnsPerSec/ceiling.PerSec
		e.logf("open webhook direct (wrk), %d connections: %.0f req/s; connects through the bridge are %.1f %% of it", e.opt.dialConc, ceiling.PerSec, 100*r.Ratio)
	}
	return r, nil
}

// Phase is one measured stretch of pushes or broadcasts.
type Phase struct {
	Name          string  `json:"name"`
	Requests      int     `json:"requests"` // push API requests
	Items         int     `json:"items"`    // publications (a batch request carries several)
	Expected      int64   `json:"expected_deliveries"`
	Delivered     int64   `json:"deliveries"`
	Seconds       float64 `json:"seconds"` // first request to last delivery
	APISeconds    float64 `json:"api_seconds"`
	ItemsPerSec   float64 `json:"items_per_sec"` // publications the API took per second
	DeliveriesSec float64 `json:"deliveries_per_sec"`
	Latency       Dist    `json:"latency"`
	// BridgeCPUus is the bridge's CPU time (user + system) per delivery, in microseconds.
	BridgeCPUus float64 `json:"bridge_cpu_us_per_delivery,omitempty"`
	// ToolCPUus is this load generator's CPU time per delivery: on a shared machine, what
	// the clients cost is CPU the bridge did not get.
	ToolCPUus float64 `json:"tool_cpu_us_per_delivery,omitempty"`
	// BridgeBytesOut is what the bridge wrote to sockets per delivery (/proc/PID/io wchar):
	// frames, plus the little the push API's answers add; with compression, what it saved.
	BridgeBytesOut float64 `json:"bridge_bytes_written_per_delivery,omitempty"`
	// BrokerCPUus is the broker engine's CPU time per publication (-redis), in microseconds:
	// what one envelope to every node, and the ping and state traffic meanwhile, cost it.
	// BridgeCPUus is then summed over every node.
	BrokerCPUus float64 `json:"broker_cpu_us_per_publication,omitempty"`
}

func (p Phase) String() string {
	s := fmt.Sprintf("%-22s %6d items in %6.2fs API (%8.0f/s); %8d/%d deliveries in %6.2fs = %9.0f deliveries/s (CPU µs each: bridge %.1f, clients %.1f; bytes written each %.0f); latency %s",
		p.Name, p.Items, p.APISeconds, p.ItemsPerSec, p.Delivered, p.Expected, p.Seconds, p.DeliveriesSec, p.BridgeCPUus, p.ToolCPUus, p.BridgeBytesOut, p.Latency)
	if p.BrokerCPUus > 0 {
		s += fmt.Sprintf("; broker CPU %.1f µs per publication", p.BrokerCPUus)
	}
	return s
}

// runPhase posts bodies (each carrying items publications) with workers in parallel, paced to
// rate requests/s when rate > 0, then waits for expected stamped frames.
func (e *env) runPhase(ctx context.Context, f *fleet, name string, bodies func(i int, now time.Time) []byte, requests, items int, expected int64, rate float64, workers int) (Phase, error) {
	f.takeLatencies()
	base := f.frames.Load()
	cpu0, self0, w0 := e.cpu(), cpuSeconds(os.Getpid()), e.writtenTree()
	var broker0 float64
	if e.brokerPID != 0 {
		broker0 = cpuSeconds(e.brokerPID)
	}
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	t0 := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= requests || ctx.Err() != nil {
					return
				}
				if rate > 0 {
					if d := time.Until(t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
						time.Sleep(d) // pacing the load, not synchronising
					}
				}
				status, b, err := e.post(ctx, e.publishPath(), bodies(i, time.Now()))
				if err == nil && status != http.StatusOK {
					err = fmt.Errorf("push API answered %d: %s", status, b)
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	api := time.Since(t0)
	if firstErr != nil {
		return Phase{}, fmt.Errorf("%s: %w", name, firstErr)
	}
	wctx, cancel := context.WithTimeout(ctx, e.opt.drain)
	got := f.waitFrames(wctx, base+expected) - base
	cancel()
	el := time.Since(t0)
	p := Phase{Name: name, Requests: requests, Items: items, Expected: expected, Delivered: got,
		Seconds: el.Seconds(), APISeconds: api.Seconds(), ItemsPerSec: float64(items) / api.Seconds(),
		DeliveriesSec: float64(got) / el.Seconds(), Latency: f.takeLatencies()}
	if got > 0 && e.pid != 0 {
		p.BridgeCPUus = (e.cpu() - cpu0) * 1e6 / float64(got)
		p.ToolCPUus = (cpuSeconds(os.Getpid()) - self0) * 1e6 / float64(got)
		p.BridgeBytesOut = float64(e.writtenTree()-w0) / float64(got)
	}
	if e.brokerPID != 0 && items > 0 {
		p.BrokerCPUus = (cpuSeconds(e.brokerPID) - broker0) * 1e6 / float64(items)
	}
	e.logf("%s", p)
	return p, nil
}

// connected returns a fleet of n connected clients, each with a reader goroutine; the caller
// closes it.
func (e *env) connected(ctx context.Context, n int) (*fleet, error) {
	return e.connectFleet(ctx, n, false)
}

// connectFleet is connected, where selfRead leaves reading to the caller (fleet.selfRead).
func (e *env) connectFleet(ctx context.Context, n int, selfRead bool) (*fleet, error) {
	f, err := newFleet(e.wsURL, n)
	if err != nil {
		return nil, err
	}
	f.selfRead = selfRead
	if _, err := f.connect(ctx, n, e.opt.dialConc); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

// BroadcastResult is the fan-out scenario's outcome.
type BroadcastResult struct {
	Subscribers int     `json:"subscribers"`
	Phases      []Phase `json:"phases"`
}

func runBroadcast(ctx context.Context, e *env) (*BroadcastResult, error) {
	f, err := e.connected(ctx, e.opt.conns)
	if err != nil {
		return nil, err
	}
	defer f.close()
	res := &BroadcastResult{Subscribers: e.opt.conns}
	var pad string
	if e.opt.payload > 0 {
		// The stamp stays last (sentAt reads it after the last space).
		for i := 0; len(pad) < e.opt.payload; i++ {
			pad += fmt.Sprintf(`{"user":"u%d","room":"lobby","text":"message number %d to everyone"},`, i%50, i)
		}
		pad = pad[:max(0, e.opt.payload-len(stamp("b 000", time.Now())))]
	}
	body := func(i int, now time.Time) []byte {
		return e.publishBody(pad + stamp("b "+strconv.Itoa(i), now))
	}
	m := e.opt.messages
	for _, ph := range []struct {
		name    string
		rate    float64
		workers int
	}{
		// Both phases keep up to -workers publishes in flight, as several PHP workers pushing at
		// once would; the paced one still starts them at -rate.
		{fmt.Sprintf("broadcast @%g msg/s", e.opt.rate), e.opt.rate, e.opt.workers},
		{"broadcast flat out", 0, e.opt.workers},
	} {
		p, err := e.runPhase(ctx, f, ph.name, body, m, m, int64(m)*int64(e.opt.conns), ph.rate, ph.workers)
		if err != nil {
			return res, err
		}
		res.Phases = append(res.Phases, p)
	}
	return res, nil
}

// PushResult is the point-to-point scenario's outcome.
type PushResult struct {
	Conns  int     `json:"conns"`
	Phases []Phase `json:"phases"`
}

func runPush(ctx context.Context, e *env) (*PushResult, error) {
	f, err := e.connected(ctx, e.opt.conns)
	if err != nil {
		return nil, err
	}
	defer f.close()
	cs := f.clients
	n := len(cs)
	res := &PushResult{Conns: n}
	one := func(to func(*client) string) func(int, time.Time) []byte {
		return func(i int, now time.Time) []byte {
			return fmt.Appendf(nil, `{"to":%s,"data":%q}`, to(cs[i]), stamp("p", now))
		}
	}
	byConn := func(c *client) string { return `{"connections":["` + c.id + `"]}` }
	byUser := func(c *client) string { return `{"users":["` + c.user + `"]}` }
	batch := e.opt.batch
	batches := (n + batch - 1) / batch
	batched := func(i int, now time.Time) []byte {
		b := []byte{'['}
		for j := i * batch; j < min(n, (i+1)*batch); j++ {
			if j > i*batch {
				b = append(b, ',')
			}
			b = fmt.Appendf(b, `{"to":%s,"data":%q}`, byConn(cs[j]), stamp("p", now))
		}
		return append(b, ']')
	}
	for _, ph := range []struct {
		name       string
		body       func(int, time.Time) []byte
		reqs, each int
	}{
		{"push per connection", one(byConn), n, 1},
		{"push per user", one(byUser), n, 1},
		{fmt.Sprintf("push batch of %d", batch), batched, batches, batch},
	} {
		p, err := e.runPhase(ctx, f, ph.name, ph.body, ph.reqs, n, int64(n), 0, e.opt.workers)
		if err != nil {
			return res, err
		}
		res.Phases = append(res.Phases, p)
	}
	return res, nil
}

// WebhookRun is one closed-loop measurement of the message path.
type WebhookRun struct {
	Clients   int     `json:"clients"`
	Messages  int64   `json:"messages"`
	PerSec    float64 `json:"per_sec"`
	LatencyMS Dist    `json:"latency"`
	// BridgeCPUus is the bridge's CPU time per message, in microseconds; BridgeSysCPUus the
	// part of it spent in the kernel (system calls, and on loopback the peer's TCP receive).
	BridgeCPUus    float64 `json:"bridge_cpu_us_per_message,omitempty"`
	BridgeSysCPUus float64 `json:"bridge_sys_cpu_us_per_message,omitempty"`
	// ToolCPUus is this tool's CPU time per message (its clients), taken from the same cores.
	ToolCPUus float64 `json:"tool_cpu_us_per_message,omitempty"`
}

// WebhookResult compares client messages through the bridge with wrk hitting PHP directly.
type WebhookResult struct {
	Bridge       WebhookRun `json:"bridge"`
	Bridge1      WebhookRun `json:"bridge_one_client"`
	Wrk          *WrkResult `json:"wrk,omitempty"`
	Wrk1         *WrkResult `json:"wrk_one_connection,omitempty"`
	Ratio        float64    `json:"ratio,omitempty"`        // bridge messages/s over wrk requests/s
	AddedP50MS   float64    `json:"added_p50_ms,omitempty"` // one client: bridge round trip p50 - wrk p50
	AddedNoteRTT string     `json:"added_note,omitempty"`
}

func runWebhook(ctx context.Context, e *env) (*WebhookResult, error) {
	res := &WebhookResult{}
	var err error
	if res.Bridge, err = e.echoLoop(ctx, e.opt.hookClients); err != nil {
		return nil, err
	}
	if res.Bridge1, err = e.echoLoop(ctx, 1); err != nil {
		return nil, err
	}
	if _, lerr := exec.LookPath("wrk"); lerr != nil || e.hookURL == "" {
		e.logf("wrk ceiling skipped: wrk not installed (apt-get install -y wrk) or no webhook URL")
		return res, nil
	}
	if res.Wrk, err = e.wrk(ctx, e.opt.hookClients); err != nil {
		return res, err
	}
	if res.Wrk1, err = e.wrk(ctx, 1); err != nil {
		return res, err
	}
	res.Ratio = res.Bridge.PerSec / res.Wrk.PerSec
	res.AddedP50MS = res.Bridge1.LatencyMS.P50 - res.Wrk1.P50MS
	res.AddedNoteRTT = "client round trip through the bridge (frame in, webhook, reply, frame out) minus wrk's request latency, one connection each"
	e.logf("webhook: bridge %.0f msg/s vs wrk %.0f req/s = %.1f %%; added latency p50 %.3f ms (one client %.3f ms vs wrk -c1 %.3f ms)",
		res.Bridge.PerSec, res.Wrk.PerSec, 100*res.Ratio, res.AddedP50MS, res.Bridge1.LatencyMS.P50, res.Wrk1.P50MS)
	return res, nil
}

// echoLoop runs clients that each send a stamped message and read PHP's echo, for the
// configured duration, and counts the round trips. Each client writes and reads on its own
// goroutine: a reader goroutine handing every echo over would cost the tool a wake-up per
// message on the cores the bridge uses.
func (e *env) echoLoop(ctx context.Context, clients int) (WebhookRun, error) {
	f, err := e.connectFleet(ctx, clients, true)
	if err != nil {
		return WebhookRun{}, err
	}
	defer f.close()
	f.takeLatencies()
	cpu0, sys0, self0 := e.cpu(), e.sysTree(), cpuSeconds(os.Getpid())
	var total atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	t0 := time.Now()
	end := t0.Add(e.opt.duration)
	for _, c := range f.clients {
		wg.Go(func() {
			// One deadline for the whole loop, not a timer per message: a missing echo fails
			// the run after the drain timeout.
			rctx, cancel := context.WithDeadline(ctx, end.Add(e.opt.drain))
			defer cancel()
			var buf []byte
			for time.Now().Before(end) {
				err := c.ws.Write(ctx, websocket.MessageText, []byte(stamp("e", time.Now())))
				if err == nil {
					buf, err = readInto(rctx, c.ws, buf[:0])
				}
				if err == nil && len(buf) > 0 && buf[0] == 'e' {
					if at, ok := sentAt(buf); ok {
						c.lat.add(time.Since(at))
					}
					total.Add(1)
					continue
				}
				if err == nil {
					err = fmt.Errorf("frame %q where an echo was expected", buf)
				} else if rctx.Err() != nil && ctx.Err() == nil {
					err = errors.New("no echo within the drain timeout")
				}
				errOnce.Do(func() { firstErr = err })
				return
			}
		})
	}
	wg.Wait()
	el := time.Since(t0)
	r := WebhookRun{Clients: clients, Messages: total.Load(), PerSec: float64(total.Load()) / el.Seconds(), LatencyMS: f.takeLatencies()}
	if r.Messages > 0 && e.pid != 0 {
		r.BridgeCPUus = (e.cpu() - cpu0) * 1e6 / float64(r.Messages)
		r.BridgeSysCPUus = (e.sysTree() - sys0) * 1e6 / float64(r.Messages)
	}
	if r.Messages > 0 {
		r.ToolCPUus = (cpuSeconds(os.Getpid()) - self0) * 1e6 / float64(r.Messages)
	}
	e.logf("webhook via %s, %3d clients: %6d messages in %s = %7.0f msg/s (CPU µs each: server %.1f of which kernel %.1f, clients %.1f); round trip %s",
		e.opt.target, clients, r.Messages, el.Round(time.Millisecond), r.PerSec, r.BridgeCPUus, r.BridgeSysCPUus, r.ToolCPUus, r.LatencyMS)
	return r, firstErr
}

// WrkResult is what wrk reported hitting the webhook script directly.
type WrkResult struct {
	Connections int     `json:"connections"`
	PerSec      float64 `json:"per_sec"`
	P50MS       float64 `json:"p50_ms"`
	P90MS       float64 `json:"p90_ms"`
	P99MS       float64 `json:"p99_ms"`
}

// wrk posts the message event the bridge would send, to the same URL, with conns connections.
func (e *env) wrk(ctx context.Context, conns int) (*WrkResult, error) {
	ev, ctype := e.wrkBody(stamp("e", time.Now()))
	r, err := e.wrkPost(ctx, conns, ev, ctype)
	if err == nil {
		e.logf("webhook direct (wrk), %3d connections: %7.0f req/s; p50 %.3f ms, p90 %.3f ms, p99 %.3f ms", conns, r.PerSec, r.P50MS, r.P90MS, r.P99MS)
	}
	return r, err
}

// wrkPost posts ev (of content type ctype) to the webhook URL with conns connections for the
// run's -duration.
func (e *env) wrkPost(ctx context.Context, conns int, ev, ctype string) (*WrkResult, error) {
	if err := checkLoopback(e.hookURL); err != nil {
		return nil, err
	}
	lua := fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %q\nwrk.headers[\"Content-Type\"] = %q\nwrk.headers[\"WsBridge-Event\"] = \"message\"\nwrk.headers[\"Connection-Id\"] = \"bench\"\n", ev, ctype)
	dir, err := os.MkdirTemp("", "wsbridge-bench-wrk")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "post.lua")
	if err := os.WriteFile(script, []byte(lua), 0o644); err != nil {
		return nil, err
	}
	secs := max(1, int(e.opt.duration.Seconds()))
	out, err := exec.CommandContext(ctx, "wrk", "-t", strconv.Itoa(min(conns, runtime.GOMAXPROCS(0))), "-c", strconv.Itoa(conns),
		"-d", strconv.Itoa(secs)+"s", "--latency", "-s", script, e.hookURL).CombinedOutput() // on this tool's CPUs, by inheritance
	if err != nil {
		return nil, fmt.Errorf("wrk: %w: %s", err, out)
	}
	r, err := parseWrk(out)
	if err != nil {
		return nil, err
	}
	r.Connections = conns
	return r, nil
}

var (
	wrkRate = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct  = regexp.MustCompile(`^\s+(50|90|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkErrs = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// parseWrk reads wrk --latency output: the rate and the 50/90/99 % latencies.
func parseWrk(out []byte) (*WrkResult, error) {
	if m := wrkErrs.FindSubmatch(out); m != nil {
		return nil, fmt.Errorf("wrk saw %s error responses:\n%s", m[1], out)
	}
	m := wrkRate.FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("no Requests/sec in wrk output:\n%s", out)
	}
	r := &WrkResult{}
	r.PerSec, _ = strconv.ParseFloat(string(m[1]), 64)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		p := wrkPct.FindStringSubmatch(sc.Text())
		if p == nil {
			continue
		}
		v, _ := strconv.ParseFloat(p[2], 64)
		switch p[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		switch p[1] {
		case "50":
			r.P50MS = v
		case "90":
			r.P90MS = v
		case "99":
			r.P99MS = v
		}
	}
	return r, nil
}

// Report is the JSON the tool writes with -json.
type Report struct {
	Scenario  string           `json:"scenario"`
	Target    string           `json:"target"` // "wsbridge" or "pushpin"
	Hook      string           `json:"hook"`   // "go" or "php"
	Started   time.Time        `json:"started"`
	Options   map[string]any   `json:"options"`
	Idle      *IdleResult      `json:"idle,omitempty"`
	Connect   *ConnectResult   `json:"connect,omitempty"`
	Broadcast *BroadcastResult `json:"broadcast,omitempty"`
	Push      *PushResult      `json:"push,omitempty"`
	Webhook   *WebhookResult   `json:"webhook,omitempty"`
}

func writeJSON(path string, r *Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// parseCounts reads "1000,10000,20000".
func parseCounts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-counts: %q is not a positive number", f)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, errors.New("-counts must increase")
		}
		out = append(out, n)
	}
	return out, nil
}
