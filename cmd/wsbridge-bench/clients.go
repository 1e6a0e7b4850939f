package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Frames the bench hook and the bench PHP script exchange with clients. Every data frame a
// client receives starts with a letter and, except "id", ends with the sender's time in Unix
// nanoseconds, so the receiver can compute the delivery latency on the same clock.
//
//	id <connection id>   first frame after the open reply, sent by the open hook
//	b <seq> <ns>         a broadcast
//	p <ns>               a point-to-point push
//	e <ns>               an echo of the client's own message (the message webhook's reply)
func stamp(prefix string, at time.Time) string {
	return prefix + " " + strconv.FormatInt(at.UnixNano(), 10)
}

// sentAt reads the trailing timestamp of a frame; ok is false for frames without one.
func sentAt(b []byte) (time.Time, bool) {
	i := strings.LastIndexByte(string(b), ' ')
	if i < 0 {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(string(b[i+1:]), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// latencies collects delivery latencies in microseconds from many goroutines.
type latencies struct {
	mu sync.Mutex
	us []uint32
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.us = append(l.us, uint32(min(d.Microseconds(), 1<<32-1)))
	l.mu.Unlock()
}

// take returns the samples so far and starts a new collection.
func (l *latencies) take() []uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.us
	l.us = nil
	return s
}

// Dist is a latency distribution in milliseconds.
type Dist struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func distOf(us []uint32) Dist {
	if len(us) == 0 {
		return Dist{}
	}
	slices.Sort(us)
	at := func(q float64) float64 {
		return float64(us[min(len(us)-1, int(q*float64(len(us))))]) / 1000
	}
	return Dist{N: len(us), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: float64(us[len(us)-1]) / 1000}
}

func (d Dist) String() string {
	return fmt.Sprintf("p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms (n=%d)", d.P50, d.P90, d.P99, d.Max, d.N)
}

// client is one bench WebSocket. Its reader goroutine counts the frames it gets and records
// the latency of every stamped one.
type client struct {
	ws   *websocket.Conn
	id   string // the bridge's connection id, from the "id" frame
	user string
	// lat is per client, not per fleet: ten thousand readers sharing one lock would measure
	// the lock.
	lat latencies
}

// fleet is a set of connected clients sharing counters.
type fleet struct {
	wsURLs  []string       // client i dials wsURLs[i % len]: the nodes of a cluster
	http    []*http.Client // one per source address
	clients []*client
	frames  atomic.Int64 // stamped frames received by all clients
	readers sync.WaitGroup
	// selfRead: connect starts no reader goroutines; the scenario reads on the clients' own
	// goroutines (the webhook scenario's closed loop, where a hand-off per message would cost
	// the tool CPU that the bridge needs on the same cores).
	selfRead bool
}

// offerDeflate: clients offer permessage-deflate without context takeover (-compression).
var offerDeflate bool

func newFleet(wsURL string, n int) (*fleet, error) {
	urls := strings.Split(wsURL, ",")
	ips, err := sourceAddrs(urls[0], n, 10000)
	if err != nil {
		return nil, err
	}
	f := &fleet{wsURLs: urls}
	for _, ip := range ips {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
		// Every upgraded connection leaves the transport's pool, so the pool settings do not
		// matter; one transport per source address keeps the address choice explicit.
		f.http = append(f.http, &http.Client{Transport: &http.Transport{DialContext: d.DialContext, Proxy: nil}})
	}
	return f, nil
}

// dial opens one connection as user and waits for its "id" frame, so that "connected" means
// the bridge has registered it and PHP's open reply was applied.
func (f *fleet) dial(ctx context.Context, i int) (*client, error) {
	user := "u" + strconv.Itoa(i)
	opts := &websocket.DialOptions{HTTPClient: f.http[i%len(f.http)]}
	if offerDeflate {
		opts.CompressionMode = websocket.CompressionNoContextTakeover
	}
	ws, _, err := websocket.Dial(ctx, f.wsURLs[i%len(f.wsURLs)]+"?u="+user, opts)
	if err != nil {
		return nil, err
	}
	_, b, err := ws.Read(ctx)
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("read id frame: %w", err)
	}
	id, ok := strings.CutPrefix(string(b), "id ")
	if !ok {
		ws.CloseNow()
		return nil, fmt.Errorf("first frame %q is not an id frame", b)
	}
	return &client{ws: ws, id: id, user: user}, nil
}

// connect opens clients until the fleet has n, with conc dials in flight, and starts their
// readers. It returns the handshake latencies of the new ones (dial until the id frame).
func (f *fleet) connect(ctx context.Context, n, conc int) (Dist, error) {
	start := len(f.clients)
	if n <= start {
		return Dist{}, nil
	}
	f.clients = append(f.clients, make([]*client, n-start)...)
	var lat latencies
	var next atomic.Int64
	next.Store(int64(start))
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				c, err := f.dial(ctx, i)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i, err) })
					return
				}
				lat.add(time.Since(t0))
				f.clients[i] = c
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	// Keep only what connected, so that close and counts stay right after a failure.
	f.clients = slices.DeleteFunc(f.clients, func(c *client) bool { return c == nil })
	for _, c := range f.clients[min(start, len(f.clients)):] {
		if f.selfRead {
			break
		}
		f.readers.Add(1)
		go f.read(c)
	}
	return distOf(lat.take()), firstErr
}

// read runs until the socket closes. The context is not the run's: a read context that ends
// would close the socket, and closing is the fleet's job.
func (f *fleet) read(c *client) {
	defer f.readers.Done()
	var buf []byte // reused: ten thousand readers allocating per frame would measure the GC
	for {
		b, err := readInto(context.Background(), c.ws, buf[:0])
		if err != nil {
			return
		}
		buf = b
		now := time.Now()
		if at, ok := sentAt(b); ok {
			c.lat.add(now.Sub(at))
			f.frames.Add(1)
		}
	}
}

// readInto reads one message into buf, growing it as needed. A ctx that ends closes the socket
// (coder/websocket's rule).
func readInto(ctx context.Context, ws *websocket.Conn, buf []byte) ([]byte, error) {
	_, r, err := ws.Reader(ctx)
	if err != nil {
		return buf, err
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// waitFrames waits until total stamped frames have arrived or ctx ends, and returns how many
// arrived. Polling every few milliseconds keeps readers free of any extra synchronisation.
func (f *fleet) waitFrames(ctx context.Context, total int64) int64 {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for f.frames.Load() < total {
		select {
		case <-ctx.Done():
			return f.frames.Load()
		case <-t.C:
		}
	}
	return f.frames.Load()
}

// takeLatencies returns the latency distribution of every client's frames since the last call.
func (f *fleet) takeLatencies() Dist {
	var all []uint32
	for _, c := range f.clients {
		all = append(all, c.lat.take()...)
	}
	return distOf(all)
}

// close closes every client with 1000 and waits for the readers to end.
func (f *fleet) close() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, c := range f.clients {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if c.ws.Close(websocket.StatusNormalClosure, "bench done") != nil {
				c.ws.CloseNow()
			}
		})
	}
	wg.Wait()
	f.readers.Wait()
	f.clients = nil
}
