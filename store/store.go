// Package store is Outlast's ledger over database/sql: clients, accounts,
// payouts, the journal, the dispatch outbox, the notification inbox, the
// self-audit and the control plane's config document with its history, on
// SQLite (embedded mode, modernc.org/sqlite) or PostgreSQL (distributed
// mode, pgx). One code path serves both; what differs is kept in
// dialect.go.
//
// Every change of money happens in one transaction that writes balanced
// journal rows and re-checks the account invariant before commit; a
// violated invariant panics (it is a bug) and nothing is committed.
// Durability is part of correctness: SQLite runs in WAL mode with
// synchronous=FULL, PostgreSQL with synchronous_commit=on.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/outlast/outlast"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Limits of the store.
const (
	// BatchMax bounds a batch of notifications (apply, inbox append and
	// drain) and an outbox claim, so one transaction stays short.
	BatchMax = 1000
	// pgConnsMax is the PostgreSQL pool size; with 2-core database hosts
	// more connections only queue inside the server.
	pgConnsMax = 16
	// sqliteReadConnsMax bounds SQLite's WAL readers.
	sqliteReadConnsMax = 4
	// sqliteBusyTimeoutMillis is how long SQLite waits for another
	// process's write lock before SQLITE_BUSY.
	sqliteBusyTimeoutMillis = 5000
	// openTimeout bounds Open when ctx has no deadline, so an unreachable
	// PostgreSQL fails fast instead of hanging start-up.
	openTimeout = 10 * time.Second
	// pageLimitDefault is the payout page size when the filter sets none.
	pageLimitDefault = 50
	// eachPayoutChunk is how many payouts EachPayout reads per query, so no
	// read transaction stays open across the caller's fn.
	eachPayoutChunk = 1000
)

var (
	_ outlast.Ledger       = (*DB)(nil)
	_ outlast.Inbox        = (*DB)(nil)
	_ outlast.Auditor      = (*DB)(nil)
	_ outlast.DeadLetters  = (*DB)(nil)
	_ outlast.ControlStore = (*DB)(nil)
)

// DB is the ledger. It is safe for concurrent use.
type DB struct {
	d dialect
	// w takes every write. On SQLite it is a single connection whose
	// transactions begin IMMEDIATE: writers queue in Go instead of
	// failing with SQLITE_BUSY on a lock upgrade.
	w *sql.DB
	// r serves plain reads: SQLite WAL readers that never block the
	// writer; on PostgreSQL the same pool as w.
	r *sql.DB

	// Now returns the current time; tests replace it. It must be set
	// before the DB is shared. Open sets time.Now.
	Now func() time.Time
	// NewID returns a new payout's id; tests replace it to know an id
	// before its payout exists. It must be set before the DB is shared.
	// Open sets outlast.NewID.
	NewID func() string

	// pending lists the migrations a ledger opened by OpenExisting lacks;
	// written once.
	pending []string

	// control is the control plane's own pool (config, heartbeats), so an
	// operator's change never queues behind the data plane's queries for
	// a connection: on PostgreSQL a small pool of its own; on SQLite nil,
	// and the control plane uses w and r (one file, one write lock).
	control *sql.DB
	// pgConfig is the PostgreSQL connection config, for the control
	// plane's LISTEN connection; nil on SQLite.
	pgConfig *pgx.ConnConfig
	// watchers are the in-process hints of config changes (SQLite, where
	// there is no LISTEN): a change made through this DB signals them.
	watchers watchers
}

// Open opens the ledger named by dsn and applies pending migrations. A dsn
// starting with postgres:// or postgresql:// opens PostgreSQL; anything else
// is a SQLite file path, optionally prefixed "sqlite:" or "file:". If ctx
// has no deadline, 10 s is used.
func Open(ctx context.Context, dsn string) (*DB, error) {
	ctx, cancel := withOpenTimeout(ctx)
	defer cancel()
	db, err := open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// withOpenTimeout gives ctx the open timeout unless it has a deadline.
func withOpenTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, openTimeout)
}

