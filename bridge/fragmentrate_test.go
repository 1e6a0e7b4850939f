package bridge

import (
	"bytes"
	"net/url"
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
