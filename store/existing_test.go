package store_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/store"
)

// TestOpenExistingCreatesNothing: a reader that must not create a ledger
// is told there is none, and the file system is as it was.
func TestOpenExistingCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	for _, dsn := range []string{filepath.Join(dir, "outlast.db"), "sqlite:" + filepath.Join(dir, "sub", "outlast.db"),
		"file:" + filepath.Join(dir, "outlast.db") + "?_foo=1"} {
		db, err := store.OpenExisting(context.Background(), dsn)
		if err == nil {
			db.Close()
		}
		ledgertest.WantCode(t, "OpenExisting("+dsn+")", err, outlast.ENOTFOUND)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("after OpenExisting the directory holds %v (%v), want nothing", entries, err)
	}
}

// TestOpenExistingSQLite: a database file without the schema is no
// ledger; a migrated one opens, and so does one a migration behind,
// unchanged.
func TestOpenExistingSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outlast.db")
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec("CREATE TABLE other (x INTEGER)"); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	testOpenExisting(t, path)
}

func TestOpenExistingPostgres(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	missing := dsn[:strings.LastIndex(dsn, "/")+1] + "outlast_no_such_database?sslmode=disable"
	_, err := store.OpenExisting(context.Background(), missing)
	ledgertest.WantCode(t, "OpenExisting(no such database)", err, outlast.ENOTFOUND)
	testOpenExisting(t, dsn)
}

// testOpenExisting runs on an existing database that holds no ledger.
func testOpenExisting(t *testing.T, dsn string) {
	ctx := context.Background()
	_, err := store.OpenExisting(ctx, dsn)
	ledgertest.WantCode(t, "OpenExisting(no schema)", err, outlast.ENOTFOUND)

	db := openDB(t, dsn) // migrates
	ledgertest.Seed(t, db, "ex", 500)
	got, err := store.OpenExisting(ctx, dsn)
	if err != nil {
		t.Fatalf("OpenExisting(migrated) = %v", err)
	}
	rep, err := got.AuditLedger(ctx)
	got.Close()
	if err != nil || rep.Accounts != 1 || len(rep.Problems) != 0 {
		t.Fatalf("AuditLedger through OpenExisting = %+v, %v; want 1 account, no problems", rep, err)
	}

	if _, err := db.SQL().ExecContext(ctx, "DELETE FROM schema_migrations WHERE version = (SELECT MAX(version) FROM schema_migrations)"); err != nil {
		t.Fatal(err)
	}
	// An operator audits before upgrading: a ledger behind opens as it
	// is, unchanged, saying what it lacks.
	behind, err := store.OpenExisting(ctx, dsn)
	if err != nil {
		t.Fatalf("OpenExisting(a migration behind) = %v", err)
	}
	defer behind.Close()
	if pending := behind.PendingMigrations(); len(pending) != 1 {
		t.Fatalf("PendingMigrations = %v, want the one removed", pending)
	}
	var applied int
	if err := db.SQL().QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations").Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if again, _ := store.OpenExisting(ctx, dsn); again != nil {
		again.Close()
	}
	var after int
	if err := db.SQL().QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations").Scan(&after); err != nil || after != applied {
		t.Fatalf("schema_migrations rows %d after OpenExisting, want %d: it migrated", after, applied)
	}
}
