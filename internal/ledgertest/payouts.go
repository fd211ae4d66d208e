package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outlast/outlast"
)

func testPayoutHappyPath(t *testing.T, h *Harness) {
	ctx := context.Background()
	l := h.Ledger
	f := Seed(t, l, "h", 1000)
	p := MustPayout(t, l, f.Req("k1", 300))
	if p.Status != outlast.StatusPending || p.Version != 1 || p.Channel != "tcb" || p.Amount != 300 || p.ClientID != f.Client {
		t.Fatalf("CreatePayout = %+v, want pending v1 via tcb for 300", p)
	}
	WantBalances(t, l, f.Account, 700, 300, 0)
	got, _, err := l.Payout(ctx, p.ID)
	if err != nil {
		t.Fatalf("Payout(%q): %v", p.ID, err)
	}
	if got.ID != p.ID || got.Destination != p.Destination || !got.CreatedAt.Equal(p.CreatedAt) || got.IdempotencyKey != "k1" {
		t.Fatalf("Payout(%q) = %+v, want %+v", p.ID, got, p)
	}
	// Queued for dispatch, never tried.
	ds, err := l.ClaimDispatches(ctx, 10, time.Minute)
	if err != nil || len(ds) != 1 || ds[0].Payout.ID != p.ID || ds[0].Attempts != 0 || ds[0].Payout.Amount != 300 {
		t.Fatalf("ClaimDispatches = %v, %v; want %s with 0 attempts", ds, err, p.ID)
	}
	_, _, err = l.Payout(ctx, "nope")
	WantCode(t, "Payout(unknown)", err, outlast.ENOTFOUND)
	wantCleanAudit(t, h)
}

func testPayoutIdempotentReplay(t *testing.T, h *Harness) {
	l := h.Ledger
	f := Seed(t, l, "r", 1000)
	p := MustPayout(t, l, f.Req("k1", 300))
	req := f.Req("k1", 300)
	req.Channel = "acb" // the router may choose differently on a retry
	again, created, err := l.CreatePayout(context.Background(), req)
	if err != nil || created || again.ID != p.ID || again.Channel != "tcb" {
		t.Fatalf("replay = %+v, created %v, %v; want payout %s via tcb, not created", again, created, err, p.ID)
	}
	WantBalances(t, l, f.Account, 700, 300, 0)
}

func testPayoutIdempotencyMismatch(t *testing.T, h *Harness) {
	l := h.Ledger
	f := Seed(t, l, "m", 1000)
	p := MustPayout(t, l, f.Req("k1", 300))
	_, _, err := l.CreatePayout(context.Background(), f.Req("k1", 301))
	WantCode(t, "CreatePayout(same key, other amount)", err, outlast.EIDEMPOTENCY)
	WantBalances(t, l, f.Account, 700, 300, 0)
	wantPayouts(t, l, f.Client, p.ID)
}

func testPayoutConcurrentSameKey(t *testing.T, h *Harness) {
	l := h.Ledger
	f := Seed(t, l, "s", 1000)
	const n = 20
	var wg sync.WaitGroup
	ids := make([]string, n)
	created := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			var p *outlast.Payout
			p, created[i], errs[i] = l.CreatePayout(context.Background(), f.Req("same", 100))
			if p != nil {
				ids[i] = p.ID
			}
		})
	}
	wg.Wait()
	creations := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("CreatePayout #%d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("CreatePayout #%d = %s, want %s", i, ids[i], ids[0])
		}
		if created[i] {
			creations++
		}
	}
	if creations != 1 {
		t.Fatalf("%d of %d concurrent requests created a payout, want exactly 1", creations, n)
	}
	WantBalances(t, l, f.Account, 900, 100, 0)
	wantCleanAudit(t, h)
}

func testPayoutConcurrentDrain(t *testing.T, h *Harness) {
	const funded, amount, n = 1000, 30, 50
	l := h.Ledger
	f := Seed(t, l, "d", funded)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, insufficient := 0, 0
	for i := range n {
		wg.Go(func() {
			_, _, err := l.CreatePayout(context.Background(), f.Req(fmt.Sprintf("k%d", i), amount))
			mu.Lock()
			defer mu.Unlock()
			switch outlast.ErrorCode(err) {
			case "":
				ok++
			case outlast.EINSUFFICIENT:
				insufficient++
			default:
				t.Errorf("CreatePayout: %v", err)
			}
		})
	}
	wg.Wait()
	if want := funded / amount; ok != want || insufficient != n-want {
		t.Fatalf("%d succeeded and %d were refused, want %d and %d", ok, insufficient, want, n-want)
	}
	WantBalances(t, l, f.Account, funded%amount, funded/amount*amount, 0)
	wantCleanAudit(t, h)
}

