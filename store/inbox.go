package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/outlast/outlast"
)

// AppendInbox commits ns (at most BatchMax) to the inbox in one
// transaction. EVALIDATION if any is invalid; then none is stored.
func (db *DB) AppendInbox(ctx context.Context, ns []*outlast.Notification) error {
	if len(ns) > BatchMax {
		return outlast.Errorf(outlast.EINVALID, "at most %d notifications per batch", BatchMax)
	}
	for i, n := range ns {
		if err := n.Validate(); err != nil {
			return outlast.Errorf(outlast.EVALIDATION, "notification %d: %s", i, outlast.ErrorMessage(err))
		}
	}
	if len(ns) == 0 {
		return nil
	}
	return db.write(ctx, "append_inbox", func(tx *sql.Tx) error {
		now := db.now().UnixNano()
		for _, n := range ns {
			received := now
			if !n.ReceivedAt.IsZero() {
				received = n.ReceivedAt.UnixNano()
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO inbox (channel, event_id, payout_id, partner_ref, status,
				reason, occurred_ns, received_ns, created_ns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
				n.Channel, n.EventID, n.PayoutID, n.PartnerRef, string(n.Status),
				cleanText(n.Reason, outlast.ReasonBytesMax), n.OccurredAt.UnixNano(), received, now); err != nil {
				return err
			}
		}
		return nil
	})
}

// DrainInbox applies up to limit of the oldest inbox entries in one
// transaction, through the same path as ApplyNotifications, and removes
// them; rejected ones move to the dead-letter table with their reason. If
// limit <= 0 or > BatchMax, BatchMax is used. On PostgreSQL concurrent
// drainers skip each other's entries.
func (db *DB) DrainInbox(ctx context.Context, limit int) (int, []outlast.ApplyResult, error) {
	if limit <= 0 || limit > BatchMax {
		limit = BatchMax
	}
	var results []outlast.ApplyResult
	err := db.write(ctx, "drain_inbox", func(tx *sql.Tx) error {
		ids, ns, err := selectInbox(ctx, tx, "SELECT id, "+notificationColumns+
			" FROM inbox ORDER BY id LIMIT $1"+db.d.skipLocked("inbox"), limit)
		if err != nil || len(ns) == 0 {
			return err
		}
		ap := db.newApplier(tx)
		if results, err = ap.applyAll(ctx, ns); err != nil {
			return err
		}
		for i, r := range results {
			if r.Outcome != outlast.OutcomeRejected {
				continue
			}
			if err := insertDeadLetter(ctx, tx, ns[i], r.Reason, ap.nowNanos); err != nil {
				return err
			}
		}
		return db.deleteInbox(ctx, tx, ids)
	})
	if err != nil {
		return 0, nil, err
	}
	countOutcomes(results)
	for _, r := range results {
		if r.Outcome == outlast.OutcomeRejected {
			deadLettersTotal.Inc()
		}
	}
	return len(results), results, nil
}

const notificationColumns = `channel, event_id, payout_id, partner_ref, status, reason, occurred_ns, received_ns`

func selectInbox(ctx context.Context, q querier, query string, args ...any) ([]int64, []*outlast.Notification, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var ids []int64
	var ns []*outlast.Notification
	for rows.Next() {
		var id int64
		n, err := scanNotification(rows, &id)
		if err != nil {
			return nil, nil, err
		}
		ids = append(ids, id)
		ns = append(ns, n)
	}
	return ids, ns, rows.Err()
}

// scanNotification scans notificationColumns after extra leading ones.
func scanNotification(s interface{ Scan(...any) error }, extra ...any) (*outlast.Notification, error) {
	var n outlast.Notification
	var status string
	var occurred, received int64
	dest := append(extra, &n.Channel, &n.EventID, &n.PayoutID, &n.PartnerRef, &status, &n.Reason, &occurred, &received)
	if err := s.Scan(dest...); err != nil {
		return nil, err
	}
	n.Status = outlast.PayoutStatus(status)
	n.OccurredAt, n.ReceivedAt = fromNanos(occurred), fromNanos(received)
	return &n, nil
}

func insertDeadLetter(ctx context.Context, tx *sql.Tx, n *outlast.Notification, reason string, nowNanos int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO dead_letters (channel, event_id, payout_id, partner_ref, status,
		reason, occurred_ns, received_ns, dead_reason, created_ns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		n.Channel, n.EventID, n.PayoutID, n.PartnerRef, string(n.Status), n.Reason,
		n.OccurredAt.UnixNano(), n.ReceivedAt.UnixNano(), reason, nowNanos)
	return err
}

func (db *DB) deleteInbox(ctx context.Context, tx *sql.Tx, ids []int64) error {
	// One list parameter: the statement's text does not depend on how
	// many entries were drained.
	rb := db.d.rows
	res, err := tx.ExecContext(ctx, "DELETE FROM inbox WHERE id "+rb.in(1, "bigint"), rb.list(ids))
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != int64(len(ids)) {
		return fmt.Errorf("delete inbox: %d of %d rows: %v", n, len(ids), err)
	}
	return nil
}

// DeadLetter is an inbox notification that could never be applied.
type DeadLetter struct {
	ID           int64
	Notification outlast.Notification
	Reason       string // why it was rejected
	CreatedAt    time.Time
}

// deadLettersMax bounds one DeadLetters listing.
const deadLettersMax = 1000

// DeadLetters lists up to limit dead letters, newest first. If limit <= 0
// or > 1000, 1000 is used.
func (db *DB) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	if limit <= 0 || limit > deadLettersMax {
		limit = deadLettersMax
	}
	rows, err := db.r.QueryContext(ctx, "SELECT id, dead_reason, created_ns, "+notificationColumns+
		" FROM dead_letters ORDER BY id DESC LIMIT $1", limit)
	if err != nil {
		return nil, fail("dead_letters", err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		var d DeadLetter
		var created int64
		n, err := scanNotification(rows, &d.ID, &d.Reason, &created)
		if err != nil {
			return nil, fail("dead_letters", err)
		}
		d.Notification, d.CreatedAt = *n, fromNanos(created)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fail("dead_letters", err)
	}
	return out, nil
}
