package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wsbridge/wsbridge/bridge/internal/wsraw"
)

func benchServer(b *testing.B, env ...string) *Server {
	b.Helper()
	cfg, err := LoadConfig(append([]string{"WSBRIDGE_WEBHOOK_URL=http://127.0.0.1:1/hook", "WSBRIDGE_WEBHOOK_SECRET=bench-secret"}, env...))
	if err != nil {
		b.Fatal(err)
	}
	return New(cfg, slog.New(slog.DiscardHandler), nil)
}

// BenchmarkMessageWebhookBody measures what the bridge does per client message before the HTTP
// request: build the event with the connection's state, encode it and sign it.
func BenchmarkMessageWebhookBody(b *testing.B) {
	s := benchServer(b)
	st := state{UserID: "42", Meta: json.RawMessage(`{"name":"Ada","room":7}`), Channels: []string{"lobby", "room:7"}}
	data := `{"type":"chat","text":"hello, this is a short chat line"}`
	secret := []byte(s.cfg.WebhookSecret)
	var slot hookConn // signs as a webhook slot does, with the HMAC it keeps
	b.ReportAllocs()
	for b.Loop() {
		ev := s.newEvent(EventMessage, transportWS, "node.ABCDEFGHIJKLMNOP", st)
		binary := false
		ev.Seq, ev.Binary, ev.Data = 1, &binary, &data
		body, err := encodeEvent(ev)
		if err != nil {
			b.Fatal(err)
		}
		if sig := slot.sign(secret, time.Now(), body); len(sig) == 0 {
			b.Fatal("empty signature")
		}
	}
}

// BenchmarkDecodePublishBatch measures the push API's decoding and validation of a batch of
// 100 publications, one per connection, as an app pushing per-user notifications sends it.
func BenchmarkDecodePublishBatch(b *testing.B) {
	var sb strings.Builder
	sb.WriteByte('[')
	for i := range 100 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"to":{"connections":["node.ABCDEFGHIJK%05d"]},"data":"{\"type\":\"notice\",\"n\":%d}"}`, i, i)
	}
	sb.WriteByte(']')
	body := []byte(sb.String())
	l := limits{MaxNameLen: 200, MaxMetaSize: 8192}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var pubs []Publication
		if err := decodeStrict(body, &pubs); err != nil {
			b.Fatal(err)
		}
		for i := range pubs {
			if err := pubs[i].validate(l); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkConnWriter measures one connection's writer: frames queued with Send, written by
// the writer goroutine to a real WebSocket, read by a client over loopback. The sender keeps at
// most half a queue in flight so that the client is never dropped as slow.
func BenchmarkConnWriter(b *testing.B) { benchConnWriter(b, false) }

// benchConnWriter is BenchmarkConnWriter, over TLS when useTLS.
func benchConnWriter(b *testing.B, useTLS bool) {
	s := benchServer(b, "WSBRIDGE_SEND_QUEUE=256")
	type accept struct {
		ws   *websocket.Conn
		wire *wsraw.Conn
	}
	accepted := make(chan accept, 1)
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &corkingWriter{ResponseWriter: w}
		ws, err := websocket.Accept(cw, r, nil)
		if err != nil {
			b.Error(err)
			return
		}
		accepted <- accept{ws, cw.conn}
	}))
	if useTLS {
		hs.StartTLS()
	} else {
		hs.Start()
	}
	defer hs.Close()
	client, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(hs.URL, "http"),
		&websocket.DialOptions{HTTPClient: hs.Client()})
	if err != nil {
		b.Fatal(err)
	}
	defer client.CloseNow()
	c := &conn{session: session{id: "bench", srv: s}, writerDone: make(chan struct{})}
	a := <-accepted
	c.wire = a.wire
	c.setSocket(a.ws)
	c.startWriter(context.Background())

	var read atomic.Int64
	progress := make(chan struct{}, 1)
	go func() {
		for {
			if _, _, err := client.Read(context.Background()); err != nil {
				return
			}
			read.Add(1)
			select {
			case progress <- struct{}{}:
			default:
			}
		}
	}()
	f := Delivery{Data: []byte(`{"type":"chat","text":"hello, this is a short chat line"}`)}
	window := int64(s.cfg.SendQueue / 2)
	b.ReportAllocs()
	b.ResetTimer()
	var sent int64
	for range b.N {
		for sent-read.Load() >= window {
			<-progress
		}
		if !c.Send(f) {
			b.Fatal("frame refused: the client was dropped")
		}
		sent++
	}
	for read.Load() < sent {
		<-progress
	}
	b.StopTimer()
	c.Close(int(websocket.StatusNormalClosure), "", InitiatorServer)
	<-c.writerDone
}

// BenchmarkMessageWebhookExchange measures one message webhook end to end on the bridge's side:
// build, encode and sign the event, write the request on a kept-alive connection, read and
// decode PHP's reply. A Go handler on loopback stands in for PHP and answers with an echo.
func BenchmarkMessageWebhookExchange(b *testing.B) {
	php := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"send":["hello"]}`))
	}))
	defer php.Close()
	benchMessageExchange(b, benchServer(b, "WSBRIDGE_WEBHOOK_URL="+php.URL+"/hook"))
}

// benchMessageExchange sends one message webhook per iteration through s's webhook client, to a
// PHP stand-in that answers {"send":["hello"]}: over HTTP or FastCGI, whichever s's URL names.
func benchMessageExchange(b *testing.B, s *Server) {
	st := state{UserID: "42", Channels: []string{"lobby"}}
	data := `{"type":"chat","text":"hello, this is a short chat line"}`
	b.ReportAllocs()
	for b.Loop() {
		ev := s.newEvent(EventMessage, transportWS, "node.ABCDEFGHIJKLMNOP", st)
		binary := false
		ev.Seq, ev.Binary, ev.Data = 1, &binary, &data
		res, err := s.hooks.send(context.Background(), ev, "", holdCounts)
		if err != nil || res.Reply == nil || len(res.Reply.Send) != 1 {
			b.Fatalf("exchange: %v %v", res, err)
		}
	}
}
