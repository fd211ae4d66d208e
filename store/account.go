package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"math"

	"github.com/outlast/outlast"
)

// CreateClient stores a new client with the SHA-256 hash of its API key.
// ECONFLICT if the id (or the key) exists.
func (db *DB) CreateClient(ctx context.Context, c *outlast.Client, keyHash []byte) error {
	if !outlast.ValidID(c.ID) {
		return outlast.Errorf(outlast.EVALIDATION, "id must be 1-%d characters of [A-Za-z0-9._:-]", outlast.IDBytesMax)
	}
	if len(keyHash) == 0 {
		return outlast.Errorf(outlast.EVALIDATION, "key hash is required")
	}
	now := db.now()
	err := db.write(ctx, "create_client", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO clients (id, key_hash, created_ns) VALUES ($1, $2, $3)",
			c.ID, hex.EncodeToString(keyHash), now.UnixNano())
		if isUniqueViolation(err) {
			return outlast.Errorf(outlast.ECONFLICT, "client %q already exists", c.ID)
		}
		return err
	})
	if err == nil {
		c.CreatedAt = now
	}
	return err
}

// ClientByKeyHash finds the client owning an API key hash; ENOTFOUND.
func (db *DB) ClientByKeyHash(ctx context.Context, keyHash []byte) (*outlast.Client, error) {
	var c outlast.Client
	var created int64
	err := db.r.QueryRowContext(ctx, "SELECT id, created_ns FROM clients WHERE key_hash = $1",
		hex.EncodeToString(keyHash)).Scan(&c.ID, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "no client for this key")
	}
	if err != nil {
		return nil, fail("client_by_key", err)
	}
	c.CreatedAt = fromNanos(created)
	return &c, nil
}

// CreateAccount creates a zero-balance account with a's id, client,
// currency and flags, and fills in a's other fields. ECONFLICT if the id
// exists, EVALIDATION if the client does not.
func (db *DB) CreateAccount(ctx context.Context, a *outlast.Account) error {
	if err := a.Validate(); err != nil {
		return err
	}
	now := db.now()
	err := db.write(ctx, "create_account", func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM clients WHERE id = $1", a.ClientID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return outlast.Errorf(outlast.EVALIDATION, "unknown client %q", a.ClientID)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO accounts (id, client_id, currency, payouts_disabled, daily_limit, version, created_ns, updated_ns)
			VALUES ($1, $2, $3, $4, $5, 1, $6, $6)`,
			a.ID, a.ClientID, a.Currency, boolInt(a.Flags.PayoutsDisabled), a.Flags.DailyLimit, now.UnixNano())
		if isUniqueViolation(err) {
			return outlast.Errorf(outlast.ECONFLICT, "account %q already exists", a.ID)
		}
		return err
	})
	if err != nil {
		return err
	}
	a.Funded, a.Available, a.Held, a.PaidOut = 0, 0, 0, 0
	a.Version, a.CreatedAt, a.UpdatedAt = 1, now, now
	return nil
}

// FundAccount adds amount to funded and available, with journal rows,
// once per (account, idempotencyKey); see outlast.AccountService.
func (db *DB) FundAccount(ctx context.Context, id string, amount int64, idempotencyKey string) (*outlast.Account, bool, error) {
	if err := outlast.ValidateAmount(amount); err != nil {
		return nil, false, err
	}
	if err := outlast.ValidateIdempotencyKey(idempotencyKey); err != nil {
		return nil, false, err
	}
	var (
		a      *outlast.Account
		funded bool
	)
	err := db.write(ctx, "fund_account", func(tx *sql.Tx) error {
		// A concurrent funding of the account waits on this lock until
		// the first commits; under the same key it then inserts nothing.
		locked, err := loadAccount(ctx, tx, id, db.d.forUpdate)
		if err != nil {
			return err
		}
		now := db.now().UnixNano()
		res, err := tx.ExecContext(ctx, `INSERT INTO fundings (account_id, idempotency_key, amount, created_ns)
			VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, id, idempotencyKey, amount, now)
		if err != nil {
			return err
		}
		if oneRow(res) != nil {
			var first int64
			if err := tx.QueryRowContext(ctx, "SELECT amount FROM fundings WHERE account_id = $1 AND idempotency_key = $2",
				id, idempotencyKey).Scan(&first); err != nil {
				return err
			}
			if first != amount {
				return outlast.FundingKeyReused(idempotencyKey, id, first, amount)
			}
			a = locked // unchanged under the lock: nothing is credited
			return nil
		}
		// The funded bound keeps the sum far from int64 overflow.
		res, err = tx.ExecContext(ctx, `UPDATE accounts SET funded = funded + $1, available = available + $1,
			version = version + 1, updated_ns = $2 WHERE id = $3 AND funded <= $4`,
			amount, now, id, math.MaxInt64/2-amount)
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			return outlast.Errorf(outlast.EVALIDATION, "account %q cannot take more funds", id)
		}
		if err := insertJournal(ctx, tx, now, "",
			journalRow{id, outlast.BucketExternal, -amount},
			journalRow{id, outlast.BucketAvailable, amount}); err != nil {
			return err
		}
		a, err = loadAccount(ctx, tx, id, "")
		if err != nil {
			return err
		}
		mustHold(a)
		funded = true
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return a, funded, nil
}

