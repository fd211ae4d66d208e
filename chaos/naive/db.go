package naive

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outlast/outlast"
)

// schema is the whole ledger: balances on the account row, payouts, and
// the notifications seen, by (channel, event id).
const schema = `
CREATE TABLE IF NOT EXISTS naive_clients (
	id TEXT PRIMARY KEY,
	key_hash BYTEA NOT NULL UNIQUE,
	created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS naive_accounts (
	id TEXT PRIMARY KEY,
	client_id TEXT NOT NULL REFERENCES naive_clients(id),
	currency TEXT NOT NULL,
	funded BIGINT NOT NULL DEFAULT 0,
	available BIGINT NOT NULL DEFAULT 0,
	held BIGINT NOT NULL DEFAULT 0,
	paid_out BIGINT NOT NULL DEFAULT 0,
	payouts_disabled BOOLEAN NOT NULL DEFAULT FALSE,
	daily_limit BIGINT NOT NULL DEFAULT 0,
	version BIGINT NOT NULL DEFAULT 1,
	created_at TIMESTAMPTZ NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS naive_fundings (
	account_id TEXT NOT NULL,
	key TEXT NOT NULL,
	amount BIGINT NOT NULL,
	PRIMARY KEY (account_id, key)
);
CREATE TABLE IF NOT EXISTS naive_payouts (
	id TEXT PRIMARY KEY,
	client_id TEXT NOT NULL,
	idempotency_key TEXT NOT NULL,
	fingerprint TEXT NOT NULL,
	account_id TEXT NOT NULL REFERENCES naive_accounts(id),
	amount BIGINT NOT NULL,
	currency TEXT NOT NULL,
	destination TEXT NOT NULL,
	status TEXT NOT NULL,
	channel TEXT NOT NULL,
	partner_ref TEXT NOT NULL DEFAULT '',
	failure_reason TEXT NOT NULL DEFAULT '',
	version BIGINT NOT NULL DEFAULT 1,
	next_attempt_at TIMESTAMPTZ NOT NULL,
	created_at TIMESTAMPTZ NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL,
	UNIQUE (client_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS naive_payouts_pending ON naive_payouts (next_attempt_at) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS naive_notifications (
	channel TEXT NOT NULL,
	event_id TEXT NOT NULL,
	payout_id TEXT NOT NULL,
	status TEXT NOT NULL,
	received_at TIMESTAMPTZ NOT NULL,
	PRIMARY KEY (channel, event_id)
);`

// migrateLock serialises instances creating the tables at once: CREATE
// TABLE IF NOT EXISTS is not safe against itself.
const migrateLock = 7_000_000_001

func migrate(ctx context.Context, db *sql.DB) error {
	return inTx(ctx, db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
			return fmt.Errorf("lock schema: %w", err)
		}
		if _, err := tx.ExecContext(ctx, schema); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
		return nil
	})
}

