package main

// Multi-process cluster tests: three real wsbridge binaries, real PHP (php -S on
// testdata/cluster/hook.php, which logs every webhook) and a real engine, each node reaching
// the engine through a TCP proxy of its own so that a test can cut one node off (a partition).
// Every test runs once per engine in clusterEngines; the NATS broker adds its own there.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// clusterEngine starts a fresh engine for one test.
type clusterEngine struct {
	name  string
	start func(t *testing.T) *engine
}

// engine is one running engine: where it listens, the WSBRIDGE_* variables of a node that
// reaches it at addr (a proxy in front of it), and how to kill it and start it again (empty,
// as a restart without persistence leaves it).
type engine struct {
	addr          string
	env           func(addr string) []string
	stop, restart func(t *testing.T)
	// appPublish publishes payload as PHP does (Redis: PUBLISH t:publish).
	appPublish func(t *testing.T, payload string)
}

var clusterEngines = []clusterEngine{
	{"redis", func(t *testing.T) *engine {
		r := testkit.StartRedis(t)
		return &engine{addr: r.Addr,
			env: func(addr string) []string {
				return []string{"WSBRIDGE_BROKER=redis", "WSBRIDGE_REDIS_URL=redis://" + addr + "/0"}
			},
			stop:       func(t *testing.T) { r.Stop(t) },
			restart:    func(t *testing.T) { r.Start(t) },
			appPublish: func(t *testing.T, payload string) { r.Do(t, "PUBLISH", "t:publish", payload) }}
	}},
	{"nats", func(t *testing.T) *engine {
		srv := testkit.StartNATS(t)
		return &engine{addr: srv.Addr,
			env: func(addr string) []string {
				return []string{"WSBRIDGE_BROKER=nats", "WSBRIDGE_NATS_URL=nats://" + addr}
			},
			stop:       func(t *testing.T) { srv.Stop(t) },
			restart:    func(t *testing.T) { srv.Clear(t); srv.Start(t) },
			appPublish: func(t *testing.T, payload string) { natsPublish(t, srv.URL(), "t.publish", payload) }}
	}},
}

// nodeTimeout is the cluster tests' WSBRIDGE_NODE_TIMEOUT: short, so that a dead node is
// found quickly, and long enough for a loaded machine to keep its beats.
const nodeTimeout = 2 * time.Second

// forEachEngine runs fn as a subtest per engine.
func forEachEngine(t *testing.T, fn func(t *testing.T, c *cluster)) {
	for _, e := range clusterEngines {
		t.Run(e.name, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "webhooks.jsonl")
			if err := os.WriteFile(log, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			fn(t, &cluster{t: t, engine: e.start(t), php: &phpLog{log: log}, client: &http.Client{Timeout: 5 * time.Second}})
		})
	}
}

// cluster is the nodes of one test, their PHP and their engine.
type cluster struct {
	t      *testing.T
	engine *engine
	php    *phpLog
	client *http.Client
	nodes  []*node
	// env is added to every node's environment (pushercluster_test.go: the Pusher mode).
	env []string
}

// node is one wsbridge process of a cluster.
type node struct {
	id               string
	public, internal string
	proxy            *testkit.TCPProxy
	env              []string
	proc             *proc
}

// start adds a node named id (WSBRIDGE_NODE_ID) and waits until it is ready.
func (c *cluster) start(id string) *node {
	c.t.Helper()
	// The proxy first: it holds its port, which FreeAddr's may not then be.
	proxy := testkit.StartTCPProxy(c.t, c.engine.addr)
	n := &node{id: id, public: testkit.ListenAddr(c.t), internal: testkit.ListenAddr(c.t), proxy: proxy}
	n.env = append([]string{
		"WSBRIDGE_LISTEN=" + n.public,
		"WSBRIDGE_INTERNAL_LISTEN=" + n.internal,
		"WSBRIDGE_WEBHOOK_URL=" + startPHP(c.t, c.php.log),
		"WSBRIDGE_NODE_ID=" + id,
		"WSBRIDGE_NODE_TIMEOUT=" + nodeTimeout.String(),
		"WSBRIDGE_BROKER_TIMEOUT=500ms",
		"WSBRIDGE_SHUTDOWN_TIMEOUT=10s",
		"WSBRIDGE_CLUSTER_PREFIX=t",
	}, c.engine.env(n.proxy.Addr)...)
	n.env = append(n.env, c.env...)
	c.nodes = append(c.nodes, n)
	c.restart(n)
	return n
}

