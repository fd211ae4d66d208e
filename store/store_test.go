package store_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/store"
)

// TestSQLite runs the ledger conformance suite and the store's own cases
// on a SQLite file per subtest.
func TestSQLite(t *testing.T) {
	run(t, func(t *testing.T) *store.DB {
		return openDB(t, "sqlite:"+t.TempDir()+"/ledger.db")
	})
}

// TestPostgres runs the same on a fresh PostgreSQL database per subtest.
func TestPostgres(t *testing.T) {
	testenv.PostgresDSN(t) // skip (or fail under CI) early if there is no server
	run(t, func(t *testing.T) *store.DB {
		return openDB(t, testenv.PostgresDSN(t))
	})
}

func openDB(t *testing.T, dsn string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("Open(%q): %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// withClock replaces db's clock; call before db is shared.
func withClock(db *store.DB) *testenv.Clock {
	c := testenv.NewClock(time.Now().UTC())
	db.Now = c.Now
	return c
}

// run runs the conformance suite, with the store's clock, ids and audit as
// its seams, then the cases only the store has: what it keeps beyond the
// interface (journal, inbox, migrations) and how it fails.
func run(t *testing.T, open func(t *testing.T) *store.DB) {
	ledgertest.Run(t, func(t *testing.T) *ledgertest.Harness {
		db := open(t)
		return &ledgertest.Harness{Ledger: db, Clock: withClock(db), Auditor: db, Control: db,
			SetNewID: func(newID func() string) { db.NewID = newID }}
	})
	tests := []struct {
		name string
		fn   func(t *testing.T, db *store.DB)
	}{
		{"Journal", testJournal},
		{"PayoutCounts", testPayoutCounts},
		{"Inbox", testInbox},
		{"AuditDetectsTampering", testAuditTampering},
		{"Durability", testDurability},
		{"UnavailableAfterClose", testUnavailableAfterClose},
		{"InvariantViolationPanics", testInvariantPanics},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

// wantCleanAudit fails t if the ledger audit finds anything.
func wantCleanAudit(t *testing.T, db *store.DB) *outlast.LedgerReport {
	t.Helper()
	rep, err := db.AuditLedger(context.Background())
	if err != nil {
		t.Fatalf("AuditLedger: %v", err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("AuditLedger found %d problems:\n%s", len(rep.Problems), strings.Join(rep.Problems, "\n"))
	}
	return rep
}

// count runs a COUNT(*) query through the raw pool.
func count(t *testing.T, db *store.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.SQL().QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// wantMigrations checks that every embedded migration was applied once.
func wantMigrations(t *testing.T, db *store.DB) {
	t.Helper()
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migrations = %v, %v; want some", files, err)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM schema_migrations"); n != len(files) {
		t.Fatalf("schema_migrations rows = %d, want %d (one per migration)", n, len(files))
	}
}
