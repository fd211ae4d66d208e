package reconcile_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/reconcile"
	"github.com/outlast/outlast/store"
)

// bank is a fake partner's status endpoint: answers by payout id; an id
// it does not list it has no record of.
type bank struct {
	mu      sync.Mutex
	answers map[string]*reconcile.Answer
	errs    map[string]error
	asked   []string
}

func (b *bank) status(_ context.Context, channel, payoutID string) (*reconcile.Answer, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.asked = append(b.asked, payoutID)
	if err := b.errs[payoutID]; err != nil {
		return nil, err
	}
	a, ok := b.answers[payoutID]
	if !ok || channel != "tcb" {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "partner %s has no payout %s", channel, payoutID)
	}
	cp := *a
	return &cp, nil
}

func TestReconcilerMemory(t *testing.T) {
	m := ledgertest.NewMemory()
	clock := testenv.NewClock(time.Now().UTC())
	m.Now = clock.Now
	testReconciler(t, m, clock)
}

func TestReconcilerStore(t *testing.T) {
	testenv.EachDatabase(t, func(t *testing.T, dsn string) {
		db, err := store.Open(context.Background(), dsn)
		if err != nil {
			t.Fatalf("store.Open: %v", err)
		}
		t.Cleanup(func() { db.Close() })
		clock := testenv.NewClock(time.Now().UTC())
		db.Now = clock.Now
		testReconciler(t, db, clock)
	})
}

