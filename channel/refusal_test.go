package channel

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/partnersim"
	"github.com/outlast/outlast/store"
)

// A bank that accepted a payout but lost the answer (504), then answers
// every retry of it with a 4xx, holds the payout and pays it. The
// dispatcher must not fail it (issue 7, defect 1): the refusal is checked
// against the bank's status, which says it holds the payout.
func TestDispatcherDoesNotFailAPayoutTheBankHolds(t *testing.T) {
	const ch = "refuse"
	bank, srv := startBank(t, ch, partnersim.Faults{AmbiguousRate: 1, RefuseRepeatRate: 1})
	client, router := oneChannel(t, ch, srv.URL)
	// Six payouts: the bank answers their retries with 400, 407, 413,
	// 421, 422 and 431 in turn.
	ps := payoutsOn(ch, 6)
	ob := newFakeOutbox(ps...)
	runDispatcher(t, NewDispatcher(ob, router, DispatcherConfig{PollInterval: 2 * time.Millisecond,
		BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, Logger: quietLogger}))
	testenv.WaitFor(t, 10*time.Second, "outbox to drain", func() bool { return ob.pending() == 0 })

	ob.mu.Lock()
	defer ob.mu.Unlock()
	if len(ob.rejects) != 0 {
		t.Errorf("RejectDispatch called for %v: payouts the bank holds were failed", ob.rejects)
	}
	for _, p := range ps {
		st, err := client.Status(context.Background(), p.ID)
		if err != nil {
			t.Fatalf("bank status of %s: %v", p.ID, err)
		}
		if refs := ob.marks[p.ID]; !slices.Equal(refs, []string{st.PartnerRef}) {
			t.Errorf("payout %s marked with refs %v, want [%s], the bank's", p.ID, refs, st.PartnerRef)
		}
	}
	if got := bank.Stats().RefusedRepeats; got < int64(len(ps)) {
		t.Errorf("the bank refused %d repeats, want >= %d: the test exercised nothing", got, len(ps))
	}
}

// A refusal whose status cannot be read is not confirmed: the payout is
// retried on its channel, never failed, and never sent to the next
// channel while the first may still hold it.
func TestDispatcherRetriesARefusalItCannotConfirm(t *testing.T) {
	const ch, next = "unconfirmed", "unconfirmed-next"
	var statusCalls atomic.Int64
	p, ob, nextBank := dispatchOnTwo(t, ch, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			statusCalls.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprint(w, `{"error":"invalid destination"}`)
	}), next, partnersim.Faults{})
	testenv.WaitFor(t, 10*time.Second, "3 retries", func() bool { return len(ob.retriesOf(p.ID)) >= 3 })
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if len(ob.rejects) != 0 || len(ob.marks) != 0 || len(ob.reroutes) != 0 {
		t.Errorf("rejects = %v, marks = %v, reroutes = %v; want none while the bank's status is unreadable", ob.rejects, ob.marks, ob.reroutes)
	}
	if got := nextBank.Stats().Payouts; got != 0 {
		t.Errorf("%s was sent %d payouts, want none", next, got)
	}
	if statusCalls.Load() < 3 {
		t.Errorf("status asked %d times, want once per refusal", statusCalls.Load())
	}
}

// The same on the real store, SQLite and PostgreSQL: payouts whose retries
// the bank refuses end dispatched under the bank's ref with their amounts
// still held, and a payout the bank truly refuses (it has no record of it)
// fails and releases its hold.
func TestDispatcherRefusalsOnTheStore(t *testing.T) {
	testenv.EachDatabase(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := openStore(t, dsn)
		const ch = "tcb"
		bank, srv := startBank(t, ch, partnersim.Faults{AmbiguousRate: 1, RefuseRepeatRate: 1})
		client, router := oneChannel(t, ch, srv.URL)
		f := ledgertest.Seed(t, db, "refusals", 10_000)
		var held []*outlast.Payout
		for i := range 6 {
			held = append(held, ledgertest.MustPayout(t, db, f.Req(fmt.Sprintf("held-%d", i), 100)))
		}
		bad := f.Req("refused", 250)
		bad.Destination = "REJECT-closed-account"
		refused := ledgertest.MustPayout(t, db, bad)

		runDispatcher(t, NewDispatcher(db, router, DispatcherConfig{PollInterval: 2 * time.Millisecond,
			BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, Logger: quietLogger}))
		payout := func(id string) *outlast.Payout { return storedPayout(t, db, id) }
		testenv.WaitFor(t, 20*time.Second, "every payout to leave pending", leftPending(t, db, append(slices.Clone(held), refused)...))
		for _, p := range held {
			got := payout(p.ID)
			st, err := client.Status(ctx, p.ID)
			if err != nil {
				t.Fatalf("bank status of %s: %v", p.ID, err)
			}
			if got.Status != outlast.StatusDispatched || got.PartnerRef != st.PartnerRef {
				t.Errorf("payout %s = %s ref %q; want dispatched under the bank's ref %q", p.ID, got.Status, got.PartnerRef, st.PartnerRef)
			}
		}
		if got := payout(refused.ID); got.Status != outlast.StatusFailed || got.FailureReason != "invalid destination" {
			t.Errorf("refused payout = %s (%q), want failed: invalid destination", got.Status, got.FailureReason)
		}
		ledgertest.WantBalances(t, db, f.Account, 10_000-600, 600, 0)
		if got := bank.Stats().RefusedRepeats; got < 6 {
			t.Errorf("the bank refused %d repeats, want >= 6: the test exercised nothing", got)
		}
	})
}

