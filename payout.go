package outlast

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"time"
)

// PayoutStatus is where a payout is in its life.
type PayoutStatus string

// Payout states: pending → dispatched → succeeded | failed. A partner may
// report the outcome before the dispatcher has recorded the hand-over, so
// pending may also move straight to a terminal state.
const (
	StatusPending    PayoutStatus = "pending"
	StatusDispatched PayoutStatus = "dispatched"
	StatusSucceeded  PayoutStatus = "succeeded"
	StatusFailed     PayoutStatus = "failed"
)

// Valid reports whether s is one of the four states.
func (s PayoutStatus) Valid() bool {
	switch s {
	case StatusPending, StatusDispatched, StatusSucceeded, StatusFailed:
		return true
	}
	return false
}

// Terminal reports whether s can never change again.
func (s PayoutStatus) Terminal() bool { return s == StatusSucceeded || s == StatusFailed }

// Transition is the outcome of applying a reported status to a payout.
type Transition int

const (
	// TransitionApply: the payout moves to the new status.
	TransitionApply Transition = iota
	// TransitionStale: the report is older than what is known (a late
	// "dispatched" after "succeeded", a repeat of the current state); a
	// counted no-op.
	TransitionStale
	// TransitionConflict: the report contradicts a terminal state (failed
	// after succeeded, or the reverse). A counted no-op that the audit and
	// the reconciler must look at: terminal states never change.
	TransitionConflict
	// TransitionInvalid: the report can never apply (e.g. back to pending).
	TransitionInvalid
)

// NextTransition decides what reporting status to on a payout in from does.
// It is the whole state machine; the ledger calls nothing else.
func NextTransition(from, to PayoutStatus) Transition {
	switch {
	case !from.Valid() || !to.Valid():
		return TransitionInvalid
	case from.Terminal() && to.Terminal() && from != to:
		return TransitionConflict
	case from == to, from.Terminal(), to == StatusPending:
		return TransitionStale
	}
	return TransitionApply
}

