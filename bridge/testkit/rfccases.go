package testkit

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"strings"
	"testing"
)

// RFCCase is one conformance probe. Run drives a fresh connection and checks what the server
// sends; Hook, when set, is what the app's close webhook must then say (Reason only when set).
type RFCCase struct {
	Name string
	Run  func(p *Probe)
	Hook *CloseHook
}

func serverHook(code int) *CloseHook { return &CloseHook{Code: code, Initiator: "server"} }
func clientHook(code int) *CloseHook { return &CloseHook{Code: code, Initiator: "client"} }

// echoCase sends one message of n bytes and expects it back; the connection then closes
// normally.
func echoCase(op byte, n int) func(p *Probe) {
	return func(p *Probe) {
		data := bytes.Repeat([]byte("*"), n)
		p.Send(true, 0, op, data)
		p.ExpectEcho(op, data)
		p.SendClose(1000, "")
		p.ExpectClose(1000)
	}
}

// failCase sends raw frames and expects the server to fail the connection with code.
func failCase(code int, frames ...[]byte) func(p *Probe) {
	return func(p *Probe) {
		for _, f := range frames {
			p.SendRaw(f)
		}
		p.ExpectClose(code)
	}
}

func frame(fin bool, rsv, op byte, payload string) []byte {
	return EncodeFrame(fin, rsv, op, []byte(payload), true, -1)
}

func closePayload(code int, reason string) string {
	return string(binary.BigEndian.AppendUint16(nil, uint16(code))) + reason
}

