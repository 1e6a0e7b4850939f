package bridge

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// recorded is one record as a handler got it, with its attributes (the handler's own first).
type recorded struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// recorder is a slog.Handler that keeps every record and also sends it to ch when set.
type recorder struct {
	mu    *sync.Mutex
	recs  *[]recorded
	ch    chan recorded
	attrs []slog.Attr
}

func newRecorder() *recorder { return &recorder{mu: &sync.Mutex{}, recs: &[]recorded{}} }

func (h *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *recorder) WithGroup(string) slog.Handler            { return h }
func (h *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr{}, h.attrs...), as...)
	return &c
}

func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	rec := recorded{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { rec.attrs[a.Key] = a.Value.String(); return true })
	h.mu.Lock()
	*h.recs = append(*h.recs, rec)
	h.mu.Unlock()
	if h.ch != nil {
		h.ch <- rec
	}
	return nil
}

func (h *recorder) take() []recorded {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := *h.recs
	*h.recs = nil
	return out
}

func TestLogThrottle(t *testing.T) {
	t.Parallel()
	const limit = 3
	cases := []struct {
		name string
		// log writes records through lg; then the clock moves by advance and after runs.
		log     func(lg *slog.Logger)
		advance time.Duration
		after   func(lg *slog.Logger, th *LogThrottle)
		want    []string // "LEVEL msg" of each record that reached the handler, in order
		// summaries wants, per summed-up message, the count suppressed.
		summaries map[string]string
	}{
		{
			name: "under the limit everything passes",
			log: func(lg *slog.Logger) {
				lg.Error("webhook failed")
				lg.Error("webhook failed")
				lg.Info("other")
			},
			want: []string{"ERROR webhook failed", "ERROR webhook failed", "INFO other"},
		},
		{
			name: "the first limit pass, the rest are summed up at the next window's first record",
			log: func(lg *slog.Logger) {
				for range 10 {
					lg.Error("webhook failed")
				}
			},
			advance: time.Hour,
			after:   func(lg *slog.Logger, _ *LogThrottle) { lg.Error("webhook failed") },
			want: []string{"ERROR webhook failed", "ERROR webhook failed", "ERROR webhook failed",
				"ERROR " + summaryMessage, "ERROR webhook failed"},
			summaries: map[string]string{"webhook failed": "7"},
		},
		{
			name: "level and message make the key, attributes do not",
			log: func(lg *slog.Logger) {
				for i := range 5 {
					lg.With("conn", string(rune('a'+i))).Error("webhook failed")
					lg.Warn("webhook failed")
					lg.Error("close failed")
				}
			},
			after: func(_ *slog.Logger, th *LogThrottle) { th.Flush() },
			want: []string{
				"ERROR webhook failed", "WARN webhook failed", "ERROR close failed",
				"ERROR webhook failed", "WARN webhook failed", "ERROR close failed",
				"ERROR webhook failed", "WARN webhook failed", "ERROR close failed",
				// Flush: one summary per key, in any order (checked as a set below).
				"* " + summaryMessage, "* " + summaryMessage, "* " + summaryMessage,
			},
			summaries: map[string]string{"webhook failed": "2", "close failed": "2"},
		},
		{
			name: "a window that suppressed nothing says nothing when it ends",
			log: func(lg *slog.Logger) {
				lg.Error("webhook failed")
			},
			advance: time.Hour,
			after: func(lg *slog.Logger, th *LogThrottle) {
				lg.Error("webhook failed")
				th.Flush()
			},
			want: []string{"ERROR webhook failed", "ERROR webhook failed"},
		},
		{
			name: "flush sums up once",
			log: func(lg *slog.Logger) {
				for range 4 {
					lg.Error("webhook failed")
				}
			},
			after: func(_ *slog.Logger, th *LogThrottle) {
				th.Flush()
				th.Flush()
			},
			want: []string{"ERROR webhook failed", "ERROR webhook failed", "ERROR webhook failed",
				"ERROR " + summaryMessage},
			summaries: map[string]string{"webhook failed": "1"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder()
			clock := newFakeClock(time.Unix(1_000_000, 0))
			th := NewLogThrottle(rec, limit, time.Hour)
			th.st.now = clock.now
			lg := slog.New(th)
			tc.log(lg)
			clock.advance(tc.advance)
			if tc.after != nil {
				tc.after(lg, th)
			}
			got := rec.take()
			if len(got) != len(tc.want) {
				t.Fatalf("%d records reached the handler, want %d: %+v", len(got), len(tc.want), got)
			}
			summed := map[string]string{}
			for i, r := range got {
				w := tc.want[i]
				if w[0] == '*' {
					w = r.level.String() + w[1:]
				}
				if r.level.String()+" "+r.msg != w {
					t.Errorf("record %d = %s %s, want %s", i, r.level, r.msg, w)
				}
				if r.msg == summaryMessage {
					if r.attrs["interval"] != "1h0m0s" {
						t.Errorf("summary %+v does not give the interval", r)
					}
					summed[r.attrs["message"]+"/"+r.level.String()] = r.attrs["suppressed"]
					summed[r.attrs["message"]] = r.attrs["suppressed"]
				}
			}
			for msg, n := range tc.summaries {
				if summed[msg] != n {
					t.Errorf("summary of %q says %q suppressed, want %s (all summaries: %v)", msg, summed[msg], n, summed)
				}
			}
			if len(tc.summaries) == 0 && len(summed) > 0 {
				t.Errorf("unexpected summaries %v", summed)
			}
		})
	}
}

// A flood that stops is summed up when its interval ends, without another line of the kind.
func TestLogThrottleSumsUpWhenTheIntervalEnds(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	rec.ch = make(chan recorded, 16)
	lg := slog.New(NewLogThrottle(rec, 1, 20*time.Millisecond))
	for range 5 {
		lg.Error("upgrade refused", "client", "203.0.113.9")
	}
	if r := <-rec.ch; r.msg != "upgrade refused" || r.attrs["client"] != "203.0.113.9" {
		t.Fatalf("first record = %+v, want the first line as written", r)
	}
	select {
	case r := <-rec.ch:
		if r.msg != summaryMessage || r.attrs["message"] != "upgrade refused" || r.attrs["suppressed"] != "4" || r.level != slog.LevelError {
			t.Errorf("summary = %+v, want ERROR %q with message \"upgrade refused\" and suppressed 4", r, summaryMessage)
		}
		if _, ok := r.attrs["client"]; ok {
			t.Errorf("the summary carries one record's attributes: %+v", r)
		}
	case <-time.After(waitLimit):
		t.Fatal("no summary after the interval ended")
	}
}

func TestLogThrottleOffPassesEverything(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	lg := slog.New(NewLogThrottle(rec, 0, time.Second))
	for range 100 {
		lg.Error("webhook failed")
	}
	if n := len(rec.take()); n != 100 {
		t.Errorf("LOG_REPEAT_LIMIT=0 passed %d of 100 records", n)
	}
}
