package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/store"
)

func testClients(t *testing.T, db *store.DB) {
	ctx := context.Background()
	c := &outlast.Client{ID: "merchant-1"}
	if err := db.CreateClient(ctx, c, keyHash("m1")); err != nil {
		t.Fatalf("CreateClient: %v", err)
	}
	if c.CreatedAt.IsZero() || c.CreatedAt.Location() != time.UTC {
		t.Fatalf("CreatedAt = %v, want a UTC time", c.CreatedAt)
	}
	wantCode(t, "CreateClient(duplicate id)", db.CreateClient(ctx, &outlast.Client{ID: "merchant-1"}, keyHash("other")), outlast.ECONFLICT)
	wantCode(t, "CreateClient(duplicate key)", db.CreateClient(ctx, &outlast.Client{ID: "merchant-2"}, keyHash("m1")), outlast.ECONFLICT)
	wantCode(t, "CreateClient(bad id)", db.CreateClient(ctx, &outlast.Client{ID: "a b"}, keyHash("x")), outlast.EVALIDATION)
	got, err := db.ClientByKeyHash(ctx, keyHash("m1"))
	if err != nil || got.ID != "merchant-1" || !got.CreatedAt.Equal(c.CreatedAt) {
		t.Fatalf("ClientByKeyHash = %+v, %v; want merchant-1 created %v", got, err, c.CreatedAt)
	}
	_, err = db.ClientByKeyHash(ctx, keyHash("nobody"))
	wantCode(t, "ClientByKeyHash(unknown)", err, outlast.ENOTFOUND)
}

func testAccounts(t *testing.T, db *store.DB) {
	ctx := context.Background()
	f := seed(t, db, "a", 0)
	wantCode(t, "CreateAccount(duplicate)", db.CreateAccount(ctx, &outlast.Account{ID: f.account, ClientID: f.client, Currency: "EUR"}), outlast.ECONFLICT)
	wantCode(t, "CreateAccount(unknown client)", db.CreateAccount(ctx, &outlast.Account{ID: "x", ClientID: "nobody", Currency: "EUR"}), outlast.EVALIDATION)
	wantCode(t, "CreateAccount(bad currency)", db.CreateAccount(ctx, &outlast.Account{ID: "y", ClientID: f.client, Currency: "XXX"}), outlast.EVALIDATION)

	a, err := db.FundAccount(ctx, f.account, 1000)
	if err != nil || a.Funded != 1000 || a.Available != 1000 || a.Version != 2 {
		t.Fatalf("FundAccount = %+v, %v; want funded 1000 available 1000 version 2", a, err)
	}
	if _, err := db.FundAccount(ctx, f.account, 500); err != nil {
		t.Fatalf("FundAccount: %v", err)
	}
	_, err = db.FundAccount(ctx, "nope", 1)
	wantCode(t, "FundAccount(unknown)", err, outlast.ENOTFOUND)
	_, err = db.FundAccount(ctx, f.account, 0)
	wantCode(t, "FundAccount(0)", err, outlast.EVALIDATION)
	a = wantBalances(t, db, f.account, 1500, 0, 0)
	if a.Funded != 1500 || a.ClientID != f.client || a.Currency != "EUR" {
		t.Fatalf("Account = %+v, want funded 1500 of %s in EUR", a, f.client)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM journal WHERE account_id = $1", f.account); n != 4 {
		t.Fatalf("journal rows = %d, want 4 (two per funding)", n)
	}
	_, _, err = db.Account(ctx, "nope")
	wantCode(t, "Account(unknown)", err, outlast.ENOTFOUND)

	a, err = db.SetAccountFlags(ctx, f.account, outlast.AccountFlags{PayoutsDisabled: true, DailyLimit: 70})
	if err != nil || !a.Flags.PayoutsDisabled || a.Flags.DailyLimit != 70 {
		t.Fatalf("SetAccountFlags = %+v, %v; want disabled with limit 70", a, err)
	}
	_, err = db.SetAccountFlags(ctx, "nope", outlast.AccountFlags{})
	wantCode(t, "SetAccountFlags(unknown)", err, outlast.ENOTFOUND)
	wantCleanAudit(t, db)
}

