package channel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/partnersim"
)

// fakeOutbox is an in-memory outlast.OutboxService with leases, safe for
// concurrent use, that records every call.
type fakeOutbox struct {
	mu       sync.Mutex
	entries  map[string]*outboxEntry
	marks    map[string][]string // payout id → refs marked
	rejects  map[string][]string // payout id → reasons
	reroutes map[string][]string // payout id → "from>to" of each move
	retries  map[string][]retryCall
	claimErr error
	claims   int
}

type outboxEntry struct {
	p          *outlast.Payout
	attempts   int
	refused    []string
	notBefore  time.Time
	leaseUntil time.Time
}

type retryCall struct {
	attemptsBefore int
	notBefore      time.Time
	lastError      string
}

var _ outlast.OutboxService = (*fakeOutbox)(nil)

func newFakeOutbox(ps ...*outlast.Payout) *fakeOutbox {
	o := &fakeOutbox{entries: map[string]*outboxEntry{}, marks: map[string][]string{}, rejects: map[string][]string{}, reroutes: map[string][]string{}, retries: map[string][]retryCall{}}
	for _, p := range ps {
		o.entries[p.ID] = &outboxEntry{p: p}
	}
	return o
}

func (o *fakeOutbox) ClaimDispatches(ctx context.Context, limit int, lease time.Duration) ([]*outlast.Dispatch, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.claims++
	if o.claimErr != nil {
		return nil, o.claimErr
	}
	now := time.Now()
	var ids []string
	for id, e := range o.entries {
		if !e.notBefore.After(now) && !e.leaseUntil.After(now) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var out []*outlast.Dispatch
	for _, id := range ids[:min(limit, len(ids))] {
		e := o.entries[id]
		e.leaseUntil = now.Add(lease)
		p := *e.p
		out = append(out, &outlast.Dispatch{Payout: &p, Attempts: e.attempts, Refused: slices.Clone(e.refused), Claim: e.leaseUntil})
	}
	return out, nil
}

func (o *fakeOutbox) MarkDispatched(ctx context.Context, payoutID, channel, partnerRef string) (*outlast.Payout, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.marks[payoutID] = append(o.marks[payoutID], partnerRef)
	e, ok := o.entries[payoutID]
	if !ok {
		return &outlast.Payout{ID: payoutID}, nil
	}
	delete(o.entries, payoutID)
	p := *e.p
	p.Status, p.PartnerRef = outlast.StatusDispatched, partnerRef
	return &p, nil
}

func (o *fakeOutbox) RetryDispatch(ctx context.Context, payoutID string, notBefore time.Time, lastError string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.entries[payoutID]
	if !ok {
		return outlast.Errorf(outlast.ENOTFOUND, "no outbox entry %s", payoutID)
	}
	o.retries[payoutID] = append(o.retries[payoutID], retryCall{attemptsBefore: e.attempts, notBefore: notBefore, lastError: lastError})
	e.attempts++
	e.notBefore, e.leaseUntil = notBefore, time.Time{}
	return nil
}

func (o *fakeOutbox) RejectDispatch(ctx context.Context, payoutID, channel, reason string, claim time.Time) (*outlast.Payout, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e, ok := o.entries[payoutID]; ok && !claim.IsZero() && !e.leaseUntil.Equal(claim) {
		return nil, outlast.Errorf(outlast.ECONFLICT, "claim on %s lost", payoutID)
	}
	o.rejects[payoutID] = append(o.rejects[payoutID], reason)
	delete(o.entries, payoutID)
	return &outlast.Payout{ID: payoutID, Status: outlast.StatusFailed}, nil
}

func (o *fakeOutbox) RerouteDispatch(ctx context.Context, payoutID, from, to, reason string, claim time.Time) (*outlast.Payout, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.entries[payoutID]
	if !ok || (!claim.IsZero() && !e.leaseUntil.Equal(claim)) {
		return nil, outlast.ClaimLost(payoutID)
	}
	if err := outlast.CheckReroute(e.p, from, to, e.refused); err != nil {
		return nil, err
	}
	o.reroutes[payoutID] = append(o.reroutes[payoutID], from+">"+to)
	p := *e.p
	p.Channel, p.Version = to, p.Version+1
	e.p, e.refused = &p, append(slices.Clip(e.refused), from)
	e.attempts, e.notBefore, e.leaseUntil = 0, time.Time{}, time.Time{}
	return &p, nil
}

func (o *fakeOutbox) pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.entries)
}

