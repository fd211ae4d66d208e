package ledgertest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outlast/outlast"
)

func testOutbox(t *testing.T, h *Harness) {
	ctx := context.Background()
	clk := needClock(t, h)
	l := h.Ledger
	f := Seed(t, l, "o", 1000)
	p1 := MustPayout(t, l, f.Req("k1", 100))
	clk.Advance(time.Millisecond)
	p2 := MustPayout(t, l, f.Req("k2", 100))

	ds, err := l.ClaimDispatches(ctx, 10, time.Minute)
	if err != nil || len(ds) != 2 || ds[0].Payout.ID != p1.ID || ds[1].Payout.ID != p2.ID || ds[0].Attempts != 0 {
		t.Fatalf("ClaimDispatches = %v, %v; want p1, p2 with 0 attempts", ds, err)
	}
	if ds, err := l.ClaimDispatches(ctx, 10, time.Minute); err != nil || len(ds) != 0 {
		t.Fatalf("ClaimDispatches during the lease = %d, %v; want none", len(ds), err)
	}
	if err := l.RetryDispatch(ctx, p1.ID, clk.Now().Add(2*time.Minute), "timeout"); err != nil {
		t.Fatalf("RetryDispatch: %v", err)
	}
	WantCode(t, "RetryDispatch(unknown)", l.RetryDispatch(ctx, "nope", clk.Now(), "x"), outlast.ENOTFOUND)
	clk.Advance(time.Minute + time.Second) // p2's lease is over, p1 waits for notBefore
	ds, err = l.ClaimDispatches(ctx, 10, time.Minute)
	if err != nil || len(ds) != 1 || ds[0].Payout.ID != p2.ID {
		t.Fatalf("ClaimDispatches after the lease = %v, %v; want p2 only", ds, err)
	}
	clk.Advance(time.Minute)
	ds, err = l.ClaimDispatches(ctx, 1, time.Minute)
	if err != nil || len(ds) != 1 || ds[0].Payout.ID != p1.ID || ds[0].Attempts != 1 {
		t.Fatalf("ClaimDispatches after notBefore = %v, %v; want p1 with 1 attempt", ds, err)
	}

	got, err := l.MarkDispatched(ctx, p1.ID, "acb", "ref-1")
	if err != nil || got.Status != outlast.StatusDispatched || got.Channel != "acb" || got.PartnerRef != "ref-1" || got.Version != 2 {
		t.Fatalf("MarkDispatched = %+v, %v; want dispatched via acb ref-1 v2", got, err)
	}
	again, err := l.MarkDispatched(ctx, p1.ID, "acb", "ref-1")
	if err != nil || again.Version != 2 {
		t.Fatalf("MarkDispatched again = %+v, %v; want unchanged", again, err)
	}
	_, err = l.MarkDispatched(ctx, "nope", "acb", "r")
	WantCode(t, "MarkDispatched(unknown)", err, outlast.ENOTFOUND)
	_, err = l.MarkDispatched(ctx, p2.ID, "a b", "r")
	WantCode(t, "MarkDispatched(bad channel)", err, outlast.EVALIDATION)
	// A retry for a payout already handed over is a no-op.
	if err := l.RetryDispatch(ctx, p1.ID, clk.Now(), "late"); err != nil {
		t.Fatalf("RetryDispatch(dispatched): %v", err)
	}
	clk.Advance(time.Hour)
	ds, err = l.ClaimDispatches(ctx, 10, time.Minute)
	if err != nil || len(ds) != 1 || ds[0].Payout.ID != p2.ID {
		t.Fatalf("ClaimDispatches = %v, %v; want only p2 left", ds, err)
	}
	WantBalances(t, l, f.Account, 800, 200, 0)
	wantCleanAudit(t, h)
}

