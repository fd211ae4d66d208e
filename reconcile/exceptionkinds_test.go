package reconcile_test

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/reconcile"
	"github.com/outlast/outlast/store"
)

// exceptionCase sets up one kind of disagreement on db and returns each
// bank's records; a webhook it applies may file the exception itself.
type exceptionCase struct {
	name       string // if "", the kind
	kind       outlast.ExceptionKind
	claim      int64 // the exception's
	held       int64 // what filing held
	action     outlast.ResolveAction
	amount     int64
	payout     outlast.PayoutStatus     // the resolution settles the payout so
	moves      map[outlast.Bucket]int64 // the resolution's
	setup      func(t *testing.T, db *store.DB, f ledgertest.Fixture) map[string][]outlast.PartnerRecord
	evidenceOf string // a source its evidence must name
}

// TestExceptionKinds files one exception of each kind on the real store
// (SQLite and PostgreSQL) the way it arises — a late webhook, the
// discrepancy report against the bank's records, the reconciler — and
// checks that it
// carries its evidence and claim, that the audit lists it while open,
// that resolving it with a reason writes journal rows under its key
// that are exactly its hold and its resolution's moves, and that
// afterwards the ledger audit, the comparison with every bank and the
// rebuild from the journal are all clean.
func TestExceptionKinds(t *testing.T) {
	S, F := outlast.StatusSucceeded, outlast.StatusFailed
	cases := []exceptionCase{{
		kind: outlast.ExceptionPaidButFailed, claim: 300, held: 300, action: outlast.ResolveBookPaid,
		moves: map[outlast.Bucket]int64{outlast.BucketHeld: -300, outlast.BucketPaidOut: 300}, evidenceOf: "notification tcb/",
		setup: func(t *testing.T, db *store.DB, f ledgertest.Fixture) map[string][]outlast.PartnerRecord {
			p := settled(t, db, f, "pbf", 300, "ref-1", F)
			report(t, db, p, "late", "ref-1", S) // the bank paid after all
			return map[string][]outlast.PartnerRecord{"tcb": {rec(p, "ref-1", 300, S)}}
		},
	}, {
		kind: outlast.ExceptionSucceededNotPaid, claim: -400, action: outlast.ResolveReversePaid,
		moves: map[outlast.Bucket]int64{outlast.BucketAvailable: 400, outlast.BucketPaidOut: -400}, evidenceOf: "ledger",
		setup: func(t *testing.T, db *store.DB, f ledgertest.Fixture) map[string][]outlast.PartnerRecord {
			settled(t, db, f, "snp", 400, "ref-1", S)
			return map[string][]outlast.PartnerRecord{"tcb": {}} // the bank never paid it
		},
	}, {
		kind: outlast.ExceptionPaidTwice, claim: 200, held: 200, action: outlast.ResolveBookPaid,
		moves: map[outlast.Bucket]int64{outlast.BucketHeld: -200, outlast.BucketPaidOut: 200}, evidenceOf: "records of tcb",
		setup: func(t *testing.T, db *store.DB, f ledgertest.Fixture) map[string][]outlast.PartnerRecord {
			p := settled(t, db, f, "twice", 200, "ref-1", S)
			return map[string][]outlast.PartnerRecord{"tcb": {rec(p, "ref-1", 200, S), rec(p, "ref-2", 200, S)}}
		},
	}, {
		kind: outlast.ExceptionPaidByOtherChannel, claim: 250, held: 250, action: outlast.ResolveNoMoney,
		moves: map[outlast.Bucket]int64{outlast.BucketHeld: -250, outlast.BucketAvailable: 250}, evidenceOf: "records of acb",
		setup: func(t *testing.T, db *store.DB, f ledgertest.Fixture) map[string][]outlast.PartnerRecord {
			p := settled(t, db, f, "other", 250, "ref-1", S)
			return map[string][]outlast.PartnerRecord{"tcb": {rec(p, "ref-1", 250, S)}, "acb": {rec(p, "acb-9", 250, S)}}
		},
	}, {
		kind: outlast.ExceptionAmountMismatch, claim: 20, held: 20, action: outlast.ResolveBookPaid,
		moves: map[outlast.Bucket]int64{outlast.BucketHeld: -20, outlast.BucketPaidOut: 20}, evidenceOf: "records of tcb",
		setup: func(t *testing.T, db *store.DB, f ledgertest.Fixture) map[string][]outlast.PartnerRecord {
			p := settled(t, db, f, "amount", 500, "ref-1", S)
			return map[string][]outlast.PartnerRecord{"tcb": {rec(p, "ref-1", 520, S)}}
		},
	}, {
		// The bank answers for a dispatched payout under another ref: it
		// can never settle by itself; the resolution settles it.
		kind: outlast.ExceptionPartnerRefConflict, action: outlast.ResolveNoMoney, payout: S, evidenceOf: "notification tcb/",
		setup: func(t *testing.T, db *store.DB, f ledgertest.Fixture) map[string][]outlast.PartnerRecord {
			p := ledgertest.MustPayout(t, db, f.Req("ref", 150))
			if _, err := db.MarkDispatched(context.Background(), p.ID, "tcb", "ref-1"); err != nil {
				t.Fatal(err)
			}
			report(t, db, p, "other-ref", "ref-2", S)
			return map[string][]outlast.PartnerRecord{"tcb": {rec(p, "ref-2", 150, S)}}
		},
	}, {
		// A second payment reported by webhook, then seen in the bank's
		// records: one fact, one exception.
		name: "paid_twice_by_webhook_and_records", kind: outlast.ExceptionPaidTwice, claim: 350, held: 350,
		action: outlast.ResolveBookPaid, evidenceOf: "notification tcb/",
		moves: map[outlast.Bucket]int64{outlast.BucketHeld: -350, outlast.BucketPaidOut: 350},
		setup: func(t *testing.T, db *store.DB, f ledgertest.Fixture) map[string][]outlast.PartnerRecord {
			p := settled(t, db, f, "twice-hook", 350, "ref-1", S)
			report(t, db, p, "second", "ref-2", S)
			return map[string][]outlast.PartnerRecord{"tcb": {rec(p, "ref-1", 350, S), rec(p, "ref-2", 350, S)}}
		},
	}, {
		// A late success under another ref is still a late success.
		name: "paid_but_failed_under_another_ref", kind: outlast.ExceptionPaidButFailed, claim: 120, held: 120,
		action: outlast.ResolveBookPaid, evidenceOf: "notification tcb/",
		moves: map[outlast.Bucket]int64{outlast.BucketHeld: -120, outlast.BucketPaidOut: 120},
		setup: func(t *testing.T, db *store.DB, f ledgertest.Fixture) map[string][]outlast.PartnerRecord {
			p := settled(t, db, f, "pbf-ref", 120, "ref-1", F)
			report(t, db, p, "late", "ref-9", S)
			return map[string][]outlast.PartnerRecord{"tcb": {rec(p, "ref-9", 120, S)}}
		},
	}, {
		// The reconciler files it (TestReconcilerStore); here its filing
		// is the reconciler's call, and the bank's records confirm it.
		kind: outlast.ExceptionUnknownToBank, action: outlast.ResolveNoMoney, payout: F, evidenceOf: "status of tcb",
		setup: func(t *testing.T, db *store.DB, f ledgertest.Fixture) map[string][]outlast.PartnerRecord {
			p := ledgertest.MustPayout(t, db, f.Req("lost", 180))
			p, err := db.MarkDispatched(context.Background(), p.ID, "tcb", "ref-1")
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := db.FileException(context.Background(), outlast.UnknownToBankException(p, time.Now())); err != nil {
				t.Fatal(err)
			}
			return map[string][]outlast.PartnerRecord{"tcb": {}}
		},
	}, {
		kind: outlast.ExceptionUnknownPayout, action: outlast.ResolveNoMoney, evidenceOf: "records of tcb",
		setup: func(t *testing.T, db *store.DB, f ledgertest.Fixture) map[string][]outlast.PartnerRecord {
			return map[string][]outlast.PartnerRecord{"tcb": {{PayoutID: "ghost-1", PartnerRef: "g-1", Amount: 5, Currency: "EUR", Status: S}}}
		},
	}}
	for _, c := range cases {
		t.Run(cmp.Or(c.name, string(c.kind)), func(t *testing.T) {
			testenv.EachDatabase(t, func(t *testing.T, dsn string) {
				db, err := store.Open(context.Background(), dsn)
				if err != nil {
					t.Fatalf("store.Open: %v", err)
				}
				defer db.Close()
				testExceptionKind(t, db, c)
			})
		})
	}
}