func (o *fakeOutbox) retriesOf(id string) []retryCall {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.retries[id])
}

func (o *fakeOutbox) totalRetries() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, r := range o.retries {
		n += len(r)
	}
	return n
}

// runDispatcher runs d until the returned stop is called (or the test
// ends); stop fails the test if Run errs or does not return.
func runDispatcher(t *testing.T, d *Dispatcher) (stop func()) {
	t.Helper()
	return testenv.Start(t, "Dispatcher.Run", d.Run)
}

func payoutsOn(channel string, n int) []*outlast.Payout {
	ps := make([]*outlast.Payout, n)
	for i := range ps {
		ps[i] = testPayout(fmt.Sprintf("%s-p%04d", channel, i))
		ps[i].Channel = channel
	}
	return ps
}

var quietLogger = slog.New(slog.DiscardHandler)

func TestDispatcherEndToEndMarksEachPayoutOnce(t *testing.T) {
	const ch = "e2e"
	bank, srv := startBank(t, ch, partnersim.Faults{ErrorRate: 0.2, AmbiguousRate: 0.2})
	client := NewClient(ch, srv.URL, ClientOptions{Timeout: 2 * time.Second, BreakerFailures: 1000})
	router, err := NewRouter(ch, client)
	if err != nil {
		t.Fatal(err)
	}
	ps := payoutsOn(ch, 200)
	ob := newFakeOutbox(ps...)
	d := NewDispatcher(ob, router, DispatcherConfig{BatchMax: 32, Concurrency: 8, PollInterval: 5 * time.Millisecond, BackoffBase: time.Millisecond, BackoffMax: 20 * time.Millisecond, Logger: quietLogger})
	stop := runDispatcher(t, d)
	testenv.WaitFor(t, 20*time.Second, "outbox to drain", func() bool { return ob.pending() == 0 })
	stop()

	ob.mu.Lock()
	defer ob.mu.Unlock()
	if len(ob.rejects) != 0 {
		t.Errorf("RejectDispatch called for %d payouts, want none", len(ob.rejects))
	}
	if len(ob.retries) == 0 {
		t.Error("no RetryDispatch calls at 40% faults; the test exercised nothing")
	}
	for _, p := range ps {
		refs := ob.marks[p.ID]
		if len(refs) != 1 {
			t.Fatalf("MarkDispatched(%s) called %d times, want exactly 1", p.ID, len(refs))
		}
		st, err := client.Status(context.Background(), p.ID)
		if err != nil || st.PartnerRef != refs[0] {
			t.Fatalf("bank Status(%s) = %+v, %v; want ref %q", p.ID, st, err, refs[0])
		}
	}
	if got := bank.Stats().Accepted; got != int64(len(ps)) {
		t.Errorf("bank accepted %d payouts, want %d (once each)", got, len(ps))
	}
}