func testOutboxReject(t *testing.T, h *Harness) {
	ctx := context.Background()
	l := h.Ledger
	f := Seed(t, l, "rj", 1000)
	p := MustPayout(t, l, f.Req("k1", 300))
	got, err := l.RejectDispatch(ctx, p.ID, "tcb", "invalid destination", time.Time{})
	if err != nil || got.Status != outlast.StatusFailed || got.FailureReason != "invalid destination" {
		t.Fatalf("RejectDispatch = %+v, %v; want failed with reason", got, err)
	}
	WantBalances(t, l, f.Account, 1000, 0, 0)
	again, err := l.RejectDispatch(ctx, p.ID, "tcb", "again", time.Time{})
	if err != nil || again.Version != got.Version || again.FailureReason != "invalid destination" {
		t.Fatalf("RejectDispatch(failed) = %+v, %v; want unchanged", again, err)
	}
	wantNoDispatches(t, l, "after RejectDispatch")
	p2 := MustPayout(t, l, f.Req("k2", 300))
	if _, err := l.MarkDispatched(ctx, p2.ID, "tcb", "ref"); err != nil {
		t.Fatal(err)
	}
	_, err = l.RejectDispatch(ctx, p2.ID, "tcb", "late", time.Time{})
	WantCode(t, "RejectDispatch(dispatched)", err, outlast.ECONFLICT)
	_, err = l.RejectDispatch(ctx, "nope", "tcb", "x", time.Time{})
	WantCode(t, "RejectDispatch(unknown)", err, outlast.ENOTFOUND)
	p3 := MustPayout(t, l, f.Req("k3", 100))
	got, err = l.RejectDispatch(ctx, p3.ID, "acb", "", time.Time{})
	if err != nil || got.Channel != "acb" || got.FailureReason != "rejected by acb" {
		t.Fatalf("RejectDispatch(no reason) = %+v, %v; want failed by acb, rejected by acb", got, err)
	}
	WantBalances(t, l, f.Account, 700, 300, 0)
	wantCleanAudit(t, h)
}

// testOutboxConcurrentClaimers: dispatchers claiming at once never get the
// same row within a lease.
func testOutboxConcurrentClaimers(t *testing.T, h *Harness) {
	const payouts, claimers = 60, 4
	l := h.Ledger
	f := Seed(t, l, "cc", 100000)
	for i := range payouts {
		MustPayout(t, l, f.Req(fmt.Sprintf("k%d", i), 10))
	}
	var mu sync.Mutex
	seen := make(map[string]int)
	claims := 0 // a ledger that hands a payout out twice would never run dry
	var wg sync.WaitGroup
	for range claimers {
		wg.Go(func() {
			for {
				ds, err := l.ClaimDispatches(context.Background(), 5, time.Hour)
				if err != nil {
					t.Errorf("ClaimDispatches: %v", err)
					return
				}
				mu.Lock()
				for _, d := range ds {
					seen[d.Payout.ID]++
				}
				claims += len(ds)
				done := len(ds) == 0 || claims > payouts
				mu.Unlock()
				if done {
					return
				}
			}
		})
	}
	wg.Wait()
	if len(seen) != payouts {
		t.Fatalf("claimed %d distinct payouts, want %d", len(seen), payouts)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("payout %s claimed %d times within one lease", id, n)
		}
	}
}

// testOutboxRejectFenced: a dispatcher whose lease ran out may learn of a
// refusal only after another dispatcher claimed the payout and sent it
// again; failing it then could fail a payout the bank is accepting. Its
// claim is lost, so RejectDispatch refuses; the current claim fails it.
func testOutboxRejectFenced(t *testing.T, h *Harness) {
	ctx := context.Background()
	l, clk := h.Ledger, h.Clock
	f := Seed(t, l, "rf", 1000)
	p := MustPayout(t, l, f.Req("k1", 300))
	first := claimOne(t, l, p.ID)
	clk.Advance(2 * time.Minute) // the first lease runs out
	second := claimOne(t, l, p.ID)
	_, err := l.RejectDispatch(ctx, p.ID, "tcb", "late refusal", first.Claim)
	WantCode(t, "RejectDispatch(lost claim)", err, outlast.ECONFLICT)
	WantBalances(t, l, f.Account, 700, 300, 0)

	// Rescheduled since (a retry recorded): the claim is lost too.
	if err := l.RetryDispatch(ctx, p.ID, clk.Now(), "ambiguous"); err != nil {
		t.Fatal(err)
	}
	_, err = l.RejectDispatch(ctx, p.ID, "tcb", "late refusal", second.Claim)
	WantCode(t, "RejectDispatch(rescheduled)", err, outlast.ECONFLICT)
	WantBalances(t, l, f.Account, 700, 300, 0)

	third := claimOne(t, l, p.ID)
	got, err := l.RejectDispatch(ctx, p.ID, "tcb", "invalid destination", third.Claim)
	if err != nil || got.Status != outlast.StatusFailed {
		t.Fatalf("RejectDispatch(current claim) = %+v, %v; want failed", got, err)
	}
	WantBalances(t, l, f.Account, 1000, 0, 0)
	wantCleanAudit(t, h)
}

