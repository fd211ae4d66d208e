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

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/partnersim"
)

// twoChannels returns clients of channels a and b at urlA and urlB, with
// breakers that never open, and a router that sends new payouts to a,
// then b (issue 9's fallback order).
func twoChannels(t *testing.T, a, urlA, b, urlB string) (clientA, clientB *Client, r *Router) {
	t.Helper()
	clientA = NewClient(a, urlA, ClientOptions{BreakerFailures: 1000})
	clientB = NewClient(b, urlB, ClientOptions{BreakerFailures: 1000})
	r, err := NewRouter(a, clientA, clientB)
	if err != nil {
		t.Fatal(err)
	}
	r.Apply(&outlast.ControlConfig{ActiveChannel: a, Fallback: []string{b}})
	return clientA, clientB, r
}

// dispatchOnTwo dispatches, until the test ends, one payout bound to
// channel a, served by handler, with channel b, a simulated bank with
// faultsB, next in the order; it returns the payout, the fake outbox
// holding it and bank b.
func dispatchOnTwo(t *testing.T, a string, handler http.Handler, b string, faultsB partnersim.Faults) (*outlast.Payout, *fakeOutbox, *partnersim.Bank) {
	t.Helper()
	srvA := httptest.NewServer(handler)
	t.Cleanup(srvA.Close)
	bankB, srvB := startBank(t, b, faultsB)
	_, _, router := twoChannels(t, a, srvA.URL, b, srvB.URL)
	p := payoutsOn(a, 1)[0]
	ob := newFakeOutbox(p)
	runDispatcher(t, fastDispatcher(ob, router))
	return p, ob, bankB
}

// fastDispatcher is a dispatcher over ob and r that polls and retries
// within milliseconds.
func fastDispatcher(ob outlast.OutboxService, r *Router) *Dispatcher {
	return NewDispatcher(ob, r, DispatcherConfig{PollInterval: 2 * time.Millisecond,
		BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, ConfirmDelay: 20 * time.Millisecond, Logger: quietLogger})
}

// A payout the first channel refuses, and whose status there confirms it
// does not hold it, goes to the next channel in the order and is paid
// there, once; it is not failed while a channel that has not refused it
// is left.
func TestDispatcherReroutesARefusedPayoutToTheNextChannel(t *testing.T) {
	const a, b = "rr-a", "rr-b"
	bankA, srvA := startBank(t, a, partnersim.Faults{RejectRate: 1})
	bankB, srvB := startBank(t, b, partnersim.Faults{})
	_, clientB, router := twoChannels(t, a, srvA.URL, b, srvB.URL)
	ps := payoutsOn(a, 3)
	ob := newFakeOutbox(ps...)
	before := testutil.ToFloat64(dispatchReroutesTotal.WithLabelValues(a, b))
	runDispatcher(t, fastDispatcher(ob, router))
	testenv.WaitFor(t, 10*time.Second, "outbox to drain", func() bool { return ob.pending() == 0 })

	ob.mu.Lock()
	defer ob.mu.Unlock()
	if len(ob.rejects) != 0 {
		t.Errorf("RejectDispatch called for %v, want none: %s had not refused them", ob.rejects, b)
	}
	for _, p := range ps {
		st, err := clientB.Status(context.Background(), p.ID)
		if err != nil {
			t.Fatalf("%s status of %s: %v", b, p.ID, err)
		}
		if got := ob.reroutes[p.ID]; !slices.Equal(got, []string{a + ">" + b}) {
			t.Errorf("reroutes of %s = %v, want [%s>%s]", p.ID, got, a, b)
		}
		if refs := ob.marks[p.ID]; !slices.Equal(refs, []string{st.PartnerRef}) {
			t.Errorf("payout %s marked with refs %v, want [%s], %s's", p.ID, refs, st.PartnerRef, b)
		}
	}
	if sa, sb := bankA.Stats(), bankB.Stats(); sa.Accepted != 0 || sa.Rejected != 3 || sb.Accepted != 3 {
		t.Errorf("%s accepted %d, rejected %d; %s accepted %d; want 0, 3; 3", a, sa.Accepted, sa.Rejected, b, sb.Accepted)
	}
	if got := testutil.ToFloat64(dispatchReroutesTotal.WithLabelValues(a, b)) - before; got != 3 {
		t.Errorf("outlast_dispatch_reroutes_total{from=%s,to=%s} grew by %v, want 3", a, b, got)
	}
}

