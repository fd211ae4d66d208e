package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/outlast/outlast"
)

// problemsMax bounds a report's problem lines; a broken ledger is reported
// by its first problems and a count, not by a million lines.
const problemsMax = 1000

// AuditLedger recomputes every account's buckets and every payout's money
// from the journal, in SQL aggregates over one snapshot, and lists each
// disagreement, negative balance, outbox inconsistency, conflicting
// notification recorded before exceptions existed, open exception, and
// exception whose journal rows do not match it.
func (db *DB) AuditLedger(ctx context.Context) (*outlast.LedgerReport, error) {
	rep := &outlast.LedgerReport{}
	err := db.read(ctx, "audit_ledger", func(tx *sql.Tx) error {
		if err := auditCounts(ctx, tx, rep); err != nil {
			return err
		}
		for _, check := range []func(context.Context, *sql.Tx, *outlast.LedgerReport) error{
			auditAccounts, auditPayouts, auditJournalAccounts, auditOutbox, auditConflicts, auditExceptions,
		} {
			if err := check(ctx, tx, rep); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(rep.Problems) > problemsMax {
		more := len(rep.Problems) - problemsMax
		rep.Problems = append(rep.Problems[:problemsMax], fmt.Sprintf("... and %d more problems", more))
	}
	return rep, nil
}

func auditCounts(ctx context.Context, tx *sql.Tx, rep *outlast.LedgerReport) error {
	var err error
	if rep.Payouts, err = payoutCounts(ctx, tx); err != nil {
		return err
	}
	return tx.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM outbox),
		(SELECT COUNT(*) FROM inbox), (SELECT COUNT(*) FROM dead_letters)`).
		Scan(&rep.Accounts, &rep.Outbox, &rep.Inbox, &rep.DeadLetters)
}

// bucketSums is the journal per account: -external is what was funded.
const bucketSums = `
	CAST(COALESCE(SUM(CASE WHEN bucket = 'external' THEN amount ELSE 0 END), 0) AS BIGINT) AS ext,
	CAST(COALESCE(SUM(CASE WHEN bucket = 'available' THEN amount ELSE 0 END), 0) AS BIGINT) AS av,
	CAST(COALESCE(SUM(CASE WHEN bucket = 'held' THEN amount ELSE 0 END), 0) AS BIGINT) AS he,
	CAST(COALESCE(SUM(CASE WHEN bucket = 'paid_out' THEN amount ELSE 0 END), 0) AS BIGINT) AS po,
	CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS total,
	CAST(COUNT(CASE WHEN bucket NOT IN ('external', 'available', 'held', 'paid_out') THEN 1 END) AS BIGINT) AS bad`

// auditAccounts compares each account's columns with its journal; only
// accounts that disagree come back from the database.
func auditAccounts(ctx context.Context, tx *sql.Tx, rep *outlast.LedgerReport) error {
	rows, err := tx.QueryContext(ctx, `SELECT a.id, a.funded, a.available, a.held, a.paid_out,
		COALESCE(j.ext, 0), COALESCE(j.av, 0), COALESCE(j.he, 0), COALESCE(j.po, 0), COALESCE(j.bad, 0)
		FROM accounts a LEFT JOIN (SELECT account_id, `+bucketSums+` FROM journal GROUP BY account_id) j
		ON j.account_id = a.id
		WHERE a.funded <> -COALESCE(j.ext, 0) OR a.available <> COALESCE(j.av, 0) OR a.held <> COALESCE(j.he, 0)
		OR a.paid_out <> COALESCE(j.po, 0) OR COALESCE(j.bad, 0) <> 0
		OR a.available + a.held + a.paid_out <> a.funded
		OR a.available < 0 OR a.held < 0 OR a.paid_out < 0 OR a.funded < 0
		ORDER BY a.id LIMIT $1`, problemsMax+1)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var a outlast.Account
		var ext, av, he, po, bad int64
		if err := rows.Scan(&a.ID, &a.Funded, &a.Available, &a.Held, &a.PaidOut, &ext, &av, &he, &po, &bad); err != nil {
			return err
		}
		if err := a.CheckInvariant(); err != nil {
			rep.Problems = append(rep.Problems, err.Error())
		}
		if a.Funded != -ext || a.Available != av || a.Held != he || a.PaidOut != po {
			rep.Problems = append(rep.Problems, fmt.Sprintf(
				"account %s: columns funded %d available %d held %d paid_out %d, journal says funded %d available %d held %d paid_out %d",
				a.ID, a.Funded, a.Available, a.Held, a.PaidOut, -ext, av, he, po))
		}
		if bad != 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("account %s: %d journal rows with an unknown bucket", a.ID, bad))
		}
	}
	return rows.Err()
}

// auditPayouts checks that each payout's journal sums to zero and matches
// its status: pending and dispatched hold the amount, succeeded paid it
// out, failed moved nothing in the end.
func auditPayouts(ctx context.Context, tx *sql.Tx, rep *outlast.LedgerReport) error {
	rows, err := tx.QueryContext(ctx, `SELECT p.id, p.status, p.amount, COALESCE(j.ext, 0), COALESCE(j.av, 0),
		COALESCE(j.he, 0), COALESCE(j.po, 0), COALESCE(j.total, 0)
		FROM payouts p LEFT JOIN (SELECT payout_id, `+bucketSums+` FROM journal
			WHERE payout_id IS NOT NULL GROUP BY payout_id) j ON j.payout_id = p.id
		WHERE COALESCE(j.total, 0) <> 0 OR COALESCE(j.ext, 0) <> 0 OR COALESCE(j.bad, 0) <> 0
		OR (p.status IN ('pending', 'dispatched') AND NOT (COALESCE(j.av, 0) = -p.amount AND COALESCE(j.he, 0) = p.amount AND COALESCE(j.po, 0) = 0))
		OR (p.status = 'succeeded' AND NOT (COALESCE(j.av, 0) = -p.amount AND COALESCE(j.he, 0) = 0 AND COALESCE(j.po, 0) = p.amount))
		OR (p.status = 'failed' AND NOT (COALESCE(j.av, 0) = 0 AND COALESCE(j.he, 0) = 0 AND COALESCE(j.po, 0) = 0))
		OR p.status NOT IN ('pending', 'dispatched', 'succeeded', 'failed')
		ORDER BY p.id LIMIT $1`, problemsMax+1)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, status string
		var amount, ext, av, he, po, total int64
		if err := rows.Scan(&id, &status, &amount, &ext, &av, &he, &po, &total); err != nil {
			return err
		}
		rep.Problems = append(rep.Problems, fmt.Sprintf(
			"payout %s: status %s amount %d but journal moves available %d held %d paid_out %d external %d (sum %d)",
			id, status, amount, av, he, po, ext, total))
	}
	return rows.Err()
}

// auditJournalAccounts finds payout journal rows booked to an account
// other than the payout's.
func auditJournalAccounts(ctx context.Context, tx *sql.Tx, rep *outlast.LedgerReport) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM journal j JOIN payouts p ON p.id = j.payout_id
		WHERE j.account_id <> p.account_id`).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d journal rows are booked to an account other than their payout's", n))
	}
	return nil
}

