package cache

import (
	"context"
	"errors"
	"go/parser"
	"go/token"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var quietLogger = slog.New(slog.DiscardHandler)

func TestGetSources(t *testing.T) {
	d, l2, clock := newDB(), newFakeL2(), newFakeClock()
	d.put("a", 1, 1)
	o := testOptions(d, l2)
	o.Now = clock.Now
	a := newTestCache(t, o)
	ctx := context.Background()

	v, info, err := a.Get(ctx, "a")
	if err != nil || v.Value != 1 || info.Source != SourceLoader || info.Stale {
		t.Fatalf("first Get = %v, %+v, %v; want 1 from the loader", v, info, err)
	}
	// Counted once the write has returned, which is after it landed in L2.
	waitFor(t, time.Second, "the load written to L2", func() bool {
		_, ok := l2.has("a")
		return ok && a.Stats().L2.Writes == 1
	})
	clock.Advance(time.Second)
	v, info, err = a.Get(ctx, "a")
	if err != nil || v.Value != 1 || info.Source != SourceL1 || info.Age != time.Second {
		t.Fatalf("second Get = %v, %+v, %v; want 1 from L1, 1s old", v, info, err)
	}

	// Another instance sharing L2 gets it from there, with its true age.
	b := newTestCache(t, o)
	clock.Advance(time.Second)
	v, info, err = b.Get(ctx, "a")
	if err != nil || v.Value != 1 || info.Source != SourceL2 || info.Age != 2*time.Second {
		t.Fatalf("Get from the second instance = %v, %+v, %v; want 1 from L2, 2s old", v, info, err)
	}
	if got := d.loads.Load(); got != 1 {
		t.Errorf("loads = %d, want 1", got)
	}
	s := b.Stats()
	if s.L2.Hits != 1 || s.L1.Misses != 1 || s.Loader.Loads != 0 {
		t.Errorf("second instance's Stats = %+v, want 1 L2 hit, 1 L1 miss, no load", s)
	}
	if s := a.Stats(); s.L1.Hits != 1 || s.L2.Misses != 1 || s.Loader.Loads != 1 || s.L2.Writes != 1 {
		t.Errorf("first instance's Stats = %+v, want 1 L1 hit, 1 L2 miss, 1 load, 1 L2 write", s)
	}
}

func TestCoalescing(t *testing.T) {
	d := newDB()
	d.put("hot", 7, 1)
	d.gate = make(chan struct{})
	c := newTestCache(t, testOptions(d, newFakeL2()))

	const callers = 100
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			v, _, err := c.Get(context.Background(), "hot")
			if err == nil && v.Value != 7 {
				err = errors.New("wrong value " + strconv.Itoa(v.Value))
			}
			errs <- err
		})
	}
	// A caller that gives up leaves with its own error and fails nobody.
	cctx, cancel := context.WithCancel(context.Background())
	quit := make(chan error, 1)
	go func() { _, _, err := c.Get(cctx, "hot"); quit <- err }()
	waitFor(t, 5*time.Second, "all callers to join the load", func() bool {
		return c.Stats().Coalesced >= callers
	})
	cancel()
	if err := <-quit; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Get = %v, want context.Canceled", err)
	}
	close(d.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Get = %v, want 7", err)
		}
	}
	if got := d.loads.Load(); got != 1 {
		t.Errorf("loads = %d, want 1 for %d concurrent Gets", got, callers+1)
	}
}

