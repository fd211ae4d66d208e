package outlast

import (
	"context"
	"time"
)

// Bucket names one side of a journal row. Every change of money writes rows
// that sum to zero: funding moves from external to available; a payout moves
// available → held, then held → paid_out (succeeded) or held → available
// (failed).
type Bucket string

const (
	BucketExternal  Bucket = "external"
	BucketAvailable Bucket = "available"
	BucketHeld      Bucket = "held"
	BucketPaidOut   Bucket = "paid_out"
)

// JournalEntry is one row of the journal.
type JournalEntry struct {
	ID        int64
	AccountID string
	PayoutID  string // "" for funding and exception resolutions
	// Exception is the key of the exception whose filing or resolution
	// wrote the row ("" for every other row).
	Exception string
	Bucket    Bucket
	Amount    int64 // signed
	CreatedAt time.Time
}

// LedgerReport is what the ledger's self-audit found.
type LedgerReport struct {
	Accounts int
	Payouts  map[PayoutStatus]int
	// Outbox counts payouts waiting to be handed to a partner; Inbox counts
	// notifications waiting in the database fallback; DeadLetters counts
	// notifications that could never be applied.
	Outbox, Inbox, DeadLetters int
	// Problems lists every violated invariant, one readable line each:
	// an account whose columns differ from its journal, a payout whose
	// journal does not sum to zero or does not match its status, a
	// negative balance. Empty means the ledger is consistent.
	Problems []string
}

// Auditor checks the ledger against its own journal.
type Auditor interface {
	AuditLedger(ctx context.Context) (*LedgerReport, error)
	// EachPayout calls fn for every payout, in id order, until fn errors.
	// The partner comparison streams through it.
	EachPayout(ctx context.Context, fn func(*Payout) error) error
}

// PartnerRecord is what a partner bank says it paid (its /records), the
// auditor's ground truth.
type PartnerRecord struct {
	PayoutID   string       `json:"payout_id"`
	PartnerRef string       `json:"partner_ref"`
	Amount     int64        `json:"amount"`
	Currency   string       `json:"currency"`
	Status     PayoutStatus `json:"status"`
}

// JournalReader streams one consistent snapshot of the ledger's journal
// and accounts, for a rebuild that recomputes every balance from the
// journal alone and compares (outlast audit --rebuild).
type JournalReader interface {
	// ReadJournal calls entry for every journal row in id (commit)
	// order, then account for every account in id order, all from one
	// snapshot, until a callback errors.
	ReadJournal(ctx context.Context, entry func(*JournalEntry) error, account func(*Account) error) error
}
