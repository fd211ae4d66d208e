package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/outlast/outlast/internal/redisproc"
)

const benchCacheSummary = `Measure the tiered cache against go-redis/cache and plain cache-aside, with PostgreSQL
behind and a private redis-server in front, in the same run:

  kill, stop, both  "Redis dies": open-loop load with Zipf-distributed keys; Redis is
                    SIGKILLed (kill) or SIGSTOPped (stop) at 1/3 of --duration and back
                    empty at 2/3. Per second: DB queries, requests, p50/p99/max latency
                    from the intended send time, errors; then a summary and PASS/FAIL
                    against the issue's targets for the outlast cache.
  stampede          one hot key at --stampede-rate with a short TTL and an expensive
                    load: DB loads per expiry.

The report is Markdown, for BENCHMARKS.md.`

// cacheBench is one run of `outlast bench cache`.
type cacheBench struct {
	Scenario       string
	Duration       time.Duration
	Rate           float64
	Keys           int
	Zipf           float64
	L1             int
	DB             string
	Out            string
	Seed           int64
	Bucket         time.Duration
	Prewarm        time.Duration
	InflightMax    int64
	RequestTimeout time.Duration
	TTL            time.Duration
	Contenders     string
	DBPool         int

	StampedeRate      float64
	StampedeDuration  time.Duration
	StampedeTTL       time.Duration
	StampedeLoadDelay time.Duration

	stderr io.Writer
	db     *benchDB
	keys   []string
}

