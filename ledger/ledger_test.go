package ledger

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/backoff"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/jetstream"
	"github.com/outlast/outlast/store"
)

// These tests run the ledger as serve wires it — the real store on SQLite
// and PostgreSQL, the real embedded log with its committer, the inbox
// drainer — because the defects they guard against were each hidden by a
// fake that behaved unlike the real store.

// rig is one service's worth of ledger, log and drainer.
type rig struct {
	db     *store.DB
	ledger *Ledger
	log    *jetstream.Log
	acct   string
	client string
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// backends runs fn on SQLite and on PostgreSQL.
func backends(t *testing.T, fn func(t *testing.T, dsn func(t *testing.T) string)) {
	t.Run("sqlite", func(t *testing.T) {
		fn(t, func(t *testing.T) string { return "sqlite:" + t.TempDir() + "/ledger.db" })
	})
	t.Run("postgres", func(t *testing.T) {
		fn(t, func(t *testing.T) string { return testenv.PostgresDSN(t) })
	})
}

// newRig opens the store at dsn (with payoutID as the next payout's id,
// if not ""), the ledger with a quick rejection rule (bound deliveries),
// the log, and starts the committer and the drainer.
func newRig(t *testing.T, dsn, payoutID string, deliveries int) *rig {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if payoutID != "" {
		db.NewID = func() string { return payoutID }
	}
	l, err := New(db, Config{RejectDeliveriesMax: deliveries,
		RejectRetry: backoff.Policy{Base: 20 * time.Millisecond, Max: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	log, err := jetstream.Open(ctx, jetstream.Config{DataDir: t.TempDir(), Logger: quiet,
		RetryDelayMin: 10 * time.Millisecond, RetryDelayMax: 100 * time.Millisecond, FetchWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("jetstream.Open: %v", err)
	}
	t.Cleanup(func() { log.Close() })
	client := "client-" + randomID()
	r := &rig{db: db, ledger: l, log: log, acct: "acct-" + randomID(), client: client}
	key := sha256.Sum256([]byte(client))
	if err := l.CreateClient(ctx, &outlast.Client{ID: client}, key[:]); err != nil {
		t.Fatal(err)
	}
	if err := l.CreateAccount(ctx, &outlast.Account{ID: r.acct, ClientID: client, Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.FundAccount(ctx, r.acct, 10_000, "rig"); err != nil {
		t.Fatal(err)
	}
	testenv.Start(t, "committer", func(ctx context.Context) error { return log.Consume(ctx, l) })
	d := &Drainer{Inbox: db, Ledger: l, PollInterval: 10 * time.Millisecond, Logger: quiet,
		Backoff: backoff.Policy{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond}}
	testenv.Start(t, "drainer", d.Run)
	return r
}

var idSeq int

func randomID() string {
	idSeq++
	return fmt.Sprintf("%d-%d", time.Now().UnixNano()%1_000_000_000, idSeq)
}

func (r *rig) payout(t *testing.T, key string) *outlast.Payout {
	t.Helper()
	p, _, err := r.ledger.CreatePayout(context.Background(), &outlast.PayoutRequest{
		ClientID: r.client, AccountID: r.acct, Amount: 100, Currency: "EUR", Destination: "dest", IdempotencyKey: key,
		Channel: "tcb",
	})
	if err != nil {
		t.Fatalf("CreatePayout: %v", err)
	}
	return p
}

func succeeded(payoutID, event string) *outlast.Notification {
	return &outlast.Notification{Channel: "tcb", EventID: event, PayoutID: payoutID, PartnerRef: "ref-" + event,
		Status: outlast.StatusSucceeded, OccurredAt: time.Now().UTC(), ReceivedAt: time.Now().UTC()}
}

// send makes n durable through source, as the webhook handler does.
func (r *rig) send(t *testing.T, source outlast.Source, n *outlast.Notification) {
	t.Helper()
	var err error
	if source == outlast.FromLog {
		err = r.log.Append(context.Background(), n)
	} else {
		err = r.db.AppendInbox(context.Background(), []*outlast.Notification{n})
	}
	if err != nil {
		t.Fatalf("send through %s: %v", source, err)
	}
}

func (r *rig) waitStatus(t *testing.T, id string, want outlast.PayoutStatus) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("payout %s %s", id, want), func() bool {
		p, _, err := r.db.Payout(context.Background(), id)
		return err == nil && p.Status == want
	})
}

func rejected(source outlast.Source) float64 {
	return testutil.ToFloat64(outcomesTotal.WithLabelValues(string(source), string(outlast.OutcomeRejected)))
}

// TestNotificationBeforeItsPayout is defect 1: a notification for a payout
// this instance cannot see yet was remembered as seen with its rejection,
// so its redelivery was acked as a duplicate and the payout never moved.
// Now it is delivered again, through either path, and applies once the
// payout exists.
func TestNotificationBeforeItsPayout(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(t *testing.T) string) {
		for _, source := range []outlast.Source{outlast.FromLog, outlast.FromInbox} {
			t.Run(string(source), func(t *testing.T) {
				id := outlast.NewID()
				r := newRig(t, dsn(t), id, 1000)
				before := rejected(source)
				r.send(t, source, succeeded(id, "early-"+id))
				testenv.WaitFor(t, 20*time.Second, "the early notification rejected twice", func() bool {
					return rejected(source) >= before+2
				})
				p := r.payout(t, "k1")
				if p.ID != id {
					t.Fatalf("payout id = %s, want %s", p.ID, id)
				}
				r.waitStatus(t, id, outlast.StatusSucceeded)
				wantNoDeadLetters(t, r)
				wantBalances(t, r, 9_900, 0, 100)
			})
		}
	})
}

// TestRejectedIsDeadLetteredAfterTheBound: a notification that never
// applies ends, after the ledger's bound, in the dead letters with its
// reason — the same bound through the log and the inbox — and a replayed
// inbox dead letter applies once its payout exists.
func TestRejectedIsDeadLetteredAfterTheBound(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(t *testing.T) string) {
		id := outlast.NewID()
		r := newRig(t, dsn(t), id, 3)
		ctx := context.Background()
		r.send(t, outlast.FromLog, succeeded(id, "log-"+id))
		r.send(t, outlast.FromInbox, succeeded(id, "inbox-"+id))
		testenv.WaitFor(t, 20*time.Second, "both dead-lettered", func() bool {
			dls, err := r.db.DeadLetters(ctx, 10)
			return err == nil && len(dls) == 1 && r.log.Stats().DeadLetters == 1
		})
		logDead, err := r.log.DeadLetters(ctx, 10)
		if err != nil || len(logDead) != 1 || logDead[0].Reason != "rejected: unknown payout" || logDead[0].Deliveries != 3 {
			t.Fatalf("log dead letters = %+v, %v; want the report, rejected: unknown payout, after 3 deliveries", logDead, err)
		}
		dbDead, err := r.db.DeadLetters(ctx, 10)
		if err != nil || len(dbDead) != 1 || dbDead[0].Reason != "unknown payout" {
			t.Fatalf("inbox dead letters = %+v, %v; want the report, unknown payout", dbDead, err)
		}
		r.payout(t, "k1")
		if n, err := r.db.ReplayDeadLetters(ctx, []string{dbDead[0].ID}); err != nil || n != 1 {
			t.Fatalf("ReplayDeadLetters = %d, %v; want 1", n, err)
		}
		r.waitStatus(t, id, outlast.StatusSucceeded)
	})
}

// TestReadOnlyDatabaseNeverDeadLetters is defect 2: during a PostgreSQL
// failover the old primary answers 25006. Notifications arriving through
// the log and already in the inbox are held and retried for as long as it
// lasts — well past any bound on deliveries — and all apply once the
// database takes writes again.
func TestReadOnlyDatabaseNeverDeadLetters(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	r := newRig(t, dsn, "", 2)
	ps := []*outlast.Payout{r.payout(t, "k1"), r.payout(t, "k2")}
	r.send(t, outlast.FromInbox, succeeded(ps[1].ID, "inbox-"+ps[1].ID))
	testenv.SetPostgresReadOnly(t, dsn, true)
	errsBefore := testutil.ToFloat64(applyErrorsTotal.WithLabelValues("log", outlast.EUNAVAILABLE))
	r.send(t, outlast.FromLog, succeeded(ps[0].ID, "log-"+ps[0].ID))
	testenv.WaitFor(t, 30*time.Second, "the log's apply refused 10 times", func() bool {
		return testutil.ToFloat64(applyErrorsTotal.WithLabelValues("log", outlast.EUNAVAILABLE)) >= errsBefore+10
	})
	wantNoDeadLetters(t, r)
	testenv.SetPostgresReadOnly(t, dsn, false)
	for _, p := range ps {
		r.waitStatus(t, p.ID, outlast.StatusSucceeded)
	}
	wantNoDeadLetters(t, r)
	wantBalances(t, r, 9_800, 0, 200)
}

// TestStoppedDatabaseNeverDeadLetters: the same with the database stopped
// (a private server: the shared one is never stopped) and started again.
func TestStoppedDatabaseNeverDeadLetters(t *testing.T) {
	pg := testenv.StartPostgres(t)
	r := newRig(t, pg.DSN(), "", 2)
	p := r.payout(t, "k1")
	pg.Stop()
	errsBefore := testutil.ToFloat64(applyErrorsTotal.WithLabelValues("log", outlast.EUNAVAILABLE))
	r.send(t, outlast.FromLog, succeeded(p.ID, "log-"+p.ID))
	testenv.WaitFor(t, 30*time.Second, "the log's apply refused 5 times", func() bool {
		return testutil.ToFloat64(applyErrorsTotal.WithLabelValues("log", outlast.EUNAVAILABLE)) >= errsBefore+5
	})
	pg.Start()
	r.waitStatus(t, p.ID, outlast.StatusSucceeded)
	wantNoDeadLetters(t, r)
}

// TestCachedMissDoesNotOutliveCreate is defect 4: a read of an account
// before it existed cached "not found", and creating it went around the
// cache, so reads kept answering 404.
func TestCachedMissDoesNotOutliveCreate(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(t *testing.T) string) {
		r := newRig(t, dsn(t), "", 3)
		ctx := context.Background()
		if _, _, err := r.ledger.Account(ctx, "late"); outlast.ErrorCode(err) != outlast.ENOTFOUND {
			t.Fatalf("Account(late) before create = %v, want ENOTFOUND", err)
		}
		if err := r.ledger.CreateAccount(ctx, &outlast.Account{ID: "late", ClientID: r.client, Currency: "EUR"}); err != nil {
			t.Fatal(err)
		}
		a, _, err := r.ledger.Account(ctx, "late")
		if err != nil || a.ID != "late" || a.Currency != "EUR" {
			t.Fatalf("Account(late) after create = %+v, %v; want the new account", a, err)
		}
	})
}