// claimOne claims the outbox and fails t unless it gets exactly the
// payout id, with a claim.
func claimOne(t *testing.T, l outlast.Ledger, id string) *outlast.Dispatch {
	t.Helper()
	ds, err := l.ClaimDispatches(context.Background(), 10, time.Minute)
	if err != nil || len(ds) != 1 || ds[0].Payout.ID != id || ds[0].Claim.IsZero() {
		t.Fatalf("ClaimDispatches = %v, %v; want %s with its claim", ds, err, id)
	}
	return ds[0]
}

// testOutboxReroute: a payout its channel definitively refused goes to
// another channel instead of failing: still pending with its amount held,
// due again at once with the refusing channel remembered, and never sent
// back to a channel that refused it.
func testOutboxReroute(t *testing.T, h *Harness) {
	ctx := context.Background()
	needClock(t, h)
	l := h.Ledger
	f := Seed(t, l, "rr", 1000)
	p := MustPayout(t, l, f.Req("k1", 300)) // on tcb
	first := claimOne(t, l, p.ID)
	if len(first.Refused) != 0 {
		t.Fatalf("Refused of a new payout = %q, want none", first.Refused)
	}
	if err := l.RetryDispatch(ctx, p.ID, h.Clock.Now(), "timeout"); err != nil {
		t.Fatal(err)
	}
	first = claimOne(t, l, p.ID) // an attempt made on tcb
	got, err := l.RerouteDispatch(ctx, p.ID, "tcb", "acb", "refused by tcb: invalid destination", first.Claim)
	if err != nil || got.Status != outlast.StatusPending || got.Channel != "acb" || got.Version != p.Version+1 {
		t.Fatalf("RerouteDispatch = %+v, %v; want pending on acb at version %d", got, err, p.Version+1)
	}
	if read, _, err := l.Payout(ctx, p.ID); err != nil || read.Channel != "acb" || read.Version != got.Version {
		t.Fatalf("Payout after RerouteDispatch = %+v, %v; want on acb at version %d", read, err, got.Version)
	}
	WantBalances(t, l, f.Account, 700, 300, 0)
	second := claimOne(t, l, p.ID) // due at once: the clock has not moved
	if second.Payout.Channel != "acb" || second.Attempts != 0 || !slices.Equal(second.Refused, []string{"tcb"}) {
		t.Fatalf("claim after RerouteDispatch = %+v (refused %q); want on acb, 0 attempts, refused [tcb]", second, second.Refused)
	}

	_, err = l.RerouteDispatch(ctx, p.ID, "acb", "tcb", "x", second.Claim)
	WantCode(t, "RerouteDispatch(back to a refusing channel)", err, outlast.ECONFLICT)
	_, err = l.RerouteDispatch(ctx, p.ID, "vcb", "zcb", "x", second.Claim)
	WantCode(t, "RerouteDispatch(from another channel)", err, outlast.ECONFLICT)
	_, err = l.RerouteDispatch(ctx, p.ID, "acb", "acb", "x", second.Claim)
	WantCode(t, "RerouteDispatch(to itself)", err, outlast.EVALIDATION)
	_, err = l.RerouteDispatch(ctx, p.ID, "acb", "a b", "x", second.Claim)
	WantCode(t, "RerouteDispatch(bad channel)", err, outlast.EVALIDATION)
	_, err = l.RerouteDispatch(ctx, "nope", "acb", "vcb", "x", second.Claim)
	WantCode(t, "RerouteDispatch(unknown)", err, outlast.ENOTFOUND)

	if _, err := l.RerouteDispatch(ctx, p.ID, "acb", "vcb", "refused by acb", second.Claim); err != nil {
		t.Fatalf("RerouteDispatch(acb to vcb): %v", err)
	}
	if third := claimOne(t, l, p.ID); !slices.Equal(third.Refused, []string{"tcb", "acb"}) || third.Payout.Channel != "vcb" {
		t.Fatalf("claim after a second reroute = on %s, refused %q; want on vcb, refused [tcb acb]", third.Payout.Channel, third.Refused)
	}
	wantRerouteRefusedWhenNotPending(t, h, f, p)
}

