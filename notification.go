package outlast

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
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
	// Deliveries is how many times this notification has been handed to
	// Apply, this time included: the log's delivery count, the inbox's
	// claims. The bound on retrying a rejected notification counts it.
	// It is not part of the notification's content; 0 counts as 1.
	Deliveries int `json:"-"`
}

const (
	// ReasonBytesMax bounds a failure reason.
	ReasonBytesMax = 512
	// OccurredAtAheadMax is how far after its ReceivedAt a notification
	// may say it occurred: a partner's clock or time zone may be hours
	// wrong, never a day.
	OccurredAtAheadMax = 24 * time.Hour
)

var (
	// occurredAtMin is the earliest occurred_at taken: no payout Outlast
	// handles happened before 2000, and 0001-01-01 is a partner's zero.
	occurredAtMin = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	// occurredAtMax is the latest time the ledgers can store: they keep
	// times as UnixNano, which overflows after it (April 2262).
	occurredAtMax = time.Unix(0, math.MaxInt64).UTC()
)

// Validate checks a notification's fields.
func (n *Notification) Validate() error {
	switch {
	case !validID(n.Channel):
		return Errorf(EVALIDATION, "channel must be %s", IDRule)
	case !validID(n.EventID):
		return Errorf(EVALIDATION, "event_id must be %s", IDRule)
	case !validID(n.PayoutID):
		return Errorf(EVALIDATION, "payout_id must be %s", IDRule)
	case n.PartnerRef != "" && !validID(n.PartnerRef):
		return Errorf(EVALIDATION, "partner_ref must be empty or %s", IDRule)
	case n.Status != StatusDispatched && n.Status != StatusSucceeded && n.Status != StatusFailed:
		return Errorf(EVALIDATION, "status must be dispatched, succeeded or failed")
	case len(n.Reason) > ReasonBytesMax:
		return Errorf(EVALIDATION, "reason must be at most %d bytes", ReasonBytesMax)
	case n.OccurredAt.IsZero():
		return Errorf(EVALIDATION, "occurred_at is required (RFC 3339)")
	}
	return n.checkOccurredAt()
}

