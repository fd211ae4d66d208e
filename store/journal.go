package store

import (
	"context"
	"database/sql"

	"github.com/outlast/outlast"
)

var _ outlast.JournalReader = (*DB)(nil)

// ReadJournal streams the journal, then the accounts, from one read
// snapshot; see outlast.JournalReader. The callbacks run while a query is
// open: they must not use the database.
func (db *DB) ReadJournal(ctx context.Context, entry func(*outlast.JournalEntry) error, account func(*outlast.Account) error) error {
	return db.read(ctx, "read_journal", func(tx *sql.Tx) error {
		if err := eachJournalEntry(ctx, tx, entry); err != nil {
			return err
		}
		return eachAccount(ctx, tx, account)
	})
}

func eachJournalEntry(ctx context.Context, tx *sql.Tx, fn func(*outlast.JournalEntry) error) error {
	rows, err := tx.QueryContext(ctx, `SELECT id, account_id, COALESCE(payout_id, ''), bucket, amount, created_ns,
		COALESCE(exception_key, '') FROM journal ORDER BY id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var e outlast.JournalEntry
		var bucket string
		var created int64
		if err := rows.Scan(&e.ID, &e.AccountID, &e.PayoutID, &bucket, &e.Amount, &created, &e.Exception); err != nil {
			return err
		}
		e.Bucket, e.CreatedAt = outlast.Bucket(bucket), fromNanos(created)
		if err := fn(&e); err != nil {
			return err
		}
	}
	return rows.Err()
}

func eachAccount(ctx context.Context, tx *sql.Tx, fn func(*outlast.Account) error) error {
	rows, err := tx.QueryContext(ctx, "SELECT "+accountColumns+" FROM accounts ORDER BY id")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return err
		}
		if err := fn(a); err != nil {
			return err
		}
	}
	return rows.Err()
}