// open connects to the database dsn names, as it is.
func open(ctx context.Context, dsn string) (*DB, error) {
	if IsPostgres(dsn) {
		return openPostgres(ctx, dsn)
	}
	return openSQLite(ctx, dsn)
}

// IsPostgres reports whether dsn names a PostgreSQL database rather than a
// SQLite file.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

func openPostgres(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, outlast.Errorf(outlast.EINVALID, "invalid postgres dsn")
	}
	// Durability is not negotiable: a role or database default of
	// synchronous_commit=off would acknowledge payouts a crash can lose.
	cfg.RuntimeParams["synchronous_commit"] = "on"
	// The batch queries bind variable-length IN lists; a cached generic
	// plan for them can fall back to scanning whole tables.
	cfg.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	if cfg.ConnectTimeout <= 0 || cfg.ConnectTimeout > 5*time.Second {
		cfg.ConnectTimeout = 5 * time.Second
	}
	sdb := stdlib.OpenDB(*cfg)
	sdb.SetMaxOpenConns(pgConnsMax)
	sdb.SetMaxIdleConns(pgConnsMax)
	sdb.SetConnMaxIdleTime(5 * time.Minute)
	sdb.SetConnMaxLifetime(30 * time.Minute)
	if err := sdb.PingContext(ctx); err != nil {
		sdb.Close()
		return nil, outlast.Unavailable(errWrap("open", err), retryAfter, "database unavailable")
	}
	ccfg := cfg.Copy()
	ccfg.RuntimeParams["application_name"] = controlAppName
	control := stdlib.OpenDB(*ccfg)
	control.SetMaxOpenConns(controlConnsMax)
	control.SetMaxIdleConns(controlConnsMax)
	control.SetConnMaxLifetime(30 * time.Minute)
	return &DB{d: postgresDialect, w: sdb, r: sdb, control: control, pgConfig: cfg, Now: time.Now, NewID: outlast.NewID}, nil
}

func openSQLite(ctx context.Context, dsn string) (*DB, error) {
	path := sqlitePath(dsn)
	if path == "" || strings.Contains(path, ":memory:") || strings.Contains(path, "mode=memory") {
		// A memory database would not be shared by the writer and the
		// readers, and would not be durable anyway.
		return nil, outlast.Errorf(outlast.EINVALID, "sqlite needs a file path")
	}
	if file := sqliteFile(path); file != "" {
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			return nil, outlast.Unavailable(errWrap("open", err), retryAfter, "database unavailable")
		}
	}
	w, err := sql.Open("sqlite", sqliteDSN(path, map[string]string{
		"_busy_timeout": strconv.Itoa(sqliteBusyTimeoutMillis),
		"_journal_mode": "WAL",
		"_synchronous":  "FULL",
		"_foreign_keys": "1",
		"_txlock":       "immediate",
	}))
	if err != nil {
		return nil, outlast.Errorf(outlast.EINVALID, "invalid sqlite dsn")
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, outlast.Unavailable(errWrap("open", err), retryAfter, "database unavailable")
	}
	r, err := sql.Open("sqlite", sqliteDSN(path, map[string]string{
		"_busy_timeout": strconv.Itoa(sqliteBusyTimeoutMillis),
		"_synchronous":  "FULL",
		"_foreign_keys": "1",
		"_query_only":   "1",
	}))
	if err != nil {
		w.Close()
		return nil, outlast.Errorf(outlast.EINVALID, "invalid sqlite dsn")
	}
	r.SetMaxOpenConns(sqliteReadConnsMax)
	r.SetMaxIdleConns(sqliteReadConnsMax)
	return &DB{d: sqliteDialect, w: w, r: r, Now: time.Now, NewID: outlast.NewID}, nil
}

// sqlitePath is a SQLite dsn without its optional "sqlite:" prefix.
func sqlitePath(dsn string) string {
	return strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "//")
}

// sqliteFile returns the file system path of a SQLite dsn, or "" when it
// cannot tell (an unusual file: URI).
func sqliteFile(dsn string) string {
	p, _, _ := strings.Cut(dsn, "?")
	if strings.HasPrefix(p, "file:") {
		u, err := url.Parse(p)
		if err != nil {
			return ""
		}
		if u.Path != "" {
			return u.Path
		}
		return u.Opaque
	}
	return p
}

