package store

import (
	"context"
	"database/sql"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/outlast/outlast"
)

var _ outlast.StaleService = (*DB)(nil)

// StalePayouts reads the payouts_status_updated index in order: the
// oldest changes come first and the scan stops at limit.
func (db *DB) StalePayouts(ctx context.Context, status outlast.PayoutStatus, before time.Time, after outlast.StaleCursor, limit int) ([]*outlast.Payout, error) {
	if !status.Valid() {
		return nil, outlast.Errorf(outlast.EVALIDATION, "unknown status %q", status)
	}
	if limit <= 0 || limit > outlast.StalePayoutsMax {
		limit = outlast.StalePayoutsMax
	}
	afterNs := int64(math.MinInt64)
	if !after.UpdatedAt.IsZero() || after.ID != "" {
		afterNs = after.UpdatedAt.UnixNano()
	}
	ps, err := queryPayouts(ctx, db.r, "SELECT "+payoutColumns+
		" FROM payouts WHERE status = $1 AND updated_ns < $2 AND (updated_ns > $3 OR (updated_ns = $3 AND id > $4))"+
		" ORDER BY updated_ns, id LIMIT $5",
		string(status), before.UnixNano(), afterNs, after.ID, limit)
	if err != nil {
		return nil, fail("stale_payouts", err)
	}
	return ps, nil
}

// PayoutAges counts in one pass over the status's part of the index.
func (db *DB) PayoutAges(ctx context.Context, status outlast.PayoutStatus, cutoffs []time.Time) ([]int, time.Time, error) {
	if !status.Valid() {
		return nil, time.Time{}, outlast.Errorf(outlast.EVALIDATION, "unknown status %q", status)
	}
	cols := []string{"MIN(updated_ns)"}
	args := []any{string(status)}
	for _, c := range cutoffs {
		args = append(args, c.UnixNano())
		cols = append(cols, "COALESCE(SUM(CASE WHEN updated_ns < $"+strconv.Itoa(len(args))+" THEN 1 ELSE 0 END), 0)")
	}
	counts := make([]int, len(cutoffs))
	var oldest sql.NullInt64
	dest := []any{&oldest}
	for i := range counts {
		dest = append(dest, &counts[i])
	}
	err := db.r.QueryRowContext(ctx, "SELECT "+strings.Join(cols, ", ")+" FROM payouts WHERE status = $1", args...).Scan(dest...)
	if err != nil {
		return nil, time.Time{}, fail("payout_ages", err)
	}
	if !oldest.Valid {
		return counts, time.Time{}, nil
	}
	return counts, fromNanos(oldest.Int64), nil
}
