package store

import (
	"context"
	"database/sql"
	"strconv"
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
				outlast.CleanText(n.Reason, outlast.ReasonBytesMax), n.OccurredAt.UnixNano(), received, now); err != nil {
				return err
			}
		}
		return nil
	})
}

// ClaimInbox leases up to limit due inbox entries, oldest first, for lease
// and counts a delivery of each; see outlast.Inbox. If limit <= 0 or >
// BatchMax, BatchMax is used; if lease <= 0, 30 s. On PostgreSQL
// concurrent drainers skip each other's entries.
func (db *DB) ClaimInbox(ctx context.Context, limit int, lease time.Duration) ([]outlast.InboxEntry, error) {
	if limit <= 0 || limit > BatchMax {
		limit = BatchMax
	}
	if lease <= 0 {
		lease = leaseDefault
	}
	var entries []outlast.InboxEntry
	err := db.write(ctx, "claim_inbox", func(tx *sql.Tx) error {
		now := db.now()
		var err error
		entries, err = selectInbox(ctx, tx, "SELECT id, deliveries, "+notificationColumns+
			" FROM inbox WHERE next_attempt_ns <= $1 ORDER BY next_attempt_ns, id LIMIT $2"+db.d.skipLocked("inbox"),
			now.UnixNano(), limit)
		if err != nil || len(entries) == 0 {
			return err
		}
		ids := make([]int64, len(entries))
		for i, e := range entries {
			ids[i] = e.ID
		}
		rb := db.d.rows
		_, err = tx.ExecContext(ctx, "UPDATE inbox SET deliveries = deliveries + 1, next_attempt_ns = $1 WHERE id "+
			rb.in(2, "bigint"), now.Add(lease).UnixNano(), rb.list(ids))
		return err
	})
	if err != nil {
		return nil, err
	}
	return entries, nil
}

// SettleInbox records what Apply made of claimed entries; see
// outlast.Inbox. Entries already settled (a lease that ran out and was
// claimed again elsewhere) are skipped: the notification is deduplicated
// by (channel, event id) in any case.
func (db *DB) SettleInbox(ctx context.Context, entries []outlast.InboxEntry, results []outlast.ApplyResult) error {
	if len(entries) != len(results) {
		return outlast.Errorf(outlast.EINVALID, "%d results for %d inbox entries", len(results), len(entries))
	}
	if len(entries) == 0 {
		return nil
	}
	dead := 0 // counted once committed
	err := db.write(ctx, "settle_inbox", func(tx *sql.Tx) error {
		now := db.now()
		// Every change is conditioned on the entry still being this
		// claim's (its deliveries unchanged): after a lease ran out,
		// another drainer may hold it, or have applied and removed it.
		done := newRowset("id bigint", "deliveries bigint")
		for i, e := range entries {
			r, claimed := results[i], int64(e.Notification.Deliveries)
			switch {
			case r.Outcome != outlast.OutcomeRejected:
				done.add(e.ID, claimed)
			case r.DeadLetter:
				moved, err := db.deadLetterInbox(ctx, tx, e, r.Reason, now.UnixNano())
				if err != nil {
					return err
				}
				if moved {
					dead++
				}
			default:
				if _, err := tx.ExecContext(ctx, `UPDATE inbox SET next_attempt_ns = $1, last_reason = $2
					WHERE id = $3 AND deliveries = $4`, now.Add(r.RetryAfter).UnixNano(),
					outlast.CleanText(r.Reason, outlast.ReasonBytesMax), e.ID, claimed); err != nil {
					return err
				}
			}
		}
		if done.n == 0 {
			return nil
		}
		rb := db.d.rows
		_, err := tx.ExecContext(ctx, "DELETE FROM inbox WHERE EXISTS (SELECT 1 FROM "+rb.from(done, 1)+
			" WHERE v.id = inbox.id AND v.deliveries = inbox.deliveries)", rb.args(done)...)
		return err
	})
	if err != nil {
		return err
	}
	deadLettersTotal.Add(float64(dead))
	return nil
}

