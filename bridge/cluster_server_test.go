package bridge

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// appBroker is a memory broker that also takes the application's publications: a fake of the
// engine's <prefix>:publish, for the decoding alone (redisbroker's tests run the real one).
type appBroker struct {
	*MemoryBroker
	fn func([]byte)
}

func (b *appBroker) OnAppPublish(fn func([]byte)) { b.fn = fn }

// TestAppPublishDecodedAsTheAPI: what PHP publishes through the engine is decoded as strictly
// as POST /v1/publish; a bad one is refused whole (a batch with one bad item delivers
// nothing), logged and counted, and the good ones reach the connections in order.
func TestAppPublishDecodedAsTheAPI(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, func(c hookCall) (int, any) {
		if c.Event.Type == EventOpen {
			return 200, map[string]any{"user_id": "u1"}
		}
		return 204, nil
	})
	cfg := testConfig(t, php.URL)
	cfg.MaxBatch = 3
	cfg.MaxPushBody = 200
	br := &appBroker{MemoryBroker: NewMemoryBroker()}
	srv := New(cfg, testLog(t), br)
	b := &testBridge{srv: srv, php: php}
	b.public, b.internal = newServers(t, srv)
	b.wsURL = "ws" + strings.TrimPrefix(b.public.URL, "http") + cfg.WSPaths[0]
	if br.fn == nil {
		t.Fatal("the server did not take the broker's application publications (OnAppPublish)")
	}
	c, _ := b.openConn(t, "")

	bad := []struct{ name, payload string }{
		{"not JSON", `{"to":`},
		{"unknown field", `{"to":{"users":["u1"]},"data":"x","ttl":5}`},
		{"no target", `{"to":{},"data":"x"}`},
		{"both payloads", `{"to":{"users":["u1"]},"data":"x","data_base64":"eA=="}`},
		{"empty", `  `},
		{"empty batch", `[]`},
		{"batch with one bad item", `[{"to":{"users":["u1"]},"data":"half"},{"to":{"users":[""]},"data":"x"}]`},
		{"batch over MAX_BATCH", `[{"to":{"all":true},"data":"1"},{"to":{"all":true},"data":"2"},{"to":{"all":true},"data":"3"},{"to":{"all":true},"data":"4"}]`},
		{"over MAX_PUSH_BODY", `{"to":{"users":["u1"]},"data":"` + strings.Repeat("x", 200) + `"}`},
		{"trailing data", `{"to":{"users":["u1"]},"data":"x"} {}`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			before := counterValue(srv.metrics.appPublishRefused)
			br.fn([]byte(tc.payload))
			if got := counterValue(srv.metrics.appPublishRefused); got != before+1 {
				t.Errorf("refused counter %d → %d; want one more", before, got)
			}
		})
	}
	br.fn([]byte(`{"to":{"users":["u1"]},"data":"one"}`))
	br.fn([]byte(` [{"to":{"all":true},"data":"two"},{"to":{"users":["u1"]},"data_base64":"dGhyZWU="}] `))
	for _, want := range []string{"one", "two", "three"} {
		if got := read(t, c); got != want {
			t.Fatalf("client read %q; want %q (a refused publication must deliver nothing)", got, want)
		}
	}
}

// TestLostCloseEvent: the close webhook of a dead node's connection carries the record's state,
// code 1006 and initiator node_lost, and an event id that depends on the connection alone.
func TestLostCloseEvent(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	rec := ConnRecord{ID: "n1.ABC", Node: "n1", Transport: "ws", UserID: "42", Channels: []string{"a", "b"},
		Meta: json.RawMessage(`{"k":1}`), ConnectedAt: at.Add(-90 * time.Second), MessagesIn: 3, MessagesOut: 4}
	ev := lostCloseEvent(rec, at)
	if ev.Type != EventClose || ev.ConnectionID != "n1.ABC" || ev.UserID != "42" || string(ev.Meta) != `{"k":1}` ||
		strings.Join(ev.Channels, ",") != "a,b" || *ev.Code != 1006 || *ev.Reason != "node lost" ||
		ev.Initiator != InitiatorNodeLost || *ev.DurationMS != 90000 || *ev.MessagesIn != 3 || *ev.MessagesOut != 4 || ev.Transport != "ws" {
		t.Errorf("lost close = %+v", ev)
	}
	if again := lostCloseEvent(rec, at.Add(time.Minute)); again.EventID != ev.EventID || len(ev.EventID) != 26 {
		t.Errorf("event ids %q, %q: want the same 26 characters for the same connection", ev.EventID, again.EventID)
	}
	rec.ID = "n1.ABD"
	if other := lostCloseEvent(rec, at); other.EventID == ev.EventID {
		t.Error("two connections share a node_lost event id")
	}
}

// fakeCluster is a cluster broker in memory, for the server's side alone: Orphans answers what
// the test put there, and Settle records what the server settled.
type fakeCluster struct {
	*MemoryBroker
	mu      sync.Mutex
	recs    map[string]ConnRecord
	orphans []ConnRecord
	settled []string
}

