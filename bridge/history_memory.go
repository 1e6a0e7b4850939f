package bridge

import (
	"context"
	"crypto/rand"
	"strings"
	"sync"
	"time"
)

// memoryHistory is the History of one node: each channel's last HISTORY_SIZE publications, for
// HISTORY_TTL, in this process. It is lost with the process, and a channel's record begins a new
// epoch when it is made again, so a position from before a restart is never taken for one of
// after it. A broker that implements History (one store for the whole cluster) replaces it.
//
// Expired publications are dropped lazily, by the Append or Read that finds them, and by sweep
// (Server.Serve runs it every HISTORY_TTL/4), which also forgets channels idle for keep: a
// channel nobody publishes to would otherwise hold its last publications and its record for
// ever.
type memoryHistory struct {
	size int
	ttl  time.Duration
	// keep is how long a channel's record (its epoch and last offset) outlives its last use.
	// It is longer than ttl so that a client of a quiet channel, which has seen the last
	// publication and missed none, resumes without being told to reload: with the record gone
	// its position could not be told apart from one of a lost epoch.
	keep time.Duration
	now  func() time.Time

	mu    sync.Mutex
	chans map[string]*chanHistory
}

var _ History = (*memoryHistory)(nil)

// chanHistory is one channel's record: a ring of its newest publications, oldest first.
type chanHistory struct {
	epoch string
	last  uint64    // offset of the newest publication; 0 before the first
	used  time.Time // last Append or Read
	ring  []historyItem
	head  int // index of the oldest item in ring
	n     int // items held
}

type historyItem struct {
	off uint64
	at  time.Time
	f   Frame
}

// recordKeep is the least time a channel's record is kept after its last use (memoryHistory.keep).
const recordKeep = time.Hour

func newMemoryHistory(size int, ttl time.Duration, now func() time.Time) *memoryHistory {
	if now == nil {
		now = time.Now
	}
	return &memoryHistory{size: size, ttl: ttl, keep: max(ttl, recordKeep), now: now, chans: make(map[string]*chanHistory)}
}

// newEpoch names a record's life: random, so that a record made again (after a restart, or
// after it was forgotten) never repeats an epoch a client may hold.
func newEpoch() string { return strings.ToLower(rand.Text()[:10]) }

// channel returns ch's record, making it (a new epoch, offset 0) if there is none.
func (m *memoryHistory) channel(ch string, now time.Time) *chanHistory {
	c := m.chans[ch]
	if c == nil {
		c = &chanHistory{epoch: newEpoch()}
		m.chans[ch] = c
	}
	c.used = now
	c.expire(now.Add(-m.ttl))
	return c
}

// expire drops the publications made before cutoff.
func (c *chanHistory) expire(cutoff time.Time) {
	for c.n > 0 && c.ring[c.head].at.Before(cutoff) {
		c.ring[c.head] = historyItem{} // let the payload go
		c.head = (c.head + 1) % len(c.ring)
		c.n--
	}
}

func (m *memoryHistory) Append(ctx context.Context, ch string, f Frame) (Position, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.channel(ch, now)
	c.last++
	it := historyItem{off: c.last, at: now, f: f}
	switch {
	case c.n < len(c.ring):
		c.ring[(c.head+c.n)%len(c.ring)] = it
		c.n++
	case len(c.ring) < m.size:
		// The ring grows with use up to HISTORY_SIZE, so a channel with few publications
		// holds few; once full it only wraps. It is full here (n == len), so growing copies
		// it whole, oldest first.
		grown := make([]historyItem, 0, min(m.size, 2*len(c.ring)+4))
		grown = append(grown, c.ring[c.head:]...)
		grown = append(grown, c.ring[:c.head]...)
		c.ring, c.head = append(grown, it), 0
		c.n++
	default:
		// Full: the oldest gives its place.
		c.ring[c.head] = it
		c.head = (c.head + 1) % len(c.ring)
	}
	return Position{Epoch: c.epoch, Offset: c.last}, nil
}

func (m *memoryHistory) Read(ctx context.Context, ch string, since Position, limit int) ([]HistoryEntry, Position, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.channel(ch, now)
	top := Position{Epoch: c.epoch, Offset: c.last}
	if since.Epoch != "" && since.Epoch != c.epoch {
		return nil, top, nil // another epoch's offsets mean nothing here
	}
	var out []HistoryEntry
	for i := 0; i < c.n && len(out) < limit; i++ {
		it := c.ring[(c.head+i)%len(c.ring)]
		if it.off <= since.Offset {
			continue
		}
		out = append(out, HistoryEntry{Position: Position{Epoch: c.epoch, Offset: it.off}, Frame: it.f, Time: it.at})
	}
	return out, top, nil
}

// sweep drops expired publications everywhere, and the records of channels unused for keep.
func (m *memoryHistory) sweep() {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for ch, c := range m.chans {
		c.expire(now.Add(-m.ttl))
		if c.n == 0 && now.Sub(c.used) > m.keep {
			delete(m.chans, ch)
			continue
		}
		if c.n == 0 && len(c.ring) > 0 {
			c.ring, c.head = nil, 0 // an emptied channel holds no ring
		}
	}
}

// run sweeps every interval until ctx ends.
func (m *memoryHistory) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.sweep()
		}
	}
}
