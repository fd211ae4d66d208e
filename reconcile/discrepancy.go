package reconcile

import (
	"context"
	"fmt"
	"time"

	"github.com/outlast/outlast"
)

// RepairLedger is what Repair reads and writes: every payout, each one's
// current state, the one apply path every notification takes, and the
// exceptions it files for a human.
type RepairLedger interface {
	Exceptions
	EachPayout(ctx context.Context, fn func(*outlast.Payout) error) error
	Payout(ctx context.Context, id string) (*outlast.Payout, outlast.Freshness, error)
	Apply(ctx context.Context, source outlast.Source, ns []*outlast.Notification) ([]outlast.ApplyResult, error)
}

// repairBatchMax bounds the notifications Repair applies in one call, well
// under every ledger's batch bound.
const repairBatchMax = 100

// Outcomes of a repair besides the ledger's (outlast.Outcome*).
const (
	// OutcomeWouldApply: a dry run; nothing was applied.
	OutcomeWouldApply = "would apply"
)

// RepairReport is what Repair found and did for one partner. Its JSON is
// `outlast reconcile --json`'s, and stable.
type RepairReport struct {
	Channel string `json:"channel"`
	Records int    `json:"records"` // the partner's records compared
	DryRun  bool   `json:"dry_run"`
	// Found is every discrepancy before any repair, by kind.
	Found map[string]int `json:"found"`
	// Repairs are the notifications applied (or, in a dry run, that
	// would be), in payout id order.
	Repairs []RepairAction `json:"repairs"`
	// ForHuman is what is left after the repairs: what could not be
	// repaired safely, and repairs the ledger would not take. Each is
	// filed as an exception (ExceptionID), unless this is a dry run.
	ForHuman []Discrepancy `json:"for_human"`
	// Filed counts the exceptions this run filed (the others were filed
	// before, by a webhook, the reconciler or an earlier run).
	Filed int `json:"filed"`
	// Settled are discrepancies whose exception a human resolved.
	Settled []Discrepancy `json:"settled"`
	// InFlight are discrepancies about payouts still moving here (pending
	// at the dispatcher, a bank that answered before its hand-over was
	// recorded): the dispatcher and the reconciler finish them.
	InFlight []Discrepancy `json:"in_flight"`
}

// OK reports whether nothing is left for a human.
func (r *RepairReport) OK() bool { return len(r.ForHuman) == 0 }

// Repaired counts the repairs that left the payout in the bank's status
// (applied now, or already there: a webhook or the reconciler was first).
func (r *RepairReport) Repaired() int {
	n := 0
	for _, a := range r.Repairs {
		if a.Repaired {
			n++
		}
	}
	return n
}

// RepairAction is one bank record applied as a notification.
type RepairAction struct {
	Discrepancy
	Status  outlast.PayoutStatus `json:"status"`  // the bank's, applied
	Outcome string               `json:"outcome"` // an outlast.Outcome, or OutcomeWouldApply
	Reason  string               `json:"reason,omitempty"`
	// Repaired: the payout is now in Status.
	Repaired bool `json:"repaired"`
}

// Repair compares the ledger with channel's records (ComparePartner) and
// repairs what is safely repairable: a missed success or a missed failure
// of a payout still dispatched here, which the bank holds once, under the
// same amount, currency and partner ref (or the payout has none yet). It
// applies the bank's record as the reconciler applies a status answer —
// from outlast.FromReconciler, under the event id "reconcile:<payout>:<status>"
// — so a repair the reconciler or a late webhook already made is a
// counted no-op. Everything else is left for a human: money that moved
// the other way (a payout failed here that the bank paid), a double
// payment, a mismatch, a record Outlast does not know — and each of those
// is filed as an exception with its evidence, once (a discrepancy whose
// exception a human resolved is settled). With dryRun nothing is applied
// or filed and Repairs say what would be.
func Repair(ctx context.Context, ledger RepairLedger, channel string, records []outlast.PartnerRecord, dryRun bool) (*RepairReport, error) {
	ds, err := ComparePartner(ctx, ledger, channel, records)
	if err != nil {
		return nil, err
	}
	rep := &RepairReport{Channel: channel, Records: len(records), DryRun: dryRun, Found: map[string]int{},
		Repairs: []RepairAction{}, ForHuman: []Discrepancy{}, Settled: []Discrepancy{}, InFlight: []Discrepancy{}}
	open, err := Settle(ctx, ledger, ds)
	if err != nil {
		return nil, err
	}
	for _, d := range ds {
		if d.Resolved {
			rep.Settled = append(rep.Settled, d)
		}
	}
	byID := make(map[string][]outlast.PartnerRecord, len(records))
	for _, r := range records {
		byID[r.PayoutID] = append(byID[r.PayoutID], r)
	}
	perPayout := map[string]int{}
	for _, d := range ds {
		rep.Found[d.Kind]++
		perPayout[d.PayoutID]++
	}
	var ns []*outlast.Notification
	for _, d := range open {
		n, err := repairFor(ctx, ledger, d, perPayout[d.PayoutID], byID[d.PayoutID])
		if err != nil {
			return nil, err
		}
		if n == nil && d.Filing == nil {
			if perPayout[d.PayoutID] == 1 { // else another discrepancy of it files
				rep.InFlight = append(rep.InFlight, d)
			}
			continue
		}
		if n == nil {
			rep.ForHuman = append(rep.ForHuman, d)
			continue
		}
		ns = append(ns, n)
		rep.Repairs = append(rep.Repairs, RepairAction{Discrepancy: d, Status: n.Status, Outcome: OutcomeWouldApply})
	}
	if dryRun {
		return rep, nil
	}
	if err := applyRepairs(ctx, ledger, ns, rep); err != nil {
		return nil, err
	}
	return rep, fileForHuman(ctx, ledger, rep)
}

