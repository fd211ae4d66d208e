package channel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/testenv"
)

// Modes of a modeServer.
const (
	modeAccept = iota
	modeFail   // 503, ambiguous
	modeRefuse // 422 in the partner's JSON, definitive
)

// modeServer answers every submit as its mode says.
type modeServer struct{ mode atomic.Int32 }

func (s *modeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch s.mode.Load() {
	case modeFail:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"down"}`))
	case modeRefuse:
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = w.Write([]byte(`{"error":"destination closed"}`))
	default:
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"partner_ref":"ref-1","status":"accepted"}`))
	}
}

// since returns a function giving how much c grew since this call: the
// metrics are global, and tests run more than once (-count).
func since(c prometheus.Collector) func() float64 {
	base := testutil.ToFloat64(c)
	return func() float64 { return testutil.ToFloat64(c) - base }
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

// ejectionRig is a router over channels named prefix-a (active) and
// prefix-b (fallback), each behind a modeServer, on a fake clock and a
// settable random source.
type ejectionRig struct {
	r       *Router
	a, b    string
	srvA    *modeServer
	srvB    *modeServer
	clock   *testenv.Clock
	rand    atomic.Value // float64
	logs    *syncBuffer
	payouts atomic.Int64
}

func newEjectionRig(t *testing.T, prefix string, ej EjectionConfig, opts ClientOptions) *ejectionRig {
	t.Helper()
	g := &ejectionRig{a: prefix + "-a", b: prefix + "-b", srvA: &modeServer{}, srvB: &modeServer{},
		clock: testenv.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), logs: &syncBuffer{}}
	g.rand.Store(0.5)
	sa, sb := httptest.NewServer(g.srvA), httptest.NewServer(g.srvB)
	t.Cleanup(sa.Close)
	t.Cleanup(sb.Close)
	ej.Now = g.clock.Now
	ej.Rand = func() float64 { return g.rand.Load().(float64) }
	ej.Logger = slog.New(slog.NewTextHandler(g.logs, nil))
	r, err := NewRouterWith(RouterConfig{Active: g.a, Ejection: ej}, NewClient(g.a, sa.URL, opts), NewClient(g.b, sb.URL, opts))
	if err != nil {
		t.Fatal(err)
	}
	on := outlast.ChannelConfig{Enabled: true}
	r.Apply(&outlast.ControlConfig{Channels: map[string]outlast.ChannelConfig{g.a: on, g.b: on}, ActiveChannel: g.a, Fallback: []string{g.b}})
	g.r = r
	return g
}

// submitA submits a new payout to channel a and checks the kind of its error.
func (g *ejectionRig) submitA(t *testing.T, want error) {
	t.Helper()
	id := fmt.Sprintf("p-%d", g.payouts.Add(1))
	_, err := g.r.Submit(context.Background(), g.a, testPayout(id))
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		t.Fatalf("Submit(%s) = %v, want %v", g.a, err, want)
	}
}

func (g *ejectionRig) choose(t *testing.T, r float64, want string) {
	t.Helper()
	g.rand.Store(r)
	got, err := g.r.Choose(context.Background())
	if err != nil || got != want {
		t.Fatalf("Choose (rand %v) at +%s = %q, %v; want %q", r, g.clock.Now().Sub(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), got, err, want)
	}
}

func (g *ejectionRig) state(t *testing.T) RouteState {
	t.Helper()
	st, ok := g.r.State(g.a)
	if !ok {
		t.Fatalf("State(%s): unknown", g.a)
	}
	return st
}

