package store_test

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/store"
)

func testInbox(t *testing.T, db *store.DB) {
	ctx := context.Background()
	clock := withClock(db)
	f := ledgertest.Seed(t, db, "i", 1000)
	p := ledgertest.MustPayout(t, db, f.Req("k1", 100))
	good := ledgertest.Note(p, outlast.StatusSucceeded)
	unknown := ledgertest.Note(&outlast.Payout{ID: "00000000-0000-7000-8000-000000000001"}, outlast.StatusFailed)
	if err := db.AppendInbox(ctx, []*outlast.Notification{good, unknown, good}); err != nil {
		t.Fatalf("AppendInbox: %v", err)
	}
	bad := ledgertest.Note(p, "pending")
	ledgertest.WantCode(t, "AppendInbox(invalid)", db.AppendInbox(ctx, []*outlast.Notification{bad}), outlast.EVALIDATION)
	if rep := wantCleanAudit(t, db); rep.Inbox != 3 {
		t.Fatalf("audit inbox = %d, want 3", rep.Inbox)
	}

	// Applied and rejected: the applied entry leaves, the rejected one is
	// due again after its RetryAfter.
	es := claimInbox(t, db, 2, 1, 1)
	rs := applyEntries(t, db, es)
	ledgertest.WantOutcomes(t, rs, outlast.OutcomeApplied, outlast.OutcomeRejected)
	rs[1].RetryAfter = time.Minute
	settleInbox(t, db, es, rs)
	es = claimInbox(t, db, 10, 1) // the repeat of good; unknown is not due
	ledgertest.WantOutcomes(t, applyEntries(t, db, es), outlast.OutcomeDuplicate)
	settleInbox(t, db, es, []outlast.ApplyResult{{Outcome: outlast.OutcomeDuplicate}})
	claimInbox(t, db, 10)

	// Due again, it counts a second delivery; this time the bound is
	// reached and it moves to the dead letters with its reason.
	clock.Advance(time.Minute)
	es = claimInbox(t, db, 10, 2)
	if es[0].Notification.EventID != unknown.EventID {
		t.Fatalf("claimed %s, want the unknown payout's report %s", es[0].Notification.EventID, unknown.EventID)
	}
	settleInbox(t, db, es, []outlast.ApplyResult{{Outcome: outlast.OutcomeRejected, Reason: "unknown payout", DeadLetter: true}})
	dls, err := db.DeadLetters(ctx, 10)
	if err != nil || len(dls) != 1 || dls[0].Notification.EventID != unknown.EventID || dls[0].Reason != "unknown payout" ||
		dls[0].Deliveries != 2 || !strings.HasPrefix(dls[0].ID, "inbox:") || dls[0].At.IsZero() {
		t.Fatalf("DeadLetters = %+v, %v; want the unknown payout's report, inbox:<id>, after 2 deliveries", dls, err)
	}
	if !dls[0].Notification.OccurredAt.Equal(unknown.OccurredAt) {
		t.Fatalf("dead letter OccurredAt = %v, want %v", dls[0].Notification.OccurredAt, unknown.OccurredAt)
	}
	if rep := wantCleanAudit(t, db); rep.Inbox != 0 || rep.DeadLetters != 1 {
		t.Fatalf("audit inbox %d dead letters %d, want 0 and 1", rep.Inbox, rep.DeadLetters)
	}
	ledgertest.WantBalances(t, db, f.Account, 900, 0, 100)

	// Replayed, it is back in the inbox with its deliveries reset; a claim
	// whose lease runs out is claimed again.
	for _, id := range []string{"log:1", "inbox:x", "inbox:0", "7"} {
		_, err := db.ReplayDeadLetters(ctx, []string{dls[0].ID, id})
		ledgertest.WantCode(t, fmt.Sprintf("ReplayDeadLetters(%q)", id), err, outlast.EVALIDATION)
	}
	if n, err := db.ReplayDeadLetters(ctx, []string{dls[0].ID}); err != nil || n != 1 {
		t.Fatalf("ReplayDeadLetters = %d, %v; want 1", n, err)
	}
	if dls, err := db.DeadLetters(ctx, 10); err != nil || len(dls) != 0 {
		t.Fatalf("DeadLetters after replay = %d, %v; want none", len(dls), err)
	}
	// Replaying again is safe: it is no longer a dead letter.
	if n, err := db.ReplayDeadLetters(ctx, []string{dls[0].ID}); err != nil || n != 0 {
		t.Fatalf("ReplayDeadLetters again = %d, %v; want 0", n, err)
	}
	stale := claimInbox(t, db, 10, 1)
	claimInbox(t, db, 10)
	clock.Advance(31 * time.Second)
	fresh := claimInbox(t, db, 10, 2)

	// The first claim's lease ran out and the entry is another claim's
	// now: settling the stale claim, either way, changes nothing.
	settleInbox(t, db, stale, []outlast.ApplyResult{{Outcome: outlast.OutcomeRejected, Reason: "stale", DeadLetter: true}})
	settleInbox(t, db, stale, []outlast.ApplyResult{{Outcome: outlast.OutcomeRejected, Reason: "stale", RetryAfter: time.Hour}})
	settleInbox(t, db, stale, []outlast.ApplyResult{{Outcome: outlast.OutcomeApplied}})
	if dls, err := db.DeadLetters(ctx, 10); err != nil || len(dls) != 0 {
		t.Fatalf("DeadLetters after settling a stale claim = %d, %v; want none", len(dls), err)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM inbox WHERE last_reason = ''"); n != 1 {
		t.Fatalf("inbox = %d untouched entries after settling a stale claim, want 1", n)
	}
	settleInbox(t, db, fresh, []outlast.ApplyResult{{Outcome: outlast.OutcomeApplied}})
	if n := count(t, db, "SELECT COUNT(*) FROM inbox"); n != 0 {
		t.Fatalf("inbox = %d entries after settling the live claim, want 0", n)
	}
}

