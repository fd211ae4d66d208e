package main

import (
	"context"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// latencyMaxMicros is the largest latency the histograms hold; larger ones
// are recorded as this.
const latencyMaxMicros = int64(time.Minute / time.Microsecond)

// errorKindsMax bounds the distinct error messages kept per run.
const errorKindsMax = 8

// bucketStats is one row of the per-second table: the requests whose
// intended send time fell into it, and the database queries made in it.
type bucketStats struct {
	mu       sync.Mutex
	hist     *hdrhistogram.Histogram // latency from the intended send time, µs
	requests int64
	errors   int64
	queries  int64 // written by the sampler only
}

func (b *bucketStats) record(latency time.Duration, failed bool) {
	us := min(max(1, latency.Microseconds()), latencyMaxMicros)
	b.mu.Lock()
	_ = b.hist.RecordValue(us)
	b.requests++
	if failed {
		b.errors++
	}
	b.mu.Unlock()
}

func (b *bucketStats) reject() {
	b.mu.Lock()
	b.requests++
	b.errors++
	b.mu.Unlock()
}

// timedEvent is a fault injected at an offset from the measured start.
type timedEvent struct {
	at   time.Duration
	name string
	do   func() error
}

// driveConfig is one open-loop run.
type driveConfig struct {
	rate        float64       // requests per second
	duration    time.Duration // measured
	prewarm     time.Duration // unmeasured load before the measured start
	bucket      time.Duration // row width
	inflightMax int64
	timeout     time.Duration // per request
	next        func() string // the key of the next request; driver goroutine only
	events      []timedEvent
	queries     *atomic.Int64 // the loader's query counter
}

// runResult is what one run measured.
type runResult struct {
	buckets  []*bucketStats
	eventLog []string // each event with its actual offset

	errMu    sync.Mutex
	errKinds map[string]int64 // first errorKindsMax distinct messages
}

// benchKeyPattern matches the keys inside error messages, which are
// replaced so that messages differing only by key count as one kind.
var benchKeyPattern = regexp.MustCompile(`k:[0-9]+`)

func (r *runResult) noteError(err error) {
	msg := benchKeyPattern.ReplaceAllString(err.Error(), "k:N")
	if len(msg) > 160 {
		msg = msg[:160] + "…"
	}
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if _, ok := r.errKinds[msg]; ok || len(r.errKinds) < errorKindsMax {
		r.errKinds[msg]++
	} else {
		r.errKinds["(other messages)"]++
	}
}

// drive sends cfg.rate requests per second to c, open loop: each request
// has an intended send time fixed in advance, its latency is measured from
// that time (so a stalled harness or cache cannot hide queueing: no
// coordinated omission), and a request that cannot start because
// cfg.inflightMax are in flight counts as an error. It returns when every
// request has finished.
func drive(ctx context.Context, c benchCache, cfg driveConfig) (*runResult, error) {
	nb := int((cfg.duration + cfg.bucket - 1) / cfg.bucket)
	res := &runResult{buckets: make([]*bucketStats, nb), errKinds: make(map[string]int64)}
	for i := range res.buckets {
		res.buckets[i] = &bucketStats{hist: hdrhistogram.New(1, latencyMaxMicros, 3)}
	}
	d := &driver{ctx: ctx, c: c, cfg: cfg, res: res, origin: time.Now()}
	start := d.origin.Add(cfg.prewarm)
	var bg sync.WaitGroup
	bgCtx, stopBg := context.WithCancel(ctx)
	defer func() { stopBg(); bg.Wait() }()
	// The sampler stops at the end of the last bucket (or on cancellation),
	// not when the requests are done: the last bucket's queries would be lost.
	sampled := make(chan struct{})
	bg.Go(func() { defer close(sampled); sampleQueries(bgCtx, start, cfg, res.buckets) })
	eventErr := make(chan error, 1)
	bg.Go(func() { runEvents(bgCtx, start, cfg.events, res, eventErr) })

	interval := float64(time.Second) / cfg.rate
	total := int(float64(cfg.prewarm+cfg.duration) / interval)
	for i := 0; i < total; {
		// Requests are sent in batches: a sleep shorter than a millisecond
		// lasts about one (the runtime's poller waits in milliseconds).
		now := time.Since(d.origin)
		for ; i < total && time.Duration(float64(i)*interval) <= now; i++ {
			d.issue(time.Duration(float64(i) * interval))
		}
		select {
		case <-ctx.Done():
			d.reqs.Wait()
			return nil, ctx.Err()
		case err := <-eventErr:
			d.reqs.Wait()
			return nil, err
		case <-time.After(time.Duration(float64(i)*interval) - time.Since(d.origin)):
		}
	}
	d.reqs.Wait()
	select {
	case <-sampled:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case err := <-eventErr:
		return nil, err
	default:
	}
	return res, nil
}

// driver is the state of one drive.
type driver struct {
	ctx      context.Context
	c        benchCache
	cfg      driveConfig
	res      *runResult
	origin   time.Time // the first intended send time (the pre-warm's start)
	inflight atomic.Int64
	reqs     sync.WaitGroup
}

// issue starts the request intended at offset from origin, or counts it
// as an error when too many are in flight.
func (d *driver) issue(offset time.Duration) {
	var bucket *bucketStats // nil during the pre-warm: not measured
	if rel := offset - d.cfg.prewarm; rel >= 0 {
		bucket = d.res.buckets[min(int(rel/d.cfg.bucket), len(d.res.buckets)-1)]
	}
	key := d.cfg.next()
	if d.inflight.Load() >= d.cfg.inflightMax {
		if bucket != nil {
			bucket.reject()
		}
		return
	}
	d.inflight.Add(1)
	d.reqs.Add(1)
	go func() {
		defer d.reqs.Done()
		defer d.inflight.Add(-1)
		request(d.ctx, d.c, key, d.origin.Add(offset), d.cfg.timeout, bucket, d.res)
	}()
}

func request(ctx context.Context, c benchCache, key string, intended time.Time, timeout time.Duration, b *bucketStats, res *runResult) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	err := c.get(ctx, key)
	cancel()
	latency := time.Since(intended)
	if b == nil {
		return
	}
	b.record(latency, err != nil)
	if err != nil {
		res.noteError(err)
	}
}

// sampleQueries attributes the loader's queries to buckets by reading the
// counter at every bucket boundary.
func sampleQueries(ctx context.Context, start time.Time, cfg driveConfig, buckets []*bucketStats) {
	if !sleepUntil(ctx, start) {
		return
	}
	last := cfg.queries.Load()
	for i, b := range buckets {
		if !sleepUntil(ctx, start.Add(time.Duration(i+1)*cfg.bucket)) {
			return
		}
		n := cfg.queries.Load()
		b.mu.Lock()
		b.queries = n - last
		b.mu.Unlock()
		last = n
	}
}

func runEvents(ctx context.Context, start time.Time, events []timedEvent, res *runResult, errc chan<- error) {
	for _, ev := range events {
		if !sleepUntil(ctx, start.Add(ev.at)) {
			return
		}
		began := time.Since(start)
		if err := ev.do(); err != nil {
			errc <- fmt.Errorf("%s: %w", ev.name, err)
			return
		}
		res.eventLog = append(res.eventLog, fmt.Sprintf("%s at %.3f s (took %s)", ev.name, began.Seconds(),
			(time.Since(start)-began).Round(time.Millisecond)))
	}
}

// sleepUntil waits for t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
