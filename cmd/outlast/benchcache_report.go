package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/outlast/outlast/internal/load"
)

// Targets of issue 3 for the outlast cache in a Redis-dies run.
const (
	targetDBDuringRatio = 1.2 // DB queries during the outage / before
	targetP99Ratio      = 2.0 // p99 during the outage / before
	targetDBAfterRatio  = 1.2 // worst second after the restart / before
)

// windows are the bucket ranges (inclusive) the summary averages over.
type windows struct {
	failIdx, backIdx, n int
}

func newWindows(duration, bucket time.Duration) windows {
	return windows{failIdx: int(duration / 3 / bucket), backIdx: int(2 * duration / 3 / bucket), n: int((duration + bucket - 1) / bucket)}
}

func (w windows) before() (int, int)    { return w.failIdx / 2, w.failIdx - 1 }
func (w windows) dbDuring() (int, int)  { return w.failIdx + 1, w.backIdx - 1 }
func (w windows) p99During() (int, int) { return w.failIdx, w.backIdx - 1 }
func (w windows) after() (int, int)     { return w.backIdx + 1, w.n - 1 }
func (w windows) afterMax() (int, int)  { return w.backIdx, w.n - 1 }

func (w windows) describe(bucket time.Duration) string {
	r := func(lo, hi int) string { return bucketLabel(lo, bucket) + "–" + bucketLabel(hi, bucket) }
	return fmt.Sprintf("Windows (seconds from t=0): DB before = mean of %s; DB during = mean of %s; DB after = mean of %s; "+
		"worst s after/before = the worst single second of %s (the restart second included) over the before mean; "+
		"p99 before over %s, p99 during over %s (the failure second included).",
		r(w.before()), r(w.dbDuring()), r(w.after()), r(w.afterMax()), r(w.before()), r(w.p99During()))
}

func bucketLabel(i int, bucket time.Duration) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", (time.Duration(i)*bucket).Seconds()), "0"), ".")
}

// runSummary is one contender's Redis-dies run in numbers.
type runSummary struct {
	dbBefore, dbDuring, dbAfter, dbAfterMax float64 // queries per second
	p99Before, p99During, maxDuring         int64   // µs
	errors, requests                        int64
}

func (s runSummary) dbDuringRatio() float64 { return ratio(s.dbDuring, s.dbBefore) }
func (s runSummary) dbAfterRatio() float64  { return ratio(s.dbAfterMax, s.dbBefore) }
func (s runSummary) p99Ratio() float64      { return ratio(float64(s.p99During), float64(s.p99Before)) }

func ratio(a, b float64) float64 {
	if b <= 0 {
		if a <= 0 {
			return 1
		}
		return a / 1e-9
	}
	return a / b
}

func summarize(res *runResult, w windows, bucket time.Duration) runSummary {
	s := runSummary{
		dbBefore:   meanRate(res.buckets, bucket, w.before),
		dbDuring:   meanRate(res.buckets, bucket, w.dbDuring),
		dbAfter:    meanRate(res.buckets, bucket, w.after),
		dbAfterMax: maxRate(res.buckets, bucket, w.afterMax),
	}
	before, during := merged(res.buckets, w.before), merged(res.buckets, w.p99During)
	s.p99Before, s.p99During, s.maxDuring = before.ValueAtQuantile(99), during.ValueAtQuantile(99), during.Max()
	for _, b := range res.buckets {
		s.errors += b.errors
		s.requests += b.requests
	}
	return s
}

func meanRate(buckets []*bucketStats, bucket time.Duration, win func() (int, int)) float64 {
	lo, hi := win()
	if hi < lo {
		return 0
	}
	var q int64
	for _, b := range buckets[lo : hi+1] {
		q += b.queries
	}
	return float64(q) / (float64(hi-lo+1) * bucket.Seconds())
}

func maxRate(buckets []*bucketStats, bucket time.Duration, win func() (int, int)) float64 {
	lo, hi := win()
	var m int64
	for _, b := range buckets[lo:max(lo, hi+1)] {
		m = max(m, b.queries)
	}
	return float64(m) / bucket.Seconds()
}

func merged(buckets []*bucketStats, win func() (int, int)) *hdrhistogram.Histogram {
	lo, hi := win()
	h := load.NewHistogram()
	for _, b := range buckets[lo:max(lo, hi+1)] {
		h.Merge(b.hist)
	}
	return h
}

// fmtMs prints microseconds as milliseconds with sensible precision.
func fmtMs(us int64) string {
	ms := float64(us) / 1000
	switch {
	case ms < 10:
		return fmt.Sprintf("%.2f", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f", ms)
	}
	return fmt.Sprintf("%.0f", ms)
}

func writeSummaryTable(w io.Writer, runs []contenderRun, win windows, bucket time.Duration) {
	fmt.Fprintln(w, "| contender | DB q/s before | DB q/s during | DB q/s after | during/before | worst s after/before | p99 before ms | p99 during ms | p99 during/before | max during ms | errors / requests |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, run := range runs {
		s := summarize(run.res, win, bucket)
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %.2fx | %.2fx | %s | %s | %.1fx | %s | %d / %d |\n",
			run.spec.name, s.dbBefore, s.dbDuring, s.dbAfter, s.dbDuringRatio(), s.dbAfterRatio(),
			fmtMs(s.p99Before), fmtMs(s.p99During), s.p99Ratio(), fmtMs(s.maxDuring), s.errors, s.requests)
	}
	fmt.Fprintln(w)
}