// TestEjectionSkipsAFailingChannelAndItReturnsGradually: consecutive
// ambiguous submits eject the active channel, new payouts go to the
// fallback, the ejection time doubles each time up to Max and is
// forgotten after Decay, and after an ejection the share of new payouts
// offered to the channel ramps linearly from ReturnShareStart to all.
func TestEjectionSkipsAFailingChannelAndItReturnsGradually(t *testing.T) {
	g := newEjectionRig(t, "ej-ramp", EjectionConfig{Consecutive: 3, Base: 10 * time.Second, Max: 40 * time.Second,
		Decay: time.Minute, ReturnWindow: 10 * time.Second, ReturnShareStart: 0.1}, ClientOptions{BreakerFailures: 100})
	ejections := since(channelEjectionsTotal.WithLabelValues(g.a))
	changes := map[string]func() float64{}
	for _, state := range []string{routeEjected, routeReturning, routeOK} {
		changes[state] = since(channelRouteChangesTotal.WithLabelValues(g.a, state))
	}
	g.choose(t, 0.99, g.a)
	g.srvA.mode.Store(modeFail)
	for range 2 {
		g.submitA(t, ErrAmbiguous)
	}
	g.choose(t, 0.99, g.a) // two failures: not yet
	g.submitA(t, ErrAmbiguous)
	start := g.clock.Now()
	st := g.state(t)
	if !st.EjectedUntil.Equal(start.Add(10*time.Second)) || st.OK() || st.ReturnShare != 0 || st.Ejections != 1 {
		t.Fatalf("state after 3 failures = %+v, want ejected for 10 s", st)
	}
	if s := st.String(); s != "closed; ejected until 03:04:15 UTC (ejection 1)" {
		t.Errorf("state text = %q", s)
	}
	for _, r := range []float64{0, 0.5, 0.99} {
		g.choose(t, r, g.b)
	}
	// Retries of payouts bound to it still go to it; while ejected they
	// count towards nothing.
	for range 5 {
		g.submitA(t, ErrAmbiguous)
	}
	if got := ejections(); got != 1 {
		t.Errorf("ejections counted = %v, want 1", got)
	}
	if got := testutil.ToFloat64(channelEjected.WithLabelValues(g.a)); got != 1 {
		t.Errorf("ejected gauge = %v, want 1", got)
	}

	// The ejection ends: 10% of new payouts, then more, then all.
	g.srvA.mode.Store(modeAccept)
	g.clock.Advance(10 * time.Second)
	if st := g.state(t); st.ReturnShare != 0.1 || !st.OK() || st.String() != "closed; returning 10%" {
		t.Fatalf("state as the ejection ends = %+v (%s), want returning 10%%", st, st)
	}
	g.choose(t, 0.09, g.a)
	g.choose(t, 0.11, g.b)
	g.clock.Advance(5 * time.Second) // half way: 0.1 + 0.9/2 = 0.55
	g.choose(t, 0.54, g.a)
	g.choose(t, 0.56, g.b)
	if got := testutil.ToFloat64(channelReturnShare.WithLabelValues(g.a)); got != 0.55 {
		t.Errorf("return share gauge = %v, want 0.55", got)
	}
	g.clock.Advance(5 * time.Second)
	g.choose(t, 0.99, g.a)
	if st := g.state(t); st.ReturnShare != 1 || st.String() != "closed" {
		t.Fatalf("state after the return window = %+v (%s), want fully back", st, st)
	}

	// Each change was logged and counted once, however often observed.
	for state, want := range map[string]float64{routeEjected: 1, routeReturning: 1, routeOK: 1} {
		if got := changes[state](); got != want {
			t.Errorf("route changes to %s = %v, want %v", state, got, want)
		}
	}
	for msg, want := range map[string]int{"channel ejected": 1, "return to it gradually": 1, "full share": 1} {
		if got := g.logs.count(msg); got != want {
			t.Errorf("log lines with %q = %d, want %d\n%s", msg, got, want, g.logs.buf.String())
		}
	}

	// Again: the ejection time doubles, up to Max.
	g.srvA.mode.Store(modeFail)
	for _, want := range []time.Duration{20 * time.Second, 40 * time.Second, 40 * time.Second} {
		for range 3 {
			g.submitA(t, ErrAmbiguous)
		}
		if st := g.state(t); !st.EjectedUntil.Equal(g.clock.Now().Add(want)) {
			t.Fatalf("ejection %d: until %s, want %s later", st.Ejections, st.EjectedUntil, want)
		}
		g.clock.Advance(want)
	}
	// A healthy spell of two Decays forgets two ejections: 4 - 2 + 1 = 3,
	// 10 s × 4 = 40 s; three more forget them all, back to Base.
	g.clock.Advance(2 * time.Minute)
	for range 3 {
		g.submitA(t, ErrAmbiguous)
	}
	if st := g.state(t); st.Ejections != 3 || !st.EjectedUntil.Equal(g.clock.Now().Add(40*time.Second)) {
		t.Fatalf("after a healthy spell: %+v, want ejection 3 for 40 s", st)
	}
	g.clock.Advance(40*time.Second + 3*time.Minute)
	for range 3 {
		g.submitA(t, ErrAmbiguous)
	}
	if st := g.state(t); st.Ejections != 1 || !st.EjectedUntil.Equal(g.clock.Now().Add(10*time.Second)) {
		t.Fatalf("after a long healthy spell: %+v, want ejection 1 for 10 s", st)
	}
}

// TestEjectionCountsOnlyConsecutiveAmbiguousSubmits: a refusal or an
// acceptance is the partner answering and resets the count; the caller's
// own cancellation counts for nothing.
func TestEjectionCountsOnlyConsecutiveAmbiguousSubmits(t *testing.T) {
	g := newEjectionRig(t, "ej-count", EjectionConfig{Consecutive: 3, Base: 10 * time.Second}, ClientOptions{BreakerFailures: 100})
	g.srvA.mode.Store(modeFail)
	g.submitA(t, ErrAmbiguous)
	g.submitA(t, ErrAmbiguous)
	g.srvA.mode.Store(modeRefuse)
	g.submitA(t, ErrRejected)
	g.srvA.mode.Store(modeFail)
	g.submitA(t, ErrAmbiguous)
	g.submitA(t, ErrAmbiguous)
	g.srvA.mode.Store(modeAccept)
	g.submitA(t, nil)
	g.srvA.mode.Store(modeFail)
	g.submitA(t, ErrAmbiguous)
	g.submitA(t, ErrAmbiguous)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 5 {
		if _, err := g.r.Submit(ctx, g.a, testPayout("p-cancelled")); !errors.Is(err, ErrAmbiguous) {
			t.Fatalf("Submit with a cancelled context = %v, want ambiguous", err)
		}
	}
	if st := g.state(t); !st.EjectedUntil.IsZero() {
		t.Fatalf("ejected after no more than 2 ambiguous submits in a row: %+v", st)
	}
	g.choose(t, 0.99, g.a)
	g.submitA(t, ErrAmbiguous)
	g.choose(t, 0.99, g.b)
}

