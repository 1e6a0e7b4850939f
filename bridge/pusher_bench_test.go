package bridge

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// BenchmarkIdleConnHeapPusher is BenchmarkIdleConnHeap's plain case for the two transports side
// by side: the Go heap and stacks an idle connection holds, both ends together: native on /ws,
// joined to a channel by the open reply, and Pusher on /app/{key}, subscribed to one public
// channel (as a page with one Echo channel); each has read the open reply's frame. Run it with
// -benchtime=1x.
func BenchmarkIdleConnHeapPusher(b *testing.B) {
	const n = 500
	// The open reply joins the native client to the channel and sends each client a frame, so
	// both have read a message, as the wsbridge-bench clients do (their id frame).
	php := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(body), `"type":"open"`) {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"join":["news"],"send":["hello"]}`)
	}))
	defer php.Close()
	for _, pusher := range []bool{false, true} {
		name := "native"
		if pusher {
			name = "pusher"
		}
		b.Run(name, func(b *testing.B) {
			s := benchServer(b, "WSBRIDGE_WEBHOOK_URL="+php.URL, "WSBRIDGE_MESSAGE_RATE=0",
				"WSBRIDGE_PUSHER_APP_ID=1", "WSBRIDGE_PUSHER_KEY="+testPusherKey, "WSBRIDGE_PUSHER_SECRET="+testPusherSecret)
			hs := httptest.NewServer(s.PublicHandler())
			defer hs.Close()
			u := "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
			if pusher {
				u = "ws" + strings.TrimPrefix(hs.URL, "http") + "/app/" + testPusherKey + "?protocol=7"
			}
			ctx := context.Background()
			var perConn float64
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				conns := make([]*websocket.Conn, n)
				for i := range conns {
					c, _, err := websocket.Dial(ctx, u, nil)
					if err != nil {
						b.Fatal(err)
					}
					conns[i] = c
					if pusher {
						c.Read(ctx) // connection_established
					}
					if _, m, err := c.Read(ctx); err != nil || string(m) != "hello" {
						b.Fatalf("open reply's frame: %q %v", m, err)
					}
					if pusher {
						c.Write(ctx, websocket.MessageText, []byte(`{"event":"pusher:subscribe","data":{"channel":"news"}}`))
						if _, m, err := c.Read(ctx); err != nil || !strings.Contains(string(m), "subscription_succeeded") {
							b.Fatalf("subscribe: %s %v", m, err)
						}
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perConn = float64(int64(after.HeapInuse+after.StackInuse)-int64(before.HeapInuse+before.StackInuse)) / n
				for _, c := range conns {
					c.CloseNow()
				}
			}
			b.ReportMetric(perConn, "heap+stack-B/conn")
			sctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			s.Shutdown(sctx)
		})
	}
}

// BenchmarkHubPublishChannelPusher is BenchmarkHubPublishChannel with the Pusher mode on: the
// publication also gets its Pusher envelope, encoded once, whoever its recipients are.
func BenchmarkHubPublishChannelPusher(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			h := newHub("bench", NewMemoryBroker())
			h.pusher = true
			benchPublishChannel(b, h, n, nil, `App\Events\Said`)
		})
	}
}