func wantNoDeadLetters(t *testing.T, r *rig) {
	t.Helper()
	if n := r.log.Stats().DeadLetters; n != 0 {
		t.Errorf("log dead letters = %d, want 0", n)
	}
	if dls, err := r.db.DeadLetters(context.Background(), 10); err != nil || len(dls) != 0 {
		t.Errorf("inbox dead letters = %d, %v; want 0", len(dls), err)
	}
}

func wantBalances(t *testing.T, r *rig, available, held, paidOut int64) {
	t.Helper()
	a, _, err := r.db.Account(context.Background(), r.acct)
	if err != nil || a.Available != available || a.Held != held || a.PaidOut != paidOut {
		t.Fatalf("account = %+v, %v; want available %d held %d paid out %d", a, err, available, held, paidOut)
	}
}

// failing fails every Apply whose batch holds event bad until healed.
type failing struct {
	Applier
	bad    string
	healed atomic.Bool
	calls  atomic.Int64
}

func (f *failing) Apply(ctx context.Context, source outlast.Source, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
	f.calls.Add(1)
	for _, n := range ns {
		if n.EventID == f.bad && !f.healed.Load() {
			return nil, fmt.Errorf("constraint violated by %s", n.EventID)
		}
	}
	return f.Applier.Apply(ctx, source, ns)
}

