package reconcile_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/reconcile"
	"github.com/outlast/outlast/store"
)

// TestDoublePaymentOnTheStore runs the audit's comparison over the real
// store on SQLite and PostgreSQL: a payout the ledger settled once under
// one ref, which the bank's records show paid twice, is reported as paid
// twice, naming both refs — not collapsed into one record that matches.
func TestDoublePaymentOnTheStore(t *testing.T) {
	testenv.EachDatabase(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatalf("store.Open: %v", err)
		}
		defer db.Close()
		f := ledgertest.Seed(t, db, "double", 1000)
		once := ledgertest.MustPayout(t, db, f.Req("once", 100))
		twice := ledgertest.MustPayout(t, db, f.Req("twice", 200))
		for _, p := range []*outlast.Payout{once, twice} {
			if _, err := db.MarkDispatched(ctx, p.ID, "tcb", "ref-"+p.IdempotencyKey); err != nil {
				t.Fatal(err)
			}
			n := &outlast.Notification{Channel: "tcb", EventID: "ev-" + p.ID, PayoutID: p.ID,
				PartnerRef: "ref-" + p.IdempotencyKey, Status: outlast.StatusSucceeded, OccurredAt: time.Now().UTC()}
			ledgertest.WantOutcomes(t, ledgertest.Apply(t, db, n), outlast.OutcomeApplied)
		}
		paid := func(p *outlast.Payout, ref string) outlast.PartnerRecord {
			return outlast.PartnerRecord{PayoutID: p.ID, PartnerRef: ref, Amount: p.Amount, Currency: p.Currency, Status: outlast.StatusSucceeded}
		}
		records := []outlast.PartnerRecord{paid(once, "ref-once"), paid(twice, "ref-twice"), paid(twice, "ref-twice-again")}
		got, err := reconcile.ComparePartner(ctx, db, "tcb", records)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].PayoutID != twice.ID || got[0].Kind != reconcile.KindPaidTwice ||
			!strings.Contains(got[0].Detail, "ref-twice-again") {
			t.Fatalf("ComparePartner = %v; want exactly payout %s paid twice, naming both refs", got, twice.ID)
		}
	})
}
