package channel

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/testenv"
)

// flakyServer answers 500 while failing is set and 202 otherwise,
// counting every request that reached it.
type flakyServer struct {
	hits    atomic.Int64
	failing atomic.Bool
	code    int // the failing status; 500 if 0
}

func (s *flakyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	if s.failing.Load() {
		code := s.code
		if code == 0 {
			code = http.StatusInternalServerError
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"error":"nope"}`))
		return
	}
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte(`{"partner_ref":"ref-1","status":"accepted"}`))
}

func TestBreakerOpensAndSendsNothingWhileOpen(t *testing.T) {
	fs := &flakyServer{}
	fs.failing.Store(true)
	srv := httptest.NewServer(fs)
	defer srv.Close()
	const ch = "brk-open"
	r, err := NewRouter(ch, NewClient(ch, srv.URL, ClientOptions{BreakerFailures: 3, BreakerDelay: 200 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3 {
		if _, err := r.Submit(ctx, ch, testPayout("p1")); !errors.Is(err, ErrAmbiguous) || errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("Submit %d = %v, want an ambiguous partner error", i, err)
		}
	}
	if st, _ := r.BreakerState(ch); st != "open" {
		t.Fatalf("BreakerState = %q after 3 failures, want open", st)
	}
	if got := testutil.ToFloat64(breakerState.WithLabelValues(ch)); got != breakerOpen {
		t.Errorf("breaker state gauge = %v, want %v", got, breakerOpen)
	}
	for range 10 {
		start := time.Now()
		_, err := r.Submit(ctx, ch, testPayout("p1"))
		if !errors.Is(err, ErrBreakerOpen) || !errors.Is(err, ErrAmbiguous) || errors.Is(err, ErrRejected) {
			t.Fatalf("Submit while open = %v, want ErrBreakerOpen matching ErrAmbiguous, never ErrRejected", err)
		}
		if outlast.ErrorCode(err) != outlast.EUNAVAILABLE || outlast.ErrorRetryAfter(err) <= 0 || time.Since(start) > 50*time.Millisecond {
			t.Fatalf("Submit while open = %v after %s, want a fast EUNAVAILABLE with RetryAfter", err, time.Since(start))
		}
	}
	if got := fs.hits.Load(); got != 3 {
		t.Fatalf("server hits = %d, want 3 (none while open)", got)
	}
	fs.failing.Store(false)
	testenv.WaitFor(t, 5*time.Second, "breaker to let a probe through and close", func() bool {
		ref, err := r.Submit(ctx, ch, testPayout("p1"))
		return err == nil && ref == "ref-1"
	})
	if got := fs.hits.Load(); got != 4 {
		t.Errorf("server hits = %d, want 4 (one probe)", got)
	}
	if st, _ := r.BreakerState(ch); st != "closed" {
		t.Errorf("BreakerState after a good probe = %q, want closed", st)
	}
}

func TestRejectionsDoNotOpenBreaker(t *testing.T) {
	fs := &flakyServer{code: http.StatusUnprocessableEntity}
	fs.failing.Store(true)
	srv := httptest.NewServer(fs)
	defer srv.Close()
	const ch = "brk-reject"
	r, err := NewRouter(ch, NewClient(ch, srv.URL, ClientOptions{BreakerFailures: 2}))
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := r.Submit(context.Background(), ch, testPayout("p1")); !errors.Is(err, ErrRejected) {
			t.Fatalf("Submit = %v, want ErrRejected", err)
		}
	}
	if got := fs.hits.Load(); got != 5 {
		t.Errorf("server hits = %d, want 5", got)
	}
}

func TestRouterConfig(t *testing.T) {
	a := NewClient("cfg-a", "http://127.0.0.1:1", ClientOptions{})
	b := NewClient("cfg-b", "http://127.0.0.1:1", ClientOptions{})
	if _, err := NewRouter("cfg-a", a, NewClient("cfg-a", "http://x", ClientOptions{})); err == nil {
		t.Error("NewRouter with a duplicate channel = nil error, want one")
	}
	if _, err := NewRouter("nope", a, b); outlast.ErrorCode(err) != outlast.EVALIDATION {
		t.Errorf("NewRouter with unknown active = %v, want EVALIDATION", err)
	}
	r, err := NewRouter("", a, b)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.Choose(ctx); outlast.ErrorCode(err) != outlast.EUNAVAILABLE {
		t.Errorf("Choose with none active = %v, want EUNAVAILABLE", err)
	}
	if err := r.SetActive("cfg-b"); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Choose(ctx); got != "cfg-b" || err != nil {
		t.Errorf("Choose = %q, %v; want cfg-b", got, err)
	}
	if err := r.SetActive("nope"); err == nil {
		t.Error("SetActive(unknown) = nil, want an error")
	}
	if got, _ := r.Choose(ctx); got != "cfg-b" {
		t.Errorf("Choose after a refused SetActive = %q, want cfg-b", got)
	}
	if c, ok := r.Client("cfg-a"); !ok || c != a {
		t.Errorf("Client(cfg-a) = %v, %v; want a", c, ok)
	}
	if _, ok := r.Client("nope"); ok {
		t.Error("Client(nope) found, want not")
	}
	_, err = r.Submit(ctx, "nope", testPayout("p1"))
	if !errors.Is(err, ErrUnknownChannel) || !errors.Is(err, ErrAmbiguous) || errors.Is(err, ErrRejected) {
		t.Errorf("Submit on unknown channel = %v, want ErrUnknownChannel matching ErrAmbiguous", err)
	}
}

// TestRouterApplyControlConfig: the control plane's document decides the
// channel of new payouts — the active one, then the fallback order —
// skipping disabled channels, channels this router lacks and, while
// another is healthy, channels whose breaker is open; a disabled channel
// is sent nothing; a document without channel settings keeps the
// channel given at start.
func TestRouterApplyControlConfig(t *testing.T) {
	healthy, failing := &flakyServer{}, &flakyServer{}
	failing.failing.Store(true)
	hs, fsrv := httptest.NewServer(healthy), httptest.NewServer(failing)
	defer hs.Close()
	defer fsrv.Close()
	opts := ClientOptions{BreakerFailures: 1, BreakerDelay: time.Hour}
	r, err := NewRouter("rt-a", NewClient("rt-a", hs.URL, opts), NewClient("rt-b", hs.URL, opts), NewClient("rt-c", fsrv.URL, opts))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	choose := func() string {
		t.Helper()
		ch, err := r.Choose(ctx)
		if err != nil {
			t.Fatalf("Choose: %v", err)
		}
		return ch
	}
	on := outlast.ChannelConfig{Enabled: true}
	r.Apply(&outlast.ControlConfig{Maintenance: outlast.Maintenance{On: true}})
	if got := choose(); got != "rt-a" {
		t.Fatalf("no channel settings: Choose = %s, want the start-up channel rt-a", got)
	}
	r.Apply(&outlast.ControlConfig{Channels: map[string]outlast.ChannelConfig{"rt-a": on, "rt-b": on, "rt-c": on},
		ActiveChannel: "rt-b", Fallback: []string{"rt-a"}})
	if got := choose(); got != "rt-b" {
		t.Fatalf("active rt-b: Choose = %s", got)
	}
	r.Apply(&outlast.ControlConfig{Channels: map[string]outlast.ChannelConfig{"rt-a": on, "rt-b": {}, "rt-c": on, "rt-x": on},
		ActiveChannel: "rt-x", Fallback: []string{"rt-b", "rt-c", "rt-a"}})
	if got, want := r.Order(), []string{"rt-c", "rt-a"}; !slices.Equal(got, want) {
		t.Fatalf("Order = %v, want %v (rt-x unknown here, rt-b disabled)", got, want)
	}
	if got := choose(); got != "rt-c" {
		t.Fatalf("Choose = %s, want rt-c", got)
	}
	if _, err := r.Submit(ctx, "rt-b", testPayout("p-dis")); !errors.Is(err, ErrDisabled) || !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("Submit to disabled rt-b = %v, want ErrDisabled matching ErrAmbiguous", err)
	}
	if healthy.hits.Load() != 0 {
		t.Fatalf("the disabled channel's bank was called %d times", healthy.hits.Load())
	}
	if _, err := r.Submit(ctx, "rt-c", testPayout("p-c")); err == nil {
		t.Fatal("the failing bank accepted")
	}
	if got := choose(); got != "rt-a" {
		t.Fatalf("rt-c's breaker open: Choose = %s, want the next in order, rt-a", got)
	}
	r.Apply(&outlast.ControlConfig{Channels: map[string]outlast.ChannelConfig{"rt-a": {}, "rt-b": {}, "rt-c": on}, ActiveChannel: "rt-c"})
	if got := choose(); got != "rt-c" {
		t.Fatalf("every enabled breaker open: Choose = %s, want the active rt-c to wait on", got)
	}
	r.Apply(&outlast.ControlConfig{Channels: map[string]outlast.ChannelConfig{"rt-a": {}, "rt-b": {}, "rt-c": {}}})
	if _, err := r.Choose(ctx); outlast.ErrorCode(err) != outlast.EUNAVAILABLE || outlast.ErrorRetryAfter(err) <= 0 {
		t.Fatalf("every channel disabled: Choose = %v, want EUNAVAILABLE with Retry-After", err)
	}
}

// TestSetActiveKeepsTheDocument: changing the start-up channel does not
// undo the operators' document: a channel they disabled stays disabled.
func TestSetActiveKeepsTheDocument(t *testing.T) {
	srv := httptest.NewServer(&flakyServer{})
	defer srv.Close()
	r, err := NewRouter("sa-a", NewClient("sa-a", srv.URL, ClientOptions{}), NewClient("sa-b", srv.URL, ClientOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	r.Apply(&outlast.ControlConfig{Channels: map[string]outlast.ChannelConfig{"sa-a": {}, "sa-b": {Enabled: true}}})
	if err := r.SetActive("sa-a"); err != nil {
		t.Fatal(err)
	}
	if !r.Disabled("sa-a") || len(r.Order()) != 0 {
		t.Fatalf("after SetActive: disabled %v, order %v; want sa-a still disabled and nothing to choose", r.Disabled("sa-a"), r.Order())
	}
	if err := r.SetActive("sa-b"); err != nil {
		t.Fatal(err)
	}
	if got := r.Order(); !slices.Equal(got, []string{"sa-b"}) {
		t.Fatalf("Order = %v, want the new start-up channel sa-b", got)
	}
}

// TestChooseExcept: a payout refused by some channels goes where a new
// payout would among the rest — the fallback order, skipping disabled
// channels and channels outside the order, preferring a healthy one —
// and nowhere once none is left.
func TestChooseExcept(t *testing.T) {
	failing := &flakyServer{}
	failing.failing.Store(true)
	srv := httptest.NewServer(failing)
	defer srv.Close()
	var clients []*Client
	for _, name := range []string{"ex-a", "ex-b", "ex-c", "ex-d", "ex-out"} {
		clients = append(clients, NewClient(name, srv.URL, ClientOptions{BreakerFailures: 1, BreakerDelay: time.Hour}))
	}
	r, err := NewRouter("ex-a", clients...)
	if err != nil {
		t.Fatal(err)
	}
	on, off := outlast.ChannelConfig{Enabled: true}, outlast.ChannelConfig{}
	r.Apply(&outlast.ControlConfig{ActiveChannel: "ex-a", Fallback: []string{"ex-b", "ex-c", "ex-d"},
		Channels: map[string]outlast.ChannelConfig{"ex-a": on, "ex-b": on, "ex-c": off, "ex-d": on, "ex-out": on}})
	for _, tc := range []struct {
		refused []string
		want    string
	}{
		{nil, "ex-a"},
		{[]string{"ex-a"}, "ex-b"},
		{[]string{"ex-b", "ex-a"}, "ex-d"}, // ex-c is disabled
		{[]string{"ex-a", "ex-b", "ex-d"}, ""},
	} {
		got, ok := r.ChooseExcept(tc.refused)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("ChooseExcept(%q) = %q, %v; want %q", tc.refused, got, ok, tc.want)
		}
	}
	// An open breaker on ex-b sends a payout ex-a refused on to ex-d.
	if _, err := r.Submit(context.Background(), "ex-b", testPayout("p1")); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("Submit to a failing channel = %v, want ambiguous", err)
	}
	if got, ok := r.ChooseExcept([]string{"ex-a"}); got != "ex-d" || !ok {
		t.Errorf("ChooseExcept(ex-a) with ex-b's breaker open = %q, %v; want ex-d", got, ok)
	}
}
