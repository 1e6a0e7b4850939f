package bridge

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"sync"
)

// Data frames to clients are encoded here and written straight to the socket, not through
// coder/websocket's Write. A broadcast is then encoded once and its bytes shared by every
// recipient, and a delivery is one copy into the socket rather than coder/websocket's
// per-message locking and buffering, which measured a sixth of a delivery's cost. coder/websocket
// still does the handshake, all reading, pings, pongs and the close handshake; its control frames
// are small and reach the socket in one write each, so they never interleave with ours (corkConn
// serialises writes).
//
// With COMPRESSION on, permessage-deflate (RFC 7692) is negotiated without context takeover in
// either direction: every message is compressed on its own, so one compressed publication can go
// to every recipient that negotiated it, as the uncompressed one goes to the others. Inbound,
// coder/websocket inflates, with the read limit applied to the inflated bytes.

// maxFrameHeader is the longest server frame header: no mask, 64-bit length.
const maxFrameHeader = 10

// wireFrame returns d as one unmasked, final WebSocket frame (RFC 6455 §5.2).
func (f Delivery) wireFrame() []byte {
	if f.ws != nil {
		if f.wsZ > 0 {
			return f.ws[:f.wsZ]
		}
		return f.ws
	}
	return appendFrame(make([]byte, 0, maxFrameHeader+len(f.Data)), 0x80|f.opcode(), f.Data)
}

func (f Delivery) opcode() byte {
	if f.Binary {
		return 0x2
	}
	return 0x1 // text
}

// appendFrame appends one unmasked frame with first byte b0 and payload p.
func appendFrame(b []byte, b0 byte, p []byte) []byte {
	n := len(p)
	b = append(b, b0)
	switch {
	case n <= 125:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, p...)
}

// deflaters keeps flate writers between messages: one costs about 1 MB to make, and without
// context takeover none is tied to a connection.
var deflaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

// deflateTail ends every sync-flushed deflate block; RFC 7692 §7.2.1 has the sender strip it.
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff}

// deflatedFrame returns f as one final frame compressed per RFC 7692 (RSV1 set), or as the plain
// frame when compressing would not make it smaller. A publication brings it made (withDeflated);
// a reply's frame, for one connection, is compressed here.
func (f Delivery) deflatedFrame() []byte {
	switch {
	case f.wsZ > 0:
		return f.ws[f.wsZ:]
	case f.wsZ < 0:
		return f.wireFrame()
	}
	z := deflate(f.Data)
	if z == nil {
		return f.wireFrame()
	}
	return appendFrame(make([]byte, 0, maxFrameHeader+len(z)), 0xC0|f.opcode(), z)
}

// withDeflated returns f with both encodings made, in one buffer: the plain frame, then the
// compressed one (or the plain frame alone, wsZ -1, when compressing does not make it smaller).
func (f Delivery) withDeflated() Delivery {
	z := deflate(f.Data)
	if z == nil {
		f.ws, f.wsZ = f.wireFrame(), -1
		return f
	}
	b := appendFrame(make([]byte, 0, 2*maxFrameHeader+len(f.Data)+len(z)), 0x80|f.opcode(), f.Data)
	f.wsZ = int32(len(b))
	f.ws = appendFrame(b, 0xC0|f.opcode(), z)
	return f
}

// deflate compresses p as one message without context takeover, or returns nil when that does
// not make it smaller (or p is too big for Delivery.wsZ). BestSpeed: a broadcast is compressed once,
// but on the publisher's goroutine, and JSON compresses well at any level.
func deflate(p []byte) []byte {
	if len(p) > 1<<30 {
		return nil
	}
	var z bytes.Buffer
	z.Grow(len(p)/2 + 16)
	w := deflaters.Get().(*flate.Writer)
	w.Reset(&z)
	w.Write(p) // a bytes.Buffer does not fail
	w.Flush()
	w.Reset(nil) // do not keep z reachable from the pool
	deflaters.Put(w)
	out := bytes.TrimSuffix(z.Bytes(), deflateTail)
	if len(out) >= len(p) {
		return nil
	}
	return out
}