// A payout every channel refused fails, with a reason naming each
// refusal. The first channel's status says "failed" (it took the payout
// and failed it), which is as definitive as "no such payout".
func TestDispatcherFailsAPayoutEveryChannelRefused(t *testing.T) {
	const a, b = "all-a", "all-b"
	p, ob, bankB := dispatchOnTwo(t, a, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			fmt.Fprintf(w, `{"payout_id":%q,"partner_ref":"a-1","status":"failed","reason":"account frozen"}`, strings.TrimPrefix(r.URL.Path, "/payouts/"))
			return
		}
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprint(w, `{"error":"account frozen"}`)
	}), b, partnersim.Faults{RejectRate: 1})
	testenv.WaitFor(t, 10*time.Second, "outbox to drain", func() bool { return ob.pending() == 0 })

	ob.mu.Lock()
	defer ob.mu.Unlock()
	want := "refused by all-a, then by all-b: destination account closed"
	if got := ob.rejects[p.ID]; !slices.Equal(got, []string{want}) {
		t.Errorf("RejectDispatch reasons = %q, want [%q]", got, want)
	}
	if got := ob.reroutes[p.ID]; !slices.Equal(got, []string{a + ">" + b}) || len(ob.marks) != 0 {
		t.Errorf("reroutes = %v, marks = %v; want [%s>%s] and none", got, ob.marks, a, b)
	}
	if got := bankB.Stats().Rejected; got != 1 {
		t.Errorf("%s rejected %d payouts, want 1", b, got)
	}
}

