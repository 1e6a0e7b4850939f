package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// natsNode is one wsbridge process of a NATS cluster and a client connected to it.
type natsNode struct {
	proc     *proc
	internal string
	ws       *websocket.Conn
	id       string // the client's connection id
}

// TestProcessNATSCluster runs two real wsbridge processes on a real nats-server: a push to
// any target made on one node reaches the clients of both exactly once, /v1/stats lists both
// nodes, and /readyz follows the engine away and back (the clients staying connected).
func TestProcessNATSCluster(t *testing.T) {
	t.Parallel()
	srv := testkit.StartNATS(t)
	php := newFakePHP(t)
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitLimit)
	defer cancel()

	nodes := map[string]*natsNode{}
	for _, name := range []string{"a", "b"} {
		public, internal := testkit.FreeAddr(t), testkit.FreeAddr(t)
		p := startProc(t,
			"WSBRIDGE_LISTEN="+public,
			"WSBRIDGE_INTERNAL_LISTEN="+internal,
			"WSBRIDGE_WEBHOOK_URL="+php.URL,
			"WSBRIDGE_NODE_ID="+name,
			"WSBRIDGE_BROKER=nats",
			"WSBRIDGE_NATS_URL="+srv.URL(),
			"WSBRIDGE_CLUSTER_PREFIX=wsbtest",
			"WSBRIDGE_NODE_TIMEOUT=3s",
		)
		p.waitReady(t, client, "http://"+internal+"/readyz")
		c, _, err := websocket.Dial(ctx, "ws://"+public+"/ws", nil)
		if err != nil {
			t.Fatalf("node %s: dial: %v", name, err)
		}
		t.Cleanup(func() { c.CloseNow() })
		if _, msg, err := c.Read(ctx); err != nil || string(msg) != "welcome" {
			t.Fatalf("node %s: first message %q, %v; want welcome", name, msg, err)
		}
		var list struct {
			Connections []struct {
				ID string `json:"id"`
			} `json:"connections"`
		}
		// The list is the cluster's, written a moment after the open; this node's connection
		// is the one its id names.
		var id string
		waitUntil(t, "node "+name+"'s connection listed", func() bool {
			if code := getJSON(t, client, "http://"+internal+"/v1/connections", &list); code != 200 {
				t.Fatalf("node %s: GET /v1/connections = %d", name, code)
			}
			for _, c := range list.Connections {
				if strings.HasPrefix(c.ID, name+".") {
					id = c.ID
				}
			}
			return id != ""
		})
		nodes[name] = &natsNode{proc: p, internal: internal, ws: c, id: id}
	}
	a, b := nodes["a"], nodes["b"]

	post := func(n *natsNode, body string) int {
		t.Helper()
		resp, err := client.Post("http://"+n.internal+"/v1/publish", "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatalf("POST /v1/publish: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// expect checks that exactly the clients in want read msg next, once: a marker to everyone,
	// published after it by the same origin (only one origin's envelopes keep their order), is
	// what each client reads after it, or instead of it.
	expect := func(what, msg string, publish func(body string), want ...*natsNode) {
		t.Helper()
		marker := "marker-" + what
		publish(`{"to":{"all":true},"data":"` + marker + `"}`)
		for name, n := range nodes {
			var got []string
			for len(got) == 0 || got[len(got)-1] != marker {
				_, m, err := n.ws.Read(ctx)
				if err != nil {
					t.Fatalf("%s: client on %s: read: %v (so far %q)", what, name, err, got)
				}
				got = append(got, string(m))
			}
			wanted := []string{marker}
			if slices.Contains(want, n) {
				wanted = []string{msg, marker}
			}
			if !slices.Equal(got, wanted) {
				t.Errorf("%s: client on node %s read %q, want %q", what, name, got, wanted)
			}
		}
	}

	via := func(n *natsNode) func(string) {
		return func(body string) {
			t.Helper()
			if code := post(n, body); code != 200 {
				t.Fatalf("POST /v1/publish %s = %d", body, code)
			}
		}
	}
	// Both nodes' subscriptions are in place once each one's marker reaches the other's client.
	expect("a joined", "", via(a))
	expect("b joined", "", via(b))
	for _, tc := range []struct {
		name string
		on   *natsNode
		body string
		msg  string // what the clients in want read
		want []*natsNode
	}{
		{"user on both nodes", a, `{"to":{"users":["u1"]},"data":"to-u1"}`, "to-u1", []*natsNode{a, b}},
		{"all", b, `{"to":{"all":true},"data":"to-all"}`, "to-all", []*natsNode{a, b}},
		{"connection on the other node", b, `{"to":{"connections":["` + a.id + `"]},"data":"to-a"}`, "to-a", []*natsNode{a}},
		{"except a connection on the other node", a, `{"to":{"users":["u1"]},"except":"` + b.id + `","data":"not-b"}`, "not-b", []*natsNode{a}},
		{"batch", b, `[{"to":{"connections":["` + b.id + `"]},"data":"batch"},{"to":{"connections":["` + a.id + `"]},"data":"batch"}]`, "batch", []*natsNode{a, b}},
	} {
		if code := post(tc.on, tc.body); code != 200 {
			t.Fatalf("%s: POST /v1/publish = %d", tc.name, code)
		}
		expect(tc.name, tc.msg, via(tc.on), tc.want...)
	}

	var stats struct {
		Nodes []string `json:"nodes"`
	}
	if code := getJSON(t, client, "http://"+b.internal+"/v1/stats", &stats); code != 200 || !slices.Equal(stats.Nodes, []string{"a", "b"}) {
		t.Errorf("GET /v1/stats = %d, nodes %v; want [a b]", code, stats.Nodes)
	}

	// The engine goes away: /readyz says so, the clients stay, a push answers 502.
	srv.Stop(t)
	ready := func(n *natsNode) int {
		resp, err := client.Get("http://" + n.internal + "/readyz")
		if err != nil {
			t.Fatalf("GET /readyz: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	waitUntil(t, "readyz 503 with the engine gone", func() bool { return ready(a) == 503 && ready(b) == 503 })
	if code := post(a, `{"to":{"all":true},"data":"while-down"}`); code != http.StatusBadGateway {
		t.Errorf("push with the engine gone = %d, want 502 broker_error", code)
	}
	// Applied on a only (the answer says so); read it there.
	if _, m, err := a.ws.Read(ctx); err != nil || string(m) != "while-down" {
		t.Fatalf("client on a: %q, %v; want while-down, delivered locally", m, err)
	}
	srv.Start(t)
	waitUntil(t, "readyz 200 with the engine back", func() bool { return ready(a) == 200 && ready(b) == 200 })
	expect("a after the engine came back", "", via(a))
	expect("b after the engine came back", "", via(b))

	for name, n := range nodes {
		n.proc.signal(t, syscall.SIGTERM)
		if code := n.proc.exitCode(t); code != 0 {
			t.Errorf("node %s: exit status %d, want 0", name, code)
		}
	}
	if n := len(php.received("close")); n != 2 {
		t.Errorf("PHP received %d close webhooks, want 2 (one per client)", n)
	}
}

// natsPublish publishes payload on subject as PHP would, and waits until the server has it.
func natsPublish(t *testing.T, url, subject, payload string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("nats publish: %v", err)
	}
	defer nc.Close()
	if err := nc.Publish(subject, []byte(payload)); err != nil {
		t.Fatalf("nats publish: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("nats publish: %v", err)
	}
}

// waitUntil polls cond until it holds, for states another process reaches and signals nowhere
// (a reconnect); bounded by waitLimit.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(waitLimit)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: not within %s", what, waitLimit)
		}
	}
}