func (f *fakeCluster) PutConn(_ context.Context, r ConnRecord) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs[r.ID] = r
	return nil
}
func (f *fakeCluster) DeleteConn(_ context.Context, _, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.recs, id)
	return nil
}
func (f *fakeCluster) ReplaceNode(context.Context, string, []ConnRecord) error { return nil }
func (f *fakeCluster) Conn(context.Context, string) (ConnRecord, bool, error) {
	return ConnRecord{}, false, nil
}
func (f *fakeCluster) Conns(context.Context, ConnQuery) (ConnPage, error) { return ConnPage{}, nil }
func (f *fakeCluster) Channel(context.Context, string, int) (ChannelPage, error) {
	return ChannelPage{}, nil
}
func (f *fakeCluster) Totals(context.Context) (ClusterTotals, error)           { return ClusterTotals{}, nil }
func (f *fakeCluster) Beat(context.Context, string) (Heartbeat, error)         { return Heartbeat{}, nil }
func (f *fakeCluster) Silent(context.Context, time.Duration) ([]string, error) { return nil, nil }
func (f *fakeCluster) Claim(context.Context, string, string, time.Duration) (int, error) {
	return 0, nil
}
func (f *fakeCluster) Leave(context.Context, string) error { return nil }
func (f *fakeCluster) Orphans(context.Context, string) ([]ConnRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.orphans), nil
}
func (f *fakeCluster) Settle(_ context.Context, _, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.settled = append(f.settled, id)
	f.orphans = slices.DeleteFunc(f.orphans, func(r ConnRecord) bool { return r.ID == id })
	return nil
}

// TestOwedClosesSkipLiveConnections: an orphan that is a live connection of this run (recorded
// before the claim of the node's previous run went through) is settled without a close
// webhook and recorded again; a real orphan gets its node_lost close, once, and is settled.
func TestOwedClosesSkipLiveConnections(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, nil)
	cfg := testConfig(t, php.URL)
	cfg.NodeTimeout = 30 * time.Millisecond
	br := &fakeCluster{MemoryBroker: NewMemoryBroker(), recs: map[string]ConnRecord{}}
	srv := New(cfg, testLog(t), br)
	public, _, cancel, done := serveLoopback(t, srv)
	t.Cleanup(func() {
		cancel()
		<-done
	})
	ctx, stop := context.WithTimeout(context.Background(), waitLimit)
	defer stop()
	c, _, err := websocket.Dial(ctx, "ws://"+public.Addr().String()+cfg.WSPaths[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	live := php.next(t, EventOpen).Event.ConnectionID
	dead := ConnRecord{ID: "old.DEADDEADDEADDEAD", Node: srv.Node(), Transport: "ws", UserID: "u9", Channels: []string{"r"}}
	// As a claim does: the live connection's record leaves the state and becomes an orphan.
	deadline := time.Now().Add(waitLimit)
	for {
		br.mu.Lock()
		_, written := br.recs[live]
		if written {
			delete(br.recs, live)
			br.orphans = []ConnRecord{{ID: live, Node: srv.Node()}, dead}
		}
		br.mu.Unlock()
		if written {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the open connection was never recorded")
		}
		<-time.After(10 * time.Millisecond)
	}

	lost := php.next(t, EventClose)
	if lost.Event.ConnectionID != dead.ID || lost.Event.Initiator != InitiatorNodeLost || lost.Event.UserID != "u9" {
		t.Fatalf("close webhook %+v; want the dead connection's node_lost close", lost.Event)
	}
	for {
		br.mu.Lock()
		settled := slices.Clone(br.settled)
		br.mu.Unlock()
		if slices.Contains(settled, live) && slices.Contains(settled, dead.ID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("settled %v; want both the live and the dead connection", settled)
		}
		<-time.After(10 * time.Millisecond)
	}
	br.mu.Lock()
	_, recorded := br.recs[live]
	br.mu.Unlock()
	if !recorded {
		t.Error("the live connection was not recorded again after its orphan was settled")
	}
	select {
	case call := <-php.calls:
		if call.Event.Type == EventClose {
			t.Errorf("a second close webhook: %+v", call.Event)
		}
	default:
	}
}

// slowReplace is a fakeCluster whose ReplaceNode, as a real engine's, drops the node's records
// that are not in the upload, but only once the test lets it: a connection can open (and its
// record be written) between the node's snapshot and the engine applying the upload.
type slowReplace struct {
	*fakeCluster
	started, proceed chan struct{}
}

func (f *slowReplace) ReplaceNode(_ context.Context, node string, recs []ConnRecord) error {
	close(f.started)
	<-f.proceed
	keep := map[string]bool{}
	for _, r := range recs {
		keep[r.ID] = true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, r := range f.recs {
		if r.Node == node && !keep[id] {
			delete(f.recs, id)
		}
	}
	return nil
}

// TestUploadKeepsConnectionsOpenedMeanwhile: a connection that opens while the node re-uploads
// its records is recorded after the upload, not dropped by it.
func TestUploadKeepsConnectionsOpenedMeanwhile(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, nil)
	cfg := testConfig(t, php.URL)
	br := &slowReplace{fakeCluster: &fakeCluster{MemoryBroker: NewMemoryBroker(), recs: map[string]ConnRecord{}},
		started: make(chan struct{}), proceed: make(chan struct{})}
	srv := New(cfg, testLog(t), br)
	public, _, cancel, done := serveLoopback(t, srv)
	t.Cleanup(func() {
		cancel()
		<-done
	})
	ctx, stop := context.WithTimeout(context.Background(), waitLimit)
	defer stop()
	uploaded := make(chan error, 1)
	go func() { uploaded <- srv.cluster.upload(ctx) }()
	<-br.started // the snapshot is taken: the new connection is not in it
	c, _, err := websocket.Dial(ctx, "ws://"+public.Addr().String()+cfg.WSPaths[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	id := php.next(t, EventOpen).Event.ConnectionID
	if err := srv.cluster.flush(ctx); err != nil { // its record is written before the upload lands
		t.Fatal(err)
	}
	close(br.proceed)
	if err := <-uploaded; err != nil {
		t.Fatal(err)
	}
	if err := srv.cluster.flush(ctx); err != nil {
		t.Fatal(err)
	}
	br.mu.Lock()
	_, recorded := br.recs[id]
	br.mu.Unlock()
	if !recorded {
		t.Errorf("connection %s opened during the upload has no record after it", id)
	}
}