func testPayoutHappyPath(t *testing.T, db *store.DB) {
	ctx := context.Background()
	f := seed(t, db, "h", 1000)
	p := mustPayout(t, db, f.req("k1", 300))
	if p.Status != outlast.StatusPending || p.Version != 1 || p.Channel != "tcb" || p.Amount != 300 || p.ClientID != f.client {
		t.Fatalf("CreatePayout = %+v, want pending v1 via tcb for 300", p)
	}
	wantBalances(t, db, f.account, 700, 300, 0)
	got, _, err := db.Payout(ctx, p.ID)
	if err != nil {
		t.Fatalf("Payout(%q): %v", p.ID, err)
	}
	if got.ID != p.ID || got.Destination != p.Destination || !got.CreatedAt.Equal(p.CreatedAt) || got.IdempotencyKey != "k1" {
		t.Fatalf("Payout(%q) = %+v, want %+v", p.ID, got, p)
	}
	if got.CreatedAt.Nanosecond()%1000 == 0 && got.CreatedAt.Nanosecond() == 0 {
		t.Logf("CreatedAt %v has no sub-second part (possible but unlikely)", got.CreatedAt)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM journal WHERE payout_id = $1", p.ID); n != 2 {
		t.Fatalf("journal rows for payout = %d, want 2", n)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM journal WHERE payout_id = $1 AND bucket = 'held' AND amount = 300", p.ID); n != 1 {
		t.Fatalf("held journal rows = %d, want 1", n)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM outbox WHERE payout_id = $1 AND attempts = 0", p.ID); n != 1 {
		t.Fatalf("outbox rows = %d, want 1", n)
	}
	_, _, err = db.Payout(ctx, "nope")
	wantCode(t, "Payout(unknown)", err, outlast.ENOTFOUND)
	wantCleanAudit(t, db)
}

func testPayoutIdempotentReplay(t *testing.T, db *store.DB) {
	f := seed(t, db, "r", 1000)
	p := mustPayout(t, db, f.req("k1", 300))
	req := f.req("k1", 300)
	req.Channel = "acb" // the router may choose differently on a retry
	again, created, err := db.CreatePayout(context.Background(), req)
	if err != nil || created || again.ID != p.ID || again.Channel != "tcb" {
		t.Fatalf("replay = %+v, created %v, %v; want payout %s via tcb, not created", again, created, err, p.ID)
	}
	wantBalances(t, db, f.account, 700, 300, 0)
}

func testPayoutIdempotencyMismatch(t *testing.T, db *store.DB) {
	f := seed(t, db, "m", 1000)
	mustPayout(t, db, f.req("k1", 300))
	_, _, err := db.CreatePayout(context.Background(), f.req("k1", 301))
	wantCode(t, "CreatePayout(same key, other amount)", err, outlast.EIDEMPOTENCY)
	wantBalances(t, db, f.account, 700, 300, 0)
	if n := count(t, db, "SELECT COUNT(*) FROM payouts"); n != 1 {
		t.Fatalf("payouts = %d, want 1", n)
	}
}

func testPayoutConcurrentSameKey(t *testing.T, db *store.DB) {
	f := seed(t, db, "s", 1000)
	const n = 20
	var wg sync.WaitGroup
	ids := make([]string, n)
	created := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			var p *outlast.Payout
			p, created[i], errs[i] = db.CreatePayout(context.Background(), f.req("same", 100))
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
	wantBalances(t, db, f.account, 900, 100, 0)
	wantCleanAudit(t, db)
}

