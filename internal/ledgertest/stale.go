package ledgertest

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/outlast/outlast"
)

// StalePayouts orders as the store does: least recently changed first,
// ties by id.
func (m *Memory) StalePayouts(_ context.Context, status outlast.PayoutStatus, before time.Time, after outlast.StaleCursor, limit int) ([]*outlast.Payout, error) {
	if !status.Valid() {
		return nil, outlast.Errorf(outlast.EVALIDATION, "unknown status %q", status)
	}
	if limit <= 0 || limit > outlast.StalePayoutsMax {
		limit = outlast.StalePayoutsMax
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var ps []*outlast.Payout
	for _, p := range m.payouts {
		if p.Status == status && p.UpdatedAt.Before(before) && after.After(p) {
			cp := *p
			ps = append(ps, &cp)
		}
	}
	slices.SortFunc(ps, func(a, b *outlast.Payout) int {
		if c := a.UpdatedAt.Compare(b.UpdatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return ps[:min(len(ps), limit)], nil
}

func (m *Memory) PayoutAges(_ context.Context, status outlast.PayoutStatus, cutoffs []time.Time) ([]int, time.Time, error) {
	if !status.Valid() {
		return nil, time.Time{}, outlast.Errorf(outlast.EVALIDATION, "unknown status %q", status)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	counts := make([]int, len(cutoffs))
	var oldest time.Time
	for _, p := range m.payouts {
		if p.Status != status {
			continue
		}
		if oldest.IsZero() || p.UpdatedAt.Before(oldest) {
			oldest = p.UpdatedAt
		}
		for i, c := range cutoffs {
			if p.UpdatedAt.Before(c) {
				counts[i]++
			}
		}
	}
	return counts, oldest, nil
}
