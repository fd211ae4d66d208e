package outlast

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"
)

// ExceptionKind names what an exception is about: a disagreement between
// the ledger and a bank that no code may settle, because settling it moves
// money one way or the other and only a human knows which way is right.
type ExceptionKind string

const (
	// ExceptionPaidButFailed: the bank paid a payout that is failed here,
	// so its hold went back to the account's available balance.
	ExceptionPaidButFailed ExceptionKind = "paid_but_failed"
	// ExceptionSucceededNotPaid: the ledger paid out a payout the bank
	// says it failed, or has no record of.
	ExceptionSucceededNotPaid ExceptionKind = "succeeded_not_paid"
	// ExceptionPaidTwice: the bank paid one payout more than once.
	ExceptionPaidTwice ExceptionKind = "paid_twice"
	// ExceptionPaidByOtherChannel: a bank paid a payout the ledger routed
	// to another channel (so two banks may have paid it).
	ExceptionPaidByOtherChannel ExceptionKind = "paid_by_other_channel"
	// ExceptionAmountMismatch: the bank's record of a payout has another
	// amount or currency than the ledger's.
	ExceptionAmountMismatch ExceptionKind = "amount_mismatch"
	// ExceptionPartnerRefConflict: the bank reported a payout under a
	// partner ref other than the one recorded, or holds several records.
	ExceptionPartnerRefConflict ExceptionKind = "partner_ref_conflict"
	// ExceptionUnknownPayout: the bank has a payout Outlast never made.
	ExceptionUnknownPayout ExceptionKind = "unknown_payout"
	// ExceptionUnknownToBank: a payout dispatched here (the bank accepted
	// it) that the bank, asked for long, says it has no record of.
	ExceptionUnknownToBank ExceptionKind = "unknown_to_bank"
)

// ExceptionKinds lists every kind, for metrics and listings.
var ExceptionKinds = []ExceptionKind{
	ExceptionPaidButFailed, ExceptionSucceededNotPaid, ExceptionPaidTwice, ExceptionPaidByOtherChannel,
	ExceptionAmountMismatch, ExceptionPartnerRefConflict, ExceptionUnknownPayout, ExceptionUnknownToBank,
}

// Valid reports whether k is one of ExceptionKinds.
func (k ExceptionKind) Valid() bool {
	for _, v := range ExceptionKinds {
		if k == v {
			return true
		}
	}
	return false
}

// Evidence is one side's statement in an exception: what the ledger
// recorded, what a notification or the bank's records said.
type Evidence struct {
	Source string    `json:"source"` // "ledger", "notification tcb/evt-1", "records of tcb"
	Says   string    `json:"says"`
	At     time.Time `json:"at,omitzero"`
}

// Exception is a disagreement with a bank put in front of a human, with its
// evidence. Filing it moves no money but one kind: when the bank paid more
// than the ledger booked (Claim > 0, a late success of a payout failed
// here, a second payment), the ledger holds that much of the account's
// available balance again at once (Held), so money the bank already sent
// is not paid out a second time while a human decides; while it could
// not hold all of it (Short() > 0) the account's payouts are refused.
// Resolving it is the only way its money moves, by journal rows that
// name its key.
type Exception struct {
	ID int64 `json:"id"`
	// Key identifies the fact: the same disagreement seen again (by a
	// webhook, the reconciler and the discrepancy report) files nothing
	// new. See ExceptionKey.
	Key       string        `json:"key"`
	Kind      ExceptionKind `json:"kind"`
	PayoutID  string        `json:"payout_id"`
	AccountID string        `json:"account_id,omitempty"` // "" for a payout Outlast does not know
	Channel   string        `json:"channel"`
	Currency  string        `json:"currency,omitempty"`
	// Claim is, in the account's minor units, how much more the bank paid
	// than the ledger booked as paid out (negative: the ledger booked more
	// than the bank paid; 0: the evidence cannot say).
	Claim int64 `json:"claim"`
	// Held is what filing held of the account's available balance.
	Held     int64      `json:"held"`
	Summary  string     `json:"summary"`
	Evidence []Evidence `json:"evidence"`
	// FiledBy is the path that found it: a notification source (log,
	// inbox, reconciler) or "discrepancy report".
	FiledBy    string      `json:"filed_by"`
	OpenedAt   time.Time   `json:"opened_at"`
	Resolution *Resolution `json:"resolution,omitempty"`
}

