package wsraw

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
	"unsafe"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
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

func TestConnGathersABurst(t *testing.T) {
	rec := &recordConn{}
	c := &Conn{Conn: rec}
	c.Write([]byte("direct"))
	c.Cork()
	c.Write([]byte("a"))
	c.Write([]byte("bc"))
	if len(rec.writes) != 1 {
		t.Fatalf("corked writes reached the socket: %q", rec.writes)
	}
	if err := c.Uncork(); err != nil {
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
	c.Cork()
	big := bytes.Repeat([]byte{'z'}, corkMax/2+1)
	c.Write([]byte("1"))
	c.Write(big)
	c.Write(big)
	c.Uncork()
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

// TryWrite writes what the socket takes without waiting, keeps the rest for the writer's flush,
// and declines (leaving the bytes to the queue) while the connection is busy or has bytes
// pending. Nothing is lost or reordered across the three.
func TestConnTryWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := New(server)
	defer c.Close()

	var want []byte
	chunk := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 64<<10) }
	taken, pending, err := c.TryWrite([]byte("first"))
	if !taken || pending || err != nil {
		t.Fatalf("a small write to an idle socket: taken %v pending %v err %v", taken, pending, err)
	}
	want = append(want, "first"...)

	c.mu.Lock()
	if taken, _, _ := c.TryWrite([]byte("x")); taken {
		t.Error("TryWrite took a write while another held the connection")
	}
	c.mu.Unlock()
	c.Cork()
	if taken, _, _ := c.TryWrite([]byte("x")); taken {
		t.Error("TryWrite took a write while corked")
	}
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}

	// The client does not read: the socket buffers fill and a write is taken only in part.
	i := 0
	for ; i < 4096 && !pending; i++ {
		p := chunk(i)
		if taken, pending, err = c.TryWrite(p); !taken || err != nil {
			t.Fatalf("chunk %d: taken %v err %v", i, taken, err)
		}
		want = append(want, p...)
	}
	if !pending {
		t.Fatalf("%d chunks of 64 KiB never filled the socket", i)
	}
	if !c.HasPending() {
		t.Fatal("HasPending is false after a partial write")
	}
	if taken, _, _ := c.TryWrite([]byte("x")); taken {
		t.Fatal("TryWrite took a write while bytes were pending: they would be overtaken")
	}

	// The writer's flush blocks until the client reads; then everything arrives, in order.
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(client, int64(len(want))))
		got <- b
	}()
	if err := c.Uncork(); err != nil {
		t.Fatal(err)
	}
	if c.HasPending() {
		t.Error("bytes pending after the flush")
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Errorf("client read %d bytes, want %d in order", len(b), len(want))
	}
}

// TestConnSize: every idle connection holds a Conn, so it must stay in its 144-byte size
// class; an interface for the owner (16 bytes) fits only because TryWrite's progress is kept
// in the slice rather than a counter beside it. The read-ahead's two words took it from 128
// to 144 bytes, for the 4 KiB read buffer an idle connection no longer holds.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(Conn{}); n > 144 {
		t.Errorf("Conn is %d bytes, past the 144-byte size class", n)
	}
}

// owner is a connection's settings and scanner for the tests.
type owner struct {
	scanned []byte
}

func (o *owner) MaxMessageSize() int64      { return 1000 }
func (o *owner) PingTimeout() time.Duration { return time.Minute }
func (o *owner) Scanned(b []byte)           { o.scanned = append(o.scanned, b...) }

// A Conn with an owner shows it every byte read, and mends the Close frames coder/websocket
// would get wrong: a 1009 names the owner's limit, a reason that is not UTF-8 becomes 1007
// (RFC 6455 §8.1), and after any Close nothing is written (§5.5.1).
func TestConnOwner(t *testing.T) {
	for _, tc := range []struct {
		name       string
		frame      []byte
		wantCode   int
		wantReason string
	}{
		{"1009 states the limit", CloseFrame(1009, "message too big"), 1009, "read limited at 1000 bytes"},
		{"reason not UTF-8", CloseFrame(1000, "\xff"), 1007, "invalid UTF-8 in close reason"},
		{"normal close kept", CloseFrame(1000, "bye"), 1000, "bye"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, client := net.Pipe()
			defer client.Close()
			o := &owner{}
			c := New(server)
			c.SetOwner(o)
			defer c.Close()

			go client.Write([]byte("abc"))
			buf := make([]byte, 3)
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatal(err)
			}
			if string(o.scanned) != "abc" {
				t.Errorf("owner scanned %q, want abc", o.scanned)
			}

			got := make(chan []byte, 1)
			go func() {
				b := make([]byte, 128)
				n, _ := client.Read(b)
				got <- b[:n]
			}()
			if _, err := c.Write(tc.frame); err != nil {
				t.Fatal(err)
			}
			want := CloseFrame(tc.wantCode, tc.wantReason)
			if b := <-got; !bytes.Equal(b, want) {
				t.Errorf("sent % x, want % x", b, want)
			}
			if sent, code, reason := c.SentClose(); !sent || code != tc.wantCode || reason != tc.wantReason {
				t.Errorf("SentClose %v %d %q, want %d %q", sent, code, reason, tc.wantCode, tc.wantReason)
			}
			if _, err := c.WriteData([]byte{0x81, 0}); err != ErrCloseSent {
				t.Errorf("a data frame after Close: err %v, want ErrCloseSent", err)
			}
			if _, err := c.Write([]byte{0x89, 0}); err == nil {
				t.Error("a ping after Close was written")
			}
			if taken, _, _ := c.TryWrite([]byte{0x81, 0}); taken {
				t.Error("TryWrite took a data frame after Close")
			}
		})
	}
}
