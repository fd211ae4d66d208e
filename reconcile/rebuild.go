package reconcile

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/outlast/outlast"
)

// rebuildProblemsMax bounds a rebuild's problem lines, as the audit's.
const rebuildProblemsMax = 1000

// Balances are one account's buckets: what the journal says, or what
// the account's columns say.
type Balances struct {
	Funded    int64 `json:"funded"`
	Available int64 `json:"available"`
	Held      int64 `json:"held"`
	PaidOut   int64 `json:"paid_out"`
}

// AccountRebuild is one account rebuilt from the journal beside what its
// columns say.
type AccountRebuild struct {
	AccountID string   `json:"account_id"`
	Rebuilt   Balances `json:"rebuilt"`
	Stored    Balances `json:"stored"`
	Entries   int      `json:"journal_entries"`
}

// Differs reports whether the stored balances differ from the rebuilt.
func (a *AccountRebuild) Differs() bool { return a.Rebuilt != a.Stored }

// RebuildReport is what a rebuild found. It changes nothing: a
// difference is reported, never written over.
type RebuildReport struct {
	Entries  int              `json:"journal_entries"`
	Accounts []AccountRebuild `json:"accounts"`
	// Differences are the accounts whose columns differ from their
	// journal.
	Differences []AccountRebuild `json:"differences"`
	// Problems are what replaying the journal row by row found wrong: a
	// bucket taken below zero, an unknown bucket, a row of no money, a
	// row for an account that does not exist.
	Problems []string `json:"problems"`
}

// OK reports whether the journal rebuilt every account as stored.
func (r *RebuildReport) OK() bool { return len(r.Differences) == 0 && len(r.Problems) == 0 }

// Rebuild recomputes every account's balances from the journal alone,
// replaying it row by row in commit order, and compares them with the
// accounts' columns. Replaying row by row checks what the audit's sums
// cannot: no row ever took available, held or paid_out below zero (each
// decrease is covered by what the bucket held before it, whatever the
// order of a transaction's rows). The ledger is only read.
func Rebuild(ctx context.Context, r outlast.JournalReader) (*RebuildReport, error) {
	rep := &RebuildReport{Accounts: []AccountRebuild{}, Differences: []AccountRebuild{}, Problems: []string{}}
	rebuilt := map[string]*AccountRebuild{}
	problem := func(format string, args ...any) {
		if len(rep.Problems) < rebuildProblemsMax {
			rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
		}
	}
	err := r.ReadJournal(ctx, func(e *outlast.JournalEntry) error {
		rep.Entries++
		a := rebuilt[e.AccountID]
		if a == nil {
			a = &AccountRebuild{AccountID: e.AccountID}
			rebuilt[e.AccountID] = a
		}
		a.Entries++
		if e.Amount == 0 {
			problem("journal row %d (account %s): moves no money", e.ID, e.AccountID)
		}
		b := &a.Rebuilt
		var bucket *int64
		switch e.Bucket {
		case outlast.BucketExternal:
			b.Funded -= e.Amount // external is the counter-side of funding
			return nil
		case outlast.BucketAvailable:
			bucket = &b.Available
		case outlast.BucketHeld:
			bucket = &b.Held
		case outlast.BucketPaidOut:
			bucket = &b.PaidOut
		default:
			problem("journal row %d (account %s): unknown bucket %q", e.ID, e.AccountID, e.Bucket)
			return nil
		}
		*bucket += e.Amount
		if *bucket < 0 {
			problem("journal row %d (account %s, payout %q): takes %s to %d", e.ID, e.AccountID, e.PayoutID, e.Bucket, *bucket)
		}
		return nil
	}, func(acc *outlast.Account) error {
		a := rebuilt[acc.ID]
		if a == nil {
			a = &AccountRebuild{AccountID: acc.ID}
		}
		delete(rebuilt, acc.ID)
		a.Stored = Balances{Funded: acc.Funded, Available: acc.Available, Held: acc.Held, PaidOut: acc.PaidOut}
		rep.Accounts = append(rep.Accounts, *a)
		if a.Differs() {
			rep.Differences = append(rep.Differences, *a)
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	for _, id := range slices.Sorted(maps.Keys(rebuilt)) {
		problem("journal rows for account %s, which does not exist", id)
	}
	return rep, nil
}
