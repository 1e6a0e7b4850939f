package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The Pusher mode on a cluster of real wsbridge binaries (the harness of cluster_test.go, once
// per engine): presence and client events cross nodes, and the Pusher HTTP API's channel
// queries answer for the cluster on every node. The client speaks the protocol's JSON itself
// (pusher-js is driven in examples/php/e2e, on one node).

const (
	pcAppID  = "7"
	pcKey    = "cluster-key"
	pcSecret = "cluster-secret"
)

// pusherClient is a Pusher protocol 7 client, speaking the protocol's JSON as pusher-js does.
type pusherClient struct {
	conn *websocket.Conn
	sid  string
	msgs chan pusherEvent
}

type pusherEvent struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	UserID  string          `json:"user_id"`
}

func dialPusherNode(t *testing.T, n *node) *pusherClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+n.public+"/app/"+pcKey+"?protocol=7&client=js&version=8.4.0", nil)
	if err != nil {
		t.Fatalf("dial %s: %v", n.id, err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	pc := &pusherClient{conn: conn, msgs: make(chan pusherEvent, 100)}
	go func() {
		for {
			_, m, err := conn.Read(context.Background())
			if err != nil {
				close(pc.msgs)
				return
			}
			var e pusherEvent
			if json.Unmarshal(m, &e) == nil && e.Event != "" { // hook.php's "welcome" frame is not one
				pc.msgs <- e
			}
		}
	}()
	e := pc.next(t, "pusher:connection_established")
	var s string
	var d struct {
		SocketID string `json:"socket_id"`
	}
	if json.Unmarshal(e.Data, &s) != nil || json.Unmarshal([]byte(s), &d) != nil || d.SocketID == "" {
		t.Fatalf("connection_established %s", e.Data)
	}
	pc.sid = d.SocketID
	return pc
}

// next returns the next event named name, skipping others, failing after waitLimit.
func (pc *pusherClient) next(t *testing.T, name string) pusherEvent {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case e, ok := <-pc.msgs:
			if !ok {
				t.Fatalf("socket %s closed before %s", pc.sid, name)
			}
			if e.Event == name {
				return e
			}
		case <-deadline:
			t.Fatalf("socket %s: no %s within %s", pc.sid, name, waitLimit)
		}
	}
}

func (pc *pusherClient) send(t *testing.T, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := pc.conn.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
}

// until returns the member events pc receives before the publication "marker".
func (pc *pusherClient) until(t *testing.T, marker string) []string {
	t.Helper()
	var got []string
	deadline := time.After(waitLimit)
	for {
		select {
		case e, ok := <-pc.msgs:
			if !ok {
				t.Fatalf("socket %s closed before %q", pc.sid, marker)
			}
			var data string
			json.Unmarshal(e.Data, &data)
			if e.Event == "wsbridge:message" && data == marker {
				return got
			}
			if strings.HasPrefix(e.Event, "pusher_internal:member_") {
				var d struct {
					UserID string `json:"user_id"`
				}
				json.Unmarshal([]byte(data), &d)
				got = append(got, strings.TrimPrefix(e.Event, "pusher_internal:")+" "+d.UserID)
			}
		case <-deadline:
			t.Fatalf("socket %s: no %q within %s", pc.sid, marker, waitLimit)
		}
	}
}

// joinPresence subscribes as user, authorised as the app's auth endpoint would sign it, and
// returns the roster's user ids.
func (pc *pusherClient) joinPresence(t *testing.T, ch, user string) []string {
	t.Helper()
	cd := `{"user_id":"` + user + `","user_info":{"name":"` + user + `"}}`
	m := hmac.New(sha256.New, []byte(pcSecret))
	m.Write([]byte(pc.sid + ":" + ch + ":" + cd))
	pc.send(t, map[string]any{"event": "pusher:subscribe", "data": map[string]any{
		"channel": ch, "auth": pcKey + ":" + hex.EncodeToString(m.Sum(nil)), "channel_data": cd}})
	e := pc.next(t, "pusher_internal:subscription_succeeded")
	var data string
	var d struct {
		Presence struct{ IDs []string }
	}
	if json.Unmarshal(e.Data, &data) != nil || json.Unmarshal([]byte(data), &d) != nil {
		t.Fatalf("roster %s", e.Data)
	}
	return d.Presence.IDs
}

