package bridge

import (
	"bytes"
	"context"
	"encoding/base64"
	"net"
	"testing"

	"github.com/coder/websocket"
)

func TestWireFrameHeaders(t *testing.T) {
	for _, tc := range []struct {
		n      int
		binary bool
		header []byte
	}{
		{0, false, []byte{0x81, 0}},
		{125, false, []byte{0x81, 125}},
		{126, true, []byte{0x82, 126, 0, 126}},
		{65535, false, []byte{0x81, 126, 0xFF, 0xFF}},
		{65536, true, []byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		data := bytes.Repeat([]byte{'x'}, tc.n)
		got := Frame{Binary: tc.binary, Data: data}.wireFrame()
		if !bytes.Equal(got[:len(tc.header)], tc.header) || !bytes.Equal(got[len(tc.header):], data) {
			t.Errorf("%d bytes (binary %v): header % x, want % x", tc.n, tc.binary, got[:min(len(got), 10)], tc.header)
		}
	}
}

// TestFramesOfEverySizeArriveIntact sends frames around each length-encoding boundary through a
// real bridge to a coder/websocket client, which checks the framing.
func TestFramesOfEverySizeArriveIntact(t *testing.T) {
	t.Parallel()
	php := newFakePHP(t, acceptAll)
	b := newBridge(t, php, nil)
	c, _ := b.openConn(t, "")
	c.SetReadLimit(1 << 20)
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 300000} {
		for _, binary := range []bool{false, true} {
			data := bytes.Repeat([]byte{byte('a' + n%26)}, n)
			pub := map[string]any{"to": map[string]any{"all": true}}
			if binary {
				pub["data_base64"] = base64.StdEncoding.EncodeToString(data)
			} else {
				pub["data"] = string(data)
			}
			if code := b.api(t, "POST", "/v1/publish", pub, nil); code != 200 {
				t.Fatalf("publish %d bytes: %d", n, code)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			typ, got, err := c.Read(ctx)
			cancel()
			want := websocket.MessageText
			if binary {
				want = websocket.MessageBinary
			}
			if err != nil || typ != want || !bytes.Equal(got, data) {
				t.Fatalf("%d bytes (binary %v): read %v %d bytes, err %v", n, binary, typ, len(got), err)
			}
		}
	}
}

// recordConn is a net.Conn that records each Write.
type recordConn struct {
	net.Conn
	writes [][]byte
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func TestCorkConnGathersABurst(t *testing.T) {
	rec := &recordConn{}
	c := &corkConn{Conn: rec}
	c.Write([]byte("direct"))
	c.cork()
	c.Write([]byte("a"))
	c.Write([]byte("bc"))
	if len(rec.writes) != 1 {
		t.Fatalf("corked writes reached the socket: %q", rec.writes)
	}
	if err := c.uncork(); err != nil {
		t.Fatal(err)
	}
	if len(rec.writes) != 2 || string(rec.writes[1]) != "abc" {
		t.Fatalf("uncork wrote %q, want one write of abc", rec.writes)
	}
	c.Write([]byte("after"))
	if string(rec.writes[2]) != "after" {
		t.Errorf("an uncorked write was held: %q", rec.writes)
	}

	// A burst beyond corkMax goes out in order, in pieces, never more than corkMax at once.
	rec.writes = nil
	c.cork()
	big := bytes.Repeat([]byte{'z'}, corkMax/2+1)
	c.Write([]byte("1"))
	c.Write(big)
	c.Write(big)
	c.uncork()
	var all []byte
	for _, w := range rec.writes {
		if len(w) > corkMax {
			t.Errorf("one write of %d bytes, more than corkMax", len(w))
		}
		all = append(all, w...)
	}
	if want := append(append([]byte("1"), big...), big...); !bytes.Equal(all, want) {
		t.Errorf("bytes out of order or lost: %d written, want %d", len(all), len(want))
	}
}
