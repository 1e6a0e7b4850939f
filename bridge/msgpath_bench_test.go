package bridge

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/coder/websocket"
)

// BenchmarkMessagePath measures the bridge's whole work for one client message on the webhook
// path, on one goroutine, over real loopback sockets: read the client's frame, build, encode
// and sign the event, write the request on a kept-alive slot connection, read and decode PHP's
// reply, apply it, write the reply frame to the client. The benchmark plays both peers: it
// writes PHP's answer before the request is sent (so no read waits) and reads what the bridge
// wrote afterwards. With nothing waiting on another goroutine, its instruction count per
// message is repeatable under callgrind (docs/benchmarks.md), which wall-clock figures on a
// shared machine are not.
func BenchmarkMessagePath(b *testing.B) {
	s := benchServer(b, "WSBRIDGE_WEBHOOK_URL=http://127.0.0.1:9/hook", "WSBRIDGE_WEBHOOK_CONCURRENCY=1")
	u := s.cfg.webhookURL(EventMessage)
	php, hookSide := tcpPair(b)
	slot := <-s.hooks.slots
	hc := &slot.http
	hc.addr, hc.url, hc.nc = hostPort(u), u, hookSide // no idle probe: the answer is written ahead
	hc.br, hc.bw = bufio.NewReader(hookSide), bufio.NewWriter(hookSide)
	hc.rr.br = hc.br
	s.hooks.slots <- slot

	client, serverSide := tcpPair(b)
	c := acceptOver(b, s, serverSide, client)
	ctx := context.Background()
	c.startWriter(ctx)
	s.hub.Add(c, connInfo{ID: c.id}, &c.counters, "42", nil, []string{"lobby"})

	text := []byte(`{"type":"chat","text":"hello, this is a short chat line"}`)
	frame := maskedFrame(text)
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 24\r\n\r\n" + `{"send":["hello there"]}`)
	sink := make([]byte, 64<<10)
	var seq uint64
	b.ReportAllocs()
	for b.Loop() {
		php.Write(answer)
		client.Write(frame)
		if !c.readMessage(ctx, &seq) {
			b.Fatal("reading ended")
		}
		if n, err := php.Read(sink); err != nil || n < 200 {
			b.Fatalf("request: %d bytes, %v", n, err)
		}
		if n, err := client.Read(sink); err != nil || n != 2+len("hello there") {
			b.Fatalf("reply frame: %d bytes, %v", n, err)
		}
	}
	b.StopTimer()
	if c.counters.Out.Load() != seq {
		b.Fatalf("%d replies written for %d messages", c.counters.Out.Load(), seq)
	}
	c.Close(int(websocket.StatusNormalClosure), "", InitiatorServer)
	client.Close()
	for c.readMessage(ctx, &seq) {
	}
	<-c.writerDone
}

// tcpPair is a connected loopback TCP pair.
func tcpPair(tb testing.TB) (a, b net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	if b, err = ln.Accept(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// acceptOver upgrades nc, the server's end of a TCP connection whose other end is client, as
// serveWS does (corkingWriter, the hijacked buffers), without an HTTP server: the handshake
// request is made up and its answer read off client.
func acceptOver(tb testing.TB, s *Server, nc, client net.Conn) *conn {
	tb.Helper()
	c := &conn{session: session{id: s.newConnID(), srv: s, log: s.log}, writerDone: make(chan struct{})}
	r, _ := http.NewRequest("GET", "http://bridge/ws", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	hw := &hijackable{header: http.Header{}, nc: nc}
	cw := &corkingWriter{ResponseWriter: hw, owner: c}
	ws, err := websocket.Accept(cw, r, &websocket.AcceptOptions{InsecureSkipVerify: true, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		tb.Fatal(err)
	}
	c.wire = cw.conn
	c.setSocket(ws)
	if _, err := io.ReadFull(client, make([]byte, len(switching))); err != nil {
		tb.Fatal(err)
	}
	return c
}

// hijackable is a ResponseWriter over a socket that writes the 101 answer itself, as net/http
// does for a 1xx, and hands the socket over on Hijack.
type hijackable struct {
	header http.Header
	nc     net.Conn
}

func (h *hijackable) Header() http.Header         { return h.header }
func (h *hijackable) Write(p []byte) (int, error) { return 0, io.ErrClosedPipe }
func (h *hijackable) WriteHeader(code int) {
	h.nc.Write([]byte(switching))
}

const switching = "HTTP/1.1 101 Switching Protocols\r\n\r\n"

func (h *hijackable) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.nc, bufio.NewReadWriter(bufio.NewReader(h.nc), bufio.NewWriter(h.nc)), nil
}

// maskedFrame is a client's text frame carrying p (short: under 126 bytes).
func maskedFrame(p []byte) []byte {
	key := [4]byte{1, 2, 3, 4}
	out := []byte{0x81, 0x80 | byte(len(p))}
	out = binary.BigEndian.AppendUint32(out, binary.BigEndian.Uint32(key[:]))
	for i, c := range p {
		out = append(out, c^key[i%4])
	}
	return out
}