// fileForHuman files an exception for each discrepancy left for a human
// that has none yet.
func fileForHuman(ctx context.Context, ledger Exceptions, rep *RepairReport) error {
	for i := range rep.ForHuman {
		d := &rep.ForHuman[i]
		if d.Filing == nil || d.ExceptionID != 0 {
			continue
		}
		e, filed, err := ledger.FileException(ctx, d.Filing)
		if err != nil {
			return fmt.Errorf("file exception for %s: %w", d.PayoutID, err)
		}
		d.ExceptionID = e.ID
		if filed {
			rep.Filed++
		}
	}
	return nil
}

// repairFor decides whether d is safely repairable and returns the
// notification that repairs it, or nil: one payout with one discrepancy
// (several, or several records, need a human), a missed final status of
// a payout dispatched here, and a record agreeing on everything else.
func repairFor(ctx context.Context, ledger RepairLedger, d Discrepancy, discrepancies int, rs []outlast.PartnerRecord) (*outlast.Notification, error) {
	if discrepancies != 1 || len(rs) != 1 || (d.Kind != KindPaidNotSucceeded && d.Kind != KindFailedAtBank) {
		return nil, nil
	}
	p, _, err := ledger.Payout(ctx, d.PayoutID)
	if err != nil {
		return nil, fmt.Errorf("read payout %s: %w", d.PayoutID, err)
	}
	r := rs[0]
	switch {
	case p.Status != outlast.StatusDispatched:
		// Pending: the bank should not have it yet. Failed with the bank
		// paid: the hold is released, so money would move back.
		return nil, nil
	case r.Amount != p.Amount || r.Currency != p.Currency:
		return nil, nil
	case p.PartnerRef != "" && r.PartnerRef != p.PartnerRef:
		return nil, nil
	}
	return statusNotification(p.Channel, p.ID, &Answer{PartnerRef: r.PartnerRef, Status: r.Status, Reason: "from the bank's records"},
		time.Now()), nil
}

// applyRepairs applies ns in bounded batches and records each outcome in
// rep; a repair the ledger did not take is left for a human.
func applyRepairs(ctx context.Context, ledger RepairLedger, ns []*outlast.Notification, rep *RepairReport) error {
	for start := 0; start < len(ns); start += repairBatchMax {
		batch := ns[start:min(start+repairBatchMax, len(ns))]
		results, err := ledger.Apply(ctx, outlast.FromReconciler, batch)
		if err != nil {
			return fmt.Errorf("apply repairs: %w", err)
		}
		if len(results) != len(batch) {
			return fmt.Errorf("apply repairs: %d results for %d notifications", len(results), len(batch))
		}
		for i, res := range results {
			a := &rep.Repairs[start+i]
			a.Outcome, a.Reason = string(res.Outcome), res.Reason
			a.Repaired = res.Payout != nil && res.Payout.Status == a.Status &&
				res.Outcome != outlast.OutcomeConflict && res.Outcome != outlast.OutcomeRejected
			if !a.Repaired {
				d := a.Discrepancy
				d.Detail = fmt.Sprintf("%s; repair %s: %s", d.Detail, res.Outcome, res.Reason)
				if res.Filed != nil { // the repair's own conflict filed it
					d.ExceptionID = res.Filed.ID
				}
				rep.ForHuman = append(rep.ForHuman, d)
			}
		}
	}
	return nil
}
