// Package load is Outlast's one open-loop load generator. Request i has an
// intended send time fixed in advance (the start plus i/Rate); its latency
// is measured from that time, not from when it actually started, so a
// stalled target or harness cannot hide the queueing it causes ("coordinated
// omission", Gil Tene). A request that cannot start because too many are in
// flight is dropped and reported, never queued, so the generator never grows
// without bound and never slows down to suit the target.
//
// The benchmarks and the demo's traffic run on it; latencies go into HDR
// histograms made by NewHistogram.
package load

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// DefaultInflightMax is Open.InflightMax when it is <= 0.
const DefaultInflightMax = 1024

// ErrDropped is the error Open.Done gets for a request that was not sent
// because InflightMax requests were in flight.
var ErrDropped = errors.New("load: dropped: too many requests in flight")

// Open sends requests at a fixed rate, open loop.
type Open struct {
	Rate float64 // requests per second; must be > 0
	// Duration is how long requests are sent for; if <= 0, until ctx ends.
	Duration time.Duration
	// Start is the intended send time of request 0; if zero, when Run is
	// called. Setting it lets other timed work share the run's clock.
	Start time.Time
	// InflightMax bounds the requests in flight; if <= 0,
	// DefaultInflightMax.
	InflightMax int64
	// WaitWhenFull makes a request past InflightMax wait for a slot
	// instead of being dropped, and the requests after it wait in turn.
	// Its latency still counts from its intended send time, so the wait
	// shows in the numbers; it suits a benchmark that wants a latency at
	// any load rather than an error.
	WaitWhenFull bool

	// Next returns request seq. Run calls it on its own goroutine, in
	// order, for every request, even one that is then dropped, so a seeded
	// sequence is the same whatever the target does. The returned function
	// runs on a goroutine of its own, with Run's ctx.
	Next func(seq int) func(ctx context.Context) error
	// Done gets each request's outcome: due is its intended send time as
	// an offset from Start, latency is measured from then, err is what the
	// request returned, ErrDropped, or ctx's error for a request that was
	// waiting for a slot (WaitWhenFull) when ctx ended. It is called
	// concurrently.
	Done func(seq int, due, latency time.Duration, err error)
}

// Run sends the requests and returns once every request it started has
// finished: nil after Duration, or ctx's error when ctx ended first (with
// Duration <= 0, the normal end).
func (o *Open) Run(ctx context.Context) error {
	if !(o.Rate > 0) || math.IsInf(o.Rate, 0) {
		return fmt.Errorf("load: rate %v: must be a positive number", o.Rate)
	}
	r := &run{o: o, start: o.Start, interval: float64(time.Second) / o.Rate, total: math.MaxInt}
	if r.start.IsZero() {
		r.start = time.Now()
	}
	if o.Duration > 0 {
		r.total = int(float64(o.Duration) / r.interval)
	}
	inflightMax := o.InflightMax
	if inflightMax <= 0 {
		inflightMax = DefaultInflightMax
	}
	r.slots = make(chan struct{}, inflightMax)
	defer r.reqs.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for seq := 0; seq < r.total && ctx.Err() == nil; {
		// Every request that is due goes out in one batch: a timer shorter
		// than a millisecond fires after about one (the runtime's poller
		// waits in milliseconds), so one timer per request could not keep
		// a rate above 1,000/s.
		now := time.Since(r.start)
		for ; seq < r.total && r.due(seq) <= now && ctx.Err() == nil; seq++ {
			r.issue(ctx, seq)
		}
		if seq == r.total {
			return nil
		}
		timer.Reset(r.due(seq) - time.Since(r.start))
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
	}
	return ctx.Err()
}

// run is the state of one Run.
type run struct {
	o        *Open
	start    time.Time
	interval float64       // ns between intended send times
	total    int           // requests to send
	slots    chan struct{} // one element per request in flight
	reqs     sync.WaitGroup
}

func (r *run) due(seq int) time.Duration { return time.Duration(float64(seq) * r.interval) }

// issue starts request seq, or reports it dropped when every slot is taken
// (or waits for one, with WaitWhenFull).
func (r *run) issue(ctx context.Context, seq int) {
	req, due := r.o.Next(seq), r.due(seq)
	select {
	case r.slots <- struct{}{}:
	default:
		if !r.o.WaitWhenFull {
			r.o.Done(seq, due, 0, ErrDropped)
			return
		}
		select {
		case r.slots <- struct{}{}:
		case <-ctx.Done():
			r.o.Done(seq, due, time.Since(r.start.Add(due)), ctx.Err())
			return
		}
	}
	r.reqs.Go(func() {
		defer func() { <-r.slots }()
		err := req(ctx)
		r.o.Done(seq, due, time.Since(r.start.Add(due)), err)
	})
}

// LatencyMax is the largest latency a histogram from NewHistogram holds;
// Record clamps larger ones to it.
const LatencyMax = time.Minute

// NewHistogram returns a histogram of latencies in microseconds, 1 µs to
// LatencyMax at 3 significant digits: the range and precision of every
// Outlast load report, so that histograms can be merged. It is not safe
// for concurrent use.
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, LatencyMax.Microseconds(), 3)
}

// Record records latency in h, clamped to 1 µs..LatencyMax: the histogram
// refuses values out of its range, and a refused value would silently make
// the worst latencies vanish from the report.
func Record(h *hdrhistogram.Histogram, latency time.Duration) {
	_ = h.RecordValue(min(max(1, latency.Microseconds()), LatencyMax.Microseconds()))
}