// Account returns an account; ENOTFOUND.
func (db *DB) Account(ctx context.Context, id string) (*outlast.Account, outlast.Freshness, error) {
	a, err := loadAccount(ctx, db.r, id, "")
	if err != nil {
		return nil, outlast.Freshness{}, fail("account", err)
	}
	return a, fromDatabase, nil
}

// fromDatabase is the freshness of every read the store answers: now, from
// the source of truth.
var fromDatabase = outlast.Freshness{Source: outlast.SourceDatabase}

// SetAccountFlags replaces an account's flags; ENOTFOUND.
func (db *DB) SetAccountFlags(ctx context.Context, id string, flags outlast.AccountFlags) (*outlast.Account, error) {
	if flags.DailyLimit < 0 {
		return nil, outlast.Errorf(outlast.EVALIDATION, "flags.daily_limit must not be negative")
	}
	var a *outlast.Account
	err := db.write(ctx, "set_account_flags", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE accounts SET payouts_disabled = $1, daily_limit = $2,
			version = version + 1, updated_ns = $3 WHERE id = $4`,
			boolInt(flags.PayoutsDisabled), flags.DailyLimit, db.now().UnixNano(), id)
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			return outlast.Errorf(outlast.ENOTFOUND, "account %q not found", id)
		}
		a, err = loadAccount(ctx, tx, id, "")
		return err
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// querier is what *sql.DB and *sql.Tx share.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

const accountColumns = `id, client_id, currency, funded, available, held, paid_out,
	payouts_disabled, daily_limit, version, created_ns, updated_ns`

// loadAccount reads an account; lock is the dialect's forUpdate or "".
// ENOTFOUND if there is none.
func loadAccount(ctx context.Context, q querier, id, lock string) (*outlast.Account, error) {
	a, err := scanAccount(q.QueryRowContext(ctx, "SELECT "+accountColumns+" FROM accounts WHERE id = $1"+lock, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "account %q not found", id)
	}
	return a, err
}

// scanAccount reads one row of accountColumns.
func scanAccount(row interface{ Scan(...any) error }) (*outlast.Account, error) {
	var a outlast.Account
	var disabled int
	var created, updated int64
	err := row.Scan(&a.ID, &a.ClientID, &a.Currency, &a.Funded, &a.Available, &a.Held, &a.PaidOut,
		&disabled, &a.Flags.DailyLimit, &a.Version, &created, &updated)
	if err != nil {
		return nil, err
	}
	a.Flags.PayoutsDisabled = disabled != 0
	a.CreatedAt, a.UpdatedAt = fromNanos(created), fromNanos(updated)
	return &a, nil
}

// mustHold panics if a violates the balance invariant: that is a bug in
// the ledger, and panicking inside the transaction keeps it uncommitted.
func mustHold(a *outlast.Account) {
	if err := a.CheckInvariant(); err != nil {
		panic("store: ledger invariant violated: " + err.Error())
	}
}

// journalRow is one side of a balanced money movement.
type journalRow struct {
	account string
	bucket  outlast.Bucket
	amount  int64
}

// insertJournal writes rows that must sum to zero; payoutID "" is funding.
func insertJournal(ctx context.Context, tx *sql.Tx, nowNanos int64, payoutID string, rows ...journalRow) error {
	return insertJournalFor(ctx, tx, nowNanos, payoutID, "", rows)
}

// insertJournalFor writes rows that must sum to zero, naming the payout
// or the exception (by key) they are for; "" names none.
func insertJournalFor(ctx context.Context, tx *sql.Tx, nowNanos int64, payoutID, exceptionKey string, rows []journalRow) error {
	var sum int64
	values := make([][]any, len(rows))
	for i, r := range rows {
		sum += r.amount
		values[i] = []any{r.account, nullable(payoutID), string(r.bucket), r.amount, nowNanos, nullable(exceptionKey)}
	}
	if sum != 0 {
		panic("store: unbalanced journal rows")
	}
	_, err := insertRows(ctx, tx, "INSERT INTO journal (account_id, payout_id, bucket, amount, created_ns, exception_key) VALUES ", "", values)
	return err
}

// nullable is s, or NULL for "".
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// errNoRow says an UPDATE or DELETE matched nothing.
var errNoRow = errors.New("no row matched")

func oneRow(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != 1 {
		return errNoRow
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
