package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/load"
	"github.com/outlast/outlast/jetstream"
	"github.com/outlast/outlast/ledger"
	"github.com/outlast/outlast/store"
)

const benchUsage = `Usage:
  outlast bench ingest [flags]   notifications durably acknowledged and committed per second, against the naive design
  outlast bench cache [flags]    the read cache when Redis dies, and under a stampede, against go-redis/cache and cache-aside
  outlast bench control [flags]  config change propagation to three instances, with LISTEN/NOTIFY and polling only

Run 'outlast bench <name> --help' for flags.
`

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runSubcommand(ctx, "bench", benchUsage, map[string]command{"ingest": runBenchIngest, "cache": runBenchCache, "control": runBenchControl}, args, stdout, stderr)
}

func runBenchIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench ingest", "Measure partner notifications durably acknowledged and committed to the ledger per\nsecond (group-committed log + batched committer), against the naive design measured in\nthe same run on the same database: one INSERT and COMMIT per notification.", stdout, stderr)
	var cfg ingestBench
	fs.StringVar(&cfg.DB, "db", "", "database DSN (postgres://…); empty for SQLite in a temporary directory")
	fs.StringVar(&cfg.NATS, "nats", "", "external NATS URL; empty for embedded JetStream in a temporary directory")
	fs.IntVar(&cfg.N, "notifications", 40_000, "notifications per measured phase")
	fs.IntVar(&cfg.Concurrency, "concurrency", 256, "concurrent senders (partner webhook requests in flight)")
	fs.DurationVar(&cfg.HalfRateFor, "half-rate-for", 10*time.Second, "length of the open-loop phase at half the peak rate")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.N <= 0 || cfg.Concurrency <= 0 {
		return fs.fail("--notifications and --concurrency must be positive")
	}
	return cfg.run(ctx, stdout)
}

// ingestBench is one run of `outlast bench ingest`.
type ingestBench struct {
	DB, NATS    string
	N           int
	Concurrency int
	HalfRateFor time.Duration

	db     *store.DB
	ledger *ledger.Ledger // over db: the committer applies through it, as serve's does
	log    *jetstream.Log
}

// ingestResult is one measured phase.
type ingestResult struct {
	name       string
	n          int
	ackedIn    time.Duration // until the last acknowledgement
	committed  time.Duration // until the last notification was in the ledger
	p50, p99   time.Duration // acknowledgement latency
	maxLatency time.Duration
}

func (r ingestResult) perSec() float64 { return float64(r.n) / r.committed.Seconds() }