func testExceptionKind(t *testing.T, db *store.DB, c exceptionCase) {
	ctx := context.Background()
	f := ledgertest.Seed(t, db, "kinds", 10_000)
	records := c.setup(t, db, f)
	for ch, rs := range records {
		if _, err := reconcile.Repair(ctx, db, ch, rs, false); err != nil {
			t.Fatalf("Repair(%s): %v", ch, err)
		}
	}
	es, err := db.Exceptions(ctx, outlast.ExceptionFilter{Open: true})
	if err != nil || len(es) != 1 {
		t.Fatalf("open exceptions = %+v, %v; want one", es, err)
	}
	e := es[0]
	if e.Kind != c.kind || e.Claim != c.claim || e.Held != c.held || e.Summary == "" || !hasEvidence(e, c.evidenceOf) {
		t.Fatalf("exception = %+v; want %s claiming %d, %d held, with evidence from %q", e, c.kind, c.claim, c.held, c.evidenceOf)
	}
	rep, err := db.AuditLedger(ctx)
	if err != nil || len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], fmt.Sprintf("exception %d", e.ID)) {
		t.Fatalf("audit while open = %v, %v; want exactly exception %d listed", rep.Problems, err, e.ID)
	}

	got, _, err := db.ResolveException(ctx, e.ID, &outlast.Resolution{Action: c.action, Amount: c.amount, Payout: c.payout,
		Reason: "bank statement of " + time.Now().Format(time.DateOnly) + " checked", By: "ops@example"})
	if err != nil {
		t.Fatalf("ResolveException: %v", err)
	}
	if got.Resolution.Reason == "" || got.Resolution.By != "ops@example" {
		t.Fatalf("resolution = %+v, want its reason and who", got.Resolution)
	}
	// The journal: the hold filing wrote, then the resolution's moves,
	// all under the exception's key.
	want := map[outlast.Bucket]int64{}
	if c.held > 0 {
		want[outlast.BucketAvailable], want[outlast.BucketHeld] = -c.held, c.held
	}
	for b, v := range c.moves {
		want[b] += v
	}
	if j := journalOf(t, db, e.Key); fmt.Sprint(j) != fmt.Sprint(nonZero(want)) {
		t.Fatalf("journal rows under %s sum to %v by bucket, want %v", e.Key, j, nonZero(want))
	}
	if rep, err := db.AuditLedger(ctx); err != nil || len(rep.Problems) != 0 {
		t.Fatalf("audit after resolving = %v, %v; want clean", rep.Problems, err)
	}
	if c.payout != "" {
		if p, _, err := db.Payout(ctx, e.PayoutID); err != nil || p.Status != c.payout {
			t.Fatalf("payout after resolving = %+v, %v; want it settled %s", p, err, c.payout)
		}
	}
	for ch, rs := range records {
		ds, err := reconcile.ComparePartner(ctx, db, ch, rs)
		if err != nil {
			t.Fatal(err)
		}
		if open, err := reconcile.Settle(ctx, db, ds); err != nil || len(open) != 0 {
			t.Fatalf("%s: discrepancies not settled = %v, %v; want none", ch, open, err)
		}
	}
	if rb, err := reconcile.Rebuild(ctx, db); err != nil || !rb.OK() {
		t.Fatalf("rebuild = %+v, %v; want the journal to rebuild every account", rb, err)
	}
}