// FiledByReport is Exception.FiledBy for what a discrepancy report filed.
const FiledByReport = "discrepancy report"

// Open reports whether e waits for a human.
func (e *Exception) Open() bool { return e.Resolution == nil }

// Short is how much of the claim filing could not hold: while it is
// above zero the account refuses new payouts.
func (e *Exception) Short() int64 { return max(e.Claim-e.Held, 0) }

// ExceptionKey is the key of kind's exception about payout, narrowed by
// detail (a partner ref) where one payout can have several.
func ExceptionKey(kind ExceptionKind, payout, detail string) string {
	if detail == "" {
		return string(kind) + ":" + payout
	}
	return string(kind) + ":" + payout + ":" + detail
}

// OtherRefKey is the key of the fact "channel reports payout under ref,
// which is not the partner ref the ledger recorded", whichever path sees
// it and whatever kind it is filed as (a second payment, or a ref that
// differs): a webhook and the discrepancy report file it once.
func OtherRefKey(payout, channel, ref string) string {
	return "other_ref:" + payout + ":" + channel + "/" + ref
}

// Validate checks an exception about to be filed.
func (e *Exception) Validate() error {
	switch {
	case e.Key == "" || len(e.Key) > 3*IDBytesMax+32:
		return Errorf(EVALIDATION, "exception key must be 1-%d bytes", 3*IDBytesMax+32)
	case !e.Kind.Valid():
		return Errorf(EVALIDATION, "unknown exception kind %q", e.Kind)
	case !validID(e.PayoutID):
		return Errorf(EVALIDATION, "payout_id must be %s", IDRule)
	case e.AccountID != "" && !validID(e.AccountID):
		return Errorf(EVALIDATION, "account_id must be empty or %s", IDRule)
	case !validID(e.Channel):
		return Errorf(EVALIDATION, "channel must be %s", IDRule)
	case e.Claim > AmountMax || e.Claim < -AmountMax:
		return Errorf(EVALIDATION, "claim must be within ±%d", AmountMax)
	case e.Claim != 0 && e.AccountID == "":
		return Errorf(EVALIDATION, "a claim needs the account it is against")
	case e.Summary == "":
		return Errorf(EVALIDATION, "an exception needs a summary")
	}
	return nil
}

