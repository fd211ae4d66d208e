package cache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gocache "github.com/go-redis/cache/v9"
	"github.com/maypok86/otter/v2"
)

// benchValue is an account-like value: what the service caches.
type benchValue struct {
	ID        string
	Currency  string
	Available int64
	Held      int64
	PaidOut   int64
	Version   int64
}

const benchKeys = 1024

func benchKeyNames() []string {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("acct-%d", i)
	}
	return keys
}

// BenchmarkGetL1Hit compares an L1 hit of this cache with raw otter (size
// bound and expiry, on otter's coarse clock, as this cache configures it)
// and with go-redis/cache and its TinyLFU local cache. Run with -cpu 1,2.
func BenchmarkGetL1Hit(b *testing.B) {
	keys := benchKeyNames()
	ctx := context.Background()

	b.Run("outlast", func(b *testing.B) {
		c, err := New(Options[string, benchValue]{
			Name: "bench",
			Load: func(_ context.Context, k string) (benchValue, error) { return benchValue{ID: k, Currency: "VND"}, nil },
			TTL:  time.Hour,
		})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		for _, k := range keys {
			if _, _, err := c.Get(ctx, k); err != nil {
				b.Fatal(err)
			}
		}
		var seed atomic.Uint32
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := seed.Add(7919)
			for pb.Next() {
				v, _, err := c.Get(ctx, keys[i%benchKeys])
				if err != nil || v.ID == "" {
					panic("miss")
				}
				i++
			}
		})
	})

	b.Run("otter", func(b *testing.B) {
		clock := otter.NewCoarseClock(clockResolution)
		defer clock.Stop()
		c := otter.Must(&otter.Options[string, benchValue]{
			MaximumSize:      10_000,
			ExpiryCalculator: otter.ExpiryWriting[string, benchValue](time.Hour),
			Clock:            clock,
		})
		defer c.StopAllGoroutines()
		for _, k := range keys {
			c.Set(k, benchValue{ID: k, Currency: "VND"})
		}
		var seed atomic.Uint32
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := seed.Add(7919)
			for pb.Next() {
				v, ok := c.GetIfPresent(keys[i%benchKeys])
				if !ok || v.ID == "" {
					panic("miss")
				}
				i++
			}
		})
	})

	b.Run("goredis-cache", func(b *testing.B) {
		c := gocache.New(&gocache.Options{LocalCache: gocache.NewTinyLFU(10_000, time.Hour)})
		for _, k := range keys {
			if err := c.Set(&gocache.Item{Ctx: ctx, Key: k, Value: benchValue{ID: k, Currency: "VND"}}); err != nil {
				b.Fatal(err)
			}
		}
		var seed atomic.Uint32
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := seed.Add(7919)
			for pb.Next() {
				var v benchValue
				if err := c.Get(ctx, keys[i%benchKeys], &v); err != nil || v.ID == "" {
					panic(fmt.Sprint("miss ", err))
				}
				i++
			}
		})
	})
}

// BenchmarkStampede hits one hot key from many goroutines while it expires
// every 20 ms, the load taking 2 ms, and reports database loads per expiry
// (loads starting within one load time of each other count as one expiry's):
// this cache (early refresh off, so every expiry is a real miss; and on)
// against plain cache-aside (check, load on a miss, store).
func BenchmarkStampede(b *testing.B) {
	const ttl, loadTime = 20 * time.Millisecond, 2 * time.Millisecond
	run := func(b *testing.B, get func(ctx context.Context) error, l *stampedeLoader) {
		ctx := context.Background()
		b.SetParallelism(32)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := get(ctx); err != nil {
					panic(err)
				}
			}
		})
		l.mu.Lock()
		defer l.mu.Unlock()
		b.ReportMetric(float64(l.loads)/float64(max(1, l.expiries)), "loads/expiry")
		b.ReportMetric(float64(l.expiries), "expiries")
	}
	for _, early := range []bool{false, true} {
		name := "outlast"
		if early {
			name = "outlast-early-refresh"
		}
		b.Run(name, func(b *testing.B) {
			l := &stampedeLoader{loadTime: loadTime}
			c, err := New(Options[string, int]{Name: "stampede", Load: l.load, TTL: ttl, TTLJitter: 0.01, EarlyRefreshDisabled: !early})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			run(b, func(ctx context.Context) error { _, _, err := c.Get(ctx, "hot"); return err }, l)
		})
	}
	b.Run("cache-aside", func(b *testing.B) {
		l := &stampedeLoader{loadTime: loadTime}
		var (
			mu      sync.RWMutex
			expires time.Time
			value   int
		)
		run(b, func(ctx context.Context) error {
			mu.RLock()
			ok := time.Now().Before(expires)
			mu.RUnlock()
			if ok {
				return nil
			}
			v, err := l.load(ctx, "hot")
			if err != nil {
				return err
			}
			mu.Lock()
			value, expires = v, time.Now().Add(ttl)
			mu.Unlock()
			return nil
		}, l)
		_ = value
	})
}

// stampedeLoader is a database load taking loadTime that groups loads into
// expiries: a load starting more than loadTime after the first load of the
// current group starts a new one.
type stampedeLoader struct {
	loadTime   time.Duration
	mu         sync.Mutex
	loads      int
	expiries   int
	groupStart time.Time
}

func (l *stampedeLoader) load(context.Context, string) (int, error) {
	now := time.Now()
	l.mu.Lock()
	l.loads++
	if now.Sub(l.groupStart) > l.loadTime {
		l.expiries++
		l.groupStart = now
	}
	l.mu.Unlock()
	time.Sleep(l.loadTime)
	return 1, nil
}
