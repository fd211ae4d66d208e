package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/outlast/outlast"
)

// leaseDefault is the claim lease when the caller gives none.
const leaseDefault = 30 * time.Second

// ClaimDispatches leases up to limit due outbox entries for lease: they are
// not due again until the lease ends. If limit <= 0 or > BatchMax, BatchMax
// is used; if lease <= 0, 30 s is used. On PostgreSQL concurrent claimers
// skip each other's rows.
func (db *DB) ClaimDispatches(ctx context.Context, limit int, lease time.Duration) ([]*outlast.Dispatch, error) {
	if limit <= 0 || limit > BatchMax {
		limit = BatchMax
	}
	if lease <= 0 {
		lease = leaseDefault
	}
	var ds []*outlast.Dispatch
	err := db.write(ctx, "claim_dispatches", func(tx *sql.Tx) error {
		now := db.now()
		rows, err := tx.QueryContext(ctx, "SELECT o.attempts, o.refused, "+prefixed("p.", payoutColumns)+
			` FROM outbox o JOIN payouts p ON p.id = o.payout_id
			WHERE o.next_attempt_ns <= $1 ORDER BY o.next_attempt_ns, o.payout_id LIMIT $2`+db.d.skipLocked("o"),
			now.UnixNano(), limit)
		if err != nil {
			return err
		}
		ds, err = scanDispatches(rows)
		if err != nil {
			return err
		}
		until := now.Add(lease).UnixNano()
		for _, d := range ds {
			d.Claim = time.Unix(0, until)
			if _, err := tx.ExecContext(ctx, "UPDATE outbox SET next_attempt_ns = $1 WHERE payout_id = $2",
				until, d.Payout.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ds, nil
}

func scanDispatches(rows *sql.Rows) ([]*outlast.Dispatch, error) {
	defer rows.Close()
	var ds []*outlast.Dispatch
	for rows.Next() {
		var d outlast.Dispatch
		var refused string
		p, err := scanPayout(rows, &d.Attempts, &refused)
		if err != nil {
			return nil, err
		}
		d.Payout, d.Refused = p, splitRefused(refused)
		ds = append(ds, &d)
	}
	return ds, rows.Err()
}

// MarkDispatched records that channel accepted the payout under
// partnerRef: pending → dispatched, and the outbox entry goes. A payout
// already past pending only loses its outbox entry. ENOTFOUND.
func (db *DB) MarkDispatched(ctx context.Context, payoutID, channel, partnerRef string) (*outlast.Payout, error) {
	if !outlast.ValidID(channel) || (partnerRef != "" && !outlast.ValidID(partnerRef)) {
		return nil, outlast.Errorf(outlast.EVALIDATION, "channel and partner_ref must be 1-%d characters of [A-Za-z0-9._:-]", outlast.IDBytesMax)
	}
	var p *outlast.Payout
	err := db.write(ctx, "mark_dispatched", func(tx *sql.Tx) error {
		var err error
		p, err = loadPayout(ctx, tx, payoutID, db.d.forUpdate)
		if err != nil {
			return err
		}
		if p.Status == outlast.StatusPending {
			// The channel that accepted it replaces the one chosen at
			// creation: the dispatcher may have failed over.
			ap := db.newApplier(tx)
			ap.track(p)
			ap.transition(p, outlast.StatusDispatched, channel, partnerRef, "")
			return ap.flush(ctx)
		}
		_, err = tx.ExecContext(ctx, "DELETE FROM outbox WHERE payout_id = $1", payoutID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// RetryDispatch records a failed attempt: attempts+1, next try at
// notBefore, lastError (cut to outlast.ReasonBytesMax) kept for operators.
// A payout no longer in the outbox is left alone; ENOTFOUND if there is no
// such payout.
func (db *DB) RetryDispatch(ctx context.Context, payoutID string, notBefore time.Time, lastError string) error {
	return db.write(ctx, "retry_dispatch", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE outbox SET attempts = attempts + 1, next_attempt_ns = $1,
			last_error = $2 WHERE payout_id = $3`,
			notBefore.UnixNano(), outlast.CleanText(lastError, outlast.ReasonBytesMax), payoutID)
		if err != nil {
			return err
		}
		if oneRow(res) == nil {
			return nil
		}
		_, err = loadPayout(ctx, tx, payoutID, "")
		return err
	})
}

// RejectDispatch fails a pending payout that channel definitively did not
// accept: failed with reason, channel recorded as the last one tried, hold released with journal rows, outbox entry
// removed; the same path as a "failed" notification. A payout already
// final is returned unchanged. ECONFLICT for a dispatched payout: a partner
// has it and may still pay it, so only its own report can fail it. A
// non-zero claim must still be the outbox entry's (its lease end is the
// claim's identity): ECONFLICT otherwise.
func (db *DB) RejectDispatch(ctx context.Context, payoutID, channel, reason string, claim time.Time) (*outlast.Payout, error) {
	if !outlast.ValidID(channel) {
		return nil, outlast.Errorf(outlast.EVALIDATION, "channel must be 1-%d characters of [A-Za-z0-9._:-]", outlast.IDBytesMax)
	}
	var p *outlast.Payout
	err := db.write(ctx, "reject_dispatch", func(tx *sql.Tx) error {
		var err error
		p, err = loadPayout(ctx, tx, payoutID, db.d.forUpdate)
		if err != nil {
			return err
		}
		switch p.Status {
		case outlast.StatusDispatched:
			return outlast.Errorf(outlast.ECONFLICT, "payout %s was already accepted by %s", p.ID, p.Channel)
		case outlast.StatusSucceeded, outlast.StatusFailed:
			_, err = tx.ExecContext(ctx, "DELETE FROM outbox WHERE payout_id = $1", payoutID)
			return err
		}
		if !claim.IsZero() {
			if _, err := claimedEntry(ctx, tx, payoutID, claim); err != nil {
				return err
			}
		}
		if reason == "" {
			reason = "rejected by " + channel
		}
		ap := db.newApplier(tx)
		ap.track(p)
		ap.transition(p, outlast.StatusFailed, channel, "", reason)
		return ap.flush(ctx)
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// RerouteDispatch moves a pending payout that channel from definitively
// did not accept to channel to: from is added to the outbox entry's
// refused channels, the payout's channel becomes to (version+1), and the
// entry is due now with attempts 0 and reason as its last error; the hold
// stays. Fenced by claim as RejectDispatch: the entry must still be the
// claim's (a zero claim fences nothing, but the entry must exist).
// outlast.CheckReroute's errors; ENOTFOUND.
func (db *DB) RerouteDispatch(ctx context.Context, payoutID, from, to, reason string, claim time.Time) (*outlast.Payout, error) {
	if err := outlast.ValidateReroute(from, to); err != nil {
		return nil, err
	}
	var p *outlast.Payout
	err := db.write(ctx, "reroute_dispatch", func(tx *sql.Tx) error {
		var err error
		p, err = loadPayout(ctx, tx, payoutID, db.d.forUpdate)
		if err != nil {
			return err
		}
		var refused []string
		if p.Status == outlast.StatusPending { // else CheckReroute says why not
			if refused, err = claimedEntry(ctx, tx, payoutID, claim); err != nil {
				return err
			}
		}
		if err := outlast.CheckReroute(p, from, to, refused); err != nil {
			return err
		}
		ap := db.newApplier(tx)
		ap.track(p)
		p.MoveTo(outlast.StatusPending, to, "", "", fromNanos(ap.nowNanos))
		if err := ap.flushPayouts(ctx); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE outbox SET refused = $1, attempts = 0, next_attempt_ns = $2,
			last_error = $3 WHERE payout_id = $4`, strings.Join(append(refused, from), ","), ap.nowNanos,
			outlast.CleanText(reason, outlast.ReasonBytesMax), payoutID)
		return err
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// claimedEntry returns the refused channels of the outbox entry of
// payoutID, locked by the caller through its payout, or ClaimLost if
// there is none or, for a non-zero claim, it is no longer claim's: its
// next attempt, a claim's lease end, moved.
func claimedEntry(ctx context.Context, tx *sql.Tx, payoutID string, claim time.Time) ([]string, error) {
	var next int64
	var refused string
	err := tx.QueryRowContext(ctx, "SELECT next_attempt_ns, refused FROM outbox WHERE payout_id = $1", payoutID).Scan(&next, &refused)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	if err != nil || (!claim.IsZero() && next != claim.UnixNano()) {
		return nil, outlast.ClaimLost(payoutID)
	}
	return splitRefused(refused), nil
}

// splitRefused reads the outbox's refused column: channel names, which
// hold no commas, joined by commas.
func splitRefused(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