// ConflictException is the exception a conflicting notification files:
// n contradicts p's final state (a late success of a payout failed here,
// a failure of one succeeded here) or names another partner ref. source
// brought n. Every ledger files it from Apply, in the transaction that
// records the conflict.
func ConflictException(p *Payout, n *Notification, source Source) *Exception {
	e := &Exception{
		PayoutID: p.ID, AccountID: p.AccountID, Channel: n.Channel, Currency: p.Currency,
		FiledBy: string(source),
		Evidence: []Evidence{
			LedgerEvidence(p), notificationEvidence(n),
		},
	}
	otherRef := p.PartnerRef != "" && n.PartnerRef != "" && n.PartnerRef != p.PartnerRef
	switch {
	case p.Status == StatusFailed && n.Status == StatusSucceeded:
		// Under whatever ref: the bank paid, and the hold was released.
		e.Kind, e.Key, e.Claim = ExceptionPaidButFailed, ExceptionKey(ExceptionPaidButFailed, p.ID, ""), p.Amount
		e.Summary = fmt.Sprintf("%s paid %d %s for payout %s, which is failed here and whose hold was released",
			n.Channel, p.Amount, p.Currency, p.ID)
	case otherRef && p.Status == StatusSucceeded && n.Status == StatusSucceeded:
		// Paid under the recorded ref, and now under another: perhaps a
		// second payment, so its amount is held until a human knows.
		e.Kind, e.Key, e.Claim = ExceptionPaidTwice, OtherRefKey(p.ID, n.Channel, n.PartnerRef), p.Amount
		e.Summary = fmt.Sprintf("%s reported payout %s paid under partner ref %s; the ledger has it paid under %s: paid twice?",
			n.Channel, p.ID, n.PartnerRef, p.PartnerRef)
	case otherRef:
		e.Kind, e.Key = ExceptionPartnerRefConflict, OtherRefKey(p.ID, n.Channel, n.PartnerRef)
		e.Summary = fmt.Sprintf("%s reported payout %s %s under partner ref %s; the ledger has it %s under %s",
			n.Channel, p.ID, n.Status, n.PartnerRef, p.Status, p.PartnerRef)
	default: // succeeded here, failed at the bank
		e.Kind, e.Key, e.Claim = ExceptionSucceededNotPaid, ExceptionKey(ExceptionSucceededNotPaid, p.ID, ""), -p.Amount
		e.Summary = fmt.Sprintf("%s reported payout %s %s; the ledger paid out %d %s for it",
			n.Channel, p.ID, n.Status, p.Amount, p.Currency)
	}
	return e
}

// OtherChannelException is the exception a success reported by a channel
// other than the payout's files, or nil for any other report: that bank
// paid a payout the ledger routed elsewhere (perhaps after that bank
// refused it), so two banks may have paid it. The report itself stays
// rejected (it cannot apply to the payout); every ledger files this from
// Apply, in the same transaction.
func OtherChannelException(p *Payout, n *Notification, source Source) *Exception {
	if n.Status != StatusSucceeded || p.Channel == "" || p.Channel == n.Channel {
		return nil
	}
	return &Exception{
		Key:  ExceptionKey(ExceptionPaidByOtherChannel, p.ID, n.Channel),
		Kind: ExceptionPaidByOtherChannel, PayoutID: p.ID, AccountID: p.AccountID, Channel: n.Channel,
		Currency: p.Currency, Claim: p.Amount, FiledBy: string(source),
		Summary: fmt.Sprintf("%s reported payout %s paid, but it is routed to %s (%s there): two banks may have paid it",
			n.Channel, p.ID, p.Channel, p.Status),
		Evidence: []Evidence{LedgerEvidence(p), notificationEvidence(n)},
	}
}

// UnknownToBankException is what the reconciler files for p, dispatched
// since p.UpdatedAt, whose bank answered at "no such payout": the ledger
// holds its amount, and nothing will ever settle it by itself. A human
// finds out what the bank did and settles the payout with the resolution.
func UnknownToBankException(p *Payout, at time.Time) *Exception {
	return &Exception{
		Key:  ExceptionKey(ExceptionUnknownToBank, p.ID, p.Channel),
		Kind: ExceptionUnknownToBank, PayoutID: p.ID, AccountID: p.AccountID, Channel: p.Channel, Currency: p.Currency,
		FiledBy: string(FromReconciler),
		Summary: fmt.Sprintf("%s accepted payout %s (ref %s) but, asked since, says it has no such payout: %d %s held since %s",
			p.Channel, p.ID, p.PartnerRef, p.Amount, p.Currency, p.UpdatedAt.UTC().Format(time.RFC3339)),
		Evidence: []Evidence{LedgerEvidence(p), {Source: "status of " + p.Channel, Says: "no such payout", At: at}},
	}
}

