package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Received envelopes are checked whole before any of them is applied.
func TestEnvelopeCheck(t *testing.T) {
	t.Parallel()
	text := "x"
	pub := &Publication{To: Targets{All: true}, Data: &text}
	for _, tc := range []struct {
		name    string
		e       Envelope
		wantErr string // "" when accepted
		version bool   // the error is ErrEnvelopeVersion
	}{
		{"publish v1", Envelope{Version: 1, Origin: "a", Op: OpPublish, Publication: pub}, "", false},
		{"close v1", Envelope{Version: 1, Origin: "a", Op: OpClose, Targets: Targets{Users: []string{"u"}}, Close: &CloseRequest{Code: 1000}}, "", false},
		{"join v1", Envelope{Version: 1, Origin: "a", Op: OpJoin, Targets: Targets{Users: []string{"u"}}, Channel: "c"}, "", false},
		{"leave v1", Envelope{Version: 1, Origin: "a", Op: OpLeave, Targets: Targets{Users: []string{"u"}}, Channel: "c"}, "", false},
		{"newer version", Envelope{Version: EnvelopeVersion + 1, Origin: "a", Op: OpPublish, Publication: pub}, "unknown envelope version 3 from node \"a\": this node knows versions 1 to 2", true},
		{"pusher v2", Envelope{Version: 2, Origin: "a", Op: opPusher, Channel: "private-c", Frame: []byte(`{"event":"client-x"}`)}, "", false},
		{"pusher without frame", Envelope{Version: 2, Origin: "a", Op: opPusher, Channel: "private-c"}, "pusher envelope without channel or frame", false},
		{"no version", Envelope{Origin: "a", Op: OpPublish, Publication: pub}, "unknown envelope version 0", true},
		{"unknown op", Envelope{Version: 1, Origin: "a", Op: "history"}, `unknown op "history"`, false},
		{"publish without publication", Envelope{Version: 1, Origin: "a", Op: OpPublish}, "without publication", false},
		{"close without request", Envelope{Version: 1, Origin: "a", Op: OpClose}, "without close request", false},
		{"join without channel", Envelope{Version: 1, Origin: "a", Op: OpJoin}, "join envelope without channel", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.e.check()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if errors.Is(err, ErrEnvelopeVersion) != tc.version {
				t.Errorf("errors.Is(%v, ErrEnvelopeVersion) = %v, want %v", err, !tc.version, tc.version)
			}
		})
	}
}

// brokerBridge starts a bridge on broker. A MemoryBroker is joined as Serve joins it (Run with
// s.deliver), and the call returns once the node is in.
func brokerBridge(t *testing.T, cfg Config, php *fakePHP, broker Broker) *testBridge {
	t.Helper()
	srv := New(cfg, testLog(t), broker)
	b := &testBridge{srv: srv, php: php}
	if mb, ok := broker.(*MemoryBroker); ok {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- mb.Run(ctx, srv.Node(), srv.deliver) }()
		t.Cleanup(func() { cancel(); <-done })
		waitFor(t, "the node joined", func() bool {
			ns, _ := mb.Nodes(context.Background())
			return slices.Contains(ns, srv.Node())
		})
	}
	b.public, b.internal = newServers(t, srv)
	b.wsURL = "ws" + strings.TrimPrefix(b.public.URL, "http") + cfg.WSPaths[0]
	return b
}

