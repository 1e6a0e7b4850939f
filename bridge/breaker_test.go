package bridge

import (
	"testing"
	"time"
)

func TestBreakerStates(t *testing.T) {
	var trips int
	b := newBreaker(3, time.Minute, func(open, tripped bool) {
		if tripped {
			trips++
		}
	})
	now := time.Now()
	for i := range 2 {
		if ok, _, _, _ := b.enter(now); !ok {
			t.Fatalf("attempt %d held back before the threshold", i)
		}
		b.exit(false, false)
	}
	b.exit(false, true) // a success resets the count
	for range 3 {
		b.enter(now)
		b.exit(false, false)
	}
	if !b.open() || trips != 1 {
		t.Fatalf("after 3 failures in a row: open %v, trips %d", b.open(), trips)
	}
	ok, _, retryAt, changed := b.enter(now)
	if ok || retryAt.Before(now.Add(59*time.Second)) || changed == nil {
		t.Fatalf("during the cooldown: ok %v, retry at %v", ok, retryAt)
	}

	later := now.Add(2 * time.Minute)
	ok, probe, _, _ := b.enter(later)
	if !ok || !probe {
		t.Fatalf("after the cooldown the first caller must probe: ok %v probe %v", ok, probe)
	}
	if ok, _, retryAt, wait := b.enter(later); ok || !retryAt.IsZero() || wait == nil {
		t.Fatalf("a second caller while the probe is out: ok %v retryAt %v", ok, retryAt)
	}
	b.abandon(true) // the prober gave up: the next caller probes
	if ok, probe, _, _ := b.enter(later); !ok || !probe {
		t.Fatalf("after an abandoned probe: ok %v probe %v", ok, probe)
	}
	b.exit(true, false) // the probe failed: another cooldown
	if ok, _, retryAt, _ := b.enter(time.Now()); ok || retryAt.IsZero() {
		t.Fatalf("after a failed probe: ok %v retryAt %v", ok, retryAt)
	}
	ok, probe, _, _ = b.enter(time.Now().Add(2 * time.Minute))
	if !ok || !probe {
		t.Fatal("no probe after the second cooldown")
	}
	b.exit(true, true)
	select {
	case <-changed:
	default:
		t.Error("waiters were not woken when PHP came back")
	}
	if b.open() || trips != 1 {
		t.Errorf("after a good probe: open %v, trips %d", b.open(), trips)
	}
	if ok, _, _, _ := b.enter(now); !ok {
		t.Error("closed breaker held an attempt back")
	}
}

func TestBreakerDisabled(t *testing.T) {
	b := newBreaker(0, time.Minute, nil)
	for range 100 {
		b.enter(time.Now())
		b.exit(false, false)
	}
	if b.open() {
		t.Error("BREAKER_FAILURES=0 opened the breaker")
	}
}

// health is what /readyz reads: refusing while an open webhook would fail fast (cooldown, or
// the probe out), not once the cooldown is over with nobody probing (a bridge out of rotation
// gets no traffic to probe with), and the failures in a row.
func TestBreakerHealth(t *testing.T) {
	b := newBreaker(2, time.Minute, nil)
	now := time.Now()
	if refusing, n, last := b.health(now); refusing || n != 0 || !last.IsZero() {
		t.Fatalf("fresh breaker: refusing %v, failures %d, last %v", refusing, n, last)
	}
	b.enter(now)
	b.exit(false, false)
	if refusing, n, last := b.health(now); refusing || n != 1 || last.IsZero() {
		t.Fatalf("after one failure: refusing %v, failures %d, last %v", refusing, n, last)
	}
	b.enter(now)
	b.exit(false, false) // trips
	if refusing, n, _ := b.health(time.Now()); !refusing || n != 2 {
		t.Fatalf("tripped: refusing %v, failures %d", refusing, n)
	}
	later := time.Now().Add(2 * time.Minute)
	if refusing, _, _ := b.health(later); refusing {
		t.Error("cooldown over, no probe out: still refusing")
	}
	if ok, probe, _, _ := b.enter(later); !ok || !probe {
		t.Fatal("no probe after the cooldown")
	}
	if refusing, _, _ := b.health(later); !refusing {
		t.Error("probe out: opens fail fast, but health says not refusing")
	}
	b.exit(true, true)
	if refusing, n, _ := b.health(later); refusing || n != 0 {
		t.Errorf("after a good probe: refusing %v, failures %d", refusing, n)
	}
}