// Payout is a request to send money from an account to a destination via a
// partner bank channel.
type Payout struct {
	ID          string       `json:"id"`
	ClientID    string       `json:"-"`
	AccountID   string       `json:"account_id"`
	Amount      int64        `json:"amount"`
	Currency    string       `json:"currency"`
	Destination string       `json:"destination"`
	Status      PayoutStatus `json:"status"`
	// Channel is the partner the payout was (or will be) sent through;
	// PartnerRef is that partner's reference once it accepted it.
	Channel    string `json:"channel"`
	PartnerRef string `json:"partner_ref"`
	// FailureReason says why a failed payout failed.
	FailureReason  string    `json:"failure_reason,omitempty"`
	IdempotencyKey string    `json:"-"`
	Version        int64     `json:"version"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// MoveTo records, at now, p's move to status to, which NextTransition
// allowed: its version goes up; a non-empty channel or partnerRef
// replaces p's (a dispatcher that failed over, a partner's reference);
// a failed payout keeps reason, cleaned. Moving the money is the
// ledger's.
func (p *Payout) MoveTo(to PayoutStatus, channel, partnerRef, reason string, now time.Time) {
	p.Status, p.Version, p.UpdatedAt = to, p.Version+1, now
	if channel != "" {
		p.Channel = channel
	}
	if partnerRef != "" {
		p.PartnerRef = partnerRef
	}
	if to == StatusFailed {
		p.FailureReason = CleanText(reason, ReasonBytesMax)
	}
}

// PayoutRequest is what a client asks for in POST /v1/payouts.
type PayoutRequest struct {
	ClientID       string `json:"-"`
	IdempotencyKey string `json:"-"`
	AccountID      string `json:"account_id"`
	Amount         int64  `json:"amount"`
	Currency       string `json:"currency"`
	Destination    string `json:"destination"`
	// Channel is the partner channel chosen for the payout at creation; the
	// router fills it in.
	Channel string `json:"-"`
}

// Validate checks the request's fields (not the account's state).
func (r *PayoutRequest) Validate() error {
	if !validID(r.ClientID) {
		return Errorf(EUNAUTHORIZED, "missing client")
	}
	if err := ValidateIdempotencyKey(r.IdempotencyKey); err != nil {
		return err
	}
	switch {
	case !validID(r.AccountID):
		return Errorf(EVALIDATION, "account_id must be %s", IDRule)
	case !ValidCurrency(r.Currency):
		return Errorf(EVALIDATION, "currency %q is not an ISO 4217 code", r.Currency)
	case r.Destination == "" || len(r.Destination) > DestinationBytesMax:
		return Errorf(EVALIDATION, "destination must be 1-%d bytes", DestinationBytesMax)
	case r.Channel != "" && !validID(r.Channel):
		return Errorf(EVALIDATION, "channel %q is not a valid name", r.Channel)
	}
	if err := checkText("destination", r.Destination); err != nil {
		return err
	}
	return ValidateAmount(r.Amount)
}

// Fingerprint identifies the request's content, so a reused Idempotency-Key
// with a different body is told apart from an honest retry. Channel is left
// out: it is the service's choice, not the client's.
func (r *PayoutRequest) Fingerprint() string {
	h := sha256.New()
	for _, s := range []string{r.ClientID, r.AccountID, r.Currency, r.Destination} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var a [8]byte
	binary.BigEndian.PutUint64(a[:], uint64(r.Amount))
	h.Write(a[:])
	return hex.EncodeToString(h.Sum(nil))
}

// PayoutFilter selects a page of payouts, newest first.
type PayoutFilter struct {
	ClientID  string       // required: a client sees only its own payouts
	AccountID string       // optional
	Status    PayoutStatus // optional
	Cursor    string       // opaque; from the previous page's next cursor
	// Limit is the page size; if <= 0, 50 is used; at most PageLimitMax.
	Limit int
}

// PageLimitMax bounds a page of payouts.
const PageLimitMax = 500

// PayoutService creates and reads payouts.
type PayoutService interface {
	// CreatePayout, in one transaction, stores the payout (pending), moves
	// the amount from available to held with journal rows, and queues it in
	// the outbox. A repeated (client, idempotency key) returns the original
	// payout with created == false, or EIDEMPOTENCY if the fingerprint
	// differs. Errors: EVALIDATION (unknown account of this client, currency
	// mismatch, payouts disabled), EINSUFFICIENT.
	CreatePayout(ctx context.Context, req *PayoutRequest) (p *Payout, created bool, err error)
	// Payout returns a payout by id and how fresh the read is; ENOTFOUND.
	Payout(ctx context.Context, id string) (*Payout, Freshness, error)
	// Payouts returns a page and the cursor of the next page ("" at the end).
	Payouts(ctx context.Context, f PayoutFilter) ([]*Payout, string, error)
}

// Dispatch is a payout waiting in the outbox to be handed to a partner.
type Dispatch struct {
	Payout   *Payout
	Attempts int // attempts made on its current channel before this claim
	// Refused lists, oldest first, the channels that definitively refused
	// the payout before it was moved to its current one
	// (RerouteDispatch): it must never go back to them.
	Refused []string
	// Claim identifies this claim: when its lease ends. RejectDispatch
	// and RerouteDispatch given it act only while the outbox entry is
	// still this claim's, so a dispatcher whose lease ran out while
	// another one sent the payout again cannot fail, or send elsewhere,
	// what that one may have got accepted.
	Claim time.Time
}

// ClaimLost is RejectDispatch's and RerouteDispatch's ECONFLICT for a
// claim that is no longer the outbox entry's.
func ClaimLost(payoutID string) error {
	return Errorf(ECONFLICT,
		"the claim on payout %s was lost (claimed again or rescheduled since): it is not failed or moved by this claim", payoutID)
}

// ValidateReroute checks the channels of a move from one to another
// (CheckReroute) before any payout is read: valid names, not the same.
func ValidateReroute(from, to string) error {
	switch {
	case !validID(from) || !validID(to):
		return Errorf(EVALIDATION, "channels must be %s", IDRule)
	case from == to:
		return Errorf(EVALIDATION, "channel %s cannot take over a payout from itself", to)
	}
	return nil
}

// CheckReroute decides whether p, whose outbox entry lists refused, may
// move from channel from, which definitively refused it, to channel to
// (OutboxService.RerouteDispatch): ValidateReroute's errors, or ECONFLICT
// unless p is pending on from and to has not refused it already. As to
// is never one of refused, and from (p's channel, once a to) is not
// either, refused never holds a channel twice: it is bounded by the
// channels there are.
func CheckReroute(p *Payout, from, to string, refused []string) error {
	if err := ValidateReroute(from, to); err != nil {
		return err
	}
	switch {
	case p.Status != StatusPending:
		return Errorf(ECONFLICT, "payout %s is %s: only a pending payout moves to another channel", p.ID, p.Status)
	case p.Channel != from:
		return Errorf(ECONFLICT, "payout %s is bound to %s, not %s", p.ID, p.Channel, from)
	case slices.Contains(refused, to):
		return Errorf(ECONFLICT, "channel %s already refused payout %s", to, p.ID)
	}
	return nil
}

// OutboxService is the dispatcher's view of the ledger. Claims are leases:
// a dispatcher that dies mid-call loses its claim when the lease ends and
// another instance retries; partners are idempotent on payout id, so a retry
// after an unseen success is safe.
type OutboxService interface {
	// ClaimDispatches leases up to limit due outbox entries for lease.
	ClaimDispatches(ctx context.Context, limit int, lease time.Duration) ([]*Dispatch, error)
	// MarkDispatched records that channel accepted the payout under
	// partnerRef: pending → dispatched and the outbox entry is removed. A
	// payout already past pending only loses its outbox entry.
	MarkDispatched(ctx context.Context, payoutID, channel, partnerRef string) (*Payout, error)
	// RetryDispatch records a failed attempt: attempts+1, next try at
	// notBefore, lastError kept for operators.
	RetryDispatch(ctx context.Context, payoutID string, notBefore time.Time, lastError string) error
	// RejectDispatch fails a payout that channel definitively did not
	// accept (never for an ambiguous outcome): failed, hold released,
	// outbox entry removed. With a non-zero claim (a Dispatch's Claim) it
	// is ECONFLICT once the entry was claimed again or rescheduled since:
	// the claim was lost. A zero claim fences nothing.
	RejectDispatch(ctx context.Context, payoutID, channel, reason string, claim time.Time) (*Payout, error)
	// RerouteDispatch moves a pending payout that channel from
	// definitively did not accept (never for an ambiguous outcome) to
	// channel to instead of failing it: from joins the entry's Refused,
	// the payout's channel becomes to (version+1), it stays pending with
	// its hold, and the entry is due at once with attempts 0 and reason
	// as its last error. Fenced by claim as RejectDispatch: a lost claim
	// must not send elsewhere a payout another claim may be getting
	// accepted by from. CheckReroute's errors; ENOTFOUND.
	RerouteDispatch(ctx context.Context, payoutID, from, to, reason string, claim time.Time) (*Payout, error)
}