// restart starts n's process (again, after it was killed) and waits until it is ready.
func (c *cluster) restart(n *node) {
	c.t.Helper()
	n.proc = startProc(c.t, n.env...)
	n.proc.waitReady(c.t, c.client, "http://"+n.internal+"/readyz")
}

func (c *cluster) startN(count int) []*node {
	c.t.Helper()
	for i := range count {
		c.start("n" + strconv.Itoa(i+1))
	}
	return c.nodes
}

// api sends a push API request to n and decodes the answer into out (nil: ignored).
func (c *cluster) api(n *node, method, path, body string, out any) int {
	c.t.Helper()
	req, err := http.NewRequest(method, "http://"+n.internal+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s on %s: %v", method, path, n.id, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s on %s: %d %q is not JSON: %v", method, path, n.id, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// publish sends one publication (or batch) through n's push API and wants 200.
func (c *cluster) publish(n *node, body string) {
	c.t.Helper()
	var res map[string]any
	if code := c.api(n, "POST", "/v1/publish", body, &res); code != http.StatusOK {
		c.t.Fatalf("publish %s on %s: %d %v", body, n.id, code, res)
	}
}

// client is one WebSocket client and everything it received.
type client struct {
	id     string // its connection id, from the welcome frame
	node   *node
	conn   *websocket.Conn
	msgs   chan string
	closed chan error // the error its read ended with
}

// dial connects a client to n as user (may be empty) in channels.
func (c *cluster) dial(n *node, user string, channels ...string) *client {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+n.public+"/ws?user="+user+"&join="+strings.Join(channels, ","), nil)
	if err != nil {
		c.t.Fatalf("dial %s: %v", n.id, err)
	}
	c.t.Cleanup(func() { conn.CloseNow() })
	_, msg, err := conn.Read(ctx)
	id, ok := strings.CutPrefix(string(msg), "welcome ")
	if err != nil || !ok {
		c.t.Fatalf("first message from %s: %q, %v; want welcome", n.id, msg, err)
	}
	cl := &client{id: id, node: n, conn: conn, msgs: make(chan string, 1000), closed: make(chan error, 1)}
	go func() {
		for {
			_, m, err := conn.Read(context.Background())
			if err != nil {
				cl.closed <- err
				return
			}
			cl.msgs <- string(m)
		}
	}()
	return cl
}

// until returns what cl receives up to and without marker, failing after waitLimit.
func (cl *client) until(t *testing.T, marker string) []string {
	t.Helper()
	var got []string
	deadline := time.After(waitLimit)
	for {
		select {
		case m := <-cl.msgs:
			if m == marker {
				return got
			}
			got = append(got, m)
		case err := <-cl.closed:
			t.Fatalf("client %s closed (%v) before %q; got %v", cl.id, err, marker, got)
		case <-deadline:
			t.Fatalf("client %s: no %q within %s; got %v", cl.id, marker, waitLimit, got)
		}
	}
}

// waitClosed waits for cl's connection to end and returns its close status.
func (cl *client) waitClosed(t *testing.T) websocket.StatusCode {
	t.Helper()
	select {
	case err := <-cl.closed:
		return websocket.CloseStatus(err)
	case <-time.After(waitLimit):
		t.Fatalf("client %s still open after %s", cl.id, waitLimit)
		return 0
	}
}

// phpLog is the file every PHP server of a cluster logs webhooks to.
type phpLog struct {
	log string
}

// webhook is the part of a logged webhook body the tests look at.
type webhook struct {
	Type         string          `json:"type"`
	EventID      string          `json:"event_id"`
	ConnectionID string          `json:"connection_id"`
	UserID       string          `json:"user_id"`
	Channels     []string        `json:"channels"`
	Meta         json.RawMessage `json:"meta"`
	Initiator    string          `json:"initiator"`
	Code         int             `json:"code"`
}

// startPHP serves testdata/cluster with php -S, logging to log, and returns its webhook URL.
// Each node gets a server of its own: php -S answers one request at a time, and its
// PHP_CLI_SERVER_WORKERS fails to listen on this machine.
func startPHP(t *testing.T, log string) string {
	t.Helper()
	bin := testkit.RequireTool(t, "php-cli", "php")
	dir, err := filepath.Abs("testdata/cluster")
	if err != nil {
		t.Fatal(err)
	}
	addr := testkit.ListenAddr(t)
	cmd := exec.Command(bin, "-S", addr, "-t", dir)
	cmd.Env = append(os.Environ(), "WSBRIDGE_TEST_LOG="+log)
	out := &testkit.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(waitLimit):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() && os.Getenv("WSBRIDGE_TEST_PHP_LOG") != "" {
			t.Logf("php -S output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("php -S at %s not listening within 10s: %v\n%s", addr, err, out.String())
		}
		select {
		case <-exited:
			t.Fatalf("php -S exited:\n%s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return "http://" + addr + "/hook.php"
}

// hooks returns the webhooks of type typ PHP logged so far.
func (p *phpLog) hooks(t *testing.T, typ string) []webhook {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	var out []webhook
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var h webhook
		if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
			t.Fatalf("PHP logged %q: %v", sc.Bytes(), err)
		}
		if h.Type == typ {
			out = append(out, h)
		}
	}
	return out
}

// closesOf counts the close webhooks PHP received per connection of ids, and how many of
// them had initiator by.
func (p *phpLog) closesOf(t *testing.T, ids []string) (perConn map[string][]webhook) {
	t.Helper()
	perConn = map[string][]webhook{}
	for _, h := range p.hooks(t, "close") {
		if slices.Contains(ids, h.ConnectionID) {
			perConn[h.ConnectionID] = append(perConn[h.ConnectionID], h)
		}
	}
	return perConn
}

// eventually polls cond every 50ms until it holds, failing after waitLimit with what last
// said: for state that other processes reach on their own (a record written, a node claimed).
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, waitLimit, last)
		}
		<-time.After(50 * time.Millisecond)
	}
}