func runBenchCache(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// The contenders' loggers and go-redis's write here from their own
	// goroutines, each under a lock of its own.
	stderr = &syncWriter{w: stderr}
	fs := newFlagSet("bench cache", benchCacheSummary, stdout, stderr)
	b := cacheBench{stderr: stderr}
	fs.StringVar(&b.Scenario, "scenario", "both", "kill, stop, both or stampede")
	fs.DurationVar(&b.Duration, "duration", 30*time.Second, "measured length of a Redis-dies run; Redis fails at 1/3 and is back at 2/3")
	fs.Float64Var(&b.Rate, "rate", 2000, "requests per second (open loop)")
	fs.IntVar(&b.Keys, "keys", 100_000, "rows in the table and keys drawn from")
	fs.Float64Var(&b.Zipf, "zipf", 1.1, "Zipf exponent s (> 1) of the key distribution, v=1")
	fs.IntVar(&b.L1, "l1", 10_000, "in-process cache entries, for every contender that has one")
	fs.StringVar(&b.DB, "db", "", "PostgreSQL DSN; empty creates a fresh database on postgres://postgres@127.0.0.1:5432 and drops it at the end")
	fs.StringVar(&b.Out, "out", "", "also write the Markdown report to this file")
	fs.Int64Var(&b.Seed, "seed", 1, "seed of the key sequence, the same for every contender")
	fs.DurationVar(&b.Bucket, "bucket", time.Second, "width of a row of the per-second table")
	fs.DurationVar(&b.Prewarm, "prewarm", 0, "unmeasured load, identical for every contender, before the measured start (0: start with empty caches)")
	fs.Int64Var(&b.InflightMax, "inflight", 10_000, "requests in flight at most; a request that cannot start is an error")
	fs.DurationVar(&b.RequestTimeout, "timeout", time.Second, "per-request timeout")
	fs.DurationVar(&b.TTL, "ttl", 5*time.Minute, "value TTL in L1 and Redis for the Redis-dies runs (long, so expiry does not dominate)")
	fs.StringVar(&b.Contenders, "contenders", "outlast,gocache,gocache-default,aside", "comma-separated contenders: outlast, gocache, gocache-default, aside, noop (answers at once: the harness's own latency floor)")
	fs.IntVar(&b.DBPool, "db-pool", 32, "database connections")
	fs.Float64Var(&b.StampedeRate, "stampede-rate", 10_000, "stampede: requests per second for the one hot key")
	fs.DurationVar(&b.StampedeDuration, "stampede-duration", 10*time.Second, "stampede: measured length")
	fs.DurationVar(&b.StampedeTTL, "stampede-ttl", time.Second, "stampede: value TTL")
	fs.DurationVar(&b.StampedeLoadDelay, "stampede-load-delay", 20*time.Millisecond, "stampede: pg_sleep inside each load, holding a connection, to make a rebuild expensive")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := b.validate(); err != nil {
		return fs.fail("%v", err)
	}
	quietenRedisLog(stderr)
	// go-redis's pools may log after the run; not into a caller's writer.
	defer quietenRedisLog(io.Discard)
	var md bytes.Buffer
	err := b.run(ctx, &md)
	stdout.Write(md.Bytes())
	if b.Out != "" && md.Len() > 0 {
		if werr := os.WriteFile(b.Out, md.Bytes(), 0o644); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	return err
}

func (b *cacheBench) validate() error {
	switch {
	case b.Scenario != "kill" && b.Scenario != "stop" && b.Scenario != "both" && b.Scenario != "stampede":
		return fmt.Errorf("--scenario %q: want kill, stop, both or stampede", b.Scenario)
	case b.Zipf <= 1:
		return errors.New("--zipf must be > 1 (math/rand's Zipf)")
	case b.Rate <= 0 || b.StampedeRate <= 0 || b.Keys <= 0 || b.L1 <= 0 || b.InflightMax <= 0 || b.DBPool <= 0:
		return errors.New("--rate, --stampede-rate, --keys, --l1, --inflight and --db-pool must be positive")
	case b.Bucket <= 0 || b.Duration < 3*b.Bucket || b.StampedeDuration < b.Bucket:
		return errors.New("--bucket must be positive and --duration at least 3 buckets")
	case b.RequestTimeout <= 0 || b.TTL <= 0 || b.StampedeTTL <= 0 || b.Prewarm < 0 || b.StampedeLoadDelay < 0:
		return errors.New("durations must be positive")
	}
	for _, id := range strings.Split(b.Contenders, ",") {
		if _, err := contenderByID(strings.TrimSpace(id)); err != nil {
			return err
		}
	}
	return nil
}

func (b *cacheBench) contenders() []contenderSpec {
	var out []contenderSpec
	for _, id := range strings.Split(b.Contenders, ",") {
		c, _ := contenderByID(strings.TrimSpace(id)) // validated
		out = append(out, c)
	}
	return out
}

func (b *cacheBench) progress(format string, args ...any) {
	fmt.Fprintf(b.stderr, "bench cache: "+format+"\n", args...)
}

func (b *cacheBench) run(ctx context.Context, md io.Writer) error {
	dir, err := os.MkdirTemp("", "outlast-bench-cache-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b.progress("preparing %d rows", b.Keys)
	b.db, err = openBenchDB(ctx, b.DB, b.Keys, b.DBPool)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer b.db.close()
	b.keys = make([]string, b.Keys)
	for i := range b.keys {
		b.keys[i] = benchKey(int64(i))
	}
	b.writeMachine(ctx, md)
	if b.Scenario == "stampede" {
		return b.stampede(ctx, dir, md)
	}
	var faults []string
	if b.Scenario == "kill" || b.Scenario == "both" {
		faults = append(faults, "kill")
	}
	if b.Scenario == "stop" || b.Scenario == "both" {
		faults = append(faults, "stop")
	}
	return b.redisDies(ctx, dir, faults, md)
}

func benchKey(id int64) string { return "k:" + strconv.FormatInt(id, 10) }

// writeMachine prints what the numbers were measured on.
func (b *cacheBench) writeMachine(ctx context.Context, w io.Writer) {
	fmt.Fprintf(w, "## outlast bench cache\n\nMachine: %s; %s; %s.\n\n", benchMachine(), benchRedisVersion(ctx), b.db.version(ctx))
}

// benchMachine says what a benchmark ran on: CPUs, CPU model, Go.
func benchMachine() string {
	model := "unknown"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return fmt.Sprintf("nproc %d (GOMAXPROCS %d), %s; %s %s/%s",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), model, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// faultEvents returns the Redis failure and the empty restart of a
// Redis-dies run.
func (b *cacheBench) faultEvents(ctx context.Context, fault string, r *redisproc.Server) []timedEvent {
	failAt, backAt := b.Duration/3, 2*b.Duration/3
	restart := func() error { return r.Restart(ctx) }
	if fault == "kill" {
		return []timedEvent{
			{failAt, "SIGKILL redis-server", r.Kill},
			{backAt, "restart redis-server empty", restart},
		}
	}
	return []timedEvent{
		{failAt, "SIGSTOP redis-server", r.Pause},
		{backAt, "SIGKILL the stopped redis-server, restart it empty", restart},
	}
}

// contenderRun is one contender's measured run.
type contenderRun struct {
	spec  contenderSpec
	res   *runResult
	stats string
}

func (b *cacheBench) redisDies(ctx context.Context, dir string, faults []string, md io.Writer) error {
	fmt.Fprintf(md, "### Redis dies\n\n%s\n\n", b.redisDiesSetup())
	all := map[string][]contenderRun{}
	for _, fault := range faults {
		for _, spec := range b.contenders() {
			b.progress("%s: %s for %s at %.0f req/s", fault, spec.name, b.Duration, b.Rate)
			run, err := b.runContender(ctx, dir, spec, fault)
			if err != nil {
				return fmt.Errorf("%s, %s: %w", fault, spec.name, err)
			}
			all[fault] = append(all[fault], run)
		}
	}
	win := newWindows(b.Duration, b.Bucket)
	for _, fault := range faults {
		fmt.Fprintf(md, "#### %s: summary\n\n", faultTitle(fault))
		writeSummaryTable(md, all[fault], win, b.Bucket)
	}
	writeTargets(md, faults, all, win, b.Bucket)
	for _, fault := range faults {
		for _, run := range all[fault] {
			writeRunTable(md, fmt.Sprintf("%s: %s, per second", faultTitle(fault), run.spec.name), run, b.Bucket)
		}
	}
	return nil
}

func faultTitle(fault string) string {
	if fault == "kill" {
		return "SIGKILL (connection refused)"
	}
	return "SIGSTOP (a hang)"
}

func (b *cacheBench) redisDiesSetup() string {
	pre := "no pre-warm: every contender starts at t=0 with an empty L1 and an empty Redis, so the 'before' DB rate includes cold misses (as in the issue's trial run)"
	if b.Prewarm > 0 {
		pre = fmt.Sprintf("%s of identical unmeasured pre-warm load before t=0, from empty caches", b.Prewarm)
	}
	return fmt.Sprintf("Load: %.0f req/s open loop (latency from the intended send time), keys Zipf(s=%.2f, v=1) over %d rows, seed %d, "+
		"per-request timeout %s, at most %d in flight; %s. L1 %d entries for every contender that has one; value TTL %s. "+
		"A fresh redis-server per run on a private port, failed at %s and restarted empty at %s (SIGSTOP variant: the stopped "+
		"process is SIGKILLed and a fresh one started). PostgreSQL loader: SELECT by primary key through database/sql + pgx, "+
		"pool of %d; every query counted. outlast cache: library defaults except L1MaxEntries, TTL and Version (row version); "+
		"its L2 is the redis package with its defaults. go-redis/cache: Once + TinyLFU(%d, 1 min); \"short timeouts\" is a go-redis "+
		"client with exactly the redis package's settings (dial 200 ms, read/write/pool 100 ms, pool 32, no retries, one dial attempt, "+
		"context deadlines honoured); \"default timeouts\" is go-redis's defaults. cache-aside: the short-timeout client, GET, "+
		"on miss or error load and SET.\n\n%s",
		b.Rate, b.Zipf, b.Keys, b.Seed, b.RequestTimeout, b.InflightMax, pre, b.L1, b.TTL, b.Duration/3, 2*b.Duration/3,
		b.DBPool, b.L1, newWindows(b.Duration, b.Bucket).describe(b.Bucket))
}

// runContender runs one contender against a fresh Redis through one fault.
func (b *cacheBench) runContender(ctx context.Context, dir string, spec contenderSpec, fault string) (_ contenderRun, err error) {
	r, err := startBenchRedis(ctx, dir)
	if err != nil {
		return contenderRun{}, err
	}
	defer func() { err = errors.Join(err, r.Stop()) }()
	c, err := spec.open(ctx, r.URL(), contenderConfig{
		load: b.db.loader(0), l1Entries: b.L1, ttl: b.TTL, localTTL: time.Minute, logTo: b.stderr,
	})
	if err != nil {
		return contenderRun{}, err
	}
	defer c.close()
	rng := rand.New(rand.NewSource(b.Seed))
	zipf := rand.NewZipf(rng, b.Zipf, 1, uint64(b.Keys-1))
	runtime.GC()
	res, err := drive(ctx, c, driveConfig{
		rate: b.Rate, duration: b.Duration, prewarm: b.Prewarm, bucket: b.Bucket,
		inflightMax: b.InflightMax, timeout: b.RequestTimeout,
		next:    func() string { return b.keys[zipf.Uint64()] },
		events:  b.faultEvents(ctx, fault, r),
		queries: &b.db.queries,
	})
	if err != nil {
		return contenderRun{}, err
	}
	return contenderRun{spec: spec, res: res, stats: c.stats()}, nil
}

// stampede runs one hot key at StampedeRate with a short TTL and an
// expensive load, for each contender (without the default-timeout variant,
// which behaves as the other while Redis is up).
func (b *cacheBench) stampede(ctx context.Context, dir string, md io.Writer) error {
	fmt.Fprintf(md, "### Stampede\n\nOne hot key at %.0f req/s open loop for %s, value TTL %s (L1 and Redis), every load holds a "+
		"database connection for pg_sleep(%s) (pool %d), so a rebuild is expensive. A fresh redis-server per run. "+
		"outlast cache: library defaults (XFetch early refresh on, beta 1; 10%% TTL jitter) except TTL; go-redis/cache: Once "+
		"(singleflight) + TinyLFU with the same TTL; cache-aside: GET, on miss load and SET. \"Periods\" is duration/TTL.\n\n",
		b.StampedeRate, b.StampedeDuration, b.StampedeTTL, b.StampedeLoadDelay, b.DBPool)
	var runs []contenderRun
	for _, spec := range b.contenders() {
		if spec.id == "gocache-default" {
			continue
		}
		b.progress("stampede: %s for %s at %.0f req/s", spec.name, b.StampedeDuration, b.StampedeRate)
		run, err := b.runStampede(ctx, dir, spec)
		if err != nil {
			return fmt.Errorf("stampede, %s: %w", spec.name, err)
		}
		runs = append(runs, run)
	}
	writeStampedeTable(md, runs, b.StampedeDuration, b.StampedeTTL, b.Bucket)
	for _, run := range runs {
		writeRunTable(md, "Stampede: "+run.spec.name+", per second", run, b.Bucket)
	}
	return nil
}

func (b *cacheBench) runStampede(ctx context.Context, dir string, spec contenderSpec) (_ contenderRun, err error) {
	r, err := startBenchRedis(ctx, dir)
	if err != nil {
		return contenderRun{}, err
	}
	defer func() { err = errors.Join(err, r.Stop()) }()
	c, err := spec.open(ctx, r.URL(), contenderConfig{
		load: b.db.loader(b.StampedeLoadDelay), l1Entries: b.L1, ttl: b.StampedeTTL, localTTL: b.StampedeTTL, logTo: b.stderr,
	})
	if err != nil {
		return contenderRun{}, err
	}
	defer c.close()
	runtime.GC()
	hot := b.keys[0]
	res, err := drive(ctx, c, driveConfig{
		rate: b.StampedeRate, duration: b.StampedeDuration, bucket: b.Bucket,
		inflightMax: b.InflightMax, timeout: b.RequestTimeout,
		next:    func() string { return hot },
		queries: &b.db.queries,
	})
	if err != nil {
		return contenderRun{}, err
	}
	return contenderRun{spec: spec, res: res, stats: c.stats()}, nil
}

// benchDB is the benchmark's PostgreSQL table and its counted loader.
type benchDB struct {
	db      *sql.DB
	table   string
	queries atomic.Int64
	cleanup func()
}

var errBenchNoRow = errors.New("no such row")

// benchAdminDSN is where a fresh database is created when --db is empty.
const benchAdminDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// openBenchDB connects to dsn (or creates a fresh database, dropped by
// close) and fills a new table with rows 0..rows-1, ~200-byte payloads.
func openBenchDB(ctx context.Context, dsn string, rows, pool int) (*benchDB, error) {
	d := &benchDB{table: "bench_cache_" + randomHex(4), cleanup: func() {}}
	if dsn == "" {
		var err error
		if dsn, d.cleanup, err = createBenchDatabase(ctx, "cache"); err != nil {
			return nil, err
		}
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		d.cleanup()
		return nil, err
	}
	db.SetMaxOpenConns(pool)
	db.SetMaxIdleConns(pool)
	d.db = db
	setup := []string{
		fmt.Sprintf("CREATE TABLE %s (id bigint PRIMARY KEY, payload text NOT NULL, version bigint NOT NULL)", d.table),
		fmt.Sprintf("INSERT INTO %s SELECT g, repeat(md5(g::text), 6) || left(md5((g+1)::text), 8), 1 FROM generate_series(0, %d) g",
			d.table, rows-1),
		"ANALYZE " + d.table,
	}
	for _, q := range setup {
		if _, err := db.ExecContext(ctx, q); err != nil {
			d.close()
			return nil, fmt.Errorf("%.40s…: %w", q, err)
		}
	}
	return d, nil
}

// createBenchDatabase creates a fresh database for `outlast bench
// <bench>` on benchAdminDSN's server; drop drops it.
func createBenchDatabase(ctx context.Context, bench string) (dsn string, drop func(), err error) {
	admin, err := sql.Open("pgx", benchAdminDSN)
	if err != nil {
		return "", nil, err
	}
	name := "outlast_bench_" + bench + "_" + randomHex(6)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("create database on %s: %w", benchAdminDSN, err)
	}
	drop = func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: drop database %s: %v\n", bench, name, err)
		}
	}
	return "postgres://postgres@127.0.0.1:5432/" + name + "?sslmode=disable", drop, nil
}

