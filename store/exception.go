package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/outlast/outlast"
)

const exceptionColumns = `id, fact_key, kind, payout_id, account_id, channel, currency, claim, held, summary,
	evidence, filed_by, opened_ns, resolution`

// FileException files e unless its key is filed; see
// outlast.ExceptionService.
func (db *DB) FileException(ctx context.Context, e *outlast.Exception) (*outlast.Exception, bool, error) {
	if err := e.Validate(); err != nil {
		return nil, false, err
	}
	var got *outlast.Exception
	var filed bool
	err := db.write(ctx, "file_exception", func(tx *sql.Tx) error {
		if e.AccountID != "" {
			// Lock the account before the exception row, as Apply does.
			if _, err := loadAccount(ctx, tx, e.AccountID, db.d.forUpdate); err != nil {
				if outlast.ErrorCode(err) == outlast.ENOTFOUND {
					return outlast.Errorf(outlast.EVALIDATION, "unknown account %q", e.AccountID)
				}
				return err
			}
		}
		var err error
		got, filed, err = fileException(ctx, tx, e, db.now().UnixNano())
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return got, filed, nil
}

// fileException files e in tx, whose caller holds e's account's lock,
// unless an exception with its key exists (then it returns that one and
// false), holding what it can of a claim from available.
func fileException(ctx context.Context, tx *sql.Tx, e *outlast.Exception, nowNanos int64) (*outlast.Exception, bool, error) {
	evidence, err := json.Marshal(e.Evidence)
	if err != nil {
		return nil, false, err
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO exceptions (fact_key, kind, payout_id, account_id, channel,
		currency, claim, held, summary, evidence, filed_by, opened_ns)
		VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11) ON CONFLICT (fact_key) DO NOTHING`,
		e.Key, string(e.Kind), e.PayoutID, e.AccountID, e.Channel, e.Currency, e.Claim,
		outlast.CleanText(e.Summary, 4096), string(evidence), e.FiledBy, nowNanos)
	if err != nil {
		return nil, false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		if err != nil {
			return nil, false, err
		}
		old, err := exceptionWhere(ctx, tx, "fact_key = $1", e.Key)
		return old, false, err
	}
	if e.Claim > 0 && e.AccountID != "" {
		if err := holdClaim(ctx, tx, e, nowNanos); err != nil {
			return nil, false, err
		}
	}
	got, err := exceptionWhere(ctx, tx, "fact_key = $1", e.Key)
	return got, true, err
}

// holdClaim holds what it can of e's claim from its account's available
// balance, journaled under e's key.
func holdClaim(ctx context.Context, tx *sql.Tx, e *outlast.Exception, nowNanos int64) error {
	a, err := loadAccount(ctx, tx, e.AccountID, "")
	if err != nil {
		return err
	}
	hold := outlast.ExceptionHold(e.Claim, a.Available)
	if hold == 0 {
		return nil
	}
	if err := holdAvailable(ctx, tx, a.ID, hold, nowNanos, "", e.Key); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, "UPDATE exceptions SET held = $1 WHERE fact_key = $2", hold, e.Key)
	return err
}

// shortException returns an open exception on account whose claim
// filing could not hold in full, or nil.
func shortException(ctx context.Context, q querier, account string) (*outlast.Exception, error) {
	e, err := exceptionWhere(ctx, q, "account_id = $1 AND resolved_ns = 0 AND claim > held ORDER BY id LIMIT 1", account)
	if outlast.ErrorCode(err) == outlast.ENOTFOUND {
		return nil, nil
	}
	return e, err
}

// Exceptions lists exceptions matching f, newest first.
func (db *DB) Exceptions(ctx context.Context, f outlast.ExceptionFilter) ([]*outlast.Exception, error) {
	limit := f.Limit
	if limit <= 0 || limit > outlast.ExceptionsMax {
		limit = outlast.ExceptionsMax
	}
	var where []string
	var args []any
	arg := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Open {
		where = append(where, "resolved_ns = 0")
	}
	if f.Resolved {
		where = append(where, "resolved_ns <> 0")
	}
	if f.Kind != "" {
		arg("kind = $%d", string(f.Kind))
	}
	if f.PayoutID != "" {
		arg("payout_id = $%d", f.PayoutID)
	}
	if f.AccountID != "" {
		arg("account_id = $%d", f.AccountID)
	}
	if f.Before > 0 {
		arg("id < $%d", f.Before)
	}
	q := "SELECT " + exceptionColumns + " FROM exceptions"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, limit)
	q += fmt.Sprintf(" ORDER BY id DESC LIMIT $%d", len(args))
	var out []*outlast.Exception
	err := db.read(ctx, "exceptions", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		out = out[:0]
		for rows.Next() {
			e, err := scanException(rows)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return rows.Err()
	})
	return out, err
}

// Exception returns exception id; ENOTFOUND.
func (db *DB) Exception(ctx context.Context, id int64) (*outlast.Exception, error) {
	var e *outlast.Exception
	err := db.read(ctx, "exception", func(tx *sql.Tx) error {
		var err error
		e, err = exceptionByID(ctx, tx, id, "")
		return err
	})
	return e, err
}

// exceptionByID loads exception id, locked as lock says; ENOTFOUND.
func exceptionByID(ctx context.Context, q querier, id int64, lock string) (*outlast.Exception, error) {
	e, err := exceptionWhere(ctx, q, "id = $1"+lock, id)
	if outlast.ErrorCode(err) == outlast.ENOTFOUND {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "exception %d not found", id)
	}
	return e, err
}

// ResolveException resolves exception id as r says, in one transaction:
// the exception and its account locked, the plan (outlast.PlanResolution)
// applied to the account's columns and written as journal rows under the
// exception's key, the resolution recorded.
func (db *DB) ResolveException(ctx context.Context, id int64, r *outlast.Resolution) (*outlast.Exception, *outlast.Account, error) {
	if err := r.Validate(); err != nil {
		return nil, nil, err
	}
	var e *outlast.Exception
	var a *outlast.Account
	err := db.write(ctx, "resolve_exception", func(tx *sql.Tx) error {
		// Apply's lock order: the payout settled (if any), the account,
		// then the exception.
		peek, err := exceptionByID(ctx, tx, id, "")
		if err != nil {
			return err
		}
		var p *outlast.Payout
		if r.Payout != "" {
			if p, err = loadPayout(ctx, tx, peek.PayoutID, db.d.forUpdate); outlast.ErrorCode(err) == outlast.ENOTFOUND {
				return outlast.Errorf(outlast.EVALIDATION, "payout %s is not in the ledger: there is nothing to settle", peek.PayoutID)
			} else if err != nil {
				return err
			}
		}
		if peek.AccountID != "" {
			if a, err = loadAccount(ctx, tx, peek.AccountID, db.d.forUpdate); err != nil {
				return err
			}
		}
		if e, err = exceptionByID(ctx, tx, id, db.d.forUpdate); err != nil {
			return err
		}
		res := *r
		if err := outlast.PlanResolution(e, a, &res); err != nil {
			return err
		}
		now := db.now()
		res.At = now
		var settle *outlast.Notification
		if p != nil {
			if settle, err = outlast.SettlePayout(e, p, &res, now); err != nil {
				return err
			}
		}
		if a != nil && len(res.Moves) > 0 {
			if err := db.moveForException(ctx, tx, a, e.Key, res.Moves, now.UnixNano()); err != nil {
				return err
			}
		}
		if settle != nil {
			if a, err = db.settlePayout(ctx, tx, settle); err != nil {
				return err
			}
		}
		doc, err := json.Marshal(&res)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE exceptions SET resolved_ns = $1, resolution = $2 WHERE id = $3 AND resolved_ns = 0",
			now.UnixNano(), string(doc), id); err != nil {
			return err
		}
		e.Resolution = &res
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return e, a, nil
}

// settlePayout applies n, a resolution's settling of its payout, through
// the applier every notification takes, and returns the account after.
func (db *DB) settlePayout(ctx context.Context, tx *sql.Tx, n *outlast.Notification) (*outlast.Account, error) {
	ap := db.newApplier(tx)
	ap.source = outlast.FromOperator
	results, err := ap.applyAll(ctx, []*outlast.Notification{n})
	if err != nil {
		return nil, err
	}
	if results[0].Outcome != outlast.OutcomeApplied {
		return nil, outlast.Errorf(outlast.ECONFLICT, "payout %s could not be settled: %s %s", n.PayoutID, results[0].Outcome, results[0].Reason)
	}
	return loadAccount(ctx, tx, results[0].Payout.AccountID, "")
}

// moveForException applies moves to a, locked, and journals them under
// the exception's key.
func (db *DB) moveForException(ctx context.Context, tx *sql.Tx, a *outlast.Account, key string, moves []outlast.Move, nowNanos int64) error {
	outlast.ApplyMoves(a, moves)
	a.Version++
	a.UpdatedAt = fromNanos(nowNanos)
	mustHold(a)
	if _, err := tx.ExecContext(ctx, `UPDATE accounts SET funded = $1, available = $2, held = $3, paid_out = $4,
		version = $5, updated_ns = $6 WHERE id = $7`,
		a.Funded, a.Available, a.Held, a.PaidOut, a.Version, nowNanos, a.ID); err != nil {
		return err
	}
	rows := make([]journalRow, len(moves))
	for i, mv := range moves {
		rows[i] = journalRow{a.ID, mv.Bucket, mv.Amount}
	}
	return insertJournalFor(ctx, tx, nowNanos, "", key, rows)
}

// OpenExceptions counts the open exceptions by kind.
func (db *DB) OpenExceptions(ctx context.Context) (map[outlast.ExceptionKind]int, error) {
	open := map[outlast.ExceptionKind]int{}
	err := db.read(ctx, "open_exceptions", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT kind, COUNT(*) FROM exceptions WHERE resolved_ns = 0 GROUP BY kind")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var kind string
			var n int
			if err := rows.Scan(&kind, &n); err != nil {
				return err
			}
			open[outlast.ExceptionKind(kind)] = n
		}
		return rows.Err()
	})
	return open, err
}

// exceptionWhere loads the exception cond selects; ENOTFOUND.
func exceptionWhere(ctx context.Context, q querier, cond string, args ...any) (*outlast.Exception, error) {
	e, err := scanException(q.QueryRowContext(ctx, "SELECT "+exceptionColumns+" FROM exceptions WHERE "+cond, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "no such exception")
	}
	return e, err
}

func scanException(row interface{ Scan(...any) error }) (*outlast.Exception, error) {
	var e outlast.Exception
	var kind, evidence, resolution string
	var opened int64
	if err := row.Scan(&e.ID, &e.Key, &kind, &e.PayoutID, &e.AccountID, &e.Channel, &e.Currency, &e.Claim,
		&e.Held, &e.Summary, &evidence, &e.FiledBy, &opened, &resolution); err != nil {
		return nil, err
	}
	e.Kind, e.OpenedAt = outlast.ExceptionKind(kind), fromNanos(opened)
	if err := json.Unmarshal([]byte(evidence), &e.Evidence); err != nil {
		return nil, fmt.Errorf("exception %d: evidence: %w", e.ID, err)
	}
	if resolution != "" {
		e.Resolution = &outlast.Resolution{}
		if err := json.Unmarshal([]byte(resolution), e.Resolution); err != nil {
			return nil, fmt.Errorf("exception %d: resolution: %w", e.ID, err)
		}
	}
	return &e, nil
}