// deadLetterInbox moves a claimed entry to the dead letters, if it is
// still this claim's, and reports whether it did.
func (db *DB) deadLetterInbox(ctx context.Context, tx *sql.Tx, e outlast.InboxEntry, reason string, nowNanos int64) (bool, error) {
	res, err := tx.ExecContext(ctx, "DELETE FROM inbox WHERE id = $1 AND deliveries = $2", e.ID, int64(e.Notification.Deliveries))
	if err != nil {
		return false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return false, err
	}
	return true, insertDeadLetter(ctx, tx, e.Notification, reason, nowNanos)
}

const notificationColumns = `channel, event_id, payout_id, partner_ref, status, reason, occurred_ns, received_ns`

func selectInbox(ctx context.Context, q querier, query string, args ...any) ([]outlast.InboxEntry, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var entries []outlast.InboxEntry
	for rows.Next() {
		var e outlast.InboxEntry
		var deliveries int
		n, err := scanNotification(rows, &e.ID, &deliveries)
		if err != nil {
			return nil, err
		}
		n.Deliveries = deliveries + 1 // this claim
		e.Notification = n
		entries = append(entries, e)
	}
	return entries, rows.Err()
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
		reason, occurred_ns, received_ns, dead_reason, created_ns, deliveries)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		n.Channel, n.EventID, n.PayoutID, n.PartnerRef, string(n.Status), n.Reason,
		n.OccurredAt.UnixNano(), n.ReceivedAt.UnixNano(), outlast.CleanText(reason, outlast.ReasonBytesMax), nowNanos, n.Deliveries)
	return err
}

// DeadLetters lists up to limit of the database's dead letters, newest
// first; see outlast.DeadLetters. Their ids are "inbox:<row id>".
func (db *DB) DeadLetters(ctx context.Context, limit int) ([]outlast.DeadLetter, error) {
	if limit <= 0 || limit > outlast.DeadLettersMax {
		limit = outlast.DeadLettersMax
	}
	rows, err := db.r.QueryContext(ctx, "SELECT id, dead_reason, created_ns, deliveries, "+notificationColumns+
		" FROM dead_letters ORDER BY id DESC LIMIT $1", limit)
	if err != nil {
		return nil, fail("dead_letters", err)
	}
	defer rows.Close()
	var out []outlast.DeadLetter
	for rows.Next() {
		var d outlast.DeadLetter
		var id, created int64
		n, err := scanNotification(rows, &id, &d.Reason, &created, &d.Deliveries)
		if err != nil {
			return nil, fail("dead_letters", err)
		}
		d.ID = outlast.DeadLetterID(outlast.FromInbox, strconv.FormatInt(id, 10))
		d.Notification, d.At = n, fromNanos(created)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fail("dead_letters", err)
	}
	return out, nil
}

// ReplayDeadLetters moves the dead letters with these ids back into the
// inbox, due at once with their deliveries reset, in one transaction, and
// returns how many moved; see outlast.DeadLetters. Leaving the dead letters
// and entering the inbox commit together, so a notification is never in
// neither.
func (db *DB) ReplayDeadLetters(ctx context.Context, ids []string) (int, error) {
	keys, err := outlast.DeadLetterKeys(outlast.FromInbox, ids)
	if err != nil || len(keys) == 0 {
		return 0, err
	}
	var moved int64
	err = db.write(ctx, "replay_dead_letters", func(tx *sql.Tx) error {
		rb := db.d.rows
		res, err := tx.ExecContext(ctx, `INSERT INTO inbox (channel, event_id, payout_id, partner_ref, status,
			reason, occurred_ns, received_ns, created_ns)
			SELECT channel, event_id, payout_id, partner_ref, status, reason, occurred_ns, received_ns, $1
			FROM dead_letters WHERE id `+rb.in(2, "bigint")+` ORDER BY id`, db.now().UnixNano(), rb.list(keys))
		if err != nil {
			return err
		}
		if moved, err = res.RowsAffected(); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "DELETE FROM dead_letters WHERE id "+rb.in(1, "bigint"), rb.list(keys))
		return err
	})
	return int(moved), err
}
