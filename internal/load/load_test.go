package load

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// outcomes collects what Done reports.
type outcomes struct {
	mu        sync.Mutex
	latencies map[int]time.Duration
	dues      map[int]time.Duration
	dropped   int
	errs      int
}

func newOutcomes() *outcomes {
	return &outcomes{latencies: map[int]time.Duration{}, dues: map[int]time.Duration{}}
}

func (o *outcomes) done(seq int, due, latency time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case errors.Is(err, ErrDropped):
		o.dropped++
	case err != nil:
		o.errs++
	default:
		o.latencies[seq], o.dues[seq] = latency, due
	}
}

func TestOpenSendsEveryRequestInOrder(t *testing.T) {
	out := newOutcomes()
	var next []int
	o := Open{Rate: 1000, Duration: 200 * time.Millisecond, Done: out.done,
		Next: func(seq int) func(context.Context) error {
			next = append(next, seq)
			return func(context.Context) error { return nil }
		}}
	if err := o.Run(context.Background()); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if len(next) != 200 || len(out.latencies) != 200 || out.dropped != 0 {
		t.Fatalf("Next calls %d, done %d, dropped %d; want 200, 200, 0", len(next), len(out.latencies), out.dropped)
	}
	for i, seq := range next {
		if seq != i {
			t.Fatalf("Next call %d got seq %d, want in order", i, seq)
		}
		if want := time.Duration(i) * time.Millisecond; out.dues[i] != want {
			t.Fatalf("due of request %d = %s, want %s", i, out.dues[i], want)
		}
	}
}

// TestOpenLatencyFromIntendedTime: requests that go out late (here, a
// Start a second in the past) are charged the lateness, as a stalled
// harness or target must be.
func TestOpenLatencyFromIntendedTime(t *testing.T) {
	out := newOutcomes()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := Open{Rate: 10, Duration: 2 * time.Second, Start: time.Now().Add(-time.Second), Done: out.done,
		Next: func(seq int) func(context.Context) error {
			if seq == 10 { // the first request not overdue: enough seen
				cancel()
			}
			return func(context.Context) error { return nil }
		}}
	if err := o.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if got := out.latencies[0]; got < time.Second {
		t.Errorf("latency of request 0, due a second before Run = %s, want >= 1s", got)
	}
}

func TestOpenDropsPastInflightMax(t *testing.T) {
	out := newOutcomes()
	release := make(chan struct{})
	o := Open{Rate: 1000, Duration: 50 * time.Millisecond, InflightMax: 1,
		Next: func(seq int) func(context.Context) error {
			if seq == 49 {
				close(release)
			}
			return func(context.Context) error { <-release; return nil }
		},
		Done: out.done}
	if err := o.Run(context.Background()); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	sent := len(out.latencies)
	if sent+out.dropped != 50 || out.dropped < 48 {
		t.Errorf("sent %d, dropped %d; want 50 in all, at least 48 dropped behind the one in flight", sent, out.dropped)
	}
}

func TestOpenStopsOnCancelAndWaits(t *testing.T) {
	out := newOutcomes()
	ctx, cancel := context.WithCancel(context.Background())
	o := Open{Rate: 1000, Done: out.done,
		Next: func(seq int) func(context.Context) error {
			if seq == 20 {
				cancel()
			}
			return func(ctx context.Context) error {
				<-ctx.Done() // holds until the run is cancelled
				return ctx.Err()
			}
		}}
	if err := o.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	// Run waited: every request it started has already reported.
	if out.errs+out.dropped+len(out.latencies) != 21 {
		t.Errorf("outcomes after Run = %d, want all 21 requests", out.errs+out.dropped+len(out.latencies))
	}
}

func TestOpenRejectsBadRate(t *testing.T) {
	if err := (&Open{}).Run(context.Background()); err == nil {
		t.Error("Run with Rate 0 = nil, want an error")
	}
}

func TestRecordClamps(t *testing.T) {
	h := NewHistogram()
	Record(h, 0)
	Record(h, 2*LatencyMax)
	if h.TotalCount() != 2 || h.Min() != 1 || h.Max() < LatencyMax.Microseconds()*999/1000 {
		t.Errorf("count %d, min %d µs, max %d µs; want 2, 1, about %d", h.TotalCount(), h.Min(), h.Max(), LatencyMax.Microseconds())
	}
}

func TestOpenWaitWhenFull(t *testing.T) {
	out := newOutcomes()
	o := Open{Rate: 1000, Duration: 50 * time.Millisecond, InflightMax: 1, WaitWhenFull: true,
		Next: func(int) func(context.Context) error {
			return func(context.Context) error { time.Sleep(2 * time.Millisecond); return nil } // a slow target
		},
		Done: out.done}
	if err := o.Run(context.Background()); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if len(out.latencies) != 50 || out.dropped != 0 {
		t.Fatalf("sent %d, dropped %d; want 50 sent, none dropped", len(out.latencies), out.dropped)
	}
	// One at a time, 2 ms each, due every 1 ms: the last is about 50 ms late.
	if got := out.latencies[49]; got < 40*time.Millisecond {
		t.Errorf("latency of the last request = %s, want >= 40ms: the wait for a slot must count", got)
	}
}
