package cache

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Options configure a Cache. Only Load is required (and Encode and Decode
// with L2); every other field has a stated default.
type Options[K comparable, V any] struct {
	// Name labels the cache's metrics and logs. If empty, "default" is used.
	Name string
	// L1MaxEntries bounds the in-process cache. If <= 0, 10,000 is used.
	L1MaxEntries int
	// TTL is how long a value is fresh in L1 and in L2. If <= 0, 1 minute is
	// used. A value read from L2 gets a fresh L1 TTL, so a value may be up to
	// about 2*TTL old; Info.Age says how old. Writes through Set and the
	// invalidation broadcast keep it current in the meantime.
	TTL time.Duration
	// TTLJitter shortens each TTL by a random fraction up to TTLJitter, so
	// keys loaded together do not expire together. If <= 0, 0.1 is used;
	// values above 0.9 are capped at 0.9.
	TTLJitter float64
	// StaleMax is how long past its TTL a value stays in L1 to be served
	// (with Info.Stale) when L2 and the loader fail. If <= 0, 10 minutes is
	// used.
	StaleMax time.Duration
	// NegativeTTL is how long ErrNotFound is remembered in L1. If <= 0, 5 s is
	// used.
	NegativeTTL time.Duration

	// L2 is the shared store. If nil, the cache is L1 only.
	L2 L2
	// L2Timeout bounds each L2 call. If <= 0, 50 ms is used: a Redis answers
	// in well under a millisecond, and the 5 s client default is what turned
	// a Redis hang into an outage.
	L2Timeout time.Duration
	// L2Breaker opens L2's circuit breaker; see BreakerOptions for defaults.
	L2Breaker BreakerOptions
	// Broadcaster spreads Set and Invalidate to other instances' L1. If nil,
	// other instances see a change when their L1 TTL runs out.
	Broadcaster Broadcaster

	// Key turns a key into its L2 and broadcast key. If nil and K is a string
	// kind, the string itself is used; otherwise it is required with L2 or
	// Broadcaster. Give each cache sharing a Redis its own prefix.
	Key func(K) string
	// ParseKey turns a broadcast key back into K; an error means the key
	// belongs to another cache and is ignored. If nil, K must be a string
	// kind and Key nil (or Broadcaster nil).
	ParseKey func(string) (K, error)
	// Encode and Decode turn values into L2 bytes and back. Required with L2.
	Encode func(V) ([]byte, error)
	Decode func([]byte) (V, error)
	// Version returns the monotonic version of a value (a row version), so
	// an older value never overwrites a newer one in L2 or L1. If nil, the
	// time of the load or Set is used, and a Set's value outranks any load's
	// in L2 until it expires: the later Set wins, and a load that raced it
	// cannot put back what it read before.
	Version func(V) int64

	// Load reads the source of truth. It returns an error satisfying
	// errors.Is(err, ErrNotFound) for a missing value. It runs under its own
	// context (the caller's values, not its cancellation), bounded by
	// LoadTimeout. Required.
	Load func(ctx context.Context, key K) (V, error)
	// LoadTimeout bounds each load. If <= 0, 2 s is used.
	LoadTimeout time.Duration
	// LoadConcurrencyMax bounds loads in flight (the bulkhead); past it a Get
	// gets a stale value or ErrUnavailable at once, never a queue. If <= 0,
	// 64 is used. Keys being fetched (from L2 or the loader) are bounded at
	// 16 times this.
	LoadConcurrencyMax int
	// LoadBreaker opens the loader's circuit breaker; see BreakerOptions.
	LoadBreaker BreakerOptions

	// EarlyRefreshBeta is XFetch's beta (Vattani et al. 2015): a Get of a
	// fresh value reloads it in the background with probability
	// exp(-gap/(beta*delta)), gap being the time left before expiry and delta
	// the measured load time (at least 1 ms). Larger is earlier. If <= 0, 1
	// is used.
	EarlyRefreshBeta float64
	// EarlyRefreshDisabled turns early refresh off.
	EarlyRefreshDisabled bool

	// WarmupRate bounds this instance's L2 writes per second while refilling
	// an empty L2 from L1 or repairing writes that failed while L2 was down.
	// It is per instance: N instances refill at up to N times this. If <= 0,
	// 500 is used.
	WarmupRate int
	// WarmupCheckInterval is how often Run checks that L2 still holds its
	// sentinel key (and so its data). If <= 0, 1 s is used.
	WarmupCheckInterval time.Duration

	// Now is the clock. If nil, a coarse clock (1 ms resolution) is used so
	// the hot path does not read the precise time.
	Now func() time.Time
	// Logger logs state changes (breakers, warm-ups, subscription errors),
	// never single requests. If nil, slog.Default() is used.
	Logger *slog.Logger
}

// BreakerOptions configure a circuit breaker (failsafe-go, count based).
//
// The breaker opens when FailureThreshold of the last WindowCalls calls
// failed. With the defaults (5 of 10) and every call failing, it opens on the
// 5th failure, whatever came before: at 100 calls/s that is the call sent at
// 40 ms, failing at 40 ms plus the call's timeout — 90 ms with L2Timeout's
// 50 ms default for a hanging Redis, 40 ms for a refused connection; within
// 200 ms down to about 35 calls/s. Detection takes (FailureThreshold-1)/rate
// plus the timeout. Once open, calls are skipped (cost: one mutex) for Delay;
// then SuccessThreshold probe calls are let through, and the breaker closes
// when all succeed and opens again on the first failure.
type BreakerOptions struct {
	// FailureThreshold is the failures within the window that open the
	// breaker. If 0, 5 is used.
	FailureThreshold uint
	// WindowCalls is how many recent calls are counted. If 0 or below
	// FailureThreshold, twice FailureThreshold is used.
	WindowCalls uint
	// Delay is how long the breaker stays open before probing. If <= 0, 1 s
	// is used for L2 and 2 s for the loader.
	Delay time.Duration
	// SuccessThreshold is how many probes must succeed to close. If 0, 3 is
	// used.
	SuccessThreshold uint
}

func (b *BreakerOptions) setDefaults(delay time.Duration) {
	if b.FailureThreshold == 0 {
		b.FailureThreshold = 5
	}
	if b.WindowCalls < b.FailureThreshold {
		b.WindowCalls = 2 * b.FailureThreshold
	}
	if b.Delay <= 0 {
		b.Delay = delay
	}
	if b.SuccessThreshold == 0 {
		b.SuccessThreshold = 3
	}
}

func (o *Options[K, V]) setDefaults() error {
	if o.Load == nil {
		return errors.New("cache: Load is required")
	}
	if o.L2 != nil && (o.Encode == nil || o.Decode == nil) {
		return errors.New("cache: Encode and Decode are required with L2")
	}
	if o.Name == "" {
		o.Name = "default"
	}
	setDefault(&o.L1MaxEntries, 10_000)
	setDefault(&o.TTL, time.Minute)
	if o.TTLJitter <= 0 {
		o.TTLJitter = 0.1
	}
	o.TTLJitter = min(o.TTLJitter, 0.9)
	setDefault(&o.StaleMax, 10*time.Minute)
	setDefault(&o.NegativeTTL, 5*time.Second)
	setDefault(&o.L2Timeout, 50*time.Millisecond)
	setDefault(&o.LoadTimeout, 2*time.Second)
	setDefault(&o.LoadConcurrencyMax, 64)
	if o.EarlyRefreshBeta <= 0 {
		o.EarlyRefreshBeta = 1
	}
	setDefault(&o.WarmupRate, 500)
	setDefault(&o.WarmupCheckInterval, time.Second)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.L2Breaker.setDefaults(time.Second)
	o.LoadBreaker.setDefaults(2 * time.Second)
	return nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}
