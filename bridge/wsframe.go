package bridge

import "encoding/binary"

// Data frames to clients are encoded here and written straight to the socket, not through
// coder/websocket's Write. A broadcast is then encoded once and its bytes shared by every
// recipient, and a delivery is one copy into the socket rather than coder/websocket's
// per-message locking and buffering, which measured a sixth of a delivery's cost. coder/websocket
// still does the handshake, all reading, pings, pongs and the close handshake; its control frames
// are small and reach the socket in one write each, so they never interleave with ours (corkConn
// serialises writes). Compression is never negotiated (AcceptOptions leaves it disabled).

// maxFrameHeader is the longest server frame header: no mask, 64-bit length.
const maxFrameHeader = 10

// wireFrame returns f as one unmasked, final WebSocket frame (RFC 6455 §5.2).
func (f Frame) wireFrame() []byte {
	if f.wire != nil {
		return f.wire
	}
	n := len(f.Data)
	b := make([]byte, 0, maxFrameHeader+n)
	op := byte(0x1) // text
	if f.Binary {
		op = 0x2
	}
	b = append(b, 0x80|op) // FIN
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
	return append(b, f.Data...)
}
