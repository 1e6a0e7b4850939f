//go:build unix

package wsraw

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair is a connected loopback TCP pair: server wrapped in a Conn, client raw.
func tcpPair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		client.Close()
		t.Fatal(err)
	}
	c := New(server)
	t.Cleanup(func() { c.Close(); client.Close() })
	return c, client
}

// TestReadAheadHoldsNoBufferOnceRead: small reads (coder/websocket's 16-byte bufio.Reader)
// are served from one socket read; the pooled buffer is held while bytes wait and let go the
// moment they are all taken, so an idle connection holds none. Every byte reaches the owner's
// scanner once, in order.
func TestReadAheadHoldsNoBufferOnceRead(t *testing.T) {
	c, client := tcpPair(t)
	o := &owner{}
	c.SetOwner(o)
	if !c.ReadsAhead() {
		t.Fatal("a TCP socket does not read ahead")
	}
	msg := bytes.Repeat([]byte("0123456789"), 5)
	if _, err := client.Write(msg); err != nil {
		t.Fatal(err)
	}
	var got []byte
	p := make([]byte, 16)
	for len(got) < len(msg) {
		n, err := c.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p[:n]...)
		if len(got) < len(msg) && c.ahead == nil {
			t.Fatalf("after %d of %d bytes the rest is not buffered", len(got), len(msg))
		}
	}
	if !bytes.Equal(got, msg) || !bytes.Equal(o.scanned, msg) {
		t.Fatalf("read %q, scanned %q, want %q", got, o.scanned, msg)
	}
	if c.ahead != nil {
		t.Fatal("the read-ahead buffer is still held with nothing in it")
	}

	// A read as large as the buffer goes to the socket directly.
	big := bytes.Repeat([]byte("x"), readBufSize)
	go client.Write(big)
	if _, err := io.ReadFull(c, make([]byte, len(big))); err != nil {
		t.Fatal(err)
	}
	if c.ahead != nil {
		t.Fatal("a large read left a buffer held")
	}
}

// TestReadAheadErrors: the errors a waiting read returns are those of net.Conn.Read, which
// coder/websocket and the bridge's connLost tell apart: a passed deadline is a timeout, the
// peer's orderly end is io.EOF, and a socket closed under the read is net.ErrClosed. None
// leaves a buffer held.
func TestReadAheadErrors(t *testing.T) {
	p := make([]byte, 16)
	t.Run("deadline", func(t *testing.T) {
		c, _ := tcpPair(t)
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		_, err := c.Read(p)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err %v, want a timeout", err)
		}
		if c.ahead != nil {
			t.Fatal("buffer held after a timeout")
		}
	})
	t.Run("eof", func(t *testing.T) {
		c, client := tcpPair(t)
		client.Write([]byte("ab"))
		client.Close()
		if n, err := io.ReadFull(c, p[:2]); n != 2 || err != nil {
			t.Fatalf("read %d, %v before the end", n, err)
		}
		if _, err := c.Read(p); err != io.EOF {
			t.Fatalf("err %v, want io.EOF", err)
		}
		if c.ahead != nil {
			t.Fatal("buffer held after EOF")
		}
	})
	t.Run("closed", func(t *testing.T) {
		c, _ := tcpPair(t)
		errc := make(chan error, 1)
		go func() {
			_, err := c.Read(p)
			errc <- err
		}()
		// The read may not have begun waiting yet; a closed socket fails it either way.
		c.Close()
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("err %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a read on a closed socket did not return")
		}
	})
}