func TestL2BreakerOpensOnHangAndCloses(t *testing.T) {
	d, l2 := newDB(), newFakeL2()
	o := testOptions(d, l2)
	o.L2Breaker.Delay = 300 * time.Millisecond
	c := newTestCache(t, o)
	ctx := context.Background()
	for i := range 1000 {
		d.put("k"+strconv.Itoa(i), i, 1)
	}
	// Warm the breaker's window with successes.
	for i := range 10 {
		if _, _, err := c.Get(ctx, "k"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}

	// Redis hangs. Cold keys at 100 req/s: the breaker must open in 200 ms.
	l2.hang.Store(true)
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	var wg sync.WaitGroup
	next := 10
	for c.Stats().L2.Breaker != "open" {
		if time.Since(start) > time.Second {
			t.Fatalf("L2 breaker still %s after 1 s of a hanging L2", c.Stats().L2.Breaker)
		}
		<-tick.C
		key := "k" + strconv.Itoa(next)
		next++
		wg.Go(func() {
			if _, _, err := c.Get(ctx, key); err != nil {
				t.Errorf("Get(%q) while L2 hangs = %v, want the loader's value", key, err)
			}
		})
	}
	tick.Stop()
	detect := time.Since(start)
	wg.Wait()
	t.Logf("L2 breaker opened %v after the hang began (%d requests at 100/s)", detect, next-10)
	if detect > 200*time.Millisecond {
		t.Errorf("L2 breaker opened after %v, want within 200 ms at 100 req/s", detect)
	}

	// Open: a cold Get skips L2 entirely and costs well under a millisecond
	// beyond the (instant) load.
	calls := l2.gets.Load() + l2.sets.Load()
	var took []time.Duration
	for range 51 {
		key := "k" + strconv.Itoa(next)
		next++
		t0 := time.Now()
		if _, info, err := c.Get(ctx, key); err != nil || info.Source != SourceLoader {
			t.Fatalf("Get(%q) with the breaker open = %+v, %v; want the loader's value", key, info, err)
		}
		took = append(took, time.Since(t0))
	}
	slices.Sort(took)
	if got := l2.gets.Load() + l2.sets.Load(); got != calls {
		t.Errorf("L2 calls with the breaker open = %d, want 0", got-calls)
	}
	t.Logf("cold Gets with the L2 breaker open: median %v, max %v", took[25], took[50])
	if took[25] > time.Millisecond {
		t.Errorf("median cold Get with the breaker open = %v, want < 1ms", took[25])
	}

	// Redis is back: after Delay, probes succeed and the breaker closes.
	l2.hang.Store(false)
	waitFor(t, 5*time.Second, "the L2 breaker to close", func() bool {
		key := "k" + strconv.Itoa(next)
		next++
		c.Get(ctx, key)
		return c.Stats().L2.Breaker == "closed"
	})
}

func TestStaleIfError(t *testing.T) {
	d, l2, clock := newDB(), newFakeL2(), newFakeClock()
	d.put("a", 1, 1)
	o := testOptions(d, l2)
	o.Now, o.TTL, o.StaleMax = clock.Now, time.Minute, 10*time.Minute
	c := newTestCache(t, o)
	ctx := context.Background()
	if _, _, err := c.Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the L2 write", func() bool { return l2.len() == 1 })

	l2.fail.Store(true)
	d.fail.Store(true)
	clock.Advance(2 * time.Minute)
	v, info, err := c.Get(ctx, "a")
	if err != nil || v.Value != 1 || !info.Stale || info.Source != SourceL1 || info.Age != 2*time.Minute {
		t.Fatalf("Get past TTL with L2 and loader down = %v, %+v, %v; want 1, stale, from L1, 2m old", v, info, err)
	}
	if s := c.Stats(); s.StaleServed != 1 {
		t.Errorf("StaleServed = %d, want 1", s.StaleServed)
	}

	// Not beyond StaleMax past the TTL.
	clock.Advance(10 * time.Minute)
	_, _, err = c.Get(ctx, "a")
	if !errors.Is(err, errFake) {
		t.Fatalf("Get beyond StaleMax = %v, want the loader's error", err)
	}

	// Recovery: fresh again.
	l2.fail.Store(false)
	d.fail.Store(false)
	v, info, err = c.Get(ctx, "a")
	if err != nil || v.Value != 1 || info.Stale || info.Source == SourceL1 {
		t.Fatalf("Get after recovery = %v, %+v, %v; want a fresh 1", v, info, err)
	}
}

func TestLoaderBreakerFailsFast(t *testing.T) {
	d := newDB()
	d.fail.Store(true)
	o := testOptions(d, nil)
	o.LoadBreaker.Delay = time.Hour
	c := newTestCache(t, o)
	ctx := context.Background()
	for i := range 5 {
		if _, _, err := c.Get(ctx, "k"+strconv.Itoa(i)); !errors.Is(err, errFake) {
			t.Fatalf("Get with a failing loader = %v, want its error", err)
		}
	}
	loads := d.loads.Load()
	_, _, err := c.Get(ctx, "other")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get with the loader breaker open = %v, want ErrUnavailable", err)
	}
	if d.loads.Load() != loads {
		t.Errorf("the loader was called with its breaker open")
	}
	if s := c.Stats(); s.Loader.Breaker != "open" || s.Loader.Rejected != 1 {
		t.Errorf("Stats().Loader = %+v, want open with 1 rejection", s.Loader)
	}
}

