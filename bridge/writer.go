package bridge

import (
	"context"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/wsbridge/wsbridge/bridge/internal/wsraw"
)

// Send delivers f without blocking. A full queue means the client reads slower than it is sent
// to; it is closed as a slow consumer rather than allowed to stall the sender (a broadcast, the
// push API, another client's webhook).
//
// When no writer runs and nothing waits, the frame is written on the caller's goroutine, as far
// as the socket buffer takes it without waiting; only what it does not take goes to a writer. A
// broadcast to ten thousand idle connections is then ten thousand writes from one goroutine,
// not ten thousand writer goroutines started, scheduled and ended. Frames that follow each
// other closely (less than streamGap apart, or marked by the hub as part of a burst) are left
// to the writer instead, which sends those that pile up in one write.
func (c *conn) Send(f Delivery) bool {
	now := int64(time.Since(epoch))
	streaming := now-c.lastSend.Swap(now) < int64(streamGap)
	if !f.queue && !streaming && !c.isClosing() && c.idle.CompareAndSwap(true, false) {
		// This goroutine is the writer now, until it gives the role back.
		if c.queue.empty() {
			taken, pending, err := c.wire.TryWrite(c.encode(f))
			switch {
			case err != nil:
				// As dropSlow does, the socket is closed off this goroutine: coder/websocket's
				// CloseNow waits for the reader to let go, and Send runs inside broadcasts.
				c.Close(int(websocket.StatusAbnormalClosure), "write failed", InitiatorServer)
				go c.ws.CloseNow()
				c.finishWriter()
				return false
			case taken:
				c.sent(f)
				if pending {
					go c.drain() // the rest waits for the socket, on a writer's time
				} else {
					c.releaseWriter()
				}
				return true
			}
		}
		if !c.enqueue(f) {
			c.releaseWriter()
			return false
		}
		go c.drain()
		return true
	}
	if !c.enqueue(f) {
		return false
	}
	c.kick()
	return true
}

// streamGap: frames to one connection closer together than this are a stream, written by the
// connection's writer in bursts rather than one by one on the senders' goroutines.
const streamGap = time.Millisecond

// epoch is the origin of conn.lastSend, a monotonic clock reading.
var epoch = time.Now()

// releaseWriter gives the writer's role back after an inline write. A Send or Close meanwhile
// saw the role taken and only queued or recorded; if so, a writer starts for it.
func (c *conn) releaseWriter() {
	c.idle.Store(true)
	if !c.queue.empty() || c.isClosing() {
		c.kick()
	}
}

// finishWriter ends the writer's role for good after a failed write: no writer starts again.
func (c *conn) finishWriter() {
	c.stopPinger()
	close(c.writerDone)
}

func (c *conn) enqueue(f Delivery) bool {
	if c.isClosing() {
		return false
	}
	if !c.queue.push(f, c.srv.cfg.SendQueue, c.srv.cfg.SendQueueBytes) {
		c.dropSlow("slow consumer")
		return false
	}
	return true
}

// sendOwn queues the frames of this connection's own webhook reply and, when no writer runs,
// writes them on the calling goroutine: the connection's reader, which waits for this reply
// anyway. An echo then costs no goroutine hand-off. Should the client not read, only this
// connection's reader waits, within the write timeout, as its messages would anyway.
func (c *conn) sendOwn(fs []Frame) {
	for _, f := range fs {
		if !c.enqueue(newDelivery(f)) {
			return
		}
	}
	if len(fs) > 0 && c.idle.CompareAndSwap(true, false) {
		c.drain()
	}
}

// sendQueue holds the frames waiting for a connection's writer, at most SEND_QUEUE of them and
// SEND_QUEUE_BYTES of payload. The byte bound is what makes a queue deep enough for a whole push
// batch (MAX_BATCH frames) safe: a client is judged by how much it has not read, not by how many
// pieces that came in (as centrifuge does).
// It is a slice that grows with use, not a channel of SEND_QUEUE slots made up front: most
// connections are idle most of the time, and a 256-slot channel of frames cost every one of
// them 9.5 KiB of heap. Its zero value is an empty queue. head and bytes are int32 so that the
// byte count costs an idle connection nothing (SEND_QUEUE and SEND_QUEUE_BYTES are validated to
// fit).
type sendQueue struct {
	mu     sync.Mutex
	frames []Delivery // frames[head:] wait, oldest first
	head   int32
	bytes  int32 // payload bytes in frames[head:]
}

