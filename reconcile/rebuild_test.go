package reconcile_test

import (
	"context"
	"strings"
	"testing"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/reconcile"
	"github.com/outlast/outlast/store"
)

// TestRebuild: the journal alone rebuilds every account as stored; an
// account whose columns were changed behind the journal's back is
// reported — and left as it is — and a journal row that takes a bucket
// below zero or names an unknown bucket is a problem. On SQLite and
// PostgreSQL.
func TestRebuild(t *testing.T) {
	testenv.EachDatabase(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		a := ledgertest.Seed(t, db, "rb-a", 1000)
		b := ledgertest.Seed(t, db, "rb-b", 500)
		paid := ledgertest.MustPayout(t, db, a.Req("paid", 300))
		failed := ledgertest.MustPayout(t, db, a.Req("failed", 200))
		ledgertest.MustPayout(t, db, b.Req("held", 50))
		ledgertest.Apply(t, db, ledgertest.Note(paid, outlast.StatusSucceeded), ledgertest.Note(failed, outlast.StatusFailed))

		rep, err := reconcile.Rebuild(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || len(rep.Accounts) != 2 || rep.Entries == 0 {
			t.Fatalf("rebuild of a clean ledger = %+v, want both accounts as stored", rep)
		}
		want := reconcile.Balances{Funded: 1000, Available: 700, Held: 0, PaidOut: 300}
		if got := rep.Accounts[0]; got.AccountID != a.Account || got.Rebuilt != want {
			t.Fatalf("account %s rebuilt %+v, want %+v", got.AccountID, got.Rebuilt, want)
		}

		// Columns changed behind the journal's back (still balanced, so
		// no CHECK stops it): reported, never written over.
		if _, err := db.SQL().Exec("UPDATE accounts SET funded = funded + 7, available = available + 7 WHERE id = $1", b.Account); err != nil {
			t.Fatal(err)
		}
		// A row that takes held below zero, balanced by available, and
		// a row in no known bucket.
		for _, q := range []string{
			"INSERT INTO journal (account_id, bucket, amount, created_ns) VALUES ('" + a.Account + "', 'held', -5, 0)",
			"INSERT INTO journal (account_id, bucket, amount, created_ns) VALUES ('" + a.Account + "', 'available', 5, 0)",
			"INSERT INTO journal (account_id, bucket, amount, created_ns) VALUES ('" + b.Account + "', 'limbo', 0, 0)",
		} {
			if _, err := db.SQL().Exec(q); err != nil {
				t.Fatal(err)
			}
		}
		rep, err = reconcile.Rebuild(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK() || len(rep.Differences) != 2 {
			t.Fatalf("rebuild after tampering: %+v, want both accounts different", rep)
		}
		d := rep.Differences[1]
		if d.AccountID != b.Account || d.Stored.Funded != 507 || d.Rebuilt.Funded != 500 {
			t.Fatalf("difference %+v, want %s stored funded 507, rebuilt 500", d, b.Account)
		}
		problems := strings.Join(rep.Problems, "\n")
		for _, want := range []string{"takes held to -5", `unknown bucket "limbo"`, "moves no money"} {
			if !strings.Contains(problems, want) {
				t.Errorf("problems\n%s\nwant %q", problems, want)
			}
		}
		acc, _, err := db.Account(ctx, b.Account)
		if err != nil || acc.Funded != 507 {
			t.Fatalf("account after the rebuild = %+v, %v: the rebuild must not write", acc, err)
		}
	})
}