// During a rolling upgrade, an envelope from a node that is newer than this one is refused
// whole, logged and counted; one of a version this node knows is applied.
func TestEnvelopeOfNewerVersionRefused(t *testing.T) {
	t.Parallel()
	broker := NewMemoryBroker()
	php := newFakePHP(t, room)
	cfg := testConfig(t, php.URL)
	cfg.NodeID = "old"
	b := brokerBridge(t, cfg, php, broker)
	c := b.clients(t, "join=lobby")[0]

	// As a network broker decodes them: encoding/json, unknown fields ignored.
	for _, raw := range []string{
		`{"v":` + strconv.Itoa(EnvelopeVersion+1) + `,"origin":"new","op":"publish","publication":{"to":{"channels":["lobby"]},"data":"from v2"},"priority":"high"}`,
		`{"v":1,"origin":"new","op":"publish","publication":{"to":{"channels":["lobby"]},"data":"from v1"}}`,
	} {
		var e Envelope
		if err := json.Unmarshal([]byte(raw), &e); err != nil {
			t.Fatal(err)
		}
		if err := broker.Publish(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	// One origin's envelopes arrive in order: had the v2 one been applied, it would come first.
	if got := read(t, c.ws); got != "from v1" {
		t.Errorf("client read %q, want %q: the newer envelope was applied", got, "from v1")
	}
	if n := metricValue(t, b.srv, "wsbridge_broker_envelopes_refused_total"); n != 1 {
		t.Errorf("wsbridge_broker_envelopes_refused_total = %v, want 1", n)
	}
}

// stallBroker answers no Publish until its context ends, as a broker whose engine hangs.
type stallBroker struct {
	publishes atomic.Int64
	entered   chan struct{} // one per Publish call, so a test can wait for them
}

func (b *stallBroker) Publish(ctx context.Context, _ Envelope) error {
	b.publishes.Add(1)
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

func (b *stallBroker) Run(ctx context.Context, _ string, _ func(Envelope)) error {
	<-ctx.Done()
	return nil
}

// A broker that does not answer holds a connection's reader at most BROKER_TIMEOUT per reply
// (not per publication), and the push API caller gets broker_error, the push applied locally.
func TestSlowBrokerDoesNotStallTheReader(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, func(c hookCall) (int, any) {
		switch c.Event.Type {
		case EventOpen:
			return 200, map[string]any{"join": []string{"lobby"}}
		case EventMessage:
			to := map[string]any{"channels": []string{"lobby"}}
			return 200, map[string]any{"publish": []any{
				map[string]any{"to": to, "data": "one"}, map[string]any{"to": to, "data": "two"}}}
		}
		return 204, nil
	})
	cfg := testConfig(t, php.URL)
	cfg.BrokerTimeout = 50 * time.Millisecond // short, to keep the test quick; nothing is timed
	broker := &stallBroker{entered: make(chan struct{}, 16)}
	b := brokerBridge(t, cfg, php, broker)
	c := b.clients(t, "")[0]

	for _, msg := range []string{"m1", "m2"} {
		write(t, c.ws, msg)
		if got := php.nextFor(t, EventMessage, c.id).Event.Data; got == nil || *got != msg {
			t.Fatalf("PHP got message %v, want %q: the reader is stuck behind the broker", got, msg)
		}
		for _, want := range []string{"one", "two"} {
			if got := read(t, c.ws); got != want {
				t.Fatalf("client read %q, want %q", got, want)
			}
			// The local delivery comes first; the broker's turn follows it.
			select {
			case <-broker.entered:
			case <-time.After(waitLimit):
				t.Fatalf("publication %q never reached the broker", want)
			}
		}
	}
	if n := broker.publishes.Load(); n != 4 {
		t.Errorf("broker got %d publishes, want 4 (two per reply)", n)
	}

	var out map[string]string
	st := b.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"all": true}, "data": "api"}, &out)
	if st != 502 || out["error"] != "broker_error" || !strings.Contains(out["detail"], "WSBRIDGE_BROKER_TIMEOUT") {
		t.Errorf("push with a stalled broker: %d %v, want 502 broker_error naming WSBRIDGE_BROKER_TIMEOUT", st, out)
	}
	if got := read(t, c.ws); got != "api" {
		t.Errorf("client read %q, want the push applied locally", got)
	}
}

// healthBroker is a memory broker whose engine can be made unreachable for /readyz.
type healthBroker struct {
	*MemoryBroker
	down atomic.Pointer[error]
}

var _ BrokerHealth = (*healthBroker)(nil)

func (b *healthBroker) Healthy(context.Context) error {
	if err := b.down.Load(); err != nil {
		return *err
	}
	return nil
}

// /readyz asks a broker that has a health check, and shows its reason while it fails.
func TestReadyzAsksTheBroker(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, nil)
	broker := &healthBroker{MemoryBroker: NewMemoryBroker()}
	b := brokerBridge(t, testConfig(t, php.URL), php, broker)
	var out map[string]string
	if st := b.api(t, "GET", "/readyz", nil, &out); st != 200 {
		t.Fatalf("/readyz with the broker healthy: %d %v", st, out)
	}
	down := errors.New("dial tcp 10.0.0.7:6379: connection refused")
	broker.down.Store(&down)
	out = nil
	if st := b.api(t, "GET", "/readyz", nil, &out); st != 503 || out["status"] != "broker_unreachable" || out["detail"] != down.Error() {
		t.Errorf("/readyz with the broker down: %d %v, want 503 broker_unreachable with its reason", st, out)
	}
	broker.down.Store(nil)
	if st := b.api(t, "GET", "/readyz", nil, nil); st != 200 {
		t.Errorf("/readyz with the broker back: %d", st)
	}
}