func ids(cls []*client) []string {
	out := make([]string, len(cls))
	for i, cl := range cls {
		out[i] = cl.id
	}
	sort.Strings(out)
	return out
}

// TestClusterRouting: every target kind reaches exactly its connections across three nodes,
// whichever node the push API call or the reply came in on.
func TestClusterRouting(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, c *cluster) {
		n := c.startN(3)
		alice := []*client{c.dial(n[0], "alice", "room"), c.dial(n[1], "alice"), c.dial(n[2], "alice", "room")}
		bob := c.dial(n[1], "bob", "room")
		carol := c.dial(n[2], "carol")
		everyone := append(slices.Clone(alice), bob, carol)
		// Every node has its subscription in place once a push from each reaches everyone.
		for i, from := range n {
			marker := "ready-" + strconv.Itoa(i)
			eventually(t, "a push from "+from.id+" reaches every node", func() (bool, string) {
				c.publish(from, `{"to":{"all":true},"data":"`+marker+`"}`)
				for _, cl := range everyone {
					select {
					case m := <-cl.msgs:
						if m != marker {
							return false, "got " + m
						}
					case <-time.After(200 * time.Millisecond):
						return false, cl.id + " got nothing"
					}
				}
				return true, ""
			})
			for _, cl := range everyone { // a retry may have left a second marker
			drain:
				for {
					select {
					case <-cl.msgs:
					default:
						break drain
					}
				}
			}
		}

		for _, tc := range []struct {
			name string
			via  *node
			body string
			want []*client
		}{
			{"user on three nodes", n[0], `{"to":{"users":["alice"]},"data":"M"}`, alice},
			{"channel on two nodes", n[1], `{"to":{"channels":["room"]},"data":"M"}`, []*client{alice[0], bob, alice[2]}},
			{"connection on another node", n[0], `{"to":{"connections":["` + carol.id + `"]},"data":"M"}`, []*client{carol}},
			{"all", n[2], `{"to":{"all":true},"data":"M"}`, everyone},
			{"except a connection on another node", n[0], `{"to":{"users":["alice"]},"except":"` + alice[2].id + `","data":"M"}`, alice[:2]},
			{"users and channels at once, each once", n[1], `{"to":{"users":["alice","carol"],"channels":["room"]},"data":"M"}`, everyone},
			{"batch", n[2], `[{"to":{"users":["bob"]},"data":"M"},{"to":{"users":["carol"]},"data":"M"}]`, []*client{bob, carol}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c.publish(tc.via, tc.body)
				c.publish(tc.via, `{"to":{"all":true},"data":"end"}`)
				for _, cl := range everyone {
					got := cl.until(t, "end")
					want := 0
					if slices.Contains(tc.want, cl) {
						want = 1
					}
					if len(got) != want {
						t.Errorf("client %s on %s received %v; want the push %d time(s)", cl.id, cl.node.id, got, want)
					}
				}
			})
		}

		t.Run("a reply's publish", func(t *testing.T) {
			// bob's message reaches PHP through n2; PHP's reply publishes to alice.
			if err := bob.conn.Write(context.Background(), websocket.MessageText, []byte(`publish {"to":{"users":["alice"]},"data":"from-reply"}`)); err != nil {
				t.Fatal(err)
			}
			for _, cl := range alice {
				if got := cl.until(t, "from-reply"); len(got) != 0 {
					t.Errorf("client %s received %v before the reply's publication", cl.id, got)
				}
			}
		})

		t.Run("join and leave through another node", func(t *testing.T) {
			var res map[string]int
			if code := c.api(n[0], "POST", "/v1/channels/news/join", `{"users":["carol"]}`, &res); code != http.StatusOK {
				t.Fatalf("join: %d %v", code, res)
			}
			eventually(t, "carol in news on n3", func() (bool, string) {
				var ch struct{ Connections []string }
				c.api(n[1], "GET", "/v1/channels/news", "", &ch)
				return slices.Equal(ch.Connections, []string{carol.id}), fmt.Sprint(ch.Connections)
			})
			c.publish(n[1], `{"to":{"channels":["news"]},"data":"news"}`)
			if got := carol.until(t, "news"); len(got) != 0 {
				t.Errorf("carol got %v before news", got)
			}
			if code := c.api(n[0], "POST", "/v1/channels/news/leave", `{"users":["carol"]}`, &res); code != http.StatusOK {
				t.Fatalf("leave: %d %v", code, res)
			}
			eventually(t, "news empty", func() (bool, string) {
				var ch struct{ Count int }
				c.api(n[2], "GET", "/v1/channels/news", "", &ch)
				return ch.Count == 0, strconv.Itoa(ch.Count)
			})
		})

		t.Run("close a user on every node", func(t *testing.T) {
			var res map[string]int
			if code := c.api(n[1], "POST", "/v1/users/alice/close", `{"code":4001,"reason":"bye"}`, &res); code != http.StatusOK {
				t.Fatalf("close: %d %v", code, res)
			}
			for _, cl := range alice {
				if st := cl.waitClosed(t); st != 4001 {
					t.Errorf("alice's connection on %s closed with %d; want 4001", cl.node.id, st)
				}
			}
			eventually(t, "a close webhook per alice connection", func() (bool, string) {
				per := c.php.closesOf(t, ids(alice))
				return len(per) == len(alice), fmt.Sprint(per)
			})
			for id, hs := range c.php.closesOf(t, ids(alice)) {
				if len(hs) != 1 || hs[0].Initiator != "api" || hs[0].Code != 4001 {
					t.Errorf("close webhooks of %s: %+v; want one, initiator api, code 4001", id, hs)
				}
			}
		})
	})
}