func TestBulkheadFullFailsFast(t *testing.T) {
	d := newDB()
	d.gate = make(chan struct{})
	defer close(d.gate)
	o := testOptions(d, nil)
	o.LoadConcurrencyMax = 2
	c := newTestCache(t, o)
	for i := range 2 {
		go c.Get(context.Background(), "slow"+strconv.Itoa(i))
	}
	waitFor(t, 5*time.Second, "two loads in flight", func() bool { return d.inFlight.Load() == 2 })
	start := time.Now()
	_, _, err := c.Get(context.Background(), "third")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get with the bulkhead full = %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Errorf("Get with the bulkhead full took %v, want fast", took)
	}
	if got := d.loads.Load(); got != 2 {
		t.Errorf("loads = %d, want 2", got)
	}
	if s := c.Stats(); s.Loader.BulkheadRejected != 1 {
		t.Errorf("BulkheadRejected = %d, want 1", s.Loader.BulkheadRejected)
	}
}

func TestNegativeCaching(t *testing.T) {
	d, clock := newDB(), newFakeClock()
	o := testOptions(d, newFakeL2())
	o.Now, o.NegativeTTL = clock.Now, 5*time.Second
	c := newTestCache(t, o)
	ctx := context.Background()
	for range 3 {
		if _, _, err := c.Get(ctx, "missing"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
		}
	}
	if got := d.loads.Load(); got != 1 {
		t.Fatalf("loads = %d, want 1 (absence cached)", got)
	}
	d.put("missing", 3, 1)
	clock.Advance(6 * time.Second)
	v, _, err := c.Get(ctx, "missing")
	if err != nil || v.Value != 3 {
		t.Fatalf("Get after NegativeTTL = %v, %v; want 3", v, err)
	}
	if got := d.loads.Load(); got != 2 {
		t.Errorf("loads = %d, want 2", got)
	}
}

func TestEarlyRefresh(t *testing.T) {
	d, clock := newDB(), newFakeClock()
	d.put("hot", 1, 1)
	o := testOptions(d, newFakeL2())
	o.Now, o.TTL = clock.Now, time.Minute
	c := newTestCache(t, o)
	ctx := context.Background()
	if _, _, err := c.Get(ctx, "hot"); err != nil {
		t.Fatal(err)
	}
	d.put("hot", 2, 2)

	// Long before expiry nothing is refreshed.
	clock.Advance(30 * time.Second)
	for range 1000 {
		c.Get(ctx, "hot")
	}
	if got := d.loads.Load(); got != 1 {
		t.Fatalf("loads half-way through the TTL = %d, want 1", got)
	}
	// Just before expiry (TTL jitter at most 10%: the entry expires between
	// 54 s and 60 s), a hot key is reloaded in the background, once, while
	// every Get is served from L1.
	e, _ := c.l1.GetIfPresent("hot")
	clock.ns.Store(e.freshUntil - int64(100*time.Microsecond))
	for i := 0; c.Stats().EarlyRefreshes == 0; i++ {
		v, info, err := c.Get(ctx, "hot")
		if err != nil || info.Source != SourceL1 || info.Stale {
			t.Fatalf("Get near expiry = %v, %+v, %v; want a fresh L1 value", v, info, err)
		}
		if i > 10_000 {
			t.Fatal("no early refresh in 10,000 Gets 100µs before expiry")
		}
	}
	waitFor(t, 5*time.Second, "the refreshed value in L1", func() bool {
		v, info, _ := c.Get(ctx, "hot")
		if info.Source != SourceL1 || info.Stale {
			t.Fatalf("Get during the refresh = %+v, want a fresh L1 value", info)
		}
		return v.Value == 2
	})
	clock.Advance(time.Millisecond) // past the old expiry
	v, info, err := c.Get(ctx, "hot")
	if err != nil || v.Value != 2 || info.Source != SourceL1 || info.Stale {
		t.Fatalf("Get after the old expiry = %v, %+v, %v; want 2, fresh, from L1", v, info, err)
	}
	if got, refreshes := d.loads.Load(), c.Stats().EarlyRefreshes; got != 2 || refreshes != 1 {
		t.Errorf("loads = %d, early refreshes = %d; want 2 and 1", got, refreshes)
	}
}

