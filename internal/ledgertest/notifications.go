package ledgertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outlast/outlast"
)

func testNotificationsLifecycle(t *testing.T, h *Harness) {
	l := h.Ledger
	f := Seed(t, l, "n", 1000)
	p := MustPayout(t, l, f.Req("k1", 400))
	dispatched := Note(p, outlast.StatusDispatched)
	rs := Apply(t, l, dispatched)
	WantOutcomes(t, rs, outlast.OutcomeApplied)
	if rs[0].Payout.Status != outlast.StatusDispatched || rs[0].Payout.PartnerRef != dispatched.PartnerRef || rs[0].Payout.Version != 2 {
		t.Fatalf("after dispatched: %+v, want dispatched v2 with partner ref", rs[0].Payout)
	}
	wantNoDispatches(t, l, "after dispatched (the partner has it)")
	WantBalances(t, l, f.Account, 600, 400, 0)
	WantOutcomes(t, Apply(t, l, dispatched), outlast.OutcomeDuplicate)

	succeeded := Note(p, outlast.StatusSucceeded)
	succeeded.PartnerRef = ""
	rs = Apply(t, l, succeeded)
	WantOutcomes(t, rs, outlast.OutcomeApplied)
	if rs[0].Payout.Status != outlast.StatusSucceeded || rs[0].Payout.PartnerRef != dispatched.PartnerRef {
		t.Fatalf("after succeeded: %+v, want succeeded keeping partner ref %s", rs[0].Payout, dispatched.PartnerRef)
	}
	WantBalances(t, l, f.Account, 600, 0, 400)

	late := Note(p, outlast.StatusDispatched)
	conflict := Note(p, outlast.StatusFailed)
	rs = Apply(t, l, late, conflict, succeeded)
	WantOutcomes(t, rs, outlast.OutcomeStale, outlast.OutcomeConflict, outlast.OutcomeDuplicate)
	if rs[1].Payout.Status != outlast.StatusSucceeded || rs[1].Reason == "" {
		t.Fatalf("conflict result = %+v, want the payout still succeeded and a reason", rs[1])
	}
	// Stale and conflicting reports are remembered like applied ones.
	WantOutcomes(t, Apply(t, l, late, conflict), outlast.OutcomeDuplicate, outlast.OutcomeDuplicate)
	got, _, err := l.Payout(context.Background(), p.ID)
	if err != nil || got.Status != outlast.StatusSucceeded || got.Version != 3 {
		t.Fatalf("Payout = %+v, %v; want succeeded v3", got, err)
	}
	WantBalances(t, l, f.Account, 600, 0, 400)
	if h.Auditor == nil {
		return
	}
	rep, err := h.Auditor.AuditLedger(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], p.ID) || !strings.Contains(rep.Problems[0], "failed") {
		t.Fatalf("audit problems = %q, want exactly the conflicting report on %s", rep.Problems, p.ID)
	}
}

func testNotificationsFailed(t *testing.T, h *Harness) {
	l := h.Ledger
	f := Seed(t, l, "f", 1000)
	p := MustPayout(t, l, f.Req("k1", 250))
	n := Note(p, outlast.StatusFailed)
	n.Reason = "account closed"
	rs := Apply(t, l, n)
	WantOutcomes(t, rs, outlast.OutcomeApplied)
	if rs[0].Payout.FailureReason != "account closed" {
		t.Fatalf("FailureReason = %q, want %q", rs[0].Payout.FailureReason, "account closed")
	}
	WantBalances(t, l, f.Account, 1000, 0, 0)
	wantNoDispatches(t, l, "after failed")
	// A late success: the bank paid after all. The released hold is held
	// again under the exception it files (see ExceptionLateSuccess...).
	WantOutcomes(t, Apply(t, l, Note(p, outlast.StatusSucceeded)), outlast.OutcomeConflict)
	WantBalances(t, l, f.Account, 750, 250, 0)
}

