// Package chaos is Outlast's chaos lab: scenarios that reproduce the seed
// incidents against real processes on loopback, run against Outlast and
// against the naive design the seeds describe, and measured the same way
// for both. This file is what a scenario records: a per-second series of
// what the load saw and what the system reported, with the fault windows
// that explain it.
package chaos

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/outlast/outlast/internal/load"
)

// Second is one second of a run, from the load's side (requests by the
// second they were due in, so a stall shows where it hurt) and from the
// system's (gauges sampled during the second).
type Second struct {
	T        int            `json:"t"` // seconds since the run started
	Requests int            `json:"requests"`
	Errors   map[string]int `json:"errors,omitempty"` // by outcome: "503", "timeout", "dropped", …
	P50MS    float64        `json:"p50_ms"`
	P99MS    float64        `json:"p99_ms"`
	MaxMS    float64        `json:"max_ms"`
	// Gauges are the system's readings this second (database queries,
	// log lag, oldest unapplied notification, breaker states, applied
	// config version per instance, …); the last reading of each wins.
	Gauges map[string]float64 `json:"gauges,omitempty"`
}

// Window is a span of a run, from its start: a fault in force, or a phase.
type Window struct {
	Name string        `json:"name"`
	From time.Duration `json:"from"`
	To   time.Duration `json:"to"`
}

// Recorder collects a run's per-second series; it is safe for
// concurrent use by the load's Done callback and the samplers.
type Recorder struct {
	start time.Time

	mu      sync.Mutex
	seconds map[int]*second
	windows []Window
}

type second struct {
	requests int
	errors   map[string]int
	latency  *hdrhistogram.Histogram
	gauges   map[string]float64
}

// NewRecorder records a run that started at start.
func NewRecorder(start time.Time) *Recorder {
	return &Recorder{start: start, seconds: map[int]*second{}}
}

// Start is when the run started.
func (r *Recorder) Start() time.Time { return r.start }

// at returns second t's bucket; r.mu is held.
func (r *Recorder) at(t int) *second {
	s := r.seconds[t]
	if s == nil {
		s = &second{errors: map[string]int{}, latency: load.NewHistogram(), gauges: map[string]float64{}}
		r.seconds[t] = s
	}
	return s
}

// Request records one request due at due (an offset from the start, as
// load.Open reports it) that took latency and ended in outcome: "" for
// success, else what went wrong ("503", "timeout", "dropped").
func (r *Recorder) Request(due, latency time.Duration, outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.at(int(due / time.Second))
	s.requests++
	if outcome != "" {
		s.errors[outcome]++
		return
	}
	load.Record(s.latency, latency)
}

// Gauge records a reading of name taken at at.
func (r *Recorder) Gauge(name string, at time.Time, value float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.at(int(at.Sub(r.start) / time.Second)).gauges[name] = value
}

// Window records that name was in force from from to to (wall times).
func (r *Recorder) Window(name string, from, to time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.windows = append(r.windows, Window{Name: name, From: from.Sub(r.start), To: to.Sub(r.start)})
}

// Series returns the seconds recorded so far, in order, with every second
// between the first and the last present (a second without requests is a
// zero, not a gap), and the windows.
func (r *Recorder) Series() ([]Second, []Window) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seconds) == 0 {
		return nil, slices.Clone(r.windows)
	}
	ts := slices.Sorted(maps.Keys(r.seconds))
	out := make([]Second, 0, ts[len(ts)-1]-ts[0]+1)
	for t := ts[0]; t <= ts[len(ts)-1]; t++ {
		sec := Second{T: t}
		if s := r.seconds[t]; s != nil {
			sec.Requests = s.requests
			if len(s.errors) > 0 {
				sec.Errors = maps.Clone(s.errors)
			}
			if len(s.gauges) > 0 {
				sec.Gauges = maps.Clone(s.gauges)
			}
			if s.latency.TotalCount() > 0 {
				sec.P50MS = ms(s.latency.ValueAtQuantile(50))
				sec.P99MS = ms(s.latency.ValueAtQuantile(99))
				sec.MaxMS = ms(s.latency.Max())
			}
		}
		out = append(out, sec)
	}
	return out, slices.Clone(r.windows)
}

// ms is a histogram value (µs) in milliseconds.
func ms(us int64) float64 { return float64(us) / 1000 }