// oneChannel returns a client of channel ch at url, with a breaker that
// never opens, and a router over it alone.
func oneChannel(t *testing.T, ch, url string) (*Client, *Router) {
	t.Helper()
	client := NewClient(ch, url, ClientOptions{BreakerFailures: 1000})
	router, err := NewRouter(ch, client)
	if err != nil {
		t.Fatal(err)
	}
	return client, router
}

// A dispatcher whose lease ran out while another claimed the payout again
// must not act on a refusal it learns late: the other claim may be
// getting it accepted. With one channel it must not fail it; with a
// second channel it must not send it there. On the real store, SQLite
// and PostgreSQL.
func TestDispatcherWithALostClaimFailsNothing(t *testing.T) {
	const ch, next = "tcb", "acb"
	_, srv := startBank(t, ch, partnersim.Faults{})
	nextBank, nextSrv := startBank(t, next, partnersim.Faults{})
	_, single := oneChannel(t, ch, srv.URL)
	_, _, double := twoChannels(t, ch, srv.URL, next, nextSrv.URL)
	for _, router := range []*Router{single, double} {
		t.Run(fmt.Sprintf("%d_channels", len(router.Order())), func(t *testing.T) {
			testenv.EachDatabase(t, func(t *testing.T, dsn string) {
				ctx := context.Background()
				db := openStore(t, dsn)
				clock := testenv.NewClock(time.Now())
				db.Now = clock.Now
				f := ledgertest.Seed(t, db, "lost", 1000)
				bad := f.Req("refused", 250)
				bad.Destination = "REJECT-closed-account"
				p := ledgertest.MustPayout(t, db, bad)

				claim := func() *outlast.Dispatch {
					ds, err := db.ClaimDispatches(ctx, 10, time.Minute)
					if err != nil || len(ds) != 1 {
						t.Fatalf("ClaimDispatches = %v, %v; want the payout", ds, err)
					}
					return ds[0]
				}
				stale := claim()
				clock.Advance(2 * time.Minute) // its lease runs out; another instance claims
				claim()
				d := NewDispatcher(db, router, DispatcherConfig{Logger: quietLogger})
				d.handle(ctx, stale) // the bank refuses and has no such payout
				got, _, err := db.Payout(ctx, p.ID)
				if err != nil || got.Status != outlast.StatusPending || got.Channel != ch || got.Version != p.Version {
					t.Fatalf("payout after a refusal under a lost claim = %+v, %v; want unchanged, pending on %s", got, err, ch)
				}
				ledgertest.WantBalances(t, db, f.Account, 750, 250, 0)
				clock.Advance(2 * time.Minute)
				if again := claim(); len(again.Refused) != 0 {
					t.Errorf("refused channels after a lost claim = %q, want none", again.Refused)
				}
			})
		})
	}
	if got := nextBank.Stats().Payouts; got != 0 {
		t.Errorf("%s was sent %d payouts, want none", next, got)
	}
}

// storedPayout reads payout id from db, failing t if it cannot.
func storedPayout(t *testing.T, db *store.DB, id string) *outlast.Payout {
	t.Helper()
	p, _, err := db.Payout(context.Background(), id)
	if err != nil {
		t.Fatalf("Payout(%s): %v", id, err)
	}
	return p
}

// leftPending is a WaitFor condition: every one of ps has left pending in
// db.
func leftPending(t *testing.T, db *store.DB, ps ...*outlast.Payout) func() bool {
	return func() bool {
		for _, p := range ps {
			if storedPayout(t, db, p.ID).Status == outlast.StatusPending {
				return false
			}
		}
		return true
	}
}

// openStore opens the ledger at dsn, closed when t ends.
func openStore(t *testing.T, dsn string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// A bank still processing an attempt whose answer was lost may refuse the
// retry and, for a moment, not show the payout in its status. After an
// ambiguous attempt the dispatcher asks again ConfirmDelay later before it
// believes "no such payout".
func TestDispatcherAsksAgainBeforeFailingAfterAnAmbiguousAttempt(t *testing.T) {
	const ch = "slow"
	var posts, gets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && gets.Add(1) == 1:
			// The first POST is still being processed.
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"payout not found"}`)
		case r.Method == http.MethodGet:
			fmt.Fprintf(w, `{"payout_id":%q,"partner_ref":"ref-1","status":"accepted"}`, strings.TrimPrefix(r.URL.Path, "/payouts/"))
		case posts.Add(1) == 1:
			w.WriteHeader(http.StatusGatewayTimeout) // the answer is lost; processing goes on
		default:
			w.WriteHeader(http.StatusUnprocessableEntity)
			fmt.Fprint(w, `{"error":"duplicate request"}`)
		}
	}))
	defer srv.Close()
	_, router := oneChannel(t, ch, srv.URL)
	p := payoutsOn(ch, 1)[0]
	ob := newFakeOutbox(p)
	runDispatcher(t, NewDispatcher(ob, router, DispatcherConfig{PollInterval: 2 * time.Millisecond,
		BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, ConfirmDelay: 50 * time.Millisecond, Logger: quietLogger}))
	testenv.WaitFor(t, 10*time.Second, "outbox to drain", func() bool { return ob.pending() == 0 })
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if len(ob.rejects) != 0 || !slices.Equal(ob.marks[p.ID], []string{"ref-1"}) {
		t.Errorf("rejects = %v, marks = %v; want the payout marked under ref-1, never failed", ob.rejects, ob.marks)
	}
	if gets.Load() != 2 {
		t.Errorf("status asked %d times, want twice: once at the refusal, once ConfirmDelay later", gets.Load())
	}
}