// testNotificationsPartnerRef: a report naming another partner ref than
// the one recorded is the partner's record of another payment — perhaps a
// second one — so it never overwrites the ref or moves money: it is a
// conflict the audit lists (issue 7, defect 2).
func testNotificationsPartnerRef(t *testing.T, h *Harness) {
	l := h.Ledger
	f := Seed(t, l, "r", 1000)
	p := MustPayout(t, l, f.Req("k1", 300))
	dispatched := Note(p, outlast.StatusDispatched)
	WantOutcomes(t, Apply(t, l, dispatched), outlast.OutcomeApplied)

	other := Note(p, outlast.StatusSucceeded)
	other.PartnerRef = "ref-second-payment"
	staleOther := Note(p, outlast.StatusDispatched)
	staleOther.PartnerRef = "ref-second-payment"
	rs := Apply(t, l, other, staleOther)
	WantOutcomes(t, rs, outlast.OutcomeConflict, outlast.OutcomeConflict)
	for i, r := range rs {
		if r.Payout.Status != outlast.StatusDispatched || r.Payout.PartnerRef != dispatched.PartnerRef ||
			!strings.Contains(r.Reason, dispatched.PartnerRef) || !strings.Contains(r.Reason, "ref-second-payment") {
			t.Fatalf("result %d = %+v (payout %+v); want the payout still dispatched under %s and a reason naming both refs",
				i, r, r.Payout, dispatched.PartnerRef)
		}
	}
	WantBalances(t, l, f.Account, 700, 300, 0)
	WantOutcomes(t, Apply(t, l, other), outlast.OutcomeDuplicate)

	// The recorded ref, or none, still settles it.
	same := Note(p, outlast.StatusSucceeded)
	WantOutcomes(t, Apply(t, l, same), outlast.OutcomeApplied)
	WantBalances(t, l, f.Account, 700, 0, 300)
	got, _, err := l.Payout(context.Background(), p.ID)
	if err != nil || got.PartnerRef != dispatched.PartnerRef {
		t.Fatalf("Payout = %+v, %v; want partner ref %s kept", got, err, dispatched.PartnerRef)
	}
	if h.Auditor == nil {
		return
	}
	rep, err := h.Auditor.AuditLedger(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 {
		t.Fatalf("audit problems = %q, want the one exception the two reports under another ref filed", rep.Problems)
	}
	for _, pr := range rep.Problems {
		if !strings.Contains(pr, p.ID) || !strings.Contains(pr, "ref-second-payment") {
			t.Fatalf("audit problem %q, want it to name %s and the other ref", pr, p.ID)
		}
	}
}

// testNotificationsRejected: rejected is not seen. Each rejected report
// says why; delivered again, here or within one batch, it is judged again
// instead of being acked as a duplicate, and once it can apply it does.
func testNotificationsRejected(t *testing.T, h *Harness) {
	l := h.Ledger
	f := Seed(t, l, "j", 1000)
	p := MustPayout(t, l, f.Req("k1", 100))
	unknown := Note(&outlast.Payout{ID: "00000000-0000-7000-8000-000000000000"}, outlast.StatusSucceeded)
	wrongChannel := Note(p, outlast.StatusSucceeded)
	wrongChannel.Channel = "acb"
	invalid := Note(p, outlast.StatusSucceeded)
	invalid.OccurredAt = time.Time{}
	rs := Apply(t, l, unknown, wrongChannel, invalid)
	WantOutcomes(t, rs, outlast.OutcomeRejected, outlast.OutcomeRejected, outlast.OutcomeRejected)
	for i, want := range []string{"unknown payout", "channel mismatch", "occurred_at"} {
		if !strings.Contains(rs[i].Reason, want) {
			t.Fatalf("result %d reason = %q, want it to mention %q", i, rs[i].Reason, want)
		}
	}
	if rs[0].Payout != nil || rs[1].Payout == nil {
		t.Fatalf("payouts in results = %v, %v; want nil for the unknown one only", rs[0].Payout, rs[1].Payout)
	}
	// acb's success is rejected, yet it is evidence that acb paid: an
	// exception holds its claim (see ExceptionPartnerRefNoMoney).
	other := rs[1].Filed
	if other == nil || other.Kind != outlast.ExceptionPaidByOtherChannel || rs[0].Filed != nil || rs[2].Filed != nil {
		t.Fatalf("filed %v, %v, %v; want only acb's success to file paid_by_other_channel", rs[0].Filed, rs[1].Filed, rs[2].Filed)
	}
	WantBalances(t, l, f.Account, 800, 200, 0)

	rs = Apply(t, l, unknown, wrongChannel, unknown, invalid, wrongChannel)
	WantOutcomes(t, rs, outlast.OutcomeRejected, outlast.OutcomeRejected, outlast.OutcomeRejected,
		outlast.OutcomeRejected, outlast.OutcomeRejected)
	WantBalances(t, l, f.Account, 800, 200, 0)

	// The same event, now valid, applies: its rejection left no trace.
	fixed := *invalid
	fixed.OccurredAt = time.Now().UTC()
	rs = Apply(t, l, &fixed, &fixed)
	WantOutcomes(t, rs, outlast.OutcomeApplied, outlast.OutcomeDuplicate)
	if rs[0].Payout.Status != outlast.StatusSucceeded {
		t.Fatalf("payout after the fixed report = %s, want succeeded", rs[0].Payout.Status)
	}
	WantBalances(t, l, f.Account, 800, 100, 100)
	resolve(t, l, other.ID, outlast.ResolveNoMoney, 0) // acb reversed its payment
	WantBalances(t, l, f.Account, 900, 0, 100)
	wantCleanAudit(t, h)
}

// testNotificationBeforeItsPayout: a report on a payout this ledger does
// not have yet (a partner faster than our commit) is rejected as often as
// it comes, and applies once the payout exists.
func testNotificationBeforeItsPayout(t *testing.T, h *Harness) {
	if h.SetNewID == nil {
		t.Skip("the harness has no SetNewID")
	}
	l := h.Ledger
	f := Seed(t, l, "e", 1000)
	p := MustPayout(t, l, f.Req("k1", 100))
	const id = "00000000-0000-7000-8000-000000000000"
	early := Note(&outlast.Payout{ID: id}, outlast.StatusSucceeded)
	WantOutcomes(t, Apply(t, l, early), outlast.OutcomeRejected)
	WantOutcomes(t, Apply(t, l, early, early), outlast.OutcomeRejected, outlast.OutcomeRejected)
	h.SetNewID(func() string { return id })
	late := MustPayout(t, l, f.Req("k2", 200))
	if late.ID != id {
		t.Fatalf("CreatePayout id = %q, want %q", late.ID, id)
	}
	rs := Apply(t, l, early, early)
	WantOutcomes(t, rs, outlast.OutcomeApplied, outlast.OutcomeDuplicate)
	if rs[0].Payout.Status != outlast.StatusSucceeded || rs[1].Payout.Status != outlast.StatusSucceeded {
		t.Fatalf("late payout = %s, %s; want succeeded in both results", rs[0].Payout.Status, rs[1].Payout.Status)
	}
	WantBalances(t, l, f.Account, 700, 100, 200)
	if got, _, err := l.Payout(context.Background(), p.ID); err != nil || got.Status != outlast.StatusPending {
		t.Fatalf("Payout(%q) = %+v, %v; want the other payout still pending", p.ID, got, err)
	}
	wantCleanAudit(t, h)
}

func testNotificationsBatchDuplicates(t *testing.T, h *Harness) {
	l := h.Ledger
	f := Seed(t, l, "b", 1000)
	p1 := MustPayout(t, l, f.Req("k1", 100))
	p2 := MustPayout(t, l, f.Req("k2", 200))
	s1 := Note(p1, outlast.StatusSucceeded)
	d2 := Note(p2, outlast.StatusDispatched)
	s2 := Note(p2, outlast.StatusSucceeded)
	dupe := *s1
	rs := Apply(t, l, d2, s1, &dupe, s2, s1)
	WantOutcomes(t, rs, outlast.OutcomeApplied, outlast.OutcomeApplied, outlast.OutcomeDuplicate,
		outlast.OutcomeApplied, outlast.OutcomeDuplicate)
	WantBalances(t, l, f.Account, 700, 0, 300)
	wantCleanAudit(t, h)
}

// testNotificationsConcurrent applies overlapping batches from several
// goroutines, as several committers would: every payout ends succeeded
// exactly once and nothing deadlocks for good.
func testNotificationsConcurrent(t *testing.T, h *Harness) {
	const payouts, workers = 40, 4
	l := h.Ledger
	fs := []Fixture{Seed(t, l, "c1", 10000), Seed(t, l, "c2", 10000)}
	var ns []*outlast.Notification
	for i := range payouts {
		p := MustPayout(t, l, fs[i%2].Req(fmt.Sprintf("k%d", i), 100))
		ns = append(ns, Note(p, outlast.StatusDispatched), Note(p, outlast.StatusSucceeded))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	applied := 0
	for w := range workers {
		batch := append([]*outlast.Notification(nil), ns...)
		rand.New(rand.NewPCG(uint64(w), 1)).Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		wg.Go(func() {
			for attempt := 0; ; attempt++ {
				rs, err := l.Apply(context.Background(), outlast.FromLog, batch)
				if err != nil && attempt < 20 && outlast.ErrorCode(err) == outlast.EUNAVAILABLE {
					continue // a deadlock victim; the batch is retried whole
				}
				if err != nil {
					t.Errorf("Apply: %v", err)
					return
				}
				mu.Lock()
				for _, r := range rs {
					if r.Outcome == outlast.OutcomeApplied {
						applied++
					}
				}
				mu.Unlock()
				return
			}
		})
	}
	wg.Wait()
	if applied < payouts || applied > 2*payouts {
		t.Fatalf("applied %d, want between %d and %d", applied, payouts, 2*payouts)
	}
	WantBalances(t, l, fs[0].Account, 10000-2000, 0, 2000)
	WantBalances(t, l, fs[1].Account, 10000-2000, 0, 2000)
	wantCleanAudit(t, h)
}
