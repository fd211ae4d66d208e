package redis_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast/cache"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/redis"
	"github.com/outlast/outlast/redis/redistest"
	goredis "github.com/redis/go-redis/v9"
)

const (
	itMasterName = "mymaster"
	// itFailoverGapMax bounds kill-to-first-write-through: Sentinel's
	// down-after-milliseconds (1 s), a vote and a promotion, then the L2
	// breaker's next probe (Delay 1 s, 3 probes); a few seconds expected.
	itFailoverGapMax = 20 * time.Second
)

// sentinelMaster returns the master address a sentinel names, or "".
func sentinelMaster(c *goredis.SentinelClient) string {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	a, err := c.GetMasterAddrByName(ctx, itMasterName).Result()
	if err != nil || len(a) != 2 {
		return ""
	}
	return net.JoinHostPort(a[0], a[1])
}

func TestCacheSentinelFailover(t *testing.T) {
	master, replica, addrs := redistest.StartSentinelGroup(t, itMasterName)
	url := "redis-sentinel://" + strings.Join(addrs, ",") + "/" + itMasterName
	env := newFaultEnv(t, url, 2, 100, nil)
	env.fill(t)
	ctx := context.Background()
	if n, err := env.probe.Client().Do(ctx, "WAIT", 1, 2000).Int(); err != nil || n < 1 {
		t.Fatalf("WAIT 1 = %d, %v; want the replica to hold the cache's data", n, err)
	}
	sc := goredis.NewSentinelClient(&goredis.Options{Addr: addrs[0], DialTimeout: time.Second, ReadTimeout: time.Second})
	defer sc.Close()
	// Direct reads of the promoted replica, past the cache and Sentinel.
	direct := itOpenStore(t, replica.URL(), redis.Options{Prefix: env.prefix})
	tr := startTraffic(t, env)
	testenv.WaitFor(t, 5*time.Second, "traffic to get going", func() bool { return tr.hotGets.Load() > 2000 })

	a := env.caches[0]
	const key = "written" // not a hot key: hot readers expect untouched L1 hits
	tr.phase.Store(phaseOutage)
	killed := time.Now()
	master.Kill()
	var (
		ver                        int64 = 100
		attempts                   int
		slowest                    time.Duration
		promoted, opened, firstSet time.Duration
	)
	testenv.WaitFor(t, itFailoverGapMax, "a cache Set to reach the promoted replica", func() bool {
		since := time.Since(killed)
		if promoted == 0 && sentinelMaster(sc) == replica.Addr {
			promoted = since
		}
		if opened == 0 && a.Stats().L2.Breaker != "closed" {
			opened = since
		}
		attempts++
		ver++
		v := item{Ver: ver, Body: key}
		env.db.put(key, v)
		start := time.Now()
		err := a.Set(ctx, key, v)
		slowest = max(slowest, time.Since(start))
		if err != nil {
			return false
		}
		if firstSet == 0 {
			firstSet = time.Since(killed)
		}
		_, got, found, err := direct.Get(ctx, key)
		return err == nil && found && got >= v.Ver && promoted != 0
	})
	hotAtWrite := tr.hotGets.Load()
	tr.phase.Store(phaseRecovered)
	testenv.WaitFor(t, 5*time.Second, "reads to go on after the failover", func() bool {
		return tr.hotGets.Load() > hotAtWrite+2000
	})
	tr.stop()
	t.Logf("sentinel failover: SIGKILL of the master -> L2 breaker open %s, replica promoted %s, first successful cache write-through %s (GAP); %d Set attempts, slowest %s",
		opened.Round(time.Millisecond), promoted.Round(time.Millisecond), firstSet.Round(time.Millisecond),
		attempts, slowest.Round(time.Millisecond))
	if slowest > 500*time.Millisecond {
		t.Errorf("a Set during the failover took %s, want < 500ms (fail fast, repair later)", slowest)
	}
	tr.checkReads(t)
	checkOutageLatency(t, tr, "failover")
	if got := env.db.hotLoads.Load(); got != int64(len(env.hot)) {
		t.Errorf("database loads of cached keys = %d, want %d (the fill only)", got, len(env.hot))
	}
	if v, info, err := a.Get(ctx, key); err != nil || v.Ver != ver || info.Source != cache.SourceL1 {
		t.Errorf("A.Get(%q) after the failover = %+v, %+v, %v; want version %d from L1", key, v, info, err, ver)
	}
}
