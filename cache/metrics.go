package cache

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// counters count events; written with atomic adds, read by Stats. L1 hits,
// the hot path's, go to a striped counter.
type counters struct {
	l1Hits                                        *stripedCounter
	l1Misses                                      atomic.Uint64 // absent or stale
	l2Hits, l2Misses, l2Errors, l2Rejected        atomic.Uint64
	l2Writes                                      atomic.Uint64
	loads, loadNotFound, loadErrors, loadRejected atomic.Uint64
	bulkheadRejected, coalesced, staleServed      atomic.Uint64
	earlyRefreshes, warmups, warmupWrites         atomic.Uint64
	invalidationsReceived, publishErrors          atomic.Uint64
	subscribeErrors, pendingDropped               atomic.Uint64
}

// Stats are a cache's counters since New, per layer.
type Stats struct {
	L1     L1Stats
	L2     L2Stats
	Loader LoaderStats
	// StaleServed counts Gets answered with a stale value.
	StaleServed uint64
	// Coalesced counts Gets that joined a fetch already in flight.
	Coalesced uint64
	// EarlyRefreshes counts XFetch refreshes started.
	EarlyRefreshes uint64
	// Warmups counts times L2 was found empty; WarmupWrites the L2 writes
	// made by warm-ups and repairs.
	Warmups, WarmupWrites uint64
	// InvalidationsReceived counts broadcast keys applied to L1;
	// PublishErrors broadcasts that failed or were skipped;
	// SubscribeErrors times the subscription ended and was retried.
	InvalidationsReceived, PublishErrors, SubscribeErrors uint64
	// PendingDropped counts failed L2 writes not queued for repair because
	// the queue was full.
	PendingDropped uint64
}

// L1Stats count the in-process layer. A stale entry counts as a miss.
type L1Stats struct {
	Hits, Misses uint64
	Entries      int
}

// L2Stats count the shared store. Rejected counts calls skipped by the open
// breaker; Errors failed calls and undecodable values.
type L2Stats struct {
	Hits, Misses, Errors, Rejected, Writes uint64
	Breaker                                string // closed, open or half-open
}

// LoaderStats count the source of truth. Loads and NotFound are successful
// loads; Rejected counts loads skipped by the open breaker and
// BulkheadRejected those refused by the bulkhead.
type LoaderStats struct {
	Loads, NotFound, Errors, Rejected, BulkheadRejected uint64
	Breaker                                             string
}

// Stats returns the cache's counters.
func (c *Cache[K, V]) Stats() Stats {
	n := &c.counters
	return Stats{
		L1: L1Stats{Hits: n.l1Hits.load(), Misses: n.l1Misses.Load(), Entries: c.l1.EstimatedSize()},
		L2: L2Stats{
			Hits: n.l2Hits.Load(), Misses: n.l2Misses.Load(), Errors: n.l2Errors.Load(),
			Rejected: n.l2Rejected.Load(), Writes: n.l2Writes.Load(), Breaker: c.l2Breaker.State().String(),
		},
		Loader: LoaderStats{
			Loads: n.loads.Load(), NotFound: n.loadNotFound.Load(), Errors: n.loadErrors.Load(),
			Rejected: n.loadRejected.Load(), BulkheadRejected: n.bulkheadRejected.Load(),
			Breaker: c.loadBreaker.State().String(),
		},
		StaleServed: n.staleServed.Load(), Coalesced: n.coalesced.Load(), EarlyRefreshes: n.earlyRefreshes.Load(),
		Warmups: n.warmups.Load(), WarmupWrites: n.warmupWrites.Load(),
		InvalidationsReceived: n.invalidationsReceived.Load(), PublishErrors: n.publishErrors.Load(),
		SubscribeErrors: n.subscribeErrors.Load(), PendingDropped: n.pendingDropped.Load(),
	}
}

var (
	loadSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "outlast_cache_load_duration_seconds",
		Help:    "Time taken by loader calls (the source of truth), successful or not.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"cache"})
	breakerState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_cache_breaker_state",
		Help: "Circuit breaker state per layer: 0 closed, 1 half-open, 2 open.",
	}, []string{"cache", "layer"})
	statsCollector = &collector{caches: make(map[*registration]struct{})}
)

// Collectors returns the package's Prometheus collectors, to be registered
// once by the binary. Counters are read from every live Cache at scrape
// time, summed by Options.Name.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{statsCollector, loadSeconds, breakerState}
}

// registration ties a live Cache to the collector.
type registration struct {
	name        string
	stats       func() Stats
	loadSeconds prometheus.Observer
}

func register(name string, s func() Stats) *registration {
	r := &registration{name: name, stats: s, loadSeconds: loadSeconds.WithLabelValues(name)}
	statsCollector.mu.Lock()
	statsCollector.caches[r] = struct{}{}
	statsCollector.mu.Unlock()
	return r
}

func (r *registration) unregister() {
	statsCollector.mu.Lock()
	delete(statsCollector.caches, r)
	statsCollector.mu.Unlock()
}

type metric struct {
	desc   *prometheus.Desc
	kind   prometheus.ValueType
	labels []string // after the cache label
	value  func(s *Stats) float64
}