func testPayoutRejections(t *testing.T, h *Harness) {
	ctx := context.Background()
	l := h.Ledger
	f := Seed(t, l, "x", 100)
	other := Seed(t, l, "other", 1000)

	_, _, err := l.CreatePayout(ctx, f.Req("k1", 101))
	WantCode(t, "CreatePayout(too much)", err, outlast.EINSUFFICIENT)

	req := f.Req("k2", 10)
	req.AccountID = other.Account
	_, _, err = l.CreatePayout(ctx, req)
	WantCode(t, "CreatePayout(other client's account)", err, outlast.EVALIDATION)
	if !strings.Contains(outlast.ErrorMessage(err), "unknown account") {
		t.Fatalf("message = %q, want it to say unknown account", outlast.ErrorMessage(err))
	}
	req.AccountID = "missing"
	_, _, err = l.CreatePayout(ctx, req)
	if outlast.ErrorMessage(err) != fmt.Sprintf("unknown account %q", "missing") {
		t.Fatalf("message for a missing account = %q, want the same answer as for another client's", outlast.ErrorMessage(err))
	}

	req = f.Req("k3", 10)
	req.Currency = "USD"
	_, _, err = l.CreatePayout(ctx, req)
	WantCode(t, "CreatePayout(currency mismatch)", err, outlast.EVALIDATION)

	req = f.Req("k4", 10)
	req.Destination = "bad\x00dest"
	_, _, err = l.CreatePayout(ctx, req)
	WantCode(t, "CreatePayout(NUL in destination)", err, outlast.EVALIDATION)

	_, _, err = l.CreatePayout(ctx, f.Req("", 10))
	WantCode(t, "CreatePayout(no key)", err, outlast.EINVALID)

	if _, err := l.SetAccountFlags(ctx, f.Account, outlast.AccountFlags{PayoutsDisabled: true}); err != nil {
		t.Fatal(err)
	}
	_, _, err = l.CreatePayout(ctx, f.Req("k5", 10))
	WantCode(t, "CreatePayout(payouts disabled)", err, outlast.EVALIDATION)

	WantBalances(t, l, f.Account, 100, 0, 0)
	WantBalances(t, l, other.Account, 1000, 0, 0)
	wantPayouts(t, l, f.Client)
	wantPayouts(t, l, other.Client)
	wantNoDispatches(t, l, "after refused payouts")
}

func testPayoutDailyLimit(t *testing.T, h *Harness) {
	ctx := context.Background()
	clk := needClock(t, h)
	l := h.Ledger
	f := Seed(t, l, "l", 1000)
	if _, err := l.SetAccountFlags(ctx, f.Account, outlast.AccountFlags{DailyLimit: 100}); err != nil {
		t.Fatal(err)
	}
	p := MustPayout(t, l, f.Req("k1", 60))
	_, _, err := l.CreatePayout(ctx, f.Req("k2", 41))
	WantCode(t, "CreatePayout(over daily limit)", err, outlast.EVALIDATION)
	// A failed payout no longer counts against the limit.
	n := Note(p, outlast.StatusFailed)
	WantOutcomes(t, Apply(t, l, n), outlast.OutcomeApplied)
	MustPayout(t, l, f.Req("k3", 100))
	clk.Advance(24 * time.Hour)
	MustPayout(t, l, f.Req("k4", 100))
	wantCleanAudit(t, h)
}

