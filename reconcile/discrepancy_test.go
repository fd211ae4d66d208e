package reconcile_test

import (
	"context"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/reconcile"
	"github.com/outlast/outlast/store"
)

// repairLedger is a ledger Repair works on that the tests can also
// dispatch payouts on and read balances from.
type repairLedger interface {
	reconcile.RepairLedger
	outlast.Ledger
}

// eachRepairLedger runs fn on the memory ledger and on the store on
// SQLite and PostgreSQL.
func eachRepairLedger(t *testing.T, fn func(t *testing.T, l repairLedger)) {
	t.Run("memory", func(t *testing.T) { fn(t, ledgertest.NewMemory()) })
	testenv.EachDatabase(t, func(t *testing.T, dsn string) {
		db, err := store.Open(context.Background(), dsn)
		if err != nil {
			t.Fatalf("store.Open: %v", err)
		}
		t.Cleanup(func() { db.Close() })
		fn(t, db)
	})
}

func dispatch(t *testing.T, l repairLedger, p *outlast.Payout, ref string) {
	t.Helper()
	if _, err := l.MarkDispatched(context.Background(), p.ID, "tcb", ref); err != nil {
		t.Fatalf("MarkDispatched(%s): %v", p.ID, err)
	}
}

func record(p *outlast.Payout, ref string, status outlast.PayoutStatus) outlast.PartnerRecord {
	return outlast.PartnerRecord{PayoutID: p.ID, PartnerRef: ref, Amount: p.Amount, Currency: p.Currency, Status: status}
}

func wantStatus(t *testing.T, l repairLedger, id string, want outlast.PayoutStatus) {
	t.Helper()
	p, _, err := l.Payout(context.Background(), id)
	if err != nil || p.Status != want {
		t.Fatalf("Payout(%s) = %v, %v; want status %s", id, p, err, want)
	}
}

