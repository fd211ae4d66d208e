package reconcile

import (
	"context"
	"fmt"

	"github.com/outlast/outlast"
)

// filing is the exception a discrepancy of kind about payout id (p, or nil
// when Outlast does not know it) on channel files when no repair settles
// it, or nil when it settles itself: a payout still in flight here that
// the bank already answered for is the dispatcher's and the reconciler's
// to finish, or another discrepancy's (a mismatch, several records) to
// file. Its key is the one every path uses for the same fact, so the
// exception a late webhook filed is the one this report finds.
func filing(p *outlast.Payout, id, channel, kind, detail string, rs []outlast.PartnerRecord) *outlast.Exception {
	e := &outlast.Exception{PayoutID: id, Channel: channel, FiledBy: outlast.FiledByReport,
		Summary: fmt.Sprintf("%s %s: %s (%s)", channel, id, kind, detail)}
	if p != nil {
		e.AccountID, e.Currency = p.AccountID, p.Currency
		e.Evidence = append(e.Evidence, outlast.LedgerEvidence(p))
	}
	for _, r := range rs {
		e.Evidence = append(e.Evidence, outlast.Evidence{Source: "records of " + channel, Says: recordString(r)})
	}
	paid, _ := primary(rs)
	switch kind {
	case KindPaidNotSucceeded:
		switch {
		case p.Status == outlast.StatusFailed:
			e.Kind, e.Key, e.Claim = outlast.ExceptionPaidButFailed, outlast.ExceptionKey(outlast.ExceptionPaidButFailed, id, ""),
				paidIn(p, paid)
		case paid.Amount != p.Amount || paid.Currency != p.Currency:
			// In flight here, but not what the ledger sent: the repair
			// would book the ledger's amount.
			return filing(p, id, channel, KindAmountMismatch, detail, rs)
		case p.PartnerRef != "" && paid.PartnerRef != p.PartnerRef:
			return filing(p, id, channel, KindPartnerRefMissing, detail, rs)
		default:
			return nil // pending here, or another discrepancy's (several records)
		}
	case KindSucceededNotPaid:
		e.Kind, e.Key, e.Claim = outlast.ExceptionSucceededNotPaid, outlast.ExceptionKey(outlast.ExceptionSucceededNotPaid, id, ""),
			-p.Amount
	case KindFailedAtBank:
		return nil // not failed here, not succeeded either: in flight
	case KindUnknownHere:
		e.Kind, e.Key = outlast.ExceptionUnknownPayout, outlast.ExceptionKey(outlast.ExceptionUnknownPayout, id, channel+"/"+rs[0].PartnerRef)
	case KindAmountMismatch:
		e.Kind, e.Key = outlast.ExceptionAmountMismatch, outlast.ExceptionKey(outlast.ExceptionAmountMismatch, id, channel)
		// The ledger books (or will, once the payout settles) its own
		// amount; the bank paid the record's.
		if bank := paidIn(p, paid); bank != 0 && p.Status != outlast.StatusFailed {
			e.Claim = bank - p.Amount
		}
	case KindPartnerRefMissing:
		e.Kind, e.Key = outlast.ExceptionPartnerRefConflict, outlast.OtherRefKey(id, channel, paid.PartnerRef)
	case KindManyRecords:
		e.Kind, e.Key = outlast.ExceptionPartnerRefConflict, outlast.ExceptionKey(outlast.ExceptionPartnerRefConflict, id, channel+"/several")
	case KindPaidTwice:
		// Keyed by the first paid record under a ref other than the
		// ledger's, as the webhook reporting it keys it.
		extra := extraPaid(p, rs)
		e.Kind, e.Key = outlast.ExceptionPaidTwice, outlast.OtherRefKey(id, channel, extra[0].PartnerRef)
		for _, r := range extra {
			e.Claim += paidIn(p, r)
		}
	case KindPaidOtherChannel:
		e.Kind, e.Key, e.Claim = outlast.ExceptionPaidByOtherChannel, outlast.ExceptionKey(outlast.ExceptionPaidByOtherChannel, id, channel),
			paidIn(p, paid)
	default:
		return nil
	}
	if p == nil {
		e.Claim = 0
	}
	return e
}

// extraPaid are the paid records of a payout the bank paid more than once
// beyond the one the ledger books: those under another ref than the
// ledger's, or, when none is the ledger's, all but the first.
func extraPaid(p *outlast.Payout, rs []outlast.PartnerRecord) []outlast.PartnerRecord {
	var paid, other []outlast.PartnerRecord
	for _, r := range rs {
		if r.Status == outlast.StatusSucceeded {
			paid = append(paid, r)
			if p == nil || r.PartnerRef != p.PartnerRef {
				other = append(other, r)
			}
		}
	}
	if len(other) == len(paid) {
		return paid[1:]
	}
	return other
}

// paidIn is what record r says the bank paid, in p's currency: 0 when
// it did not pay or paid another currency (no claim can be computed).
func paidIn(p *outlast.Payout, r outlast.PartnerRecord) int64 {
	if p == nil || r.Status != outlast.StatusSucceeded || r.Currency != p.Currency {
		return 0
	}
	return r.Amount
}

// Exceptions is what Settle and Repair read and file exceptions in (an
// outlast.ExceptionService).
type Exceptions interface {
	FileException(ctx context.Context, e *outlast.Exception) (*outlast.Exception, bool, error)
	Exceptions(ctx context.Context, f outlast.ExceptionFilter) ([]*outlast.Exception, error)
}

// Settle finds the exception each discrepancy filed, if any, and marks it
// in ds: a resolved one settles the discrepancy (a human decided, and the
// journal says what moved). It returns the discrepancies not settled.
func Settle(ctx context.Context, ex Exceptions, ds []Discrepancy) ([]Discrepancy, error) {
	byPayout := map[string][]*outlast.Exception{}
	var open []Discrepancy
	for i := range ds {
		d := &ds[i]
		if d.Filing != nil {
			es, ok := byPayout[d.PayoutID]
			if !ok {
				var err error
				if es, err = ex.Exceptions(ctx, outlast.ExceptionFilter{PayoutID: d.PayoutID}); err != nil {
					return nil, fmt.Errorf("exceptions of payout %s: %w", d.PayoutID, err)
				}
				byPayout[d.PayoutID] = es
			}
			for _, e := range es {
				if e.Key == d.Filing.Key {
					d.ExceptionID, d.Resolved = e.ID, !e.Open()
				}
			}
		}
		if !d.Resolved {
			open = append(open, *d)
		}
	}
	return open, nil
}