// TestClusterQueries: every node answers the queries for the whole cluster.
func TestClusterQueries(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, c *cluster) {
		n := c.startN(3)
		a1, a2 := c.dial(n[0], "alice", "room"), c.dial(n[1], "alice", "room")
		b := c.dial(n[2], "bob", "room")
		anon := c.dial(n[2], "")
		for _, via := range n {
			eventually(t, via.id+": alice's connections", func() (bool, string) {
				var res struct {
					Connections []struct{ ID, Node string }
					Count       int
				}
				c.api(via, "GET", "/v1/connections?user=alice", "", &res)
				got := fmt.Sprint(res.Connections)
				want := fmt.Sprint([]struct{ ID, Node string }{{a1.id, "n1"}, {a2.id, "n2"}})
				if a2.id < a1.id {
					want = fmt.Sprint([]struct{ ID, Node string }{{a2.id, "n2"}, {a1.id, "n1"}})
				}
				return got == want && res.Count == 2, got
			})
			eventually(t, via.id+": room", func() (bool, string) {
				var res struct {
					Connections []string
					Users       []string
					Count       int
				}
				c.api(via, "GET", "/v1/channels/room", "", &res)
				return res.Count == 3 && slices.Equal(res.Connections, ids([]*client{a1, a2, b})) && slices.Equal(res.Users, []string{"alice", "bob"}), fmt.Sprint(res)
			})
			eventually(t, via.id+": stats", func() (bool, string) {
				var res struct {
					Connections, Users, Channels int
					Local                        struct{ Connections int }
				}
				c.api(via, "GET", "/v1/stats", "", &res)
				local := map[string]int{"n1": 1, "n2": 1, "n3": 2}[via.id]
				return res.Connections == 4 && res.Users == 2 && res.Channels == 1 && res.Local.Connections == local, fmt.Sprint(res)
			})
		}
		var one struct {
			ID, Node string
			UserID   string `json:"user_id"`
		}
		if code := c.api(n[0], "GET", "/v1/connections/"+b.id, "", &one); code != http.StatusOK || one.ID != b.id || one.Node != "n3" || one.UserID != "bob" {
			t.Errorf("GET /v1/connections/%s on n1 = %d %+v; want bob's on n3", b.id, code, one)
		}
		if code := c.api(n[0], "GET", "/v1/connections/"+anon.id+"x", "", nil); code != http.StatusNotFound {
			t.Errorf("GET of an unknown connection = %d; want 404", code)
		}
	})
}