func (b *ingestBench) run(ctx context.Context, w io.Writer) error {
	dir, err := os.MkdirTemp("", "outlast-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dsn := b.DB
	if dsn == "" {
		dsn = filepath.Join(dir, "outlast.db")
	}
	if b.db, err = store.Open(ctx, dsn); err != nil {
		return err
	}
	defer b.db.Close()
	if b.ledger, err = ledger.New(b.db, ledger.Config{}); err != nil {
		return err
	}
	defer b.ledger.Close()
	if b.log, err = jetstream.Open(ctx, jetstream.Config{URL: b.NATS, DataDir: filepath.Join(dir, "jetstream"), StreamPrefix: "BENCH" + randomHex(4)}); err != nil {
		return err
	}
	defer b.log.Close()

	mode := "embedded (SQLite WAL synchronous=FULL + embedded JetStream, fsync every append)"
	if b.DB != "" {
		mode = "PostgreSQL (synchronous_commit=on) + " + map[bool]string{true: "embedded JetStream", false: "external NATS JetStream"}[b.NATS == ""]
	}
	fmt.Fprintf(w, "bench ingest: %s\n%d notifications per phase, %d concurrent senders, GOMAXPROCS %d\n\n", mode, b.N, b.Concurrency, runtime.GOMAXPROCS(0))

	fmt.Fprintf(w, "seeding %d payouts to notify about…\n", 2*b.N)
	ids, err := seedPayouts(ctx, b.db, 2*b.N)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	naive, err := b.naive(ctx, ids[:b.N])
	if err != nil {
		return fmt.Errorf("naive: %w", err)
	}
	ours, err := b.outlast(ctx, ids[b.N:])
	if err != nil {
		return fmt.Errorf("outlast: %w", err)
	}
	printResult(w, naive)
	printResult(w, ours)
	ackRate := float64(ours.n) / ours.ackedIn.Seconds()
	fmt.Fprintf(w, "ratio: outlast acknowledges %.1fx and commits %.1fx the naive design's throughput\n",
		ackRate/naive.perSec(), ours.perSec()/naive.perSec())
	// Two "half the peak" points: half the acknowledgement peak (the log
	// alone), and half the end-to-end peak, the rate at which notifications
	// are both acknowledged and committed over a sustained run — acking
	// faster than the ledger commits only grows a backlog.
	half, err := b.openLoop(ctx, ids[:b.N], ackRate/2, 0)
	if err != nil {
		return fmt.Errorf("half rate: %w", err)
	}
	printResult(w, half)
	sustained := min(half.perSec(), ackRate/2)
	quarter, err := b.openLoop(ctx, ids[:b.N], sustained/2, 2_000_000_000)
	if err != nil {
		return fmt.Errorf("half the end-to-end rate: %w", err)
	}
	quarter.name = fmt.Sprintf("outlast at half the end-to-end peak (%.0f/s)", sustained/2)
	printResult(w, quarter)
	return nil
}

// openLoopInflightMax bounds the open-loop phase's concurrent sends.
const openLoopInflightMax = 4096

// openLoop sends notifications at ratePerSec for HalfRateFor, open loop
// (package load: latency from the intended send time). The ids are the
// payouts the naive phase left pending, cycled with fresh event ids (from
// eventBase on, so phases never repeat one): the first pass changes state,
// later ones are stale reports the committer still records. Past
// openLoopInflightMax sends in flight the next waits for a slot rather than
// being dropped: the phase reports a latency at any rate, and the wait
// counts in it.
func (b *ingestBench) openLoop(ctx context.Context, ids []string, ratePerSec float64, eventBase int) (ingestResult, error) {
	var applied atomic.Int64
	stop, wait := b.consume(ctx, &applied)
	defer func() { stop(); wait() }()
	hist := load.NewHistogram()
	var mu sync.Mutex // guards hist
	var failed atomic.Int64
	n := 0 // requests sent; written by Next, read after Run
	gen := load.Open{Rate: ratePerSec, Duration: b.HalfRateFor, InflightMax: openLoopInflightMax, WaitWhenFull: true,
		Next: func(i int) func(context.Context) error {
			n = i + 1
			note := notificationFor(ids[i%len(ids)], 1_000_000_000+eventBase+i)
			return func(ctx context.Context) error { return b.log.Append(ctx, note) }
		},
		Done: func(_ int, _, latency time.Duration, err error) {
			if err != nil {
				failed.Add(1)
				return
			}
			mu.Lock()
			load.Record(hist, latency)
			mu.Unlock()
		},
	}
	start := time.Now()
	if err := gen.Run(ctx); err != nil {
		return ingestResult{}, err
	}
	acked := time.Since(start)
	if err := waitApplied(ctx, &applied, int64(n)-failed.Load()); err != nil {
		return ingestResult{}, err
	}
	if f := failed.Load(); f > 0 {
		return ingestResult{}, fmt.Errorf("%d of %d appends failed", f, n)
	}
	r := resultOf(fmt.Sprintf("outlast at half the peak rate (%.0f/s, open loop)", ratePerSec), n, hist, acked, time.Since(start))
	return r, nil
}

func printResult(w io.Writer, r ingestResult) {
	fmt.Fprintf(w, "%-44s %8.0f notifications/s committed  (acked in %s, committed in %s)  ack p50 %s p99 %s max %s\n",
		r.name, r.perSec(), r.ackedIn.Round(time.Millisecond), r.committed.Round(time.Millisecond),
		r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.maxLatency.Round(10*time.Microsecond))
}

// seedPayouts creates n pending payouts for the notifications to move.
func seedPayouts(ctx context.Context, db *store.DB, n int) ([]string, error) {
	client := &outlast.Client{ID: "bench-" + randomHex(4)}
	if err := db.CreateClient(ctx, client, []byte(randomHex(16))); err != nil {
		return nil, err
	}
	acct := &outlast.Account{ID: client.ID + "-acct", ClientID: client.ID, Currency: "USD"}
	if err := db.CreateAccount(ctx, acct); err != nil {
		return nil, err
	}
	if _, _, err := db.FundAccount(ctx, acct.ID, int64(n)*100, "bench"); err != nil {
		return nil, err
	}
	ids := make([]string, n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				p, _, err := db.CreatePayout(ctx, &outlast.PayoutRequest{ClientID: client.ID, IdempotencyKey: fmt.Sprintf("seed-%d", i),
					AccountID: acct.ID, Amount: 100, Currency: "USD", Destination: "bench", Channel: "bench"})
				if err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
				ids[i] = p.ID
			}
		}()
	}
	wg.Wait()
	return ids, firstErr
}

