package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// framedMsg is one wsbridge.v1+json message as a client reads it (docs/PROTOCOL.md).
type framedMsg struct {
	Type      string `json:"type"`
	Channel   string `json:"channel"`
	Epoch     string `json:"epoch"`
	Offset    uint64 `json:"offset"`
	Data      string `json:"data"`
	Recovered bool   `json:"recovered"`
	Positions map[string]struct {
		Epoch  string `json:"epoch"`
		Offset uint64 `json:"offset"`
	} `json:"positions"`
	Lost []string `json:"lost"`
}

// dialFramed connects a wsbridge.v1+json client to n in channel news, resuming token if not
// empty, and returns its messages as they come.
func (c *cluster) dialFramed(n *node, token string) (*websocket.Conn, <-chan framedMsg) {
	c.t.Helper()
	q := url.Values{"join": {"news"}}
	if token != "" {
		q.Set("lastEventId", token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+n.public+"/ws?"+q.Encode(), &websocket.DialOptions{Subprotocols: []string{"wsbridge.v1+json"}})
	if err != nil {
		c.t.Fatalf("dial %s: %v", n.id, err)
	}
	c.t.Cleanup(func() { conn.CloseNow() })
	if conn.Subprotocol() != "wsbridge.v1+json" {
		c.t.Fatalf("subprotocol %q, want wsbridge.v1+json", conn.Subprotocol())
	}
	msgs := make(chan framedMsg, 1000)
	go func() {
		defer close(msgs)
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				return
			}
			var m framedMsg
			if json.Unmarshal(b, &m) != nil {
				m = framedMsg{Type: "undecodable", Data: string(b)}
			}
			msgs <- m
		}
	}()
	return conn, msgs
}

// next returns the client's next message, failing after waitLimit or when it is closed.
func next(t *testing.T, msgs <-chan framedMsg) framedMsg {
	t.Helper()
	select {
	case m, ok := <-msgs:
		if !ok {
			t.Fatal("the connection closed")
		}
		return m
	case <-time.After(waitLimit):
		t.Fatalf("no message within %s", waitLimit)
		return framedMsg{}
	}
}

// TestProcessClusterHistoryResumes: with the Redis broker, one sequence numbers a channel's
// publications for the whole cluster. A wsbridge.v1+json client on node a follows publications
// made through node b; it is cut, and while it is away and while it comes back publications
// go on through both nodes; it resumes on node b with its last position and gets every
// publication it had not seen exactly once, in offset order, then the live ones.
func TestProcessClusterHistoryResumes(t *testing.T) {
	forEngines(t, func(e clusterEngine) bool { return e.history }, func(t *testing.T, c *cluster) {
		c.env = []string{"WSBRIDGE_HISTORY_SIZE=1000"}
		a, b := c.start("a"), c.start("b")
		conn, msgs := c.dialFramed(a, "")
		sync := next(t, msgs)
		if sync.Type != "sync" || sync.Positions["news"].Epoch == "" {
			t.Fatalf("first message %+v, want a sync with news' position", sync)
		}
		epoch := sync.Positions["news"].Epoch
		if m := next(t, msgs); !strings.HasPrefix(m.Data, "welcome ") {
			t.Fatalf("second message %+v, want the welcome", m)
		}
		pub := func(n *node, i int) {
			c.publish(n, fmt.Sprintf(`{"to":{"channels":["news"]},"data":"p%d"}`, i))
		}
		for i := 1; i <= 3; i++ {
			pub(b, i)
			m := next(t, msgs)
			if m.Type != "publication" || m.Data != fmt.Sprint("p", i) || m.Epoch != epoch || m.Offset != uint64(i) {
				t.Fatalf("publication %d through b: %+v, want p%d at %s:%d", i, m, i, epoch, i)
			}
		}
		conn.CloseNow()

		// Publications through both nodes, alternately, some while the client is away, the
		// rest racing its reconnect.
		const total = 60
		published := make(chan struct{})
		away := make(chan struct{})
		go func() {
			defer close(published)
			for i := 4; i <= total; i++ {
				if i == 20 {
					close(away)
				}
				pub([]*node{a, b}[i%2], i)
			}
		}()
		<-away
		tok, _ := json.Marshal(map[string]any{"news": map[string]any{"epoch": epoch, "offset": 3}})
		_, msgs = c.dialFramed(b, base64.RawURLEncoding.EncodeToString(tok))
		if sync := next(t, msgs); sync.Type != "sync" || !sync.Recovered || len(sync.Lost) != 0 {
			t.Fatalf("sync on resuming %+v, want recovered with nothing lost", sync)
		}
		<-published
		pub(a, total+1)
		want := 4
		for want <= total+1 {
			m := next(t, msgs)
			if m.Type == "message" && strings.HasPrefix(m.Data, "welcome ") {
				continue
			}
			if m.Type != "publication" || m.Data != fmt.Sprint("p", want) || m.Epoch != epoch || m.Offset != uint64(want) {
				t.Fatalf("after resuming: %+v, want p%d at %s:%d (each once, in order)", m, want, epoch, want)
			}
			want++
		}
		select {
		case m := <-msgs:
			t.Fatalf("after the last publication: %+v, want nothing more", m)
		default:
		}
	})
}