// pusherGet sends a GET of the Pusher HTTP API to n, signed as the Pusher server SDKs sign it.
func (c *cluster) pusherGet(n *node, path string, query map[string]string) (int, string) {
	c.t.Helper()
	q := map[string]string{"auth_key": pcKey, "auth_timestamp": strconv.FormatInt(time.Now().Unix(), 10), "auth_version": "1.0"}
	for k, v := range query {
		q[k] = v
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+q[k])
	}
	qs := strings.Join(parts, "&")
	m := hmac.New(sha256.New, []byte(pcSecret))
	m.Write([]byte("GET\n" + path + "\n" + qs))
	resp, err := c.client.Get("http://" + n.internal + path + "?" + qs + "&auth_signature=" + hex.EncodeToString(m.Sum(nil)))
	if err != nil {
		c.t.Fatalf("GET %s on %s: %v", path, n.id, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestClusterPusher: a presence channel with users on two nodes has one roster, and one
// member_added per user however many tabs; a client event of one reaches the other node's
// subscriber with its user_id; every node's Pusher API lists both users and counts the three
// subscriptions.
func TestClusterPusher(t *testing.T) {
	t.Parallel()
	forEachEngine(t, func(t *testing.T, c *cluster) {
		c.env = []string{"WSBRIDGE_PUSHER_APP_ID=" + pcAppID, "WSBRIDGE_PUSHER_KEY=" + pcKey, "WSBRIDGE_PUSHER_SECRET=" + pcSecret}
		n := c.startN(2)
		ann, bob := dialPusherNode(t, n[0]), dialPusherNode(t, n[1])
		if r := ann.joinPresence(t, "presence-doc", "ann"); strings.Join(r, ",") != "ann" {
			t.Fatalf("ann's roster %v", r)
		}
		// Bob's roster on n2 lists ann of n1, or ann follows as member_added if n1's word had
		// not reached n2 yet; either way ann is in it once.
		r := bob.joinPresence(t, "presence-doc", "bob")
		c.publish(n[0], `{"to":{"channels":["presence-doc"]},"data":"m1"}`)
		if got := append(r, bob.until(t, "m1")...); strings.Join(got, ",") != "ann,bob" && strings.Join(got, ",") != "bob,member_added ann" {
			t.Errorf("bob's roster and member events %v, want ann and bob once each", got)
		}
		// A second tab of bob, on ann's node: nobody is told; ann heard of bob once.
		bob2 := dialPusherNode(t, n[0])
		if r := bob2.joinPresence(t, "presence-doc", "bob"); strings.Join(r, ",") != "ann,bob" {
			t.Errorf("bob's second roster on n1 %v, want ann,bob", r)
		}
		c.publish(n[1], `{"to":{"channels":["presence-doc"]},"data":"m2"}`)
		if got := ann.until(t, "m2"); strings.Join(got, ",") != "member_added bob" {
			t.Errorf("ann's member events %v, want member_added bob once", got)
		}

		ann.send(t, map[string]any{"event": "client-typing", "channel": "presence-doc", "data": map[string]any{"line": 3}})
		if e := bob.next(t, "client-typing"); e.UserID != "ann" || e.Channel != "presence-doc" || string(e.Data) != `{"line":3}` {
			t.Errorf("bob on n2 got %+v, want ann's client-typing", e)
		}

		path := "/apps/" + pcAppID + "/channels/presence-doc"
		for _, via := range n {
			eventually(t, via.id+": users", func() (bool, string) {
				status, body := c.pusherGet(via, path+"/users", nil)
				return status == 200 && body == `{"users":[{"id":"ann"},{"id":"bob"}]}`, fmt.Sprint(status, " ", body)
			})
			eventually(t, via.id+": channel", func() (bool, string) {
				status, body := c.pusherGet(via, path, map[string]string{"info": "user_count,subscription_count"})
				return status == 200 && body == `{"occupied":true,"subscription_count":3,"user_count":2}`, fmt.Sprint(status, " ", body)
			})
			eventually(t, via.id+": channels", func() (bool, string) {
				status, body := c.pusherGet(via, "/apps/"+pcAppID+"/channels", map[string]string{"filter_by_prefix": "presence-", "info": "user_count"})
				return status == 200 && body == `{"channels":{"presence-doc":{"user_count":2}}}`, fmt.Sprint(status, " ", body)
			})
		}
	})
}