func (d *benchDB) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = d.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+d.table)
	d.db.Close()
	d.cleanup()
}

func (d *benchDB) version(ctx context.Context) string { return pgServerVersion(ctx, d.db) }

// pgServerVersion names db's PostgreSQL server, for a report.
func pgServerVersion(ctx context.Context, db *sql.DB) string {
	var v string
	if err := db.QueryRowContext(ctx, "SHOW server_version").Scan(&v); err != nil {
		return "PostgreSQL (version unknown)"
	}
	return "PostgreSQL " + v
}

// loader returns the counted loader: a SELECT by primary key, holding its
// connection for delay (pg_sleep) when delay > 0.
func (d *benchDB) loader(delay time.Duration) benchLoader {
	q := fmt.Sprintf("SELECT payload, version FROM %s WHERE id = $1", d.table)
	if delay > 0 {
		q = fmt.Sprintf("SELECT t.payload, t.version FROM %s t, pg_sleep(%g) WHERE t.id = $1", d.table, delay.Seconds())
	}
	return func(ctx context.Context, key string) (benchItem, error) {
		id, err := strconv.ParseInt(strings.TrimPrefix(key, "k:"), 10, 64)
		if err != nil {
			return benchItem{}, fmt.Errorf("key %q: %w", key, err)
		}
		d.queries.Add(1)
		var v benchItem
		err = d.db.QueryRowContext(ctx, q, id).Scan(&v.Payload, &v.Version)
		if errors.Is(err, sql.ErrNoRows) {
			return benchItem{}, fmt.Errorf("key %q: %w", key, errBenchNoRow)
		}
		if err != nil {
			return benchItem{}, fmt.Errorf("load %q: %w", key, err)
		}
		return v, nil
	}
}
