package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/maypok86/otter/v2"
)

// call is one fetch of a key shared by every Get that wants it meanwhile.
// value, info and err are written once before done is closed.
type call[V any] struct {
	done  chan struct{}
	value V
	info  Info
	err   error
	// superseded is set (under Cache.mu) by a Set or Invalidate of the key
	// during the fetch: the fetched value may predate the write, so it is
	// not stored.
	superseded bool
}

// result is what a fetch found. store is the entry to put in L1 (nil for
// nothing); writeL2 says it came from the loader and belongs in L2 too.
type result[V any] struct {
	store   *entry[V]
	writeL2 bool
	value   V
	info    Info
	err     error
}

// getSlow serves an L1 miss or a stale L1 entry (prev) through a shared
// fetch.
func (c *Cache[K, V]) getSlow(ctx context.Context, key K, prev *entry[V]) (V, Info, error) {
	cl, err := c.join(ctx, key, prev, false)
	if err != nil {
		r := c.fallback(prev, c.now(), err)
		return c.deliver(r.value, r.info, r.err)
	}
	select {
	case <-cl.done:
		return c.deliver(cl.value, cl.info, cl.err)
	case <-ctx.Done():
		var zero V
		return zero, Info{}, ctx.Err()
	}
}

func (c *Cache[K, V]) deliver(v V, info Info, err error) (V, Info, error) {
	if info.Stale && err == nil {
		c.counters.staleServed.Add(1)
	}
	return v, info, err
}

// join returns the fetch in flight for key, starting one if there is none.
// The fetch runs in its own goroutine under its own context, so the caller
// that started it may leave without failing the others.
func (c *Cache[K, V]) join(ctx context.Context, key K, prev *entry[V], refresh bool) (*call[V], error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.calls[key]; ok {
		if !refresh {
			c.counters.coalesced.Add(1)
		}
		return cl, nil
	}
	if c.closed {
		return nil, fmt.Errorf("cache %q: %w: closed", c.name, ErrUnavailable)
	}
	if len(c.calls) >= 16*c.opts.LoadConcurrencyMax {
		c.counters.bulkheadRejected.Add(1)
		return nil, fmt.Errorf("cache %q: %w: %d keys being fetched", c.name, ErrUnavailable, len(c.calls))
	}
	cl := &call[V]{done: make(chan struct{})}
	c.calls[key] = cl
	c.wg.Add(1)
	go c.fetchShared(context.WithoutCancel(ctx), key, cl, prev, refresh)
	return cl, nil
}

// fetchShared runs one fetch for every caller of key.
func (c *Cache[K, V]) fetchShared(parent context.Context, key K, cl *call[V], prev *entry[V], refresh bool) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(parent, c.opts.LoadTimeout)
	defer cancel()
	stop := context.AfterFunc(c.baseCtx, cancel)
	defer stop()

	r := c.fetch(ctx, key, prev, refresh)

	c.mu.Lock()
	superseded := cl.superseded
	if r.store != nil && !superseded {
		// A value with a newer version already in L1 wins; callers get it.
		if won := c.storeL1(key, r.store); won != r.store && !won.notFound {
			now := c.now()
			r.value, r.info = won.value, Info{Source: SourceL1, Age: won.age(now)}
		}
	}
	delete(c.calls, key)
	c.mu.Unlock()
	if c.afterFetch != nil {
		c.afterFetch()
	}

	cl.value, cl.info, cl.err = r.value, r.info, r.err
	close(cl.done)
	if r.writeL2 && !superseded {
		// Counted in the L2 metrics; the value is served either way.
		if err := c.writeL2(ctx, key, r.store); err != nil {
			c.log.Debug("cache: l2 write after load", "err", err)
		}
	}
}

// fetch asks L2, then the loader. A refresh takes L2's value only when it
// is newer than what L1 has, since L2 usually holds the same one.
func (c *Cache[K, V]) fetch(ctx context.Context, key K, prev *entry[V], refresh bool) result[V] {
	if c.opts.L2 != nil {
		if e, ok := c.getL2(ctx, key); ok && (!refresh || prev == nil || e.loadedAt > prev.loadedAt) {
			return result[V]{store: e, value: e.value, info: Info{Source: SourceL2, Age: e.age(c.now())}}
		}
	}
	return c.load(ctx, key, prev)
}

