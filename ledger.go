package outlast

import "context"

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
	// Apply applies notifications that source brought, in one
	// transaction: each at most once by (channel, event id); succeeded
	// moves held to paid_out, failed releases the hold, dispatched records
	// the partner ref. The results line up with ns; a rejected one is not
	// remembered, so delivering it again judges it again. An error means
	// nothing was committed and the whole batch may be retried:
	// EUNAVAILABLE while the database cannot take it (retried without
	// limit, never dead-lettered).
	Apply(ctx context.Context, source Source, ns []*Notification) ([]ApplyResult, error)
}
