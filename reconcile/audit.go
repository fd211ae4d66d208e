// Package reconcile checks what Outlast says against what the partner banks
// say (seed 004: what the system called done differed from what users saw).
// It compares the ledger's payouts with each bank's records, and its
// Reconciler resolves payouts that are stuck by asking the bank.
package reconcile

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/outlast/outlast"
)

// Discrepancy is one payout on which Outlast and a bank disagree.
type Discrepancy struct {
	PayoutID string `json:"payout_id"`
	Channel  string `json:"channel"`
	Kind     string `json:"kind"`   // one of the Kind* constants
	Detail   string `json:"detail"` // readable: both sides' status and amounts
	// Filing is the exception the discrepancy files when no repair
	// settles it; nil for one that settles itself (a payout still in
	// flight here that the bank has already answered for).
	Filing *outlast.Exception `json:"-"`
	// ExceptionID is the exception filed for it, once there is one;
	// Resolved says a human resolved it, which settles the discrepancy.
	ExceptionID int64 `json:"exception_id,omitempty"`
	Resolved    bool  `json:"resolved,omitempty"`
}

func (d Discrepancy) String() string {
	s := fmt.Sprintf("%s %s: %s (%s)", d.Channel, d.PayoutID, d.Kind, d.Detail)
	switch {
	case d.Resolved:
		s += fmt.Sprintf(" [exception %d, resolved]", d.ExceptionID)
	case d.ExceptionID != 0:
		s += fmt.Sprintf(" [exception %d, open]", d.ExceptionID)
	}
	return s
}

// Kinds of discrepancy.
const (
	KindPaidNotSucceeded  = "paid by bank but not succeeded here"
	KindSucceededNotPaid  = "succeeded here but not paid by bank"
	KindFailedAtBank      = "failed at bank but not failed here"
	KindUnknownHere       = "bank has a payout Outlast does not know"
	KindAmountMismatch    = "amount or currency differs"
	KindPartnerRefMissing = "partner ref differs"
	// KindPaidTwice: the bank has more than one paid record of the payout
	// (a double payment).
	KindPaidTwice = "paid more than once by bank"
	// KindManyRecords: the bank has more than one record of the payout,
	// at most one of them paid.
	KindManyRecords = "bank has more than one record"
	// KindPaidOtherChannel: the bank paid a payout Outlast routed to
	// another channel (perhaps after this one refused it), so two banks
	// may have paid it.
	KindPaidOtherChannel = "paid by a channel the payout is not routed to"
)

// Payouts is what ComparePartner reads: every payout (an outlast.Auditor
// has them).
type Payouts interface {
	EachPayout(ctx context.Context, fn func(*outlast.Payout) error) error
}

