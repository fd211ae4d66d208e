package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/backoff"
)

// Defaults for Drainer fields left at their zero value.
const (
	// DrainBatchMaxDefault bounds the inbox entries one Apply takes.
	DrainBatchMaxDefault = 500
	// DrainPollIntervalDefault is how often an idle inbox is looked at; it
	// is only used while the log is down, so this is a trickle of queries.
	DrainPollIntervalDefault = 250 * time.Millisecond
	// DrainLeaseDefault is how long a claim keeps entries from other
	// drainers; a drainer that dies mid-batch loses them after this.
	DrainLeaseDefault = 30 * time.Second
)

// Applier is what the drainer needs of the ledger: Apply and nothing else.
type Applier interface {
	Apply(ctx context.Context, source outlast.Source, ns []*outlast.Notification) ([]outlast.ApplyResult, error)
}

// Drainer applies the notifications committed to the database inbox while
// the log was down, through Apply like every other source, and settles
// each entry as Apply's result says. Several instances may drain at once:
// entries are claimed with a lease.
type Drainer struct {
	Inbox  outlast.Inbox
	Ledger Applier
	// BatchMax: if <= 0, DrainBatchMaxDefault.
	BatchMax int
	// PollInterval: if <= 0, DrainPollIntervalDefault.
	PollInterval time.Duration
	// Lease: if <= 0, DrainLeaseDefault.
	Lease time.Duration
	// Backoff spaces attempts while the database fails; its zero value is
	// backoff's default (100 ms doubling to 5 s, full jitter).
	Backoff backoff.Policy
	// After is the clock of every wait; nil is the real one.
	After func(time.Duration) <-chan time.Time
	// Logger: if nil, slog.Default().
	Logger *slog.Logger
}

// Run drains until ctx ends: at once again after a full batch, after
// PollInterval otherwise, with backoff while the database fails.
func (d *Drainer) Run(ctx context.Context) error {
	batchMax := orDefault(d.BatchMax, DrainBatchMaxDefault)
	poll := orDefault(d.PollInterval, DrainPollIntervalDefault)
	log := d.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &backoff.Backoff{Policy: d.Backoff, After: d.After}
	for ctx.Err() == nil {
		n, err := d.drainOnce(ctx, b, batchMax)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			inboxDrainErrorsTotal.Inc()
			log.Warn("inbox drain failed; backing off", "err", err, "failures", b.Failures()+1)
			b.Wait(ctx)
		case n == batchMax:
			b.Reset() // more waiting: drain at full speed
		default:
			b.Reset()
			b.Sleep(ctx, poll)
		}
	}
	return nil
}

// drainOnce claims, applies and settles one batch, returning its size.
func (d *Drainer) drainOnce(ctx context.Context, b *backoff.Backoff, batchMax int) (int, error) {
	lease := orDefault(d.Lease, DrainLeaseDefault)
	es, err := d.Inbox.ClaimInbox(ctx, batchMax, lease)
	if err != nil || len(es) == 0 {
		return 0, err
	}
	ns := make([]*outlast.Notification, len(es))
	for i, e := range es {
		ns[i] = e.Notification
	}
	// Retried on the claimed entries while the claim holds: giving them up
	// would leave them leased, untouched, until the lease ran out.
	holdUntil := time.Now().Add(lease / 2)
	for {
		results, err := d.Ledger.Apply(ctx, outlast.FromInbox, ns)
		if err == nil {
			return len(es), d.Inbox.SettleInbox(ctx, es, results)
		}
		if !outlast.Transient(err) && len(es) > 1 {
			// Not the database's state: one entry may be failing the
			// batch. Apply them one by one so the others are not held.
			return len(es), d.isolate(ctx, es)
		}
		if ctx.Err() != nil || time.Now().After(holdUntil) {
			return 0, err
		}
		inboxDrainErrorsTotal.Inc()
		if !b.Wait(ctx) {
			return 0, err
		}
	}
}

// isolate applies and settles each entry alone; an entry that still fails
// stays leased and is claimed again when the lease runs out (an error is
// not a verdict on the notification, so it is never dead-lettered).
func (d *Drainer) isolate(ctx context.Context, es []outlast.InboxEntry) error {
	var errs []error
	for _, e := range es {
		if ctx.Err() != nil {
			break // the rest stay leased and are claimed again
		}
		results, err := d.Ledger.Apply(ctx, outlast.FromInbox, []*outlast.Notification{e.Notification})
		if err == nil {
			err = d.Inbox.SettleInbox(ctx, []outlast.InboxEntry{e}, results)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("inbox entry %d: %w", e.ID, err))
		}
	}
	return errors.Join(errs...)
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
