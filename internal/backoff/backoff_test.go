package backoff

import (
	"context"
	"testing"
	"time"
)

func TestCeilingDoublesToMax(t *testing.T) {
	p := Policy{Base: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := p.Ceiling(i + 1); got != w*time.Millisecond {
			t.Errorf("Ceiling(%d) = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	if got := p.Ceiling(1 << 20); got != time.Second {
		t.Errorf("Ceiling(huge) = %v, want the cap", got)
	}
	if got := p.Ceiling(0); got != 100*time.Millisecond {
		t.Errorf("Ceiling(0) = %v, want Base", got)
	}
}

func TestZeroPolicyUsesDefaults(t *testing.T) {
	var p Policy
	if got := p.Ceiling(1); got != BaseDefault {
		t.Errorf("Ceiling(1) = %v, want %v", got, BaseDefault)
	}
	if got := p.Ceiling(100); got != MaxDefault {
		t.Errorf("Ceiling(100) = %v, want %v", got, MaxDefault)
	}
	if got := (Policy{Base: time.Minute, Max: time.Second}).Ceiling(1); got != time.Second {
		t.Errorf("Ceiling with Base > Max = %v, want Max", got)
	}
}

func TestDelayIsFullJitterByDefault(t *testing.T) {
	for _, tc := range []struct {
		r    float64
		want time.Duration
	}{{0, time.Second}, {0.5, 500 * time.Millisecond}, {0.999999, time.Microsecond}} {
		p := Policy{Base: time.Second, Max: time.Second, Rand: func() float64 { return tc.r }}
		got := p.Delay(1)
		if got < tc.want-time.Microsecond || got > tc.want+time.Microsecond {
			t.Errorf("Delay with r=%v = %v, want about %v", tc.r, got, tc.want)
		}
	}
}

func TestDelayEqualJitterKeepsAFloor(t *testing.T) {
	p := Policy{Base: time.Second, Max: time.Second, Jitter: 0.5, Rand: func() float64 { return 0.999999 }}
	if got := p.Delay(3); got < 500*time.Millisecond {
		t.Errorf("Delay = %v, want at least half the ceiling", got)
	}
}

func TestDelaysSpreadAcrossInstances(t *testing.T) {
	// Ten loops failing at the same moment must not all come back at the
	// same moment: that is the lock-step the package exists to prevent.
	p := Policy{Base: time.Second, Max: time.Second}
	seen := map[time.Duration]bool{}
	for range 10 {
		seen[p.Delay(1)/time.Millisecond] = true
	}
	if len(seen) < 5 {
		t.Fatalf("10 delays took %d distinct millisecond values, want spread", len(seen))
	}
}

func TestBackoffCountsAndResets(t *testing.T) {
	b := New(Policy{Base: 10 * time.Millisecond, Max: time.Second, Rand: func() float64 { return 0 }})
	for i, want := range []time.Duration{10, 20, 40} {
		if got := b.Next(); got != want*time.Millisecond {
			t.Fatalf("Next() #%d = %v, want %v", i+1, got, want*time.Millisecond)
		}
	}
	if b.Failures() != 3 {
		t.Fatalf("Failures() = %d, want 3", b.Failures())
	}
	b.Reset()
	if got := b.Next(); got != 10*time.Millisecond {
		t.Fatalf("Next() after Reset = %v, want the first delay", got)
	}
}

func TestWaitUsesInjectedClockAndStopsOnCancel(t *testing.T) {
	var asked []time.Duration
	fire := make(chan time.Time)
	b := &Backoff{
		Policy: Policy{Base: time.Hour, Max: time.Hour, Rand: func() float64 { return 0 }},
		After: func(d time.Duration) <-chan time.Time {
			asked = append(asked, d)
			return fire
		},
	}
	done := make(chan bool)
	go func() { done <- b.Wait(context.Background()) }()
	fire <- time.Now()
	if !<-done {
		t.Fatal("Wait = false after the clock fired, want true")
	}
	if len(asked) != 1 || asked[0] != time.Hour {
		t.Fatalf("clock asked for %v, want [1h]", asked)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- b.Wait(ctx) }()
	cancel()
	if <-done {
		t.Fatal("Wait = true after cancel, want false")
	}
}