// TestEjectionSparesTheLastChannel: a channel is not ejected when no other
// channel of the order could take new payouts (Envoy's max ejection
// percent), and that is logged once.
func TestEjectionSparesTheLastChannel(t *testing.T) {
	g := newEjectionRig(t, "ej-last", EjectionConfig{Consecutive: 2, Base: 10 * time.Second}, ClientOptions{BreakerFailures: 100})
	on := outlast.ChannelConfig{Enabled: true}
	// b disabled: a is all there is.
	g.r.Apply(&outlast.ControlConfig{Channels: map[string]outlast.ChannelConfig{g.a: on, g.b: {}}, ActiveChannel: g.a, Fallback: []string{g.b}})
	spared := since(channelEjectionsSparedTotal.WithLabelValues(g.a))
	g.srvA.mode.Store(modeFail)
	for range 6 {
		g.submitA(t, ErrAmbiguous)
	}
	if st := g.state(t); !st.EjectedUntil.IsZero() || !st.OK() {
		t.Fatalf("the only channel was ejected: %+v", st)
	}
	g.choose(t, 0.5, g.a)
	if got := spared(); got != 1 {
		t.Errorf("spared ejections counted = %v, want 1 (once per failing spell)", got)
	}
	if got := g.logs.count("last one that could take new payouts"); got != 1 {
		t.Errorf("spared log lines = %d, want 1", got)
	}
	// b enabled again: a goes at its next failure. Then b fails too and
	// is spared, since a is ejected.
	g.r.Apply(&outlast.ControlConfig{Channels: map[string]outlast.ChannelConfig{g.a: on, g.b: on}, ActiveChannel: g.a, Fallback: []string{g.b}})
	g.submitA(t, ErrAmbiguous)
	g.choose(t, 0.5, g.b)
	g.srvB.mode.Store(modeFail)
	for range 4 {
		if _, err := g.r.Submit(context.Background(), g.b, testPayout("p-b")); !errors.Is(err, ErrAmbiguous) {
			t.Fatalf("Submit(%s) = %v, want ambiguous", g.b, err)
		}
	}
	if st, _ := g.r.State(g.b); !st.EjectedUntil.IsZero() {
		t.Fatalf("both channels ejected: %+v", st)
	}
	g.choose(t, 0.5, g.b)
	// While every channel left is behind an open breaker or ejected,
	// Choose still answers: the first not ejected.
}

// TestChooseLogsSkipsOnce: a channel skipped because its breaker is open
// or the operators disabled it is logged and counted once per change.
func TestChooseLogsSkipsOnce(t *testing.T) {
	g := newEjectionRig(t, "ej-skip", EjectionConfig{Consecutive: 100}, ClientOptions{BreakerFailures: 2, BreakerDelay: time.Hour})
	chosen := since(channelChosenTotal.WithLabelValues(g.b))
	changes := map[string]func() float64{
		routeBreakerOpen: since(channelRouteChangesTotal.WithLabelValues(g.a, routeBreakerOpen)),
		routeDisabled:    since(channelRouteChangesTotal.WithLabelValues(g.a, routeDisabled)),
	}
	g.srvA.mode.Store(modeFail)
	g.submitA(t, ErrAmbiguous)
	g.submitA(t, ErrAmbiguous)
	for range 5 {
		g.choose(t, 0.5, g.b)
	}
	if st := g.state(t); st.String() != "open" || st.OK() {
		t.Errorf("state with the breaker open = %+v (%s)", st, st)
	}
	on := outlast.ChannelConfig{Enabled: true}
	g.r.Apply(&outlast.ControlConfig{Channels: map[string]outlast.ChannelConfig{g.a: {}, g.b: on}, ActiveChannel: g.a, Fallback: []string{g.b}})
	for range 5 {
		g.choose(t, 0.5, g.b)
	}
	if st := g.state(t); st.String() != "disabled" {
		t.Errorf("state when disabled = %q, want disabled", st)
	}
	for state, want := range map[string]float64{routeBreakerOpen: 1, routeDisabled: 1} {
		if got := changes[state](); got != want {
			t.Errorf("route changes to %s = %v, want %v", state, got, want)
		}
	}
	for msg, want := range map[string]int{"breaker open": 1, "disabled by the operators": 1} {
		if got := g.logs.count(msg); got != want {
			t.Errorf("log lines with %q = %d, want %d", msg, got, want)
		}
	}
	if got := chosen(); got != 10 {
		t.Errorf("payouts chosen for %s = %v, want 10", g.b, got)
	}
}
