package reconcile

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
)

// TestAgeGauges: a cycle sets the payouts-by-age and oldest-age gauges
// from the ledger.
func TestAgeGauges(t *testing.T) {
	ctx := context.Background()
	m := ledgertest.NewMemory()
	clock := testenv.NewClock(time.Now().UTC())
	m.Now = clock.Now
	f := ledgertest.Seed(t, m, "gauge", 1000)
	old := ledgertest.MustPayout(t, m, f.Req("old", 100))
	clock.Advance(10 * time.Minute)
	ledgertest.MustPayout(t, m, f.Req("new", 100))
	p := ledgertest.MustPayout(t, m, f.Req("sent", 100))
	if _, err := m.MarkDispatched(ctx, p.ID, "tcb", "ref-sent"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	status := func(context.Context, string, string) (*Answer, error) {
		return &Answer{PartnerRef: "ref-sent", Status: outlast.StatusDispatched}, nil
	}
	r, err := New(Config{Ledger: m, Status: status, Now: clock.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Cycle(ctx); err != nil {
		t.Fatalf("Cycle: %v", err)
	}
	for _, c := range []struct {
		status, olderThan string
		want              float64
	}{
		{"pending", "1m", 2}, {"pending", "5m", 1}, {"pending", "15m", 0},
		{"dispatched", "1m", 1}, {"dispatched", "5m", 0},
	} {
		if got := testutil.ToFloat64(payoutsByAge.WithLabelValues(c.status, c.olderThan)); got != c.want {
			t.Errorf("outlast_reconcile_payouts{status=%s,older_than=%s} = %v, want %v", c.status, c.olderThan, got, c.want)
		}
	}
	if got, want := testutil.ToFloat64(oldestAgeSeconds.WithLabelValues("pending")), clock.Now().Sub(old.CreatedAt).Seconds(); got != want {
		t.Errorf("oldest pending age = %v s, want %v", got, want)
	}
	if got := testutil.ToFloat64(oldestAgeSeconds.WithLabelValues("dispatched")); got != 120 {
		t.Errorf("oldest dispatched age = %v s, want 120", got)
	}
}

// TestReporter: a periodic report repairs a missed success, files what
// needs a human, counts a bank whose records cannot be read, and sets
// the open-exceptions gauge at the reconciler's next cycle.
func TestReporter(t *testing.T) {
	ctx := context.Background()
	m := ledgertest.NewMemory()
	f := ledgertest.Seed(t, m, "report", 1000)
	missed := ledgertest.MustPayout(t, m, f.Req("missed", 100))
	if _, err := m.MarkDispatched(ctx, missed.ID, "tcb", "ref-missed"); err != nil {
		t.Fatal(err)
	}
	records := map[string][]outlast.PartnerRecord{"tcb": {
		{PayoutID: missed.ID, PartnerRef: "ref-missed", Amount: 100, Currency: "EUR", Status: outlast.StatusSucceeded},
		{PayoutID: "ghost", PartnerRef: "ref-ghost", Amount: 7, Currency: "EUR", Status: outlast.StatusSucceeded},
	}}
	r := NewReporter(ReportConfig{
		Ledger:   m,
		Channels: func() []string { return []string{"acb", "tcb"} },
		Records: func(_ context.Context, ch string) ([]outlast.PartnerRecord, error) {
			if ch == "acb" {
				return nil, outlast.Errorf(outlast.EUNAVAILABLE, "acb is down")
			}
			return records[ch], nil
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	errorsBefore := testutil.ToFloat64(reportRunsTotal.WithLabelValues("acb", "error"))
	reps := r.RunOnce(ctx)
	if len(reps) != 1 || reps[0].Channel != "tcb" || reps[0].Repaired() != 1 || reps[0].Filed != 1 {
		t.Fatalf("reports = %+v; want tcb's, one repair, one exception filed", reps)
	}
	if got := testutil.ToFloat64(reportRunsTotal.WithLabelValues("acb", "error")) - errorsBefore; got != 1 {
		t.Errorf("acb error runs counted %v, want 1", got)
	}
	if got := testutil.ToFloat64(reportDiscrepancies.WithLabelValues("tcb", "for_human")); got != 1 {
		t.Errorf("tcb for_human gauge = %v, want 1", got)
	}
	if p, _, _ := m.Payout(ctx, missed.ID); p.Status != outlast.StatusSucceeded {
		t.Errorf("missed payout is %s, want succeeded", p.Status)
	}
	if reps = r.RunOnce(ctx); len(reps) != 1 || reps[0].Filed != 0 || len(reps[0].ForHuman) != 1 {
		t.Fatalf("second run = %+v; want the same exception, none filed anew", reps)
	}
	rec, err := New(Config{Ledger: m, Status: func(context.Context, string, string) (*Answer, error) { return nil, nil },
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(exceptionsOpen.WithLabelValues(string(outlast.ExceptionUnknownPayout))); got != 1 {
		t.Errorf("outlast_exceptions_open{kind=unknown_payout} = %v, want 1", got)
	}
}
