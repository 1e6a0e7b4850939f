package wsraw

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// TestFrameScan: the scanner counts the continuations in a stream of frames, whatever the
// length encoding and masking, and however the reads split the stream (here at every byte and
// every pair of points), and ends each case at a frame boundary.
func TestFrameScan(t *testing.T) {
	enc := func(fin bool, op byte, n int, mask bool) []byte {
		return testkit.EncodeFrame(fin, 0, op, bytes.Repeat([]byte{0}, n), mask, -1)
	}
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	cases := []struct {
		name   string
		stream []byte
		conts  int
	}{
		{"unfragmented text", enc(true, testkit.OpText, 5, true), 0},
		{"empty binary", enc(true, testkit.OpBinary, 0, true), 0},
		{"empty continuations", cat(enc(false, testkit.OpText, 1, true), enc(false, testkit.OpCont, 0, true), enc(true, testkit.OpCont, 0, true)), 2},
		{"7-bit length 125", cat(enc(false, testkit.OpText, 125, true), enc(true, testkit.OpCont, 125, true)), 1},
		{"16-bit length 126", cat(enc(false, testkit.OpBinary, 126, true), enc(true, testkit.OpCont, 126, true)), 1},
		{"16-bit length 65535", cat(enc(false, testkit.OpBinary, 65535, true), enc(true, testkit.OpCont, 1, true)), 1},
		{"64-bit length 65536", cat(enc(false, testkit.OpBinary, 65536, true), enc(true, testkit.OpCont, 65536, true)), 1},
		{"control frames between fragments", cat(enc(false, testkit.OpText, 3, true), enc(true, testkit.OpPing, 4, true), enc(false, testkit.OpCont, 0, true), enc(true, testkit.OpPong, 0, true), enc(true, testkit.OpCont, 2, true)), 2},
		{"unmasked (a protocol error, still followed)", cat(enc(false, testkit.OpText, 3, false), enc(true, testkit.OpCont, 300, false)), 1},
		{"payload of zero bytes is not mistaken for frames", cat(enc(false, testkit.OpText, 4000, false), enc(true, testkit.OpCont, 0, true)), 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check := func(how string, reads ...[]byte) {
				t.Helper()
				var s FrameScan
				got := 0
				for _, r := range reads {
					got += s.Feed(r)
				}
				if got != tc.conts || s.pos != 0 || s.left != 0 {
					t.Fatalf("%s: %d continuations, pos %d, left %d; want %d at a frame boundary", how, got, s.pos, s.left, tc.conts)
				}
			}
			check("one read", tc.stream)
			b := tc.stream
			var bytewise [][]byte
			for i := range b {
				bytewise = append(bytewise, b[i:i+1])
			}
			check("byte by byte", bytewise...)
			step := max(1, len(b)/200) // every split for short streams, a sample for long ones
			for i := 0; i <= len(b); i += step {
				for j := i; j <= len(b); j += step {
					check("split at "+strconv.Itoa(i)+","+strconv.Itoa(j), b[:i], b[i:j], b[j:])
				}
			}
		})
	}
}

// BenchmarkFrameScan is the scanner's cost per read: a 4 KiB read of small masked text
// messages (about 60 frames), and one inside a large message's payload.
func BenchmarkFrameScan(b *testing.B) {
	var small []byte
	for len(small) < 4096-70 {
		small = append(small, testkit.EncodeFrame(true, 0, testkit.OpText, []byte(`{"type":"chat","text":"hello, world"}`), true, -1)...)
	}
	b.Run("small-messages", func(b *testing.B) {
		b.SetBytes(int64(len(small)))
		for range b.N {
			var s FrameScan
			s.Feed(small)
		}
	})
	b.Run("inside-payload", func(b *testing.B) {
		buf := make([]byte, 4096)
		b.SetBytes(int64(len(buf)))
		s := FrameScan{left: 1 << 62}
		for range b.N {
			s.Feed(buf)
		}
	})
}
