package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	gocache "github.com/go-redis/cache/v9"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/outlast/outlast/cache"
	"github.com/outlast/outlast/redis"
)

// benchItem is one row of the benchmark table, the cached value.
type benchItem struct {
	Payload []byte
	Version int64
}

// encodeBenchItem is the one value encoding every contender uses (8-byte
// version, then the payload), so none pays for a heavier codec.
func encodeBenchItem(v benchItem) []byte {
	b := make([]byte, 8, 8+len(v.Payload))
	binary.BigEndian.PutUint64(b, uint64(v.Version))
	return append(b, v.Payload...)
}

func decodeBenchItem(b []byte) (benchItem, error) {
	if len(b) < 8 {
		return benchItem{}, fmt.Errorf("bench item: %d bytes", len(b))
	}
	return benchItem{Version: int64(binary.BigEndian.Uint64(b)), Payload: b[8:]}, nil
}

// benchCache is what the load generator drives: one read of key.
type benchCache interface {
	get(ctx context.Context, key string) error
	// stats describes the contender's internals after the run, or "".
	stats() string
	close() error
}

// benchLoader reads a row from the database; it counts every query.
type benchLoader func(ctx context.Context, key string) (benchItem, error)

// contenderSpec names a contender and opens it on a fresh Redis.
type contenderSpec struct {
	id, name string
	open     func(ctx context.Context, redisURL string, cfg contenderConfig) (benchCache, error)
}

// contenderConfig is what every contender gets alike.
type contenderConfig struct {
	load         benchLoader
	l1Entries    int
	ttl          time.Duration // value TTL in L1 and Redis
	localTTL     time.Duration // go-redis/cache's TinyLFU TTL
	logTo        io.Writer
	cacheOptions func(*cache.Options[string, benchItem]) // scenario tuning of the outlast cache, or nil
}

var benchContenders = []contenderSpec{
	{"outlast", "outlast cache", openOutlastContender},
	{"gocache", "go-redis/cache (short timeouts)", func(ctx context.Context, url string, cfg contenderConfig) (benchCache, error) {
		return openGoCacheContender(url, cfg, true)
	}},
	{"gocache-default", "go-redis/cache (go-redis default timeouts)", func(ctx context.Context, url string, cfg contenderConfig) (benchCache, error) {
		return openGoCacheContender(url, cfg, false)
	}},
	{"aside", "cache-aside (go-redis, no L1)", openAsideContender},
	// noop answers at once: its latencies are the harness's own floor.
	{"noop", "no-op (harness floor)", func(context.Context, string, contenderConfig) (benchCache, error) {
		return noopContender{}, nil
	}},
}

type noopContender struct{}

func (noopContender) get(context.Context, string) error { return nil }
func (noopContender) stats() string                     { return "" }
func (noopContender) close() error                      { return nil }

func contenderByID(id string) (contenderSpec, error) {
	var ids []string
	for _, c := range benchContenders {
		if c.id == id {
			return c, nil
		}
		ids = append(ids, c.id)
	}
	return contenderSpec{}, fmt.Errorf("unknown contender %q (known: %s)", id, strings.Join(ids, ", "))
}

