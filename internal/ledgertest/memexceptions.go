package ledgertest

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/outlast/outlast"
)

// FileException files e unless its key is filed; see
// outlast.ExceptionService.
func (m *Memory) FileException(_ context.Context, e *outlast.Exception) (*outlast.Exception, bool, error) {
	if err := e.Validate(); err != nil {
		return nil, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.AccountID != "" && m.accounts[e.AccountID] == nil {
		return nil, false, outlast.Errorf(outlast.EVALIDATION, "unknown account %q", e.AccountID)
	}
	if old := m.exceptionKeys[e.Key]; old != nil {
		return copyException(old), false, nil
	}
	return copyException(m.fileLocked(e, m.now())), true, nil
}

// fileLocked files e, which is valid, unless its key is filed, holding
// what it can of its claim. m.mu is held.
func (m *Memory) fileLocked(e *outlast.Exception, now time.Time) *outlast.Exception {
	if old := m.exceptionKeys[e.Key]; old != nil {
		return old
	}
	cp := copyException(e)
	cp.ID, cp.OpenedAt, cp.Resolution = int64(len(m.exceptions)+1), now, nil
	if a := m.accounts[cp.AccountID]; a != nil && cp.Claim > 0 {
		cp.Held = outlast.ExceptionHold(cp.Claim, a.Available)
		if cp.Held > 0 {
			a.Available -= cp.Held
			a.Held += cp.Held
			m.changed(a, now)
		}
	}
	m.exceptions = append(m.exceptions, cp)
	m.exceptionKeys[cp.Key] = cp
	return cp
}

// shortException is an open exception on account whose claim filing
// could not hold in full, or nil. m.mu is held.
func (m *Memory) shortException(account string) *outlast.Exception {
	for _, e := range m.exceptions {
		if e.AccountID == account && e.Open() && e.Short() > 0 {
			return e
		}
	}
	return nil
}

// Exceptions lists exceptions matching f, newest first.
func (m *Memory) Exceptions(_ context.Context, f outlast.ExceptionFilter) ([]*outlast.Exception, error) {
	limit := f.Limit
	if limit <= 0 || limit > outlast.ExceptionsMax {
		limit = outlast.ExceptionsMax
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*outlast.Exception
	for _, e := range slices.Backward(m.exceptions) {
		if len(out) == limit {
			break
		}
		if outlast.ExceptionMatches(e, f) {
			out = append(out, copyException(e))
		}
	}
	return out, nil
}

// Exception returns exception id.
func (m *Memory) Exception(_ context.Context, id int64) (*outlast.Exception, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id < 1 || id > int64(len(m.exceptions)) {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "exception %d not found", id)
	}
	return copyException(m.exceptions[id-1]), nil
}

// ResolveException resolves exception id as r says, moving its money.
func (m *Memory) ResolveException(_ context.Context, id int64, r *outlast.Resolution) (*outlast.Exception, *outlast.Account, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id < 1 || id > int64(len(m.exceptions)) {
		return nil, nil, outlast.Errorf(outlast.ENOTFOUND, "exception %d not found", id)
	}
	e := m.exceptions[id-1]
	a := m.accounts[e.AccountID]
	res := *r
	if err := outlast.PlanResolution(e, a, &res); err != nil {
		return nil, nil, err
	}
	now := m.now()
	res.At = now
	var settle *outlast.Notification
	if res.Payout != "" {
		p := m.payouts[e.PayoutID]
		if p == nil {
			return nil, nil, outlast.Errorf(outlast.EVALIDATION, "payout %s is not in the ledger: there is nothing to settle", e.PayoutID)
		}
		n, err := outlast.SettlePayout(e, p, &res, now)
		if err != nil {
			return nil, nil, err
		}
		settle = n
	}
	if a != nil && len(res.Moves) > 0 {
		outlast.ApplyMoves(a, res.Moves)
		m.changed(a, now)
	}
	if settle != nil {
		var moves []move
		if got := m.applyOne(settle, now, &moves); got.Outcome != outlast.OutcomeApplied {
			panic(fmt.Sprintf("ledgertest: settling payout %s: %s (%s)", e.PayoutID, got.Outcome, got.Reason))
		}
		m.settle(moves...)
	}
	e.Resolution = &res
	var acc *outlast.Account
	if a != nil {
		cp := *a
		acc = &cp
	}
	return copyException(e), acc, nil
}

// OpenExceptions counts the open exceptions by kind.
func (m *Memory) OpenExceptions(_ context.Context) (map[outlast.ExceptionKind]int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	open := map[outlast.ExceptionKind]int{}
	for _, e := range m.exceptions {
		if e.Open() {
			open[e.Kind]++
		}
	}
	return open, nil
}

func copyException(e *outlast.Exception) *outlast.Exception {
	cp := *e
	cp.Evidence = slices.Clone(e.Evidence)
	if e.Resolution != nil {
		r := *e.Resolution
		r.Moves = slices.Clone(r.Moves)
		cp.Resolution = &r
	}
	return &cp
}