// lostCloses waits until PHP has a node_lost close for each of cls, then checks that each has
// exactly one, with the state the connection had, and reports the counts.
func (c *cluster) lostCloses(t *testing.T, cls []*client, user string, channels []string) {
	t.Helper()
	want := ids(cls)
	eventually(t, "a node_lost close per orphaned connection", func() (bool, string) {
		per := c.php.closesOf(t, want)
		return len(per) == len(want), fmt.Sprintf("%d of %d", len(per), len(want))
	})
	delivered, duplicated := 0, 0
	for _, id := range want {
		hs := c.php.closesOf(t, want)[id]
		delivered += min(len(hs), 1)
		duplicated += max(len(hs)-1, 0)
		for _, h := range hs {
			if h.Initiator != "node_lost" || h.Code != 1006 || h.UserID != user || !slices.Equal(h.Channels, channels) {
				t.Errorf("close of %s: %+v; want initiator node_lost, code 1006, user %q, channels %v", id, h, user, channels)
			}
		}
	}
	t.Logf("node_lost closes: expected %d, delivered %d, duplicated %d", len(want), delivered, duplicated)
	if delivered != len(want) || duplicated != 0 {
		t.Errorf("node_lost closes: expected %d, delivered %d, duplicated %d", len(want), delivered, duplicated)
	}
}

// TestClusterNodeKilled: kill -9 of a node; a survivor sends exactly one node_lost close per
// connection it held, and the queries stop listing them.
func TestClusterNodeKilled(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, c *cluster) {
		n := c.startN(3)
		const orphans = 20
		var lost []*client
		for range orphans {
			lost = append(lost, c.dial(n[1], "dora", "room", "z"))
		}
		stay := c.dial(n[0], "dora", "room")
		eventually(t, "every connection recorded", func() (bool, string) {
			var res struct{ Count int }
			c.api(n[2], "GET", "/v1/connections?user=dora", "", &res)
			return res.Count == orphans+1, strconv.Itoa(res.Count)
		})
		if err := n[1].proc.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		c.lostCloses(t, lost, "dora", []string{"room", "z"})
		eventually(t, "the dead node's connections gone from the queries", func() (bool, string) {
			var res struct{ Count int }
			c.api(n[0], "GET", "/v1/connections?user=dora", "", &res)
			return res.Count == 1, strconv.Itoa(res.Count)
		})
		if per := c.php.closesOf(t, []string{stay.id}); len(per) != 0 {
			t.Errorf("the surviving connection got a close webhook: %v", per)
		}
	})
}

