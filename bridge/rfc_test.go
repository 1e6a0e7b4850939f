package bridge

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// TestRFC6455Conformance runs the conformance probes (bridge/testkit/rfccases.go) against an
// in-process bridge whose app echoes every message; cmd/wsbridge runs them against the binary.
func TestRFC6455Conformance(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	cfg := testConfig(t, php.URL)
	cfg.MessageRate = 0
	b := startBridge(t, cfg, nil, nil)
	u, _ := url.Parse(b.public.URL)
	testkit.RunRFC6455(t, u.Host, cfg.WSPaths[0], php, int(cfg.MaxMessageSize))
}

// TestNoDataFrameAfterClose streams pushes to a connection while the client causes each kind
// of close, and checks every byte the bridge sends: once its Close frame is out, nothing
// follows (§5.5.1), whoever wrote the Close (coder/websocket on its own, or the bridge).
func TestNoDataFrameAfterClose(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	cfg := testConfig(t, php.URL)
	cfg.MessageRate = 0
	cfg.MaxMessageSize = 1024
	cfg.SendQueue = 1 << 20 // the pushes outrun the socket; the client is not slow, only flooded
	b := startBridge(t, cfg, nil, nil)
	u, _ := url.Parse(b.public.URL)
	cases := []struct {
		name    string
		trigger func(p *testkit.Probe)
		code    int
		by      string
	}{
		{"client-close", func(p *testkit.Probe) { p.SendClose(1000, "") }, 1000, "client"},
		{"protocol-error", func(p *testkit.Probe) { p.Send(true, 0, 0x3, nil) }, 1002, "server"},
		{"message-too-big", func(p *testkit.Probe) { p.Send(true, 0, testkit.OpBinary, make([]byte, 2000)) }, 1009, "server"},
		{"invalid-utf8", func(p *testkit.Probe) { p.SendText("\xff") }, 1007, "server"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for range 20 { // each round races the pushes against the close anew
				p := testkit.DialProbe(t, u.Host, cfg.WSPaths[0])
				ctx, cancel := context.WithCancel(context.Background())
				var wg sync.WaitGroup
				wg.Add(1)
				go func() {
					defer wg.Done()
					data := strings.Repeat("p", 100)
					for ctx.Err() == nil {
						if n, _ := b.srv.hub.Publish(ctx, &Publication{To: Targets{Connections: []string{p.ID}}, Data: &data}); n == 0 {
							return // the connection has left the hub
						}
					}
				}()
				for range 3 { // pushes are streaming
					p.Message()
				}
				tc.trigger(p)
				p.ExpectClose(tc.code)
				cancel()
				wg.Wait()
				if h := php.WaitClose(t, p.ID); h.Code != tc.code || h.Initiator != tc.by {
					t.Fatalf("close webhook %+v, want code %d by %s", h, tc.code, tc.by)
				}
			}
		})
	}
}

// TestCloseHandshakeIsBounded: a client that announces a 4 GiB frame, gets 1009 and then
// sends nothing is still ended, within the close handshake's bound (PING_TIMEOUT), and PHP gets
// its close webhook.
func TestCloseHandshakeIsBounded(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	cfg := testConfig(t, php.URL)
	cfg.PingTimeout = 200 * time.Millisecond
	b := startBridge(t, cfg, nil, nil)
	u, _ := url.Parse(b.public.URL)
	p := testkit.DialProbe(t, u.Host, cfg.WSPaths[0])
	payload := make([]byte, cfg.MaxMessageSize+10)
	p.SendRaw(testkit.EncodeFrame(true, 0, testkit.OpBinary, payload, true, 4<<30))
	p.ExpectClose(1009) // also waits for the bridge to end the TCP connection
	if h := php.WaitClose(t, p.ID); h.Code != 1009 || h.Initiator != "server" {
		t.Fatalf("close webhook %+v, want 1009 by server", h)
	}
}