// ComparePartner compares every payout routed to channel with the bank's
// records and returns the disagreements, sorted by payout id, each with
// the exception it would file. A payout the bank has no record of and
// that is not succeeded here is in flight or was never accepted: not a
// discrepancy. Records are grouped by payout id, never collapsed: two
// records of one payout are a discrepancy of their own, and two paid ones
// a double payment. A paid record of a payout routed to another channel
// is one too; an unpaid one is that channel's refusal, which moved it.
func ComparePartner(ctx context.Context, ledger Payouts, channel string, records []outlast.PartnerRecord) ([]Discrepancy, error) {
	byID := make(map[string][]outlast.PartnerRecord, len(records))
	for _, r := range records {
		byID[r.PayoutID] = append(byID[r.PayoutID], r)
	}
	var out []Discrepancy
	add := func(p *outlast.Payout, id, kind, detail string, rs []outlast.PartnerRecord) {
		out = append(out, Discrepancy{PayoutID: id, Channel: channel, Kind: kind, Detail: detail,
			Filing: filing(p, id, channel, kind, detail, rs)})
	}
	err := ledger.EachPayout(ctx, func(p *outlast.Payout) error {
		rs := byID[p.ID]
		delete(byID, p.ID)
		if p.Channel != channel {
			for _, r := range rs {
				if r.Status == outlast.StatusSucceeded {
					add(p, p.ID, KindPaidOtherChannel, fmt.Sprintf("here: %s %d %s via %s; bank: %s",
						p.Status, p.Amount, p.Currency, p.Channel, recordString(r)), []outlast.PartnerRecord{r})
				}
			}
			return nil
		}
		if kind, detail, bad := several(rs); bad {
			add(p, p.ID, kind, fmt.Sprintf("here: %s %d %s ref %s; %s", p.Status, p.Amount, p.Currency, p.PartnerRef, detail), rs)
		}
		r, ok := primary(rs)
		if kind, detail, bad := compare(p, r, ok); bad {
			add(p, p.ID, kind, detail, rs)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read payouts: %w", err)
	}
	for id, rs := range byID {
		for _, r := range rs {
			add(nil, id, KindUnknownHere, "bank: "+recordString(r), []outlast.PartnerRecord{r})
		}
		if kind, detail, bad := several(rs); bad {
			add(nil, id, kind, detail, rs)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].PayoutID < out[j].PayoutID })
	return out, nil
}

// several judges a payout's records against each other: more than one is
// a discrepancy, more than one paid a double payment.
func several(rs []outlast.PartnerRecord) (kind, detail string, bad bool) {
	if len(rs) < 2 {
		return "", "", false
	}
	paid := 0
	var each []string
	for _, r := range rs {
		if r.Status == outlast.StatusSucceeded {
			paid++
		}
		each = append(each, recordString(r))
	}
	detail = fmt.Sprintf("bank: %d records: %s", len(rs), strings.Join(each, ", "))
	if paid > 1 {
		return KindPaidTwice, detail, true
	}
	return KindManyRecords, detail, true
}

// primary is the record a payout is compared with: its paid one if any
// (money moved), else its first.
func primary(rs []outlast.PartnerRecord) (outlast.PartnerRecord, bool) {
	if len(rs) == 0 {
		return outlast.PartnerRecord{}, false
	}
	for _, r := range rs {
		if r.Status == outlast.StatusSucceeded {
			return r, true
		}
	}
	return rs[0], true
}

// compare judges one payout against the bank's record of it (ok false: the
// bank has none).
func compare(p *outlast.Payout, r outlast.PartnerRecord, ok bool) (kind, detail string, bad bool) {
	here := fmt.Sprintf("here: %s %d %s", p.Status, p.Amount, p.Currency)
	if !ok {
		if p.Status == outlast.StatusSucceeded {
			return KindSucceededNotPaid, here + "; bank: no record", true
		}
		return "", "", false
	}
	both := fmt.Sprintf("%s; bank: %s %d %s", here, r.Status, r.Amount, r.Currency)
	switch {
	case r.Status == outlast.StatusSucceeded && p.Status != outlast.StatusSucceeded:
		return KindPaidNotSucceeded, both, true
	case r.Status != outlast.StatusSucceeded && p.Status == outlast.StatusSucceeded:
		return KindSucceededNotPaid, both, true
	case r.Status == outlast.StatusFailed && p.Status != outlast.StatusFailed:
		return KindFailedAtBank, both, true
	case r.Amount != p.Amount || r.Currency != p.Currency:
		return KindAmountMismatch, both, true
	case p.PartnerRef != "" && r.PartnerRef != "" && p.PartnerRef != r.PartnerRef:
		return KindPartnerRefMissing, fmt.Sprintf("here: %s; bank: %s", p.PartnerRef, r.PartnerRef), true
	}
	return "", "", false
}

// recordString is a bank record, readable.
func recordString(r outlast.PartnerRecord) string {
	return fmt.Sprintf("%s %d %s ref %s", r.Status, r.Amount, r.Currency, r.PartnerRef)
}
