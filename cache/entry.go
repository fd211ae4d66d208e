package cache

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// entry is what L1 holds. It is immutable once stored, except refreshing;
// a change replaces the whole entry. Times are unix nanoseconds.
type entry[V any] struct {
	value    V
	version  int64
	notFound bool
	loadedAt int64 // read from the source of truth
	// freshUntil is when the value turns stale; staleUntil when it leaves L1.
	freshUntil int64
	staleUntil int64
	// refreshFrom is when XFetch starts rolling the dice: before it the
	// chance of an early refresh is below e^-20, so the hot path skips the
	// dice with one comparison. math.MaxInt64 when early refresh is off.
	refreshFrom int64
	deltaNanos  int64         // how long loading it took
	lifetime    time.Duration // from storing to staleUntil, for otter's expiry
	// refreshing is set by the one Get that starts an early refresh, so the
	// others do not queue on the calls mutex while it runs.
	refreshing atomic.Bool
}

// minDeltaNanos floors XFetch's delta at the coarse clock's resolution:
// below it the clock cannot tell the difference.
const minDeltaNanos = int64(clockResolution)

// xfetchWindow is how many beta*delta before expiry XFetch starts: at 20 the
// chance per Get is e^-20, about 2e-9.
const xfetchWindow = 20

func (e *entry[V]) age(now int64) time.Duration {
	return time.Duration(max(0, now-e.loadedAt))
}

// jitteredTTL returns TTL shortened by up to TTLJitter, so TTL stays the
// bound on freshness.
func (c *Cache[K, V]) jitteredTTL() int64 {
	ttl := float64(c.opts.TTL)
	return int64(ttl * (1 - c.opts.TTLJitter*rand.Float64()))
}

// newEntry makes a value entry read at now from the source of truth at
// loadedAt, the load having taken deltaNanos.
func (c *Cache[K, V]) newEntry(v V, version, now, loadedAt, deltaNanos int64) *entry[V] {
	e := &entry[V]{value: v, version: version, loadedAt: loadedAt, deltaNanos: max(deltaNanos, minDeltaNanos)}
	e.freshUntil = now + c.jitteredTTL()
	e.staleUntil = e.freshUntil + int64(c.opts.StaleMax)
	e.lifetime = time.Duration(e.staleUntil - now)
	e.refreshFrom = math.MaxInt64
	if !c.opts.EarlyRefreshDisabled {
		e.refreshFrom = e.freshUntil - int64(xfetchWindow*c.opts.EarlyRefreshBeta*float64(e.deltaNanos))
	}
	return e
}

// newNegative makes an entry remembering that key has no value.
func (c *Cache[K, V]) newNegative(now int64) *entry[V] {
	ttl := int64(float64(c.opts.NegativeTTL) * (1 - c.opts.TTLJitter*rand.Float64()))
	return &entry[V]{
		notFound:    true,
		loadedAt:    now,
		freshUntil:  now + ttl,
		staleUntil:  now + ttl,
		refreshFrom: math.MaxInt64,
		lifetime:    time.Duration(ttl),
	}
}

// expired returns a copy of e that is stale from now on but still kept for
// stale-if-error, or nil when e has nothing worth keeping.
func (e *entry[V]) expired(now int64) *entry[V] {
	if e.notFound || now >= e.staleUntil {
		return nil
	}
	x := &entry[V]{
		value: e.value, version: e.version, loadedAt: e.loadedAt,
		freshUntil: now, staleUntil: e.staleUntil, refreshFrom: math.MaxInt64,
		deltaNanos: e.deltaNanos, lifetime: time.Duration(e.staleUntil - now),
	}
	return x
}

// servable reports whether e can be served as stale at now.
func (e *entry[V]) servable(now int64) bool {
	return e != nil && !e.notFound && now < e.staleUntil
}

// xfetch rolls XFetch's dice: true means refresh now. The gap to expiry is
// compared with -beta*delta*ln(U), U uniform in (0, 1].
func (c *Cache[K, V]) xfetch(e *entry[V], now int64) bool {
	gap := float64(e.freshUntil - now)
	return -c.opts.EarlyRefreshBeta*float64(e.deltaNanos)*math.Log(1-rand.Float64()) >= gap
}

// L2 values carry a header so the age and the load time survive the trip:
// format byte, loadedAt and deltaNanos (big-endian int64), then Encode's
// bytes.
const (
	headerFormat = 1
	headerLen    = 1 + 8 + 8
)

var errBadHeader = errors.New("bad l2 value header")

func (c *Cache[K, V]) encode(e *entry[V]) ([]byte, error) {
	body, err := c.opts.Encode(e.value)
	if err != nil {
		return nil, err
	}
	b := make([]byte, headerLen, headerLen+len(body))
	b[0] = headerFormat
	binary.BigEndian.PutUint64(b[1:], uint64(e.loadedAt))
	binary.BigEndian.PutUint64(b[9:], uint64(e.deltaNanos))
	return append(b, body...), nil
}

func (c *Cache[K, V]) decode(b []byte) (v V, loadedAt, deltaNanos int64, err error) {
	if len(b) < headerLen || b[0] != headerFormat {
		return v, 0, 0, errBadHeader
	}
	loadedAt = int64(binary.BigEndian.Uint64(b[1:]))
	deltaNanos = int64(binary.BigEndian.Uint64(b[9:]))
	v, err = c.opts.Decode(b[headerLen:])
	return v, loadedAt, deltaNanos, err
}

// setVersionBit marks the time-based versions of values written by Set
// (when Options.Version is nil): a Set follows a write to the source of
// truth, so no load, which may have read the row before that write on an
// instance whose clock runs ahead, may overwrite it in L2.
const setVersionBit = int64(1) << 62

// nextVersion returns the version of v: Options.Version's, or else a unix
// nanosecond time strictly increasing within this instance, with
// setVersionBit for a Set.
func (c *Cache[K, V]) nextVersion(v V, now int64, set bool) int64 {
	if c.opts.Version != nil {
		return c.opts.Version(v)
	}
	for {
		last := c.versionClock.Load()
		next := max(now, last+1)
		if c.versionClock.CompareAndSwap(last, next) {
			if set {
				next |= setVersionBit
			}
			return next
		}
	}
}
