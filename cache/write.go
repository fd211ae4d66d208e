package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/maypok86/otter/v2"
)

var errL2Open = errors.New("l2 breaker open")

// Set writes v through: into L1 (unless L1 holds a newer version), into L2
// with its version (so an older value never overwrites a newer one), and
// broadcasts the key so other instances drop their copy. A load of key in
// flight is not stored, since it may predate v.
//
// L1 is always updated. When L2 cannot be written (down, breaker open),
// Set returns an error satisfying errors.Is(err, ErrUnavailable) and queues
// the key: once L2 is back, Run rewrites it from L1 (or deletes it) and
// broadcasts it again.
func (c *Cache[K, V]) Set(ctx context.Context, key K, v V) error {
	now := c.now()
	e := c.newEntry(v, c.nextVersion(v, now, true), now, now, c.loadNanos.Load())
	c.mu.Lock()
	if cl, ok := c.calls[key]; ok {
		cl.superseded = true
	}
	c.storeL1(key, e)
	c.mu.Unlock()
	if c.opts.L2 == nil {
		c.publish(ctx, key)
		return nil
	}
	err := c.writeL2(ctx, key, e)
	if err != nil && !errors.Is(err, errEncode) {
		c.markPending(key)
		return fmt.Errorf("cache %q: set: %w: l2 write deferred: %w", c.name, ErrUnavailable, err)
	}
	c.publish(ctx, key)
	if err != nil {
		return fmt.Errorf("cache %q: set: %w", c.name, err)
	}
	return nil
}

// Invalidate makes key stale everywhere: in L1 (the value is kept only to be
// served stale if L2 and the loader fail), in L2 (deleted) and in other
// instances (broadcast). When L2 cannot be reached, it returns an error
// satisfying errors.Is(err, ErrUnavailable) and queues the key for repair.
func (c *Cache[K, V]) Invalidate(ctx context.Context, key K) error {
	c.expireL1(key)
	if c.opts.L2 == nil {
		c.publish(ctx, key)
		return nil
	}
	if err := c.deleteL2(ctx, key); err != nil {
		c.markPending(key)
		return fmt.Errorf("cache %q: invalidate: %w: l2 delete deferred: %w", c.name, ErrUnavailable, err)
	}
	c.publish(ctx, key)
	return nil
}

// expireL1 makes key's L1 entry stale and supersedes a load in flight.
func (c *Cache[K, V]) expireL1(key K) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.calls[key]; ok {
		cl.superseded = true
	}
	c.l1.ComputeIfPresent(key, func(old *entry[V]) (*entry[V], otter.ComputeOp) {
		if x := old.expired(now); x != nil {
			return x, otter.WriteOp
		}
		return nil, otter.InvalidateOp
	})
}

var errEncode = errors.New("encode")

// writeL2 writes e to L2 through the breaker, for the rest of e's
// freshness.
func (c *Cache[K, V]) writeL2(ctx context.Context, key K, e *entry[V]) error {
	if c.opts.L2 == nil {
		return nil
	}
	ttl := time.Duration(e.freshUntil - c.now())
	if ttl <= 0 {
		return nil
	}
	b, err := c.encode(e)
	if err != nil {
		c.counters.l2Errors.Add(1)
		return fmt.Errorf("%w: %w", errEncode, err)
	}
	if !c.l2Permit() {
		return errL2Open
	}
	// Its own timeout, not the caller's cancellation: a failure is then
	// always L2's, which is what the breaker must count.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.L2Timeout)
	defer cancel()
	if err := c.opts.L2.Set(ctx, c.key(key), b, e.version, ttl); err != nil {
		c.l2Breaker.RecordFailure()
		c.counters.l2Errors.Add(1)
		return fmt.Errorf("l2 set: %w", err)
	}
	c.l2Breaker.RecordSuccess()
	c.counters.l2Writes.Add(1)
	return nil
}

func (c *Cache[K, V]) deleteL2(ctx context.Context, key K) error {
	if !c.l2Permit() {
		return errL2Open
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.L2Timeout)
	defer cancel()
	if err := c.opts.L2.Delete(ctx, c.key(key)); err != nil {
		c.l2Breaker.RecordFailure()
		c.counters.l2Errors.Add(1)
		return fmt.Errorf("l2 delete: %w", err)
	}
	c.l2Breaker.RecordSuccess()
	return nil
}

// publish broadcasts key, best effort. With the broadcast on the same Redis
// as L2, an open L2 breaker skips it rather than pay a timeout; the key is
// queued and broadcast again once L2 is back.
func (c *Cache[K, V]) publish(ctx context.Context, key K) {
	if c.opts.Broadcaster == nil {
		return
	}
	if c.opts.L2 != nil && c.l2Down.Load() {
		c.counters.publishErrors.Add(1)
		c.markPending(key)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.L2Timeout)
	defer cancel()
	if err := c.opts.Broadcaster.Publish(ctx, c.tagOrigin(c.key(key))); err != nil {
		c.counters.publishErrors.Add(1)
		c.log.Debug("cache: publish invalidation", "err", err)
		if c.opts.L2 != nil {
			c.markPending(key)
		}
	}
}

// markPending queues key for repair once L2 is back, up to L1MaxEntries
// keys; past that the change reaches other instances only when their L1 TTL
// runs out.
func (c *Cache[K, V]) markPending(key K) {
	if c.opts.L2 == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) >= c.opts.L1MaxEntries {
		c.counters.pendingDropped.Add(1)
		return
	}
	c.pending[key] = struct{}{}
}
