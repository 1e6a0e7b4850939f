package bridge

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// LogThrottle is a slog.Handler that lets at most LOG_REPEAT_LIMIT records with the same level
// and message through per LOG_REPEAT_INTERVAL, and sums up the rest in one record when the
// interval ends. A flood of clients makes the same line thousands of times a second (every
// refused handshake, every failed webhook); the first few carry everything an operator needs,
// and the rest would only bury other lines and cost the disk and CPU the flood is already
// taking.
//
// The key is the level and the message alone, not the attributes: the same failure for ten
// thousand connections is one line repeated. Messages in this module are constants, so the
// number of keys is bounded; maxThrottleKeys bounds it for any other caller. Loggers derived
// with With or WithGroup share their parent's counts.
type LogThrottle struct {
	next slog.Handler // with this logger's attributes and groups
	st   *throttleState
}

// maxThrottleKeys bounds the windows kept at once; past it, records of new keys pass
// unthrottled rather than grow the map.
const maxThrottleKeys = 4096

// summaryMessage is the message of the line that sums up suppressed ones; it is stable, so
// that log queries can find every such line, and its "message" attribute names what was
// suppressed.
const summaryMessage = "suppressed similar log lines"

type throttleState struct {
	// root receives the summaries: one speaks for records of many loggers, so it carries none
	// of their attributes.
	root     slog.Handler
	limit    int
	interval time.Duration
	now      func() time.Time // time.Now, but for tests

	mu   sync.Mutex
	keys map[throttleKey]*throttleWindow
}

type throttleKey struct {
	level slog.Level
	msg   string
}

// throttleWindow counts one key's records in the interval that began at start.
type throttleWindow struct {
	start      time.Time
	n          int // records seen, passed or not
	suppressed int
	// timer writes the summary when the interval ends; it is set by the first suppressed
	// record, so that a flood that stops is still summed up without waiting for its next line.
	timer *time.Timer
}

// NewLogThrottle wraps next. limit 0 (or less) lets every record through.
func NewLogThrottle(next slog.Handler, limit int, interval time.Duration) *LogThrottle {
	return &LogThrottle{next: next, st: &throttleState{
		root: next, limit: limit, interval: interval, now: time.Now,
		keys: map[throttleKey]*throttleWindow{},
	}}
}

// Enabled reports what the wrapped handler reports: throttling depends on the message, which
// Enabled does not see.
func (h *LogThrottle) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// WithAttrs returns a handler with attrs that shares h's counts.
func (h *LogThrottle) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &LogThrottle{next: h.next.WithAttrs(attrs), st: h.st}
}

// WithGroup returns a handler with the group that shares h's counts.
func (h *LogThrottle) WithGroup(name string) slog.Handler {
	return &LogThrottle{next: h.next.WithGroup(name), st: h.st}
}

// Handle passes r on unless its key already had limit records in the current interval.
func (h *LogThrottle) Handle(ctx context.Context, r slog.Record) error {
	st := h.st
	if st.limit <= 0 {
		return h.next.Handle(ctx, r)
	}
	k := throttleKey{r.Level, r.Message}
	now := st.now()
	st.mu.Lock()
	w := st.keys[k]
	ended := 0 // suppressed records of a window that ended and was not summed up yet
	if w != nil && now.Sub(w.start) >= st.interval {
		ended = st.endLocked(k, w)
		w = nil
	}
	if w == nil {
		if len(st.keys) >= maxThrottleKeys {
			st.sweepLocked(now)
		}
		if len(st.keys) >= maxThrottleKeys {
			st.mu.Unlock()
			return h.next.Handle(ctx, r)
		}
		w = &throttleWindow{start: now}
		st.keys[k] = w
	}
	w.n++
	pass := w.n <= st.limit
	if !pass {
		w.suppressed++
		if w.timer == nil {
			w.timer = time.AfterFunc(w.start.Add(st.interval).Sub(now), func() { st.expire(k, w) })
		}
	}
	st.mu.Unlock()
	if ended > 0 {
		st.summarize(k, ended)
	}
	if !pass {
		return nil
	}
	return h.next.Handle(ctx, r)
}

// Flush writes the summaries of every window with suppressed records now, and forgets every
// window. Call it before the process exits, so that no count is lost.
func (h *LogThrottle) Flush() {
	st := h.st
	st.mu.Lock()
	type pending struct {
		k throttleKey
		n int
	}
	var out []pending
	for k, w := range st.keys {
		if n := st.endLocked(k, w); n > 0 {
			out = append(out, pending{k, n})
		}
	}
	st.mu.Unlock()
	for _, p := range out {
		st.summarize(p.k, p.n)
	}
}

// endLocked forgets k's window w and returns its suppressed count, which the caller sums up.
func (st *throttleState) endLocked(k throttleKey, w *throttleWindow) int {
	if w.timer != nil {
		w.timer.Stop()
	}
	delete(st.keys, k)
	n := w.suppressed
	w.suppressed = 0 // a timer that already fired and waits for mu finds nothing to say
	return n
}

// expire is w's timer: the interval ended with records suppressed.
func (st *throttleState) expire(k throttleKey, w *throttleWindow) {
	st.mu.Lock()
	n := 0
	if st.keys[k] == w {
		n = st.endLocked(k, w)
	}
	st.mu.Unlock()
	if n > 0 {
		st.summarize(k, n)
	}
}

// sweepLocked forgets the windows whose interval is over and that suppressed nothing (those
// that did have a timer that forgets them).
func (st *throttleState) sweepLocked(now time.Time) {
	for k, w := range st.keys {
		if w.suppressed == 0 && now.Sub(w.start) >= st.interval {
			delete(st.keys, k)
		}
	}
}

func (st *throttleState) summarize(k throttleKey, n int) {
	r := slog.NewRecord(st.now(), k.level, summaryMessage, 0)
	r.AddAttrs(slog.String("message", k.msg), slog.Int("suppressed", n), slog.String("interval", st.interval.String()))
	st.root.Handle(context.Background(), r) // as slog.Logger does, a handler's error is dropped
}