// inTx runs fn in a transaction, committing when it returns nil.
func inTx(ctx context.Context, db *sql.DB, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		return errors.Join(err, tx.Rollback())
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// uniqueViolation reports a PostgreSQL unique_violation.
func uniqueViolation(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == "23505"
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func createClient(ctx context.Context, db *sql.DB, id string, keyHash []byte, now time.Time) error {
	_, err := db.ExecContext(ctx, `INSERT INTO naive_clients (id, key_hash, created_at) VALUES ($1, $2, $3)`, id, keyHash, now)
	if uniqueViolation(err) {
		return outlast.Errorf(outlast.ECONFLICT, "client %q already exists", id)
	}
	return err
}

func clientByKeyHash(ctx context.Context, db *sql.DB, keyHash []byte) (string, error) {
	var id string
	err := db.QueryRowContext(ctx, `SELECT id FROM naive_clients WHERE key_hash = $1`, keyHash).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", outlast.Errorf(outlast.EUNAUTHORIZED, "invalid API key")
	}
	return id, err
}

func createAccount(ctx context.Context, db *sql.DB, a *outlast.Account) error {
	_, err := db.ExecContext(ctx, `INSERT INTO naive_accounts (id, client_id, currency, payouts_disabled, daily_limit, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $6)`, a.ID, a.ClientID, a.Currency, a.Flags.PayoutsDisabled, a.Flags.DailyLimit, a.CreatedAt)
	var pg *pgconn.PgError
	switch {
	case uniqueViolation(err):
		return outlast.Errorf(outlast.ECONFLICT, "account %q already exists", a.ID)
	case errors.As(err, &pg) && pg.Code == "23503":
		return outlast.Errorf(outlast.EVALIDATION, "client %q does not exist", a.ClientID)
	}
	return err
}

const accountColumns = `id, client_id, currency, funded, available, held, paid_out, payouts_disabled, daily_limit, version, created_at, updated_at`

func scanAccount(row *sql.Row) (*outlast.Account, error) {
	var a outlast.Account
	return &a, noRow("account", row.Scan(&a.ID, &a.ClientID, &a.Currency, &a.Funded, &a.Available, &a.Held, &a.PaidOut,
		&a.Flags.PayoutsDisabled, &a.Flags.DailyLimit, &a.Version, &a.CreatedAt, &a.UpdatedAt))
}

// noRow turns "no rows" into ENOTFOUND for what.
func noRow(what string, err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return outlast.Errorf(outlast.ENOTFOUND, "%s not found", what)
	}
	return err
}

func account(ctx context.Context, q querier, id string, lock bool) (*outlast.Account, error) {
	query := `SELECT ` + accountColumns + ` FROM naive_accounts WHERE id = $1`
	if lock {
		query += ` FOR UPDATE`
	}
	return scanAccount(q.QueryRowContext(ctx, query, id))
}

// saveBalances writes a's buckets after checking the invariant: a
// violation is a bug in this package, never bad input.
func saveBalances(ctx context.Context, tx *sql.Tx, a *outlast.Account, now time.Time) error {
	if err := a.CheckInvariant(); err != nil {
		panic(err)
	}
	a.Version++
	a.UpdatedAt = now
	_, err := tx.ExecContext(ctx, `UPDATE naive_accounts SET funded = $2, available = $3, held = $4, paid_out = $5, version = $6, updated_at = $7 WHERE id = $1`,
		a.ID, a.Funded, a.Available, a.Held, a.PaidOut, a.Version, now)
	return err
}