func counter(name, help string, labels []string, value func(s *Stats) float64) metric {
	return metric{prometheus.NewDesc(name, help, append([]string{"cache"}, labels...), nil), prometheus.CounterValue, labels, value}
}

func u(v uint64) float64 { return float64(v) }

var (
	layerLabel = []string{"layer"}
	metrics    = []metric{
		counter("outlast_cache_hits_total", "Gets answered by the layer.", layerLabel, nil),
		counter("outlast_cache_misses_total", "Lookups the layer could not answer.", layerLabel, nil),
		counter("outlast_cache_errors_total", "Failed calls to the layer.", layerLabel, nil),
		counter("outlast_cache_breaker_rejections_total", "Calls skipped because the layer's breaker was open.", layerLabel, nil),
		counter("outlast_cache_loads_total", "Successful loader calls.", nil, func(s *Stats) float64 { return u(s.Loader.Loads) }),
		counter("outlast_cache_not_found_total", "Loader calls that found no value (cached negatively).", nil, func(s *Stats) float64 { return u(s.Loader.NotFound) }),
		counter("outlast_cache_stale_served_total", "Gets answered with a stale value because L2 and the loader failed.", nil, func(s *Stats) float64 { return u(s.StaleServed) }),
		counter("outlast_cache_bulkhead_rejections_total", "Fetches refused because too many were in flight.", nil, func(s *Stats) float64 { return u(s.Loader.BulkheadRejected) }),
		counter("outlast_cache_coalesced_total", "Gets that joined a fetch already in flight.", nil, func(s *Stats) float64 { return u(s.Coalesced) }),
		counter("outlast_cache_early_refreshes_total", "XFetch early refreshes started.", nil, func(s *Stats) float64 { return u(s.EarlyRefreshes) }),
		counter("outlast_cache_warmups_total", "Times L2 was found empty and warmed up.", nil, func(s *Stats) float64 { return u(s.Warmups) }),
		counter("outlast_cache_warmup_writes_total", "L2 writes by warm-ups and repairs.", nil, func(s *Stats) float64 { return u(s.WarmupWrites) }),
		counter("outlast_cache_invalidations_received_total", "Broadcast invalidations applied to L1.", nil, func(s *Stats) float64 { return u(s.InvalidationsReceived) }),
		counter("outlast_cache_publish_errors_total", "Invalidation broadcasts failed or skipped.", nil, func(s *Stats) float64 { return u(s.PublishErrors) }),
		{prometheus.NewDesc("outlast_cache_entries", "Entries in L1.", []string{"cache"}, nil), prometheus.GaugeValue, nil, func(s *Stats) float64 { return float64(s.L1.Entries) }},
	}
)

// layerValues gives the per-layer metrics (the first four) by layer.
func layerValues(i int, s *Stats) map[string]float64 {
	switch i {
	case 0:
		return map[string]float64{"l1": u(s.L1.Hits), "l2": u(s.L2.Hits)}
	case 1:
		return map[string]float64{"l1": u(s.L1.Misses), "l2": u(s.L2.Misses)}
	case 2:
		return map[string]float64{"l2": u(s.L2.Errors), "loader": u(s.Loader.Errors)}
	default:
		return map[string]float64{"l2": u(s.L2.Rejected), "loader": u(s.Loader.Rejected)}
	}
}

// collector reads every live Cache's Stats at scrape time.
type collector struct {
	mu     sync.Mutex
	caches map[*registration]struct{}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range metrics {
		ch <- m.desc
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	byName := map[string][]Stats{}
	c.mu.Lock()
	regs := make([]*registration, 0, len(c.caches))
	for r := range c.caches {
		regs = append(regs, r)
	}
	c.mu.Unlock()
	for _, r := range regs {
		byName[r.name] = append(byName[r.name], r.stats())
	}
	for name, all := range byName {
		for i, m := range metrics {
			if m.value == nil {
				sums := map[string]float64{}
				for j := range all {
					for layer, v := range layerValues(i, &all[j]) {
						sums[layer] += v
					}
				}
				for layer, v := range sums {
					ch <- prometheus.MustNewConstMetric(m.desc, m.kind, v, name, layer)
				}
				continue
			}
			var sum float64
			for j := range all {
				sum += m.value(&all[j])
			}
			ch <- prometheus.MustNewConstMetric(m.desc, m.kind, sum, name)
		}
	}
}

// stripedCounter is a counter for the hot path: each add goes to a random
// cache-line-sized stripe, so cores rarely contend on one line. It is
// cheaper than otter's recorder (no sync.Pool round trip).
type stripedCounter struct {
	stripes []paddedCounter
	mask    uint32
}

type paddedCounter struct {
	n atomic.Uint64
	_ [56]byte
}

func newStripedCounter() *stripedCounter {
	n := 1
	for n < 4*runtime.GOMAXPROCS(0) {
		n <<= 1
	}
	return &stripedCounter{stripes: make([]paddedCounter, n), mask: uint32(n - 1)}
}

func (s *stripedCounter) add() { s.stripes[rand.Uint32()&s.mask].n.Add(1) }

func (s *stripedCounter) load() uint64 {
	var sum uint64
	for i := range s.stripes {
		sum += s.stripes[i].n.Load()
	}
	return sum
}
