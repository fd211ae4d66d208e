// Package reconcile checks what Outlast says against what the partner banks
// say (seed 004: what the system called done differed from what users saw).
// It compares the ledger's payouts with each bank's records; later it also
// resolves payouts that are stuck by asking the bank.
package reconcile

import (
	"context"
	"fmt"
	"sort"

	"github.com/outlast/outlast"
)

// Discrepancy is one payout on which Outlast and a bank disagree.
type Discrepancy struct {
	PayoutID string
	Channel  string
	Kind     string // one of the Kind* constants
	Detail   string // readable: both sides' status and amounts
}

func (d Discrepancy) String() string {
	return fmt.Sprintf("%s %s: %s (%s)", d.Channel, d.PayoutID, d.Kind, d.Detail)
}

// Kinds of discrepancy.
const (
	KindPaidNotSucceeded  = "paid by bank but not succeeded here"
	KindSucceededNotPaid  = "succeeded here but not paid by bank"
	KindFailedAtBank      = "failed at bank but not failed here"
	KindUnknownHere       = "bank has a payout Outlast does not know"
	KindAmountMismatch    = "amount or currency differs"
	KindPartnerRefMissing = "partner ref differs"
)

// ComparePartner compares every payout routed to channel with the bank's
// records and returns the disagreements, sorted by payout id. A payout the
// bank has no record of and that is not succeeded here is in flight or was
// never accepted: not a discrepancy.
func ComparePartner(ctx context.Context, ledger outlast.Auditor, channel string, records []outlast.PartnerRecord) ([]Discrepancy, error) {
	byID := make(map[string]outlast.PartnerRecord, len(records))
	for _, r := range records {
		byID[r.PayoutID] = r
	}
	var out []Discrepancy
	add := func(id, kind, detail string) {
		out = append(out, Discrepancy{PayoutID: id, Channel: channel, Kind: kind, Detail: detail})
	}
	err := ledger.EachPayout(ctx, func(p *outlast.Payout) error {
		if p.Channel != channel {
			return nil
		}
		r, ok := byID[p.ID]
		delete(byID, p.ID)
		if kind, detail, bad := compare(p, r, ok); bad {
			add(p.ID, kind, detail)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read payouts: %w", err)
	}
	for id, r := range byID {
		add(id, KindUnknownHere, fmt.Sprintf("bank: %s %d %s", r.Status, r.Amount, r.Currency))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PayoutID < out[j].PayoutID })
	return out, nil
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