// TestClusterPartition: a node cut off from the engine keeps its sockets while cut, answers
// 503 on /readyz and 502 on pushes; the others send node_lost closes for its connections; when
// the path heals it closes those sockets and sends no second close.
func TestClusterPartition(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, c *cluster) {
		n := c.startN(3)
		var cut []*client
		for range 5 {
			cut = append(cut, c.dial(n[2], "erin", "room"))
		}
		eventually(t, "recorded", func() (bool, string) {
			var res struct{ Count int }
			c.api(n[0], "GET", "/v1/connections?user=erin", "", &res)
			return res.Count == len(cut), strconv.Itoa(res.Count)
		})
		n[2].proxy.Cut()
		eventually(t, "the cut node not ready", func() (bool, string) {
			var res map[string]string
			code := c.api(n[2], "GET", "/readyz", "", &res)
			return code == http.StatusServiceUnavailable && res["status"] == "broker_unreachable", fmt.Sprint(code, res)
		})
		var res map[string]string
		if code := c.api(n[2], "POST", "/v1/publish", `{"to":{"all":true},"data":"x"}`, &res); code != http.StatusBadGateway || res["error"] != "broker_error" {
			t.Errorf("push on the cut node = %d %v; want 502 broker_error", code, res)
		}
		if code := c.api(n[2], "GET", "/v1/connections", "", &res); code != http.StatusServiceUnavailable {
			t.Errorf("query on the cut node = %d %v; want 503", code, res)
		}
		c.lostCloses(t, cut, "erin", []string{"room"})
		for _, cl := range cut {
			select {
			case err := <-cl.closed:
				t.Fatalf("client %s closed while its node was only cut off: %v", cl.id, err)
			default:
			}
		}
		n[2].proxy.Heal()
		for _, cl := range cut {
			if st := cl.waitClosed(t); st != websocket.StatusGoingAway {
				t.Errorf("client %s on the reaped node closed with %d; want 1001", cl.id, st)
			}
		}
		n[2].proc.waitReady(t, c.client, "http://"+n[2].internal+"/readyz")
		// A connection opened now on the healed node is an ordinary one again: when it
		// closes, its close is its node's, after the reaped ones would have come.
		late := c.dial(n[2], "erin")
		late.conn.Close(websocket.StatusNormalClosure, "")
		eventually(t, "the late connection's close", func() (bool, string) {
			return len(c.php.closesOf(t, []string{late.id})) == 1, ""
		})
		for id, hs := range c.php.closesOf(t, ids(cut)) {
			if len(hs) != 1 {
				t.Errorf("connection %s got %d close webhooks after the heal; want 1 (the survivor's)", id, len(hs))
			}
		}
	})
}

// TestClusterEngineRestart: the engine is killed and comes back empty; sockets stay up, the
// nodes are not ready meanwhile, then re-upload their state without sending any webhook.
func TestClusterEngineRestart(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, c *cluster) {
		n := c.startN(2)
		cls := []*client{c.dial(n[0], "fred", "room"), c.dial(n[1], "fred")}
		eventually(t, "recorded", func() (bool, string) {
			var res struct{ Count int }
			c.api(n[1], "GET", "/v1/connections?user=fred", "", &res)
			return res.Count == 2, strconv.Itoa(res.Count)
		})
		hooksBefore := len(c.php.hooks(t, "close")) + len(c.php.hooks(t, "open"))
		c.engine.stop(t)
		for _, nd := range n {
			eventually(t, nd.id+" not ready", func() (bool, string) {
				return c.api(nd, "GET", "/readyz", "", nil) == http.StatusServiceUnavailable, ""
			})
		}
		c.engine.restart(t)
		for _, nd := range n {
			nd.proc.waitReady(t, c.client, "http://"+nd.internal+"/readyz")
		}
		eventually(t, "state uploaded again", func() (bool, string) {
			var res struct{ Count int }
			c.api(n[0], "GET", "/v1/connections?user=fred", "", &res)
			return res.Count == 2, strconv.Itoa(res.Count)
		})
		eventually(t, "pushes flow again", func() (bool, string) {
			c.publish(n[1], `{"to":{"users":["fred"]},"data":"back"}`)
			select {
			case m := <-cls[0].msgs:
				return m == "back", m
			case <-time.After(200 * time.Millisecond):
				return false, "nothing"
			}
		})
		for _, cl := range cls {
			select {
			case err := <-cl.closed:
				t.Errorf("client %s closed during the engine restart: %v", cl.id, err)
			default:
			}
		}
		if after := len(c.php.hooks(t, "close")) + len(c.php.hooks(t, "open")); after != hooksBefore {
			t.Errorf("PHP got %d open/close webhooks during the engine restart; want none", after-hooksBefore)
		}
	})
}

