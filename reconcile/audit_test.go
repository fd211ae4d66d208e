package reconcile_test

import (
	"context"
	"testing"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/reconcile"
)

type fakeLedger []*outlast.Payout

func (f fakeLedger) AuditLedger(context.Context) (*outlast.LedgerReport, error) {
	return &outlast.LedgerReport{}, nil
}

func (f fakeLedger) EachPayout(_ context.Context, fn func(*outlast.Payout) error) error {
	for _, p := range f {
		if err := fn(p); err != nil {
			return err
		}
	}
	return nil
}

func TestComparePartner(t *testing.T) {
	p := func(id string, s outlast.PayoutStatus, ch string) *outlast.Payout {
		return &outlast.Payout{ID: id, Status: s, Channel: ch, Amount: 100, Currency: "USD", PartnerRef: "r-" + id}
	}
	r := func(id string, s outlast.PayoutStatus, amount int64) outlast.PartnerRecord {
		return outlast.PartnerRecord{PayoutID: id, Status: s, Amount: amount, Currency: "USD", PartnerRef: "r-" + id}
	}
	S, F, D, P := outlast.StatusSucceeded, outlast.StatusFailed, outlast.StatusDispatched, outlast.StatusPending
	ledger := fakeLedger{
		p("ok-s", S, "tcb"), p("ok-f", F, "tcb"), p("ok-inflight", D, "tcb"), p("ok-pending", P, "tcb"),
		p("paid-not-here", D, "tcb"), p("here-not-paid", S, "tcb"), p("failed-at-bank", D, "tcb"),
		p("amount", S, "tcb"), p("other-channel", S, "acb"), p("paid-twice", S, "tcb"), p("two-records", F, "tcb"),
	}
	second := r("paid-twice", S, 100)
	second.PartnerRef = "r-second"
	records := []outlast.PartnerRecord{
		r("ok-s", S, 100), r("ok-f", F, 100), r("paid-not-here", S, 100), r("failed-at-bank", F, 100),
		r("amount", S, 99), r("ghost", S, 5),
		r("paid-twice", S, 100), second, r("two-records", F, 100), r("two-records", F, 100),
	}
	got, err := reconcile.ComparePartner(context.Background(), ledger, "tcb", records)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"paid-not-here":  reconcile.KindPaidNotSucceeded,
		"here-not-paid":  reconcile.KindSucceededNotPaid,
		"failed-at-bank": reconcile.KindFailedAtBank,
		"amount":         reconcile.KindAmountMismatch,
		"ghost":          reconcile.KindUnknownHere,
		// Two records of one payout are never collapsed into one (issue
		// 7, defect 2).
		"paid-twice":  reconcile.KindPaidTwice,
		"two-records": reconcile.KindManyRecords,
	}
	if len(got) != len(want) {
		t.Fatalf("ComparePartner = %v, want %d discrepancies", got, len(want))
	}
	for _, d := range got {
		if want[d.PayoutID] != d.Kind {
			t.Errorf("discrepancy %s kind = %q, want %q", d.PayoutID, d.Kind, want[d.PayoutID])
		}
	}
}