func notificationFor(id string, seq int) *outlast.Notification {
	now := time.Now().UTC()
	return &outlast.Notification{Channel: "bench", EventID: fmt.Sprintf("ev-%d", seq), PayoutID: id,
		PartnerRef: "ref-" + id[len(id)-12:], Status: outlast.StatusSucceeded, OccurredAt: now, ReceivedAt: now}
}

// closedLoop sends one notification per id from Concurrency senders and
// records each acknowledgement's latency.
func (b *ingestBench) closedLoop(ctx context.Context, ids []string, send func(context.Context, *outlast.Notification) error) (*hdrhistogram.Histogram, time.Duration, error) {
	hist := load.NewHistogram()
	var mu sync.Mutex
	var next atomic.Int64
	var firstErr error
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < b.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(ids); i = int(next.Add(1) - 1) {
				t0 := time.Now()
				err := send(ctx, notificationFor(ids[i], i))
				lat := time.Since(t0)
				mu.Lock()
				if err != nil {
					firstErr = errors.Join(firstErr, err)
				}
				load.Record(hist, lat)
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return hist, time.Since(start), firstErr
}

// naive is the design Outlast replaces: every notification is acknowledged
// after its own INSERT and COMMIT, then applied. Acknowledgement and
// commit are the same moment.
func (b *ingestBench) naive(ctx context.Context, ids []string) (ingestResult, error) {
	sqlDB := b.db.SQL()
	ddl := `CREATE TABLE IF NOT EXISTS bench_naive_notifications (channel TEXT NOT NULL, event_id TEXT NOT NULL,
		payout_id TEXT NOT NULL, status TEXT NOT NULL, occurred_at TEXT NOT NULL, PRIMARY KEY (channel, event_id))`
	if _, err := sqlDB.ExecContext(ctx, ddl); err != nil {
		return ingestResult{}, err
	}
	q := "INSERT INTO bench_naive_notifications VALUES (?, ?, ?, ?, ?)"
	if b.db.Dialect() == "postgres" {
		q = "INSERT INTO bench_naive_notifications VALUES ($1, $2, $3, $4, $5)"
	}
	send := func(ctx context.Context, n *outlast.Notification) error {
		_, err := sqlDB.ExecContext(ctx, q, n.Channel, n.EventID, n.PayoutID, string(n.Status), n.OccurredAt.Format(time.RFC3339Nano))
		return err
	}
	hist, elapsed, err := b.closedLoop(ctx, ids, send)
	return resultOf("naive: INSERT + COMMIT per notification", len(ids), hist, elapsed, elapsed), err
}

// outlast measures the real path: group-committed appends to the log,
// acknowledged once durable, and the committer applying them to the ledger
// in batches.
func (b *ingestBench) outlast(ctx context.Context, ids []string) (ingestResult, error) {
	var applied atomic.Int64
	stop, wait := b.consume(ctx, &applied)
	defer func() { stop(); wait() }()
	start := time.Now()
	hist, ackedIn, err := b.closedLoop(ctx, ids, b.log.Append)
	if err != nil {
		return ingestResult{}, err
	}
	if err := waitApplied(ctx, &applied, int64(len(ids))); err != nil {
		return ingestResult{}, err
	}
	return resultOf("outlast: group-committed log + batched apply", len(ids), hist, ackedIn, time.Since(start)), nil
}

// waitApplied waits until the committer has applied want notifications,
// or ctx ends. It polls every millisecond: the time it returns at is the
// phase's "committed" time, and the committer has no completion signal.
func waitApplied(ctx context.Context, applied *atomic.Int64, want int64) error {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for applied.Load() < want {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the committer: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// consume runs the committer through the ledger seam, as serve does,
// counting applied notifications, until stop; wait waits for it to end.
func (b *ingestBench) consume(ctx context.Context, applied *atomic.Int64) (stop func(), wait func()) {
	ctx, stop = context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.log.Consume(ctx, countingApplier{b.ledger, applied})
	}()
	return stop, func() { <-done }
}

// countingApplier counts the notifications of every successful Apply.
type countingApplier struct {
	ledger  jetstream.Applier
	applied *atomic.Int64
}

func (c countingApplier) Apply(ctx context.Context, source outlast.Source, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
	res, err := c.ledger.Apply(ctx, source, ns)
	if err == nil {
		c.applied.Add(int64(len(ns)))
	}
	return res, err
}

func resultOf(name string, n int, hist *hdrhistogram.Histogram, ackedIn, committed time.Duration) ingestResult {
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return ingestResult{name: name, n: n, ackedIn: ackedIn, committed: committed,
		p50: us(hist.ValueAtQuantile(50)), p99: us(hist.ValueAtQuantile(99)), maxLatency: us(hist.Max())}
}