// endingBroker's Run ends, before any shutdown, with whatever is sent on end.
type endingBroker struct {
	MemoryBroker
	end chan error
}

func (b *endingBroker) Run(ctx context.Context, _ string, _ func(Envelope)) error {
	select {
	case err := <-b.end:
		return err
	case <-ctx.Done():
		return nil
	}
}

// A broker that gives up stops the server with its reason: a node deaf to the others must not
// go on serving.
func TestServeReturnsTheBrokersFailure(t *testing.T) {
	t.Parallel()
	lost := errors.New("engine lost for good")
	for _, tc := range []struct {
		name string
		end  error
		want string
	}{
		{"error", lost, "broker stopped: engine lost for good"},
		{"nil before shutdown", nil, "broker stopped: Run returned before shutdown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			php := newFakePHP(t, nil)
			cfg := testConfig(t, php.URL)
			cfg.ShutdownTimeout = waitLimit
			broker := &endingBroker{end: make(chan error, 1)}
			srv := New(cfg, testLog(t), broker)
			_, _, cancel, done := serveLoopback(t, srv)
			defer cancel()
			broker.end <- tc.end
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Serve returned %v, want an error containing %q", err, tc.want)
				}
				if tc.end != nil && !errors.Is(err, tc.end) {
					t.Errorf("Serve's error %v does not wrap the broker's", err)
				}
			case <-time.After(waitLimit):
				cancel()
				<-done
				t.Fatalf("Serve still running %s after the broker's Run ended", waitLimit)
			}
		})
	}
}

// BenchmarkBrokerPublish measures what the server's wrapper (version stamp, deadline) adds to
// each publication's hand-off to the broker, on a single node: the memory broker as the hub
// had it, as the server wraps it (no deadline: it never waits), and with a deadline, as a
// network broker gets.
func BenchmarkBrokerPublish(b *testing.B) {
	text := "x"
	e := Envelope{Origin: "bench", Op: OpPublish, Publication: &Publication{To: Targets{Channels: []string{"room"}}, Data: &text}}
	for _, bc := range []struct {
		name   string
		broker Broker
	}{
		{"memory", NewMemoryBroker()},
		{"wrapped-memory", boundedBroker{Broker: NewMemoryBroker()}},
		{"wrapped-deadline", boundedBroker{Broker: NewMemoryBroker(), timeout: 2 * time.Second}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			for b.Loop() {
				if err := bc.broker.Publish(ctx, e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// /v1/stats lists the cluster's nodes when the broker keeps a registry of them.
func TestStatsListsTheNodes(t *testing.T) {
	t.Parallel()
	broker := NewMemoryBroker()
	php := newFakePHP(t, nil)
	cfgA, cfgB := testConfig(t, php.URL), testConfig(t, php.URL)
	cfgA.NodeID, cfgB.NodeID = "a", "b"
	a := brokerBridge(t, cfgA, php, broker)
	brokerBridge(t, cfgB, php, broker)
	var out struct {
		Node  string   `json:"node"`
		Nodes []string `json:"nodes"`
	}
	if st := a.api(t, "GET", "/v1/stats", nil, &out); st != 200 || out.Node != "a" || !slices.Equal(out.Nodes, []string{"a", "b"}) {
		t.Errorf("/v1/stats: %d %+v, want node a and nodes [a b]", st, out)
	}
}

// WSBRIDGE_BROKER names a broker this build has; WSBRIDGE_BROKER_TIMEOUT is a positive duration.
func TestBrokerConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		env     []string
		wantErr string // "" when accepted
	}{
		{"defaults", nil, ""},
		{"memory", []string{"WSBRIDGE_BROKER=memory", "WSBRIDGE_BROKER_TIMEOUT=250ms"}, ""},
		{"redis without its URL", []string{"WSBRIDGE_BROKER=redis"}, "REDIS_URL: must be set with BROKER=redis"},
		{"unknown broker", []string{"WSBRIDGE_BROKER=kafka"}, `BROKER: "kafka": use memory, redis or nats`},
		{"zero timeout", []string{"WSBRIDGE_BROKER_TIMEOUT=0s"}, "BROKER_TIMEOUT: must be a positive duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := LoadConfig(append([]string{"WSBRIDGE_WEBHOOK_URL=http://127.0.0.1:9/hook"}, tc.env...))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Broker != "memory" || cfg.BrokerTimeout <= 0 {
					t.Errorf("Broker %q, BrokerTimeout %s", cfg.Broker, cfg.BrokerTimeout)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("LoadConfig: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
