// Package cache is a generic tiered read-through cache built to keep serving
// when its shared store (Redis) or its source of truth (the database) fails.
//
// A Get looks in L1 (an in-process otter cache, always on, bounded by size),
// then in an optional L2 (a shared store such as Redis, behind the L2
// interface), then calls the loader. Around the slow layers it puts a circuit
// breaker each (failsafe-go), so a dead Redis costs nothing once detected;
// per-key request coalescing, so one key is loaded once per instance at a
// time; a bulkhead on concurrent loads, so a cold cache cannot flood the
// database; stale-if-error, so a value past its TTL is served (and said to be
// stale) when both slow layers fail; negative caching; TTL jitter; XFetch
// early refresh of hot keys; and a warm-up that refills an empty Redis from L1
// at a bounded rate after a restart.
//
// The package imports no domain types: it can be used by any service.
package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/ratelimiter"
	"github.com/maypok86/otter/v2"
)

// ErrNotFound reports that the source of truth has no value for a key. A
// loader returns an error satisfying errors.Is(err, ErrNotFound) for a
// missing row; the cache then remembers the absence for NegativeTTL.
var ErrNotFound = errors.New("cache: not found")

// ErrUnavailable reports that no value can be had right now and nothing stale
// is left to serve: the bulkhead is full, the loader's breaker is open, the
// load timed out, or the cache is closed. It comes back fast, never after a
// queue; callers should answer "retry later".
var ErrUnavailable = errors.New("cache: unavailable")

// L2 is a shared second-level store (Redis). Values are opaque bytes;
// versions make writes monotonic: Set stores value only if version is
// greater than the stored one (or none is stored).
//
// Implementations must return once ctx is done: the cache bounds every call
// with L2Timeout through ctx and relies on it.
type L2 interface {
	Get(ctx context.Context, key string) (value []byte, version int64, found bool, err error)
	Set(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) error
	Delete(ctx context.Context, key string) error
}

// Broadcaster spreads invalidations to other instances, best effort.
type Broadcaster interface {
	Publish(ctx context.Context, key string) error
	// Subscribe calls fn for every key published by any instance until ctx ends.
	Subscribe(ctx context.Context, fn func(key string)) error
}

// Source says which layer answered a Get.
type Source uint8

const (
	// SourceL1 is the in-process cache (also for stale values kept there).
	SourceL1 Source = iota
	// SourceL2 is the shared store.
	SourceL2
	// SourceLoader is the source of truth.
	SourceLoader
)

func (s Source) String() string {
	switch s {
	case SourceL1:
		return "l1"
	case SourceL2:
		return "l2"
	case SourceLoader:
		return "loader"
	}
	return fmt.Sprintf("source(%d)", uint8(s))
}

// Info says where a value came from and how fresh it is.
type Info struct {
	Source Source
	// Stale is true when the value is past its TTL and was served because L2
	// and the loader failed (stale-if-error).
	Stale bool
	// Age is the time since the value was read from the source of truth.
	Age time.Duration
}

// Cache is a tiered read-through cache. Its methods are safe for concurrent
// use. Create it with New, run its background work with Run, and release it
// with Close.
type Cache[K comparable, V any] struct {
	opts     Options[K, V]
	name     string
	key      func(K) string
	parseKey func(string) (K, error)
	log      *slog.Logger
	// origin tags this instance's broadcasts so it can ignore its own:
	// its L1 already holds what it wrote.
	origin string

	l1    *otter.Cache[K, *entry[V]]
	clock *otter.CoarseClock // nil when Options.Now is set
	now   func() int64       // unix nanoseconds; coarse unless Options.Now is set

	l2Breaker   circuitbreaker.CircuitBreaker[any]
	loadBreaker circuitbreaker.CircuitBreaker[any]
	warmupLimit ratelimiter.RateLimiter[any]
	// l2Down is set while the L2 breaker is not closed. While it is and Run
	// is probing (probing > 0), requests skip L2 without touching the
	// breaker, so no request pays for a probe of a hanging Redis.
	l2Down    atomic.Bool
	probing   atomic.Int32
	l2Changed chan struct{} // cap 1: the L2 breaker opened or closed; wakes Run

	// loading counts loader calls in flight, the bulkhead.
	loading atomic.Int64
	// loadNanos is the last measured load time, used as the XFetch delta of
	// values written with Set.
	loadNanos atomic.Int64
	// versionClock hands out versions when Options.Version is nil: unix
	// nanoseconds, strictly increasing within this instance.
	versionClock atomic.Int64

	counters counters
	metrics  *registration

	// mu guards calls, closed, pending and the check-then-write of L1 by
	// loads, Set and Invalidate, so a load that started before a Set never
	// overwrites the Set's value.
	mu      sync.Mutex
	calls   map[K]*call[V]
	closed  bool
	pending map[K]struct{} // keys whose L2 write or delete failed; repaired when L2 is back

	baseCtx   context.Context // cancelled by Close; parent of every load
	cancelAll context.CancelFunc
	wg        sync.WaitGroup // load goroutines
	closeOnce sync.Once

	// afterFetch, if set, is called once a fetch has stored its value in L1
	// or dropped it, so a test can wait for that moment instead of
	// sleeping. It is set before the cache is used and never written after.
	afterFetch func()
}

// clockResolution is how often the coarse clock reads the time. A millisecond
// is far below any TTL and below a database load, and saves the hot path from
// reading the precise time on every Get.
const clockResolution = time.Millisecond

// sentinelTTL keeps the sentinel key in L2 long after any TTL: its absence
// means L2 lost its data (restart, failover to an empty replica, flush).
const sentinelTTL = 24 * time.Hour