func TestDispatcherRejectsOnlyDefinitiveRefusals(t *testing.T) {
	const ch = "rej"
	_, srv := startBank(t, ch, partnersim.Faults{})
	router, err := NewRouter(ch, NewClient(ch, srv.URL, ClientOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	ps := payoutsOn(ch, 2)
	ps[0].Destination = "REJECT-closed-account"
	ob := newFakeOutbox(ps...)
	runDispatcher(t, NewDispatcher(ob, router, DispatcherConfig{PollInterval: 5 * time.Millisecond, Logger: quietLogger}))
	testenv.WaitFor(t, 10*time.Second, "outbox to drain", func() bool { return ob.pending() == 0 })
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if got := ob.rejects[ps[0].ID]; !slices.Equal(got, []string{"invalid destination"}) {
		t.Errorf("RejectDispatch reasons for the rejected payout = %v, want [invalid destination]", got)
	}
	if len(ob.marks[ps[0].ID]) != 0 || len(ob.marks[ps[1].ID]) != 1 || len(ob.rejects[ps[1].ID]) != 0 {
		t.Errorf("marks = %v, rejects = %v; want only the good payout marked", ob.marks, ob.rejects)
	}
}

func TestDispatcherRetriesAmbiguousWithGrowingDelays(t *testing.T) {
	const ch = "amb"
	fs := &flakyServer{code: http.StatusServiceUnavailable}
	fs.failing.Store(true)
	srv := httptest.NewServer(fs)
	defer srv.Close()
	router, err := NewRouter(ch, NewClient(ch, srv.URL, ClientOptions{BreakerFailures: 1000}))
	if err != nil {
		t.Fatal(err)
	}
	p := payoutsOn(ch, 1)[0]
	ob := newFakeOutbox(p)
	const base, capDelay = 20 * time.Millisecond, 160 * time.Millisecond
	// A stopped clock in the past makes every retry due at once in the
	// fake and every delay exact: notBefore - t0. Rand 0 puts each delay
	// at its ceiling.
	t0 := time.Now().Add(-time.Hour)
	d := NewDispatcher(ob, router, DispatcherConfig{
		PollInterval: 2 * time.Millisecond, BackoffBase: base, BackoffMax: capDelay, AttemptsMax: 100,
		Rand: func() float64 { return 0 }, Now: func() time.Time { return t0 }, Logger: quietLogger,
	})
	runDispatcher(t, d)
	testenv.WaitFor(t, 10*time.Second, "6 retries", func() bool { return len(ob.retriesOf(p.ID)) >= 6 })
	for i, rc := range ob.retriesOf(p.ID)[:6] {
		if got, want := rc.notBefore.Sub(t0), min(base<<i, capDelay); got != want {
			t.Errorf("retry %d delay = %s, want %s", i, got, want)
		}
		if rc.attemptsBefore != i || !strings.Contains(rc.lastError, "503") {
			t.Errorf("retry %d = %+v, want attempts %d and an error naming HTTP 503", i, rc, i)
		}
	}
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if len(ob.rejects) != 0 || len(ob.marks) != 0 {
		t.Errorf("rejects = %v, marks = %v; want none for an ambiguous partner", ob.rejects, ob.marks)
	}
}

func TestDispatcherParksButNeverFails(t *testing.T) {
	const ch = "park"
	fs := &flakyServer{}
	fs.failing.Store(true)
	srv := httptest.NewServer(fs)
	defer srv.Close()
	// A breaker that opens quickly: its fast errors must not fail payouts
	// either.
	router, err := NewRouter(ch, NewClient(ch, srv.URL, ClientOptions{BreakerFailures: 2, BreakerDelay: 10 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	p := payoutsOn(ch, 1)[0]
	ob := newFakeOutbox(p)
	const backoffMax = 40 * time.Millisecond
	t0 := time.Now().Add(-time.Hour)
	d := NewDispatcher(ob, router, DispatcherConfig{
		PollInterval: 2 * time.Millisecond, BackoffBase: time.Millisecond, BackoffMax: backoffMax, AttemptsMax: 3,
		Rand: func() float64 { return 1 }, Now: func() time.Time { return t0 }, Logger: quietLogger,
	})
	runDispatcher(t, d)
	testenv.WaitFor(t, 10*time.Second, "6 retries", func() bool { return len(ob.retriesOf(p.ID)) >= 6 })
	for _, rc := range ob.retriesOf(p.ID) {
		// With Rand 1, parked delays sit at the bottom of [max/2, max].
		if delay := rc.notBefore.Sub(t0); rc.attemptsBefore >= 2 && delay != backoffMax/2 {
			t.Errorf("parked retry (attempts %d) delay = %s, want %s", rc.attemptsBefore, delay, backoffMax/2)
		}
	}
	if got := testutil.ToFloat64(dispatchParkedTotal.WithLabelValues(ch)); got < 4 {
		t.Errorf("parked metric = %v, want >= 4", got)
	}
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if len(ob.rejects) != 0 {
		t.Errorf("RejectDispatch called %v, want never", ob.rejects)
	}
}

func TestDispatcherStopsAndWaitsForInFlightCalls(t *testing.T) {
	const ch = "stop"
	var arrived atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	router, err := NewRouter(ch, NewClient(ch, srv.URL, ClientOptions{Timeout: 300 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	p := payoutsOn(ch, 1)[0]
	ob := newFakeOutbox(p)
	stop := runDispatcher(t, NewDispatcher(ob, router, DispatcherConfig{PollInterval: 5 * time.Millisecond, Logger: quietLogger}))
	testenv.WaitFor(t, 5*time.Second, "the call to reach the partner", func() bool { return arrived.Load() == 1 })
	stop()
	// Run has returned: the in-flight call must have finished and its
	// ambiguous outcome been recorded.
	if got := ob.retriesOf(p.ID); len(got) != 1 || !strings.Contains(got[0].lastError, "outcome unknown") {
		t.Fatalf("RetryDispatch calls after Run returned = %+v, want 1 recording the timeout", got)
	}
	if got := arrived.Load(); got != 1 {
		t.Errorf("partner calls = %d, want 1", got)
	}
}

func TestDispatcherSurvivesOutboxOutage(t *testing.T) {
	const ch = "outage"
	_, srv := startBank(t, ch, partnersim.Faults{})
	router, err := NewRouter(ch, NewClient(ch, srv.URL, ClientOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	p := payoutsOn(ch, 1)[0]
	ob := newFakeOutbox(p)
	ob.claimErr = outlast.Unavailable(errors.New("connection refused"), time.Second, "database unavailable")
	runDispatcher(t, NewDispatcher(ob, router, DispatcherConfig{PollInterval: time.Millisecond, BackoffBase: time.Millisecond, BackoffMax: 10 * time.Millisecond, Logger: quietLogger}))
	testenv.WaitFor(t, 5*time.Second, "3 failed claims", func() bool {
		ob.mu.Lock()
		defer ob.mu.Unlock()
		return ob.claims >= 3
	})
	ob.mu.Lock()
	ob.claimErr = nil
	ob.mu.Unlock()
	testenv.WaitFor(t, 5*time.Second, "payout dispatched after the outage", func() bool { return ob.pending() == 0 })
}

func TestFullJitterBackoffStaysWithinCap(t *testing.T) {
	const base, maxDelay, attemptsMax = 200 * time.Millisecond, 30 * time.Second, 100
	rng := rand.New(rand.NewPCG(1, 2))
	d := NewDispatcher(nil, nil, DispatcherConfig{BackoffBase: base, BackoffMax: maxDelay, AttemptsMax: attemptsMax, Rand: rng.Float64})
	cause := errors.New("timeout")
	sawLow, sawHigh := false, false
	for attempts := range attemptsMax - 1 {
		ceiling := min(base<<min(attempts, 20), maxDelay)
		for range 100 {
			got, parked := d.retryDelay(attempts, cause)
			if parked || got < 0 || got > ceiling {
				t.Fatalf("retryDelay(%d) = %s, %v; want within [0, %s], not parked", attempts, got, parked, ceiling)
			}
			sawLow = sawLow || got < ceiling/10
			sawHigh = sawHigh || got > ceiling*9/10
		}
	}
	if !sawLow || !sawHigh {
		t.Errorf("retry delays never near 0 (%v) or near the cap (%v): not full jitter", sawLow, sawHigh)
	}
	sawLow, sawHigh = false, false
	for range 1000 {
		got, parked := d.retryDelay(attemptsMax-1, cause)
		if !parked || got < maxDelay/2 || got > maxDelay {
			t.Fatalf("retryDelay(%d) = %s, %v; want parked within [%s, %s]", attemptsMax-1, got, parked, maxDelay/2, maxDelay)
		}
		sawLow = sawLow || got < maxDelay*6/10
		sawHigh = sawHigh || got > maxDelay*9/10
	}
	if !sawLow || !sawHigh {
		t.Errorf("parked delays never near BackoffMax/2 (%v) or near BackoffMax (%v): not spread over the window", sawLow, sawHigh)
	}
	for _, r := range []float64{-1, 0, 1, 2} {
		d := NewDispatcher(nil, nil, DispatcherConfig{BackoffBase: time.Second, BackoffMax: 8 * time.Second, AttemptsMax: 2000, Rand: func() float64 { return r }})
		if got, _ := d.retryDelay(1000, cause); got < 0 || got > 8*time.Second {
			t.Errorf("retryDelay with Rand %v = %s, want within [0, 8s]", r, got)
		}
	}
}