// TestClusterSIGTERM: a node stopped with SIGTERM closes its connections with initiator
// shutdown and leaves nothing for a survivor to reap.
func TestClusterSIGTERM(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, c *cluster) {
		n := c.startN(2)
		var cls []*client
		for range 5 {
			cls = append(cls, c.dial(n[1], "gus", "room"))
		}
		eventually(t, "recorded", func() (bool, string) {
			var res struct{ Count int }
			c.api(n[0], "GET", "/v1/connections?user=gus", "", &res)
			return res.Count == len(cls), strconv.Itoa(res.Count)
		})
		n[1].proc.signal(t, syscall.SIGTERM)
		if code := n[1].proc.exitCode(t); code != 0 {
			t.Fatalf("exit status %d after SIGTERM", code)
		}
		// The node left: nothing of it is left in the cluster state for n1 to claim.
		var res struct{ Count int }
		if c.api(n[0], "GET", "/v1/connections?user=gus", "", &res); res.Count != 0 {
			t.Errorf("%d of the stopped node's connections still listed", res.Count)
		}
		// n1 claims silent nodes on every beat: a kill -9 of a third node shows when
		// it has looked again, after the stopped one would have been silent too.
		n3 := c.start("n3")
		witness := c.dial(n3, "witness")
		eventually(t, "the witness recorded", func() (bool, string) {
			var res struct{ Count int }
			c.api(n[0], "GET", "/v1/connections?user=witness", "", &res)
			return res.Count == 1, strconv.Itoa(res.Count)
		})
		n3.proc.cmd.Process.Kill()
		c.lostCloses(t, []*client{witness}, "witness", []string{})
		for id, hs := range c.php.closesOf(t, ids(cls)) {
			if len(hs) != 1 || hs[0].Initiator != "shutdown" {
				t.Errorf("close webhooks of %s: %+v; want one, initiator shutdown", id, hs)
			}
		}
	})
}

// TestClusterRestartAfterKill: a lone node with its state in the engine, killed with -9 and
// started again under its id, sends the node_lost closes its previous run owed, once.
func TestClusterRestartAfterKill(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, c *cluster) {
		nd := c.start("solo")
		var cls []*client
		for range 3 {
			cls = append(cls, c.dial(nd, "hal", "room"))
		}
		eventually(t, "recorded", func() (bool, string) {
			var res struct{ Count int }
			c.api(nd, "GET", "/v1/connections?user=hal", "", &res)
			return res.Count == len(cls), strconv.Itoa(res.Count)
		})
		nd.proc.cmd.Process.Kill()
		<-nd.proc.exited
		if per := c.php.closesOf(t, ids(cls)); len(per) != 0 {
			t.Fatalf("closes sent by a killed process: %v", per)
		}
		c.restart(nd)
		c.lostCloses(t, cls, "hal", []string{"room"})
	})
}

// TestClusterAppPublish: PHP publishes through the engine, not HTTP; every node applies it to
// its connections, and one the push API would refuse is refused whole and counted on each.
func TestClusterAppPublish(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, c *cluster) {
		n := c.startN(2)
		cls := []*client{c.dial(n[0], "ivy", "room"), c.dial(n[1], "ivy")}
		// A subscription may take a moment: publish until both have one.
		eventually(t, "an application publication reaches both nodes", func() (bool, string) {
			c.engine.appPublish(t, `{"to":{"users":["ivy"]},"data":"probe"}`)
			for _, cl := range cls {
				select {
				case <-cl.msgs:
				case <-time.After(200 * time.Millisecond):
					return false, cl.id + " got nothing"
				}
			}
			return true, ""
		})
		c.engine.appPublish(t, `[{"to":{"users":["ivy"]},"data":"half"},{"to":{"channels":[""]},"data":"x"}]`)
		c.engine.appPublish(t, `[{"to":{"users":["ivy"]},"data":"a"},{"to":{"channels":["room"]},"data":"b"}]`)
		c.engine.appPublish(t, `{"to":{"all":true},"data":"end"}`)
		for i, cl := range cls {
			got := slices.DeleteFunc(cl.until(t, "end"), func(m string) bool { return m == "probe" })
			want := []string{"a", "b"}
			if i == 1 {
				want = []string{"a"} // not in room
			}
			if !slices.Equal(got, want) {
				t.Errorf("client on %s received %v; want %v (a refused batch delivers nothing)", cl.node.id, got, want)
			}
		}
		for _, nd := range n {
			resp, err := c.client.Get("http://" + nd.internal + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), "wsbridge_app_publishes_refused_total 1\n") {
				t.Errorf("%s: /metrics does not count one refused application publication", nd.id)
			}
		}
	})
}