// ledgerSays is the ledger's evidence about p.
func ledgerSays(p *Payout) string {
	s := fmt.Sprintf("%s, %d %s via %s", p.Status, p.Amount, p.Currency, p.Channel)
	if p.PartnerRef != "" {
		s += fmt.Sprintf(" under partner ref %s", p.PartnerRef)
	}
	return s + reasonSuffix(p.FailureReason)
}

// notificationEvidence is what n said, as evidence.
func notificationEvidence(n *Notification) Evidence {
	return Evidence{Source: fmt.Sprintf("notification %s/%s", n.Channel, n.EventID),
		Says: fmt.Sprintf("%s under partner ref %q%s", n.Status, n.PartnerRef, reasonSuffix(n.Reason)), At: n.OccurredAt}
}

// LedgerEvidence is the ledger's statement about p in an exception.
func LedgerEvidence(p *Payout) Evidence {
	return Evidence{Source: "ledger", Says: ledgerSays(p), At: p.UpdatedAt}
}

func reasonSuffix(reason string) string {
	if reason == "" {
		return ""
	}
	return fmt.Sprintf(" (%s)", reason)
}

// ExceptionHold is how much of available filing a claim holds.
func ExceptionHold(claim, available int64) int64 { return max(min(claim, available), 0) }

// ResolveAction is what a human decided an exception means for the money.
type ResolveAction string

const (
	// ResolveBookPaid: the bank's payment stands; book it as paid out of
	// the account — from the exception's hold first, then available, and
	// what neither covers as money advanced to the account (funded grows:
	// the client owes it, and the resolution says so).
	ResolveBookPaid ResolveAction = "book_paid"
	// ResolveReversePaid: the bank did not pay what the ledger paid out;
	// give it back to available.
	ResolveReversePaid ResolveAction = "reverse_paid"
	// ResolveNoMoney: nothing moves (the bank reversed its payment, the
	// record was wrong); any hold goes back to available.
	ResolveNoMoney ResolveAction = "no_money"
)

// Resolution is how an exception was resolved.
type Resolution struct {
	Action ResolveAction `json:"action"`
	// Amount is what book_paid or reverse_paid moves; 0 takes it from the
	// claim.
	Amount int64 `json:"amount,omitempty"`
	// Payout, if set (succeeded or failed), also settles the exception's
	// payout, still pending or dispatched here, as the operator found the
	// bank did: a payout whose bank answers under another partner ref
	// never settles by itself, and would otherwise hold its amount
	// forever. It applies as a notification from FromOperator, so the
	// payout's own journal rows move its hold, as a webhook's would.
	Payout PayoutStatus `json:"payout,omitempty"`
	Reason string       `json:"reason"`
	By     string       `json:"by"`
	At     time.Time    `json:"at"`
	// Moves are the journal rows the resolution wrote, by bucket, filled
	// in by the ledger. Advanced is the part of a book_paid that neither
	// the hold nor available covered.
	Moves    []Move `json:"moves"`
	Advanced int64  `json:"advanced,omitempty"`
}

// Move is one journal row's worth of a resolution: a bucket's change.
type Move struct {
	Bucket Bucket `json:"bucket"`
	Amount int64  `json:"amount"`
}

// String is the move as operators read it: "held -2500".
func (m Move) String() string { return fmt.Sprintf("%s %+d", m.Bucket, m.Amount) }

// DescribeMoves says a resolution's journal rows in one line, "held
// -2500, paid_out +2500", the same in the console and the CLI.
func DescribeMoves(moves []Move) string {
	if len(moves) == 0 {
		return "nothing"
	}
	parts := make([]string, len(moves))
	for i, m := range moves {
		parts[i] = m.String()
	}
	return strings.Join(parts, ", ")
}

// ResolutionReasonBytesMax bounds a resolution's reason.
const ResolutionReasonBytesMax = 1024

