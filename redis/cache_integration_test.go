package redis_test

// Fault tests of the tiered cache (package cache) over this package's Store,
// against real redis-server processes started by redistest: Redis is
// SIGKILLed and restarted empty, SIGSTOPped and resumed, killed under a
// write, while readers keep reading. A counting in-memory map stands in for
// the database, so a database spike shows up as a load count.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outlast/outlast/cache"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/redis"
	"github.com/outlast/outlast/redis/redistest"
)

const (
	// itName is every instance's cache name: instances sharing a Redis
	// share the L2 keys and its "filled" marker.
	itName = "it"
	// itWarmupRate is each instance's WarmupRate, writes per second.
	itWarmupRate = 200
	// itColdInterval paces each instance's reads of never-cached keys:
	// 100 req/s, the rate at which the issue wants detection within 200 ms.
	itColdInterval = 10 * time.Millisecond
	// Hot readers per instance, each doing itGetsPerTick Gets per
	// millisecond: about 10,000 L1 Gets per second per instance.
	itHotReaders  = 2
	itGetsPerTick = 5
	// itDetectMax is the generous bound on breaker detection (the issue's
	// target is 200 ms; -race and a busy machine are allowed slack).
	itDetectMax = time.Second
	// itReadGapMax bounds the time between two consecutive Gets of one
	// hot reader: reads must keep being served throughout an outage.
	itReadGapMax = 500 * time.Millisecond
	// itP99Max bounds the p99 of Get during an outage: detection must not
	// cost every request an L2 timeout.
	itP99Max = 50 * time.Millisecond
	// itRateSlack is the fraction by which a measured warm-up rate may
	// exceed WarmupRate, plus itRateBurst writes for the first permit and
	// sampling jitter.
	itRateSlack = 1.2
	itRateBurst = 5
)

var itQuiet = slog.New(slog.DiscardHandler)

// item is a row of the stand-in database.
type item struct {
	Ver  int64  `json:"ver"`
	Body string `json:"body"`
}

// fakeDB is the source of truth behind the caches: every key exists, at
// version 1 with its own name as body, until put overwrites it.
type fakeDB struct {
	mu       sync.Mutex
	rows     map[string]item
	perKey   map[string]int
	loads    atomic.Int64
	hotLoads atomic.Int64 // loads of keys named hot-*
}

func newFakeDB() *fakeDB {
	return &fakeDB{rows: map[string]item{}, perKey: map[string]int{}}
}

func (d *fakeDB) load(_ context.Context, key string) (item, error) {
	d.loads.Add(1)
	if strings.HasPrefix(key, "hot-") {
		d.hotLoads.Add(1)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.perKey[key]++
	if it, ok := d.rows[key]; ok {
		return it, nil
	}
	return item{Ver: 1, Body: key}, nil
}

func (d *fakeDB) put(key string, it item) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rows[key] = it
}

func (d *fakeDB) loadsOf(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.perKey[key]
}

// faultEnv is a set of cache instances sharing one Redis.
type faultEnv struct {
	url    string
	prefix string
	db     *fakeDB
	caches []*cache.Cache[string, item]
	probe  *redis.Store // reads Redis directly, past the caches
	hot    []string
}

// tweakFunc adjusts instance i's options before it is built.
type tweakFunc func(i int, co *cache.Options[string, item], so *redis.Options)