// claimInbox claims up to limit entries with a 30 s lease and checks that
// they are as many as deliveries and counted those deliveries.
func claimInbox(t *testing.T, db *store.DB, limit int, deliveries ...int) []outlast.InboxEntry {
	t.Helper()
	es, err := db.ClaimInbox(context.Background(), limit, 30*time.Second)
	if err != nil || len(es) != len(deliveries) {
		t.Fatalf("ClaimInbox(%d) = %d entries, %v; want %d", limit, len(es), err, len(deliveries))
	}
	for i, e := range es {
		if e.Notification.Deliveries != deliveries[i] {
			t.Fatalf("entry %d deliveries = %d, want %d", i, e.Notification.Deliveries, deliveries[i])
		}
	}
	return es
}

func applyEntries(t *testing.T, db *store.DB, es []outlast.InboxEntry) []outlast.ApplyResult {
	t.Helper()
	ns := make([]*outlast.Notification, len(es))
	for i, e := range es {
		ns[i] = e.Notification
	}
	return ledgertest.Apply(t, db, ns...)
}

func settleInbox(t *testing.T, db *store.DB, es []outlast.InboxEntry, rs []outlast.ApplyResult) {
	t.Helper()
	if err := db.SettleInbox(context.Background(), es, rs); err != nil {
		t.Fatalf("SettleInbox: %v", err)
	}
}

func testAuditTampering(t *testing.T, db *store.DB) {
	ctx := context.Background()
	f := ledgertest.Seed(t, db, "t", 1000)
	p := ledgertest.MustPayout(t, db, f.Req("k1", 100))
	wantCleanAudit(t, db)
	if _, err := db.SQL().ExecContext(ctx, "UPDATE accounts SET available = available + 5 WHERE id = $1", f.Account); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SQL().ExecContext(ctx, "UPDATE payouts SET status = 'succeeded' WHERE id = $1", p.ID); err != nil {
		t.Fatal(err)
	}
	rep, err := db.AuditLedger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var account, payout bool
	for _, pr := range rep.Problems {
		account = account || strings.Contains(pr, "account "+f.Account)
		payout = payout || strings.Contains(pr, "payout "+p.ID)
	}
	if !account || !payout {
		t.Fatalf("audit problems = %q; want the tampered account and payout", rep.Problems)
	}
}

func testDurability(t *testing.T, db *store.DB) {
	ctx := context.Background()
	switch db.Dialect() {
	case "sqlite":
		var sync int
		var mode string
		if err := db.SQL().QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
			t.Fatalf("PRAGMA synchronous = %d, %v; want 2 (FULL)", sync, err)
		}
		if err := db.SQL().QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
			t.Fatalf("PRAGMA journal_mode = %q, %v; want wal", mode, err)
		}
		var fk int
		if err := db.SQL().QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil || fk != 1 {
			t.Fatalf("PRAGMA foreign_keys = %d, %v; want 1", fk, err)
		}
	case "postgres":
		// Even a database whose default is off gets on per connection.
		var name string
		if err := db.SQL().QueryRowContext(ctx, "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if _, err := db.SQL().ExecContext(ctx, "ALTER DATABASE "+name+" SET synchronous_commit = off"); err != nil {
			t.Fatal(err)
		}
		db.SQL().SetMaxIdleConns(0) // force a fresh connection
		var v string
		if err := db.SQL().QueryRowContext(ctx, "SHOW synchronous_commit").Scan(&v); err != nil || v != "on" {
			t.Fatalf("SHOW synchronous_commit = %q, %v; want on", v, err)
		}
	default:
		t.Fatalf("Dialect() = %q", db.Dialect())
	}
	wantMigrations(t, db)
}

func testUnavailableAfterClose(t *testing.T, db *store.DB) {
	ctx := context.Background()
	f := ledgertest.Seed(t, db, "u", 100)
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, _, err := db.Account(ctx, f.Account)
	ledgertest.WantCode(t, "Account after Close", err, outlast.EUNAVAILABLE)
	if outlast.ErrorRetryAfter(err) <= 0 {
		t.Fatalf("RetryAfter = %v, want > 0", outlast.ErrorRetryAfter(err))
	}
	_, _, err = db.CreatePayout(ctx, f.Req("k", 1))
	ledgertest.WantCode(t, "CreatePayout after Close", err, outlast.EUNAVAILABLE)
	if strings.Contains(outlast.ErrorMessage(err), "sql") {
		t.Fatalf("message %q leaks internals", outlast.ErrorMessage(err))
	}
}

