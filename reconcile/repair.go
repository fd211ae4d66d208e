package reconcile

import (
	"context"
	"errors"
	"time"

	"github.com/outlast/outlast"
)

// replay hands back the dead letters whose cause is gone: their payout
// exists now and would take them (outlast.Decide does not reject them).
// Only those: one still rejected would come back to the dead letters
// after the ledger's bound and be replayed again every cycle. Each store
// is read newest first, up to DeadLettersMax: older dead letters behind
// that many that stay unmendable wait for an operator.
//
// A store that fails (the log while the broker is down) does not keep
// the others from being looked at.
func (r *Reconciler) replay(ctx context.Context) (int, error) {
	total := 0
	var errs []error
	for _, dl := range r.cfg.DeadLetters {
		n, err := r.replayFrom(ctx, dl)
		total += n
		errs = append(errs, err)
	}
	return total, errors.Join(errs...)
}

func (r *Reconciler) replayFrom(ctx context.Context, dl outlast.DeadLetters) (int, error) {
	letters, err := dl.DeadLetters(ctx, r.cfg.DeadLettersMax)
	if err != nil {
		return 0, err
	}
	var ids []string
	for _, d := range letters {
		ok, err := r.mended(ctx, d.Notification)
		if err != nil {
			return 0, err
		}
		if ok {
			ids = append(ids, d.ID)
		}
	}
	if len(ids) == 0 {
		return 0, nil
	}
	n, err := dl.ReplayDeadLetters(ctx, ids)
	deadLettersReplayedTotal.Add(float64(n))
	if n > 0 {
		r.cfg.Logger.Info("replayed dead letters whose payout now takes them", "count", n)
	}
	return n, err
}

// mended reports whether n (nil for a message that could not be
// decoded) would now apply, or be a counted no-op, rather than be
// rejected again.
func (r *Reconciler) mended(ctx context.Context, n *outlast.Notification) (bool, error) {
	if n == nil {
		return false, nil
	}
	p, _, err := r.cfg.Ledger.Payout(ctx, n.PayoutID)
	switch {
	case outlast.ErrorCode(err) == outlast.ENOTFOUND:
		return false, nil
	case err != nil:
		return false, err
	}
	return outlast.Decide(p, n).Outcome != outlast.OutcomeRejected, nil
}

// ageBuckets are the ages the payout gauges count "older than".
var ageBuckets = []struct {
	label string
	age   time.Duration
}{{"1m", time.Minute}, {"5m", 5 * time.Minute}, {"15m", 15 * time.Minute}, {"1h", time.Hour}, {"6h", 6 * time.Hour}}

// measure sets the gauges of the payouts not yet final by age. A payout
// pending long is waiting for the dispatcher, which keeps retrying it
// (a parked one about every BackoffMax): the outbox never drops one, so
// there is nothing to requeue, only to show.
func (r *Reconciler) measure(ctx context.Context, now time.Time) error {
	cutoffs := make([]time.Time, len(ageBuckets))
	for i, b := range ageBuckets {
		cutoffs[i] = now.Add(-b.age)
	}
	for _, status := range []outlast.PayoutStatus{outlast.StatusPending, outlast.StatusDispatched} {
		counts, oldest, err := r.cfg.Ledger.PayoutAges(ctx, status, cutoffs)
		if err != nil {
			return err
		}
		for i, b := range ageBuckets {
			payoutsByAge.WithLabelValues(string(status), b.label).Set(float64(counts[i]))
		}
		age := 0.0
		if !oldest.IsZero() {
			age = max(0, now.Sub(oldest).Seconds())
		}
		oldestAgeSeconds.WithLabelValues(string(status)).Set(age)
	}
	open, err := r.cfg.Ledger.OpenExceptions(ctx)
	if err != nil {
		return err
	}
	for _, k := range outlast.ExceptionKinds {
		exceptionsOpen.WithLabelValues(string(k)).Set(float64(open[k]))
	}
	return nil
}
