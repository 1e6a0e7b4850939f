package bridge

import (
	"strings"
	"testing"
)

// What PHP publishes through the engine is decoded and checked whole, as POST /v1/publish:
// a bad body, or a batch with one bad item, delivers nothing and is counted.
func TestEnginePublishDecodedAsTheAPI(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, room)
	b := newBridge(t, php, func(c *Config) { c.MaxBatch = 2; c.MaxPushBody = 200 })
	c := b.clients(t, "join=lobby")[0]
	refused := 0.0
	for _, tc := range []struct {
		name, body string
		want       []string // what the client reads, in order; nil: refused
	}{
		{"one publication", `{"to":{"channels":["lobby"]},"data":"one"}`, []string{"one"}},
		{"a batch, in order", `[{"to":{"all":true},"data":"b1"},{"to":{"channels":["lobby"]},"data":"b2"}]`, []string{"b1", "b2"}},
		{"unknown field", `{"to":{"all":true},"data":"x","colour":"red"}`, nil},
		{"batch with one bad item", `[{"to":{"all":true},"data":"x"},{"to":{},"data":"y"}]`, nil},
		{"batch over MAX_BATCH", `[{"to":{"all":true},"data":"1"},{"to":{"all":true},"data":"2"},{"to":{"all":true},"data":"3"}]`, nil},
		{"empty batch", `[]`, nil},
		{"not JSON", `PUBLISH wsbridge:publish hello`, nil},
		{"empty", ``, nil},
		{"over MAX_PUSH_BODY", `{"to":{"all":true},"data":"` + strings.Repeat("x", 200) + `"}`, nil},
		{"data and data_base64", `{"to":{"all":true},"data":"x","data_base64":"eA=="}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := b.srv.applyEnginePublish([]byte(tc.body))
			if tc.want == nil {
				if err == nil {
					t.Fatalf("applyEnginePublish(%q) = nil, want it refused", tc.body)
				}
				refused++
				if n := metricValue(t, b.srv, "wsbridge_engine_publishes_refused_total"); n != refused {
					t.Errorf("wsbridge_engine_publishes_refused_total = %v, want %v", n, refused)
				}
			} else if err != nil {
				t.Fatalf("applyEnginePublish(%q): %v", tc.body, err)
			}
			// Nothing of a refused body arrives: the marker is next.
			if err := b.srv.applyEnginePublish([]byte(`{"to":{"all":true},"data":"marker"}`)); err != nil {
				t.Fatal(err)
			}
			for _, w := range append(tc.want, "marker") {
				if got := read(t, c.ws); got != w {
					t.Fatalf("client read %q, want %q", got, w)
				}
			}
		})
	}
}

// Every node receives PHP's publication from the engine, so a node applies it to its own
// connections only and forwards nothing: forwarding would deliver it twice.
func TestEnginePublishNotForwarded(t *testing.T) {
	t.Parallel()
	broker := NewMemoryBroker()
	php := newFakePHP(t, room)
	cfgA, cfgB := testConfig(t, php.URL), testConfig(t, php.URL)
	cfgA.NodeID, cfgB.NodeID = "a", "b"
	a := brokerBridge(t, cfgA, php, broker)
	bb := brokerBridge(t, cfgB, php, broker)
	ca, cb := a.clients(t, "join=lobby")[0], bb.clients(t, "join=lobby")[0]
	if err := a.srv.applyEnginePublish([]byte(`{"to":{"channels":["lobby"]},"data":"once"}`)); err != nil {
		t.Fatal(err)
	}
	if got := read(t, ca.ws); got != "once" {
		t.Fatalf("client on a read %q, want once", got)
	}
	if err := bb.srv.applyEnginePublish([]byte(`{"to":{"channels":["lobby"]},"data":"once"}`)); err != nil {
		t.Fatal(err)
	}
	if got := read(t, cb.ws); got != "once" {
		t.Fatalf("client on b read %q, want once", got)
	}
	// A marker through the API reaches both; had either node forwarded, a second "once" would
	// come first.
	if st := a.api(t, "POST", "/v1/publish", map[string]any{"to": map[string]any{"all": true}, "data": "marker"}, nil); st != 200 {
		t.Fatalf("marker publish: %d", st)
	}
	for name, c := range map[string]client{"a": ca, "b": cb} {
		if got := read(t, c.ws); got != "marker" {
			t.Errorf("client on %s read %q, want the marker: the engine publication was forwarded to the other node", name, got)
		}
	}
}