// outlastContender is this repository's cache with the redis package as L2.
type outlastContender struct {
	c     *cache.Cache[string, benchItem]
	store *redis.Store
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

func openOutlastContender(ctx context.Context, url string, cfg contenderConfig) (benchCache, error) {
	store, err := redis.Open(ctx, url, redis.Options{Prefix: "bench:"})
	if err != nil {
		return nil, err
	}
	opts := cache.Options[string, benchItem]{
		Name:         "bench",
		L1MaxEntries: cfg.l1Entries,
		TTL:          cfg.ttl,
		L2:           store,
		Encode:       func(v benchItem) ([]byte, error) { return encodeBenchItem(v), nil },
		Decode:       decodeBenchItem,
		Version:      func(v benchItem) int64 { return v.Version },
		Load: func(ctx context.Context, key string) (benchItem, error) {
			v, err := cfg.load(ctx, key)
			if errors.Is(err, errBenchNoRow) {
				err = fmt.Errorf("%w: %w", cache.ErrNotFound, err)
			}
			return v, err
		},
		Logger: slog.New(slog.NewTextHandler(cfg.logTo, nil)),
	}
	if cfg.cacheOptions != nil {
		cfg.cacheOptions(&opts)
	}
	c, err := cache.New(opts)
	if err != nil {
		store.Close()
		return nil, err
	}
	runCtx, stop := context.WithCancel(context.Background())
	o := &outlastContender{c: c, store: store, stop: stop}
	o.wg.Go(func() { _ = c.Run(runCtx) })
	return o, nil
}

func (o *outlastContender) get(ctx context.Context, key string) error {
	_, _, err := o.c.Get(ctx, key)
	return err
}

func (o *outlastContender) stats() string {
	s := o.c.Stats()
	hit := float64(s.L1.Hits) / float64(max(1, s.L1.Hits+s.L1.Misses))
	return fmt.Sprintf("L1 hits %d misses %d (hit ratio %.1f%%); L2 hits %d misses %d errors %d skipped-by-breaker %d writes %d; "+
		"loads %d errors %d rejected %d bulkhead-rejected %d; stale served %d; coalesced %d; early refreshes %d; warm-ups %d writing %d",
		s.L1.Hits, s.L1.Misses, 100*hit, s.L2.Hits, s.L2.Misses, s.L2.Errors, s.L2.Rejected, s.L2.Writes,
		s.Loader.Loads, s.Loader.Errors, s.Loader.Rejected, s.Loader.BulkheadRejected, s.StaleServed, s.Coalesced,
		s.EarlyRefreshes, s.Warmups, s.WarmupWrites)
}

func (o *outlastContender) close() error {
	o.stop()
	o.wg.Wait()
	err := o.c.Close()
	return errors.Join(err, o.store.Close())
}

// benchRedisClient returns a go-redis client for the peers. With short, it
// has exactly the client settings the redis package applies (see
// redis/redis.go): the same timeouts, pool, no retries, one dial attempt,
// context deadlines honoured. Without, go-redis's defaults (5 s timeouts,
// 3 retries, 5 dial attempts). Maintenance notifications are off in both,
// as in the redis package: a plain redis-server does not support them.
func benchRedisClient(url string, short bool) (*goredis.Client, error) {
	o, err := goredis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if short {
		o.DialTimeout = redis.DefaultDialTimeout
		o.DialerRetries = 1
		o.ReadTimeout = redis.DefaultReadTimeout
		o.WriteTimeout = redis.DefaultWriteTimeout
		o.PoolTimeout = redis.DefaultPoolTimeout
		o.PoolSize = redis.DefaultPoolSize
		o.ConnMaxIdleTime = redis.DefaultConnMaxIdleTime
		o.MaxRetries = -1
		o.ContextTimeoutEnabled = true
	}
	return goredis.NewClient(o), nil
}

// goCacheContender is github.com/go-redis/cache/v9 with its TinyLFU local
// cache, used as its README shows: Once with a Do that loads from the
// database.
type goCacheContender struct {
	rdb *goredis.Client
	c   *gocache.Cache
	cfg contenderConfig
}

func openGoCacheContender(url string, cfg contenderConfig, short bool) (benchCache, error) {
	rdb, err := benchRedisClient(url, short)
	if err != nil {
		return nil, err
	}
	c := gocache.New(&gocache.Options{
		Redis:      rdb,
		LocalCache: gocache.NewTinyLFU(cfg.l1Entries, cfg.localTTL),
		Marshal: func(v any) ([]byte, error) {
			switch v := v.(type) {
			case benchItem:
				return encodeBenchItem(v), nil
			case *benchItem:
				return encodeBenchItem(*v), nil
			}
			return nil, fmt.Errorf("marshal %T", v)
		},
		Unmarshal: func(b []byte, v any) error {
			item, err := decodeBenchItem(b)
			if err == nil {
				*v.(*benchItem) = item
			}
			return err
		},
	})
	return &goCacheContender{rdb: rdb, c: c, cfg: cfg}, nil
}

func (g *goCacheContender) get(ctx context.Context, key string) error {
	var v benchItem
	return g.c.Once(&gocache.Item{
		Ctx: ctx, Key: key, Value: &v, TTL: g.cfg.ttl,
		Do: func(it *gocache.Item) (any, error) { return g.cfg.load(it.Context(), it.Key) },
	})
}

func (g *goCacheContender) stats() string { return "" }
func (g *goCacheContender) close() error  { return g.rdb.Close() }

// asideContender is plain cache-aside: GET; on a miss or an error, load from
// the database and SET. No L1, no coalescing.
type asideContender struct {
	rdb *goredis.Client
	cfg contenderConfig
}

func openAsideContender(ctx context.Context, url string, cfg contenderConfig) (benchCache, error) {
	rdb, err := benchRedisClient(url, true)
	if err != nil {
		return nil, err
	}
	return &asideContender{rdb: rdb, cfg: cfg}, nil
}

func (a *asideContender) get(ctx context.Context, key string) error {
	b, err := a.rdb.Get(ctx, key).Bytes()
	if err == nil {
		_, err = decodeBenchItem(b)
		return err
	}
	v, err := a.cfg.load(ctx, key)
	if err != nil {
		return err
	}
	// The value is served either way; a failed SET only means the next
	// read loads again.
	_ = a.rdb.Set(ctx, key, encodeBenchItem(v), a.cfg.ttl).Err()
	return nil
}

func (a *asideContender) stats() string { return "" }
func (a *asideContender) close() error  { return a.rdb.Close() }