// fundAccount credits amount once per (account, key): a repeat answers the
// account as it is now and funded false.
func fundAccount(ctx context.Context, db *sql.DB, id string, amount int64, key string, now time.Time) (a *outlast.Account, funded bool, err error) {
	err = inTx(ctx, db, func(tx *sql.Tx) error {
		if a, err = account(ctx, tx, id, true); err != nil {
			return err
		}
		var first int64
		err := tx.QueryRowContext(ctx, `SELECT amount FROM naive_fundings WHERE account_id = $1 AND key = $2`, id, key).Scan(&first)
		switch {
		case err == nil && first != amount:
			return outlast.FundingKeyReused(key, id, first, amount)
		case err == nil:
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO naive_fundings (account_id, key, amount) VALUES ($1, $2, $3)`, id, key, amount); err != nil {
			return err
		}
		a.Funded += amount
		a.Available += amount
		funded = true
		return saveBalances(ctx, tx, a, now)
	})
	return a, funded, err
}

const payoutColumns = `id, client_id, idempotency_key, account_id, amount, currency, destination, status, channel, partner_ref, failure_reason, version, created_at, updated_at`

func scanPayout(row *sql.Row) (*outlast.Payout, error) {
	var p outlast.Payout
	return &p, noRow("payout", row.Scan(&p.ID, &p.ClientID, &p.IdempotencyKey, &p.AccountID, &p.Amount, &p.Currency, &p.Destination,
		&p.Status, &p.Channel, &p.PartnerRef, &p.FailureReason, &p.Version, &p.CreatedAt, &p.UpdatedAt))
}

func payout(ctx context.Context, q querier, id string, lock bool) (*outlast.Payout, error) {
	query := `SELECT ` + payoutColumns + ` FROM naive_payouts WHERE id = $1`
	if lock {
		query += ` FOR UPDATE`
	}
	return scanPayout(q.QueryRowContext(ctx, query, id))
}

// createPayout holds the amount and records the payout pending in one
// transaction; the same (client, key) again answers the first payout, or
// EIDEMPOTENCY if the request differs.
func createPayout(ctx context.Context, db *sql.DB, req *outlast.PayoutRequest, now time.Time) (p *outlast.Payout, created bool, err error) {
	err = inTx(ctx, db, func(tx *sql.Tx) error {
		p, err = replayPayout(ctx, tx, req)
		if p != nil || err != nil {
			return err
		}
		a, err := account(ctx, tx, req.AccountID, true)
		if err == nil && a.ClientID != req.ClientID {
			err = outlast.Errorf(outlast.ENOTFOUND, "account %q not found", req.AccountID)
		}
		if err != nil {
			return err
		}
		if err := checkPayout(ctx, tx, a, req, now); err != nil {
			return err
		}
		a.Available -= req.Amount
		a.Held += req.Amount
		if err := saveBalances(ctx, tx, a, now); err != nil {
			return err
		}
		p = &outlast.Payout{ID: outlast.NewID(), ClientID: req.ClientID, IdempotencyKey: req.IdempotencyKey,
			AccountID: req.AccountID, Amount: req.Amount, Currency: req.Currency, Destination: req.Destination,
			Status: outlast.StatusPending, Channel: req.Channel, Version: 1, CreatedAt: now, UpdatedAt: now}
		created = true
		_, err = tx.ExecContext(ctx, `INSERT INTO naive_payouts (id, client_id, idempotency_key, fingerprint, account_id, amount, currency, destination, status, channel, next_attempt_at, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $11)`,
			p.ID, p.ClientID, p.IdempotencyKey, req.Fingerprint(), p.AccountID, p.Amount, p.Currency, p.Destination, p.Status, p.Channel, now)
		return err
	})
	if uniqueViolation(err) {
		// A concurrent request with the same key won; answer what it made.
		return retryReplay(ctx, db, req)
	}
	return p, created, err
}

func retryReplay(ctx context.Context, db *sql.DB, req *outlast.PayoutRequest) (*outlast.Payout, bool, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, false, err
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	p, err := replayPayout(ctx, tx, req)
	return p, false, err
}

// replayPayout returns the payout an earlier request with req's key made,
// nil if there is none.
func replayPayout(ctx context.Context, tx *sql.Tx, req *outlast.PayoutRequest) (*outlast.Payout, error) {
	var id, fingerprint string
	err := tx.QueryRowContext(ctx, `SELECT id, fingerprint FROM naive_payouts WHERE client_id = $1 AND idempotency_key = $2`,
		req.ClientID, req.IdempotencyKey).Scan(&id, &fingerprint)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, err
	case fingerprint != req.Fingerprint():
		return nil, outlast.Errorf(outlast.EIDEMPOTENCY, "Idempotency-Key %q was used for a different payout", req.IdempotencyKey)
	}
	return payout(ctx, tx, id, false)
}

// checkPayout asks the domain's checks, and the daily limit over today's
// payouts that did not fail.
func checkPayout(ctx context.Context, tx *sql.Tx, a *outlast.Account, req *outlast.PayoutRequest, now time.Time) error {
	if err := a.CheckPayout(req); err != nil {
		return err
	}
	if a.Flags.DailyLimit <= 0 {
		return nil
	}
	day := now.UTC().Truncate(24 * time.Hour)
	var today int64
	err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(amount), 0) FROM naive_payouts WHERE account_id = $1 AND created_at >= $2 AND status <> 'failed'`,
		a.ID, day).Scan(&today)
	if err != nil {
		return err
	}
	return a.CheckDailyLimit(today, req.Amount)
}
