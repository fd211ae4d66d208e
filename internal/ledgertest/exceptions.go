package ledgertest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/outlast/outlast"
)

// failedThenPaid makes a payout of amount from f, fails it (the hold goes
// back to available), then applies the bank's late success, which files
// a paid_but_failed exception; it returns the payout and the exception.
func failedThenPaid(t *testing.T, l outlast.Ledger, f Fixture, key string, amount int64) (*outlast.Payout, *outlast.Exception) {
	t.Helper()
	p := MustPayout(t, l, f.Req(key, amount))
	WantOutcomes(t, Apply(t, l, Note(p, outlast.StatusFailed)), outlast.OutcomeApplied)
	rs := Apply(t, l, Note(p, outlast.StatusSucceeded))
	WantOutcomes(t, rs, outlast.OutcomeConflict)
	e := rs[0].Filed
	if e == nil || e.Kind != outlast.ExceptionPaidButFailed || e.PayoutID != p.ID || e.AccountID != f.Account ||
		e.Claim != amount || e.ID == 0 || !e.Open() || len(e.Evidence) != 2 {
		t.Fatalf("late success filed %+v, want an open paid_but_failed exception claiming %d with two pieces of evidence", e, amount)
	}
	return p, e
}

// resolve resolves exception id and fails t on an error.
func resolve(t *testing.T, l outlast.Ledger, id int64, action outlast.ResolveAction, amount int64) (*outlast.Exception, *outlast.Account) {
	t.Helper()
	e, a, err := l.ResolveException(context.Background(), id, &outlast.Resolution{
		Action: action, Amount: amount, Reason: "checked with the bank's statement", By: "ops@example"})
	if err != nil {
		t.Fatalf("ResolveException(%d, %s): %v", id, action, err)
	}
	if e.Open() || e.Resolution.Action != action || e.Resolution.By != "ops@example" || e.Resolution.At.IsZero() {
		t.Fatalf("resolved exception = %+v (resolution %+v), want resolved by ops@example", e, e.Resolution)
	}
	return e, a
}

