package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/outlast/outlast"
)

// errDuplicateKey says a concurrent request with the same idempotency key
// committed first; the caller re-reads in a fresh transaction.
var errDuplicateKey = errors.New("duplicate idempotency key")

// CreatePayout, in one transaction, stores the payout (pending), moves the
// amount from available to held with journal rows and queues the payout in
// the outbox. See outlast.PayoutService.
func (db *DB) CreatePayout(ctx context.Context, req *outlast.PayoutRequest) (*outlast.Payout, bool, error) {
	if err := req.Validate(); err != nil {
		return nil, false, err
	}
	if outlast.CleanText(req.Destination, outlast.DestinationBytesMax) != req.Destination {
		return nil, false, outlast.Errorf(outlast.EVALIDATION, "destination must be UTF-8 text without NUL bytes")
	}
	fp := req.Fingerprint()
	var p *outlast.Payout
	var created bool
	err := db.write(ctx, "create_payout", func(tx *sql.Tx) error {
		var err error
		p, created, err = db.createPayout(ctx, tx, req, fp)
		return err
	})
	if errors.Is(err, errDuplicateKey) {
		// The unique constraint decided the race; on PostgreSQL the failed
		// statement aborted our transaction, so read the winner outside it.
		p, err = db.payoutByKey(ctx, db.w, req.ClientID, req.IdempotencyKey, fp)
		if err != nil {
			return nil, false, fail("create_payout", err)
		}
		return p, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if created {
		payoutsCreatedTotal.Inc()
	}
	return p, created, nil
}

func (db *DB) createPayout(ctx context.Context, tx *sql.Tx, req *outlast.PayoutRequest, fp string) (*outlast.Payout, bool, error) {
	p, err := db.payoutByKey(ctx, tx, req.ClientID, req.IdempotencyKey, fp)
	if err == nil {
		return p, false, nil
	}
	if outlast.ErrorCode(err) != outlast.ENOTFOUND {
		return nil, false, err
	}
	// The row lock serialises payouts of one account on PostgreSQL, so the
	// daily-limit sum and the balance check below see every earlier one.
	a, err := loadAccount(ctx, tx, req.AccountID, db.d.forUpdate)
	if outlast.ErrorCode(err) == outlast.ENOTFOUND || (err == nil && a.ClientID != req.ClientID) {
		// The same answer for another client's account: ids are not secrets
		// but their existence is not ours to reveal.
		return nil, false, outlast.Errorf(outlast.EVALIDATION, "unknown account %q", req.AccountID)
	}
	if err != nil {
		return nil, false, err
	}
	now := db.now()
	if err := db.checkPayoutAllowed(ctx, tx, a, req, now.UnixNano()); err != nil {
		return nil, false, err
	}
	p = &outlast.Payout{
		ID: db.NewID(), ClientID: req.ClientID, AccountID: req.AccountID, Amount: req.Amount,
		Currency: req.Currency, Destination: req.Destination, Status: outlast.StatusPending,
		Channel: req.Channel, IdempotencyKey: req.IdempotencyKey, Version: 1, CreatedAt: now, UpdatedAt: now,
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO payouts (id, client_id, account_id, amount, currency, destination,
		status, channel, idempotency_key, fingerprint, version, created_ns, updated_ns)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $11)`,
		p.ID, p.ClientID, p.AccountID, p.Amount, p.Currency, p.Destination, string(p.Status),
		p.Channel, p.IdempotencyKey, fp, now.UnixNano())
	if isUniqueViolation(err) {
		return nil, false, errDuplicateKey
	}
	if err != nil {
		return nil, false, err
	}
	if err := db.holdFunds(ctx, tx, p, now.UnixNano()); err != nil {
		return nil, false, err
	}
	return p, true, nil
}

// checkPayoutAllowed applies the account's state and flags to a request.
func (db *DB) checkPayoutAllowed(ctx context.Context, tx *sql.Tx, a *outlast.Account, req *outlast.PayoutRequest, nowNanos int64) error {
	if e, err := shortException(ctx, tx, a.ID); err != nil || e != nil {
		if err != nil {
			return err
		}
		return outlast.PayoutsHeldByException(e)
	}
	if err := a.CheckPayout(req); err != nil || a.Flags.DailyLimit <= 0 {
		return err
	}
	dayStart := fromNanos(nowNanos).Truncate(24 * time.Hour).UnixNano() // UTC midnight
	var today int64
	err := tx.QueryRowContext(ctx, `SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM payouts
		WHERE account_id = $1 AND created_ns >= $2 AND status <> $3`,
		a.ID, dayStart, string(outlast.StatusFailed)).Scan(&today)
	if err != nil {
		return err
	}
	return a.CheckDailyLimit(today, req.Amount)
}

// holdFunds moves the payout's amount from available to held, journaled
// for it, and queues the payout for dispatch.
func (db *DB) holdFunds(ctx context.Context, tx *sql.Tx, p *outlast.Payout, nowNanos int64) error {
	if err := holdAvailable(ctx, tx, p.AccountID, p.Amount, nowNanos, p.ID, ""); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO outbox (payout_id, attempts, next_attempt_ns, created_ns)
		VALUES ($1, 0, $2, $2)`, p.ID, nowNanos)
	return err
}