// RFC6455Cases returns the probes for a server whose largest message is limit bytes.
func RFC6455Cases(limit int) []RFCCase {
	var cs []RFCCase
	add := func(name string, run func(p *Probe), hook *CloseHook) {
		cs = append(cs, RFCCase{Name: name, Run: run, Hook: hook})
	}
	// 1: framing at every length boundary (7-bit, 16-bit and 64-bit lengths), both types.
	for _, n := range []int{0, 1, 125, 126, 127, 128, 65535, 65536} {
		if n > limit {
			continue
		}
		add("1/text/"+itoa(n), echoCase(OpText, n), clientHook(1000))
		add("1/binary/"+itoa(n), echoCase(OpBinary, n), clientHook(1000))
	}
	// 2: pings and pongs.
	add("2/ping-empty", func(p *Probe) { p.Send(true, 0, OpPing, nil); p.ExpectPong(nil) }, nil)
	add("2/ping-125", func(p *Probe) {
		b := bytes.Repeat([]byte{0xfe}, 125)
		p.Send(true, 0, OpPing, b)
		p.ExpectPong(b)
	}, nil)
	add("2/ping-126-fails", failCase(1002, frame(true, 0, OpPing, strings.Repeat("x", 126))), serverHook(1002))
	add("2/unsolicited-pong-ignored", func(p *Probe) {
		p.Send(true, 0, OpPong, []byte("unasked"))
		p.SendText("after")
		p.ExpectEcho(OpText, []byte("after"))
	}, nil)
	add("2/ten-pings", func(p *Probe) {
		for i := range 10 {
			p.Send(true, 0, OpPing, []byte(itoa(i)))
		}
		for i := range 10 {
			p.ExpectPong([]byte(itoa(i)))
		}
	}, nil)
	add("2/fragmented-ping-fails", failCase(1002, frame(false, 0, OpPing, "a"), frame(true, 0, OpCont, "b")), serverHook(1002))
	// 3: reserved bits.
	for _, rsv := range []byte{0x40, 0x20, 0x10, 0x70} {
		add("3/rsv-"+itoa(int(rsv>>4))+"-text", failCase(1002, frame(true, rsv, OpText, "x")), serverHook(1002))
	}
	add("3/rsv-ping", failCase(1002, frame(true, 0x20, OpPing, "x")), serverHook(1002))
	add("3/rsv-after-good-message", func(p *Probe) {
		p.SendText("good")
		p.SendRaw(frame(true, 0x10, OpText, "bad"))
		p.ExpectEcho(OpText, []byte("good"))
		p.ExpectClose(1002)
	}, serverHook(1002))
	// 4: reserved opcodes.
	for _, op := range []byte{3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF} {
		add("4/opcode-"+itoa(int(op)), failCase(1002, frame(true, 0, op, "x")), serverHook(1002))
	}
	// 5: fragmentation.
	add("5/text-in-two", func(p *Probe) {
		p.SendRaw(frame(false, 0, OpText, "frag"))
		p.SendRaw(frame(true, 0, OpCont, "ment"))
		p.ExpectEcho(OpText, []byte("fragment"))
	}, nil)
	add("5/binary-many-with-empty", func(p *Probe) {
		p.SendRaw(frame(false, 0, OpBinary, ""))
		for range 5 {
			p.SendRaw(frame(false, 0, OpCont, "ab"))
			p.SendRaw(frame(false, 0, OpCont, ""))
		}
		p.SendRaw(frame(true, 0, OpCont, ""))
		p.ExpectEcho(OpBinary, []byte("ababababab"))
	}, nil)
	add("5/ping-between-fragments", func(p *Probe) {
		p.SendRaw(frame(false, 0, OpText, "one "))
		p.SendRaw(frame(true, 0, OpPing, "mid"))
		p.SendRaw(frame(true, 0, OpCont, "two"))
		p.ExpectPong([]byte("mid"))
		p.ExpectEcho(OpText, []byte("one two"))
	}, nil)
	add("5/fragments-of-every-length-encoding", func(p *Probe) {
		// 7- and 16-bit lengths, empty fragments and a ping between them, in one write: a
		// server that follows the frames itself (the bridge's rate limit does) stays in step.
		var b, want []byte
		for i, n := range []int{1, 0, 125, 126, 0, 1000, 3} {
			op, part := byte(OpCont), bytes.Repeat([]byte{byte('a' + i)}, n)
			if i == 0 {
				op = OpText
			}
			b = append(b, EncodeFrame(i == 6, 0, op, part, true, -1)...)
			if i == 3 {
				b = append(b, frame(true, 0, OpPing, "mid")...)
			}
			want = append(want, part...)
		}
		p.SendRaw(b)
		p.ExpectPong([]byte("mid"))
		p.ExpectEcho(OpText, want)
	}, nil)
	add("5/hundred-empty-continuations", func(p *Probe) {
		b := frame(false, 0, OpText, "a")
		for range 100 {
			b = append(b, frame(false, 0, OpCont, "")...)
		}
		p.SendRaw(append(b, frame(true, 0, OpCont, "z")...))
		p.ExpectEcho(OpText, []byte("az"))
	}, nil)
	add("5/continuation-without-start", failCase(1002, frame(true, 0, OpCont, "x")), serverHook(1002))
	add("5/continuation-without-start-not-final", failCase(1002, frame(false, 0, OpCont, "x")), serverHook(1002))
	add("5/text-inside-fragmented-text", failCase(1002, frame(false, 0, OpText, "a"), frame(true, 0, OpText, "b")), serverHook(1002))
	// 6: UTF-8 (§8.1): text reaches the app byte for byte; invalid text fails with 1007.
	for _, s := range []string{"κόσμε", "\u00a0\u0800\uffff\U00010000\U0010ffff", "\xef\xbb\xbfBOM", "ab\u2028cd<>&"} {
		s := s
		add("6/valid/"+itoa(len(s)), func(p *Probe) {
			p.SendText(s)
			p.ExpectEcho(OpText, []byte(s))
		}, nil)
	}
	for name, s := range map[string]string{
		"bad-bytes": "ab\xff\xfecd", "overlong": "\xc0\xaf", "surrogate": "\xed\xa0\x80", "beyond-10ffff": "\xf4\x90\x80\x80",
		"truncated": "κόσμ\xce", "lone-continuation": "\x80",
	} {
		add("6/invalid/"+name, failCase(1007, frame(true, 0, OpText, s)), serverHook(1007))
	}
	add("6/valid-split-inside-a-character", func(p *Probe) {
		s := "κόσμε"
		p.SendRaw(frame(false, 0, OpText, s[:1]))
		p.SendRaw(frame(false, 0, OpCont, s[1:4]))
		p.SendRaw(frame(true, 0, OpCont, s[4:]))
		p.ExpectEcho(OpText, []byte(s))
	}, nil)
	add("6/invalid-across-fragments", failCase(1007, frame(false, 0, OpText, "ok\xce"), frame(true, 0, OpCont, "x")), serverHook(1007))
	add("6/binary-is-not-checked", func(p *Probe) {
		p.Send(true, 0, OpBinary, []byte("\xff\xfe"))
		p.ExpectEcho(OpBinary, []byte("\xff\xfe"))
	}, nil)
	// 7: closing.
	add("7/close-1000", func(p *Probe) { p.SendClose(1000, "bye"); p.ExpectClose(1000) }, &CloseHook{Code: 1000, Reason: "bye", Initiator: "client"})
	add("7/close-empty", func(p *Probe) { p.SendClose(0, ""); p.ExpectClose(0) }, clientHook(1005))
	add("7/close-payload-1-byte", failCase(1002, frame(true, 0, OpClose, "\x03")), serverHook(1002))
	add("7/close-reason-123", func(p *Probe) {
		r := strings.Repeat("r", 123)
		p.SendClose(1000, r)
		p.ExpectClose(1000)
	}, clientHook(1000))
	add("7/close-reason-not-utf8", failCase(1007, frame(true, 0, OpClose, closePayload(1000, "a\xff\xfe"))), serverHook(1007))
	// The longest Close there is (125 bytes of payload), its reason not UTF-8: mending it into
	// 1007 needs coder/websocket's echo to reach the socket in one write, so this is the case
	// that fails if its write buffer is ever smaller than a control frame.
	add("7/close-reason-123-not-utf8", failCase(1007, frame(true, 0, OpClose, closePayload(1000, strings.Repeat("r", 121)+"\xff\xfe"))), serverHook(1007))
	add("7/data-after-close-ignored", func(p *Probe) {
		p.SendClose(1000, "")
		p.SendText("late")
		p.ExpectClose(1000)
	}, clientHook(1000))
	add("7/ping-after-close-ignored", func(p *Probe) {
		p.SendClose(1000, "")
		p.Send(true, 0, OpPing, []byte("late"))
		p.ExpectClose(1000)
	}, clientHook(1000))
	for _, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		code := code
		add("7/valid-code-"+itoa(code), func(p *Probe) { p.SendClose(code, ""); p.ExpectClose(code) }, clientHook(code))
	}
	for _, code := range []int{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		add("7/invalid-code-"+itoa(code), failCase(1002, frame(true, 0, OpClose, closePayload(code, ""))), serverHook(1002))
	}
	// 9 (limits only) and 10 (misc: unmasked frames).
	add("9/exactly-the-limit", echoCase(OpBinary, limit), clientHook(1000))
	add("9/one-byte-over", func(p *Probe) {
		p.Send(true, 0, OpBinary, make([]byte, limit+1))
		if r := p.ExpectClose(1009); r != "read limited at "+itoa(limit)+" bytes" {
			p.t.Errorf("1009 reason %q, want the real limit %d", r, limit)
		}
	}, &CloseHook{Code: 1009, Reason: "read limited at " + itoa(limit) + " bytes", Initiator: "server"})
	add("9/fragments-over-the-limit", func(p *Probe) {
		half := make([]byte, limit/2+1)
		p.Send(false, 0, OpText, half)
		p.Send(true, 0, OpCont, half)
		p.ExpectClose(1009)
	}, serverHook(1009))
	add("10/unmasked-frame", failCase(1002, EncodeFrame(true, 0, OpText, []byte("x"), false, -1)), serverHook(1002))
	return cs
}