// getL2 reads key from L2 through its breaker and timeout.
func (c *Cache[K, V]) getL2(ctx context.Context, key K) (*entry[V], bool) {
	if !c.l2Permit() {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.L2Timeout)
	b, version, found, err := c.opts.L2.Get(ctx, c.key(key))
	cancel()
	if err != nil {
		c.l2Breaker.RecordFailure()
		c.counters.l2Errors.Add(1)
		return nil, false
	}
	c.l2Breaker.RecordSuccess()
	if !found {
		c.counters.l2Misses.Add(1)
		return nil, false
	}
	v, loadedAt, delta, err := c.decode(b)
	if err != nil {
		// A value this version cannot read is a miss; the load overwrites it.
		c.counters.l2Errors.Add(1)
		c.log.Warn("cache: undecodable l2 value", "key", c.key(key), "err", err)
		return nil, false
	}
	c.counters.l2Hits.Add(1)
	return c.newEntry(v, version, c.now(), loadedAt, delta), true
}

// load calls the loader behind the bulkhead and the breaker.
func (c *Cache[K, V]) load(ctx context.Context, key K, prev *entry[V]) result[V] {
	if c.loading.Add(1) > int64(c.opts.LoadConcurrencyMax) {
		c.loading.Add(-1)
		c.counters.bulkheadRejected.Add(1)
		return c.fallback(prev, c.now(), fmt.Errorf("cache %q: %w: %d loads in flight", c.name, ErrUnavailable, c.opts.LoadConcurrencyMax))
	}
	defer c.loading.Add(-1)
	if !c.loadBreaker.TryAcquirePermit() {
		c.counters.loadRejected.Add(1)
		return c.fallback(prev, c.now(), fmt.Errorf("cache %q: %w: loader breaker open", c.name, ErrUnavailable))
	}
	start := time.Now()
	v, err := c.callLoad(ctx, key)
	delta := time.Since(start)
	c.metrics.loadSeconds.Observe(delta.Seconds())
	now := c.now()
	switch {
	case err == nil:
		c.loadBreaker.RecordSuccess()
		c.counters.loads.Add(1)
		c.loadNanos.Store(int64(delta))
		e := c.newEntry(v, c.nextVersion(v, now, false), now, now, int64(delta))
		return result[V]{store: e, writeL2: true, value: v, info: Info{Source: SourceLoader}}
	case errors.Is(err, ErrNotFound):
		c.loadBreaker.RecordSuccess()
		c.counters.loadNotFound.Add(1)
		return result[V]{store: c.newNegative(now), info: Info{Source: SourceLoader}, err: ErrNotFound}
	}
	c.loadBreaker.RecordFailure()
	c.counters.loadErrors.Add(1)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return c.fallback(prev, now, fmt.Errorf("cache %q: load: %w", c.name, err))
}

// callLoad calls Options.Load, turning a panic into an error: the load runs
// on its own goroutine, where a panic would take the process down.
func (c *Cache[K, V]) callLoad(ctx context.Context, key K) (v V, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("loader panicked: %v", p)
		}
	}()
	return c.opts.Load(ctx, key)
}

// fallback serves prev when it can (stale-if-error), else err.
func (c *Cache[K, V]) fallback(prev *entry[V], now int64, err error) result[V] {
	if !prev.servable(now) {
		return result[V]{err: err}
	}
	return result[V]{value: prev.value, info: Info{Source: SourceL1, Stale: now >= prev.freshUntil, Age: prev.age(now)}}
}

// storeL1 puts e in L1 unless L1 holds a value with a newer version, in
// which case that value stays and takes e's freshness: the load proved
// nothing newer than e exists, and the newer one came from a Set. It
// returns the entry L1 holds. Called with c.mu held.
func (c *Cache[K, V]) storeL1(key K, e *entry[V]) *entry[V] {
	if c.opts.Version == nil || e.notFound {
		c.l1.Set(key, e)
		return e
	}
	won, _ := c.l1.Compute(key, func(old *entry[V], found bool) (*entry[V], otter.ComputeOp) {
		if found && !old.notFound && old.version > e.version {
			return &entry[V]{
				value: old.value, version: old.version, loadedAt: old.loadedAt, deltaNanos: old.deltaNanos,
				freshUntil: e.freshUntil, staleUntil: e.staleUntil, refreshFrom: e.refreshFrom, lifetime: e.lifetime,
			}, otter.WriteOp
		}
		return e, otter.WriteOp
	})
	return won
}

// maybeRefresh starts an XFetch early refresh of a fresh entry.
func (c *Cache[K, V]) maybeRefresh(key K, e *entry[V], now int64) {
	if e.refreshing.Load() || !c.xfetch(e, now) || !e.refreshing.CompareAndSwap(false, true) {
		return
	}
	c.counters.earlyRefreshes.Add(1)
	// The refresh is the caller's work done early, so it keeps no caller
	// context; join fails only when closed or overloaded, and then the entry
	// simply expires.
	_, _ = c.join(context.Background(), key, e, true)
}