// testExceptionLateSuccess: the bank paid a payout failed here. Its
// released hold is held again at once, so the money the bank already
// sent cannot be paid out a second time; the same fact reported again
// (a redelivery under another event id, the reconciler) files nothing
// new; booking it as paid moves the hold to paid_out and the audit is
// clean again.
func testExceptionLateSuccess(t *testing.T, h *Harness) {
	ctx := context.Background()
	l := h.Ledger
	f := Seed(t, l, "xl", 1000)
	p, e := failedThenPaid(t, l, f, "k1", 300)
	if e.Held != 300 || e.Short() != 0 {
		t.Fatalf("exception holds %d (short %d), want all 300 held", e.Held, e.Short())
	}
	WantBalances(t, l, f.Account, 700, 300, 0)
	// The hold is not spendable: 701 is more than is available.
	_, _, err := l.CreatePayout(ctx, f.Req("k2", 701))
	WantCode(t, "a payout of the held money", err, outlast.EINSUFFICIENT)
	MustPayout(t, l, f.Req("k3", 700)) // what is not held stays spendable
	WantBalances(t, l, f.Account, 0, 1000, 0)

	again := Note(p, outlast.StatusSucceeded)
	rs := Apply(t, l, again)
	WantOutcomes(t, rs, outlast.OutcomeConflict)
	if rs[0].Filed != nil {
		t.Fatalf("the same late success again filed %+v, want nothing new", rs[0].Filed)
	}
	p, _, err = l.Payout(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	same, filed, err := l.FileException(ctx, outlast.ConflictException(p, again, outlast.FromReconciler))
	if err != nil || filed || same.ID != e.ID {
		t.Fatalf("FileException(same key) = %+v, %v, %v; want exception %d, not filed", same, filed, err, e.ID)
	}
	WantBalances(t, l, f.Account, 0, 1000, 0)
	if rep := auditOf(t, h); rep != nil && !hasProblem(rep, fmt.Sprintf("exception %d", e.ID)) {
		t.Fatalf("audit problems %q, want the open exception %d listed", rep.Problems, e.ID)
	}

	got, a := resolve(t, l, e.ID, outlast.ResolveBookPaid, 0)
	wantMoves(t, got.Resolution, map[outlast.Bucket]int64{outlast.BucketHeld: -300, outlast.BucketPaidOut: 300})
	if a == nil || a.Available != 0 || a.Held != 700 || a.PaidOut != 300 {
		t.Fatalf("account after book_paid = %+v, want available 0 held 700 paid_out 300", a)
	}
	WantBalances(t, l, f.Account, 0, 700, 300)
	_, _, err = l.ResolveException(ctx, e.ID, &outlast.Resolution{Action: outlast.ResolveNoMoney, Reason: "again", By: "ops"})
	WantCode(t, "resolving a resolved exception", err, outlast.ECONFLICT)
	wantCleanAudit(t, h)
}

// testExceptionShortClaim: the account had spent the released hold
// before the late success came. Filing holds what is left and refuses
// the account's payouts while the rest is uncovered; booking it as paid
// advances the shortfall (funded grows by it, the resolution says how
// much) and payouts flow again.
func testExceptionShortClaim(t *testing.T, h *Harness) {
	ctx := context.Background()
	l := h.Ledger
	f := Seed(t, l, "xs", 1000)
	p := MustPayout(t, l, f.Req("k1", 600))
	WantOutcomes(t, Apply(t, l, Note(p, outlast.StatusFailed)), outlast.OutcomeApplied)
	spend := MustPayout(t, l, f.Req("k2", 800)) // the released hold, spent
	rs := Apply(t, l, Note(p, outlast.StatusSucceeded))
	WantOutcomes(t, rs, outlast.OutcomeConflict)
	e := rs[0].Filed
	if e == nil || e.Held != 200 || e.Short() != 400 {
		t.Fatalf("filed %+v, want 200 held of the 600 claimed (400 short)", e)
	}
	WantBalances(t, l, f.Account, 0, 1000, 0)
	if _, _, err := l.FundAccount(ctx, f.Account, 5000, "top-up"); err != nil {
		t.Fatal(err)
	}
	_, _, err := l.CreatePayout(ctx, f.Req("k3", 10))
	WantCode(t, "a payout while the claim is short", err, outlast.EVALIDATION)
	if !strings.Contains(outlast.ErrorMessage(err), fmt.Sprintf("exception %d", e.ID)) {
		t.Fatalf("refusal %q, want it to name exception %d", outlast.ErrorMessage(err), e.ID)
	}
	WantOutcomes(t, Apply(t, l, Note(spend, outlast.StatusSucceeded)), outlast.OutcomeApplied)

	got, _ := resolve(t, l, e.ID, outlast.ResolveBookPaid, 0)
	if got.Resolution.Amount != 600 || got.Resolution.Advanced != 0 {
		t.Fatalf("resolution %+v, want 600 booked, nothing advanced (available covers the rest)", got.Resolution)
	}
	wantMoves(t, got.Resolution, map[outlast.Bucket]int64{
		outlast.BucketHeld: -200, outlast.BucketAvailable: -400, outlast.BucketPaidOut: 600})
	WantBalances(t, l, f.Account, 4600, 0, 1400)
	MustPayout(t, l, f.Req("k3", 10))
	wantCleanAudit(t, h)

	// With nothing available either, the shortfall is advanced.
	g := Seed(t, l, "xa", 500)
	q := MustPayout(t, l, g.Req("k1", 500))
	WantOutcomes(t, Apply(t, l, Note(q, outlast.StatusFailed)), outlast.OutcomeApplied)
	MustPayout(t, l, g.Req("k2", 500))
	rs = Apply(t, l, Note(q, outlast.StatusSucceeded))
	if rs[0].Filed == nil || rs[0].Filed.Held != 0 {
		t.Fatalf("filed %+v, want nothing held: nothing was available", rs[0].Filed)
	}
	got, a := resolve(t, l, rs[0].Filed.ID, outlast.ResolveBookPaid, 0)
	if got.Resolution.Advanced != 500 || a.Funded != 1000 || a.PaidOut != 500 || a.Held != 500 {
		t.Fatalf("resolution %+v, account %+v; want 500 advanced, funded 1000, paid_out 500", got.Resolution, a)
	}
	// Payouts are refused for want of funds now, no longer for the
	// exception.
	_, _, err = l.CreatePayout(ctx, g.Req("k3", 1))
	WantCode(t, "a payout from the emptied account", err, outlast.EINSUFFICIENT)
}

// testExceptionReversePaid: the bank failed a payout succeeded here (the
// ledger paid out money that never left). Nothing is held; reversing it
// gives the amount back to available; the operator's checks refuse what
// would be wrong.
func testExceptionReversePaid(t *testing.T, h *Harness) {
	ctx := context.Background()
	l := h.Ledger
	f := Seed(t, l, "xr", 1000)
	p := MustPayout(t, l, f.Req("k1", 400))
	WantOutcomes(t, Apply(t, l, Note(p, outlast.StatusSucceeded)), outlast.OutcomeApplied)
	rs := Apply(t, l, Note(p, outlast.StatusFailed))
	e := rs[0].Filed
	if e == nil || e.Kind != outlast.ExceptionSucceededNotPaid || e.Claim != -400 || e.Held != 0 {
		t.Fatalf("filed %+v, want succeeded_not_paid claiming -400, nothing held", e)
	}
	WantBalances(t, l, f.Account, 600, 0, 400)

	bad := []*outlast.Resolution{
		{Action: outlast.ResolveBookPaid, Reason: "r", By: "ops"},                 // nothing to book by default
		{Action: outlast.ResolveReversePaid, Amount: 401, Reason: "r", By: "ops"}, // more than paid out
		{Action: outlast.ResolveReversePaid, By: "ops"},                           // no reason
		{Action: outlast.ResolveNoMoney, Amount: 5, Reason: "r", By: "ops"},       // no_money moves nothing
		{Action: "refund", Reason: "r", By: "ops"},
		{Action: outlast.ResolveNoMoney, Reason: "r"}, // nobody
	}
	for _, r := range bad {
		_, _, err := l.ResolveException(ctx, e.ID, r)
		WantCode(t, fmt.Sprintf("ResolveException(%+v)", *r), err, outlast.EVALIDATION)
	}
	_, _, err := l.ResolveException(ctx, 1<<40, &outlast.Resolution{Action: outlast.ResolveNoMoney, Reason: "r", By: "ops"})
	WantCode(t, "ResolveException(unknown id)", err, outlast.ENOTFOUND)
	WantBalances(t, l, f.Account, 600, 0, 400)

	got, _ := resolve(t, l, e.ID, outlast.ResolveReversePaid, 0)
	wantMoves(t, got.Resolution, map[outlast.Bucket]int64{outlast.BucketAvailable: 400, outlast.BucketPaidOut: -400})
	WantBalances(t, l, f.Account, 1000, 0, 0)
	wantCleanAudit(t, h)
}

// testExceptionPartnerRef: a success under another partner ref of a
// dispatched payout files an exception that claims nothing, and the
// payout never settles by itself; resolving it with no_money and the
// bank's status settles the payout (its own hold paid out) and the
// audit. The same report about a payout already paid is a second
// payment: it holds its amount until booked. A success reported by
// another channel holds its claim until no_money releases it. An
// exception about a payout Outlast does not know has no account and
// resolves with no_money alone.
func testExceptionPartnerRef(t *testing.T, h *Harness) {
	ctx := context.Background()
	l := h.Ledger
	f := Seed(t, l, "xp", 1000)
	p := MustPayout(t, l, f.Req("k1", 300))
	WantOutcomes(t, Apply(t, l, Note(p, outlast.StatusDispatched)), outlast.OutcomeApplied)
	other := Note(p, outlast.StatusSucceeded)
	other.PartnerRef = "ref-other"
	rs := Apply(t, l, other)
	e := rs[0].Filed
	if e == nil || e.Kind != outlast.ExceptionPartnerRefConflict || e.Claim != 0 || !strings.Contains(e.Summary, "ref-other") {
		t.Fatalf("filed %+v, want a partner_ref_conflict naming ref-other that claims nothing", e)
	}
	twice := MustPayout(t, l, f.Req("k3", 50))
	WantOutcomes(t, Apply(t, l, Note(twice, outlast.StatusSucceeded)), outlast.OutcomeApplied)
	second := Note(twice, outlast.StatusSucceeded)
	second.PartnerRef = "ref-second"
	rs = Apply(t, l, second)
	if d := rs[0].Filed; d == nil || d.Kind != outlast.ExceptionPaidTwice || d.Claim != 50 || d.Held != 50 {
		t.Fatalf("a second success under another ref filed %+v, want paid_twice holding 50", d)
	} else {
		resolve(t, l, d.ID, outlast.ResolveBookPaid, 0)
	}
	unknown, filed, err := l.FileException(ctx, &outlast.Exception{
		Key: outlast.ExceptionKey(outlast.ExceptionUnknownPayout, "ghost-1", "tcb"), Kind: outlast.ExceptionUnknownPayout,
		PayoutID: "ghost-1", Channel: "tcb", Summary: "tcb paid 5 EUR for payout ghost-1, which Outlast never made",
		Evidence: []outlast.Evidence{{Source: "records of tcb", Says: "succeeded 5 EUR"}}, FiledBy: outlast.FiledByReport})
	if err != nil || !filed || unknown.AccountID != "" {
		t.Fatalf("FileException(unknown payout) = %+v, %v, %v", unknown, filed, err)
	}
	_, _, err = l.FileException(ctx, &outlast.Exception{Key: "k", Kind: outlast.ExceptionPaidTwice, PayoutID: p.ID,
		Channel: "tcb", Claim: 5, Summary: "s"})
	WantCode(t, "a claim without an account", err, outlast.EVALIDATION)
	_, _, err = l.ResolveException(ctx, unknown.ID, &outlast.Resolution{Action: outlast.ResolveBookPaid, Amount: 5, Reason: "r", By: "ops"})
	WantCode(t, "booking money on no account", err, outlast.EVALIDATION)
	// A success from a channel the payout is not routed to: rejected (it
	// cannot apply), yet evidence that a second bank paid.
	q := MustPayout(t, l, f.Req("k2", 100))
	byOther := Note(q, outlast.StatusSucceeded)
	byOther.Channel = "acb"
	rs = Apply(t, l, byOther)
	WantOutcomes(t, rs, outlast.OutcomeRejected)
	o := rs[0].Filed
	if o == nil || o.Kind != outlast.ExceptionPaidByOtherChannel || o.Claim != 100 || o.Held != 100 || o.Channel != "acb" {
		t.Fatalf("success from acb filed %+v, want paid_by_other_channel claiming and holding 100", o)
	}
	if rs = Apply(t, l, byOther); rs[0].Filed != nil {
		t.Fatalf("the same report again filed %+v", rs[0].Filed)
	}
	WantBalances(t, l, f.Account, 400, 500, 100)
	resolve(t, l, o.ID, outlast.ResolveNoMoney, 0)
	_, _, err = l.ResolveException(ctx, unknown.ID, &outlast.Resolution{Action: outlast.ResolveNoMoney, Payout: outlast.StatusFailed,
		Reason: "r", By: "ops"})
	WantCode(t, "settling a payout Outlast does not know", err, outlast.EVALIDATION)
	got, a, err := l.ResolveException(ctx, e.ID, &outlast.Resolution{Action: outlast.ResolveNoMoney, Payout: outlast.StatusSucceeded,
		Reason: "the bank's statement shows it paid under ref-other", By: "ops@example"})
	if err != nil || got.Resolution.Payout != outlast.StatusSucceeded || len(got.Resolution.Moves) != 0 || a.PaidOut != 400 {
		t.Fatalf("resolving with the payout settled = %+v, %+v, %v; want it succeeded, paid_out 400, no exception moves", got, a, err)
	}
	if settled, _, _ := l.Payout(ctx, p.ID); settled.Status != outlast.StatusSucceeded || settled.PartnerRef != dispatchedRef(p) {
		t.Fatalf("payout after the resolution = %+v, want succeeded under its recorded ref", settled)
	}
	got, _ = resolve(t, l, unknown.ID, outlast.ResolveNoMoney, 0)
	if len(got.Resolution.Moves) != 0 {
		t.Fatalf("no_money moved %+v", got.Resolution.Moves)
	}
	WantBalances(t, l, f.Account, 500, 100, 400)
	wantCleanAudit(t, h)
}

// testExceptionFiledOnceConcurrently: eight paths filing the same fact at
// once (webhook, reconciler, reports on several instances) file it once
// and hold its claim once.
func testExceptionFiledOnce(t *testing.T, h *Harness) {
	ctx := context.Background()
	l := h.Ledger
	f := Seed(t, l, "xc", 1000)
	p := MustPayout(t, l, f.Req("k1", 100))
	WantOutcomes(t, Apply(t, l, Note(p, outlast.StatusSucceeded)), outlast.OutcomeApplied)
	e := &outlast.Exception{Key: outlast.ExceptionKey(outlast.ExceptionPaidTwice, p.ID, "ref-2"), Kind: outlast.ExceptionPaidTwice,
		PayoutID: p.ID, AccountID: f.Account, Channel: "tcb", Currency: "EUR", Claim: 100,
		Summary: "tcb paid payout twice", Evidence: []outlast.Evidence{outlast.LedgerEvidence(p)}, FiledBy: outlast.FiledByReport}
	var wg sync.WaitGroup
	var mu sync.Mutex
	filed := 0
	ids := map[int64]bool{}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, ok, err := l.FileException(ctx, e)
			if err != nil {
				t.Errorf("FileException: %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids[got.ID] = true
			if ok {
				filed++
			}
		}()
	}
	wg.Wait()
	if filed != 1 || len(ids) != 1 {
		t.Fatalf("filed %d times under %d ids, want once", filed, len(ids))
	}
	WantBalances(t, l, f.Account, 800, 100, 100)
}

// testExceptionListing: filters, newest first, paging and the open count.
func testExceptionListing(t *testing.T, h *Harness) {
	ctx := context.Background()
	l := h.Ledger
	f := Seed(t, l, "xi", 10_000)
	var es []*outlast.Exception
	for i := range 3 {
		_, e := failedThenPaid(t, l, f, fmt.Sprintf("k%d", i), 10)
		es = append(es, e)
	}
	resolve(t, l, es[0].ID, outlast.ResolveNoMoney, 0)
	list := func(f outlast.ExceptionFilter) []int64 {
		got, err := l.Exceptions(ctx, f)
		if err != nil {
			t.Fatalf("Exceptions(%+v): %v", f, err)
		}
		var ids []int64
		for _, e := range got {
			ids = append(ids, e.ID)
		}
		return ids
	}
	want := func(what string, got []int64, ids ...int64) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(ids) {
			t.Fatalf("%s = %v, want %v", what, got, ids)
		}
	}
	a, b, c := es[0].ID, es[1].ID, es[2].ID
	want("all", list(outlast.ExceptionFilter{AccountID: f.Account}), c, b, a)
	want("open", list(outlast.ExceptionFilter{Open: true, AccountID: f.Account}), c, b)
	want("resolved", list(outlast.ExceptionFilter{Resolved: true, AccountID: f.Account}), a)
	want("by payout", list(outlast.ExceptionFilter{PayoutID: es[1].PayoutID}), b)
	want("by kind", list(outlast.ExceptionFilter{Kind: outlast.ExceptionPaidTwice, AccountID: f.Account}))
	want("page", list(outlast.ExceptionFilter{AccountID: f.Account, Before: c, Limit: 1}), b)
	open, err := l.OpenExceptions(ctx)
	if err != nil || open[outlast.ExceptionPaidButFailed] < 2 {
		t.Fatalf("OpenExceptions = %v, %v; want at least 2 paid_but_failed", open, err)
	}
	got, err := l.Exception(ctx, b)
	if err != nil || got.Key != es[1].Key || len(got.Evidence) != 2 || got.Evidence[1].Says == "" {
		t.Fatalf("Exception(%d) = %+v, %v", b, got, err)
	}
}

// wantMoves checks a resolution's journal moves, by bucket.
func wantMoves(t *testing.T, r *outlast.Resolution, want map[outlast.Bucket]int64) {
	t.Helper()
	got := map[outlast.Bucket]int64{}
	for _, m := range r.Moves {
		got[m.Bucket] += m.Amount
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("resolution moves %v, want %v", got, want)
	}
}

// auditOf is the implementation's audit report, or nil without one.
func auditOf(t *testing.T, h *Harness) *outlast.LedgerReport {
	t.Helper()
	if h.Auditor == nil {
		return nil
	}
	rep, err := h.Auditor.AuditLedger(context.Background())
	if err != nil {
		t.Fatalf("AuditLedger: %v", err)
	}
	return rep
}

// hasProblem reports whether one of rep's problems contains s.
func hasProblem(rep *outlast.LedgerReport, s string) bool {
	for _, p := range rep.Problems {
		if strings.Contains(p, s) {
			return true
		}
	}
	return false
}