// Validate checks what an operator asked for.
func (r *Resolution) Validate() error {
	switch r.Action {
	case ResolveBookPaid, ResolveReversePaid, ResolveNoMoney:
	default:
		return Errorf(EVALIDATION, "action must be book_paid, reverse_paid or no_money")
	}
	switch {
	case r.Amount < 0 || r.Amount > AmountMax:
		return Errorf(EVALIDATION, "amount must be 0 (take it from the claim) or a positive integer of minor units up to %d", AmountMax)
	case r.Action == ResolveNoMoney && r.Amount != 0:
		return Errorf(EVALIDATION, "no_money moves no amount")
	case r.Reason == "":
		return Errorf(EVALIDATION, "a resolution needs a reason: it is the audit trail of a decision about money")
	case len(r.Reason) > ResolutionReasonBytesMax:
		return Errorf(EVALIDATION, "reason must be at most %d bytes", ResolutionReasonBytesMax)
	case r.By == "" || len(r.By) > IDBytesMax:
		return Errorf(EVALIDATION, "by must name who resolved it (1-%d bytes)", IDBytesMax)
	case r.Payout != "" && r.Payout != StatusSucceeded && r.Payout != StatusFailed:
		return Errorf(EVALIDATION, "payout must be empty, succeeded or failed")
	}
	return checkText("reason", r.Reason)
}

// PlanResolution fills in r's Moves (and Advanced) for resolving e
// against its account a as it stands (nil when e has none): the one rule
// every ledger applies, so none can move money differently. ECONFLICT if
// e is resolved; EVALIDATION for an action the evidence gives no amount
// to, or that would take a bucket below zero.
func PlanResolution(e *Exception, a *Account, r *Resolution) error {
	if !e.Open() {
		return Errorf(ECONFLICT, "exception %d was resolved already (%s by %s)", e.ID, e.Resolution.Action, e.Resolution.By)
	}
	if err := r.Validate(); err != nil {
		return err
	}
	if a == nil && (r.Action != ResolveNoMoney || e.Held != 0 || r.Payout != "") {
		return Errorf(EVALIDATION, "exception %d has no account to move money in: only no_money resolves it", e.ID)
	}
	amount := r.Amount
	m := map[Bucket]int64{}
	switch r.Action {
	case ResolveBookPaid:
		if amount == 0 {
			amount = e.Claim
		}
		if amount <= 0 {
			return Errorf(EVALIDATION, "book_paid needs an amount: the evidence claims nothing paid beyond the ledger")
		}
		fromHeld := min(amount, e.Held)
		fromAvailable := min(amount-fromHeld, a.Available)
		r.Advanced = amount - fromHeld - fromAvailable
		m[BucketHeld] -= e.Held
		m[BucketAvailable] += e.Held - fromHeld - fromAvailable
		m[BucketExternal] -= r.Advanced
		m[BucketPaidOut] += amount
	case ResolveReversePaid:
		if amount == 0 {
			amount = -e.Claim
		}
		if amount <= 0 {
			return Errorf(EVALIDATION, "reverse_paid needs an amount: the evidence claims nothing paid out beyond the bank")
		}
		if amount > a.PaidOut {
			return Errorf(EVALIDATION, "account %s has paid out %d, less than %d to reverse", a.ID, a.PaidOut, amount)
		}
		m[BucketPaidOut] -= amount
		m[BucketHeld] -= e.Held
		m[BucketAvailable] += amount + e.Held
	case ResolveNoMoney:
		m[BucketHeld] -= e.Held
		m[BucketAvailable] += e.Held
	}
	r.Amount, r.Moves = amount, nil
	for _, b := range []Bucket{BucketExternal, BucketAvailable, BucketHeld, BucketPaidOut} {
		if m[b] != 0 {
			r.Moves = append(r.Moves, Move{Bucket: b, Amount: m[b]})
		}
	}
	return nil
}

