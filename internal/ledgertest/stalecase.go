package ledgertest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/outlast/outlast"
)

// testStalePayouts: StalePayouts lists one status's payouts changed
// before a time, least recently changed first, up to a limit; PayoutAges
// counts them by age.
func testStalePayouts(t *testing.T, h *Harness) {
	if h.Clock == nil {
		t.Skip("needs the ledger's clock")
	}
	ctx := context.Background()
	l := h.Ledger
	f := Seed(t, l, "stale", 1000)
	t0 := h.Clock.Now()
	p1 := MustPayout(t, l, f.Req("s1", 10))
	h.Clock.Advance(10 * time.Second)
	p2 := MustPayout(t, l, f.Req("s2", 10))
	h.Clock.Advance(10 * time.Second)
	p3 := MustPayout(t, l, f.Req("s3", 10))
	h.Clock.Advance(10 * time.Second)
	WantOutcomes(t, Apply(t, l, Note(p2, outlast.StatusDispatched)), outlast.OutcomeApplied)
	now := h.Clock.Now()

	var staleAfter func(status outlast.PayoutStatus, before time.Time, after outlast.StaleCursor, limit int) []string
	stale := func(status outlast.PayoutStatus, before time.Time, limit int) []string {
		t.Helper()
		return staleAfter(status, before, outlast.StaleCursor{}, limit)
	}
	staleAfter = func(status outlast.PayoutStatus, before time.Time, after outlast.StaleCursor, limit int) []string {
		t.Helper()
		ps, err := l.StalePayouts(ctx, status, before, after, limit)
		if err != nil {
			t.Fatalf("StalePayouts(%s, %v, %d): %v", status, before, limit, err)
		}
		ids := []string{}
		for _, p := range ps {
			ids = append(ids, p.ID)
		}
		return ids
	}
	for _, c := range []struct {
		status outlast.PayoutStatus
		before time.Time
		limit  int
		want   []string
	}{
		{outlast.StatusPending, now, 0, []string{p1.ID, p3.ID}},
		{outlast.StatusPending, now, 1, []string{p1.ID}},
		{outlast.StatusPending, t0.Add(15 * time.Second), 0, []string{p1.ID}},
		{outlast.StatusPending, t0, 0, []string{}},
		// p2 changed at now: not before it.
		{outlast.StatusDispatched, now, 0, []string{}},
		{outlast.StatusDispatched, now.Add(time.Second), 0, []string{p2.ID}},
		{outlast.StatusSucceeded, now.Add(time.Second), 0, []string{}},
	} {
		if got := stale(c.status, c.before, c.limit); !slices.Equal(got, c.want) {
			t.Errorf("StalePayouts(%s, t0+%v, %d) = %v, want %v", c.status, c.before.Sub(t0), c.limit, got, c.want)
		}
	}
	// Paging on from a position: after p1, then after p3 (the end).
	if got := staleAfter(outlast.StatusPending, now, outlast.StaleCursorOf(p1), 0); !slices.Equal(got, []string{p3.ID}) {
		t.Errorf("StalePayouts after p1 = %v, want [p3]", got)
	}
	if got := staleAfter(outlast.StatusPending, now, outlast.StaleCursorOf(p3), 0); len(got) != 0 {
		t.Errorf("StalePayouts after p3 = %v, want none", got)
	}
	_, err := l.StalePayouts(ctx, "lost", now, outlast.StaleCursor{}, 0)
	WantCode(t, "StalePayouts(unknown status)", err, outlast.EVALIDATION)

	counts, oldest, err := l.PayoutAges(ctx, outlast.StatusPending, []time.Time{now, t0.Add(15 * time.Second), t0})
	if err != nil {
		t.Fatalf("PayoutAges: %v", err)
	}
	if !slices.Equal(counts, []int{2, 1, 0}) || !oldest.Equal(p1.UpdatedAt) {
		t.Errorf("PayoutAges(pending) = %v, oldest %v; want [2 1 0], oldest %v", counts, oldest, p1.UpdatedAt)
	}
	counts, oldest, err = l.PayoutAges(ctx, outlast.StatusFailed, []time.Time{now})
	if err != nil || !slices.Equal(counts, []int{0}) || !oldest.IsZero() {
		t.Errorf("PayoutAges(failed) = %v, %v, %v; want [0], zero time, nil", counts, oldest, err)
	}
	_, _, err = l.PayoutAges(ctx, "lost", nil)
	WantCode(t, "PayoutAges(unknown status)", err, outlast.EVALIDATION)
}