// RFC7692Cases returns the permessage-deflate probes (Autobahn 12 and 13 style) for a server
// that compresses messages of threshold bytes or more and whose largest message is limit bytes.
// They run on connections that offered DeflateOffer.
func RFC7692Cases(limit, threshold int) []RFCCase {
	var cs []RFCCase
	add := func(name string, run func(p *Probe), hook *CloseHook) {
		cs = append(cs, RFCCase{Name: name, Run: run, Hook: hook})
	}
	// JSON-like text compresses; the echo must come back compressed once it reaches the
	// threshold, and intact either way.
	payload := func(n int) []byte {
		b := []byte(strings.Repeat(`{"event":"chat","room":"lobby","text":"hello there"},`, n/52+1))
		return b[:n]
	}
	for _, n := range []int{0, 16, 125, threshold - 1, threshold, 4096, 65535, limit} {
		if n < 0 || n > limit {
			continue
		}
		for _, op := range []byte{OpText, OpBinary} {
			name := "12/text/"
			if op == OpBinary {
				name = "12/binary/"
			}
			add(name+itoa(n), func(p *Probe) {
				data := payload(n)
				p.SendDeflated(op, data, 1)
				p.ExpectEcho(op, data)
				if want := n >= threshold; p.Compressed != want {
					p.t.Errorf("echo of %d bytes compressed %v, want %v (threshold %d)", n, p.Compressed, want, threshold)
				}
			}, nil)
		}
	}
	add("12/uncompressed-still-fine", func(p *Probe) {
		data := payload(2000)
		p.Send(true, 0, OpText, data)
		p.ExpectEcho(OpText, data)
	}, nil)
	add("13/fragmented-compressed", func(p *Probe) {
		data := payload(20000)
		p.SendDeflated(OpText, data, 5)
		p.ExpectEcho(OpText, data)
	}, nil)
	add("13/compressed-then-plain-then-compressed", func(p *Probe) {
		for i, c := range []bool{true, false, true} {
			data := payload(1000 + i)
			if c {
				p.SendDeflated(OpBinary, data, 2)
			} else {
				p.Send(true, 0, OpBinary, data)
			}
			p.ExpectEcho(OpBinary, data)
		}
	}, nil)
	add("13/invalid-utf8-compressed", func(p *Probe) { p.SendDeflated(OpText, []byte("ab\xff\xfecd"), 1); p.ExpectClose(1007) }, serverHook(1007))
	add("13/rsv1-on-continuation", failCase(1002, frame(false, 0, OpText, "a"), frame(true, 0x40, OpCont, "b")), serverHook(1002))
	add("13/rsv1-on-ping", failCase(1002, frame(true, 0x40, OpPing, "a")), serverHook(1002))
	add("13/rsv1-on-close", failCase(1002, frame(true, 0x40, OpClose, closePayload(1000, ""))), serverHook(1002))
	add("13/compression-bomb", func(p *Probe) {
		p.SendDeflated(OpBinary, make([]byte, 64*limit), 1) // a few hundred bytes on the wire
		p.ExpectClose(1009)
	}, serverHook(1009))
	return cs
}

