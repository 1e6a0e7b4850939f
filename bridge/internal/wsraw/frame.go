package wsraw

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"sync"
)

// Data frames to clients are encoded here and written straight to the socket (Conn.WriteData,
// Conn.TryWrite), not through coder/websocket's Write. A broadcast is then encoded once and its
// bytes shared by every recipient, and a delivery is one copy into the socket rather than
// coder/websocket's per-message locking and buffering, which measured a sixth of a delivery's
// cost. coder/websocket still does the handshake, all reading, pings, pongs and the close
// handshake; its control frames are small and reach the socket in one write each, so they never
// interleave with ours (Conn serialises writes).
//
// With permessage-deflate (RFC 7692) negotiated without context takeover in either direction,
// every message is compressed on its own (Deflate), so one compressed publication can go to every
// recipient that negotiated it. Inbound, coder/websocket inflates.

// MaxFrameHeader is the longest server frame header: no mask, 64-bit length.
const MaxFrameHeader = 10

// AppendFrame appends one unmasked frame (RFC 6455 §5.2) with first byte b0 (FIN, RSV1 for a
// compressed message, opcode) and payload p.
func AppendFrame(b []byte, b0 byte, p []byte) []byte {
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

// Deflate compresses p as one message without context takeover, or returns nil when that does
// not make it smaller (or p is over 1 GiB, so that an offset into both encodings fits an int32).
// BestSpeed: a broadcast is compressed once, but on the publisher's goroutine, and JSON
// compresses well at any level.
func Deflate(p []byte) []byte {
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
