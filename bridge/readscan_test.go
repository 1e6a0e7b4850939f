package bridge

import (
	"bytes"
	"net/url"
	"strconv"
	"testing"

	"github.com/wsbridge/wsbridge/bridge/testkit"
)

// TestFragmentFloodIsRateLimited: a message that never ends, made of one FIN=0 text frame and
// then 10,000 continuations (empty, or of one byte: far below the read limit either way), costs
// a token per frame and gets 1008 once MESSAGE_BURST is spent, as a message or ping flood does.
func TestFragmentFloodIsRateLimited(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	cfg := testConfig(t, php.URL)
	cfg.MessageRate, cfg.MessageBurst = 10, 20
	b := startBridge(t, cfg, nil, nil)
	u, _ := url.Parse(b.public.URL)
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"empty-continuations", nil},
		{"one-byte-continuations", []byte("x")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testkit.DialProbe(t, u.Host, cfg.WSPaths[0])
			flood := testkit.EncodeFrame(false, 0, testkit.OpText, []byte("a"), true, -1)
			for range 10_000 {
				flood = append(flood, testkit.EncodeFrame(false, 0, testkit.OpCont, tc.payload, true, -1)...)
			}
			p.SendRaw(flood)
			if r := p.ExpectClose(1008); r != "message rate exceeded" {
				t.Errorf("close reason %q, want %q", r, "message rate exceeded")
			}
			if h := php.WaitClose(t, p.ID); h.Code != 1008 || h.Initiator != "server" || h.Reason != "message rate exceeded" {
				t.Fatalf("close webhook %+v, want 1008 message rate exceeded by server", h)
			}
			if got := php.Messages(p.ID); len(got) != 0 {
				t.Fatalf("PHP received %d messages from a message that never ended", len(got))
			}
		})
	}
}

// TestRFC6455ConformanceRateLimited runs the conformance probes with a rate limit in place (no
// probe sends more than the burst): the frame scanner then follows every stream the probes
// send, and a scanner out of step would take payload bytes for frames and close a probe.
func TestRFC6455ConformanceRateLimited(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	cfg := testConfig(t, php.URL)
	cfg.MessageRate, cfg.MessageBurst = 1, 200
	b := startBridge(t, cfg, nil, nil)
	u, _ := url.Parse(b.public.URL)
	testkit.RunRFC6455(t, u.Host, cfg.WSPaths[0], php, int(cfg.MaxMessageSize))
}

// TestFragmentedMessageWithinBurst: a message in 5 fragments costs 5 tokens; within the burst it
// reaches PHP intact, and the connection goes on.
func TestFragmentedMessageWithinBurst(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	cfg := testConfig(t, php.URL)
	cfg.MessageRate, cfg.MessageBurst = 10, 20
	b := startBridge(t, cfg, nil, nil)
	u, _ := url.Parse(b.public.URL)
	p := testkit.DialProbe(t, u.Host, cfg.WSPaths[0])
	parts := []string{"he", "ll", "", "o wo", "rld"}
	for i, s := range parts {
		op := byte(testkit.OpCont)
		if i == 0 {
			op = testkit.OpText
		}
		p.Send(i == len(parts)-1, 0, op, []byte(s))
	}
	p.ExpectEcho(testkit.OpText, []byte("hello world"))
	p.SendText("after")
	p.ExpectEcho(testkit.OpText, []byte("after"))
	if got := php.Messages(p.ID); len(got) != 2 || string(got[0]) != "hello world" {
		t.Fatalf("PHP received %q, want [hello world after]", got)
	}
}

// TestFramesBehindTheHandshakeAreScanned: frames a client sends in the same segment as its
// handshake are read by net/http before the upgrade and handed to coder/websocket in the
// hijacked buffer; the frame scanner must see them too, or it starts in the middle of a frame.
// The first fragment's payload is zeros sent with a zero mask, so every two bytes of it look
// like an empty continuation to a scanner out of step: it would close the client with 1008.
func TestFramesBehindTheHandshakeAreScanned(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	cfg := testConfig(t, php.URL)
	cfg.MessageRate, cfg.MessageBurst = 10, 20
	b := startBridge(t, cfg, nil, nil)
	u, _ := url.Parse(b.public.URL)
	zeros := make([]byte, 8000) // longer than net/http's 4 KiB read buffer: the frame spans the hijack
	early := append([]byte{testkit.OpText, 0x80 | 126, byte(len(zeros) >> 8), byte(len(zeros)), 0, 0, 0, 0}, zeros...)
	early = append(early, testkit.EncodeFrame(true, 0, testkit.OpCont, []byte("!"), true, -1)...)
	p := testkit.DialProbeEarly(t, u.Host, cfg.WSPaths[0], early)
	want := append(bytes.Clone(zeros), '!')
	p.ExpectEcho(testkit.OpText, want)
	p.SendClose(1000, "")
	p.ExpectClose(1000)
}

// TestFragmentFloodBehindTheHandshake: continuations sent with the handshake, all read by
// net/http before the upgrade, are charged too (when reading begins).
func TestFragmentFloodBehindTheHandshake(t *testing.T) {
	php := testkit.NewEchoPHP(t)
	cfg := testConfig(t, php.URL)
	cfg.MessageRate, cfg.MessageBurst = 10, 20
	b := startBridge(t, cfg, nil, nil)
	u, _ := url.Parse(b.public.URL)
	early := testkit.EncodeFrame(false, 0, testkit.OpText, []byte("a"), true, -1)
	for range 500 { // 3,000 bytes: with the request, within net/http's 4 KiB buffer
		early = append(early, testkit.EncodeFrame(false, 0, testkit.OpCont, nil, true, -1)...)
	}
	p := testkit.DialProbeEarly(t, u.Host, cfg.WSPaths[0], early)
	if r := p.ExpectClose(1008); r != "message rate exceeded" {
		t.Errorf("close reason %q, want %q", r, "message rate exceeded")
	}
	if h := php.WaitClose(t, p.ID); h.Code != 1008 || h.Initiator != "server" {
		t.Fatalf("close webhook %+v, want 1008 by server", h)
	}
}

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
				var s frameScan
				got := 0
				for _, r := range reads {
					got += s.feed(r)
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
			var s frameScan
			s.feed(small)
		}
	})
	b.Run("inside-payload", func(b *testing.B) {
		buf := make([]byte, 4096)
		b.SetBytes(int64(len(buf)))
		s := frameScan{left: 1 << 62}
		for range b.N {
			s.feed(buf)
		}
	})
}