// After an ambiguous attempt, a refusal moves the payout only once the
// channel's status said twice, ConfirmDelay apart, that it does not hold
// it.
func TestDispatcherReroutesAfterAnAmbiguousAttemptOnlyOnceConfirmed(t *testing.T) {
	const a, b = "amb-a", "amb-b"
	var posts, gets atomic.Int64
	p, ob, bankB := dispatchOnTwo(t, a, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet:
			gets.Add(1)
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"payout not found"}`)
		case posts.Add(1) == 1:
			w.WriteHeader(http.StatusGatewayTimeout) // never reached the bank's core
		default:
			w.WriteHeader(http.StatusUnprocessableEntity)
			fmt.Fprint(w, `{"error":"invalid destination"}`)
		}
	}), b, partnersim.Faults{})
	testenv.WaitFor(t, 10*time.Second, "outbox to drain", func() bool { return ob.pending() == 0 })

	ob.mu.Lock()
	defer ob.mu.Unlock()
	if got := ob.reroutes[p.ID]; !slices.Equal(got, []string{a + ">" + b}) || len(ob.marks[p.ID]) != 1 || len(ob.rejects) != 0 {
		t.Errorf("reroutes = %v, marks = %v, rejects = %v; want moved to %s and marked there", got, ob.marks, ob.rejects, b)
	}
	if gets.Load() != 2 || posts.Load() != 2 {
		t.Errorf("%s was asked its status %d times after %d submits, want twice after 2", a, gets.Load(), posts.Load())
	}
	if got := bankB.Stats().Accepted; got != 1 {
		t.Errorf("%s accepted %d payouts, want 1", b, got)
	}
}

// The same on the real store, SQLite and PostgreSQL: a payout the first
// bank refuses is paid by the second, once, and the account's paid_out
// shows it; one both refuse fails naming both refusals and releases its
// hold; and one whose first attempt was ambiguous and whose retry the
// first bank refuses while its status says it holds it stays there,
// dispatched, never sent to the second bank.
func TestDispatcherReroutesOnTheStore(t *testing.T) {
	testenv.EachDatabase(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := openStore(t, dsn)
		const a, b = "tcb", "acb"
		bankA, srvA := startBank(t, a, partnersim.Faults{RejectRate: 1})
		bankB, srvB := startBank(t, b, partnersim.Faults{})
		clientA, clientB, router := twoChannels(t, a, srvA.URL, b, srvB.URL)
		f := ledgertest.Seed(t, db, "reroute", 10_000)
		payout := func(id string) *outlast.Payout { return storedPayout(t, db, id) }
		moved := ledgertest.MustPayout(t, db, f.Req("moved", 100)) // Req binds it to tcb
		bad := f.Req("refused", 250)
		bad.Destination = "REJECT-closed-account"
		refused := ledgertest.MustPayout(t, db, bad)
		runDispatcher(t, fastDispatcher(db, router))
		testenv.WaitFor(t, 20*time.Second, "both payouts to leave pending", leftPending(t, db, moved, refused))

		st, err := clientB.Status(ctx, moved.ID)
		if got := payout(moved.ID); err != nil || got.Status != outlast.StatusDispatched || got.Channel != b || got.PartnerRef != st.PartnerRef {
			t.Fatalf("moved payout = %+v (%s status %+v, %v); want dispatched on %s under its ref", got, b, st, err, b)
		}
		want := "refused by tcb, then by acb: invalid destination"
		if got := payout(refused.ID); got.Status != outlast.StatusFailed || got.FailureReason != want {
			t.Errorf("refused payout = %s (%q), want failed: %q", got.Status, got.FailureReason, want)
		}
		if sa, sb := bankA.Stats(), bankB.Stats(); sa.Accepted != 0 || sb.Accepted != 1 || sb.Rejected != 1 {
			t.Errorf("%s accepted %d; %s accepted %d, rejected %d; want 0; 1, 1", a, sa.Accepted, b, sb.Accepted, sb.Rejected)
		}

		// Ambiguous at tcb, then refused there although tcb holds it.
		bankA.SetFaults(partnersim.Faults{AmbiguousRate: 1, RefuseRepeatRate: 1})
		held := ledgertest.MustPayout(t, db, f.Req("held", 300))
		testenv.WaitFor(t, 20*time.Second, "the held payout to leave pending", leftPending(t, db, held))
		stA, err := clientA.Status(ctx, held.ID)
		if got := payout(held.ID); err != nil || got.Status != outlast.StatusDispatched || got.Channel != a || got.PartnerRef != stA.PartnerRef {
			t.Errorf("held payout = %+v (%s status %+v, %v); want dispatched on %s under its ref", got, a, stA, err, a)
		}
		if got := bankA.Stats().RefusedRepeats; got < 1 {
			t.Errorf("%s refused %d repeats, want >= 1: the test exercised nothing", a, got)
		}
		if got := bankB.Stats().Payouts; got != 2 {
			t.Errorf("%s holds %d payouts, want 2: the held payout must never reach it", b, got)
		}

		// acb pays the moved payout; its report settles it.
		testenv.WaitFor(t, 10*time.Second, "acb to pay the moved payout", func() bool {
			st, err := clientB.Status(ctx, moved.ID)
			return err == nil && st.Status == outlast.StatusSucceeded
		})
		ledgertest.WantOutcomes(t, ledgertest.Apply(t, db, &outlast.Notification{Channel: b, EventID: "paid-" + moved.ID,
			PayoutID: moved.ID, PartnerRef: st.PartnerRef, Status: outlast.StatusSucceeded, OccurredAt: time.Now().UTC()}),
			outlast.OutcomeApplied)
		if recs := bankB.Records(); len(recs) != 1 || recs[0].PayoutID != moved.ID {
			t.Errorf("%s records = %+v, want the moved payout alone", b, recs)
		}
		ledgertest.WantBalances(t, db, f.Account, 10_000-100-300, 300, 100)
	})
}

// rebindRig binds one payout to channel a, served by handler, which the
// operators then disable; b, a simulated bank, is next in the order.
func rebindRig(t *testing.T, a string, handler http.Handler, b string) (*outlast.Payout, *fakeOutbox, *partnersim.Bank) {
	t.Helper()
	srvA := httptest.NewServer(handler)
	t.Cleanup(srvA.Close)
	bankB, srvB := startBank(t, b, partnersim.Faults{})
	_, _, router := twoChannels(t, a, srvA.URL, b, srvB.URL)
	router.Apply(&outlast.ControlConfig{ActiveChannel: b, Fallback: []string{a},
		Channels: map[string]outlast.ChannelConfig{a: {Enabled: false}, b: {Enabled: true}}})
	p := payoutsOn(a, 1)[0]
	ob := newFakeOutbox(p)
	runDispatcher(t, fastDispatcher(ob, router))
	return p, ob, bankB
}

// statusHandler answers a partner's status queries with status and body
// (a submit would be a bug: a disabled channel is sent nothing), counting
// them.
func statusHandler(t *testing.T, gets *atomic.Int64, status int, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			t.Errorf("%s %s sent to a disabled channel", r.Method, r.URL.Path)
		}
		gets.Add(1)
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	})
}

// A payout bound to a channel the operators disabled, which that
// channel's status confirms it does not hold, moves to the next channel
// and is paid there once.
func TestDispatcherRebindsAPayoutOffADisabledChannel(t *testing.T) {
	var gets atomic.Int64
	p, ob, bankB := rebindRig(t, "off-a", statusHandler(t, &gets, http.StatusNotFound, `{"error":"no such payout"}`), "off-b")
	testenv.WaitFor(t, 10*time.Second, "outbox to drain", func() bool { return ob.pending() == 0 })
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if got := ob.reroutes[p.ID]; !slices.Equal(got, []string{"off-a>off-b"}) || len(ob.marks[p.ID]) != 1 || len(ob.rejects) != 0 {
		t.Errorf("reroutes %v, marks %v, rejects %v; want one move to off-b, marked there, nothing failed", got, ob.marks, ob.rejects)
	}
	if got := bankB.Stats().Accepted; got != 1 {
		t.Errorf("off-b accepted %d payouts, want 1", got)
	}
}

// A disabled channel whose status cannot be read may hold the payout: it
// stays where it is, and the other bank is sent nothing.
func TestDispatcherKeepsAPayoutItsDisabledChannelMayHold(t *testing.T) {
	var gets atomic.Int64
	p, ob, bankB := rebindRig(t, "may-a", statusHandler(t, &gets, http.StatusBadGateway, `{"error":"upstream"}`), "may-b")
	testenv.WaitFor(t, 10*time.Second, "three unanswered status queries", func() bool { return gets.Load() >= 3 })
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if len(ob.reroutes[p.ID]) != 0 || len(ob.marks) != 0 || len(ob.rejects) != 0 || bankB.Stats().Accepted != 0 {
		t.Errorf("reroutes %v, marks %v, rejects %v, may-b accepted %d; want the payout left waiting on may-a",
			ob.reroutes, ob.marks, ob.rejects, bankB.Stats().Accepted)
	}
}

// A disabled channel that holds the payout keeps it: it is recorded as
// dispatched there, under its ref.
func TestDispatcherRecordsAPayoutItsDisabledChannelHolds(t *testing.T) {
	var gets atomic.Int64
	p, ob, bankB := rebindRig(t, "held-a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gets.Add(1)
		fmt.Fprintf(w, `{"payout_id":%q,"partner_ref":"held-1","status":"dispatched"}`, strings.TrimPrefix(r.URL.Path, "/payouts/"))
	}), "held-b")
	testenv.WaitFor(t, 10*time.Second, "outbox to drain", func() bool { return ob.pending() == 0 })
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if got := ob.marks[p.ID]; !slices.Equal(got, []string{"held-1"}) || len(ob.reroutes) != 0 || bankB.Stats().Accepted != 0 {
		t.Errorf("marks %v, reroutes %v, held-b accepted %d; want marked under held-1 at held-a only", got, ob.reroutes, bankB.Stats().Accepted)
	}
}
