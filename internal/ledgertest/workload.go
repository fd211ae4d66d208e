package ledgertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
)

// testRandomWorkload runs ~500 random ledger operations and expects every
// account's buckets to be what its payouts say, the outbox to hold exactly
// the pending payouts, and the implementation's own audit, if it has one,
// to agree.
func testRandomWorkload(t *testing.T, h *Harness) {
	ctx := context.Background()
	l := h.Ledger
	rng := rand.New(rand.NewPCG(42, 7))
	fs := []Fixture{Seed(t, l, "w1", 5000), Seed(t, l, "w2", 5000), Seed(t, l, "w3", 0)}
	funded := map[string]int64{fs[0].Account: 5000, fs[1].Account: 5000}
	var ps []*outlast.Payout
	for i := range 500 {
		f := fs[rng.IntN(len(fs))]
		switch op := rng.IntN(10); {
		case op < 4:
			p, created, err := l.CreatePayout(ctx, f.Req(fmt.Sprintf("k%d", rng.IntN(400)), 1+rng.Int64N(300)))
			if err == nil && created {
				ps = append(ps, p)
			} else if c := outlast.ErrorCode(err); err != nil && c != outlast.EINSUFFICIENT && c != outlast.EIDEMPOTENCY &&
				!strings.Contains(outlast.ErrorMessage(err), "are held: exception") {
				t.Fatalf("op %d CreatePayout: %v", i, err)
			}
		case op < 5:
			amount := 1 + rng.Int64N(500)
			if _, _, err := l.FundAccount(ctx, f.Account, amount, fmt.Sprintf("fund-%d", i)); err != nil {
				t.Fatalf("op %d FundAccount: %v", i, err)
			}
			funded[f.Account] += amount
		case len(ps) == 0:
		case op < 8:
			statuses := []outlast.PayoutStatus{outlast.StatusDispatched, outlast.StatusSucceeded, outlast.StatusFailed}
			batch := make([]*outlast.Notification, 1+rng.IntN(5))
			for j := range batch {
				batch[j] = Note(ps[rng.IntN(len(ps))], statuses[rng.IntN(len(statuses))])
			}
			Apply(t, l, batch...)
		case op < 9:
			if _, err := l.MarkDispatched(ctx, ps[rng.IntN(len(ps))].ID, "tcb", "r"); err != nil {
				t.Fatalf("op %d MarkDispatched: %v", i, err)
			}
		default:
			_, err := l.RejectDispatch(ctx, ps[rng.IntN(len(ps))].ID, "tcb", "no", time.Time{})
			if err != nil && outlast.ErrorCode(err) != outlast.ECONFLICT {
				t.Fatalf("op %d RejectDispatch: %v", i, err)
			}
		}
	}
	pending := wantBucketsFromPayouts(t, l, fs, funded, len(ps))
	ds, err := l.ClaimDispatches(ctx, 0, time.Minute)
	if err != nil {
		t.Fatalf("ClaimDispatches: %v", err)
	}
	var queued []string
	for _, d := range ds {
		queued = append(queued, d.Payout.ID)
	}
	if slices.Sort(queued); !slices.Equal(queued, pending) {
		t.Fatalf("outbox holds %v, want the pending payouts %v", queued, pending)
	}
	if h.Auditor == nil {
		return
	}
	rep, err := h.Auditor.AuditLedger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		if !strings.Contains(p, "is open") { // random reports contradict, filing exceptions
			t.Fatalf("audit problem after a random workload: %s", p)
		}
	}
	total := 0
	for _, n := range rep.Payouts {
		total += n
	}
	if rep.Accounts != 3 || total != len(ps) || rep.Outbox != rep.Payouts[outlast.StatusPending] {
		t.Fatalf("audit counts: %d accounts, %v payouts, %d outbox; want 3, %d in total, outbox == pending",
			rep.Accounts, rep.Payouts, rep.Outbox, len(ps))
	}
}

// wantBucketsFromPayouts checks each account of fs against its payouts as
// Payouts lists them — held is what is pending or dispatched and what open
// exceptions hold, paid out what succeeded, funded what was added — and
// that they are n in all. It
// returns the ids of the pending ones, sorted.
func wantBucketsFromPayouts(t *testing.T, l outlast.Ledger, fs []Fixture, funded map[string]int64, n int) []string {
	t.Helper()
	var pending []string
	total := 0
	for _, f := range fs {
		var held, paidOut int64
		ps, _ := pages(t, l, outlast.PayoutFilter{ClientID: f.Client, Limit: outlast.PageLimitMax})
		for _, p := range ps {
			total++
			switch p.Status {
			case outlast.StatusPending:
				pending = append(pending, p.ID)
				held += p.Amount
			case outlast.StatusDispatched:
				held += p.Amount
			case outlast.StatusSucceeded:
				paidOut += p.Amount
			}
		}
		held += ExceptionHolds(t, l, f.Account)
		a := WantBalances(t, l, f.Account, funded[f.Account]-held-paidOut, held, paidOut)
		if a.Funded != funded[f.Account] {
			t.Fatalf("Account(%q) funded = %d, want %d", f.Account, a.Funded, funded[f.Account])
		}
	}
	if total != n {
		t.Fatalf("Payouts lists %d payouts, want %d", total, n)
	}
	slices.Sort(pending)
	return pending
}
