package ledger

import (
	"context"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/backoff"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/store"
)

// TestConformance runs the ledger conformance suite on the cached ledger
// over the store, on SQLite and on PostgreSQL, and over the in-memory
// ledger other packages' tests use: the cache in front must not change a
// single answer.
func TestConformance(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(t *testing.T) string) {
		ledgertest.Run(t, func(t *testing.T) *ledgertest.Harness {
			db, err := store.Open(context.Background(), dsn(t))
			if err != nil {
				t.Fatalf("store.Open: %v", err)
			}
			t.Cleanup(func() { db.Close() })
			clock := testenv.NewClock(time.Now().UTC())
			db.Now = clock.Now
			return &ledgertest.Harness{Ledger: newLedger(t, db, Config{}), Clock: clock, Auditor: db,
				SetNewID: func(newID func() string) { db.NewID = newID }}
		})
	})
	t.Run("memory", func(t *testing.T) {
		ledgertest.Run(t, func(t *testing.T) *ledgertest.Harness {
			m := ledgertest.NewMemory()
			clock := testenv.NewClock(time.Now().UTC())
			m.Now = clock.Now
			return &ledgertest.Harness{Ledger: newLedger(t, m, Config{}), Clock: clock,
				SetNewID: func(newID func() string) { m.NewID = newID }}
		})
	})
}

func newLedger(t *testing.T, store outlast.Ledger, cfg Config) *Ledger {
	t.Helper()
	l, err := New(store, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestRejectedDisposition: what becomes of a rejected notification is the
// ledger's addition to what it wraps, the one rule for every source:
// delivered again after a growing delay while under the bound,
// dead-lettered once it reaches it. A remembered outcome carries neither.
func TestRejectedDisposition(t *testing.T) {
	noJitter := func() float64 { return 0 } // every delay at its ceiling
	l := newLedger(t, ledgertest.NewMemory(), Config{RejectDeliveriesMax: 4,
		RejectRetry: backoff.Policy{Base: time.Second, Max: 4 * time.Second, Rand: noJitter}})
	f := ledgertest.Seed(t, l, "j", 1000)
	p := ledgertest.MustPayout(t, l, f.Req("k1", 100))
	for _, tc := range []struct {
		deliveries int
		retryAfter time.Duration
		deadLetter bool
	}{
		{0, time.Second, false}, // 0 counts as 1
		{1, time.Second, false},
		{2, 2 * time.Second, false},
		{3, 4 * time.Second, false},
		{4, 0, true},
		{9, 0, true},
	} {
		unknown := ledgertest.Note(&outlast.Payout{ID: "missing"}, outlast.StatusSucceeded)
		unknown.Deliveries = tc.deliveries
		r := ledgertest.Apply(t, l, unknown)[0]
		if r.Outcome != outlast.OutcomeRejected || r.RetryAfter != tc.retryAfter || r.DeadLetter != tc.deadLetter {
			t.Errorf("Apply(rejected, %d deliveries) = %+v, want rejected, retry after %v, dead letter %v",
				tc.deliveries, r, tc.retryAfter, tc.deadLetter)
		}
	}
	applied := ledgertest.Note(p, outlast.StatusDispatched)
	applied.Deliveries = 9
	stale := ledgertest.Note(p, outlast.StatusDispatched)
	stale.Deliveries = 9
	rs := ledgertest.Apply(t, l, applied, applied, stale)
	ledgertest.WantOutcomes(t, rs, outlast.OutcomeApplied, outlast.OutcomeDuplicate, outlast.OutcomeStale)
	for i, r := range rs {
		if r.RetryAfter != 0 || r.DeadLetter {
			t.Errorf("result %d = %+v, want no retry and no dead letter for a remembered outcome", i, r)
		}
	}
}
