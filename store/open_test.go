package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/store"
)

// TestOpenUnreachablePostgres: a database that is not there fails Open
// fast with EUNAVAILABLE, so start-up and readiness report it.
func TestOpenUnreachablePostgres(t *testing.T) {
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/outlast?sslmode=disable", testenv.FreePort(t))
	start := time.Now()
	db, err := store.Open(context.Background(), dsn)
	if err == nil {
		db.Close()
		t.Fatalf("Open(%q) succeeded, want an error", dsn)
	}
	ledgertest.WantCode(t, "Open(unreachable)", err, outlast.EUNAVAILABLE)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Open took %v, want it to fail fast", d)
	}
}

// TestPostgresConcurrentOpen: instances starting at once migrate once.
func TestPostgresConcurrentOpen(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			db, err := store.Open(context.Background(), dsn)
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			db.Close()
		})
	}
	wg.Wait()
	db := openDB(t, dsn)
	wantMigrations(t, db)
}

// TestSQLiteReopen: data survives Close, migrations are not re-run, and
// the "file:" form of the dsn opens the same file.
func TestSQLiteReopen(t *testing.T) {
	path := t.TempDir() + "/sub/ledger.db"
	db, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	f := ledgertest.Seed(t, db, "re", 500)
	p := ledgertest.MustPayout(t, db, f.Req("k1", 100))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, "file:"+path)
	got, _, err := db.Payout(context.Background(), p.ID)
	if err != nil || got.Amount != 100 || !got.CreatedAt.Equal(p.CreatedAt) {
		t.Fatalf("Payout after reopen = %+v, %v; want %+v", got, err, p)
	}
	ledgertest.WantBalances(t, db, f.Account, 400, 100, 0)
	wantMigrations(t, db)
	_, err = store.Open(context.Background(), ":memory:")
	ledgertest.WantCode(t, "Open(:memory:)", err, outlast.EINVALID)
}

// TestSQLiteLockedIsUnavailable: another process holding the write lock
// makes writes fail with EUNAVAILABLE once the caller's deadline passes.
func TestSQLiteLockedIsUnavailable(t *testing.T) {
	path := t.TempDir() + "/ledger.db"
	db := openDB(t, path)
	f := ledgertest.Seed(t, db, "lk", 500)
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := context.Background()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = db.FundAccount(tctx, f.Account, 1, "while-locked")
	ledgertest.WantCode(t, "FundAccount while locked", err, outlast.EUNAVAILABLE)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("FundAccount waited %v, want about the 300ms deadline", d)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.FundAccount(ctx, f.Account, 1, "after-lock"); err != nil {
		t.Fatalf("FundAccount after the lock is gone: %v", err)
	}
	ledgertest.WantBalances(t, db, f.Account, 501, 0, 0)
}

// TestPostgresReadOnlyIsUnavailable: a primary demoted during a failover
// answers writes with SQLSTATE 25006. That is the database's state, not
// the request's fault: it must come back as EUNAVAILABLE (retried without
// limit), never as an internal error that would dead-letter good
// notifications.
func TestPostgresReadOnlyIsUnavailable(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	db := openDB(t, dsn)
	f := ledgertest.Seed(t, db, "ro", 1000)
	p := ledgertest.MustPayout(t, db, f.Req("k1", 100))
	testenv.SetPostgresReadOnly(t, dsn, true)
	ctx := context.Background()
	sawReadOnly := false
	testenv.WaitFor(t, 10*time.Second, "a write refused with 25006", func() bool {
		_, err := db.Apply(ctx, outlast.FromLog, []*outlast.Notification{ledgertest.Note(p, outlast.StatusSucceeded)})
		ledgertest.WantCode(t, "ApplyNotifications on a read-only primary", err, outlast.EUNAVAILABLE)
		var pe *pgconn.PgError
		sawReadOnly = errors.As(err, &pe) && pe.Code == "25006"
		return sawReadOnly
	})
	_, _, err := db.FundAccount(ctx, f.Account, 1, "read-only")
	ledgertest.WantCode(t, "FundAccount on a read-only primary", err, outlast.EUNAVAILABLE)
	testenv.SetPostgresReadOnly(t, dsn, false)
	testenv.WaitFor(t, 10*time.Second, "the write to apply once the database is writable", func() bool {
		_, err := db.Apply(ctx, outlast.FromLog, []*outlast.Notification{ledgertest.Note(p, outlast.StatusSucceeded)})
		return err == nil
	})
	ledgertest.WantBalances(t, db, f.Account, 900, 0, 100)
}

// TestPostgresStoppedIsUnavailable: a stopped server, and the sessions it
// cut, are EUNAVAILABLE; after a restart the same DB works again.
func TestPostgresStoppedIsUnavailable(t *testing.T) {
	pg := testenv.StartPostgres(t)
	db := openDB(t, pg.DSN())
	f := ledgertest.Seed(t, db, "st", 1000)
	p := ledgertest.MustPayout(t, db, f.Req("k1", 100))
	ctx := context.Background()
	// A session used less than a second ago is not pinged before its next
	// read, so the first read after the stop goes out on the cut session
	// and ends in an unexpected EOF (the control plane polls every second
	// and met this: GET /admin/v1/config answered 500, not 503).
	for range 3 {
		if _, err := db.ControlConfig(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pg.Stop()
	_, err := db.ControlConfig(ctx)
	ledgertest.WantCode(t, "ControlConfig on a session the stop cut", err, outlast.EUNAVAILABLE)
	_, err = db.Apply(ctx, outlast.FromLog, []*outlast.Notification{ledgertest.Note(p, outlast.StatusSucceeded)})
	ledgertest.WantCode(t, "ApplyNotifications on a stopped server", err, outlast.EUNAVAILABLE)
	_, _, err = db.Account(ctx, f.Account)
	ledgertest.WantCode(t, "Account on a stopped server", err, outlast.EUNAVAILABLE)
	pg.Start()
	testenv.WaitFor(t, 10*time.Second, "the write to apply after the restart", func() bool {
		_, err := db.Apply(ctx, outlast.FromLog, []*outlast.Notification{ledgertest.Note(p, outlast.StatusSucceeded)})
		return err == nil
	})
	ledgertest.WantBalances(t, db, f.Account, 900, 0, 100)
}