// testReconciler: payouts dispatched longer than After are asked about,
// oldest first, at most Batch a cycle; final answers apply once however
// many reconcilers race; a "dispatched" answer, an unknown payout and a
// failed query change nothing and are asked about again; an answer
// under another partner ref is a conflict, never applied; a payout the
// bank has not known for LostAfter is filed for a human; a human's
// resolution settles both.
func testReconciler(t *testing.T, l outlast.Ledger, clock *testenv.Clock) {
	ctx := context.Background()
	f := ledgertest.Seed(t, l, "rec", 1000)
	keys := []string{"paid", "refused", "paying", "unknown", "broken", "otherref"}
	ps := map[string]*outlast.Payout{}
	for _, k := range keys {
		p := ledgertest.MustPayout(t, l, f.Req(k, 100))
		if _, err := l.MarkDispatched(ctx, p.ID, "tcb", "ref-"+k); err != nil {
			t.Fatalf("MarkDispatched(%s): %v", k, err)
		}
		ps[k] = p
	}
	clock.Advance(2 * time.Minute)
	recent := ledgertest.MustPayout(t, l, f.Req("recent", 100))
	if _, err := l.MarkDispatched(ctx, recent.ID, "tcb", "ref-recent"); err != nil {
		t.Fatal(err)
	}
	b := &bank{answers: map[string]*reconcile.Answer{
		ps["paid"].ID:     {PartnerRef: "ref-paid", Status: outlast.StatusSucceeded},
		ps["refused"].ID:  {PartnerRef: "ref-refused", Status: outlast.StatusFailed, Reason: "account closed"},
		ps["paying"].ID:   {PartnerRef: "ref-paying", Status: outlast.StatusDispatched},
		ps["otherref"].ID: {PartnerRef: "ref-second", Status: outlast.StatusSucceeded},
		recent.ID:         {PartnerRef: "ref-recent", Status: outlast.StatusSucceeded},
	}, errs: map[string]error{ps["broken"].ID: outlast.Errorf(outlast.EUNAVAILABLE, "partner down")}}
	newRec := func(batch int) *reconcile.Reconciler {
		r, err := reconcile.New(reconcile.Config{Ledger: l, Status: b.status, After: time.Minute,
			Batch: batch, QueryRate: 1000, Now: clock.Now, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// A batch of 2 takes the two least recently changed.
	rep, err := newRec(2).Cycle(ctx)
	if err != nil {
		t.Fatalf("Cycle: %v", err)
	}
	if want := []string{ps["paid"].ID, ps["refused"].ID}; !slices.Equal(rep.Payouts, want) {
		t.Fatalf("Cycle(batch 2) asked about %v, want %v (paid, refused)", rep.Payouts, want)
	}

	// Two reconcilers (two instances) race over the rest.
	var wg sync.WaitGroup
	reps := make([]*reconcile.Report, 2)
	for i := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if reps[i], err = newRec(0).Cycle(ctx); err != nil {
				t.Errorf("Cycle: %v", err)
			}
		}()
	}
	wg.Wait()
	sum := map[string]int{}
	for k, n := range rep.Repairs {
		sum[k] += n
	}
	for _, r := range reps {
		if slices.Contains(r.Payouts, recent.ID) {
			t.Errorf("Cycle asked about %s, dispatched less than After ago", recent.ID)
		}
		for k, n := range r.Repairs {
			sum[k] += n
		}
	}
	want := map[string]int{reconcile.RepairSucceeded: 1, reconcile.RepairFailed: 1, reconcile.RepairUnchanged: 2,
		reconcile.RepairNotFound: 2, reconcile.RepairError: 2, reconcile.RepairConflict: 2}
	if !mapsEqual(sum, want) {
		t.Fatalf("repairs = %v, want %v", sum, want)
	}
	wantStatus := map[string]outlast.PayoutStatus{"paid": outlast.StatusSucceeded, "refused": outlast.StatusFailed,
		"paying": outlast.StatusDispatched, "unknown": outlast.StatusDispatched, "broken": outlast.StatusDispatched,
		"otherref": outlast.StatusDispatched}
	for k, st := range wantStatus {
		p, _, err := l.Payout(ctx, ps[k].ID)
		if err != nil || p.Status != st {
			t.Errorf("payout %s: %v, %v; want %s", k, p, err, st)
		}
	}
	// funded 1000: 100 paid, 100 released, 5 × 100 still held.
	ledgertest.WantBalances(t, l, f.Account, 400, 500, 100)

	// The next cycle asks again about those still dispatched, not about
	// those repaired.
	rep, err = newRec(0).Cycle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantAsked := []string{ps["paying"].ID, ps["unknown"].ID, ps["broken"].ID, ps["otherref"].ID}
	if !slices.Equal(rep.Payouts, wantAsked) {
		t.Fatalf("third cycle asked about %v, want %v (paying, unknown, broken, otherref)", rep.Payouts, wantAsked)
	}
	// The conflicting answer is the audit's to show a human; nothing else.
	auditor, _ := l.(outlast.Auditor)
	if auditor != nil {
		r, err := auditor.AuditLedger(ctx)
		if err != nil || len(r.Problems) != 1 || !strings.Contains(r.Problems[0], ps["otherref"].ID) {
			t.Fatalf("AuditLedger = %v, %v; want one problem, the conflict on %s", r, err, ps["otherref"].ID)
		}
	}

	// A bank that has said "no such payout" for LostAfter (an hour) about
	// a payout it accepted gets it filed for a human, once.
	clock.Advance(reconcile.LostAfterDefault)
	for range 2 {
		if _, err := newRec(0).Cycle(ctx); err != nil {
			t.Fatal(err)
		}
	}
	lost, err := l.Exceptions(ctx, outlast.ExceptionFilter{Kind: outlast.ExceptionUnknownToBank})
	if err != nil || len(lost) != 1 || lost[0].PayoutID != ps["unknown"].ID || lost[0].FiledBy != string(outlast.FromReconciler) {
		t.Fatalf("unknown_to_bank exceptions = %+v, %v; want one, about %s", lost, err, ps["unknown"].ID)
	}
	// Each is settled by a human, the payout with it: the bank's statement
	// shows the unknown one never paid, the other paid under its ref.
	conflict, err := l.Exceptions(ctx, outlast.ExceptionFilter{PayoutID: ps["otherref"].ID})
	if err != nil || len(conflict) != 1 {
		t.Fatalf("exceptions of %s = %+v, %v; want the conflict's", ps["otherref"].ID, conflict, err)
	}
	for e, status := range map[*outlast.Exception]outlast.PayoutStatus{lost[0]: outlast.StatusFailed, conflict[0]: outlast.StatusSucceeded} {
		if _, _, err := l.ResolveException(ctx, e.ID, &outlast.Resolution{Action: outlast.ResolveNoMoney, Payout: status,
			Reason: "per the bank's statement", By: "ops"}); err != nil {
			t.Fatalf("ResolveException(%d): %v", e.ID, err)
		}
	}
	// funded 1000: paid, otherref and recent (now older than After) paid,
	// refused and unknown released, paying and broken still held.
	ledgertest.WantBalances(t, l, f.Account, 500, 200, 300)
	if auditor != nil {
		if r, err := auditor.AuditLedger(ctx); err != nil || len(r.Problems) != 0 {
			t.Fatalf("AuditLedger after resolving = %v, %v; want clean", r, err)
		}
	}
}

func mapsEqual(a, b map[string]int) bool {
	for k, v := range a {
		if v != 0 && b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// deadLetters is a fake dead-letter store that records replays.
type deadLetters struct {
	letters  []outlast.DeadLetter
	replayed []string
}

func (d *deadLetters) DeadLetters(context.Context, int) ([]outlast.DeadLetter, error) {
	return d.letters, nil
}

func (d *deadLetters) ReplayDeadLetters(_ context.Context, ids []string) (int, error) {
	d.replayed = append(d.replayed, ids...)
	return len(ids), nil
}

// TestReplayMendedDeadLetters: a dead letter is replayed once its payout
// exists and would take it; one whose payout is still unknown, that
// names another channel, or that could not be decoded stays.
func TestReplayMendedDeadLetters(t *testing.T) {
	ctx := context.Background()
	m := ledgertest.NewMemory()
	f := ledgertest.Seed(t, m, "dl", 1000)
	p := ledgertest.MustPayout(t, m, f.Req("late", 100))
	mended := ledgertest.Note(p, outlast.StatusSucceeded)
	otherChannel := ledgertest.Note(p, outlast.StatusSucceeded)
	otherChannel.Channel = "acb"
	unknown := ledgertest.Note(&outlast.Payout{ID: "00000000-0000-7000-8000-000000000001"}, outlast.StatusSucceeded)
	dl := &deadLetters{letters: []outlast.DeadLetter{
		{ID: "log:1", Notification: mended, Reason: "unknown payout"},
		{ID: "log:2", Notification: otherChannel, Reason: "channel mismatch"},
		{ID: "log:3", Notification: unknown, Reason: "unknown payout"},
		{ID: "log:4", Raw: []byte("{"), Reason: "undecodable"},
	}}
	r, err := reconcile.New(reconcile.Config{Ledger: m, Status: (&bank{}).status, DeadLetters: []outlast.DeadLetters{dl},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Cycle(ctx)
	if err != nil {
		t.Fatalf("Cycle: %v", err)
	}
	if rep.Replayed != 1 || !slices.Equal(dl.replayed, []string{"log:1"}) {
		t.Fatalf("Cycle replayed %d: %v; want 1: [log:1]", rep.Replayed, dl.replayed)
	}
}

// TestRunRepairsAndStops: Run repairs on its own schedule and returns
// once its context is cancelled.
func TestRunRepairsAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := ledgertest.NewMemory()
	f := ledgertest.Seed(t, m, "run", 1000)
	p := ledgertest.MustPayout(t, m, f.Req("run", 100))
	if _, err := m.MarkDispatched(ctx, p.ID, "tcb", "ref-run"); err != nil {
		t.Fatal(err)
	}
	b := &bank{answers: map[string]*reconcile.Answer{p.ID: {PartnerRef: "ref-run", Status: outlast.StatusSucceeded}}}
	r, err := reconcile.New(reconcile.Config{Ledger: m, Status: b.status, After: time.Millisecond,
		Every: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	testenv.WaitFor(t, 10*time.Second, "payout succeeded by the reconciler", func() bool {
		got, _, err := m.Payout(ctx, p.ID)
		return err == nil && got.Status == outlast.StatusSucceeded
	})
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Fatalf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestReconcilerPagesPastStuckPayouts: payouts a bank keeps failing to
// answer for do not hold back those behind them: successive cycles page
// on through every stale payout, then start again from the oldest. On
// the memory ledger and the real store.
func TestReconcilerPagesPastStuckPayouts(t *testing.T) {
	run := func(t *testing.T, l outlast.Ledger, clock *testenv.Clock) {
		ctx := context.Background()
		f := ledgertest.Seed(t, l, "page", 1000)
		var ids []string
		errs := map[string]error{}
		for i := range 5 {
			p := ledgertest.MustPayout(t, l, f.Req("p"+string(rune('a'+i)), 100))
			if _, err := l.MarkDispatched(ctx, p.ID, "tcb", "ref-"+p.ID); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, p.ID)
			errs[p.ID] = outlast.Errorf(outlast.EUNAVAILABLE, "partner down")
			clock.Advance(time.Second)
		}
		clock.Advance(2 * time.Minute)
		b := &bank{errs: errs}
		r, err := reconcile.New(reconcile.Config{Ledger: l, Status: b.status, After: time.Minute,
			Batch: 2, QueryRate: 1000, Now: clock.Now, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		var asked [][]string
		for range 4 {
			rep, err := r.Cycle(ctx)
			if err != nil {
				t.Fatal(err)
			}
			asked = append(asked, rep.Payouts)
		}
		want := [][]string{ids[0:2], ids[2:4], ids[4:5], ids[0:2]}
		for i := range want {
			if !slices.Equal(asked[i], want[i]) {
				t.Fatalf("cycle %d asked about %v, want %v (all cycles: %v)", i+1, asked[i], want[i], asked)
			}
		}
	}
	t.Run("memory", func(t *testing.T) {
		m := ledgertest.NewMemory()
		clock := testenv.NewClock(time.Now().UTC())
		m.Now = clock.Now
		run(t, m, clock)
	})
	testenv.EachDatabase(t, func(t *testing.T, dsn string) {
		db, err := store.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		clock := testenv.NewClock(time.Now().UTC())
		db.Now = clock.Now
		run(t, db, clock)
	})
}
