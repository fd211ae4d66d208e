package naive

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/outlast/outlast"
)

// applyNotification commits n once per (channel, event id): the payout
// moves as outlast.Decide says, and a terminal state settles the hold
// (succeeded: paid out; failed: released). Only an applied, stale or
// conflicting notification is remembered; a rejected one is rolled back.
func applyNotification(ctx context.Context, db *sql.DB, n *outlast.Notification, now time.Time) (outlast.ApplyResult, error) {
	var res outlast.ApplyResult
	err := inTx(ctx, db, func(tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, `INSERT INTO naive_notifications (channel, event_id, payout_id, status, received_at)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, n.Channel, n.EventID, n.PayoutID, n.Status, now)
		if err != nil {
			return err
		}
		if rows, err := r.RowsAffected(); err != nil || rows == 0 {
			res.Outcome = outlast.OutcomeDuplicate
			return err
		}
		p, err := payout(ctx, tx, n.PayoutID, true)
		if outlast.ErrorCode(err) == outlast.ENOTFOUND {
			res = outlast.ApplyResult{Outcome: outlast.OutcomeRejected, Reason: "unknown payout"}
			return errRollback
		}
		if err != nil {
			return err
		}
		res = outlast.Decide(p, n)
		res.Payout = p
		switch res.Outcome {
		case outlast.OutcomeRejected:
			return errRollback
		case outlast.OutcomeApplied:
			return moveTo(ctx, tx, p, n.Status, n.PartnerRef, n.Reason, now)
		}
		return nil
	})
	if errors.Is(err, errRollback) {
		err = nil
	}
	return res, err
}

// errRollback ends a transaction that must leave no trace without being a
// failure.
var errRollback = errors.New("rolled back")

// moveTo records p's move to status and settles the account when it is
// terminal.
func moveTo(ctx context.Context, tx *sql.Tx, p *outlast.Payout, to outlast.PayoutStatus, partnerRef, reason string, now time.Time) error {
	p.MoveTo(to, "", partnerRef, reason, now)
	_, err := tx.ExecContext(ctx, `UPDATE naive_payouts SET status = $2, partner_ref = $3, failure_reason = $4, version = $5, updated_at = $6 WHERE id = $1`,
		p.ID, p.Status, p.PartnerRef, p.FailureReason, p.Version, now)
	if err != nil || !to.Terminal() {
		return err
	}
	a, err := account(ctx, tx, p.AccountID, true)
	if err != nil {
		return err
	}
	a.Held -= p.Amount
	if to == outlast.StatusSucceeded {
		a.PaidOut += p.Amount
	} else {
		a.Available += p.Amount
	}
	return saveBalances(ctx, tx, a, now)
}

// recordDispatch moves a pending payout to dispatched, or to failed when
// the bank refused it; a payout a notification already moved on is left.
func recordDispatch(ctx context.Context, db *sql.DB, id string, to outlast.PayoutStatus, partnerRef, reason string, now time.Time) (*outlast.Payout, error) {
	var p *outlast.Payout
	err := inTx(ctx, db, func(tx *sql.Tx) error {
		var err error
		if p, err = payout(ctx, tx, id, true); err != nil {
			return err
		}
		if outlast.NextTransition(p.Status, to) != outlast.TransitionApply {
			return nil
		}
		return moveTo(ctx, tx, p, to, partnerRef, reason, now)
	})
	return p, err
}

// claimPending takes up to limit pending payouts due for an attempt and
// pushes their next attempt lease into the future, so other instances'
// dispatchers skip them meanwhile.
func claimPending(ctx context.Context, db *sql.DB, limit int, lease time.Duration, now time.Time) ([]*outlast.Payout, error) {
	var ps []*outlast.Payout
	err := inTx(ctx, db, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id, amount, currency, destination, channel FROM naive_payouts
			WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED`, now, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		ids := []string{}
		for rows.Next() {
			var p outlast.Payout
			if err := rows.Scan(&p.ID, &p.Amount, &p.Currency, &p.Destination, &p.Channel); err != nil {
				return err
			}
			ps = append(ps, &p)
			ids = append(ids, p.ID)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE naive_payouts SET next_attempt_at = $1 WHERE id = ANY($2)`, now.Add(lease), ids)
		return err
	})
	return ps, err
}
