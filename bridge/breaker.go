package bridge

import (
	"sync"
	"time"
)

// breaker notices that PHP is down and holds webhooks back until it answers again, so a dead
// backend costs one probe per cooldown instead of a timeout per event.
//
// Closed: every attempt goes. After `threshold` failed attempts in a row (no answer, or 5xx) it
// opens for `cooldown`; then the first caller becomes the probe and everyone else waits for the
// probe's outcome. Any answer below 500 closes it again; a failed probe reopens it.
type breaker struct {
	threshold int // 0: never opens
	cooldown  time.Duration
	onChange  func(open, tripped bool)

	mu        sync.Mutex
	failures  int       // failed attempts in a row
	lastFail  time.Time // when the last of them ended
	openUntil time.Time // zero while closed
	probing   bool      // the probe is in flight
	changed   chan struct{}
}

func newBreaker(threshold int, cooldown time.Duration, onChange func(open, tripped bool)) *breaker {
	return &breaker{threshold: threshold, cooldown: cooldown, onChange: onChange, changed: make(chan struct{})}
}

// enter asks to send one attempt at now. When ok, the caller must report the outcome with exit
// (probe says whether this attempt is the probe). When not ok, PHP is held back: a probe may be
// tried at retryAt (zero: a probe is in flight), and changed is closed as soon as the state
// moves, whichever comes first.
func (b *breaker) enter(now time.Time) (ok, probe bool, retryAt time.Time, changed <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.openUntil.IsZero():
		return true, false, time.Time{}, nil
	case now.Before(b.openUntil):
		return false, false, b.openUntil, b.changed
	case !b.probing:
		b.probing = true
		return true, true, time.Time{}, nil
	default:
		return false, false, time.Time{}, b.changed
	}
}

// exit records the outcome of an attempt enter let through.
func (b *breaker) exit(probe, success bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
	}
	if success {
		b.failures = 0
		if !b.openUntil.IsZero() {
			b.openUntil = time.Time{}
			b.notifyLocked(false, false)
		}
		return
	}
	b.failures++
	b.lastFail = time.Now()
	switch {
	case probe:
		b.openUntil = time.Now().Add(b.cooldown)
		b.notifyLocked(true, false)
	case b.openUntil.IsZero() && b.threshold > 0 && b.failures >= b.threshold:
		b.openUntil = time.Now().Add(b.cooldown)
		b.notifyLocked(true, true)
	}
}

// abandon records an attempt the caller gave up on (shutdown, a handshake deadline): it says
// nothing about PHP, so only a probe's place is given back.
func (b *breaker) abandon(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
	b.notifyLocked(true, false) // waiters may probe now
}

// open reports whether PHP is considered down.
func (b *breaker) open() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.openUntil.IsZero()
}

// health is what /readyz needs in one look: whether openings are being refused now (open and
// in its cooldown, or open with the probe out: an open webhook fails fast in both), and the
// failed attempts in a row with when the last one ended.
func (b *breaker) health(now time.Time) (refusing bool, failures int, lastFail time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	refusing = now.Before(b.openUntil) || (!b.openUntil.IsZero() && b.probing)
	return refusing, b.failures, b.lastFail
}

func (b *breaker) notifyLocked(open, tripped bool) {
	close(b.changed)
	b.changed = make(chan struct{})
	if b.onChange != nil {
		b.onChange(open, tripped)
	}
}