func testPayoutConcurrentDrain(t *testing.T, db *store.DB) {
	const funded, amount, n = 1000, 30, 50
	f := seed(t, db, "d", funded)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, insufficient := 0, 0
	for i := range n {
		wg.Go(func() {
			_, _, err := db.CreatePayout(context.Background(), f.req(fmt.Sprintf("k%d", i), amount))
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
	wantBalances(t, db, f.account, funded%amount, funded/amount*amount, 0)
	wantCleanAudit(t, db)
}

func testPayoutRejections(t *testing.T, db *store.DB) {
	ctx := context.Background()
	f := seed(t, db, "x", 100)
	other := seed(t, db, "other", 1000)

	_, _, err := db.CreatePayout(ctx, f.req("k1", 101))
	wantCode(t, "CreatePayout(too much)", err, outlast.EINSUFFICIENT)

	req := f.req("k2", 10)
	req.AccountID = other.account
	_, _, err = db.CreatePayout(ctx, req)
	wantCode(t, "CreatePayout(other client's account)", err, outlast.EVALIDATION)
	if !strings.Contains(outlast.ErrorMessage(err), "unknown account") {
		t.Fatalf("message = %q, want it to say unknown account", outlast.ErrorMessage(err))
	}
	req.AccountID = "missing"
	_, _, err = db.CreatePayout(ctx, req)
	if outlast.ErrorMessage(err) != fmt.Sprintf("unknown account %q", "missing") {
		t.Fatalf("message for a missing account = %q, want the same answer as for another client's", outlast.ErrorMessage(err))
	}

	req = f.req("k3", 10)
	req.Currency = "USD"
	_, _, err = db.CreatePayout(ctx, req)
	wantCode(t, "CreatePayout(currency mismatch)", err, outlast.EVALIDATION)

	req = f.req("k4", 10)
	req.Destination = "bad\x00dest"
	_, _, err = db.CreatePayout(ctx, req)
	wantCode(t, "CreatePayout(NUL in destination)", err, outlast.EVALIDATION)

	_, _, err = db.CreatePayout(ctx, f.req("", 10))
	wantCode(t, "CreatePayout(no key)", err, outlast.EINVALID)

	if _, err := db.SetAccountFlags(ctx, f.account, outlast.AccountFlags{PayoutsDisabled: true}); err != nil {
		t.Fatal(err)
	}
	_, _, err = db.CreatePayout(ctx, f.req("k5", 10))
	wantCode(t, "CreatePayout(payouts disabled)", err, outlast.EVALIDATION)

	wantBalances(t, db, f.account, 100, 0, 0)
	wantBalances(t, db, other.account, 1000, 0, 0)
	if n := count(t, db, "SELECT COUNT(*) FROM payouts"); n != 0 {
		t.Fatalf("payouts = %d, want 0", n)
	}
}

func testPayoutDailyLimit(t *testing.T, db *store.DB) {
	ctx := context.Background()
	clk := withClock(db)
	f := seed(t, db, "l", 1000)
	if _, err := db.SetAccountFlags(ctx, f.account, outlast.AccountFlags{DailyLimit: 100}); err != nil {
		t.Fatal(err)
	}
	p := mustPayout(t, db, f.req("k1", 60))
	_, _, err := db.CreatePayout(ctx, f.req("k2", 41))
	wantCode(t, "CreatePayout(over daily limit)", err, outlast.EVALIDATION)
	// A failed payout no longer counts against the limit.
	n := note(p, outlast.StatusFailed)
	wantOutcomes(t, apply(t, db, n), outlast.OutcomeApplied)
	mustPayout(t, db, f.req("k3", 100))
	clk.Advance(24 * time.Hour)
	mustPayout(t, db, f.req("k4", 100))
	wantCleanAudit(t, db)
}

func testNotificationsLifecycle(t *testing.T, db *store.DB) {
	f := seed(t, db, "n", 1000)
	p := mustPayout(t, db, f.req("k1", 400))
	dispatched := note(p, outlast.StatusDispatched)
	rs := apply(t, db, dispatched)
	wantOutcomes(t, rs, outlast.OutcomeApplied)
	if rs[0].Payout.Status != outlast.StatusDispatched || rs[0].Payout.PartnerRef != dispatched.PartnerRef || rs[0].Payout.Version != 2 {
		t.Fatalf("after dispatched: %+v, want dispatched v2 with partner ref", rs[0].Payout)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM outbox"); n != 0 {
		t.Fatalf("outbox = %d after dispatched, want 0 (the partner has it)", n)
	}
	wantOutcomes(t, apply(t, db, dispatched), outlast.OutcomeDuplicate)

	succeeded := note(p, outlast.StatusSucceeded)
	succeeded.PartnerRef = ""
	rs = apply(t, db, succeeded)
	wantOutcomes(t, rs, outlast.OutcomeApplied)
	if rs[0].Payout.Status != outlast.StatusSucceeded || rs[0].Payout.PartnerRef != dispatched.PartnerRef {
		t.Fatalf("after succeeded: %+v, want succeeded keeping partner ref %s", rs[0].Payout, dispatched.PartnerRef)
	}
	wantBalances(t, db, f.account, 600, 0, 400)

	late := note(p, outlast.StatusDispatched)
	conflict := note(p, outlast.StatusFailed)
	rs = apply(t, db, late, conflict, succeeded)
	wantOutcomes(t, rs, outlast.OutcomeStale, outlast.OutcomeConflict, outlast.OutcomeDuplicate)
	if rs[1].Payout.Status != outlast.StatusSucceeded || rs[1].Reason == "" {
		t.Fatalf("conflict result = %+v, want the payout still succeeded and a reason", rs[1])
	}
	got, _, err := db.Payout(context.Background(), p.ID)
	if err != nil || got.Status != outlast.StatusSucceeded || got.Version != 3 {
		t.Fatalf("Payout = %+v, %v; want succeeded v3", got, err)
	}
	wantBalances(t, db, f.account, 600, 0, 400)
	rep, err := db.AuditLedger(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], p.ID) || !strings.Contains(rep.Problems[0], "failed") {
		t.Fatalf("audit problems = %q, want exactly the conflicting report on %s", rep.Problems, p.ID)
	}
}

func testNotificationsFailed(t *testing.T, db *store.DB) {
	f := seed(t, db, "f", 1000)
	p := mustPayout(t, db, f.req("k1", 250))
	n := note(p, outlast.StatusFailed)
	n.Reason = "account closed"
	rs := apply(t, db, n)
	wantOutcomes(t, rs, outlast.OutcomeApplied)
	if rs[0].Payout.FailureReason != "account closed" {
		t.Fatalf("FailureReason = %q, want %q", rs[0].Payout.FailureReason, "account closed")
	}
	wantBalances(t, db, f.account, 1000, 0, 0)
	if n := count(t, db, "SELECT COUNT(*) FROM outbox"); n != 0 {
		t.Fatalf("outbox = %d after failed, want 0", n)
	}
	wantOutcomes(t, apply(t, db, note(p, outlast.StatusSucceeded)), outlast.OutcomeConflict)
	wantBalances(t, db, f.account, 1000, 0, 0)
}

func testNotificationsRejected(t *testing.T, db *store.DB) {
	f := seed(t, db, "j", 1000)
	p := mustPayout(t, db, f.req("k1", 100))
	unknown := note(&outlast.Payout{ID: "00000000-0000-7000-8000-000000000000"}, outlast.StatusSucceeded)
	wrongChannel := note(p, outlast.StatusSucceeded)
	wrongChannel.Channel = "acb"
	invalid := note(p, outlast.StatusSucceeded)
	invalid.OccurredAt = time.Time{}
	rs := apply(t, db, unknown, wrongChannel, invalid)
	wantOutcomes(t, rs, outlast.OutcomeRejected, outlast.OutcomeRejected, outlast.OutcomeRejected)
	for i, want := range []string{"unknown payout", "channel mismatch", "occurred_at"} {
		if !strings.Contains(rs[i].Reason, want) {
			t.Fatalf("result %d reason = %q, want it to mention %q", i, rs[i].Reason, want)
		}
	}
	if rs[0].Payout != nil || rs[1].Payout == nil {
		t.Fatalf("payouts in results = %v, %v; want nil for the unknown one only", rs[0].Payout, rs[1].Payout)
	}
	wantBalances(t, db, f.account, 900, 100, 0)

	// Rejected is not seen: delivered again, each is judged again instead
	// of being acked as a duplicate; the unknown payout's report applies
	// once its payout exists.
	rs = apply(t, db, unknown, wrongChannel, unknown)
	wantOutcomes(t, rs, outlast.OutcomeRejected, outlast.OutcomeRejected, outlast.OutcomeRejected)
	db.NewID = func() string { return unknown.PayoutID }
	late := mustPayout(t, db, f.req("k2", 200))
	if late.ID != unknown.PayoutID {
		t.Fatalf("CreatePayout id = %q, want %q", late.ID, unknown.PayoutID)
	}
	rs = apply(t, db, unknown, unknown)
	wantOutcomes(t, rs, outlast.OutcomeApplied, outlast.OutcomeDuplicate)
	if rs[0].Payout.Status != outlast.StatusSucceeded {
		t.Fatalf("late payout = %s, want succeeded", rs[0].Payout.Status)
	}
	wantBalances(t, db, f.account, 700, 100, 200)
	wantCleanAudit(t, db)
}

func testNotificationsBatchDuplicates(t *testing.T, db *store.DB) {
	f := seed(t, db, "b", 1000)
	p1 := mustPayout(t, db, f.req("k1", 100))
	p2 := mustPayout(t, db, f.req("k2", 200))
	s1 := note(p1, outlast.StatusSucceeded)
	d2 := note(p2, outlast.StatusDispatched)
	s2 := note(p2, outlast.StatusSucceeded)
	dupe := *s1
	rs := apply(t, db, d2, s1, &dupe, s2, s1)
	wantOutcomes(t, rs, outlast.OutcomeApplied, outlast.OutcomeApplied, outlast.OutcomeDuplicate,
		outlast.OutcomeApplied, outlast.OutcomeDuplicate)
	wantBalances(t, db, f.account, 700, 0, 300)
	wantCleanAudit(t, db)
}

// testNotificationsConcurrent applies overlapping batches from several
// goroutines, as several committers would: every payout ends succeeded
// exactly once and nothing deadlocks for good.
func testNotificationsConcurrent(t *testing.T, db *store.DB) {
	const payouts, workers = 40, 4
	fs := []fixture{seed(t, db, "c1", 10000), seed(t, db, "c2", 10000)}
	var ns []*outlast.Notification
	for i := range payouts {
		p := mustPayout(t, db, fs[i%2].req(fmt.Sprintf("k%d", i), 100))
		ns = append(ns, note(p, outlast.StatusDispatched), note(p, outlast.StatusSucceeded))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	applied := 0
	for w := range workers {
		batch := append([]*outlast.Notification(nil), ns...)
		rand.New(rand.NewPCG(uint64(w), 1)).Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		wg.Go(func() {
			for attempt := 0; ; attempt++ {
				rs, err := db.Apply(context.Background(), outlast.FromLog, batch)
				if err != nil && attempt < 20 && outlast.ErrorCode(err) == outlast.EUNAVAILABLE {
					continue // a deadlock victim; the batch is retried whole
				}
				if err != nil {
					t.Errorf("ApplyNotifications: %v", err)
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
	wantBalances(t, db, fs[0].account, 10000-2000, 0, 2000)
	wantBalances(t, db, fs[1].account, 10000-2000, 0, 2000)
	wantCleanAudit(t, db)
}

func testOutbox(t *testing.T, db *store.DB) {
	ctx := context.Background()
	clk := withClock(db)
	f := seed(t, db, "o", 1000)
	p1 := mustPayout(t, db, f.req("k1", 100))
	clk.Advance(time.Millisecond)
	p2 := mustPayout(t, db, f.req("k2", 100))

	ds, err := db.ClaimDispatches(ctx, 10, time.Minute)
	if err != nil || len(ds) != 2 || ds[0].Payout.ID != p1.ID || ds[1].Payout.ID != p2.ID || ds[0].Attempts != 0 {
		t.Fatalf("ClaimDispatches = %v, %v; want p1, p2 with 0 attempts", ds, err)
	}
	if ds, err := db.ClaimDispatches(ctx, 10, time.Minute); err != nil || len(ds) != 0 {
		t.Fatalf("ClaimDispatches during the lease = %d, %v; want none", len(ds), err)
	}
	if err := db.RetryDispatch(ctx, p1.ID, clk.Now().Add(2*time.Minute), "timeout"); err != nil {
		t.Fatalf("RetryDispatch: %v", err)
	}
	wantCode(t, "RetryDispatch(unknown)", db.RetryDispatch(ctx, "nope", clk.Now(), "x"), outlast.ENOTFOUND)
	clk.Advance(time.Minute + time.Second) // p2's lease is over, p1 waits for notBefore
	ds, err = db.ClaimDispatches(ctx, 10, time.Minute)
	if err != nil || len(ds) != 1 || ds[0].Payout.ID != p2.ID {
		t.Fatalf("ClaimDispatches after the lease = %v, %v; want p2 only", ds, err)
	}
	clk.Advance(time.Minute)
	ds, err = db.ClaimDispatches(ctx, 1, time.Minute)
	if err != nil || len(ds) != 1 || ds[0].Payout.ID != p1.ID || ds[0].Attempts != 1 {
		t.Fatalf("ClaimDispatches after notBefore = %v, %v; want p1 with 1 attempt", ds, err)
	}

	got, err := db.MarkDispatched(ctx, p1.ID, "acb", "ref-1")
	if err != nil || got.Status != outlast.StatusDispatched || got.Channel != "acb" || got.PartnerRef != "ref-1" || got.Version != 2 {
		t.Fatalf("MarkDispatched = %+v, %v; want dispatched via acb ref-1 v2", got, err)
	}
	again, err := db.MarkDispatched(ctx, p1.ID, "acb", "ref-1")
	if err != nil || again.Version != 2 {
		t.Fatalf("MarkDispatched again = %+v, %v; want unchanged", again, err)
	}
	_, err = db.MarkDispatched(ctx, "nope", "acb", "r")
	wantCode(t, "MarkDispatched(unknown)", err, outlast.ENOTFOUND)
	// A retry for a payout already handed over is a no-op.
	if err := db.RetryDispatch(ctx, p1.ID, clk.Now(), "late"); err != nil {
		t.Fatalf("RetryDispatch(dispatched): %v", err)
	}
	clk.Advance(time.Hour)
	ds, err = db.ClaimDispatches(ctx, 10, time.Minute)
	if err != nil || len(ds) != 1 || ds[0].Payout.ID != p2.ID {
		t.Fatalf("ClaimDispatches = %v, %v; want only p2 left", ds, err)
	}
	wantBalances(t, db, f.account, 800, 200, 0)
	wantCleanAudit(t, db)
}

func testOutboxReject(t *testing.T, db *store.DB) {
	ctx := context.Background()
	f := seed(t, db, "rj", 1000)
	p := mustPayout(t, db, f.req("k1", 300))
	got, err := db.RejectDispatch(ctx, p.ID, "tcb", "invalid destination")
	if err != nil || got.Status != outlast.StatusFailed || got.FailureReason != "invalid destination" {
		t.Fatalf("RejectDispatch = %+v, %v; want failed with reason", got, err)
	}
	wantBalances(t, db, f.account, 1000, 0, 0)
	again, err := db.RejectDispatch(ctx, p.ID, "tcb", "again")
	if err != nil || again.Version != got.Version || again.FailureReason != "invalid destination" {
		t.Fatalf("RejectDispatch(failed) = %+v, %v; want unchanged", again, err)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM outbox"); n != 0 {
		t.Fatalf("outbox = %d, want 0", n)
	}
	p2 := mustPayout(t, db, f.req("k2", 300))
	if _, err := db.MarkDispatched(ctx, p2.ID, "tcb", "ref"); err != nil {
		t.Fatal(err)
	}
	_, err = db.RejectDispatch(ctx, p2.ID, "tcb", "late")
	wantCode(t, "RejectDispatch(dispatched)", err, outlast.ECONFLICT)
	_, err = db.RejectDispatch(ctx, "nope", "tcb", "x")
	wantCode(t, "RejectDispatch(unknown)", err, outlast.ENOTFOUND)
	wantBalances(t, db, f.account, 700, 300, 0)
	wantCleanAudit(t, db)
}

// testOutboxConcurrentClaimers: dispatchers claiming at once never get the
// same row within a lease.
func testOutboxConcurrentClaimers(t *testing.T, db *store.DB) {
	const payouts, claimers = 60, 4
	f := seed(t, db, "cc", 100000)
	for i := range payouts {
		mustPayout(t, db, f.req(fmt.Sprintf("k%d", i), 10))
	}
	var mu sync.Mutex
	seen := make(map[string]int)
	var wg sync.WaitGroup
	for range claimers {
		wg.Go(func() {
			for {
				ds, err := db.ClaimDispatches(context.Background(), 5, time.Hour)
				if err != nil {
					t.Errorf("ClaimDispatches: %v", err)
					return
				}
				if len(ds) == 0 {
					return
				}
				mu.Lock()
				for _, d := range ds {
					seen[d.Payout.ID]++
				}
				mu.Unlock()
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

func testInbox(t *testing.T, db *store.DB) {
	ctx := context.Background()
	clock := withClock(db)
	f := seed(t, db, "i", 1000)
	p := mustPayout(t, db, f.req("k1", 100))
	good := note(p, outlast.StatusSucceeded)
	unknown := note(&outlast.Payout{ID: "00000000-0000-7000-8000-000000000001"}, outlast.StatusFailed)
	if err := db.AppendInbox(ctx, []*outlast.Notification{good, unknown, good}); err != nil {
		t.Fatalf("AppendInbox: %v", err)
	}
	bad := note(p, "pending")
	wantCode(t, "AppendInbox(invalid)", db.AppendInbox(ctx, []*outlast.Notification{bad}), outlast.EVALIDATION)
	if rep := wantCleanAudit(t, db); rep.Inbox != 3 {
		t.Fatalf("audit inbox = %d, want 3", rep.Inbox)
	}

	// Applied and rejected: the applied entry leaves, the rejected one is
	// due again after its RetryAfter.
	es := claimInbox(t, db, 2, 1, 1)
	rs := applyEntries(t, db, es)
	wantOutcomes(t, rs, outlast.OutcomeApplied, outlast.OutcomeRejected)
	rs[1].RetryAfter = time.Minute
	settleInbox(t, db, es, rs)
	es = claimInbox(t, db, 10, 1) // the repeat of good; unknown is not due
	wantOutcomes(t, applyEntries(t, db, es), outlast.OutcomeDuplicate)
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
	wantBalances(t, db, f.account, 900, 0, 100)

	// Replayed, it is back in the inbox with its deliveries reset; a claim
	// whose lease runs out is claimed again.
	for _, id := range []string{"log:1", "inbox:x", "inbox:0", "7"} {
		_, err := db.ReplayDeadLetters(ctx, []string{dls[0].ID, id})
		wantCode(t, fmt.Sprintf("ReplayDeadLetters(%q)", id), err, outlast.EVALIDATION)
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
	claimInbox(t, db, 10, 1)
	claimInbox(t, db, 10)
	clock.Advance(31 * time.Second)
	claimInbox(t, db, 10, 2)
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
	return apply(t, db, ns...)
}

func settleInbox(t *testing.T, db *store.DB, es []outlast.InboxEntry, rs []outlast.ApplyResult) {
	t.Helper()
	if err := db.SettleInbox(context.Background(), es, rs); err != nil {
		t.Fatalf("SettleInbox: %v", err)
	}
}

// testAuditRandomWorkload runs ~500 random ledger operations and expects
// the audit to find the ledger consistent and the counts right.
func testAuditRandomWorkload(t *testing.T, db *store.DB) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(42, 7))
	fs := []fixture{seed(t, db, "w1", 5000), seed(t, db, "w2", 5000), seed(t, db, "w3", 0)}
	var ps []*outlast.Payout
	for i := range 500 {
		f := fs[rng.IntN(len(fs))]
		switch op := rng.IntN(10); {
		case op < 4:
			p, _, err := db.CreatePayout(ctx, f.req(fmt.Sprintf("k%d", rng.IntN(400)), 1+rng.Int64N(300)))
			if err == nil {
				ps = append(ps, p)
			} else if c := outlast.ErrorCode(err); c != outlast.EINSUFFICIENT && c != outlast.EIDEMPOTENCY {
				t.Fatalf("op %d CreatePayout: %v", i, err)
			}
		case op < 5:
			if _, err := db.FundAccount(ctx, f.account, 1+rng.Int64N(500)); err != nil {
				t.Fatalf("op %d FundAccount: %v", i, err)
			}
		case len(ps) == 0:
		case op < 8:
			statuses := []outlast.PayoutStatus{outlast.StatusDispatched, outlast.StatusSucceeded, outlast.StatusFailed}
			batch := make([]*outlast.Notification, 1+rng.IntN(5))
			for j := range batch {
				batch[j] = note(ps[rng.IntN(len(ps))], statuses[rng.IntN(len(statuses))])
			}
			apply(t, db, batch...)
		case op < 9:
			if _, err := db.MarkDispatched(ctx, ps[rng.IntN(len(ps))].ID, "tcb", "r"); err != nil {
				t.Fatalf("op %d MarkDispatched: %v", i, err)
			}
		default:
			_, err := db.RejectDispatch(ctx, ps[rng.IntN(len(ps))].ID, "tcb", "no")
			if err != nil && outlast.ErrorCode(err) != outlast.ECONFLICT {
				t.Fatalf("op %d RejectDispatch: %v", i, err)
			}
		}
	}
	rep, err := db.AuditLedger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		if !strings.Contains(p, "reported") { // conflicts are expected from random reports
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
	counts, err := db.PayoutCounts(ctx)
	if err != nil || fmt.Sprint(counts) != fmt.Sprint(rep.Payouts) {
		t.Fatalf("PayoutCounts = %v, %v; want %v", counts, err, rep.Payouts)
	}
}

func testAuditTampering(t *testing.T, db *store.DB) {
	ctx := context.Background()
	f := seed(t, db, "t", 1000)
	p := mustPayout(t, db, f.req("k1", 100))
	wantCleanAudit(t, db)
	if _, err := db.SQL().ExecContext(ctx, "UPDATE accounts SET available = available + 5 WHERE id = $1", f.account); err != nil {
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
		account = account || strings.Contains(pr, "account "+f.account)
		payout = payout || strings.Contains(pr, "payout "+p.ID)
	}
	if !account || !payout {
		t.Fatalf("audit problems = %q; want the tampered account and payout", rep.Problems)
	}
}

func testPagination(t *testing.T, db *store.DB) {
	ctx := context.Background()
	f := seed(t, db, "p", 10000)
	g := seed(t, db, "q", 10000)
	var ids []string
	for i := range 7 {
		ids = append(ids, mustPayout(t, db, f.req(fmt.Sprintf("k%d", i), 10)).ID)
	}
	mustPayout(t, db, g.req("other", 10))
	var got []string
	cursor := ""
	for page := 0; ; page++ {
		ps, next, err := db.Payouts(ctx, outlast.PayoutFilter{ClientID: f.client, Cursor: cursor, Limit: 3})
		if err != nil {
			t.Fatalf("Payouts page %d: %v", page, err)
		}
		for _, p := range ps {
			got = append(got, p.ID)
		}
		if next == "" {
			break
		}
		cursor = next
		if page > 5 {
			t.Fatal("Payouts never ends")
		}
	}
	// Newest first by id: UUIDv7 orders by millisecond, and payouts made
	// within one millisecond in random order, so compare with sorted ids.
	want := slices.Sorted(slices.Values(ids))
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Payouts pages = %v, want %v", got, want)
	}
	if _, err := db.MarkDispatched(ctx, ids[2], "tcb", "r"); err != nil {
		t.Fatal(err)
	}
	ps, next, err := db.Payouts(ctx, outlast.PayoutFilter{ClientID: f.client, AccountID: f.account, Status: outlast.StatusDispatched})
	if err != nil || len(ps) != 1 || ps[0].ID != ids[2] || next != "" {
		t.Fatalf("Payouts(dispatched) = %v, %q, %v; want only %s", ps, next, err, ids[2])
	}
	ps, _, err = db.Payouts(ctx, outlast.PayoutFilter{ClientID: f.client, AccountID: g.account})
	if err != nil || len(ps) != 0 {
		t.Fatalf("Payouts(other client's account) = %v, %v; want none", ps, err)
	}
	_, _, err = db.Payouts(ctx, outlast.PayoutFilter{ClientID: f.client, Cursor: "!!"})
	wantCode(t, "Payouts(bad cursor)", err, outlast.EINVALID)
	_, _, err = db.Payouts(ctx, outlast.PayoutFilter{})
	wantCode(t, "Payouts(no client)", err, outlast.EINVALID)

	var each []string
	if err := db.EachPayout(ctx, func(p *outlast.Payout) error { each = append(each, p.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(each) != 8 {
		t.Fatalf("EachPayout visited %d, want 8", len(each))
	}
	for i := 1; i < len(each); i++ {
		if each[i-1] >= each[i] {
			t.Fatalf("EachPayout order %v, want ascending ids", each)
		}
	}
	stop := errors.New("stop")
	n := 0
	if err := db.EachPayout(ctx, func(*outlast.Payout) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("EachPayout with a failing fn = %v after %d calls, want stop after 1", err, n)
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
	f := seed(t, db, "u", 100)
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, _, err := db.Account(ctx, f.account)
	wantCode(t, "Account after Close", err, outlast.EUNAVAILABLE)
	if outlast.ErrorRetryAfter(err) <= 0 {
		t.Fatalf("RetryAfter = %v, want > 0", outlast.ErrorRetryAfter(err))
	}
	_, _, err = db.CreatePayout(ctx, f.req("k", 1))
	wantCode(t, "CreatePayout after Close", err, outlast.EUNAVAILABLE)
	if strings.Contains(outlast.ErrorMessage(err), "sql") {
		t.Fatalf("message %q leaks internals", outlast.ErrorMessage(err))
	}
}

// testInvariantPanics: a ledger whose balances no longer add up panics in
// the next transaction that touches the account, and commits nothing.
func testInvariantPanics(t *testing.T, db *store.DB) {
	ctx := context.Background()
	f := seed(t, db, "v", 1000)
	if _, err := db.SQL().ExecContext(ctx, "UPDATE accounts SET funded = funded + 1 WHERE id = $1", f.account); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Fatal("FundAccount on a broken account did not panic")
			}
		}()
		db.FundAccount(ctx, f.account, 10)
	}()
	a, _, err := db.Account(ctx, f.account)
	if err != nil || a.Funded != 1001 || a.Available != 1000 {
		t.Fatalf("Account = %+v, %v; want the tampered state and nothing of the panicked funding", a, err)
	}
	// The connection went back to the pool clean.
	g := seed(t, db, "v2", 10)
	wantBalances(t, db, g.account, 10, 0, 0)
}
