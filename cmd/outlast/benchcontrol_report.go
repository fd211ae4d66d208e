package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math"
	"time"
)

// benchPeers are the pollers the report computes, not runs.
var benchPeers = []struct {
	name     string
	interval time.Duration
}{
	{"the seed's own fix (\"self-poll config from DB every 30 seconds\", seed 000)", 30 * time.Second},
	{"Unleash server-side SDKs (default refresh interval 15 s)", 15 * time.Second},
}

func (b *controlBench) report(ctx context.Context, w io.Writer, runs []controlRun) {
	fmt.Fprintf(w, "## outlast bench control\n\nMachine: %s; %s.\n\n", benchMachine(), pgVersion(ctx, b.dsn))
	fmt.Fprintf(w, "Three `outlast serve` instances, each a separate process of %s — not in-process Mains, so that each has "+
		"its own Go runtime, scheduler, connection pools and LISTEN connection, as deployed instances do, and none shares the "+
		"bench's CPU time or the control package's process-wide state. One PostgreSQL database; each instance's embedded NATS "+
		"(the control plane does not use it); `--control-poll %s`. %d changes per mode, each a `PUT /admin/v1/config` to the "+
		"first instance setting a new maintenance message (maintenance itself left as it was), the next one only once the last reached all three. Propagation is measured from "+
		"just before the PUT is sent to each instance's `applied_at` in its heartbeat (`GET /admin/v1/instances`), which the "+
		"instance takes as it swaps the document in, on the same machine clock: the bench's reads of the heartbeats (every %s) "+
		"add nothing to the numbers. Polling only: a random pause uniform in [0, %s) before each change, so that changes do "+
		"not fall in step with the instances' poll ticks.\n\n",
		b.Binary, b.Poll, b.Changes, benchHeartbeatPoll, b.Poll)
	fmt.Fprintln(w, "| mode | changes | PUT p50 ms | last of 3: p50 ms | p90 ms | p99 ms | max ms | each instance: p50 ms | p99 ms | target: p99 of the last of 3 | result |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
	for _, r := range runs {
		target := b.target(r.mode)
		result := "PASS"
		if p99 := time.Duration(r.last.ValueAtQuantile(99)) * time.Microsecond; p99 >= target {
			result = "FAIL"
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | < %s | %s |\n", benchControlModes[r.mode], r.last.TotalCount(),
			histMs(r.put, 50), histMs(r.last, 50), histMs(r.last, 90), histMs(r.last, 99), histMs(r.last, 100),
			histMs(r.each, 50), histMs(r.each, 99), target, result)
	}
	b.writePeers(w)
	fmt.Fprintf(w, "\n### HdrHistogram of the last of three, ms\n")
	for _, r := range runs {
		fmt.Fprintf(w, "\n%s:\n\n```\n", benchControlModes[r.mode])
		_, _ = r.last.PercentilesPrint(w, 5, 1000)
		fmt.Fprint(w, "```\n")
	}
}

// target is the bound on the p99 of the last of three: under
// 100 ms with the hint, under the poll interval plus 100 ms without.
func (b *controlBench) target(mode string) time.Duration {
	if mode == "notify" {
		return 100 * time.Millisecond
	}
	return b.Poll + 100*time.Millisecond
}

// writePeers computes what pollers at other intervals would show. A
// change made at a random moment waits for one poller a time uniform in
// [0, I]: p50 I/2, p99 0.99 I. The last of three independent pollers
// waits the largest of three such times, whose quantile q is I q^(1/3).
func (b *controlBench) writePeers(w io.Writer) {
	fmt.Fprintf(w, "\n### Pollers, computed, not run\n\nA poller with interval I sees a change made at a random moment after "+
		"a wait uniform in [0, I]: for one instance p50 = I/2 and p99 = 0.99 I. For the last of three, if the three "+
		"pollers' phases were independent, quantile q is I q^(1/3): p50 ≈ 0.79 I, p99 ≈ 0.997 I; real instances keep the "+
		"phase they started with, so the last of three's p50 lies between I/2 (polling in step) and 5/6 I (phases evenly "+
		"spread); the measured 'each instance' p50 is the one to compare with I/2. The read and apply "+
		"time, milliseconds, is left out.\n\n")
	fmt.Fprintln(w, "| poller | interval | one instance p50 | p99 | last of 3 p50 | p99 |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	peers := append([]struct {
		name     string
		interval time.Duration
	}{{"Outlast polling only, computed (compare with the measured row)", b.Poll}}, benchPeers...)
	for _, p := range peers {
		at := func(q float64, n float64) string {
			return fmt.Sprintf("%.2f s", p.interval.Seconds()*math.Pow(q, 1/n))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", p.name, p.interval, at(0.5, 1), at(0.99, 1), at(0.5, 3), at(0.99, 3))
	}
}

// pgVersion names the PostgreSQL server of dsn, for the report.
func pgVersion(ctx context.Context, dsn string) string {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return "PostgreSQL (version unknown)"
	}
	defer db.Close()
	return pgServerVersion(ctx, db)
}
