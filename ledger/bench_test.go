package ledger

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/store"
)

// BenchmarkApply measures what the seam costs: the same batches (1000
// notifications: dispatched then succeeded for 500 payouts) applied
// straight to the store and through the ledger (outcome metric, rejection
// rule, cache write-through of every changed payout and account), on
// SQLite and PostgreSQL, in one run so the two can be compared as a ratio.
//
//	go test ./ledger -run X -bench Apply -benchtime 20x
func BenchmarkApply(b *testing.B) {
	for _, be := range []struct {
		name string
		dsn  func(b *testing.B) string
	}{
		{"sqlite", func(b *testing.B) string { return "sqlite:" + b.TempDir() + "/ledger.db" }},
		{"postgres", func(b *testing.B) string { return testenv.PostgresDSN(b) }},
	} {
		for _, via := range []string{"store", "ledger"} {
			b.Run(be.name+"/"+via, func(b *testing.B) {
				ctx := context.Background()
				db, err := store.Open(ctx, be.dsn(b))
				if err != nil {
					b.Fatal(err)
				}
				defer db.Close()
				var target outlast.Ledger = db
				if via == "ledger" {
					l, err := New(db, Config{})
					if err != nil {
						b.Fatal(err)
					}
					defer l.Close()
					target = l
				}
				benchApply(b, db, target, 1000)
			})
		}
	}
}

func benchApply(b *testing.B, db *store.DB, target outlast.Ledger, batch int) {
	ctx := context.Background()
	key := sha256.Sum256([]byte("bench"))
	if err := db.CreateClient(ctx, &outlast.Client{ID: "bench"}, key[:]); err != nil {
		b.Fatal(err)
	}
	if err := db.CreateAccount(ctx, &outlast.Account{ID: "bench", ClientID: "bench", Currency: "EUR"}); err != nil {
		b.Fatal(err)
	}
	if _, _, err := db.FundAccount(ctx, "bench", outlast.AmountMax, "bench"); err != nil {
		b.Fatal(err)
	}
	k := 0
	for range b.N {
		b.StopTimer()
		ns := make([]*outlast.Notification, 0, batch)
		for range batch / 2 {
			k++
			p, _, err := db.CreatePayout(ctx, &outlast.PayoutRequest{ClientID: "bench", AccountID: "bench", Amount: 1,
				Currency: "EUR", Destination: "d", IdempotencyKey: fmt.Sprintf("k%d", k), Channel: "tcb"})
			if err != nil {
				b.Fatal(err)
			}
			for _, st := range []outlast.PayoutStatus{outlast.StatusDispatched, outlast.StatusSucceeded} {
				ns = append(ns, &outlast.Notification{Channel: "tcb", EventID: fmt.Sprintf("%s-%s", p.ID, st),
					PayoutID: p.ID, PartnerRef: "r", Status: st, OccurredAt: p.CreatedAt})
			}
		}
		b.StartTimer()
		rs, err := target.Apply(ctx, outlast.FromLog, ns)
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
