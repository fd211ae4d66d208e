package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/outlast/outlast/internal/backoff"
	"github.com/outlast/outlast/internal/load"
)

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
	b.mu.Lock()
	load.Record(b.hist, latency)
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
	next        func() string // the key of the next request; called in order, by load.Open.Run only
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

// drive sends cfg.rate requests per second to c, open loop (see package
// load: latency from the intended send time, a request that cannot start
// because cfg.inflightMax are in flight counts as an error), while the
// sampler and the fault events run on the same clock. It returns when
// every request has finished.
func drive(ctx context.Context, c benchCache, cfg driveConfig) (*runResult, error) {
	nb := int((cfg.duration + cfg.bucket - 1) / cfg.bucket)
	res := &runResult{buckets: make([]*bucketStats, nb), errKinds: make(map[string]int64)}
	for i := range res.buckets {
		res.buckets[i] = &bucketStats{hist: load.NewHistogram()}
	}
	origin := time.Now() // the first intended send time (the pre-warm's start)
	start := origin.Add(cfg.prewarm)
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var bg sync.WaitGroup
	bgCtx, stopBg := context.WithCancel(ctx)
	defer func() { stopBg(); bg.Wait() }()
	// The sampler stops at the end of the last bucket (or on cancellation),
	// not when the requests are done: the last bucket's queries would be lost.
	sampled := make(chan struct{})
	bg.Go(func() { defer close(sampled); sampleQueries(bgCtx, start, cfg, res.buckets) })
	eventErr := make(chan error, 1)
	bg.Go(func() {
		if err := runEvents(bgCtx, start, cfg.events, res); err != nil {
			eventErr <- err
			stopRun() // a fault that could not be injected voids the run
		}
	})
	gen := load.Open{Rate: cfg.rate, Duration: cfg.prewarm + cfg.duration, Start: origin, InflightMax: cfg.inflightMax,
		Next: func(int) func(context.Context) error {
			key := cfg.next()
			return func(ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
				defer cancel()
				return c.get(ctx, key)
			}
		},
		Done: func(_ int, due, latency time.Duration, err error) { res.done(cfg, due, latency, err) },
	}
	runErr := gen.Run(runCtx)
	select {
	case err := <-eventErr:
		return nil, err
	default:
	}
	if runErr != nil {
		return nil, runErr
	}
	select {
	case <-sampled:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return res, nil
}

// done records a request in the bucket its intended send time falls into;
// the pre-warm's requests are not measured.
func (r *runResult) done(cfg driveConfig, due, latency time.Duration, err error) {
	rel := due - cfg.prewarm
	if rel < 0 {
		return
	}
	b := r.buckets[min(int(rel/cfg.bucket), len(r.buckets)-1)]
	if errors.Is(err, load.ErrDropped) {
		b.reject()
		return
	}
	b.record(latency, err != nil)
	if err != nil {
		r.noteError(err)
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

// runEvents injects the faults at their offsets from start, and stops at
// the first that fails.
func runEvents(ctx context.Context, start time.Time, events []timedEvent, res *runResult) error {
	for _, ev := range events {
		if !sleepUntil(ctx, start.Add(ev.at)) {
			return nil
		}
		began := time.Since(start)
		if err := ev.do(); err != nil {
			return fmt.Errorf("%s: %w", ev.name, err)
		}
		res.eventLog = append(res.eventLog, fmt.Sprintf("%s at %.3f s (took %s)", ev.name, began.Seconds(),
			(time.Since(start)-began).Round(time.Millisecond)))
	}
	return nil
}

// sleepUntil waits for t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	return backoff.Sleep(ctx, time.Until(t))
}
