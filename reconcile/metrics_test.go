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