// wantRerouteRefusedWhenNotPending: a payout a partner holds (dispatched),
// or one that is final, is never moved to another channel.
func wantRerouteRefusedWhenNotPending(t *testing.T, h *Harness, f Fixture, p *outlast.Payout) {
	t.Helper()
	ctx := context.Background()
	l := h.Ledger
	if _, err := l.MarkDispatched(ctx, p.ID, "vcb", "ref-1"); err != nil {
		t.Fatal(err)
	}
	_, err := l.RerouteDispatch(ctx, p.ID, "vcb", "zcb", "late", time.Time{})
	WantCode(t, "RerouteDispatch(dispatched)", err, outlast.ECONFLICT)
	failed := MustPayout(t, l, f.Req("k2", 100))
	if _, err := l.RejectDispatch(ctx, failed.ID, "tcb", "no", time.Time{}); err != nil {
		t.Fatal(err)
	}
	_, err = l.RerouteDispatch(ctx, failed.ID, "tcb", "acb", "late", time.Time{})
	WantCode(t, "RerouteDispatch(failed)", err, outlast.ECONFLICT)
	if got, _, err := l.Payout(ctx, p.ID); err != nil || got.Status != outlast.StatusDispatched || got.Channel != "vcb" {
		t.Fatalf("Payout = %+v, %v; want dispatched on vcb", got, err)
	}
	WantBalances(t, l, f.Account, 700, 300, 0)
	wantNoDispatches(t, l, "after every payout left pending")
	wantCleanAudit(t, h)
}

// testOutboxRerouteFenced: like a refusal learnt under a lost claim, a
// reroute under one could send elsewhere a payout the first channel is
// accepting from another claim's attempt: it changes nothing. A reroute
// done ends the claim it was done under.
func testOutboxRerouteFenced(t *testing.T, h *Harness) {
	ctx := context.Background()
	clk := needClock(t, h)
	l := h.Ledger
	f := Seed(t, l, "rrf", 1000)
	p := MustPayout(t, l, f.Req("k1", 300))
	first := claimOne(t, l, p.ID)
	clk.Advance(2 * time.Minute) // the first lease runs out
	second := claimOne(t, l, p.ID)
	_, err := l.RerouteDispatch(ctx, p.ID, "tcb", "acb", "late refusal", first.Claim)
	WantCode(t, "RerouteDispatch(lost claim)", err, outlast.ECONFLICT)
	if err := l.RetryDispatch(ctx, p.ID, clk.Now(), "ambiguous"); err != nil {
		t.Fatal(err)
	}
	_, err = l.RerouteDispatch(ctx, p.ID, "tcb", "acb", "late refusal", second.Claim)
	WantCode(t, "RerouteDispatch(rescheduled)", err, outlast.ECONFLICT)
	third := claimOne(t, l, p.ID)
	if got, _, err := l.Payout(ctx, p.ID); err != nil || got.Channel != "tcb" || got.Version != p.Version ||
		len(third.Refused) != 0 || third.Attempts != 1 {
		t.Fatalf("after reroutes under lost claims: payout %+v, %v, claim %+v; want unchanged on tcb", got, err, third)
	}
	WantBalances(t, l, f.Account, 700, 300, 0)

	if _, err := l.RerouteDispatch(ctx, p.ID, "tcb", "acb", "refused by tcb", third.Claim); err != nil {
		t.Fatalf("RerouteDispatch(current claim): %v", err)
	}
	_, err = l.RejectDispatch(ctx, p.ID, "acb", "late", third.Claim)
	WantCode(t, "RejectDispatch(claim of a rerouted payout)", err, outlast.ECONFLICT)
	_, err = l.RerouteDispatch(ctx, p.ID, "acb", "vcb", "late", third.Claim)
	WantCode(t, "RerouteDispatch(claim of a rerouted payout)", err, outlast.ECONFLICT)
	WantBalances(t, l, f.Account, 700, 300, 0)
	wantCleanAudit(t, h)
}