// push appends f unless limit frames or limitBytes of payload would then wait. It never blocks.
func (q *sendQueue) push(f Delivery, limit, limitBytes int) bool {
	q.mu.Lock()
	if len(q.frames)-int(q.head) >= limit || int(q.bytes)+len(f.Data) > limitBytes {
		q.mu.Unlock()
		return false
	}
	if len(q.frames) == cap(q.frames) && q.head > 0 {
		// Reuse the written-out front rather than grow: the slice stays within about twice
		// the limit even when the writer never quite catches up.
		n := copy(q.frames, q.frames[q.head:])
		clear(q.frames[n:])
		q.frames, q.head = q.frames[:n], 0
	}
	q.frames = append(q.frames, f)
	q.bytes += int32(len(f.Data))
	q.mu.Unlock()
	return true
}

// pop takes the oldest frame. When the queue runs empty a large slice is let go, so that a
// burst does not leave an idle connection holding its peak.
func (q *sendQueue) pop() (Delivery, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if int(q.head) == len(q.frames) {
		if cap(q.frames) > 16 {
			q.frames = nil
		} else {
			q.frames = q.frames[:0]
		}
		q.head = 0
		return Delivery{}, false
	}
	f := q.frames[q.head]
	q.frames[q.head] = Delivery{} // the writer is done with it after this; do not pin its bytes
	q.head++
	q.bytes -= int32(len(f.Data))
	return f, true
}