// sqliteDSN sets params on dsn, overriding what the caller gave: the
// durability settings are not options.
func sqliteDSN(dsn string, params map[string]string) string {
	base, query, _ := strings.Cut(dsn, "?")
	q, err := url.ParseQuery(query)
	if err != nil {
		q = url.Values{}
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		q.Set(k, params[k])
	}
	return base + "?" + q.Encode()
}

// Close closes the database. Calls after Close return EUNAVAILABLE.
func (db *DB) Close() error {
	err := db.w.Close()
	if db.r != db.w {
		if rerr := db.r.Close(); err == nil {
			err = rerr
		}
	}
	if db.control != nil {
		if cerr := db.control.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// Dialect returns "sqlite" or "postgres".
func (db *DB) Dialect() string { return db.d.name }

// SQL returns the underlying write pool, for benchmarks' naive baselines and
// tests that tamper with the ledger. On SQLite it has one connection: do not
// hold it.
func (db *DB) SQL() *sql.DB { return db.w }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	return fail("ping", db.w.PingContext(ctx))
}

// now returns the current time in UTC.
func (db *DB) now() time.Time { return db.Now().UTC() }

// write runs fn in a write transaction and commits it. On SQLite the
// transaction holds the write lock from its first statement.
func (db *DB) write(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	return db.writeOn(ctx, db.w, op, fn)
}

// writeOn is write on pool.
func (db *DB) writeOn(ctx context.Context, pool *sql.DB, op string, fn func(tx *sql.Tx) error) error {
	start := time.Now()
	defer func() { txSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds()) }()
	tx, err := pool.BeginTx(ctx, nil)
	if err != nil {
		return fail(op, err)
	}
	// Rollback also runs when fn panics on a violated invariant, so the
	// connection returns to the pool clean and nothing is committed.
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return fail(op, err)
	}
	return fail(op, tx.Commit())
}

// read runs fn in a read-only snapshot transaction.
func (db *DB) read(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	tx, err := db.r.BeginTx(ctx, db.d.snapshot)
	if err != nil {
		return fail(op, err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return fail(op, err)
	}
	return fail(op, tx.Commit())
}

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrate applies the embedded migrations not yet recorded in
// schema_migrations, all in one transaction: a failed migration leaves the
// schema as it was.
func (db *DB) migrate(ctx context.Context) error {
	names, err := migrationNames()
	if err != nil {
		return err
	}
	return db.write(ctx, "migrate", func(tx *sql.Tx) error {
		if db.d.name == "postgres" {
			// Instances starting at once wait here for the first to finish.
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrationLockKey)); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ns BIGINT NOT NULL)`); err != nil {
			return err
		}
		for _, name := range names {
			if err := db.applyMigration(ctx, tx, name); err != nil {
				return err
			}
		}
		return nil
	})
}

func (db *DB) applyMigration(ctx context.Context, tx *sql.Tx, name string) error {
	version, err := migrationVersion(name)
	if err != nil {
		return err
	}
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations WHERE version = $1", version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	body, err := migrationFiles.ReadFile("migrations/" + name)
	if err != nil {
		return err
	}
	text := strings.ReplaceAll(string(body), "{{serial}}", db.d.serial)
	if _, err := tx.ExecContext(ctx, text); err != nil {
		return fmt.Errorf("migration %s: %w", name, err)
	}
	_, err = tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_ns) VALUES ($1, $2, $3)",
		version, name, db.now().UnixNano())
	return err
}

func migrationNames() ([]string, error) {
	entries, err := migrationFiles.ReadDir("migrations")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".sql") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names) // zero-padded numbers sort in order
	if len(names) == 0 {
		return nil, errors.New("no migrations embedded")
	}
	return names, nil
}

// Time helpers: the schema stores unix nanoseconds.
func fromNanos(ns int64) time.Time { return time.Unix(0, ns).UTC() }
