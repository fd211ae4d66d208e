package outlast

import (
	"context"
	"time"
)

// Ledger is the one entry point to the ledger. The store implements it
// over the database; package ledger implements it again over the store,
// adding the read cache, the one outcome metric and the one rule for
// rejected notifications; every reader and writer — the HTTP API, the
// dispatcher, the log consumer, the inbox drainer, the reconciler — uses
// it and nothing below it. One conformance suite runs against every
// implementation, fakes included.
type Ledger interface {
	AccountService
	PayoutService
	OutboxService
	StaleService
	ExceptionService
	// Apply applies notifications that source brought, in one
	// transaction: each at most once by (channel, event id); succeeded
	// moves held to paid_out, failed releases the hold, dispatched records
	// the partner ref. The results line up with ns; a rejected one is not
	// remembered, so delivering it again judges it again. An error means
	// nothing was committed and the whole batch may be retried:
	// EUNAVAILABLE while the database cannot take it (retried without
	// limit, never dead-lettered). A conflict files its exception
	// (ConflictException) in the same transaction.
	Apply(ctx context.Context, source Source, ns []*Notification) ([]ApplyResult, error)
}

// StalePayoutsMax bounds one StalePayouts answer.
const StalePayoutsMax = 1000

// StaleCursor is a position in StalePayouts' order: the payout last
// changed at UpdatedAt with id ID. A reader pages on from the last payout
// it was given, so payouts that stay stale (a bank that cannot answer for
// them) do not hold back the ones behind them.
type StaleCursor struct {
	UpdatedAt time.Time
	ID        string
}

// StaleCursorOf is the position of p.
func StaleCursorOf(p *Payout) StaleCursor { return StaleCursor{UpdatedAt: p.UpdatedAt, ID: p.ID} }

// After reports whether p comes after c in StalePayouts' order.
func (c StaleCursor) After(p *Payout) bool {
	if c.ID == "" && c.UpdatedAt.IsZero() {
		return true
	}
	if d := p.UpdatedAt.Compare(c.UpdatedAt); d != 0 {
		return d > 0
	}
	return p.ID > c.ID
}

// StaleService finds payouts that have not moved for a while: the
// reconciler's view of the ledger.
type StaleService interface {
	// StalePayouts returns up to limit payouts in status whose last
	// change was before before, least recently changed first (ties by
	// id), starting after the position after (the zero StaleCursor: from
	// the start). If limit <= 0 or > StalePayoutsMax, StalePayoutsMax is
	// used. EVALIDATION for an unknown status.
	StalePayouts(ctx context.Context, status PayoutStatus, before time.Time, after StaleCursor, limit int) ([]*Payout, error)
	// PayoutAges counts the payouts in status by the age of their last
	// change: counts[i] is how many last changed before cutoffs[i], and
	// oldest is the least recent change of one (zero if there is none).
	// EVALIDATION for an unknown status.
	PayoutAges(ctx context.Context, status PayoutStatus, cutoffs []time.Time) (counts []int, oldest time.Time, err error)
}