// New returns a cache configured by opts, or an error when opts is invalid.
func New[K comparable, V any](opts Options[K, V]) (*Cache[K, V], error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	c := &Cache[K, V]{
		opts:      opts,
		name:      opts.Name,
		log:       opts.Logger.With("cache", opts.Name),
		origin:    newOrigin(),
		l2Changed: make(chan struct{}, 1),
		calls:     make(map[K]*call[V]),
		pending:   make(map[K]struct{}),
	}
	if err := c.initKeys(); err != nil {
		return nil, err
	}
	var clock otter.Clock
	if opts.Now != nil {
		clock = seamClock{now: opts.Now}
		c.now = func() int64 { return opts.Now().UnixNano() }
	} else {
		c.clock = otter.NewCoarseClock(clockResolution)
		clock = c.clock
		c.now = c.clock.NowNano
	}
	c.counters.l1Hits = newStripedCounter()
	l1, err := otter.New(&otter.Options[K, *entry[V]]{
		MaximumSize: opts.L1MaxEntries,
		Clock:       clock,
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[K, *entry[V]]) time.Duration {
			return e.Value.lifetime
		}),
	})
	if err != nil {
		c.stopClock()
		return nil, fmt.Errorf("cache %q: l1: %w", opts.Name, err)
	}
	c.l1 = l1
	c.l2Breaker = c.newBreaker(opts.L2Breaker, "l2", func(s circuitbreaker.State) {
		c.l2Down.Store(s != circuitbreaker.ClosedState)
		select {
		case c.l2Changed <- struct{}{}:
		default:
		}
	})
	c.loadBreaker = c.newBreaker(opts.LoadBreaker, "loader", nil)
	c.warmupLimit = ratelimiter.NewSmooth[any](uint(opts.WarmupRate), time.Second)
	c.baseCtx, c.cancelAll = context.WithCancel(context.Background())
	c.metrics = register(opts.Name, c.Stats)
	return c, nil
}

// initKeys sets how keys become L2 keys and back. A string-kinded K needs
// neither Key nor ParseKey.
func (c *Cache[K, V]) initKeys() error {
	c.key, c.parseKey = c.opts.Key, c.opts.ParseKey
	stringKind := reflect.TypeFor[K]().Kind() == reflect.String
	if c.key == nil && stringKind {
		c.key = func(k K) string { return reflect.ValueOf(k).String() }
		if c.parseKey == nil {
			c.parseKey = func(s string) (K, error) {
				var k K
				reflect.ValueOf(&k).Elem().SetString(s)
				return k, nil
			}
		}
	}
	if c.key == nil && (c.opts.L2 != nil || c.opts.Broadcaster != nil) {
		return fmt.Errorf("cache %q: Key is required with L2 or Broadcaster when K is not a string", c.name)
	}
	if c.parseKey == nil && c.opts.Broadcaster != nil {
		return fmt.Errorf("cache %q: ParseKey is required with Broadcaster when Key is set", c.name)
	}
	return nil
}

// Get returns the value for key: from L1 when fresh, else from L2 or the
// loader (one load per key at a time, shared by all callers), else a stale
// value from L1 when both fail. It returns ErrNotFound for a missing value,
// ErrUnavailable when nothing can be served, or ctx.Err() when ctx ends
// first (the shared load goes on for the others).
//
// An L1 hit allocates nothing, takes no lock beyond otter's and reads only
// the coarse clock.
func (c *Cache[K, V]) Get(ctx context.Context, key K) (V, Info, error) {
	e, ok := c.l1.GetIfPresent(key)
	if ok {
		now := c.now()
		if now < e.freshUntil {
			if now >= e.refreshFrom {
				c.maybeRefresh(key, e, now)
			}
			c.counters.l1Hits.add()
			info := Info{Source: SourceL1, Age: e.age(now)}
			if e.notFound {
				var zero V
				return zero, info, ErrNotFound
			}
			return e.value, info, nil
		}
	}
	c.counters.l1Misses.Add(1)
	return c.getSlow(ctx, key, e)
}

// Close stops in-flight loads and waits for them, stops the clock and L1's
// goroutines, and removes the cache from the metrics. Calls after Close get
// L1 hits and ErrUnavailable otherwise. Run must be stopped separately (by
// its ctx).
func (c *Cache[K, V]) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.cancelAll()
		c.wg.Wait()
		c.l1.StopAllGoroutines()
		c.stopClock()
		c.metrics.unregister()
	})
	return nil
}

func (c *Cache[K, V]) stopClock() {
	if c.clock != nil {
		c.clock.Stop()
	}
}

// seamClock adapts Options.Now to otter. It gives no ticks, so L1 expires
// entries lazily, which tests with a fake clock want.
type seamClock struct{ now func() time.Time }

func (s seamClock) NowNano() int64                      { return s.now().UnixNano() }
func (s seamClock) Tick(time.Duration) <-chan time.Time { return nil }

// originSep separates a broadcast key from its sender's origin tag; the
// ASCII unit separator does not occur in sensible keys, and the tag is cut
// at its last occurrence anyway.
const originSep = "\x1f"

func newOrigin() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// tagOrigin returns the broadcast message for skey.
func (c *Cache[K, V]) tagOrigin(skey string) string { return skey + originSep + c.origin }

// untagOrigin splits a broadcast message; own reports whether this instance
// sent it. A message without a tag (another publisher) is all key.
func (c *Cache[K, V]) untagOrigin(msg string) (skey string, own bool) {
	i := strings.LastIndex(msg, originSep)
	if i < 0 {
		return msg, false
	}
	return msg[:i], msg[i+len(originSep):] == c.origin
}