// TestRepair: a missed success (with the payout's ref, or none yet) and a
// missed failure of dispatched payouts are repaired, through the
// reconciler's event ids; what is unsafe — a failed payout the bank paid,
// a ref or amount that differs, a double payment, a record unknown here —
// is left for a human, each filed once as an exception of its kind (a
// claim held), the payouts untouched; a pending payout the bank has is
// in flight, the dispatcher's. A dry run changes nothing; a second run
// finds nothing more to repair or file.
func TestRepair(t *testing.T) {
	eachRepairLedger(t, func(t *testing.T, l repairLedger) {
		ctx := context.Background()
		S, F := outlast.StatusSucceeded, outlast.StatusFailed
		f := ledgertest.Seed(t, l, "repair", 10000)
		pay := func(key string, amount int64) *outlast.Payout { return ledgertest.MustPayout(t, l, f.Req(key, amount)) }
		missed, noRef, missedFail := pay("missed", 100), pay("noref", 200), pay("missedfail", 300)
		failedPaid, refDiffers, amount := pay("failedpaid", 400), pay("refdiffers", 500), pay("amount", 600)
		pending, twice := pay("pending", 700), pay("twice", 800)
		for _, p := range []*outlast.Payout{missed, missedFail, failedPaid, refDiffers, amount, twice} {
			dispatch(t, l, p, "ref-"+p.IdempotencyKey)
		}
		dispatch(t, l, noRef, "")
		fail := ledgertest.Note(failedPaid, F)
		fail.PartnerRef = "ref-failedpaid"
		ledgertest.WantOutcomes(t, ledgertest.Apply(t, l, fail), outlast.OutcomeApplied)

		short := record(amount, "ref-amount", S)
		short.Amount--
		records := []outlast.PartnerRecord{
			record(missed, "ref-missed", S), record(noRef, "ref-bank", S), record(missedFail, "ref-missedfail", F),
			record(failedPaid, "ref-failedpaid", S), record(refDiffers, "ref-other", S), short,
			record(pending, "ref-pending", S), record(twice, "ref-twice", S), record(twice, "ref-twice-2", S),
			{PayoutID: "ghost", PartnerRef: "ref-ghost", Amount: 5, Currency: "EUR", Status: S},
		}
		repairable := []string{missed.ID, noRef.ID, missedFail.ID}
		human := map[string]bool{failedPaid.ID: true, refDiffers.ID: true, amount.ID: true, twice.ID: true, "ghost": true}
		kinds := map[string]outlast.ExceptionKind{failedPaid.ID: outlast.ExceptionPaidButFailed,
			refDiffers.ID: outlast.ExceptionPartnerRefConflict, amount.ID: outlast.ExceptionAmountMismatch,
			twice.ID: outlast.ExceptionPaidTwice, "ghost": outlast.ExceptionUnknownPayout}
		claims := map[string]int64{failedPaid.ID: 400, amount.ID: -1, twice.ID: 800}

		dry, err := reconcile.Repair(ctx, l, "tcb", records, true)
		if err != nil {
			t.Fatalf("Repair(dry run): %v", err)
		}
		wantRepairs(t, dry, repairable, reconcile.OutcomeWouldApply)
		wantForHuman(t, dry, human)
		if len(dry.InFlight) != 1 || dry.InFlight[0].PayoutID != pending.ID || dry.Filed != 0 {
			t.Errorf("dry run: in flight %v, filed %d; want only %s in flight, nothing filed", dry.InFlight, dry.Filed, pending.ID)
		}
		for _, id := range repairable {
			wantStatus(t, l, id, outlast.StatusDispatched)
		}

		rep, err := reconcile.Repair(ctx, l, "tcb", records, false)
		if err != nil {
			t.Fatalf("Repair: %v", err)
		}
		wantRepairs(t, rep, repairable, string(outlast.OutcomeApplied))
		wantForHuman(t, rep, human)
		if rep.OK() || rep.Repaired() != 3 || rep.Records != len(records) || rep.Found[reconcile.KindPaidNotSucceeded] != 7 {
			t.Errorf("report = ok %v, repaired %d, records %d, found %v; want not ok, 3, %d, 7 paid but not succeeded",
				rep.OK(), rep.Repaired(), rep.Records, rep.Found, len(records))
		}
		wantStatus(t, l, missed.ID, S)
		wantStatus(t, l, noRef.ID, S)
		wantStatus(t, l, missedFail.ID, F)
		wantStatus(t, l, failedPaid.ID, F) // money does not move back by itself
		if p, _, _ := l.Payout(ctx, noRef.ID); p.PartnerRef != "ref-bank" {
			t.Errorf("repaired payout's ref = %q, want the bank's ref-bank", p.PartnerRef)
		}
		// paid 100+200; held: refdiffers, amount, pending, twice, and the
		// claims of failedpaid (400) and twice's second payment (800).
		ledgertest.WantBalances(t, l, f.Account, 10000-300-2600-1200, 2600+1200, 300)
		if rep.Filed != len(human) {
			t.Errorf("filed %d exceptions, want %d", rep.Filed, len(human))
		}
		for _, d := range rep.ForHuman {
			e, err := l.Exception(ctx, d.ExceptionID)
			if err != nil || e.Kind != kinds[d.PayoutID] || e.Claim != claims[d.PayoutID] || e.FiledBy != outlast.FiledByReport ||
				len(e.Evidence) == 0 || e.Evidence[len(e.Evidence)-1].Source != "records of tcb" {
				t.Errorf("exception for %s = %+v, %v; want %s claiming %d with the bank's records as evidence",
					d.PayoutID, e, err, kinds[d.PayoutID], claims[d.PayoutID])
			}
		}

		// The reconciler's event id: the same answer from it is a no-op.
		again := &outlast.Notification{Channel: "tcb", EventID: "reconcile:" + missed.ID + ":succeeded", PayoutID: missed.ID,
			PartnerRef: "ref-missed", Status: S, OccurredAt: time.Now().UTC()}
		ledgertest.WantOutcomes(t, ledgertest.Apply(t, l, again), outlast.OutcomeDuplicate)

		second, err := reconcile.Repair(ctx, l, "tcb", records, false)
		if err != nil {
			t.Fatalf("second Repair: %v", err)
		}
		wantRepairs(t, second, nil, "")
		wantForHuman(t, second, human)
		if second.Filed != 0 {
			t.Errorf("second run filed %d exceptions, want none new", second.Filed)
		}
	})
}

