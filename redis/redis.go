// Package redis is the L2 cache store and the L1 invalidation broadcast of
// Outlast, on a go-redis UniversalClient: a single node, Sentinel or Cluster.
//
// Redis is only a cache here (DESIGN.md rule 4), so everything is built to
// fail fast rather than to succeed eventually: short explicit timeouts, no
// retries, no failure at Open when Redis is down. The tiered cache above has
// breakers, an L1 and stale-if-error; a Redis call that waits 5 s (the go-redis
// default) or retries three times only delays the moment those take over.
//
// Values are opaque bytes stored with an int64 version; Set is atomic and
// versioned, so an older value never overwrites a newer one.
package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Defaults for Options. A Redis round trip on a LAN takes well under 1 ms;
// every bound here is ~100x that, far from false alarms yet short enough
// that a dead or hung Redis costs a caller at most a fraction of a second
// before the breaker above opens.
const (
	// DefaultDialTimeout bounds a TCP (and TLS) connect. Connection refused
	// returns at once; 200 ms covers a cross-zone connect, and a lost SYN
	// (first retransmit at 1 s) is treated as down rather than waited for.
	DefaultDialTimeout = 200 * time.Millisecond
	// DefaultReadTimeout bounds waiting for a reply: what a hung server
	// (SIGSTOP, a kernel panic as in seed 002) costs per call.
	DefaultReadTimeout = 100 * time.Millisecond
	// DefaultWriteTimeout bounds writing a command into a full socket buffer.
	DefaultWriteTimeout = 100 * time.Millisecond
	// DefaultPoolTimeout bounds waiting for a free pooled connection: a full
	// pool means Redis is slow, and queueing behind it would only add latency.
	DefaultPoolTimeout = 100 * time.Millisecond
	// DefaultPoolSize bounds connections (and in-flight calls) per node. At
	// 2,000 req/s and 1 ms per call ~2 are busy; during a hang, 32 calls wait
	// at most ReadTimeout and the rest fail after PoolTimeout.
	DefaultPoolSize = 32
	// DefaultConnMaxIdleTime closes idle connections well before the idle
	// timeouts of NATs and load balancers (AWS NLB: 350 s), which drop a
	// connection silently and would cost one ReadTimeout to discover.
	DefaultConnMaxIdleTime = 60 * time.Second
	// DefaultPingInterval is how often Subscribe checks an idle subscription,
	// so a hung or vanished server is noticed within two intervals.
	DefaultPingInterval = time.Second
	// DefaultResubscribeDelayMax caps the backoff between resubscription attempts.
	DefaultResubscribeDelayMax = time.Second
	// DefaultValueBytesMax bounds one cached value; larger is a bug upstream.
	DefaultValueBytesMax = 1 << 20
	// DefaultPrefix is prepended to every key.
	DefaultPrefix = "outlast:"

	keyBytesMax   = 1024 // a cache key longer than this is a bug upstream
	maxRetriesMax = 1    // see Options.MaxRetries
)

// Options configures Open. The zero value is ready to use.
type Options struct {
	// Prefix is prepended to every key. If "", DefaultPrefix ("outlast:") is used.
	Prefix string
	// Channel is the Pub/Sub channel for invalidations. If "", Prefix+"invalidate" is used.
	Channel string

	// DialTimeout: if <= 0, DefaultDialTimeout (200 ms) is used.
	DialTimeout time.Duration
	// ReadTimeout: if <= 0, DefaultReadTimeout (100 ms) is used.
	ReadTimeout time.Duration
	// WriteTimeout: if <= 0, DefaultWriteTimeout (100 ms) is used.
	WriteTimeout time.Duration
	// PoolTimeout: if <= 0, DefaultPoolTimeout (100 ms) is used.
	PoolTimeout time.Duration
	// PoolSize is the connection pool size per node. If <= 0, DefaultPoolSize (32) is used.
	PoolSize int
	// MaxRetries is how often go-redis retries a failed command. If <= 0,
	// never: the cache above has breakers, and a retry doubles the time a
	// dead Redis costs. Values above 1 are reduced to 1.
	MaxRetries int
	// ConnMaxIdleTime: if <= 0, DefaultConnMaxIdleTime (60 s) is used.
	ConnMaxIdleTime time.Duration

	// PingInterval is how often Subscribe pings an idle subscription. If <= 0,
	// DefaultPingInterval (1 s) is used.
	PingInterval time.Duration
	// ResubscribeDelayMax caps the backoff between resubscribe attempts. If
	// <= 0, DefaultResubscribeDelayMax (1 s) is used.
	ResubscribeDelayMax time.Duration
	// ValueBytesMax is the largest value Set accepts. If <= 0,
	// DefaultValueBytesMax (1 MiB) is used.
	ValueBytesMax int
}