// settled makes a payout of amount that tcb took under ref and reported
// final as status.
func settled(t *testing.T, db *store.DB, f ledgertest.Fixture, key string, amount int64, ref string, status outlast.PayoutStatus) *outlast.Payout {
	t.Helper()
	p := ledgertest.MustPayout(t, db, f.Req(key, amount))
	if _, err := db.MarkDispatched(context.Background(), p.ID, "tcb", ref); err != nil {
		t.Fatal(err)
	}
	report(t, db, p, "final", ref, status)
	return p
}

// report applies tcb's webhook about p.
func report(t *testing.T, db *store.DB, p *outlast.Payout, event, ref string, status outlast.PayoutStatus) {
	t.Helper()
	n := &outlast.Notification{Channel: "tcb", EventID: event + "-" + p.ID, PayoutID: p.ID, PartnerRef: ref,
		Status: status, OccurredAt: time.Now().UTC()}
	if _, err := db.Apply(context.Background(), outlast.FromLog, []*outlast.Notification{n}); err != nil {
		t.Fatal(err)
	}
}

func rec(p *outlast.Payout, ref string, amount int64, status outlast.PayoutStatus) outlast.PartnerRecord {
	return outlast.PartnerRecord{PayoutID: p.ID, PartnerRef: ref, Amount: amount, Currency: p.Currency, Status: status}
}

func hasEvidence(e *outlast.Exception, source string) bool {
	for _, ev := range e.Evidence {
		if strings.HasPrefix(ev.Source, source) && ev.Says != "" {
			return true
		}
	}
	return false
}

// journalOf sums the journal rows under an exception's key by bucket.
func journalOf(t *testing.T, db *store.DB, key string) map[outlast.Bucket]int64 {
	t.Helper()
	sum := map[outlast.Bucket]int64{}
	err := db.ReadJournal(context.Background(), func(e *outlast.JournalEntry) error {
		if e.Exception == key {
			if e.PayoutID != "" {
				return fmt.Errorf("journal row %d names payout %s and exception %s", e.ID, e.PayoutID, key)
			}
			sum[e.Bucket] += e.Amount
		}
		return nil
	}, func(*outlast.Account) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return nonZero(sum)
}

func nonZero(m map[outlast.Bucket]int64) map[outlast.Bucket]int64 {
	for b, v := range m {
		if v == 0 {
			delete(m, b)
		}
	}
	return m
}