// TestPingFloodIsRateLimited: pings count against MESSAGE_RATE like messages.
func TestPingFloodIsRateLimited(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	cfg := testConfig(t, php.URL)
	cfg.MessageRate, cfg.MessageBurst = 1, 5
	b := startBridge(t, cfg, nil, nil)
	u, _ := url.Parse(b.public.URL)
	p := testkit.DialProbe(t, u.Host, cfg.WSPaths[0])
	for range 50 {
		p.Send(true, 0, testkit.OpPing, []byte("x"))
	}
	if r := p.ExpectClose(1008); r != "message rate exceeded" {
		t.Errorf("close reason %q", r)
	}
	if h := php.WaitClose(t, p.ID); h.Code != 1008 || h.Initiator != "server" {
		t.Fatalf("close webhook %+v, want 1008 by server", h)
	}
}

// TestTextReachesPHPByteForByte: what PHP decodes from the message webhook is exactly what the
// client sent, including characters JSON escapes.
func TestTextReachesPHPByteForByte(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	cfg := testConfig(t, php.URL)
	b := startBridge(t, cfg, nil, nil)
	u, _ := url.Parse(b.public.URL)
	p := testkit.DialProbe(t, u.Host, cfg.WSPaths[0])
	sent := "a<b>&\u2028\u2029\U0001F600\x00\x7f\"\\κόσμε"
	p.SendText(sent)
	p.ExpectEcho(testkit.OpText, []byte(sent))
	if got := php.Messages(p.ID); len(got) != 1 || string(got[0]) != sent {
		t.Fatalf("PHP received %q, want %q", got, sent)
	}
}

// TestRFC7692Conformance: with COMPRESSION=on, the permessage-deflate probes pass on
// connections that offer it, and every RFC 6455 probe still passes on connections that do not
// (for them RSV1 stays a protocol error).
func TestRFC7692Conformance(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	cfg := testConfig(t, php.URL)
	cfg.MessageRate = 0
	cfg.Compression = "on"
	b := startBridge(t, cfg, nil, nil)
	u, _ := url.Parse(b.public.URL)
	t.Run("deflate", func(t *testing.T) {
		testkit.RunRFC7692(t, u.Host, cfg.WSPaths[0], php, int(cfg.MaxMessageSize), cfg.CompressionThreshold)
	})
	t.Run("plain", func(t *testing.T) {
		testkit.RunRFC6455(t, u.Host, cfg.WSPaths[0], php, int(cfg.MaxMessageSize))
	})
}

// TestBroadcastCompressedOnceForAll: a publication to connections that negotiated compression
// and to one that did not reaches each in its own encoding, intact, and is compressed once (the
// compressed bytes are the hub's, shared: every deflating recipient gets identical frames).
func TestBroadcastCompressedOnceForAll(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	cfg := testConfig(t, php.URL)
	cfg.Compression = "on"
	b := startBridge(t, cfg, nil, nil)
	u, _ := url.Parse(b.public.URL)
	var zs []*testkit.Probe
	for range 3 {
		zs = append(zs, testkit.DialProbe(t, u.Host, cfg.WSPaths[0], testkit.DeflateOffer))
	}
	plain := testkit.DialProbe(t, u.Host, cfg.WSPaths[0])
	data := strings.Repeat(`{"user":"ann","text":"hello everyone in the room"},`, 40)
	if n, err := b.srv.hub.Publish(context.Background(), &Publication{To: Targets{All: true}, Data: &data}); err != nil || n != 4 {
		t.Fatalf("publish = %d, %v; want 4", n, err)
	}
	for i, p := range zs {
		p.ExpectEcho(testkit.OpText, []byte(data))
		if !p.Compressed {
			t.Errorf("deflate client %d got the broadcast uncompressed", i)
		}
	}
	plain.ExpectEcho(testkit.OpText, []byte(data))
	if plain.Compressed {
		t.Error("a client that did not offer permessage-deflate got a compressed frame")
	}
}