// holdAvailable moves amount of an account's available balance to held,
// journaled for the payout or the exception (by key) named, and re-checks
// the account: the one way money is held, for a payout and for an
// exception's claim. EINSUFFICIENT if less is available.
func holdAvailable(ctx context.Context, tx *sql.Tx, accountID string, amount, nowNanos int64, payoutID, exceptionKey string) error {
	// The condition makes the balance check atomic with the update even
	// without the row lock: a concurrent drain can never go negative.
	res, err := tx.ExecContext(ctx, `UPDATE accounts SET available = available - $1, held = held + $1,
		version = version + 1, updated_ns = $2 WHERE id = $3 AND available >= $1`, amount, nowNanos, accountID)
	if err != nil {
		return err
	}
	if err := oneRow(res); err != nil {
		return outlast.Errorf(outlast.EINSUFFICIENT, "available balance is too low")
	}
	if err := insertJournalFor(ctx, tx, nowNanos, payoutID, exceptionKey, []journalRow{
		{accountID, outlast.BucketAvailable, -amount}, {accountID, outlast.BucketHeld, amount}}); err != nil {
		return err
	}
	a, err := loadAccount(ctx, tx, accountID, "")
	if err != nil {
		return err
	}
	mustHold(a)
	return nil
}

// payoutByKey returns the payout with this idempotency key: ENOTFOUND if
// none, EIDEMPOTENCY if it was created from a different request.
func (db *DB) payoutByKey(ctx context.Context, q querier, clientID, key, fp string) (*outlast.Payout, error) {
	var stored string
	row := q.QueryRowContext(ctx, "SELECT fingerprint, "+payoutColumns+
		" FROM payouts WHERE client_id = $1 AND idempotency_key = $2", clientID, key)
	p, err := scanPayout(row, &stored)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "no payout with this idempotency key")
	}
	if err != nil {
		return nil, err
	}
	if stored != fp {
		return nil, outlast.Errorf(outlast.EIDEMPOTENCY, "Idempotency-Key was already used with a different request")
	}
	return p, nil
}

// Payout returns a payout by id; ENOTFOUND.
func (db *DB) Payout(ctx context.Context, id string) (*outlast.Payout, outlast.Freshness, error) {
	p, err := loadPayout(ctx, db.r, id, "")
	if err != nil {
		return nil, outlast.Freshness{}, fail("payout", err)
	}
	return p, fromDatabase, nil
}