// RunRFC7692 runs RFC7692Cases on connections that offer permessage-deflate, checking first
// that the server accepted it without context takeover.
func RunRFC7692(t *testing.T, addr, path string, php *EchoPHP, limit, threshold int) {
	runCases(t, addr, path, php, RFC7692Cases(limit, threshold), DeflateOffer)
}

// RunRFC6455 runs every case against the server at addr (host:port) serving WebSockets on
// path, with php as its app, each on a fresh connection.
func RunRFC6455(t *testing.T, addr, path string, php *EchoPHP, limit int) {
	runCases(t, addr, path, php, RFC6455Cases(limit))
}

func runCases(t *testing.T, addr, path string, php *EchoPHP, cases []RFCCase, headers ...string) {
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			p := DialProbe(t, addr, path, headers...)
			if len(headers) > 0 && !p.AllowRSV1 {
				t.Fatal("permessage-deflate was offered and not accepted")
			}
			c.Run(p)
			want := c.Hook
			if want == nil {
				// The case left the connection open: end it normally, which must work too.
				p.SendClose(1000, "")
				p.ExpectClose(1000)
				want = clientHook(1000)
			}
			got := php.WaitClose(t, p.ID)
			if got.Code != want.Code || got.Initiator != want.Initiator || (want.Reason != "" && got.Reason != want.Reason) {
				t.Errorf("close webhook %+v, want %+v", got, *want)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
