package reconcile_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/reconcile"
)

// dispatchedPayouts creates n payouts on a memory ledger, dispatched to
// "tcb" a minute before clock's time, and a bank that answers each
// succeeded.
func dispatchedPayouts(t *testing.T, n int) (*ledgertest.Memory, *testenv.Clock, *bank, []string) {
	t.Helper()
	m := ledgertest.NewMemory()
	clock := testenv.NewClock(time.Now().UTC())
	m.Now = clock.Now
	f := ledgertest.Seed(t, m, "backlog", int64(n)*100)
	b := &bank{answers: map[string]*reconcile.Answer{}}
	ids := make([]string, n)
	for i := range ids {
		p := ledgertest.MustPayout(t, m, f.Req(fmt.Sprintf("p%d", i), 100))
		ref := "ref-" + p.ID
		if _, err := m.MarkDispatched(context.Background(), p.ID, "tcb", ref); err != nil {
			t.Fatal(err)
		}
		b.answers[p.ID] = &reconcile.Answer{PartnerRef: ref, Status: outlast.StatusSucceeded}
		ids[i] = p.ID
	}
	clock.Advance(time.Minute)
	return m, clock, b, ids
}

// TestRunWorksThroughBacklog: a backlog many batches deep (seed 000's
// lost notifications) is repaired at QueryRate, one full batch after
// another, not at one batch per Every: 20 batches here, which at one per
// Every (2 s, at least 1.6 s with jitter) would take 32 s or more.
func TestRunWorksThroughBacklog(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, clock, b, ids := dispatchedPayouts(t, 100)
	r, err := reconcile.New(reconcile.Config{Ledger: m, Status: b.status, After: time.Second, Now: clock.Now,
		Every: 2 * time.Second, Batch: 5, QueryRate: 10_000, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	stop := testenv.Start(t, "reconciler", func(ctx context.Context) error {
		if err := r.Run(ctx); err != context.Canceled {
			return err
		}
		return nil
	})
	defer stop()
	testenv.WaitFor(t, 15*time.Second, "every payout of the backlog succeeded by the reconciler", func() bool {
		for _, id := range ids {
			p, _, err := m.Payout(ctx, id)
			if err != nil || p.Status != outlast.StatusSucceeded {
				return false
			}
		}
		return true
	})
}

// TestCycleQueriesConcurrently: a cycle keeps several status queries in
// flight, since a real bank takes tens of milliseconds to answer each,
// and still never starts them faster than QueryRate.
func TestCycleQueriesConcurrently(t *testing.T) {
	const (
		payouts   = 50
		queryRate = 200.0
		together  = 4 // queries the bank holds until that many are in flight
	)
	m, clock, b, _ := dispatchedPayouts(t, payouts)
	var mu sync.Mutex
	inflight, peak := 0, 0
	arrived := make(chan struct{})
	var arrive sync.Once
	status := func(ctx context.Context, channel, payoutID string) (*reconcile.Answer, error) {
		mu.Lock()
		inflight++
		peak = max(peak, inflight)
		if inflight == together {
			arrive.Do(func() { close(arrived) })
		}
		mu.Unlock()
		defer func() { mu.Lock(); inflight--; mu.Unlock() }()
		// One at a time, every query would wait out the timeout here.
		select {
		case <-arrived:
		case <-time.After(time.Second):
		}
		return b.status(ctx, channel, payoutID)
	}
	r, err := reconcile.New(reconcile.Config{Ledger: m, Status: status, After: time.Second, Now: clock.Now,
		Batch: payouts, QueryRate: queryRate, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rep, err := r.Cycle(context.Background())
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("Cycle: %v", err)
	}
	if rep.Repairs[reconcile.RepairSucceeded] != payouts {
		t.Fatalf("Cycle repaired %v, want %d succeeded", rep.Repairs, payouts)
	}
	if peak < together {
		t.Errorf("at most %d status queries were in flight, want %d", peak, together)
	}
	// Query i starts i/QueryRate after the first.
	if least := time.Duration(float64(payouts-1) / queryRate * float64(time.Second)); elapsed < least {
		t.Errorf("Cycle made %d queries in %v, faster than QueryRate %v/s allows (%v)", payouts, elapsed, queryRate, least)
	}
}
