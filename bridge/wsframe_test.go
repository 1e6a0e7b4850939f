package bridge

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
	"github.com/wsbridge/wsbridge/bridge/testkit"
)

func TestWireFrameHeaders(t *testing.T) {
	for _, tc := range []struct {
		n      int
		binary bool
		header []byte
	}{
		{0, false, []byte{0x81, 0}},
		{125, false, []byte{0x81, 125}},
		{126, true, []byte{0x82, 126, 0, 126}},
		{65535, false, []byte{0x81, 126, 0xFF, 0xFF}},
		{65536, true, []byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		data := bytes.Repeat([]byte{'x'}, tc.n)
		got := Delivery{Binary: tc.binary, Data: data}.wireFrame()
		if !bytes.Equal(got[:len(tc.header)], tc.header) || !bytes.Equal(got[len(tc.header):], data) {
			t.Errorf("%d bytes (binary %v): header % x, want % x", tc.n, tc.binary, got[:min(len(got), 10)], tc.header)
		}
	}
}

// TestFramesOfEverySizeArriveIntact sends frames around each length-encoding boundary through a
// real bridge to a coder/websocket client, which checks the framing.
func TestFramesOfEverySizeArriveIntact(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, acceptAll)
	b := newBridge(t, php, nil)
	c, _ := b.openConn(t, "")
	c.SetReadLimit(1 << 20)
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 300000} {
		for _, binary := range []bool{false, true} {
			data := bytes.Repeat([]byte{byte('a' + n%26)}, n)
			pub := map[string]any{"to": map[string]any{"all": true}}
			if binary {
				pub["data_base64"] = base64.StdEncoding.EncodeToString(data)
			} else {
				pub["data"] = string(data)
			}
			if code := b.api(t, "POST", "/v1/publish", pub, nil); code != 200 {
				t.Fatalf("publish %d bytes: %d", n, code)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			typ, got, err := c.Read(ctx)
			cancel()
			want := websocket.MessageText
			if binary {
				want = websocket.MessageBinary
			}
			if err != nil || typ != want || !bytes.Equal(got, data) {
				t.Fatalf("%d bytes (binary %v): read %v %d bytes, err %v", n, binary, typ, len(got), err)
			}
		}
	}
}

// TestDeflatedFrames: a publication's two encodings share one buffer; the plain one is the
// frame wireFrame makes, the compressed one has RSV1 and inflates to the data (RFC 7692 §7.2),
// and data that would not shrink keeps its plain frame for every recipient.
func TestDeflatedFrames(t *testing.T) {
	cases := []struct {
		name       string
		data       []byte
		compressed bool
	}{
		{"json", []byte(strings.Repeat(`{"user":"ann","text":"hi"},`, 100)), true},
		{"random", func() []byte { b := make([]byte, 2000); rand.Read(b); return b }(), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := Delivery{Data: tc.data, Binary: true}.withDeflated()
			plain := Delivery{Data: tc.data, Binary: true}.wireFrame()
			if !bytes.Equal(f.wireFrame(), plain) {
				t.Fatal("the plain encoding differs from wireFrame's")
			}
			z := f.deflatedFrame()
			if !tc.compressed {
				if !bytes.Equal(z, plain) {
					t.Fatal("incompressible data got a compressed frame")
				}
				return
			}
			if z[0] != 0xC2 {
				t.Fatalf("first byte %#x, want FIN|RSV1|binary", z[0])
			}
			n, hdr := int(z[1]), 2
			if n == 126 {
				n, hdr = int(z[2])<<8|int(z[3]), 4
			}
			if len(z) != hdr+n || n >= len(tc.data) {
				t.Fatalf("compressed frame of %d bytes (payload %d) for %d bytes of data", len(z), n, len(tc.data))
			}
			got := testkit.Inflate(t, z[hdr:])
			if !bytes.Equal(got, tc.data) {
				t.Fatal("the compressed frame does not inflate to the data")
			}
			if again := (Delivery{Data: tc.data, Binary: true}).deflatedFrame(); !bytes.Equal(again, z) {
				t.Fatal("a reply's frame compressed alone differs from the publication's")
			}
		})
	}
}

// The raw data path's assumption about coder/websocket (wsframe.go): its control frames reach
// the socket whole, each in one write, so they never land inside a data frame the bridge wrote
// itself, corked bursts included. A client pings while pushes flood it (they queue, and the
// writer sends them in corked bursts); every frame it reads must parse (the probe checks RFC
// 6455's rules), the pushes arrive whole and in order, every ping gets its pong in order, and
// after the close nothing follows.
func TestPingsBetweenCorkedBursts(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	cfg := testConfig(t, php.URL)
	cfg.MessageRate = 0
	// The pushes outrun the socket; the client is not slow, only flooded. Both bounds hold every
	// push the loop below makes, so a loaded machine cannot turn the flood into a slow consumer.
	const pushes = 50_000
	cfg.SendQueue = pushes
	cfg.SendQueueBytes = 64 << 20
	b := startBridge(t, cfg, nil, nil)
	u, _ := url.Parse(b.public.URL)
	p := testkit.DialProbe(t, u.Host, cfg.WSPaths[0])

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		pad := strings.Repeat("p", 300)
		for i := 0; i < pushes && ctx.Err() == nil; i++ {
			data := fmt.Sprintf("%08d", i) + pad
			if n, _ := b.srv.hub.Publish(ctx, &Publication{To: Targets{Connections: []string{p.ID}}, Data: &data}); n == 0 {
				return // the connection has left the hub
			}
		}
	})
	next := 0 // the push expected next
	data := func(f testkit.WireFrame) {
		t.Helper()
		if !f.Fin || len(f.Payload) != 308 {
			t.Fatalf("push %d: fin %v, %d bytes; want one whole frame of 308", next, f.Fin, len(f.Payload))
		}
		if got, err := strconv.Atoi(string(f.Payload[:8])); err != nil || got != next {
			t.Fatalf("push %q arrived when %d was due", f.Payload[:8], next)
		}
		next++
	}
	for i := range 200 {
		want := "ping-" + strconv.Itoa(i)
		p.Send(true, 0, testkit.OpPing, []byte(want))
		for pong := false; !pong; {
			switch f := p.Next(); f.Op {
			case testkit.OpText:
				data(f)
			case testkit.OpPong:
				if string(f.Payload) != want {
					t.Fatalf("pong %q, want %q (§5.5.3: in order, with the ping's payload)", f.Payload, want)
				}
				pong = true
			default:
				t.Fatalf("frame op %d amid pushes and pongs", f.Op)
			}
		}
	}
	if next == 0 {
		t.Fatal("no push arrived between the pongs")
	}
	p.SendClose(1000, "")
	p.ExpectClose(1000)
	cancel()
	wg.Wait()
	if h := php.WaitClose(t, p.ID); h.Code != 1000 || h.Initiator != "client" {
		t.Fatalf("close webhook %+v, want 1000 by client", h)
	}
}
