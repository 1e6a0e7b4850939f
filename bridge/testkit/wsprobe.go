package testkit

import (
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// This file is an RFC 6455 conformance probe: a raw-TCP WebSocket client that sends arbitrary
// bytes (masked, or not when a case asks) and checks every byte the server sends back, and a
// table of cases modelled on the Autobahn TestSuite (sections 1-7, 9 limits, 10). The bridge's
// tests run the table in-process and against the built binary, with EchoPHP as the app.

// WebSocket opcodes (RFC 6455 §5.2).
const (
	OpCont   = 0x0
	OpText   = 0x1
	OpBinary = 0x2
	OpClose  = 0x8
	OpPing   = 0x9
	OpPong   = 0xA
)

// ProbeWait bounds every wait of a probe: a guard against hangs, not a timing claim.
const ProbeWait = 10 * time.Second

// WireFrame is one frame as the server sent it.
type WireFrame struct {
	Fin     bool
	RSV     byte // the three reserved bits, as bits 6..4 of the first byte
	Op      byte
	Payload []byte
}

// Probe is one raw WebSocket client connection.
type Probe struct {
	t        testing.TB
	nc       net.Conn
	br       *bufio.Reader
	ID       string // the connection id EchoPHP sent as the first frame
	sawClose bool   // the server's close frame was read; nothing may follow it
	sentClo  bool
	// AllowRSV1 lets server data frames carry RSV1 (permessage-deflate was negotiated).
	AllowRSV1 bool
	// Compressed says whether the last message Message returned came compressed.
	Compressed bool
}

// DialProbe performs the opening handshake on addr (host:port) for path and reads EchoPHP's
// welcome frame, which carries the connection id.
func DialProbe(t testing.TB, addr, path string, extraHeaders ...string) *Probe {
	t.Helper()
	return DialProbeEarly(t, addr, path, nil, extraHeaders...)
}

// DialProbeEarly is DialProbe with frames sent in the same write as the handshake request,
// before its answer: the server's HTTP layer reads them along with the request.
func DialProbeEarly(t testing.TB, addr, path string, early []byte, extraHeaders ...string) *Probe {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, ProbeWait)
	if err != nil {
		t.Fatalf("probe: dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(ProbeWait))
	keyRaw := make([]byte, 16)
	rand.Read(keyRaw)
	key := base64.StdEncoding.EncodeToString(keyRaw)
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n"
	for _, h := range extraHeaders {
		req += h + "\r\n"
	}
	if _, err := nc.Write(append([]byte(req+"\r\n"), early...)); err != nil {
		t.Fatalf("probe: write handshake: %v", err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("probe: read handshake answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("probe: handshake answered %s, want 101", resp.Status)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
		t.Fatalf("probe: Sec-WebSocket-Accept %q, want %q (§4.2.2)", got, want)
	}
	p := &Probe{t: t, nc: nc, br: br}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		p.AllowRSV1 = strings.Contains(ext, "permessage-deflate")
		if !strings.Contains(ext, "server_no_context_takeover") || !strings.Contains(ext, "client_no_context_takeover") {
			t.Fatalf("probe: extension %q keeps a context; the bridge must not (one compression per broadcast)", ext)
		}
	}
	f := p.Next()
	if f.Op != OpText || !strings.HasPrefix(string(f.Payload), "id:") {
		t.Fatalf("probe: first frame %d %q, want EchoPHP's id:<connection>", f.Op, f.Payload)
	}
	p.ID = strings.TrimPrefix(string(f.Payload), "id:")
	return p
}

// EncodeFrame returns one client frame. mask false leaves the mask bit unset (a protocol
// error for a client); length, when >= 0, is announced instead of len(payload).
func EncodeFrame(fin bool, rsv, op byte, payload []byte, mask bool, length int64) []byte {
	b0 := op | rsv
	if fin {
		b0 |= 0x80
	}
	n := int64(len(payload))
	if length >= 0 {
		n = length
	}
	b := []byte{b0}
	mbit := byte(0)
	if mask {
		mbit = 0x80
	}
	switch {
	case n <= 125:
		b = append(b, mbit|byte(n))
	case n <= 0xFFFF:
		b = append(b, mbit|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, mbit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !mask {
		return append(b, payload...)
	}
	var key [4]byte
	rand.Read(key[:])
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

// Send writes one masked frame.
func (p *Probe) Send(fin bool, rsv, op byte, payload []byte) {
	p.t.Helper()
	p.SendRaw(EncodeFrame(fin, rsv, op, payload, true, -1))
}

// SendRaw writes b as it is. A write error is not a failure: the server may already have
// failed the connection, which the case then checks.
func (p *Probe) SendRaw(b []byte) {
	p.nc.SetWriteDeadline(time.Now().Add(ProbeWait))
	p.nc.Write(b)
}

// Deflate compresses one message as RFC 7692 §7.2.1 says, without context takeover: a
// sync-flushed deflate stream with its 0x00 0x00 0xff 0xff tail removed.
func Deflate(data []byte) []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	w.Write(data)
	w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

// Inflate reverses Deflate (§7.2.2: the tail is put back before inflating).
func Inflate(t testing.TB, z []byte) []byte {
	t.Helper()
	r := flate.NewReader(io.MultiReader(bytes.NewReader(z), bytes.NewReader([]byte{0, 0, 0xff, 0xff})))
	out, err := io.ReadAll(r)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("probe: a compressed message does not inflate: %v", err)
	}
	return out
}

// SendDeflated sends data as one compressed message (RSV1 on its first frame) in the given
// number of frames.
func (p *Probe) SendDeflated(op byte, data []byte, frames int) {
	p.t.Helper()
	z := Deflate(data)
	step := max(1, (len(z)+frames-1)/frames)
	for i := 0; i < frames; i++ {
		lo, hi := min(i*step, len(z)), min((i+1)*step, len(z))
		if i == frames-1 {
			hi = len(z)
		}
		fop, rsv := byte(OpCont), byte(0)
		if i == 0 {
			fop, rsv = op, 0x40
		}
		p.Send(i == frames-1, rsv, fop, z[lo:hi])
	}
}

// DeflateOffer is the extension header a browser sends, asking for no context takeover.
const DeflateOffer = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover"

// SendText sends a single-frame text message.
func (p *Probe) SendText(s string) { p.t.Helper(); p.Send(true, 0, OpText, []byte(s)) }

// SendClose sends a close frame with payload code (when code > 0) and reason.
func (p *Probe) SendClose(code int, reason string) {
	p.t.Helper()
	var b []byte
	if code > 0 {
		b = binary.BigEndian.AppendUint16(nil, uint16(code))
	}
	p.Send(true, 0, OpClose, append(b, reason...))
	p.sentClo = true
}

// Next reads one server frame and checks it against what RFC 6455 requires of a server: no
// mask (§5.1), no reserved bits without an extension (§5.2), a known opcode, control frames
// final and at most 125 bytes (§5.5), text valid UTF-8 (§8.1), nothing after a close (§5.5.1),
// and a close payload that is empty or a sendable code with a UTF-8 reason (§5.5.1, §7.4).
func (p *Probe) Next() WireFrame {
	p.t.Helper()
	f, err := p.read()
	if err != nil {
		p.t.Fatalf("probe: reading a frame: %v", err)
	}
	return f
}

func (p *Probe) read() (WireFrame, error) {
	p.nc.SetReadDeadline(time.Now().Add(ProbeWait))
	var h [2]byte
	if _, err := io.ReadFull(p.br, h[:]); err != nil {
		return WireFrame{}, err
	}
	if p.sawClose {
		return WireFrame{}, fmt.Errorf("server sent bytes % x after its close frame (§5.5.1)", h)
	}
	f := WireFrame{Fin: h[0]&0x80 != 0, RSV: h[0] & 0x70, Op: h[0] & 0x0F}
	if h[1]&0x80 != 0 {
		return f, errors.New("server frame is masked (§5.1)")
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(p.br, b[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
		if n < 126 {
			return f, fmt.Errorf("length %d not in minimal form (§5.2)", n)
		}
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(p.br, b[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(b[:])
		if n <= 0xFFFF || n>>63 != 0 {
			return f, fmt.Errorf("length %d not in minimal form (§5.2)", n)
		}
	}
	if n > 64<<20 {
		return f, fmt.Errorf("frame of %d bytes: more than any case sends", n)
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(p.br, f.Payload); err != nil {
		return f, err
	}
	switch f.Op {
	case OpCont, OpText, OpBinary:
		if f.RSV != 0 && !(p.AllowRSV1 && f.RSV == 0x40 && f.Op != OpCont) {
			return f, fmt.Errorf("data frame with reserved bits %#x (§5.2)", f.RSV)
		}
		if f.Op == OpText && f.Fin && f.RSV == 0 && !utf8.Valid(f.Payload) {
			return f, errors.New("text frame is not UTF-8 (§8.1)")
		}
	case OpClose, OpPing, OpPong:
		if f.RSV != 0 || !f.Fin || n > 125 {
			return f, fmt.Errorf("control frame op %d rsv %#x fin %v len %d (§5.5)", f.Op, f.RSV, f.Fin, n)
		}
		if f.Op == OpClose {
			p.sawClose = true
			if n == 1 {
				return f, errors.New("close payload of 1 byte (§5.5.1)")
			}
			if n >= 2 {
				code := int(binary.BigEndian.Uint16(f.Payload))
				if !SendableCloseCode(code) {
					return f, fmt.Errorf("server sent close code %d (§7.4)", code)
				}
				if !utf8.Valid(f.Payload[2:]) {
					return f, fmt.Errorf("close reason %q is not UTF-8 (§5.5.1)", f.Payload[2:])
				}
			}
		}
	default:
		return f, fmt.Errorf("server sent reserved opcode %#x (§5.2)", f.Op)
	}
	return f, nil
}

// SendableCloseCode reports whether code may appear in a close frame (§7.4.1, §7.4.2 and the
// IANA registry): 1000-1003, 1007-1014, 3000-4999.
func SendableCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014, code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// Message reads the next data message, answering nothing and skipping pongs, and returns its
// opcode and payload (fragments joined).
func (p *Probe) Message() (byte, []byte) {
	p.t.Helper()
	var op byte
	var data []byte
	compressed := false
	for {
		f := p.Next()
		switch f.Op {
		case OpPong:
			continue
		case OpPing:
			p.Send(true, 0, OpPong, f.Payload)
			continue
		case OpClose:
			p.t.Fatalf("probe: got close %s while waiting for a message", closeString(f.Payload))
		case OpCont:
			if op == 0 {
				p.t.Fatal("probe: continuation frame without a started message")
			}
		default:
			if op != 0 {
				p.t.Fatal("probe: new message before the last one ended")
			}
			op = f.Op
			compressed = f.RSV == 0x40
		}
		data = append(data, f.Payload...)
		if f.Fin {
			p.Compressed = compressed
			if compressed {
				data = Inflate(p.t, data)
			}
			return op, data
		}
	}
}

// ExpectEcho reads a message and checks that it is op with payload want.
func (p *Probe) ExpectEcho(op byte, want []byte) {
	p.t.Helper()
	gotOp, got := p.Message()
	if gotOp != op || !bytes.Equal(got, want) {
		p.t.Fatalf("probe: echo op %d of %d bytes (%.40q), want op %d of %d bytes (%.40q)", gotOp, len(got), got, op, len(want), want)
	}
}

// ExpectPong reads frames until a pong and checks its payload.
func (p *Probe) ExpectPong(want []byte) {
	p.t.Helper()
	for {
		f := p.Next()
		switch f.Op {
		case OpPong:
			if !bytes.Equal(f.Payload, want) {
				p.t.Fatalf("probe: pong payload %q, want %q (§5.5.3)", f.Payload, want)
			}
			return
		case OpClose:
			p.t.Fatalf("probe: got close %s while waiting for a pong", closeString(f.Payload))
		}
	}
}

// ExpectClose reads until the server's close frame, which must carry code (0: an empty
// payload), answers it unless this probe began the close, then checks that the server sends
// nothing more and closes the TCP connection (§7.1.1). It returns the reason. Data frames
// before the close are allowed (they were sent before the server failed the connection).
func (p *Probe) ExpectClose(code int) string {
	p.t.Helper()
	var f WireFrame
	for {
		var err error
		f, err = p.read()
		if err != nil {
			p.t.Fatalf("probe: want close %d: %v", code, err)
		}
		if f.Op == OpClose {
			break
		}
	}
	got := 0
	if len(f.Payload) >= 2 {
		got = int(binary.BigEndian.Uint16(f.Payload))
	}
	if got != code {
		p.t.Fatalf("probe: close %s, want code %d", closeString(f.Payload), code)
	}
	if !p.sentClo {
		p.SendRaw(EncodeFrame(true, 0, OpClose, f.Payload[:min(2, len(f.Payload))], true, -1))
	}
	if _, err := p.read(); err == nil || !isEOF(err) {
		p.t.Fatalf("probe: after the close frame: %v; want the server to close the connection", err)
	}
	p.nc.Close() // as a client does once the server has closed (§7.1.1)
	if len(f.Payload) > 2 {
		return string(f.Payload[2:])
	}
	return ""
}

// ExpectEnd checks that the server closes the TCP connection, with or without a close frame
// first, and sends nothing invalid on the way.
func (p *Probe) ExpectEnd() {
	p.t.Helper()
	for {
		if _, err := p.read(); err != nil {
			if !isEOF(err) {
				p.t.Fatalf("probe: want the connection to end: %v", err)
			}
			p.nc.Close()
			return
		}
	}
}

func isEOF(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		strings.Contains(err.Error(), "connection reset")
}

func closeString(b []byte) string {
	if len(b) < 2 {
		return fmt.Sprintf("(no code, % x)", b)
	}
	return fmt.Sprintf("%d %q", binary.BigEndian.Uint16(b), b[2:])
}

// CloseHook is what the app's close webhook said about a connection.
type CloseHook struct {
	Code      int    `json:"code"`
	Reason    string `json:"reason"`
	Initiator string `json:"initiator"`
}

// EchoPHP is a webhook endpoint for the conformance cases: it accepts every open and sends the
// connection its id ("id:<connection>"), echoes every message back as it came (text as text,
// binary as binary) and records every message and close webhook.
type EchoPHP struct {
	*httptest.Server
	mu       sync.Mutex
	messages map[string][][]byte
	closes   map[string]CloseHook
	changed  chan struct{} // closed and replaced when a close webhook arrives
}

// NewEchoPHP starts an EchoPHP until the test ends.
func NewEchoPHP(t testing.TB) *EchoPHP {
	e := &EchoPHP{messages: map[string][][]byte{}, closes: map[string]CloseHook{}, changed: make(chan struct{})}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			Type         string  `json:"type"`
			ConnectionID string  `json:"connection_id"`
			Data         *string `json:"data"`
			DataBase64   *string `json:"data_base64"`
			CloseHook
		}
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			t.Errorf("EchoPHP: webhook body is not JSON: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch ev.Type {
		case "open":
			json.NewEncoder(w).Encode(map[string]any{"send": []string{"id:" + ev.ConnectionID}})
		case "message":
			var data []byte
			frame := map[string]string{}
			if ev.DataBase64 != nil {
				data, _ = base64.StdEncoding.DecodeString(*ev.DataBase64)
				frame["data_base64"] = *ev.DataBase64
			} else if ev.Data != nil {
				data = []byte(*ev.Data)
				frame["data"] = *ev.Data
			}
			e.mu.Lock()
			e.messages[ev.ConnectionID] = append(e.messages[ev.ConnectionID], data)
			e.mu.Unlock()
			json.NewEncoder(w).Encode(map[string]any{"send": []any{frame}})
		case "close":
			e.mu.Lock()
			e.closes[ev.ConnectionID] = ev.CloseHook
			close(e.changed)
			e.changed = make(chan struct{})
			e.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(e.Close)
	return e
}

// Messages returns what the app received from connection id, byte for byte.
func (e *EchoPHP) Messages(id string) [][]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.messages[id]
}

// WaitClose waits for connection id's close webhook and returns it.
func (e *EchoPHP) WaitClose(t testing.TB, id string) CloseHook {
	t.Helper()
	deadline := time.After(ProbeWait)
	for {
		e.mu.Lock()
		h, ok := e.closes[id]
		changed := e.changed
		e.mu.Unlock()
		if ok {
			return h
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no close webhook for %s within %s", id, ProbeWait)
		}
	}
}
