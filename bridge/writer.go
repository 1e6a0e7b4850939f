package bridge

import (
	"context"
	"time"

	"github.com/coder/websocket"
)

// Send queues f without blocking. A full queue means the client reads slower than it is sent
// to; it is closed as a slow consumer rather than allowed to stall the sender (a broadcast, the
// push API, another client's webhook).
func (c *conn) Send(f Frame) bool {
	select {
	case <-c.closing:
		return false
	default:
	}
	select {
	case c.queue <- f:
		return true
	default:
		c.dropSlow("slow consumer")
		return false
	}
}

// dropSlow cuts off a client that does not read. No close frame is attempted: the writer is
// stuck behind a full socket buffer, and a close handshake would only hold the socket open for
// coder/websocket's 5 s more. The socket is closed off the caller's goroutine because Send runs
// inside broadcasts.
func (c *conn) dropSlow(reason string) {
	c.Close(int(websocket.StatusPolicyViolation), reason, InitiatorSlowConsumer)
	c.closeMu.Lock()
	ws := c.ws
	c.closeMu.Unlock()
	if ws != nil { // nil: not upgraded yet; the writer drops it as soon as it starts
		go ws.CloseNow()
	}
}

// writeLoop is the only goroutine that writes data frames to the socket, so frames go out in
// queue order and one place owns the write timeout. When a close is requested it writes what is
// already queued (unless the client is the reason the queue is full), then closes the socket.
func (c *conn) writeLoop(ctx context.Context) {
	defer close(c.writerDone)
	for {
		select {
		case f := <-c.queue:
			if !c.write(ctx, f) {
				return
			}
		case <-c.closing:
			c.finish(ctx)
			return
		}
	}
}

func (c *conn) write(ctx context.Context, f Frame) bool {
	typ := websocket.MessageText
	if f.Binary {
		typ = websocket.MessageBinary
	}
	// A timer rather than a context deadline: coder/websocket closes the socket when a write's
	// context expires, and the read loop would then report the close as the client's doing
	// before the writer could say why. Here the cause is recorded first.
	timer := time.AfterFunc(c.srv.cfg.WriteTimeout, func() { c.dropSlow("write timeout") })
	err := c.ws.Write(ctx, typ, f.Data)
	timer.Stop()
	if err != nil {
		c.Close(int(websocket.StatusAbnormalClosure), "write failed", InitiatorServer)
		c.ws.CloseNow()
		return false
	}
	c.counters.Out.Add(1)
	return true
}

// finish flushes queued frames and closes the socket with the recorded code.
func (c *conn) finish(ctx context.Context) {
	code, reason, by := c.closeInfo()
	// A slow consumer is not reading, so neither queued frames nor a close frame would get
	// through. 1005 and 1006 describe a close without a frame and must never be sent. In all
	// these cases the socket is simply dropped.
	if by == InitiatorSlowConsumer || code == int(websocket.StatusAbnormalClosure) || code == int(websocket.StatusNoStatusRcvd) {
		c.ws.CloseNow()
		return
	}
	for {
		select {
		case f := <-c.queue:
			if !c.write(ctx, f) {
				return
			}
		default:
			// Close waits for the peer's close frame; the read loop receives it and ends.
			c.ws.Close(websocket.StatusCode(code), reason)
			return
		}
	}
}

// pingLoop detects dead peers: a client that does not answer a ping within PING_TIMEOUT is
// closed. coder/websocket's Ping does not close the connection on timeout, so this does.
func (c *conn) pingLoop(ctx context.Context) {
	t := time.NewTicker(c.srv.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.closing:
			return
		case <-t.C:
		}
		// Pongs are read by the read loop, which pauses while PHP answers a message webhook
		// (that pause is the backpressure on the client). A ping during the pause would time
		// out on a healthy client, so a ping is only judged if no message arrived meanwhile.
		if c.busy.Load() {
			continue
		}
		before := c.counters.In.Load()
		pctx, cancel := context.WithTimeout(ctx, c.srv.cfg.PingTimeout)
		err := c.ws.Ping(pctx)
		cancel()
		if err != nil && !c.busy.Load() && c.counters.In.Load() == before {
			c.Close(int(websocket.StatusAbnormalClosure), "ping timeout", InitiatorServer)
			return
		}
	}
}