// checkOccurredAt bounds OccurredAt: from 2000, at most
// OccurredAtAheadMax after ReceivedAt when that is set, and never past
// what a ledger can store.
func (n *Notification) checkOccurredAt() error {
	at := n.OccurredAt.UTC().Format(time.RFC3339Nano)
	switch {
	case n.OccurredAt.Before(occurredAtMin):
		return Errorf(EVALIDATION, "occurred_at %s is before %s", at, occurredAtMin.Format(time.RFC3339))
	case n.OccurredAt.After(occurredAtMax):
		return Errorf(EVALIDATION, "occurred_at %s is after %s, the latest time a ledger can store", at, occurredAtMax.Format(time.RFC3339))
	case !n.ReceivedAt.IsZero() && n.OccurredAt.Sub(n.ReceivedAt) > OccurredAtAheadMax:
		return Errorf(EVALIDATION, "occurred_at %s is more than %.0f hours after the notification was received (%s): is the partner's clock or time zone wrong?",
			at, OccurredAtAheadMax.Hours(), n.ReceivedAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// Outcome says what applying one notification did.
type Outcome string

const (
	OutcomeApplied   Outcome = "applied"   // the payout changed state
	OutcomeDuplicate Outcome = "duplicate" // (channel, event id) seen before
	OutcomeStale     Outcome = "stale"     // older than the payout's state
	// OutcomeConflict: the report contradicts what the ledger knows — a
	// terminal state, or the partner ref it recorded. The payout is left
	// as it is and the audit lists the report for a human.
	OutcomeConflict Outcome = "conflict"
	// OutcomeRejected: the notification cannot apply now (unknown payout,
	// perhaps not visible yet; wrong channel; invalid transition). Reason
	// says why. Rejected is not seen: it is not recorded, so a redelivery
	// is judged again; it is retried and, after a bound, dead-lettered.
	OutcomeRejected Outcome = "rejected"
)

// Decide is what applying n, a valid notification not seen before, does
// to p, the payout it reports on as it stands: rejected on a channel
// mismatch or a transition that can never apply; a conflict when it names
// another partner ref than the one recorded (the partner's record of
// another payment, perhaps a second one: never overwritten); otherwise as
// NextTransition says, with a reason for a conflict. Every implementation
// of Ledger decides by it, so none can judge a notification differently.
func Decide(p *Payout, n *Notification) ApplyResult {
	if p.Channel != "" && p.Channel != n.Channel {
		return ApplyResult{Outcome: OutcomeRejected, Reason: "channel mismatch"}
	}
	if p.PartnerRef != "" && n.PartnerRef != "" && n.PartnerRef != p.PartnerRef &&
		NextTransition(p.Status, n.Status) != TransitionInvalid {
		return ApplyResult{Outcome: OutcomeConflict,
			Reason: fmt.Sprintf("partner ref differs: the payout is %s under %s, partner reported %s under %s",
				p.Status, p.PartnerRef, n.Status, n.PartnerRef)}
	}
	switch NextTransition(p.Status, n.Status) {
	case TransitionApply:
		return ApplyResult{Outcome: OutcomeApplied}
	case TransitionStale:
		return ApplyResult{Outcome: OutcomeStale}
	case TransitionConflict:
		return ApplyResult{Outcome: OutcomeConflict,
			Reason: fmt.Sprintf("payout is %s, partner reported %s", p.Status, n.Status)}
	}
	return ApplyResult{Outcome: OutcomeRejected,
		Reason: fmt.Sprintf("invalid transition from %s to %s", p.Status, n.Status)}
}

// CleanText makes free text (a failure reason, an error, a raw preview)
// what a ledger keeps: valid UTF-8 (storable as TEXT on both databases)
// without control characters (C0, DEL, C1), which rewrite the terminal
// or the log line that shows them. NUL, padding from C strings, goes;
// every other control character becomes a space, so words stay apart.
// The result is cut to at most maxBytes on a character boundary.
func CleanText(s string, maxBytes int) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) <= maxBytes {
		return s
	}
	cut := maxBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// checkText refuses text a ledger would have to clean: invalid UTF-8 or
// a control character (see CleanText), naming field and the byte.
func checkText(field, s string) error {
	for i, r := range s {
		if _, size := utf8.DecodeRuneInString(s[i:]); r == utf8.RuneError && size == 1 {
			return Errorf(EVALIDATION, "%s must be UTF-8 text; byte %d is not", field, i)
		}
		if unicode.IsControl(r) {
			return Errorf(EVALIDATION, "%s must not contain control characters; found %U at byte %d", field, r, i)
		}
	}
	return nil
}

// ApplyResult is the outcome for the notification at the same index.
type ApplyResult struct {
	Outcome Outcome
	Reason  string  // for OutcomeRejected and OutcomeConflict
	Payout  *Payout // the payout after applying, when it exists
	// For OutcomeRejected only, what the caller does with the notification
	// (one rule, the ledger's, whichever path brought it): deliver it again
	// after RetryAfter, or, once DeadLetter is set, dead-letter it with
	// Reason. Every other outcome is remembered: the caller acks it.
	RetryAfter time.Duration
	DeadLetter bool
	// Filed is the exception an OutcomeConflict filed, unless one with its
	// key was filed before.
	Filed *Exception
}

// Source says which path brought notifications to Apply.
type Source string

const (
	FromLog        Source = "log"        // the durable notification log
	FromInbox      Source = "inbox"      // the database inbox, while the log was down
	FromReconciler Source = "reconciler" // a partner's answer to a status query
	FromOperator   Source = "operator"   // an operator's resolution of an exception
)

// NotificationLog is the durable log notifications land in before they are
// applied. Append returns only once n is durable (fsync'd or replicated);
// EUNAVAILABLE if the log cannot take it.
type NotificationLog interface {
	Append(ctx context.Context, n *Notification) error
}

// InboxEntry is a notification waiting in the database inbox.
type InboxEntry struct {
	ID           int64
	Notification *Notification // Deliveries counts the claim that returned it
}

// Inbox is the database fallback for the log: notifications committed here
// when the log is down are applied through the same Apply, claimed like
// outbox entries so several instances can drain it at once.
type Inbox interface {
	// AppendInbox commits ns to the inbox. EVALIDATION if any is invalid;
	// then none is stored.
	AppendInbox(ctx context.Context, ns []*Notification) error
	// ClaimInbox leases up to limit due entries, oldest first, for lease,
	// counting a delivery of each.
	ClaimInbox(ctx context.Context, limit int, lease time.Duration) ([]InboxEntry, error)
	// SettleInbox records, in one transaction, what Apply's results (lined
	// up with entries) made of claimed entries: remembered ones leave the
	// inbox, rejected ones are due again after RetryAfter, and those marked
	// DeadLetter move to the dead letters with their reason.
	SettleInbox(ctx context.Context, entries []InboxEntry, results []ApplyResult) error
}
