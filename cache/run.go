package cache

import (
	"context"
	"sync"
	"time"

	"github.com/outlast/outlast/internal/backoff"
)

// Subscription retry bounds: the wait before resubscribing to a dead
// broadcast (Redis down) is at most 100 ms at first and never above 5 s.
const (
	subscribeBackoffMin = 100 * time.Millisecond
	subscribeBackoffMax = 5 * time.Second
)

// probeIntervalMin spaces probes while the breaker is half-open and has no
// permit left.
const probeIntervalMin = 10 * time.Millisecond

// Run does the cache's background work until ctx ends: it applies
// invalidations broadcast by other instances; while the L2 breaker is open
// it probes L2 itself, so requests skip L2 at no cost instead of paying for
// probes; otherwise it checks that L2 still holds its data (a sentinel key)
// every WarmupCheckInterval and whenever the breaker closes, refills an
// empty L2 from L1's hottest keys at WarmupRate, and repairs L2 writes that
// failed while it was down. It returns nil once ctx is done and all its
// goroutines have returned.
func (c *Cache[K, V]) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if c.opts.Broadcaster != nil {
		wg.Go(func() { c.subscribe(ctx) })
	}
	if c.opts.L2 != nil {
		wg.Go(func() { c.maintainL2(ctx) })
	}
	<-ctx.Done()
	wg.Wait()
	return nil
}

func (c *Cache[K, V]) subscribe(ctx context.Context) {
	retry := backoff.New(backoff.Policy{Base: subscribeBackoffMin, Max: subscribeBackoffMax})
	for {
		start := time.Now()
		err := c.opts.Broadcaster.Subscribe(ctx, c.onInvalidation)
		if ctx.Err() != nil {
			return
		}
		c.counters.subscribeErrors.Add(1)
		c.log.Warn("cache: invalidation subscription ended; other instances' changes reach L1 only by TTL until it is back", "err", err)
		// A subscription that lasted was a success: the next failure is
		// a new outage, retried soon again.
		if time.Since(start) > subscribeBackoffMax {
			retry.Reset()
		}
		if !retry.Wait(ctx) {
			return
		}
	}
}

// onInvalidation makes a key changed by another instance stale in L1. Keys
// of other caches fail ParseKey and are ignored, and so are this
// instance's own broadcasts, whose values its L1 already has.
func (c *Cache[K, V]) onInvalidation(msg string) {
	skey, own := c.untagOrigin(msg)
	if own {
		return
	}
	key, err := c.parseKey(skey)
	if err != nil {
		return
	}
	c.counters.invalidationsReceived.Add(1)
	c.expireL1(key)
}