// testInvariantPanics: a ledger whose balances no longer add up panics in
// the next transaction that touches the account, and commits nothing.
func testInvariantPanics(t *testing.T, db *store.DB) {
	ctx := context.Background()
	f := ledgertest.Seed(t, db, "v", 1000)
	if _, err := db.SQL().ExecContext(ctx, "UPDATE accounts SET funded = funded + 1 WHERE id = $1", f.Account); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Fatal("FundAccount on a broken account did not panic")
			}
		}()
		db.FundAccount(ctx, f.Account, 10, "broken")
	}()
	a, _, err := db.Account(ctx, f.Account)
	if err != nil || a.Funded != 1001 || a.Available != 1000 {
		t.Fatalf("Account = %+v, %v; want the tampered state and nothing of the panicked funding", a, err)
	}
	// The connection went back to the pool clean.
	g := ledgertest.Seed(t, db, "v2", 10)
	ledgertest.WantBalances(t, db, g.Account, 10, 0, 0)
}

// testJournal: every move of money writes its pair of journal rows and a
// new payout its outbox row, what the audit and the dispatcher read below
// the interface.
func testJournal(t *testing.T, db *store.DB) {
	ctx := context.Background()
	f := ledgertest.Seed(t, db, "a", 0)
	for _, amount := range []int64{1000, 500} {
		if _, _, err := db.FundAccount(ctx, f.Account, amount, fmt.Sprintf("fund-%d", amount)); err != nil {
			t.Fatalf("FundAccount: %v", err)
		}
	}
	if n := count(t, db, "SELECT COUNT(*) FROM journal WHERE account_id = $1", f.Account); n != 4 {
		t.Fatalf("journal rows = %d, want 4 (two per funding)", n)
	}
	p := ledgertest.MustPayout(t, db, f.Req("k1", 300))
	if n := count(t, db, "SELECT COUNT(*) FROM journal WHERE payout_id = $1", p.ID); n != 2 {
		t.Fatalf("journal rows for payout = %d, want 2", n)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM journal WHERE payout_id = $1 AND bucket = 'held' AND amount = 300", p.ID); n != 1 {
		t.Fatalf("held journal rows = %d, want 1", n)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM outbox WHERE payout_id = $1 AND attempts = 0", p.ID); n != 1 {
		t.Fatalf("outbox rows = %d, want 1", n)
	}
	ledgertest.WantOutcomes(t, ledgertest.Apply(t, db, ledgertest.Note(p, outlast.StatusFailed)), outlast.OutcomeApplied)
	if n := count(t, db, "SELECT COUNT(*) FROM journal WHERE payout_id = $1 AND bucket = 'available' AND amount = 300", p.ID); n != 1 {
		t.Fatalf("journal rows releasing the hold = %d, want 1", n)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM outbox"); n != 0 {
		t.Fatalf("outbox = %d after failed, want 0", n)
	}
	wantCleanAudit(t, db)
}

// testPayoutCounts: the counts by status, which the metrics read, agree
// with the payouts and with the audit.
func testPayoutCounts(t *testing.T, db *store.DB) {
	ctx := context.Background()
	f := ledgertest.Seed(t, db, "pc", 1000)
	var ps []*outlast.Payout
	for _, key := range []string{"k1", "k2", "k3", "k4"} {
		ps = append(ps, ledgertest.MustPayout(t, db, f.Req(key, 100)))
	}
	if _, err := db.MarkDispatched(ctx, ps[1].ID, "tcb", "r"); err != nil {
		t.Fatal(err)
	}
	ledgertest.WantOutcomes(t, ledgertest.Apply(t, db, ledgertest.Note(ps[2], outlast.StatusSucceeded)), outlast.OutcomeApplied)
	if _, err := db.RejectDispatch(ctx, ps[3].ID, "tcb", "no", time.Time{}); err != nil {
		t.Fatal(err)
	}
	counts, err := db.PayoutCounts(ctx)
	want := map[outlast.PayoutStatus]int{outlast.StatusPending: 1, outlast.StatusDispatched: 1,
		outlast.StatusSucceeded: 1, outlast.StatusFailed: 1}
	if err != nil || !maps.Equal(counts, want) {
		t.Fatalf("PayoutCounts = %v, %v; want %v", counts, err, want)
	}
	if rep := wantCleanAudit(t, db); !maps.Equal(rep.Payouts, counts) || rep.Outbox != 1 || rep.Accounts != 1 {
		t.Fatalf("audit counts: %v payouts, %d outbox, %d accounts; want %v, 1, 1", rep.Payouts, rep.Outbox, rep.Accounts, counts)
	}
}