// auditOutbox checks that exactly the pending payouts wait in the outbox:
// a pending payout without an entry would never be sent.
func auditOutbox(ctx context.Context, tx *sql.Tx, rep *outlast.LedgerReport) error {
	rows, err := tx.QueryContext(ctx, `SELECT p.id, p.status, o.payout_id IS NOT NULL
		FROM payouts p LEFT JOIN outbox o ON o.payout_id = p.id
		WHERE (p.status = 'pending' AND o.payout_id IS NULL) OR (p.status <> 'pending' AND o.payout_id IS NOT NULL)
		ORDER BY p.id LIMIT $1`, problemsMax+1)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, status string
		var queued bool
		if err := rows.Scan(&id, &status, &queued); err != nil {
			return err
		}
		if queued {
			rep.Problems = append(rep.Problems, fmt.Sprintf("payout %s: %s but still in the outbox", id, status))
		} else {
			rep.Problems = append(rep.Problems, fmt.Sprintf("payout %s: pending but not in the outbox, it would never be sent", id))
		}
	}
	return rows.Err()
}

// auditConflicts lists partner reports that contradicted the ledger — a
// final state, which never changes, or a recorded partner ref, which is
// never overwritten — and filed no exception (recorded before exceptions
// existed), so a human must look. The others are their exceptions'.
func auditConflicts(ctx context.Context, tx *sql.Tx, rep *outlast.LedgerReport) error {
	rows, err := tx.QueryContext(ctx, `SELECT c.payout_id, c.channel, c.event_id, c.payout_status,
		c.reported_status, COALESCE(n.outcome_reason, '')
		FROM conflicts c LEFT JOIN notifications n ON n.channel = c.channel AND n.event_id = c.event_id
		WHERE c.exception_key = '' ORDER BY c.id LIMIT $1`, problemsMax+1)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var payout, channel, event, status, reported, reason string
		if err := rows.Scan(&payout, &channel, &event, &status, &reported, &reason); err != nil {
			return err
		}
		if reason == "" {
			reason = fmt.Sprintf("the payout is %s", status)
		}
		rep.Problems = append(rep.Problems, fmt.Sprintf(
			"payout %s: %s reported %s (event %s), which contradicts the ledger: %s", payout, channel, reported, event, reason))
	}
	return rows.Err()
}

// auditExceptions lists every open exception (the ledger is not settled
// while a human has yet to decide) and every exception whose journal rows
// do not sum to zero or do not hold what it says: its hold while open,
// nothing once resolved.
func auditExceptions(ctx context.Context, tx *sql.Tx, rep *outlast.LedgerReport) error {
	rows, err := tx.QueryContext(ctx, `SELECT e.id, e.kind, e.payout_id, e.summary, e.held, e.resolved_ns,
		COALESCE(j.he, 0), COALESCE(j.total, 0), COALESCE(j.bad, 0)
		FROM exceptions e LEFT JOIN (SELECT exception_key, `+bucketSums+` FROM journal
			WHERE exception_key IS NOT NULL GROUP BY exception_key) j ON j.exception_key = e.fact_key
		WHERE e.resolved_ns = 0 OR COALESCE(j.total, 0) <> 0 OR COALESCE(j.he, 0) <> 0 OR COALESCE(j.bad, 0) <> 0
		ORDER BY e.id LIMIT $1`, problemsMax+1)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, held, resolved, journalHeld, total, bad int64
		var kind, payout, summary string
		if err := rows.Scan(&id, &kind, &payout, &summary, &held, &resolved, &journalHeld, &total, &bad); err != nil {
			return err
		}
		want := int64(0)
		if resolved == 0 {
			want = held
			rep.Problems = append(rep.Problems, fmt.Sprintf("exception %d (%s, payout %s) is open: %s", id, kind, payout, summary))
		}
		if total != 0 || bad != 0 || journalHeld != want {
			rep.Problems = append(rep.Problems, fmt.Sprintf(
				"exception %d: its journal rows hold %d (it says %d) and sum to %d", id, journalHeld, want, total))
		}
	}
	return rows.Err()
}