// empty reports whether no frame waits.
func (q *sendQueue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return int(q.head) == len(q.frames)
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

// startWriter lets the connection write, once its socket is set. Until then frames queue and a
// close is only recorded. ctx is the connection's; pings honour it.
//
// There is no writer goroutine waiting on an idle connection: Send (and Close) start one when
// there is something to do, and it ends when the queue is empty. At most one runs at a time,
// so frames still go out in queue order and one place owns the write timeout. An idle
// connection thereby costs one goroutine (its reader) rather than three.
func (c *conn) startWriter(ctx context.Context) {
	c.ctx = ctx
	t := time.AfterFunc(c.srv.cfg.PingInterval, c.pingTick)
	c.closeMu.Lock()
	c.pinger = t
	c.closeMu.Unlock()
	// From here on kick may start a writer; anything queued or a close requested meanwhile
	// is picked up now.
	c.idle.Store(true)
	if !c.queue.empty() || c.isClosing() {
		c.kick()
	}
}

// kick starts a writer unless one is running (or the socket is not there yet).
func (c *conn) kick() {
	if c.idle.CompareAndSwap(true, false) {
		go c.drain()
	}
}

func (c *conn) isClosing() bool { return c.closing.Load() }

// drain writes queued frames until none is left, or, once a close is requested, writes what is
// queued (unless the client is the reason the queue is full) and closes the socket. That last
// drain closes writerDone and leaves idle false, so no writer ever starts again.
func (c *conn) drain() {
	c.srv.hub.writing.Add(1)
	defer c.srv.hub.writing.Add(-1)
	// Frames go straight to the socket (wsframe.go), bounded by the write timer; a shutdown that
	// gives up cancels the reads, which closes the socket under a blocked write.
	if c.wire.HasPending() {
		// What an inline Send could not write waits for the socket, under the write timeout.
		c.armWriteTimer()
		err := c.wire.Uncork()
		c.wtimer.Stop()
		if err != nil {
			c.writeFailed()
			c.finishWriter()
			return
		}
	}
	for {
		// A requested close goes first: finish flushes what is queued anyway, uncorked, since
		// the close handshake waits for the peer to see the close frame.
		if c.isClosing() {
			if c.endBurst() {
				c.finish()
			}
			c.finishWriter()
			return
		}
		if f, ok := c.queue.pop(); ok {
			if !c.burst && !c.queue.empty() {
				// More frames wait (a broadcast, a busy channel): gather them and hand the
				// socket one write, under one write timeout, instead of one per frame.
				c.burst = true
				c.armWriteTimer()
				c.wire.Cork()
			}
			if !c.write(f) {
				c.finishWriter()
				return
			}
			continue
		}
		if !c.endBurst() {
			c.finishWriter()
			return
		}
		c.idle.Store(true)
		// A Send or Close between the empty pop and the Store saw a writer running and
		// started none: look again, and carry on if nobody else has taken over.
		if (c.queue.empty() && !c.isClosing()) || !c.idle.CompareAndSwap(true, false) {
			return
		}
	}
}

// pingTick runs every PING_INTERVAL on the timer's own short-lived goroutine: a ping waits up
// to PING_TIMEOUT for the pong, and must hold up neither writes nor reads.
func (c *conn) pingTick() {
	if c.isClosing() {
		return
	}
	c.ping(c.ctx)
	if c.isClosing() {
		return
	}
	c.closeMu.Lock()
	t := c.pinger
	c.closeMu.Unlock()
	t.Reset(c.srv.cfg.PingInterval)
}

func (c *conn) stopPinger() {
	c.closeMu.Lock()
	t := c.pinger
	c.closeMu.Unlock()
	if t != nil {
		t.Stop()
	}
}

// endBurst sends what the writer gathered during a burst, still under the burst's write timeout.
func (c *conn) endBurst() bool {
	if !c.burst {
		return true
	}
	c.burst = false
	err := c.wire.Uncork()
	c.wtimer.Stop()
	if err != nil {
		c.writeFailed()
		return false
	}
	return true
}

// writeFailed ends a connection whose socket refused a write.
func (c *conn) writeFailed() {
	c.Close(int(websocket.StatusAbnormalClosure), "write failed", InitiatorServer)
	c.ws.CloseNow()
}

// armWriteTimer starts the write timeout. A timer rather than the socket's write deadline: the
// timer records the cause (a slow consumer) before it closes the socket, whereas a deadline would
// let the read loop see the socket die and report it as the client's doing. One timer per
// connection, made at its first write and re-armed for each write or burst.
func (c *conn) armWriteTimer() {
	if c.wtimer == nil {
		c.wtimer = time.AfterFunc(c.srv.cfg.WriteTimeout, func() { c.dropSlow("write timeout") })
	} else {
		c.wtimer.Reset(c.srv.cfg.WriteTimeout)
	}
}

func (c *conn) write(f Delivery) bool {
	if !c.burst { // in a burst, the timer armed at its start covers every write
		c.armWriteTimer()
	}
	_, err := c.wire.WriteData(c.encode(f))
	if !c.burst || err != nil {
		c.wtimer.Stop()
	}
	if err == wsraw.ErrCloseSent {
		// coder/websocket has sent Close (a protocol error, a 1009, the client's close
		// echoed): the frame is dropped (§5.5.1). The reader is ending and records why; the
		// writer carries on so that the close path still runs.
		return true
	}
	if err != nil {
		c.writeFailed()
		return false
	}
	c.sent(f)
	return true
}

// encode returns f's bytes for this connection: compressed when it negotiated permessage-deflate
// and f is big enough (a publication brings them compressed already; a reply's frame, for this
// connection alone, is compressed here), else plain.
func (c *conn) encode(f Delivery) []byte {
	if c.framed {
		return f.framedFrame() // never compressed: its bytes are shared by framed recipients
	}
	if c.wire.PerMessageDeflate && len(f.Data) >= c.srv.cfg.CompressionThreshold {
		return f.deflatedFrame()
	}
	return f.wireFrame()
}

// sent counts a frame handed to the socket.
func (c *conn) sent(f Delivery) {
	c.counters.Out.Add(1)
	c.srv.metrics.messagesOut.Inc()
	c.srv.metrics.bytesOut.Add(float64(len(f.Data)))
}

// finish flushes queued frames and closes the socket with the recorded code.
func (c *conn) finish() {
	code, reason, by := c.closeInfo()
	// A slow consumer is not reading, so neither queued frames nor a close frame would get
	// through. 1005 and 1006 describe a close without a frame and must never be sent. In all
	// these cases the socket is simply dropped.
	if by == InitiatorSlowConsumer || code == int(websocket.StatusAbnormalClosure) || code == int(websocket.StatusNoStatusRcvd) {
		c.ws.CloseNow()
		return
	}
	if c.failing.Load() {
		// The reader stopped at a protocol error or an oversized message: what the client
		// sends next cannot be parsed, so no close handshake is waited for and nothing queued
		// is sent; the Close frame goes out and the socket is ended within PING_TIMEOUT.
		c.wire.Fail(c.ctx, code, reason)
		c.ws.CloseNow()
		return
	}
	for {
		f, ok := c.queue.pop()
		if !ok {
			// Close waits for the peer's close frame; the read loop receives it and ends.
			c.ws.Close(websocket.StatusCode(code), reason)
			return
		}
		if !c.write(f) {
			return
		}
	}
}

// ping detects a dead peer: a client that does not answer a ping within PING_TIMEOUT is
// closed. coder/websocket's Ping does not close the connection on timeout, so this does.
func (c *conn) ping(ctx context.Context) {
	// Pongs are read by the read loop, which pauses while PHP answers a message webhook
	// (that pause is the backpressure on the client). A ping during the pause would time
	// out on a healthy client, so a ping is only judged if no message arrived meanwhile.
	if c.busy.Load() {
		return
	}
	before := c.counters.In.Load()
	pctx, cancel := context.WithTimeout(ctx, c.srv.cfg.PingTimeout)
	err := c.ws.Ping(pctx)
	cancel()
	if err != nil && !c.busy.Load() && c.counters.In.Load() == before {
		c.Close(int(websocket.StatusAbnormalClosure), "ping timeout", InitiatorServer)
	}
}
