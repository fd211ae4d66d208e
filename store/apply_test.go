package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/store"
)

// TestApplyBulk covers what the bulk statements of the applier must get
// right beyond the conformance suite, on both backends: full batches,
// free text that needs escaping, and the invariant check on the
// accounts the batch changed.
func TestApplyBulk(t *testing.T) {
	backends := []struct {
		name string
		open func(t *testing.T) *store.DB
	}{
		{"sqlite", func(t *testing.T) *store.DB { return openDB(t, "sqlite:"+t.TempDir()+"/ledger.db") }},
		{"postgres", func(t *testing.T) *store.DB { return openDB(t, testenv.PostgresDSN(t)) }},
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, db *store.DB)
	}{
		{"FullBatch", testApplyFullBatch},
		{"FullInboxDrain", testDrainFullBatch},
		{"TextRoundTrips", testApplyTextRoundTrips},
		{"InvariantViolationPanics", testApplyInvariantPanics},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					t.Parallel()
					tt.fn(t, be.open(t))
				})
			}
		})
	}
}

// fullBatch creates payouts over three accounts and returns BatchMax
// notifications: per payout dispatched then succeeded or failed, plus a
// repeated event and a report on an unknown payout at the end.
func fullBatch(t *testing.T, db *store.DB) ([]ledgertest.Fixture, []*outlast.Notification) {
	t.Helper()
	fs := []ledgertest.Fixture{ledgertest.Seed(t, db, "a", 100000), ledgertest.Seed(t, db, "b", 100000), ledgertest.Seed(t, db, "c", 100000)}
	const payouts = (store.BatchMax - 2) / 2
	var ns []*outlast.Notification
	for i := range payouts {
		p := ledgertest.MustPayout(t, db, fs[i%len(fs)].Req(fmt.Sprintf("k%d", i), int64(1+i%7)))
		final := outlast.StatusSucceeded
		if i%5 == 0 {
			final = outlast.StatusFailed
		}
		ns = append(ns, ledgertest.Note(p, outlast.StatusDispatched), ledgertest.Note(p, final))
	}
	dupe := *ns[1]
	unknown := ledgertest.Note(&outlast.Payout{ID: "00000000-0000-7000-8000-000000000000"}, outlast.StatusSucceeded)
	return fs, append(ns, &dupe, unknown)
}

// wantFullBatch checks the results and the ledger after fullBatch's
// notifications were applied once.
func wantFullBatch(t *testing.T, db *store.DB, fs []ledgertest.Fixture, ns []*outlast.Notification, rs []outlast.ApplyResult) {
	t.Helper()
	if len(rs) != len(ns) {
		t.Fatalf("got %d results for %d notifications", len(rs), len(ns))
	}
	paid, released := make(map[string]int64), make(map[string]int64)
	for i, n := range ns[:len(ns)-2] {
		r := rs[i]
		if r.Outcome != outlast.OutcomeApplied || r.Payout == nil || r.Payout.ID != n.PayoutID || r.Payout.Status != n.Status {
			t.Fatalf("result %d = %+v, want %s applied to %s", i, r, n.Status, n.PayoutID)
		}
		switch n.Status {
		case outlast.StatusSucceeded:
			paid[r.Payout.AccountID] += r.Payout.Amount
		case outlast.StatusFailed:
			released[r.Payout.AccountID] += r.Payout.Amount
		}
	}
	ledgertest.WantOutcomes(t, rs[len(ns)-2:], outlast.OutcomeDuplicate, outlast.OutcomeRejected)
	for _, f := range fs {
		ledgertest.WantBalances(t, db, f.Account, 100000-paid[f.Account], 0, paid[f.Account])
	}
	if n := count(t, db, "SELECT COUNT(*) FROM outbox"); n != 0 {
		t.Fatalf("outbox = %d rows, want 0", n)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM notifications"); n != len(ns)-2 {
		t.Fatalf("notifications = %d rows, want %d (all but the repeated and the rejected event)", n, len(ns)-2)
	}
	wantCleanAudit(t, db)
}

func testApplyFullBatch(t *testing.T, db *store.DB) {
	fs, ns := fullBatch(t, db)
	wantFullBatch(t, db, fs, ns, ledgertest.Apply(t, db, ns...))
	// The whole batch again: every event is now a duplicate.
	for i, r := range ledgertest.Apply(t, db, ns...) {
		if r.Outcome != outlast.OutcomeDuplicate && !(i == len(ns)-1 && r.Outcome == outlast.OutcomeRejected) {
			t.Fatalf("replayed result %d = %+v, want duplicate", i, r)
		}
	}
}