// maintainL2 probes L2 while its breaker is open (so requests never pay for
// a probe), and otherwise checks it for lost data and failed writes.
func (c *Cache[K, V]) maintainL2(ctx context.Context) {
	c.probing.Add(1)
	defer c.probing.Add(-1)
	t := time.NewTicker(c.opts.WarmupCheckInterval)
	defer t.Stop()
	probe := time.NewTimer(time.Hour)
	defer probe.Stop()
	for {
		probe.Stop()
		if c.l2Down.Load() {
			c.probeL2(ctx)
			probe.Reset(max(c.l2Breaker.RemainingDelay(), probeIntervalMin))
		} else {
			c.checkL2(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.l2Changed:
		case <-probe.C:
		}
	}
}

// probeL2 reads the sentinel until the breaker closes or a probe fails.
func (c *Cache[K, V]) probeL2(ctx context.Context) {
	for range c.opts.L2Breaker.SuccessThreshold {
		if _, err := c.sentinelPresent(ctx); err != nil || !c.l2Down.Load() {
			return
		}
	}
}

// sentinelKey marks that L2 holds this cache's data. Keys from Key must not
// collide with it.
func (c *Cache[K, V]) sentinelKey() string { return "cache:sentinel:" + c.name }

// checkL2 warms L2 up when its sentinel is gone, then repairs failed writes.
func (c *Cache[K, V]) checkL2(ctx context.Context) {
	found, err := c.sentinelPresent(ctx)
	if err != nil {
		return // L2 down or its breaker open: check again later
	}
	if !found {
		c.counters.warmups.Add(1)
		n, err := c.warmup(ctx)
		if err != nil {
			c.log.Warn("cache: l2 warm-up stopped", "written", n, "err", err)
			return
		}
		if err := c.setSentinel(ctx); err != nil {
			return
		}
		c.log.Info("cache: l2 was empty; warmed up from l1", "written", n)
	}
	if err := c.repair(ctx); err != nil {
		c.log.Warn("cache: l2 repair stopped", "err", err)
	}
}

// sentinelPresent reads the sentinel through the breaker itself (not
// l2Permit): it is the probe.
func (c *Cache[K, V]) sentinelPresent(ctx context.Context) (bool, error) {
	if !c.l2Breaker.TryAcquirePermit() {
		return false, errL2Open
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.L2Timeout)
	defer cancel()
	_, _, found, err := c.opts.L2.Get(ctx, c.sentinelKey())
	if err != nil {
		c.l2Breaker.RecordFailure()
		return false, err
	}
	c.l2Breaker.RecordSuccess()
	return found, nil
}

func (c *Cache[K, V]) setSentinel(ctx context.Context) error {
	if !c.l2Permit() {
		return errL2Open
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.L2Timeout)
	defer cancel()
	err := c.opts.L2.Set(ctx, c.sentinelKey(), []byte{headerFormat}, time.Now().UnixNano(), sentinelTTL)
	if err != nil {
		c.l2Breaker.RecordFailure()
		return err
	}
	c.l2Breaker.RecordSuccess()
	return nil
}

type warmItem[K comparable, V any] struct {
	key K
	e   *entry[V]
}

// warmup writes L1's fresh values to L2, hottest first, at WarmupRate. It
// stops at the first failure: the sentinel stays missing, so the next check
// starts over (versioned writes make repeating harmless).
func (c *Cache[K, V]) warmup(ctx context.Context) (int, error) {
	now := c.now()
	// Collected first: otter holds its eviction lock while iterating.
	items := make([]warmItem[K, V], 0, c.l1.EstimatedSize())
	for ent := range c.l1.Hottest() {
		if e := ent.Value; !e.notFound && now < e.freshUntil {
			items = append(items, warmItem[K, V]{ent.Key, e})
		}
	}
	for i, it := range items {
		if err := c.warmupLimit.AcquirePermit(ctx); err != nil {
			return i, err
		}
		if err := c.writeL2(ctx, it.key, it.e); err != nil {
			return i, err
		}
		c.counters.warmupWrites.Add(1)
	}
	return len(items), nil
}

// repair redoes the L2 writes, deletes and broadcasts that failed while L2
// was down, at WarmupRate: L1's fresh value is written, else the key is
// deleted so the next read loads it.
func (c *Cache[K, V]) repair(ctx context.Context) error {
	c.mu.Lock()
	keys := make([]K, 0, len(c.pending))
	for k := range c.pending {
		keys = append(keys, k)
	}
	clear(c.pending)
	c.mu.Unlock()
	for i, k := range keys {
		err := c.warmupLimit.AcquirePermit(ctx)
		if err == nil {
			err = c.repairKey(ctx, k)
		}
		if err != nil {
			for _, k := range keys[i:] {
				c.markPending(k)
			}
			return err
		}
		c.counters.warmupWrites.Add(1)
	}
	return nil
}

func (c *Cache[K, V]) repairKey(ctx context.Context, key K) error {
	ent, ok := c.l1.GetEntryQuietly(key)
	e := ent.Value
	var err error
	if ok && !e.notFound && c.now() < e.freshUntil {
		err = c.writeL2(ctx, key, e)
	} else {
		err = c.deleteL2(ctx, key)
	}
	if err != nil {
		return err
	}
	c.publish(ctx, key)
	return nil
}
