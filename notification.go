package outlast

import (
	"context"
	"time"
)

// Notification is a partner's report about a payout, received on its
// webhook. It is deduplicated by (Channel, EventID).
type Notification struct {
	Channel    string       `json:"channel"`
	EventID    string       `json:"event_id"`
	PayoutID   string       `json:"payout_id"`
	PartnerRef string       `json:"partner_ref"`
	Status     PayoutStatus `json:"status"`
	// Reason is an optional failure reason from the partner.
	Reason     string    `json:"reason,omitempty"`
	OccurredAt time.Time `json:"occurred_at"`
	// ReceivedAt is when Outlast accepted it (set at ingest).
	ReceivedAt time.Time `json:"received_at"`
}

// ReasonBytesMax bounds a failure reason.
const ReasonBytesMax = 512

// Validate checks a notification's fields.
func (n *Notification) Validate() error {
	switch {
	case !validID(n.Channel):
		return Errorf(EVALIDATION, "channel must be 1-%d characters of [A-Za-z0-9._:-]", IDBytesMax)
	case !validID(n.EventID):
		return Errorf(EVALIDATION, "event_id must be 1-%d characters of [A-Za-z0-9._:-]", IDBytesMax)
	case !validID(n.PayoutID):
		return Errorf(EVALIDATION, "payout_id must be 1-%d characters of [A-Za-z0-9._:-]", IDBytesMax)
	case n.PartnerRef != "" && !validID(n.PartnerRef):
		return Errorf(EVALIDATION, "partner_ref must be at most %d characters of [A-Za-z0-9._:-]", IDBytesMax)
	case n.Status != StatusDispatched && n.Status != StatusSucceeded && n.Status != StatusFailed:
		return Errorf(EVALIDATION, "status must be dispatched, succeeded or failed")
	case len(n.Reason) > ReasonBytesMax:
		return Errorf(EVALIDATION, "reason must be at most %d bytes", ReasonBytesMax)
	case n.OccurredAt.IsZero():
		return Errorf(EVALIDATION, "occurred_at is required (RFC 3339)")
	}
	return nil
}

// Outcome says what applying one notification did.
type Outcome string

const (
	OutcomeApplied   Outcome = "applied"   // the payout changed state
	OutcomeDuplicate Outcome = "duplicate" // (channel, event id) seen before
	OutcomeStale     Outcome = "stale"     // older than the payout's state
	OutcomeConflict  Outcome = "conflict"  // contradicts a terminal state
	// OutcomeRejected: the notification cannot apply now (unknown payout,
	// perhaps not visible yet; wrong channel; invalid transition). Reason
	// says why. Rejected is not seen: it is not recorded, so a redelivery
	// is judged again; it is retried and, after a bound, dead-lettered.
	OutcomeRejected Outcome = "rejected"
)

// ApplyResult is the outcome for the notification at the same index.
type ApplyResult struct {
	Outcome Outcome
	Reason  string  // for OutcomeRejected and OutcomeConflict
	Payout  *Payout // the payout after applying, when it exists
}

// NotificationService applies notifications to the ledger.
type NotificationService interface {
	// ApplyNotifications applies a batch in one transaction: each
	// notification at most once by (channel, event id); succeeded moves held
	// to paid_out, failed releases the hold, dispatched records the partner
	// ref. The results line up with ns. An error means nothing was
	// committed and the whole batch may be retried.
	ApplyNotifications(ctx context.Context, ns []*Notification) ([]ApplyResult, error)
}

// NotificationLog is the durable log notifications land in before they are
// applied. Append returns only once n is durable (fsync'd or replicated);
// EUNAVAILABLE if the log cannot take it.
type NotificationLog interface {
	Append(ctx context.Context, n *Notification) error
}

// Inbox is the database fallback for the log: notifications committed here
// when the log is down are drained through the same apply path.
type Inbox interface {
	// AppendInbox commits ns to the inbox table.
	AppendInbox(ctx context.Context, ns []*Notification) error
	// DrainInbox applies up to limit inbox entries in one transaction and
	// removes them, returning how many it drained and their results.
	// Entries that are rejected are moved to the dead-letter table with
	// their reason rather than left to block the others.
	DrainInbox(ctx context.Context, limit int) (drained int, results []ApplyResult, err error)
}