// ApplyMoves changes a's buckets by moves (external is funding's
// counter-side: taking from it funds the account).
func ApplyMoves(a *Account, moves []Move) {
	for _, mv := range moves {
		switch mv.Bucket {
		case BucketExternal:
			a.Funded -= mv.Amount
		case BucketAvailable:
			a.Available += mv.Amount
		case BucketHeld:
			a.Held += mv.Amount
		case BucketPaidOut:
			a.PaidOut += mv.Amount
		}
	}
}

// SettlePayout checks that p, an exception's payout, can be settled by
// r.Payout and returns the notification that does it: from p's channel,
// under the event id of the exception and the status (applying it twice
// is a duplicate), with no partner ref, so the recorded one stays.
func SettlePayout(e *Exception, p *Payout, r *Resolution, now time.Time) (*Notification, error) {
	if p.Status.Terminal() {
		return nil, Errorf(EVALIDATION, "payout %s is already %s: only a pending or dispatched payout is settled by a resolution", p.ID, p.Status)
	}
	return &Notification{
		Channel: cmp.Or(p.Channel, e.Channel), EventID: fmt.Sprintf("exception:%d:%s", e.ID, r.Payout), PayoutID: p.ID,
		Status: r.Payout, Reason: CleanText("settled by "+r.By+": "+r.Reason, ReasonBytesMax), OccurredAt: now, ReceivedAt: now,
	}, nil
}

// PayoutsHeldByException is CreatePayout's refusal while an open
// exception could not hold all of its claim on the account.
func PayoutsHeldByException(e *Exception) error {
	return Errorf(EVALIDATION,
		"payouts from account %s are held: exception %d (%s) claims %d that the account could not cover; an operator must resolve it",
		e.AccountID, e.ID, e.Kind, e.Claim)
}

// ExceptionsMax bounds one listing of exceptions.
const ExceptionsMax = 1000

// ExceptionFilter selects exceptions to list, newest first.
type ExceptionFilter struct {
	// Open: only open ones; Resolved: only resolved ones; neither: all.
	Open, Resolved bool
	Kind           ExceptionKind
	PayoutID       string
	AccountID      string
	// Before, if > 0, lists only ids below it (the next page).
	Before int64
	Limit  int // <= 0 or > ExceptionsMax: ExceptionsMax
}

// ExceptionService keeps exceptions. Every Ledger is one: Apply files a
// conflict's exception in its own transaction.
type ExceptionService interface {
	// FileException files e (ID, Held and OpenedAt are the ledger's)
	// unless one with its key exists: then it returns that one and false.
	// A claim holds what it can of the account's available balance, in
	// the same transaction. EVALIDATION for an invalid e.
	FileException(ctx context.Context, e *Exception) (*Exception, bool, error)
	// Exceptions lists exceptions matching f, newest first.
	Exceptions(ctx context.Context, f ExceptionFilter) ([]*Exception, error)
	// Exception returns one; ENOTFOUND.
	Exception(ctx context.Context, id int64) (*Exception, error)
	// ResolveException resolves an open exception as r says (see
	// PlanResolution), moving its money with journal rows in one
	// transaction, and returns it with its Resolution filled in and the
	// account as it stands after (nil for an exception without one).
	// ENOTFOUND, ECONFLICT if it is resolved, EVALIDATION.
	ResolveException(ctx context.Context, id int64, r *Resolution) (*Exception, *Account, error)
	// OpenExceptions counts the open exceptions by kind.
	OpenExceptions(ctx context.Context) (map[ExceptionKind]int, error)
}

// ExceptionMatches reports whether e is one f selects (its Limit aside).
func ExceptionMatches(e *Exception, f ExceptionFilter) bool {
	switch {
	case f.Open && !e.Open(), f.Resolved && e.Open():
		return false
	case f.Kind != "" && e.Kind != f.Kind, f.PayoutID != "" && e.PayoutID != f.PayoutID,
		f.AccountID != "" && e.AccountID != f.AccountID:
		return false
	case f.Before > 0 && e.ID >= f.Before:
		return false
	}
	return true
}