// Payouts returns a page of the client's payouts, newest first, and the
// cursor of the next page ("" at the end).
func (db *DB) Payouts(ctx context.Context, f outlast.PayoutFilter) ([]*outlast.Payout, string, error) {
	if f.ClientID == "" {
		return nil, "", outlast.Errorf(outlast.EINVALID, "client is required")
	}
	if f.Status != "" && !f.Status.Valid() {
		return nil, "", outlast.Errorf(outlast.EVALIDATION, "unknown status %q", f.Status)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = pageLimitDefault
	}
	limit = min(limit, outlast.PageLimitMax)
	where := []string{"client_id = $1"}
	args := []any{f.ClientID}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if f.Cursor != "" {
		after, err := base64.RawURLEncoding.DecodeString(f.Cursor)
		if err != nil || !outlast.ValidID(string(after)) {
			return nil, "", outlast.Errorf(outlast.EINVALID, "invalid cursor")
		}
		add("id < ?", string(after))
	}
	if f.AccountID != "" {
		add("account_id = ?", f.AccountID)
	}
	if f.Status != "" {
		add("status = ?", string(f.Status))
	}
	args = append(args, limit+1)
	query := "SELECT " + payoutColumns + " FROM payouts WHERE " + strings.Join(where, " AND ") +
		" ORDER BY id DESC LIMIT $" + strconv.Itoa(len(args))
	ps, err := queryPayouts(ctx, db.r, query, args...)
	if err != nil {
		return nil, "", fail("payouts", err)
	}
	if len(ps) <= limit {
		return ps, "", nil
	}
	ps = ps[:limit]
	return ps, base64.RawURLEncoding.EncodeToString([]byte(ps[limit-1].ID)), nil
}

// PayoutCounts returns how many payouts are in each status.
func (db *DB) PayoutCounts(ctx context.Context) (map[outlast.PayoutStatus]int, error) {
	counts, err := payoutCounts(ctx, db.r)
	if err != nil {
		return nil, fail("payout_counts", err)
	}
	return counts, nil
}

func payoutCounts(ctx context.Context, q querier) (map[outlast.PayoutStatus]int, error) {
	rows, err := q.QueryContext(ctx, "SELECT status, COUNT(*) FROM payouts GROUP BY status")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	counts := make(map[outlast.PayoutStatus]int)
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		counts[outlast.PayoutStatus(s)] = n
	}
	return counts, rows.Err()
}

// EachPayout calls fn for every payout in id order until fn errors. It
// reads in chunks so that no query stays open while fn runs.
func (db *DB) EachPayout(ctx context.Context, fn func(*outlast.Payout) error) error {
	after := ""
	for {
		ps, err := queryPayouts(ctx, db.r, "SELECT "+payoutColumns+
			" FROM payouts WHERE id > $1 ORDER BY id LIMIT $2", after, eachPayoutChunk)
		if err != nil {
			return fail("each_payout", err)
		}
		for _, p := range ps {
			if err := fn(p); err != nil {
				return err
			}
		}
		if len(ps) < eachPayoutChunk {
			return nil
		}
		after = ps[len(ps)-1].ID
	}
}

const payoutColumns = `id, client_id, account_id, amount, currency, destination, status, channel,
	partner_ref, failure_reason, idempotency_key, version, created_ns, updated_ns`

// loadPayout reads a payout; lock is the dialect's forUpdate or "".
// ENOTFOUND if there is none.
func loadPayout(ctx context.Context, q querier, id, lock string) (*outlast.Payout, error) {
	p, err := scanPayout(q.QueryRowContext(ctx, "SELECT "+payoutColumns+" FROM payouts WHERE id = $1"+lock, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "payout %q not found", id)
	}
	return p, err
}

func queryPayouts(ctx context.Context, q querier, query string, args ...any) ([]*outlast.Payout, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ps []*outlast.Payout
	for rows.Next() {
		p, err := scanPayout(rows)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, rows.Err()
}

// scanPayout scans payoutColumns, after any extra leading destinations.
func scanPayout(s interface{ Scan(...any) error }, extra ...any) (*outlast.Payout, error) {
	var p outlast.Payout
	var status string
	var created, updated int64
	dest := append(extra, &p.ID, &p.ClientID, &p.AccountID, &p.Amount, &p.Currency, &p.Destination, &status,
		&p.Channel, &p.PartnerRef, &p.FailureReason, &p.IdempotencyKey, &p.Version, &created, &updated)
	if err := s.Scan(dest...); err != nil {
		return nil, err
	}
	p.Status = outlast.PayoutStatus(status)
	p.CreatedAt, p.UpdatedAt = fromNanos(created), fromNanos(updated)
	return &p, nil
}

// prefixed qualifies each of a comma-separated column list with prefix.
func prefixed(prefix, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = prefix + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}