// TestInboxIsolatesAFailingEntry: an apply error that is not the
// database's state holds neither the rest of the batch (applied one by
// one) nor goes to the dead letters; the entry applies once healed.
func TestInboxIsolatesAFailingEntry(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(t *testing.T) string) {
		ctx := context.Background()
		db, err := store.Open(ctx, dsn(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		l, err := New(db, Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		r := &rig{db: db, ledger: l, acct: "acct-iso", client: "client-iso"}
		key := sha256.Sum256([]byte(r.client))
		if err := l.CreateClient(ctx, &outlast.Client{ID: r.client}, key[:]); err != nil {
			t.Fatal(err)
		}
		if err := l.CreateAccount(ctx, &outlast.Account{ID: r.acct, ClientID: r.client, Currency: "EUR"}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := l.FundAccount(ctx, r.acct, 10_000, "rig"); err != nil {
			t.Fatal(err)
		}
		ps := []*outlast.Payout{r.payout(t, "k1"), r.payout(t, "k2"), r.payout(t, "k3")}
		bad := "bad-" + ps[1].ID
		for i, p := range ps {
			ev := "ok-" + p.ID
			if i == 1 {
				ev = bad
			}
			r.send(t, outlast.FromInbox, succeeded(p.ID, ev))
		}
		f := &failing{Applier: l, bad: bad}
		d := &Drainer{Inbox: db, Ledger: f, PollInterval: 10 * time.Millisecond, Lease: 200 * time.Millisecond, Logger: quiet,
			Backoff: backoff.Policy{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond}}
		testenv.Start(t, "drainer", d.Run)
		r.waitStatus(t, ps[0].ID, outlast.StatusSucceeded)
		r.waitStatus(t, ps[2].ID, outlast.StatusSucceeded)
		testenv.WaitFor(t, 10*time.Second, "the failing entry tried again after its lease", func() bool { return f.calls.Load() >= 6 })
		if p, _, err := db.Payout(ctx, ps[1].ID); err != nil || p.Status != outlast.StatusPending {
			t.Fatalf("failing entry's payout = %+v, %v; want still pending", p, err)
		}
		if dls, err := db.DeadLetters(ctx, 10); err != nil || len(dls) != 0 {
			t.Fatalf("dead letters = %d, %v; want none for an apply error", len(dls), err)
		}
		f.healed.Store(true)
		r.waitStatus(t, ps[1].ID, outlast.StatusSucceeded)
	})
}
