package wsraw

import "encoding/binary"

// FrameScan follows the frame headers in the bytes coder/websocket reads from a client, so
// that every continuation frame can be charged to MESSAGE_RATE. coder/websocket has no per-frame
// hook: it hands the application whole messages (and pings, through OnPingReceived), so a
// message that never ends — a FIN=0 frame and then empty continuations, six bytes each on the
// wire — never reached the rate limit nor the read limit, and each frame cost a parse for free.
//
// It sees the bytes as they are read (Conn.Read calls Owner.Scanned, and at the upgrade the
// caller scans what net/http had buffered, which coder/websocket reads from Hijack's
// bufio.Reader before it reads the Conn), before coder/websocket parses them. It keeps no bytes: a
// header is followed one byte at a time, counting how far into it the scan is and folding the
// extended length into left (or, when the whole header is in one read, at once); a payload,
// however long, is skipped by subtracting its length.
// Nothing is copied or unmasked, and a read that lies wholly inside a payload costs a
// comparison.
//
// It only has to stay in step with the stream as long as coder/websocket does: on anything
// malformed (an unmasked frame, a 64-bit length with its top bit set) coder/websocket fails the
// connection, and what the scan makes of the bytes after that no longer matters.
type FrameScan struct {
	left   uint64 // payload bytes to skip; while in a header, the extended length read so far
	pos    uint8  // header bytes seen of the current frame; 0: at a frame's start or in its payload
	extEnd uint8  // where the header's length field ends: 2, 4 or 10 (valid once pos > 1)
	hlen   uint8  // the header's length: extEnd, plus 4 for the masking key
	// Owed is what the bytes buffered before the upgrade held, charged when reading begins
	// (the bridge's read loop); at most net/http's 4 KiB buffer, so a few thousand frames.
	Owed uint32
}

// Feed scans the next bytes of the stream and returns how many continuation frames (opcode 0)
// began in them. A message of n frames then costs n tokens: its continuations here, the whole
// message once it is complete (the bridge's read loop), as an unfragmented message always has.
func (s *FrameScan) Feed(b []byte) (conts int) {
	for len(b) > 0 {
		if s.pos == 0 {
			if s.left > 0 {
				if uint64(len(b)) <= s.left {
					s.left -= uint64(len(b))
					return conts
				}
				b = b[s.left:]
				s.left = 0
			}
			if len(b) >= 2 {
				// The usual case: the whole header is in this read, and is taken at once.
				ext := 0
				switch b[1] & 0x7F {
				case 126:
					ext = 2
				case 127:
					ext = 8
				}
				h := 2 + ext
				if b[1]&0x80 != 0 {
					h += 4
				}
				if len(b) >= h {
					if b[0]&0x0F == 0 {
						conts++
					}
					switch ext {
					case 0:
						s.left = uint64(b[1] & 0x7F)
					case 2:
						s.left = uint64(binary.BigEndian.Uint16(b[2:]))
					default:
						s.left = binary.BigEndian.Uint64(b[2:])
					}
					b = b[h:]
					continue
				}
			}
			// A header split across reads is followed a byte at a time. Its first byte:
			// FIN, RSV1-3, opcode.
			if b[0]&0x0F == 0 {
				conts++
			}
			s.pos = 1
			b = b[1:]
			continue
		}
		x := b[0]
		b = b[1:]
		switch {
		case s.pos == 1: // MASK and the 7-bit length: 126 and 127 announce 2 and 8 more bytes
			s.left, s.extEnd = 0, 2
			switch n := x & 0x7F; n {
			case 126:
				s.extEnd = 4
			case 127:
				s.extEnd = 10
			default:
				s.left = uint64(n)
			}
			s.hlen = s.extEnd
			if x&0x80 != 0 {
				s.hlen += 4
			}
		case s.pos < s.extEnd:
			s.left = s.left<<8 | uint64(x)
		}
		// Otherwise a byte of the masking key, which the scan has no use for.
		s.pos++
		if s.pos == s.hlen {
			s.pos = 0 // the payload (left bytes) follows
		}
	}
	return conts
}
