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

// wireFrame returns f as one unmasked, final WebSocket frame (RFC 6455 §5.2).
func (f Frame) wireFrame() []byte {
	if f.wire != nil {
		return f.wire
	}
	op := byte(0x1) // text
	if f.Binary {
		op = 0x2
	}
	return appendFrame(make([]byte, 0, maxFrameHeader+len(f.Data)), 0x80|op, f.Data)
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
// frame when compressing would not make it smaller. BestSpeed: a broadcast is compressed once,
// but on the publisher's goroutine, and JSON compresses well at any level.
func (f Frame) deflatedFrame() []byte {
	if f.deflated != nil {
		return f.deflated
	}
	var z bytes.Buffer
	z.Grow(len(f.Data)/2 + 16)
	w := deflaters.Get().(*flate.Writer)
	w.Reset(&z)
	w.Write(f.Data) // a bytes.Buffer does not fail
	w.Flush()
	w.Reset(nil) // do not keep z reachable from the pool
	deflaters.Put(w)
	p := bytes.TrimSuffix(z.Bytes(), deflateTail)
	if len(p) >= len(f.Data) {
		return f.wireFrame()
	}
	op := byte(0x1)
	if f.Binary {
		op = 0x2
	}
	return appendFrame(make([]byte, 0, maxFrameHeader+len(p)), 0x80|0x40|op, p)
}