func testPagination(t *testing.T, h *Harness) {
	ctx := context.Background()
	l := h.Ledger
	f := Seed(t, l, "p", 10000)
	g := Seed(t, l, "q", 10000)
	var ids []string
	for i := range 7 {
		ids = append(ids, MustPayout(t, l, f.Req(fmt.Sprintf("k%d", i), 10)).ID)
	}
	MustPayout(t, l, g.Req("other", 10))
	ps, n := pages(t, l, outlast.PayoutFilter{ClientID: f.Client, Limit: 3})
	if n != 3 {
		t.Fatalf("7 payouts came in %d pages of at most 3, want 3", n)
	}
	// Newest first by id: UUIDv7 orders by millisecond, and payouts made
	// within one millisecond in random order, so compare with sorted ids.
	want := slices.Sorted(slices.Values(ids))
	slices.Reverse(want)
	if got := payoutIDs(ps); !slices.Equal(got, want) {
		t.Fatalf("Payouts pages = %v, want %v", got, want)
	}
	// A cursor holds its place while payouts are created: the pages after
	// it go on where the first one ended.
	first, cursor, err := l.Payouts(ctx, outlast.PayoutFilter{ClientID: f.Client, Limit: 3})
	if err != nil || len(first) != 3 || cursor == "" {
		t.Fatalf("Payouts(first page) = %d payouts, cursor %q, %v; want 3 and a cursor", len(first), cursor, err)
	}
	MustPayout(t, l, f.Req("k7", 10))
	rest, _ := pages(t, l, outlast.PayoutFilter{ClientID: f.Client, Limit: 3, Cursor: cursor})
	if got := payoutIDs(append(first, rest...)); !slices.Equal(got, want) {
		t.Fatalf("Payouts pages with a payout created between them = %v, want %v", got, want)
	}
	if _, err := l.MarkDispatched(ctx, ids[2], "tcb", "r"); err != nil {
		t.Fatal(err)
	}
	ps, next, err := l.Payouts(ctx, outlast.PayoutFilter{ClientID: f.Client, AccountID: f.Account, Status: outlast.StatusDispatched})
	if err != nil || len(ps) != 1 || ps[0].ID != ids[2] || next != "" {
		t.Fatalf("Payouts(dispatched) = %v, %q, %v; want only %s", ps, next, err, ids[2])
	}
	ps, _, err = l.Payouts(ctx, outlast.PayoutFilter{ClientID: f.Client, AccountID: g.Account})
	if err != nil || len(ps) != 0 {
		t.Fatalf("Payouts(other client's account) = %v, %v; want none", ps, err)
	}
	_, _, err = l.Payouts(ctx, outlast.PayoutFilter{ClientID: f.Client, Cursor: "!!"})
	WantCode(t, "Payouts(bad cursor)", err, outlast.EINVALID)
	_, _, err = l.Payouts(ctx, outlast.PayoutFilter{})
	WantCode(t, "Payouts(no client)", err, outlast.EINVALID)
	_, _, err = l.Payouts(ctx, outlast.PayoutFilter{ClientID: f.Client, Status: "done"})
	WantCode(t, "Payouts(unknown status)", err, outlast.EVALIDATION)
	if h.Auditor != nil {
		wantEachPayout(t, h.Auditor, 9)
	}
}

// wantEachPayout checks that EachPayout visits n payouts in id order and
// stops at fn's first error.
func wantEachPayout(t *testing.T, a outlast.Auditor, n int) {
	t.Helper()
	ctx := context.Background()
	var each []string
	if err := a.EachPayout(ctx, func(p *outlast.Payout) error { each = append(each, p.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(each) != n {
		t.Fatalf("EachPayout visited %d, want %d", len(each), n)
	}
	for i := 1; i < len(each); i++ {
		if each[i-1] >= each[i] {
			t.Fatalf("EachPayout order %v, want ascending ids", each)
		}
	}
	stop := errors.New("stop")
	calls := 0
	if err := a.EachPayout(ctx, func(*outlast.Payout) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("EachPayout with a failing fn = %v after %d calls, want stop after 1", err, calls)
	}
}

// pages reads every page of f and returns the payouts in order and how
// many pages held them.
func pages(t *testing.T, l outlast.PayoutService, f outlast.PayoutFilter) ([]*outlast.Payout, int) {
	t.Helper()
	var all []*outlast.Payout
	for page := 0; ; page++ {
		ps, next, err := l.Payouts(context.Background(), f)
		if err != nil {
			t.Fatalf("Payouts page %d: %v", page, err)
		}
		all = append(all, ps...)
		if next == "" {
			return all, page + 1
		}
		f.Cursor = next
		if page > 1000 {
			t.Fatal("Payouts never ends")
		}
	}
}

// wantPayouts checks that client has exactly the payouts ids, newest
// first.
func wantPayouts(t *testing.T, l outlast.PayoutService, client string, ids ...string) {
	t.Helper()
	ps, _ := pages(t, l, outlast.PayoutFilter{ClientID: client})
	want := slices.Sorted(slices.Values(ids))
	slices.Reverse(want)
	if got := payoutIDs(ps); !slices.Equal(got, want) {
		t.Fatalf("Payouts(%s) = %v, want %v", client, got, want)
	}
}

func payoutIDs(ps []*outlast.Payout) []string {
	ids := make([]string, len(ps))
	for i, p := range ps {
		ids[i] = p.ID
	}
	return ids
}