func testDrainFullBatch(t *testing.T, db *store.DB) {
	ctx := context.Background()
	fs, ns := fullBatch(t, db)
	if err := db.AppendInbox(ctx, ns); err != nil {
		t.Fatalf("AppendInbox: %v", err)
	}
	es, err := db.ClaimInbox(ctx, 0, time.Minute)
	if err != nil || len(es) != len(ns) {
		t.Fatalf("ClaimInbox = %d, %v; want %d", len(es), err, len(ns))
	}
	rs := applyEntries(t, db, es)
	wantFullBatch(t, db, fs, ns, rs)
	rs[len(rs)-1].DeadLetter = true
	if err := db.SettleInbox(ctx, es, rs); err != nil {
		t.Fatalf("SettleInbox: %v", err)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM inbox"); n != 0 {
		t.Fatalf("inbox = %d rows after drain, want 0", n)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM dead_letters"); n != 1 {
		t.Fatalf("dead letters = %d, want 1 (the unknown payout)", n)
	}
}

// testApplyTextRoundTrips: free text reaches the ledger as cleaned, with
// characters the bulk encoding must escape.
func testApplyTextRoundTrips(t *testing.T, db *store.DB) {
	ctx := context.Background()
	f := ledgertest.Seed(t, db, "t", 1000)
	reasons := []string{
		`quote " backslash \ slash / brace ] } [ {`,
		"newline\n tab\t cr\r bell\a escape\x1b del\x7f",
		"unicode é ü 中文 🙂 \u2028 \u2029",
		"nul\x00byte and bad utf-8 \xff\xfe",
		`\u0041 is not an escape here; nor is \n`,
		strings.Repeat("é", outlast.ReasonBytesMax/2),
	}
	for i, reason := range reasons {
		p := ledgertest.MustPayout(t, db, f.Req(fmt.Sprintf("k%d", i), 1))
		n := ledgertest.Note(p, outlast.StatusFailed)
		n.Reason = reason
		rs := ledgertest.Apply(t, db, n)
		ledgertest.WantOutcomes(t, rs, outlast.OutcomeApplied)
		want := outlast.CleanText(reason, outlast.ReasonBytesMax)
		got, _, err := db.Payout(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.FailureReason != want || rs[0].Payout.FailureReason != want {
			t.Fatalf("FailureReason = %q (result %q), want %q", got.FailureReason, rs[0].Payout.FailureReason, want)
		}
		var stored string
		if err := db.SQL().QueryRowContext(ctx, "SELECT reason FROM notifications WHERE event_id = $1",
			n.EventID).Scan(&stored); err != nil || stored != want {
			t.Fatalf("notifications.reason = %q, %v; want %q", stored, err, want)
		}
	}
	wantCleanAudit(t, db)
}

// testApplyInvariantPanics: a batch touching an account whose balances no
// longer add up panics and commits nothing, not even the accounts and
// payouts that were fine.
func testApplyInvariantPanics(t *testing.T, db *store.DB) {
	ctx := context.Background()
	good, bad := ledgertest.Seed(t, db, "g", 1000), ledgertest.Seed(t, db, "v", 1000)
	pg, pb := ledgertest.MustPayout(t, db, good.Req("k1", 100)), ledgertest.MustPayout(t, db, bad.Req("k1", 100))
	if _, err := db.SQL().ExecContext(ctx, "UPDATE accounts SET funded = funded + 1 WHERE id = $1", bad.Account); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Fatal("ApplyNotifications on a broken account did not panic")
			}
		}()
		db.Apply(ctx, outlast.FromLog, []*outlast.Notification{ledgertest.Note(pg, outlast.StatusSucceeded), ledgertest.Note(pb, outlast.StatusSucceeded)})
	}()
	for _, id := range []string{pg.ID, pb.ID} {
		if p, _, err := db.Payout(ctx, id); err != nil || p.Status != outlast.StatusPending {
			t.Fatalf("Payout(%s) = %+v, %v; want still pending", id, p, err)
		}
	}
	ledgertest.WantBalances(t, db, good.Account, 900, 100, 0)
	if n := count(t, db, "SELECT COUNT(*) FROM notifications"); n != 0 {
		t.Fatalf("notifications = %d rows after the panic, want 0", n)
	}
}