// writeTargets prints PASS/FAIL for each of the targets for the
// outlast cache.
func writeTargets(w io.Writer, faults []string, all map[string][]contenderRun, win windows, bucket time.Duration) {
	var sums []runSummary
	var titles []string
	for _, f := range faults {
		for _, run := range all[f] {
			if run.spec.id == "outlast" {
				sums = append(sums, summarize(run.res, win, bucket))
				titles = append(titles, faultTitle(f))
			}
		}
	}
	if len(sums) == 0 {
		return
	}
	fmt.Fprintf(w, "#### Targets for the outlast cache\n\n| target | %s |\n|---|%s\n", strings.Join(titles, " | "), strings.Repeat("---|", len(titles)))
	row := func(name string, cell func(runSummary) (bool, string)) {
		fmt.Fprintf(w, "| %s |", name)
		for _, s := range sums {
			ok, detail := cell(s)
			fmt.Fprintf(w, " %s (%s) |", passFail(ok), detail)
		}
		fmt.Fprintln(w)
	}
	row(fmt.Sprintf("DB queries during the outage ≤ %.1fx before", targetDBDuringRatio), func(s runSummary) (bool, string) {
		return s.dbDuringRatio() <= targetDBDuringRatio, fmt.Sprintf("%.2fx", s.dbDuringRatio())
	})
	row(fmt.Sprintf("p99 during the outage ≤ %.0fx before", targetP99Ratio), func(s runSummary) (bool, string) {
		return s.p99Ratio() <= targetP99Ratio, fmt.Sprintf("%s → %s ms, %.1fx", fmtMs(s.p99Before), fmtMs(s.p99During), s.p99Ratio())
	})
	row("no errors", func(s runSummary) (bool, string) {
		return s.errors == 0, fmt.Sprintf("%d", s.errors)
	})
	row(fmt.Sprintf("no second after the restart > %.1fx the DB rate before", targetDBAfterRatio), func(s runSummary) (bool, string) {
		return s.dbAfterRatio() <= targetDBAfterRatio, fmt.Sprintf("worst %.2fx", s.dbAfterRatio())
	})
	fmt.Fprintln(w)
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// writeRunTable prints one run per second, then its events, the
// contender's own counters and its errors.
func writeRunTable(w io.Writer, title string, run contenderRun, bucket time.Duration) {
	fmt.Fprintf(w, "#### %s\n\n| s | DB q/s | req/s | p50 ms | p99 ms | max ms | errors |\n|---:|---:|---:|---:|---:|---:|---:|\n", title)
	secs := bucket.Seconds()
	for i, b := range run.res.buckets {
		p50, p99, mx := "–", "–", "–"
		if b.hist.TotalCount() > 0 {
			p50, p99, mx = fmtMs(b.hist.ValueAtQuantile(50)), fmtMs(b.hist.ValueAtQuantile(99)), fmtMs(b.hist.Max())
		}
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %s | %s | %s | %d |\n",
			bucketLabel(i, bucket), float64(b.queries)/secs, float64(b.requests)/secs, p50, p99, mx, b.errors)
	}
	fmt.Fprintln(w)
	for _, e := range run.res.eventLog {
		fmt.Fprintf(w, "- %s\n", e)
	}
	if run.stats != "" {
		fmt.Fprintf(w, "- counters: %s\n", run.stats)
	}
	for _, msg := range slices.Sorted(maps.Keys(run.res.errKinds)) {
		fmt.Fprintf(w, "- error ×%d: `%s`\n", run.res.errKinds[msg], strings.ReplaceAll(msg, "`", "'"))
	}
	fmt.Fprintln(w)
}

// writeStampedeTable summarises the stampede runs: DB loads per TTL period.
func writeStampedeTable(w io.Writer, runs []contenderRun, duration, ttl, bucket time.Duration) {
	periods := duration.Seconds() / ttl.Seconds()
	fmt.Fprintln(w, "| contender | requests | DB loads | periods | loads per period | worst second (loads) | p50 ms | p99 ms | max ms | errors |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, run := range runs {
		h := load.NewHistogram()
		var loads, worst, reqs, errs int64
		for _, b := range run.res.buckets {
			h.Merge(b.hist)
			loads += b.queries
			worst = max(worst, b.queries)
			reqs += b.requests
			errs += b.errors
		}
		fmt.Fprintf(w, "| %s | %d | %d | %.0f | %.1f | %d | %s | %s | %s | %d |\n", run.spec.name, reqs, loads, periods,
			float64(loads)/periods, worst, fmtMs(h.ValueAtQuantile(50)), fmtMs(h.ValueAtQuantile(99)), fmtMs(h.Max()), errs)
	}
	fmt.Fprintln(w)
}