// newFaultEnv starts n instances over url, each running Run until t ends.
func newFaultEnv(t *testing.T, url string, n, hotKeys int, tweak tweakFunc) *faultEnv {
	t.Helper()
	env := &faultEnv{url: url, prefix: "it:", db: newFakeDB()}
	env.probe = itOpenStore(t, url, redis.Options{Prefix: env.prefix})
	for i := range hotKeys {
		env.hot = append(env.hot, fmt.Sprintf("hot-%04d", i))
	}
	for i := range n {
		so := redis.Options{Prefix: env.prefix}
		co := cache.Options[string, item]{
			Name:                itName,
			TTL:                 time.Minute, // far beyond the test: every hot read must be an L1 hit
			Encode:              func(v item) ([]byte, error) { return json.Marshal(v) },
			Decode:              func(b []byte) (v item, err error) { return v, json.Unmarshal(b, &v) },
			Version:             func(v item) int64 { return v.Ver },
			Load:                env.db.load,
			WarmupRate:          itWarmupRate,
			WarmupCheckInterval: 100 * time.Millisecond,
			Logger:              itQuiet,
		}
		if tweak != nil {
			tweak(i, &co, &so)
		}
		store := itOpenStore(t, url, so)
		co.L2, co.Broadcaster = store, store
		c, err := cache.New(co)
		if err != nil {
			t.Fatalf("cache.New: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		testenv.Start(t, fmt.Sprintf("instance %d Run", i), c.Run)
		env.caches = append(env.caches, c)
	}
	return env
}

func itOpenStore(t *testing.T, url string, opts redis.Options) *redis.Store {
	t.Helper()
	s, err := redis.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("redis.Open(%q): %v", url, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// fill loads every hot key into instance 0 (from the database, written
// through to Redis) and then into the others (from Redis), and waits for
// Run to have marked L2 as filled, so later warm-ups are the fault's.
func (env *faultEnv) fill(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	env.getAll(t, env.caches[0], cache.SourceLoader)
	testenv.WaitFor(t, 5*time.Second, "every hot key written through to Redis", func() bool {
		return env.hotInRedis() == len(env.hot)
	})
	for _, c := range env.caches[1:] {
		env.getAll(t, c, cache.SourceL2)
	}
	if got := env.db.hotLoads.Load(); got != int64(len(env.hot)) {
		t.Fatalf("database loads to fill %d keys on %d instances = %d, want %d (one per key)",
			len(env.hot), len(env.caches), got, len(env.hot))
	}
	// The one key beyond the data is the cache's own "L2 holds data" marker.
	testenv.WaitFor(t, 5*time.Second, "Run to mark L2 as filled", func() bool {
		n, err := env.probe.Client().DBSize(ctx).Result()
		return err == nil && n > int64(len(env.hot))
	})
}

func (env *faultEnv) getAll(t *testing.T, c *cache.Cache[string, item], want cache.Source) {
	t.Helper()
	for _, k := range env.hot {
		v, info, err := c.Get(context.Background(), k)
		if err != nil || info.Source != want || v.Body != k {
			t.Fatalf("fill Get(%q) = %+v, %+v, %v; want body %q from %s", k, v, info, err, k, want)
		}
	}
}

// hotInRedis counts the hot keys Redis holds, or returns -1 when it cannot.
func (env *faultEnv) hotInRedis() int {
	keys := make([]string, len(env.hot))
	for i, k := range env.hot {
		keys[i] = env.prefix + k
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := env.probe.Client().Exists(ctx, keys...).Result()
	if err != nil {
		return -1
	}
	return int(n)
}

func (env *faultEnv) stats() []cache.Stats {
	s := make([]cache.Stats, len(env.caches))
	for i, c := range env.caches {
		s[i] = c.Stats()
	}
	return s
}

func (env *faultEnv) breakers() []string {
	var b []string
	for _, s := range env.stats() {
		b = append(b, s.L2.Breaker)
	}
	return b
}

func allClosed(states []string) bool {
	return !slices.ContainsFunc(states, func(s string) bool { return s != "closed" })
}

func noneClosed(states []string) bool { return !slices.Contains(states, "closed") }

// Traffic phases: latencies are kept per phase.
const (
	phaseSteady = iota
	phaseOutage
	phaseRecovered
	phases
)

// traffic reads from every instance until stopped: hot readers over the
// cached keys and one reader per instance of never-cached (cold) keys.
type traffic struct {
	phase    atomic.Int32
	hotGets  atomic.Int64
	coldGets atomic.Int64
	badHot   atomic.Int64 // hot Gets that erred or did not come fresh from L1
	coldErrs atomic.Int64
	mu       sync.Mutex
	problems []string // the first few, for the report
	recs     []*recorder
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// recorder is one reader's latencies, per phase; read after stop.
type recorder struct {
	cold   bool
	lat    [phases][]time.Duration
	maxGap [phases]time.Duration // longest time between two Gets
}

func startTraffic(t *testing.T, env *faultEnv) *traffic {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &traffic{cancel: cancel}
	for i, c := range env.caches {
		for range itHotReaders {
			rec := &recorder{}
			tr.recs = append(tr.recs, rec)
			tr.wg.Go(func() { tr.readHot(ctx, c, env.hot, rec) })
		}
		rec := &recorder{cold: true}
		tr.recs = append(tr.recs, rec)
		tr.wg.Go(func() { tr.readCold(ctx, c, i, rec) })
	}
	t.Cleanup(tr.stop)
	return tr
}

func (tr *traffic) stop() {
	tr.stopOnce.Do(func() { tr.cancel(); tr.wg.Wait() })
}

func (tr *traffic) problem(format string, args ...any) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.problems) < 5 {
		tr.problems = append(tr.problems, fmt.Sprintf(format, args...))
	}
}

func (tr *traffic) readHot(ctx context.Context, c *cache.Cache[string, item], hot []string, rec *recorder) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for range itGetsPerTick {
			k := hot[rand.IntN(len(hot))]
			start := time.Now()
			v, info, err := c.Get(ctx, k)
			end := time.Now()
			p := tr.phase.Load()
			rec.lat[p] = append(rec.lat[p], end.Sub(start))
			rec.maxGap[p] = max(rec.maxGap[p], end.Sub(last))
			last = end
			tr.hotGets.Add(1)
			if err != nil || info.Source != cache.SourceL1 || info.Stale || v.Body != k {
				tr.badHot.Add(1)
				tr.problem("phase %d: hot Get(%q) = %+v, %+v, %v", p, k, v, info, err)
			}
		}
	}
}

// readCold reads a new key every itColdInterval: each is an L1 miss that
// asks L2 and then the database, the traffic that trips the L2 breaker.
func (tr *traffic) readCold(ctx context.Context, c *cache.Cache[string, item], inst int, rec *recorder) {
	tick := time.NewTicker(itColdInterval)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		k := fmt.Sprintf("cold-%d-%d", inst, n)
		start := time.Now()
		v, _, err := c.Get(ctx, k)
		p := tr.phase.Load()
		rec.lat[p] = append(rec.lat[p], time.Since(start))
		tr.coldGets.Add(1)
		if (err != nil && ctx.Err() == nil) || (err == nil && v.Body != k) {
			tr.coldErrs.Add(1)
			tr.problem("phase %d: cold Get(%q) = %+v, %v", p, k, v, err)
		}
	}
}

// latencies returns the phase's sorted latencies of hot, cold or all
// readers (hot nil: all).
func (tr *traffic) latencies(p int, hot *bool) []time.Duration {
	var all []time.Duration
	for _, r := range tr.recs {
		if hot == nil || *hot != r.cold {
			all = append(all, r.lat[p]...)
		}
	}
	slices.Sort(all)
	return all
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// checkReads asserts, after stop, that no hot read failed or left L1, no
// cold read failed, and no hot reader stalled.
func (tr *traffic) checkReads(t *testing.T) {
	t.Helper()
	if n := tr.badHot.Load() + tr.coldErrs.Load(); n > 0 {
		t.Errorf("%d hot Gets erred or were not fresh L1 hits, %d cold Gets erred; first: %q",
			tr.badHot.Load(), tr.coldErrs.Load(), tr.problems)
	}
	for _, r := range tr.recs {
		for p, g := range r.maxGap {
			if !r.cold && g > itReadGapMax {
				t.Errorf("a hot reader waited %s between two Gets in phase %d, want < %s", g, p, itReadGapMax)
			}
		}
	}
	t.Logf("reads: %d hot (L1), %d cold", tr.hotGets.Load(), tr.coldGets.Load())
}

// outage injects a fault, waits for every instance's L2 breaker to open
// and then for each to have skipped L2 (not paid for it) rejectedMin times
// while the breaker stayed open. It returns the time to detection.
func (env *faultEnv) outage(t *testing.T, tr *traffic, what string, inject func(), rejectedMin uint64) time.Duration {
	t.Helper()
	testenv.WaitFor(t, 5*time.Second, "traffic to get going", func() bool {
		return tr.hotGets.Load() > 2000 && tr.coldGets.Load() > 20
	})
	before := env.stats()
	tr.phase.Store(phaseOutage)
	start := time.Now()
	inject()
	testenv.WaitFor(t, 5*time.Second, "every L2 breaker to open after "+what, func() bool {
		return noneClosed(env.breakers())
	})
	detect := time.Since(start)
	t.Logf("%s: every L2 breaker open after %s", what, detect.Round(time.Millisecond))
	if detect > itDetectMax {
		t.Errorf("%s: L2 breakers opened after %s, want < %s", what, detect, itDetectMax)
	}
	reclosed := false
	testenv.WaitFor(t, 10*time.Second, "reads to skip L2 while it is down", func() bool {
		now := env.stats()
		done := true
		for i := range now {
			reclosed = reclosed || now[i].L2.Breaker == "closed"
			done = done && now[i].L2.Rejected-before[i].L2.Rejected >= rejectedMin
		}
		return done
	})
	if reclosed {
		t.Errorf("%s: an L2 breaker closed while Redis was still down", what)
	}
	return detect
}

func TestCacheSurvivesRedisKillAndEmptyRestart(t *testing.T) {
	srv := redistest.Start(t)
	env := newFaultEnv(t, srv.URL(), 2, 300, nil)
	env.fill(t)
	tr := startTraffic(t, env)

	env.outage(t, tr, "SIGKILL", srv.Kill, 100)
	hotDuring := tr.hotGets.Load()
	before := env.stats()
	srv.Restart() // same port, empty
	restarted := time.Now()
	var samples []warmSample
	sample := func() {
		s := warmSample{at: time.Since(restarted), hot: env.hotInRedis()}
		for i, st := range env.stats() {
			s.writes = append(s.writes, st.WarmupWrites-before[i].WarmupWrites)
		}
		samples = append(samples, s)
	}
	testenv.WaitFor(t, 10*time.Second, "every L2 breaker to close after the restart", func() bool {
		sample()
		return allClosed(env.breakers())
	})
	closedAfter := time.Since(restarted)
	tr.phase.Store(phaseRecovered)
	testenv.WaitFor(t, 20*time.Second, "the warm-up to put every hot key back in Redis", func() bool {
		sample()
		return samples[len(samples)-1].hot == len(env.hot)
	})
	tr.stop()
	t.Logf("restart: breakers closed after %s, %d hot keys back in Redis after %s",
		closedAfter.Round(time.Millisecond), len(env.hot), samples[len(samples)-1].at.Round(time.Millisecond))

	tr.checkReads(t)
	checkOutageLatency(t, tr, "SIGKILL")
	if hotDuring < 1000 {
		t.Errorf("only %d hot Gets by the end of the outage; the readers did not run", hotDuring)
	}
	if got := env.db.hotLoads.Load(); got != int64(len(env.hot)) {
		t.Errorf("database loads of cached keys = %d over the test, want %d (the fill only): the outage or the restart reached the database",
			got, len(env.hot))
	}
	after := env.stats()
	warmups := 0
	for i := range after {
		warmups += int(after[i].Warmups - before[i].Warmups)
	}
	if warmups < 1 {
		t.Errorf("no instance found the restarted Redis empty and warmed it up (Stats.Warmups unchanged)")
	}
	checkWarmupRate(t, samples, len(env.caches))
}

// warmSample is the state of a warm-up some time after the restart.
type warmSample struct {
	at     time.Duration
	hot    int      // hot keys in Redis, -1 when unreadable
	writes []uint64 // per instance: warm-up writes since the restart
}

// checkWarmupRate asserts that the refill stayed within WarmupRate: per
// instance by its own count, and for all instances together by the hot
// keys appearing in Redis (reads never write them: only the warm-up does).
func checkWarmupRate(t *testing.T, samples []warmSample, instances int) {
	t.Helper()
	if samples[0].hot != 0 {
		t.Errorf("first sample after the restart found %d hot keys in Redis, want 0 (restarted empty)", samples[0].hot)
	}
	var keys []ratePoint
	for _, s := range samples {
		if s.hot >= 0 {
			keys = append(keys, ratePoint{s.at, float64(s.hot)})
		}
	}
	r := checkRate(t, "hot keys refilled into Redis by all instances", keys, float64(instances*itWarmupRate))
	t.Logf("warm-up: hot keys reappeared at up to %.0f/s (bound %d instances x WarmupRate %d/s)", r, instances, itWarmupRate)
	for i := range instances {
		var w []ratePoint
		for _, s := range samples {
			w = append(w, ratePoint{s.at, float64(s.writes[i])})
		}
		r := checkRate(t, fmt.Sprintf("instance %d warm-up writes", i), w, itWarmupRate)
		t.Logf("warm-up: instance %d wrote %.0f values at up to %.0f/s (WarmupRate %d/s)", i, w[len(w)-1].n, r, itWarmupRate)
	}
}

type ratePoint struct {
	at time.Duration
	n  float64
}

// checkRate asserts that n grows by at most perSecond (with slack) over
// every window of at least 250 ms, and returns the fastest rate over
// windows of at least 500 ms.
func checkRate(t *testing.T, what string, pts []ratePoint, perSecond float64) (fastest float64) {
	t.Helper()
	const window, logWindow = 250 * time.Millisecond, 500 * time.Millisecond
	reported := false
	for i := range pts {
		for j := i + 1; j < len(pts); j++ {
			dt := pts[j].at - pts[i].at
			grew := pts[j].n - pts[i].n
			if dt >= logWindow {
				fastest = max(fastest, grew/dt.Seconds())
			}
			if allowed := perSecond*dt.Seconds()*itRateSlack + itRateBurst; dt >= window && grew > allowed && !reported {
				t.Errorf("%s grew by %.0f in %s (from %s after the restart), want <= %.0f at %.0f/s",
					what, grew, dt.Round(time.Millisecond), pts[i].at.Round(time.Millisecond), allowed, perSecond)
				reported = true
			}
		}
	}
	return fastest
}

// checkOutageLatency asserts that Gets stayed fast during the outage.
func checkOutageLatency(t *testing.T, tr *traffic, what string) {
	t.Helper()
	hot, cold := true, false
	all := tr.latencies(phaseOutage, nil)
	hl, cl := tr.latencies(phaseOutage, &hot), tr.latencies(phaseOutage, &cold)
	t.Logf("%s outage: Get p50/p99/max all %s/%s/%s (n=%d); hot p99 %s; cold p99 %s max %s (n=%d)", what,
		quantile(all, .5), quantile(all, .99), quantile(all, 1), len(all),
		quantile(hl, .99), quantile(cl, .99), quantile(cl, 1), len(cl))
	if p := quantile(all, .99); p > itP99Max {
		t.Errorf("%s outage: Get p99 %s, want < %s", what, p, itP99Max)
	}
	if p := quantile(hl, .99); p > itP99Max {
		t.Errorf("%s outage: hot Get p99 %s, want < %s", what, p, itP99Max)
	}
}

func TestCacheSurvivesRedisPause(t *testing.T) {
	srv := redistest.Start(t)
	env := newFaultEnv(t, srv.URL(), 2, 300, nil)
	env.fill(t)
	tr := startTraffic(t, env)

	before := env.stats()
	env.outage(t, tr, "SIGSTOP", srv.Pause, 100)
	srv.Resume()
	resumed := time.Now()
	testenv.WaitFor(t, 10*time.Second, "every L2 breaker to close after SIGCONT", func() bool {
		return allClosed(env.breakers())
	})
	t.Logf("SIGCONT: every L2 breaker closed after %s", time.Since(resumed).Round(time.Millisecond))
	tr.phase.Store(phaseRecovered)
	mid := env.stats()
	testenv.WaitFor(t, 10*time.Second, "cold reads to be written to L2 again", func() bool {
		now := env.stats()
		for i := range now {
			if now[i].L2.Writes-mid[i].L2.Writes < 10 {
				return false
			}
		}
		return true
	})
	tr.stop()

	tr.checkReads(t)
	checkOutageLatency(t, tr, "SIGSTOP")
	// Only the reads sent before the breaker opened may pay the L2 timeout
	// (50 ms): at 100 req/s, about 5 to 10 per instance.
	cold := false
	slow := 0
	for _, d := range tr.latencies(phaseOutage, &cold) {
		if d >= 40*time.Millisecond {
			slow++
		}
	}
	t.Logf("SIGSTOP: %d cold Gets took >= 40 ms", slow)
	if slowMax := 20 * len(env.caches); slow > slowMax {
		t.Errorf("%d cold Gets paid the L2 timeout during the hang, want <= %d: the breaker does not spare requests", slow, slowMax)
	}
	if got := env.db.hotLoads.Load(); got != int64(len(env.hot)) {
		t.Errorf("database loads of cached keys = %d, want %d (the fill only)", got, len(env.hot))
	}
	for i, s := range env.stats() {
		if s.Warmups != before[i].Warmups {
			t.Errorf("instance %d warmed up after a pause (Warmups %d -> %d); Redis kept its data", i, before[i].Warmups, s.Warmups)
		}
	}
}

func TestCacheSetWhileRedisDownIsRepaired(t *testing.T) {
	srv := redistest.Start(t)
	// A probes a dead L2 only every 3 s, so after the restart B has long
	// resubscribed (within 100 ms) when A repairs and broadcasts: the test
	// is of the repair and the broadcast, not of their race.
	env := newFaultEnv(t, srv.URL(), 2, 10, func(i int, co *cache.Options[string, item], so *redis.Options) {
		if i == 0 {
			co.L2Breaker.Delay = 3 * time.Second
		}
		so.ResubscribeDelayMax = 100 * time.Millisecond
	})
	env.fill(t)
	a, b := env.caches[0], env.caches[1]
	ctx := context.Background()
	k := env.hot[0]

	srv.Kill()
	v2 := item{Ver: 2, Body: "changed"}
	env.db.put(k, v2) // the database commits, then the service writes through
	start := time.Now()
	err := a.Set(ctx, k, v2)
	if took := time.Since(start); !errors.Is(err, cache.ErrUnavailable) || took > time.Second {
		t.Fatalf("Set with Redis killed = %v after %s, want ErrUnavailable within 1s", err, took)
	}
	if v, info, err := a.Get(ctx, k); err != nil || v != v2 || info.Source != cache.SourceL1 {
		t.Fatalf("A.Get after Set = %+v, %+v, %v; want %+v from L1", v, info, err, v2)
	}
	if v, _, err := b.Get(ctx, k); err != nil || v.Ver != 1 {
		t.Fatalf("B.Get with Redis down = %+v, %v; want version 1 (nothing could reach B yet)", v, err)
	}
	testenv.WaitFor(t, 5*time.Second, "A's L2 breaker to open", func() bool { return a.Stats().L2.Breaker != "closed" })

	srv.Restart() // empty
	restarted := time.Now()
	channel := env.prefix + "invalidate"
	testenv.WaitFor(t, 5*time.Second, "both instances to resubscribe", func() bool {
		m, err := env.probe.Client().PubSubNumSub(ctx, channel).Result()
		return err == nil && m[channel] >= 2
	})
	if a.Stats().L2.Breaker == "closed" {
		t.Fatalf("A's breaker closed before B resubscribed (%s after the restart); the broadcast may be lost, the test's timing assumption failed",
			time.Since(restarted))
	}
	testenv.WaitFor(t, 10*time.Second, "the repaired value in Redis", func() bool {
		_, ver, found, err := env.probe.Get(ctx, k)
		return err == nil && found && ver == 2
	})
	inRedis := time.Since(restarted)
	loads := env.db.loadsOf(k)
	var info cache.Info
	testenv.WaitFor(t, 5*time.Second, "B to see version 2", func() bool {
		var v item
		v, info, err = b.Get(ctx, k)
		return err == nil && v == v2
	})
	t.Logf("repair: version 2 in Redis %s and on B %s after the restart (B read it from %s; B received %d invalidations)",
		inRedis.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond), info.Source, b.Stats().InvalidationsReceived)
	if info.Source != cache.SourceL2 || env.db.loadsOf(k) != loads {
		t.Errorf("B got version 2 from %s with %d database loads, want from L2 with none (invalidated by A's broadcast)",
			info.Source, env.db.loadsOf(k)-loads)
	}
}
