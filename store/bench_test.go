package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/store"
)

// backends opens a fresh ledger per backend for benchmarks.
var backends = []struct {
	name string
	open func(b *testing.B) *store.DB
}{
	{"sqlite", func(b *testing.B) *store.DB { return openBench(b, "sqlite:"+b.TempDir()+"/ledger.db") }},
	{"postgres", func(b *testing.B) *store.DB { return openBench(b, testenv.PostgresDSN(b)) }},
}

func openBench(b *testing.B, dsn string) *store.DB {
	b.Helper()
	db, err := store.Open(context.Background(), dsn)
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// BenchmarkCreatePayout measures the whole payout transaction: idempotency
// check, balance hold, journal, outbox, invariant check, durable commit.
func BenchmarkCreatePayout(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			db := be.open(b)
			f := ledgertest.Seed(b, db, "bench", outlast.AmountMax)
			i := 0
			for b.Loop() {
				i++
				if _, _, err := db.CreatePayout(context.Background(), f.Req(fmt.Sprintf("k%d", i), 1)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(be.name+"/parallel", func(b *testing.B) {
			db := be.open(b)
			f := ledgertest.Seed(b, db, "bench", outlast.AmountMax)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, err := db.CreatePayout(context.Background(), f.Req(outlast.NewID(), 1)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkApplyNotifications applies batches of notifications (dispatched
// then succeeded for batch/2 payouts, spread over some accounts) in one
// transaction each, the committer's shape, and reports notifications/s.
func BenchmarkApplyNotifications(b *testing.B) {
	shapes := []struct{ batch, accounts int }{{100, 1}, {1000, 1}, {1000, 100}}
	for _, be := range backends {
		for _, sh := range shapes {
			b.Run(fmt.Sprintf("%s/batch=%d/accounts=%d", be.name, sh.batch, sh.accounts), func(b *testing.B) {
				db := be.open(b)
				benchApply(b, db, seedAccounts(b, db, sh.accounts), sh.batch)
			})
		}
	}
}

func benchApply(b *testing.B, db *store.DB, fs []ledgertest.Fixture, batch int) {
	ctx := context.Background()
	k := 0
	// A classic b.N loop: the untimed set-up of each batch is excluded
	// with StopTimer.
	for range b.N {
		b.StopTimer()
		ns := make([]*outlast.Notification, 0, batch)
		for range batch / 2 {
			k++
			p, _, err := db.CreatePayout(ctx, fs[k%len(fs)].Req(fmt.Sprintf("k%d", k), 1))
			if err != nil {
				b.Fatal(err)
			}
			ns = append(ns, ledgertest.Note(p, outlast.StatusDispatched), ledgertest.Note(p, outlast.StatusSucceeded))
		}
		b.StartTimer()
		rs, err := db.Apply(ctx, outlast.FromLog, ns)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		for i, r := range rs {
			if r.Outcome != outlast.OutcomeApplied {
				b.Fatalf("result %d = %+v, want applied", i, r)
			}
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "notifications/s")
}

// seedAccounts creates n funded accounts of one client.
func seedAccounts(b *testing.B, db *store.DB, n int) []ledgertest.Fixture {
	b.Helper()
	f := ledgertest.Seed(b, db, "bench", outlast.AmountMax)
	fs := []ledgertest.Fixture{f}
	for i := 1; i < n; i++ {
		g := ledgertest.Fixture{Client: f.Client, Account: fmt.Sprintf("bench-acct-%d", i)}
		ctx := context.Background()
		if err := db.CreateAccount(ctx, &outlast.Account{ID: g.Account, ClientID: g.Client, Currency: "EUR"}); err != nil {
			b.Fatal(err)
		}
		if _, _, err := db.FundAccount(ctx, g.Account, outlast.AmountMax, "bench"); err != nil {
			b.Fatal(err)
		}
		fs = append(fs, g)
	}
	return fs
}

// BenchmarkAuditLedger audits a ledger of 100,000 payouts, written in bulk
// with raw SQL (creating them one by one would take minutes of fsyncs).
func BenchmarkAuditLedger(b *testing.B) {
	const payouts = 100_000
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			db := be.open(b)
			bulkLedger(b, db, payouts)
			for b.Loop() {
				rep, err := db.AuditLedger(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				if len(rep.Problems) > 0 || rep.Payouts[outlast.StatusSucceeded] != payouts/2 {
					b.Fatalf("audit = %d problems %v, want a clean ledger", len(rep.Problems), rep.Payouts)
				}
			}
		})
	}
}

// bulkLedger writes n consistent payouts across 100 accounts, half
// succeeded and half pending, in one transaction.
func bulkLedger(tb testing.TB, db *store.DB, n int) {
	tb.Helper()
	ctx := context.Background()
	const accounts, amount = 100, int64(10)
	tx, err := db.SQL().BeginTx(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback()
	now := time.Now().UnixNano()
	exec := func(q string, args ...any) {
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			tb.Fatalf("%s: %v", q, err)
		}
	}
	exec("INSERT INTO clients (id, key_hash, created_ns) VALUES ('bulk', 'bulk', $1)", now)
	perAccount := int64(n / accounts)
	for a := range accounts {
		done := perAccount / 2 * amount
		exec(`INSERT INTO accounts (id, client_id, currency, funded, available, held, paid_out, version, created_ns, updated_ns)
			VALUES ($1, 'bulk', 'EUR', $2, 0, $3, $4, 1, $5, $5)`, fmt.Sprintf("a%d", a), perAccount*amount, perAccount*amount-done, done, now)
		exec(`INSERT INTO journal (account_id, bucket, amount, created_ns) VALUES ($1, 'external', $2, $3), ($1, 'available', $4, $3)`,
			fmt.Sprintf("a%d", a), -perAccount*amount, now, perAccount*amount)
	}
	for i := range n {
		id, acct := outlast.NewID(), fmt.Sprintf("a%d", i%accounts)
		status, last := "pending", "held"
		if (i/accounts)%2 == 0 {
			status, last = "succeeded", "paid_out"
		}
		exec(`INSERT INTO payouts (id, client_id, account_id, amount, currency, destination, status, idempotency_key,
			fingerprint, version, created_ns, updated_ns) VALUES ($1, 'bulk', $2, $3, 'EUR', 'd', $4, $1, 'f', 1, $5, $5)`,
			id, acct, amount, status, now)
		exec(`INSERT INTO journal (account_id, payout_id, bucket, amount, created_ns) VALUES ($1, $2, 'available', $3, $4), ($1, $2, 'held', $5, $4)`,
			acct, id, -amount, now, amount)
		if status == "succeeded" {
			exec(`INSERT INTO journal (account_id, payout_id, bucket, amount, created_ns) VALUES ($1, $2, 'held', $3, $4), ($1, $2, $5, $6, $4)`,
				acct, id, -amount, now, last, amount)
		} else {
			exec("INSERT INTO outbox (payout_id, next_attempt_ns, created_ns) VALUES ($1, $2, $2)", id, now)
		}
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
}
