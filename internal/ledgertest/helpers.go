package ledgertest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outlast/outlast"
)

// The helpers below are the suite's, exported so that tests of one
// implementation's own behaviour (the store's durability, inbox and
// audit) set up their ledgers the same way.

// Fixture is one client with one EUR account, as Seed makes them.
type Fixture struct {
	Client, Account string
}

// Seed creates the client "client-"+name, its EUR account "acct-"+name
// and, if funded > 0, funds it.
func Seed(t testing.TB, l outlast.AccountService, name string, funded int64) Fixture {
	t.Helper()
	ctx := context.Background()
	f := Fixture{Client: "client-" + name, Account: "acct-" + name}
	if err := l.CreateClient(ctx, &outlast.Client{ID: f.Client}, keyHash(f.Client)); err != nil {
		t.Fatalf("CreateClient(%q): %v", f.Client, err)
	}
	if err := l.CreateAccount(ctx, &outlast.Account{ID: f.Account, ClientID: f.Client, Currency: "EUR"}); err != nil {
		t.Fatalf("CreateAccount(%q): %v", f.Account, err)
	}
	if funded > 0 {
		if _, _, err := l.FundAccount(ctx, f.Account, funded, "seed-"+name); err != nil {
			t.Fatalf("FundAccount(%q, %d): %v", f.Account, funded, err)
		}
	}
	return f
}

// keyHash is the SHA-256 of a made-up API key for s.
func keyHash(s string) []byte {
	h := sha256.Sum256([]byte("key-" + s))
	return h[:]
}

// Req is a request to pay amount out of f's account via tcb under key.
func (f Fixture) Req(key string, amount int64) *outlast.PayoutRequest {
	return &outlast.PayoutRequest{
		ClientID: f.Client, IdempotencyKey: key, AccountID: f.Account,
		Amount: amount, Currency: "EUR", Destination: "DE89370400440532013000", Channel: "tcb",
	}
}

// MustPayout creates a payout and fails t unless it is a new one.
func MustPayout(t testing.TB, l outlast.PayoutService, req *outlast.PayoutRequest) *outlast.Payout {
	t.Helper()
	p, created, err := l.CreatePayout(context.Background(), req)
	if err != nil || !created {
		t.Fatalf("CreatePayout(%s) = created %v, %v; want created", req.IdempotencyKey, created, err)
	}
	return p
}

// ExceptionHolds is what the open exceptions on account hold of it.
func ExceptionHolds(t testing.TB, l outlast.ExceptionService, account string) int64 {
	t.Helper()
	es, err := l.Exceptions(context.Background(), outlast.ExceptionFilter{Open: true, AccountID: account})
	if err != nil {
		t.Fatalf("Exceptions: %v", err)
	}
	var held int64
	for _, e := range es {
		held += e.Held
	}
	return held
}

// WantCode fails t unless err has code ("" for no error).
func WantCode(t testing.TB, what string, err error, code string) {
	t.Helper()
	if got := outlast.ErrorCode(err); got != code {
		t.Fatalf("%s: error code = %q (%v), want %q", what, got, err, code)
	}
}

// WantBalances checks an account's buckets, read through Account, and its
// invariant.
func WantBalances(t testing.TB, l outlast.AccountService, id string, available, held, paidOut int64) *outlast.Account {
	t.Helper()
	a, _, err := l.Account(context.Background(), id)
	if err != nil {
		t.Fatalf("Account(%q): %v", id, err)
	}
	if a.Available != available || a.Held != held || a.PaidOut != paidOut {
		t.Fatalf("Account(%q) = available %d held %d paid_out %d, want %d %d %d",
			id, a.Available, a.Held, a.PaidOut, available, held, paidOut)
	}
	if err := a.CheckInvariant(); err != nil {
		t.Fatalf("Account(%q): %v", id, err)
	}
	return a
}

// eventSeq numbers the events Note makes, across every test of a binary.
var eventSeq atomic.Int64

// Note builds p's partner's report of status on tcb, with a new event id.
func Note(p *outlast.Payout, status outlast.PayoutStatus) *outlast.Notification {
	return &outlast.Notification{
		Channel: "tcb", EventID: fmt.Sprintf("ev-%d", eventSeq.Add(1)), PayoutID: p.ID,
		PartnerRef: "ref-" + p.ID[:min(8, len(p.ID))], Status: status, OccurredAt: time.Now().UTC(),
	}
}

// dispatchedRef is the partner ref Note gives p's reports.
func dispatchedRef(p *outlast.Payout) string { return Note(p, outlast.StatusDispatched).PartnerRef }

// Apply applies ns from the log and fails t on an error or a result count
// that does not line up with ns.
func Apply(t testing.TB, l outlast.Ledger, ns ...*outlast.Notification) []outlast.ApplyResult {
	t.Helper()
	rs, err := l.Apply(context.Background(), outlast.FromLog, ns)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(rs) != len(ns) {
		t.Fatalf("Apply returned %d results for %d notifications", len(rs), len(ns))
	}
	return rs
}

// WantOutcomes checks the outcomes of rs, in order.
func WantOutcomes(t testing.TB, rs []outlast.ApplyResult, want ...outlast.Outcome) {
	t.Helper()
	if len(rs) < len(want) {
		t.Fatalf("%d results, want at least %d", len(rs), len(want))
	}
	for i, w := range want {
		if rs[i].Outcome != w {
			t.Fatalf("result %d = %s (%s), want %s", i, rs[i].Outcome, rs[i].Reason, w)
		}
	}
}

// wantCleanAudit fails t if the implementation's own audit, when it has
// one, finds anything; it returns the report, or nil without an auditor.
func wantCleanAudit(t *testing.T, h *Harness) *outlast.LedgerReport {
	t.Helper()
	rep := auditOf(t, h)
	if rep != nil && len(rep.Problems) > 0 {
		t.Fatalf("AuditLedger found %d problems:\n%s", len(rep.Problems), strings.Join(rep.Problems, "\n"))
	}
	return rep
}

// wantNoDispatches checks that nothing is due in the outbox. A payout
// still queued after it left pending would be: its entry was never
// claimed, so it is due from its creation on.
func wantNoDispatches(t *testing.T, l outlast.Ledger, why string) {
	t.Helper()
	ds, err := l.ClaimDispatches(context.Background(), 10, time.Minute)
	if err != nil || len(ds) != 0 {
		t.Fatalf("ClaimDispatches %s = %d entries, %v; want none", why, len(ds), err)
	}
}

// needClock returns h's clock, or skips t without one.
func needClock(t *testing.T, h *Harness) Clock {
	t.Helper()
	if h.Clock == nil {
		t.Skip("the harness has no Clock")
	}
	return h.Clock
}