// TestRepairRaced: a webhook that tells the same final status first makes
// the repair a duplicate, repaired all the same; one that tells the other
// final status makes it a conflict, left for a human.
func TestRepairRaced(t *testing.T) {
	eachRepairLedger(t, func(t *testing.T, l repairLedger) {
		ctx := context.Background()
		f := ledgertest.Seed(t, l, "raced", 1000)
		same, other := ledgertest.MustPayout(t, l, f.Req("same", 100)), ledgertest.MustPayout(t, l, f.Req("other", 200))
		dispatch(t, l, same, "ref-same")
		dispatch(t, l, other, "ref-other")
		raced := &racingLedger{repairLedger: l, l: l, first: func() {
			// The reconciler applied the bank's answer about same; a
			// webhook said other failed.
			n := ledgertest.Note(same, outlast.StatusSucceeded)
			n.EventID, n.PartnerRef = "reconcile:"+same.ID+":succeeded", "ref-same"
			o := ledgertest.Note(other, outlast.StatusFailed)
			o.PartnerRef = "ref-other"
			ledgertest.WantOutcomes(t, ledgertest.Apply(t, l, n, o), outlast.OutcomeApplied, outlast.OutcomeApplied)
		}}
		records := []outlast.PartnerRecord{record(same, "ref-same", outlast.StatusSucceeded), record(other, "ref-other", outlast.StatusSucceeded)}
		rep, err := reconcile.Repair(ctx, raced, "tcb", records, false)
		if err != nil {
			t.Fatalf("Repair: %v", err)
		}
		if len(rep.Repairs) != 2 {
			t.Fatalf("Repairs = %+v, want 2", rep.Repairs)
		}
		byID := map[string]reconcile.RepairAction{}
		for _, a := range rep.Repairs {
			byID[a.PayoutID] = a
		}
		if a := byID[same.ID]; a.Outcome != string(outlast.OutcomeDuplicate) || !a.Repaired {
			t.Errorf("repair of %s = %+v, want a duplicate, repaired", same.ID, a)
		}
		if a := byID[other.ID]; a.Outcome == string(outlast.OutcomeApplied) || a.Repaired {
			t.Errorf("repair of %s = %+v, want not applied, not repaired", other.ID, a)
		}
		wantForHuman(t, rep, map[string]bool{other.ID: true})
		wantStatus(t, l, other.ID, outlast.StatusFailed)
	})
}

// racingLedger runs first once, just before the first Apply: what got
// there between Repair's reading and its writing.
type racingLedger struct {
	repairLedger // exceptions go straight through
	l            repairLedger
	first        func()
	done         bool
}

func (r *racingLedger) EachPayout(ctx context.Context, fn func(*outlast.Payout) error) error {
	return r.l.EachPayout(ctx, fn)
}

func (r *racingLedger) Payout(ctx context.Context, id string) (*outlast.Payout, outlast.Freshness, error) {
	return r.l.Payout(ctx, id)
}

func (r *racingLedger) Apply(ctx context.Context, source outlast.Source, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
	if !r.done {
		r.done = true
		r.first()
	}
	return r.l.Apply(ctx, source, ns)
}

func wantRepairs(t *testing.T, rep *reconcile.RepairReport, ids []string, outcome string) {
	t.Helper()
	if len(rep.Repairs) != len(ids) {
		t.Fatalf("Repairs = %+v, want %d: %v", rep.Repairs, len(ids), ids)
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	for _, a := range rep.Repairs {
		if !want[a.PayoutID] || a.Outcome != outcome {
			t.Errorf("repair %+v, want one of %v with outcome %q", a, ids, outcome)
		}
	}
}

func wantForHuman(t *testing.T, rep *reconcile.RepairReport, ids map[string]bool) {
	t.Helper()
	got := map[string]bool{}
	for _, d := range rep.ForHuman {
		got[d.PayoutID] = true
		if !ids[d.PayoutID] {
			t.Errorf("left for a human: %v; want only %v", d, ids)
		}
	}
	for id := range ids {
		if !got[id] {
			t.Errorf("%s not left for a human; ForHuman = %v", id, rep.ForHuman)
		}
	}
}
