package bridge

import "github.com/wsbridge/wsbridge/bridge/internal/wsraw"

// A Delivery's WebSocket frames, which the bridge encodes itself and writes straight to the
// socket (wsraw; writer.go). With COMPRESSION on, permessage-deflate is negotiated without
// context takeover (accept.go), so a publication is compressed once for every recipient that
// negotiated it, as its plain frame goes to the others.

// wireFrame returns d as one unmasked, final WebSocket frame (RFC 6455 §5.2).
func (f Delivery) wireFrame() []byte {
	if f.ws != nil {
		if f.wsZ > 0 {
			return f.ws[:f.wsZ]
		}
		return f.ws
	}
	return wsraw.AppendFrame(make([]byte, 0, wsraw.MaxFrameHeader+len(f.Data)), 0x80|f.opcode(), f.Data)
}

func (f Delivery) opcode() byte {
	if f.Binary {
		return 0x2
	}
	return 0x1 // text
}

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
	z := wsraw.Deflate(f.Data)
	if z == nil {
		return f.wireFrame()
	}
	return wsraw.AppendFrame(make([]byte, 0, wsraw.MaxFrameHeader+len(z)), 0xC0|f.opcode(), z)
}

// withDeflated returns f with both encodings made, in one buffer: the plain frame, then the
// compressed one (or the plain frame alone, wsZ -1, when compressing does not make it smaller).
func (f Delivery) withDeflated() Delivery {
	z := wsraw.Deflate(f.Data)
	if z == nil {
		f.ws, f.wsZ = f.wireFrame(), -1
		return f
	}
	b := wsraw.AppendFrame(make([]byte, 0, 2*wsraw.MaxFrameHeader+len(f.Data)+len(z)), 0x80|f.opcode(), f.Data)
	f.wsZ = int32(len(b))
	f.ws = wsraw.AppendFrame(b, 0xC0|f.opcode(), z)
	return f
}