// TestStampede hits one hot key from many goroutines across several
// expiries: every expiry costs exactly one load.
func TestStampede(t *testing.T) {
	d := newDB()
	d.put("hot", 1, 1)
	d.delay = 5 * time.Millisecond
	o := testOptions(d, nil)
	o.TTL, o.TTLJitter, o.EarlyRefreshDisabled = 50*time.Millisecond, 0.01, true
	c := newTestCache(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, _, err := c.Get(context.Background(), "hot"); err != nil {
					t.Errorf("Get = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	loads := d.loads.Load()
	// 500 ms over a TTL of 49.5-50 ms plus a 5 ms load: at most 10 expiries
	// (fewer when the coarse clock lags on a saturated machine).
	t.Logf("%d loads, max %d concurrent, over 500 ms with TTL 50 ms and 64 readers", loads, d.maxConc.Load())
	if d.maxConc.Load() != 1 || loads > 11 || loads < 2 {
		t.Errorf("loads = %d (max %d at once), want one per expiry (2-11, never concurrent)", loads, d.maxConc.Load())
	}
}

func TestWarmupRefillsEmptyL2AtBoundedRate(t *testing.T) {
	d, l2 := newDB(), newFakeL2()
	o := testOptions(d, l2)
	o.WarmupRate, o.WarmupCheckInterval = 200, 20*time.Millisecond
	c := newTestCache(t, o)
	runCache(t, c)
	ctx := context.Background()
	const keys = 100
	for i := range keys {
		d.put("k"+strconv.Itoa(i), i, 1)
		if _, _, err := c.Get(ctx, "k"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "the sentinel and every load in L2", func() bool { return l2.len() == keys+1 })
	loads := d.loads.Load()

	// Redis restarts empty; the next check notices and refills it from L1.
	l2.Empty()
	waitFor(t, 10*time.Second, "L2 warmed up", func() bool { return l2.len() == keys+1 })
	writes := l2.writes()
	span := writes[len(writes)-1].Sub(writes[0])
	t.Logf("warm-up: %d writes in %v at WarmupRate 200/s", len(writes), span)
	// 100 writes at 200/s take about 0.5 s; allow scheduling slack.
	if span < 350*time.Millisecond {
		t.Errorf("warm-up wrote %d keys in %v, faster than 200/s", len(writes), span)
	}
	for i := 0; i+40 < len(writes); i++ {
		if w := writes[i+40].Sub(writes[i]); w < 150*time.Millisecond {
			t.Fatalf("41 writes within %v, want at most about 200/s", w)
		}
	}
	if got := d.loads.Load(); got != loads {
		t.Errorf("warm-up caused %d loads, want 0", got-loads)
	}
	if s := c.Stats(); s.Warmups < 1 || s.WarmupWrites < keys {
		t.Errorf("Stats = %+v, want a warm-up of %d writes", s, keys)
	}
}

func TestVersionedSet(t *testing.T) {
	d, l2 := newDB(), newFakeL2()
	o := testOptions(d, l2)
	o.Version = func(r row) int64 { return r.Version }
	c := newTestCache(t, o)
	ctx := context.Background()

	if err := c.Set(ctx, "a", row{Value: 2, Version: 2}); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "a", row{Value: 1, Version: 1}); err != nil {
		t.Fatal(err)
	}
	it, _ := l2.has("a")
	if r, _ := decodeRow(it.value[headerLen:]); r.Version != 2 || it.version != 2 {
		t.Errorf("L2 after Set v2, Set v1 = %+v (version %d), want v2", r, it.version)
	}
	if v, _, _ := c.Get(ctx, "a"); v.Version != 2 {
		t.Errorf("L1 after Set v2, Set v1 = %+v, want v2", v)
	}

	// A load that read v3 races a Set of v4: L1 and L2 keep v4.
	d.put("b", 3, 3)
	d.gate = make(chan struct{})
	got := make(chan row, 1)
	go func() { v, _, _ := c.Get(ctx, "b"); got <- v }()
	waitFor(t, 5*time.Second, "the load to start", func() bool { return d.inFlight.Load() == 1 })
	if err := c.Set(ctx, "b", row{Value: 4, Version: 4}); err != nil {
		t.Fatal(err)
	}
	close(d.gate)
	<-got
	v, info, _ := c.Get(ctx, "b")
	if v.Version != 4 || info.Source != SourceL1 {
		t.Errorf("Get after a load raced Set v4 = %+v, %+v; want v4 from L1", v, info)
	}
	waitFor(t, time.Second, "v4 in L2", func() bool { it, _ := l2.has("b"); return it.version == 4 })
}

func TestSetSupersedesLoadWithoutVersion(t *testing.T) {
	d := newDB()
	d.put("b", 3, 0)
	d.gate = make(chan struct{})
	c := newTestCache(t, testOptions(d, newFakeL2()))
	fetched := make(chan struct{})
	c.afterFetch = func() { close(fetched) }
	ctx := context.Background()
	go c.Get(ctx, "b")
	waitFor(t, 5*time.Second, "the load to start", func() bool { return d.inFlight.Load() == 1 })
	if err := c.Set(ctx, "b", row{Value: 4}); err != nil {
		t.Fatal(err)
	}
	close(d.gate)
	// A wrong L1 store would have happened by the time the fetch is done.
	select {
	case <-fetched:
	case <-time.After(5 * time.Second):
		t.Fatal("timed out after 5s waiting for the load to finish")
	}
	if v, _, _ := c.Get(ctx, "b"); v.Value != 4 {
		t.Errorf("Get after a load raced Set(4) = %+v, want 4", v)
	}
}

func TestBroadcastInvalidation(t *testing.T) {
	d, l2, h := newDB(), newFakeL2(), newHub()
	d.put("a", 1, 1)
	o := testOptions(d, l2)
	o.Broadcaster = h
	a, b := newTestCache(t, o), newTestCache(t, o)
	runCache(t, a)
	runCache(t, b)
	waitFor(t, 5*time.Second, "both subscribed", func() bool { return h.subscribers() == 2 })
	ctx := context.Background()
	a.Get(ctx, "a")
	waitFor(t, time.Second, "the load written to L2", func() bool { _, ok := l2.has("a"); return ok })
	if v, info, _ := b.Get(ctx, "a"); v.Value != 1 || info.Source != SourceL2 {
		t.Fatalf("b.Get = %v, %+v; want 1 from L2", v, info)
	}
	if err := a.Set(ctx, "a", row{Value: 2, Version: 2}); err != nil {
		t.Fatal(err)
	}
	v, info, err := b.Get(ctx, "a")
	if err != nil || v.Value != 2 || info.Source != SourceL2 {
		t.Fatalf("b.Get after a.Set(2) = %v, %+v, %v; want 2 from L2", v, info, err)
	}
	if err := a.Invalidate(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	d.put("a", 5, 5)
	if v, info, _ := b.Get(ctx, "a"); v.Value != 5 || info.Source != SourceLoader {
		t.Fatalf("b.Get after a.Invalidate = %v, %+v; want 5 from the loader", v, info)
	}
	if s := b.Stats(); s.InvalidationsReceived < 2 {
		t.Errorf("b received %d invalidations, want >= 2", s.InvalidationsReceived)
	}
}

func TestSetWhileL2DownIsRepaired(t *testing.T) {
	d, l2 := newDB(), newFakeL2()
	o := testOptions(d, l2)
	o.WarmupCheckInterval = 20 * time.Millisecond
	o.Version = func(r row) int64 { return r.Version }
	c := newTestCache(t, o)
	runCache(t, c)
	waitFor(t, 5*time.Second, "the sentinel", func() bool { return l2.len() == 1 })
	l2.fail.Store(true)
	err := c.Set(context.Background(), "a", row{Value: 9, Version: 9})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Set with L2 down = %v, want ErrUnavailable", err)
	}
	if v, info, _ := c.Get(context.Background(), "a"); v.Value != 9 || info.Source != SourceL1 {
		t.Fatalf("Get after Set with L2 down = %v, %+v; want 9 from L1", v, info)
	}
	l2.fail.Store(false)
	waitFor(t, 5*time.Second, "the deferred write repaired", func() bool {
		it, ok := l2.has("a")
		return ok && it.version == 9
	})
}

func TestRunStopsAndCloseWaits(t *testing.T) {
	d, l2, h := newDB(), newFakeL2(), newHub()
	o := testOptions(d, l2)
	o.Broadcaster = h
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitFor(t, 5*time.Second, "the subscription", func() bool { return h.subscribers() == 1 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its ctx ended")
	}
	if n := h.subscribers(); n != 0 {
		t.Errorf("subscribers after Run returned = %d, want 0", n)
	}

	// Close cancels a hanging load and waits for it.
	d.gate = make(chan struct{})
	got := make(chan error, 1)
	go func() { _, _, err := c.Get(context.Background(), "x"); got <- err }()
	waitFor(t, 5*time.Second, "the load to start", func() bool { return d.inFlight.Load() == 1 })
	c.Close()
	if n := d.inFlight.Load(); n != 0 {
		t.Errorf("loads in flight after Close = %d, want 0", n)
	}
	if err := <-got; !errors.Is(err, ErrUnavailable) {
		t.Errorf("Get cut by Close = %v, want ErrUnavailable", err)
	}
	if _, _, err := c.Get(context.Background(), "y"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Get after Close = %v, want ErrUnavailable", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	if _, err := New(Options[string, row]{}); err == nil {
		t.Error("New without Load succeeded")
	}
	load := func(context.Context, int) (row, error) { return row{}, nil }
	if _, err := New(Options[int, row]{Load: load, L2: newFakeL2(), Encode: encodeRow, Decode: decodeRow}); err == nil {
		t.Error("New with an int key, L2 and no Key succeeded")
	}
	if _, err := New(Options[int, row]{Load: load, Broadcaster: newHub(), Key: strconv.Itoa}); err == nil {
		t.Error("New with Broadcaster, Key and no ParseKey succeeded")
	}
	c, err := New(Options[int, row]{Load: load, Broadcaster: newHub(), Key: strconv.Itoa, ParseKey: strconv.Atoi})
	if err != nil {
		t.Fatalf("New with Key and ParseKey = %v", err)
	}
	c.Close()
}

func TestMetrics(t *testing.T) {
	d := newDB()
	d.put("a", 1, 1)
	o := testOptions(d, nil)
	o.Name = "metrics-test"
	c := newTestCache(t, o)
	ctx := context.Background()
	for range 3 {
		c.Get(ctx, "a")
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(Collectors()...)
	want := `
# HELP outlast_cache_hits_total Gets answered by the layer.
# TYPE outlast_cache_hits_total counter
outlast_cache_hits_total{cache="metrics-test",layer="l1"} 2
outlast_cache_hits_total{cache="metrics-test",layer="l2"} 0
# HELP outlast_cache_loads_total Successful loader calls.
# TYPE outlast_cache_loads_total counter
outlast_cache_loads_total{cache="metrics-test"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "outlast_cache_hits_total", "outlast_cache_loads_total"); err != nil {
		t.Error(err)
	}
}

// genericLeaves are the Outlast packages the cache may import, with their
// directories: each imports nothing of Outlast and no Redis client itself
// (checked below), so importing it keeps the cache generic.
var genericLeaves = map[string]string{
	"github.com/outlast/outlast/internal/backoff": "../internal/backoff",
}

// TestImportsStayGeneric keeps the package importable by any service: no
// outlast package but the generic leaves, no Redis client.
func TestImportsStayGeneric(t *testing.T) {
	banned := func(p string) bool {
		return strings.HasPrefix(p, "github.com/outlast/") || strings.Contains(p, "redis")
	}
	eachImport(t, ".", func(f, p string) {
		if _, leaf := genericLeaves[p]; !leaf && banned(p) {
			t.Errorf("%s imports %s", f, p)
		}
	})
	for leaf, dir := range genericLeaves {
		eachImport(t, dir, func(f, p string) {
			if banned(p) {
				t.Errorf("%s imports %s, so %s is no leaf the cache may import", f, p, leaf)
			}
		})
	}
}

// eachImport calls fn with every import of the non-test Go files in dir.
func eachImport(t *testing.T, dir string, fn func(file, path string)) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	if len(files) == 0 {
		t.Fatalf("no Go files in %s", dir)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			fn(f, p)
		}
	}
}

// TestRunProbesL2 checks that with Run active, requests never touch a hung
// L2 once the breaker is open (not even half-open probes), and that Run's
// own probes close the breaker after recovery without any traffic.
func TestRunProbesL2(t *testing.T) {
	d, l2 := newDB(), newFakeL2()
	o := testOptions(d, l2)
	o.L2Breaker.Delay = 100 * time.Millisecond
	o.L2Timeout = 20 * time.Millisecond
	c := newTestCache(t, o)
	runCache(t, c)
	ctx := context.Background()
	waitFor(t, 5*time.Second, "the sentinel", func() bool { return l2.len() == 1 })
	l2.hang.Store(true)
	next := 0
	waitFor(t, 5*time.Second, "the L2 breaker to open", func() bool {
		c.Get(ctx, "k"+strconv.Itoa(next))
		next++
		return c.Stats().L2.Breaker == "open"
	})
	// Several Delays pass; requests stay fast and Run alone probes.
	deadline := time.Now().Add(400 * time.Millisecond)
	var slowest time.Duration
	for time.Now().Before(deadline) {
		t0 := time.Now()
		c.Get(ctx, "k"+strconv.Itoa(next))
		next++
		slowest = max(slowest, time.Since(t0))
		time.Sleep(time.Millisecond)
	}
	if slowest >= o.L2Timeout {
		t.Errorf("slowest Get with L2 hung and Run probing = %v, want below L2Timeout %v", slowest, o.L2Timeout)
	}
	if s := c.Stats(); s.L2.Errors > 10 {
		t.Errorf("L2 errors = %d, want only detection and Run's probes", s.L2.Errors)
	}
	l2.hang.Store(false)
	waitFor(t, 5*time.Second, "Run's probes to close the breaker", func() bool { return c.Stats().L2.Breaker == "closed" })
}

// TestRestartEmptyAfterOutage: Redis refuses connections, comes back empty;
// reads are served throughout without loads for cached keys, and L2 is
// refilled from L1 once the breaker closes.
func TestRestartEmptyAfterOutage(t *testing.T) {
	d, l2 := newDB(), newFakeL2()
	o := testOptions(d, l2)
	o.L2Breaker.Delay = 50 * time.Millisecond
	o.WarmupCheckInterval = time.Hour // only the breaker closing triggers the check
	c := newTestCache(t, o)
	ctx := context.Background()
	const keys = 50
	for i := range keys {
		d.put("k"+strconv.Itoa(i), i, 1)
		c.Get(ctx, "k"+strconv.Itoa(i))
	}
	runCache(t, c)
	waitFor(t, 5*time.Second, "the sentinel and every load in L2", func() bool { return l2.len() == keys+1 })
	loads := d.loads.Load()

	l2.fail.Store(true)
	for i := 0; c.Stats().L2.Breaker != "open"; i++ {
		c.Get(ctx, "cold"+strconv.Itoa(i)) // L1 misses open the breaker
	}
	l2.Empty()
	for i := range keys {
		if v, info, err := c.Get(ctx, "k"+strconv.Itoa(i)); err != nil || v.Value != i || info.Source != SourceL1 {
			t.Fatalf("Get(k%d) during the outage = %v, %+v, %v; want %d from L1", i, v, info, err, i)
		}
	}
	l2.fail.Store(false)
	waitFor(t, 5*time.Second, "L2 refilled from L1", func() bool {
		for i := range keys {
			if _, ok := l2.has("k" + strconv.Itoa(i)); !ok {
				return false
			}
		}
		return true
	})
	// One warm-up when Run first found no sentinel, one after the restart.
	if s := c.Stats(); s.Warmups != 2 || s.L2.Breaker != "closed" {
		t.Errorf("Stats = %+v, want two warm-ups and the breaker closed", s)
	}
	cold := d.loads.Load() - loads
	for i := range keys {
		c.Get(ctx, "k"+strconv.Itoa(i))
	}
	if got := d.loads.Load() - loads; got != cold {
		t.Errorf("cached keys caused %d loads across the outage, want 0", got-cold)
	}
}

func TestOwnBroadcastsIgnored(t *testing.T) {
	c, err := New(Options[string, string]{Load: func(context.Context, string) (string, error) { return "", nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := c.tagOrigin("k\x1fwith-sep")
	if key, own := c.untagOrigin(msg); key != "k\x1fwith-sep" || !own {
		t.Errorf("untagOrigin(own %q) = %q, %v; want the key and own", msg, key, own)
	}
	if key, own := c.untagOrigin("k" + originSep + "someone-else"); key != "k" || own {
		t.Errorf("untagOrigin(other) = %q, %v; want k, false", key, own)
	}
	if key, own := c.untagOrigin("plain"); key != "plain" || own {
		t.Errorf("untagOrigin(untagged) = %q, %v; want plain, false", key, own)
	}
}