func (opts Options) withDefaults() Options {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Channel == "" {
		opts.Channel = opts.Prefix + "invalidate"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.DialTimeout, DefaultDialTimeout)
	def(&opts.ReadTimeout, DefaultReadTimeout)
	def(&opts.WriteTimeout, DefaultWriteTimeout)
	def(&opts.PoolTimeout, DefaultPoolTimeout)
	def(&opts.ConnMaxIdleTime, DefaultConnMaxIdleTime)
	def(&opts.PingInterval, DefaultPingInterval)
	def(&opts.ResubscribeDelayMax, DefaultResubscribeDelayMax)
	if opts.PoolSize <= 0 {
		opts.PoolSize = DefaultPoolSize
	}
	if opts.ValueBytesMax <= 0 {
		opts.ValueBytesMax = DefaultValueBytesMax
	}
	return opts
}

// apply writes the client-level settings of opts (defaults filled in) into o.
func (opts Options) apply(o *goredis.UniversalOptions) {
	opts = opts.withDefaults()
	o.DialTimeout = opts.DialTimeout
	o.DialerRetries = 1 // one attempt: go-redis would otherwise dial 5 times, 100 ms apart
	o.ReadTimeout = opts.ReadTimeout
	o.WriteTimeout = opts.WriteTimeout
	o.PoolTimeout = opts.PoolTimeout
	o.PoolSize = opts.PoolSize
	o.ConnMaxIdleTime = opts.ConnMaxIdleTime
	o.MaxRetries = min(opts.MaxRetries, maxRetriesMax)
	if o.MaxRetries <= 0 {
		o.MaxRetries = -1 // go-redis reads 0 as "3 retries"
	}
	// A caller's earlier deadline also bounds the socket wait.
	o.ContextTimeoutEnabled = true
	o.MaintNotificationsConfig = disabledMaintNotifications
}

// Store is the L2 cache and invalidation broadcaster. It is safe for
// concurrent use.
type Store struct {
	client  goredis.UniversalClient
	opts    Options // defaults filled in; written once by Open
	channel string

	// closeCtx ends running Subscribe loops when Close is called.
	closeCtx context.Context
	cancel   context.CancelFunc

	mu     sync.Mutex // guards closed, and orders subs.Add before Close's subs.Wait
	closed bool
	subs   sync.WaitGroup // running Subscribe calls; Close waits for them
}

// ErrClosed is returned by Subscribe on a closed Store; the other calls
// return the go-redis "client is closed" error.
var ErrClosed = errors.New("redis: store closed")

// Open parses url (see ParseURL), applies opts and returns a Store. It does
// not contact Redis: a cache that is down at start must not stop the service
// from starting, so calls fail fast until Redis is reachable. Use Ping to
// check. ctx is accepted for symmetry and future use.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	o, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	opts.apply(o)
	return newStore(goredis.NewUniversalClient(o), opts), nil
}

func newStore(c goredis.UniversalClient, opts Options) *Store {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Store{client: c, opts: opts, channel: opts.Channel, closeCtx: ctx, cancel: cancel}
}

// Client returns the underlying client, for health checks and tools.
func (s *Store) Client() goredis.UniversalClient { return s.client }

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	start := time.Now()
	err := s.client.Ping(ctx).Err()
	observe(opPing, start, resultOf(err))
	if err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}

// Close ends running Subscribe calls, waits for them, and closes the client.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.subs.Wait()
	if err := s.client.Close(); err != nil {
		return fmt.Errorf("redis close: %w", err)
	}
	return nil
}

func (s *Store) key(k string) (string, error) {
	if len(k) > keyBytesMax {
		return "", fmt.Errorf("redis: key of %d bytes, at most %d", len(k), keyBytesMax)
	}
	return s.opts.Prefix + k, nil
}
