package partnersim

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/testenv"
)

var testSecret = []byte("test-secret")

// receiver is the service's webhook endpoint as the tests see it: it checks
// every signature and answers 500 to the first failFirst calls.
type receiver struct {
	mu        sync.Mutex
	failFirst int
	calls     int
	badSig    int
	events    []event
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err := outlast.VerifySignature(testSecret, r.Header.Get(outlast.HeaderTimestamp), r.Header.Get(outlast.HeaderSignature), body, time.Now()); err != nil {
		rc.badSig++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	rc.calls++
	if rc.calls <= rc.failFirst {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	var ev event
	if err := json.Unmarshal(body, &ev); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rc.events = append(rc.events, ev)
	w.WriteHeader(http.StatusOK)
}

func (rc *receiver) snapshot() []event {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.events)
}

// finals returns, per payout id, the final events received.
func (rc *receiver) finals() map[string][]event {
	m := map[string][]event{}
	for _, ev := range rc.snapshot() {
		if ev.Status == bankSucceeded || ev.Status == bankFailed {
			m[ev.PayoutID] = append(m[ev.PayoutID], ev)
		}
	}
	return m
}

type harness struct {
	bank *Bank
	srv  *httptest.Server
	rc   *receiver
	stop func()
}

// start runs a bank with a webhook receiver; cfg's webhook fields are
// filled in.
func start(t *testing.T, cfg Config, rc *receiver) *harness {
	t.Helper()
	if rc == nil {
		rc = &receiver{}
	}
	hook := httptest.NewServer(rc)
	t.Cleanup(hook.Close)
	cfg.WebhookURL = hook.URL
	cfg.Secret = testSecret
	if cfg.PayDelay == 0 {
		cfg.PayDelay = 20 * time.Millisecond
	}
	if cfg.Seed == 0 {
		cfg.Seed = 42
	}
	cfg.WebhookBackoffBase = 5 * time.Millisecond
	cfg.WebhookBackoffMax = 50 * time.Millisecond
	cfg.Logger = slog.New(slog.DiscardHandler)
	bank := New(cfg)
	srv := httptest.NewServer(bank)
	t.Cleanup(srv.Close)
	h := &harness{bank: bank, srv: srv, rc: rc}
	h.stop = testenv.Start(t, "Bank.Run", bank.Run)
	return h
}

func (h *harness) submit(t *testing.T, req submitRequest) (int, map[string]string) {
	t.Helper()
	return call(t, http.MethodPost, h.srv.URL+"/payouts", req)
}

func call(t *testing.T, method, url string, body any) (int, map[string]string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	out := map[string]string{}
	for k, v := range m {
		out[k] = fmt.Sprint(v)
	}
	return resp.StatusCode, out
}

func req(id string) submitRequest {
	return submitRequest{PayoutID: id, Amount: 1500, Currency: "EUR", Destination: "DE89370400440532013000"}
}

func waitSettled(t *testing.T, h *harness) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "settlement and webhook queue to drain", func() bool {
		s := h.bank.Stats()
		return s.Unsettled == 0 && s.WebhooksPending == 0
	})
}

func TestSubmitIsIdempotent(t *testing.T) {
	h := start(t, Config{Name: "tcb"}, nil)
	code, first := h.submit(t, req("p1"))
	if code != http.StatusAccepted || first["partner_ref"] == "" || first["status"] != "accepted" {
		t.Fatalf("POST /payouts = %d %v, want 202 with a ref", code, first)
	}
	code, again := h.submit(t, req("p1"))
	if code != http.StatusAccepted || again["partner_ref"] != first["partner_ref"] {
		t.Fatalf("repeat POST /payouts = %d %v, want 202 with ref %q", code, again, first["partner_ref"])
	}
	if got := h.bank.Stats().Accepted; got != 1 {
		t.Errorf("Stats().Accepted = %d, want 1", got)
	}
	waitSettled(t, h)
	if got := h.bank.Stats().Succeeded; got != 1 {
		t.Errorf("Stats().Succeeded = %d, want 1 (paid once)", got)
	}
	if code, _ := h.submit(t, req("p1")); code != http.StatusAccepted {
		t.Errorf("repeat after settlement = %d, want 202", code)
	}
}

func TestSubmitMismatchedRepeatConflicts(t *testing.T) {
	h := start(t, Config{}, nil)
	h.submit(t, req("p1"))
	r := req("p1")
	r.Amount++
	if code, body := h.submit(t, r); code != http.StatusConflict || body["error"] == "" {
		t.Errorf("different amount = %d %v, want 409 with an error", code, body)
	}
	r = req("p1")
	r.Destination = "other"
	if code, _ := h.submit(t, r); code != http.StatusConflict {
		t.Errorf("different destination = %d, want 409", code)
	}
}

func TestRejectionsAreDefinitiveAndSticky(t *testing.T) {
	h := start(t, Config{}, nil)
	r := req("p1")
	r.Destination = "REJECT-me"
	if code, body := h.submit(t, r); code != http.StatusUnprocessableEntity || body["error"] != "invalid destination" {
		t.Errorf("REJECT destination = %d %v, want 422 invalid destination", code, body)
	}
	if code, _ := h.submit(t, r); code != http.StatusUnprocessableEntity {
		t.Errorf("repeat of rejected = %d, want 422", code)
	}
	if code, _ := call(t, http.MethodGet, h.srv.URL+"/payouts/p1", nil); code != http.StatusNotFound {
		t.Errorf("GET rejected payout = %d, want 404", code)
	}
	h.bank.SetFaults(Faults{RejectRate: 1})
	if code, _ := h.submit(t, req("p2")); code != http.StatusUnprocessableEntity {
		t.Errorf("RejectRate 1 = %d, want 422", code)
	}
	h.bank.SetFaults(Faults{})
	if code, _ := h.submit(t, req("p2")); code != http.StatusUnprocessableEntity {
		t.Errorf("rejected id after RejectRate cleared = %d, want 422 (stays rejected)", code)
	}
	if code, _ := h.submit(t, submitRequest{PayoutID: "p3", Amount: -1, Currency: "EUR", Destination: "x"}); code != http.StatusUnprocessableEntity {
		t.Errorf("negative amount = %d, want 422", code)
	}
	if s := h.bank.Stats(); s.Accepted != 0 || s.Rejected != 3 {
		t.Errorf("Stats() accepted %d rejected %d, want 0 and 3", s.Accepted, s.Rejected)
	}
}

func TestSettlementSendsSignedWebhooks(t *testing.T) {
	h := start(t, Config{Name: "tcb"}, nil)
	const n = 20
	refs := map[string]string{}
	for i := range n {
		r := req(fmt.Sprintf("p%02d", i))
		if i == 0 {
			r.Destination = "FAIL-account"
		}
		code, body := h.submit(t, r)
		if code != http.StatusAccepted {
			t.Fatalf("POST %s = %d %v", r.PayoutID, code, body)
		}
		refs[r.PayoutID] = body["partner_ref"]
	}
	waitSettled(t, h)
	if h.rc.badSig != 0 {
		t.Fatalf("receiver saw %d bad signatures", h.rc.badSig)
	}
	seen := map[string][]string{}
	for _, ev := range h.rc.snapshot() {
		if ev.PartnerRef != refs[ev.PayoutID] || ev.EventID == "" || ev.OccurredAt.IsZero() {
			t.Errorf("event %+v: want ref %q, an event id and occurred_at", ev, refs[ev.PayoutID])
		}
		seen[ev.PayoutID] = append(seen[ev.PayoutID], ev.Status)
	}
	for id := range refs {
		want := []string{"dispatched", "succeeded"}
		if id == "p00" {
			want = []string{"dispatched", "failed"}
		}
		if got := seen[id]; !slices.Equal(got, want) {
			t.Errorf("events for %s = %v, want %v", id, got, want)
		}
	}
	code, st := call(t, http.MethodGet, h.srv.URL+"/payouts/p00", nil)
	if code != http.StatusOK || st["status"] != "failed" || st["reason"] == "" || st["partner_ref"] != refs["p00"] {
		t.Errorf("GET /payouts/p00 = %d %v, want failed with a reason", code, st)
	}
	if code, _ := call(t, http.MethodGet, h.srv.URL+"/payouts/nope", nil); code != http.StatusNotFound {
		t.Errorf("GET unknown payout = %d, want 404", code)
	}
	checkRecords(t, h, refs)
}

func checkRecords(t *testing.T, h *harness, refs map[string]string) {
	t.Helper()
	resp, err := http.Get(h.srv.URL + "/records")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var recs []outlast.PartnerRecord
	if err := json.NewDecoder(resp.Body).Decode(&recs); err != nil {
		t.Fatalf("decode /records: %v", err)
	}
	if len(recs) != len(refs) {
		t.Fatalf("/records has %d records, want %d", len(recs), len(refs))
	}
	for _, r := range recs {
		want := outlast.StatusSucceeded
		if r.PayoutID == "p00" {
			want = outlast.StatusFailed
		}
		if r.PartnerRef != refs[r.PayoutID] || r.Status != want || r.Amount != 1500 || r.Currency != "EUR" {
			t.Errorf("record %+v, want ref %q status %s amount 1500 EUR", r, refs[r.PayoutID], want)
		}
	}
}

func TestWebhooksRetryUntilAcknowledged(t *testing.T) {
	rc := &receiver{failFirst: 7}
	h := start(t, Config{}, rc)
	h.submit(t, req("p1"))
	waitSettled(t, h)
	if got := len(rc.finals()["p1"]); got != 1 {
		t.Errorf("final events for p1 = %d, want 1", got)
	}
	if s := h.bank.Stats(); s.WebhooksRetried < 7 || s.WebhooksSent != 2 {
		t.Errorf("Stats() retried %d sent %d, want >= 7 and 2", s.WebhooksRetried, s.WebhooksSent)
	}
}

func TestWebhookBackoffKeepsAFloor(t *testing.T) {
	const base, maxDelay = 100 * time.Millisecond, time.Second
	b := New(Config{Seed: 7, WebhookBackoffBase: base, WebhookBackoffMax: maxDelay, Logger: slog.New(slog.DiscardHandler)})
	b.mu.Lock()
	defer b.mu.Unlock()
	for attempts := 1; attempts <= 8; attempts++ {
		ceiling := min(base<<(attempts-1), maxDelay)
		sawLow, sawHigh := false, false
		for range 200 {
			got := b.webhookBackoffLocked(attempts)
			if got < ceiling/2 || got > ceiling {
				t.Fatalf("webhookBackoffLocked(%d) = %s, want within [%s, %s]", attempts, got, ceiling/2, ceiling)
			}
			sawLow = sawLow || got < ceiling*6/10
			sawHigh = sawHigh || got > ceiling*9/10
		}
		if !sawLow || !sawHigh {
			t.Errorf("webhookBackoffLocked(%d) never near %s (%v) or near %s (%v): not spread over the window", attempts, ceiling/2, sawLow, ceiling, sawHigh)
		}
	}
}

func TestDuplicateWebhooksRepeatEventID(t *testing.T) {
	h := start(t, Config{Faults: Faults{DuplicateRate: 1}}, nil)
	for i := range 5 {
		h.submit(t, req(fmt.Sprintf("p%d", i)))
	}
	waitSettled(t, h)
	count := map[string]int{}
	for _, ev := range h.rc.snapshot() {
		count[ev.EventID]++
	}
	if len(count) != 10 {
		t.Errorf("distinct event ids = %d, want 10 (dispatched + final per payout)", len(count))
	}
	for id, n := range count {
		if n != 2 {
			t.Errorf("event %s delivered %d times, want 2", id, n)
		}
	}
	// Acknowledged lists each delivery the receiver answered, duplicates
	// included, with what it reported.
	acked := map[string]int{}
	for _, a := range h.bank.Acknowledged() {
		acked[a.EventID]++
		if count[a.EventID] == 0 || (a.Status != outlast.StatusDispatched && a.Status != outlast.StatusSucceeded) {
			t.Errorf("acknowledged %+v, which was not delivered as such", a)
		}
	}
	if len(acked) != 10 || slices.ContainsFunc(slices.Collect(maps.Values(acked)), func(n int) bool { return n != 2 }) {
		t.Errorf("acknowledged %v, want the 10 events twice each", acked)
	}
}

func TestReorderSendsFinalBeforeDispatched(t *testing.T) {
	h := start(t, Config{Faults: Faults{ReorderRate: 1}}, nil)
	for i := range 5 {
		h.submit(t, req(fmt.Sprintf("p%d", i)))
	}
	waitSettled(t, h)
	order := map[string][]string{}
	for _, ev := range h.rc.snapshot() {
		order[ev.PayoutID] = append(order[ev.PayoutID], ev.Status)
	}
	for i := range 5 {
		id := fmt.Sprintf("p%d", i)
		if got := order[id]; !slices.Equal(got, []string{"succeeded", "dispatched"}) {
			t.Errorf("events for %s = %v, want [succeeded dispatched]", id, got)
		}
	}
}

func TestDroppedPayoutsListsExactlyTheMissingFinals(t *testing.T) {
	h := start(t, Config{Faults: Faults{DropRate: 0.5}}, nil)
	const n = 40
	for i := range n {
		h.submit(t, req(fmt.Sprintf("p%02d", i)))
	}
	waitSettled(t, h)
	finals := h.rc.finals()
	var missing []string
	for i := range n {
		if id := fmt.Sprintf("p%02d", i); len(finals[id]) == 0 {
			missing = append(missing, id)
		}
	}
	dropped := h.bank.DroppedPayouts()
	slices.Sort(dropped)
	if !slices.Equal(dropped, missing) {
		t.Errorf("DroppedPayouts() = %v, want %v", dropped, missing)
	}
	if len(dropped) == 0 || len(dropped) == n {
		t.Errorf("dropped %d of %d at rate 0.5; want some but not all", len(dropped), n)
	}
	if got := h.bank.Stats().WebhooksDropped; got != int64(len(dropped)) {
		t.Errorf("Stats().WebhooksDropped = %d, want %d", got, len(dropped))
	}
}

func TestFaultsAtRuntime(t *testing.T) {
	h := start(t, Config{}, nil)
	code, _ := call(t, http.MethodPut, h.srv.URL+"/faults", map[string]any{"down": true, "latency": "5ms"})
	if code != http.StatusOK {
		t.Fatalf("PUT /faults = %d, want 200", code)
	}
	if f := h.bank.Faults(); !f.Down || f.Latency != 5*time.Millisecond {
		t.Errorf("Faults() = %+v, want down with 5ms latency", f)
	}
	_, got := call(t, http.MethodGet, h.srv.URL+"/faults", nil)
	if got["down"] != "true" || got["latency"] != "5ms" {
		t.Errorf("GET /faults = %v, want down true latency 5ms", got)
	}
	if code, _ := h.submit(t, req("p1")); code != http.StatusServiceUnavailable {
		t.Errorf("POST while down = %d, want 503", code)
	}
	if code, _ := call(t, http.MethodPut, h.srv.URL+"/faults", map[string]any{"error_rate": 2}); code != http.StatusUnprocessableEntity {
		t.Errorf("PUT error_rate 2 = %d, want 422", code)
	}
	call(t, http.MethodPut, h.srv.URL+"/faults", map[string]any{"error_rate": 1})
	if code, _ := h.submit(t, req("p1")); code != http.StatusServiceUnavailable {
		t.Errorf("POST at error_rate 1 = %d, want 503", code)
	}
	if code, _ := call(t, http.MethodGet, h.srv.URL+"/payouts/p1", nil); code != http.StatusNotFound {
		t.Errorf("GET after 503 = %d, want 404 (not accepted)", code)
	}
	call(t, http.MethodPut, h.srv.URL+"/faults", map[string]any{"ambiguous_rate": 1})
	if code, _ := h.submit(t, req("p1")); code != http.StatusGatewayTimeout {
		t.Errorf("POST at ambiguous_rate 1 = %d, want 504", code)
	}
	if code, st := call(t, http.MethodGet, h.srv.URL+"/payouts/p1", nil); code != http.StatusOK || st["status"] != "accepted" {
		t.Errorf("GET after ambiguous = %d %v, want 200 accepted", code, st)
	}
}

func TestFaultsJSONRoundTrip(t *testing.T) {
	in := Faults{ErrorRate: 0.1, AmbiguousRate: 0.2, Latency: 1500 * time.Millisecond, Down: true, DropRate: 0.3, DuplicateRate: 0.4, ReorderRate: 0.5, RejectRate: 0.6, RefuseRepeatRate: 0.7}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Faults
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Errorf("round trip = %+v, want %+v", out, in)
	}
	if err := json.Unmarshal([]byte(`{"latency":1000}`), &out); err != nil || out.Latency != time.Microsecond {
		t.Errorf("latency as nanoseconds = %v, %v; want 1µs", out.Latency, err)
	}
	var fromFlags Faults
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fromFlags.RegisterFlags(fs, "fault-")
	if err := fs.Parse([]string{"-fault-down", "-fault-latency=20ms", "-fault-drop-rate=0.25"}); err != nil {
		t.Fatal(err)
	}
	if want := (Faults{Down: true, Latency: 20 * time.Millisecond, DropRate: 0.25}); fromFlags != want {
		t.Errorf("faults from flags = %+v, want %+v", fromFlags, want)
	}
	if err := (Faults{DropRate: -0.1}).Validate(); err == nil {
		t.Error("Validate(drop_rate -0.1) = nil, want an error")
	}
}

func TestRunStopsCleanly(t *testing.T) {
	release := make(chan struct{})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // hang until the bank gives up or the test ends
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer hook.Close()
	defer close(release)
	bank := New(Config{WebhookURL: hook.URL, Secret: testSecret, PayDelay: 5 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(bank)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bank.Run(ctx) }()
	call(t, http.MethodPost, srv.URL+"/payouts", req("p1"))
	testenv.WaitFor(t, 5*time.Second, "payout to settle", func() bool { return bank.Stats().Succeeded == 1 })
	// Settlement happened, so Run is active and a second one must refuse
	// at once rather than block.
	if err := bank.Run(context.Background()); err == nil {
		t.Error("second concurrent Run = nil, want an error")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of cancel")
	}
	if got := bank.Stats().WebhooksPending; got != 2 {
		t.Errorf("Stats().WebhooksPending after stop = %d, want 2 (kept for the next Run)", got)
	}
}

func TestRefuseRepeatRateRefusesRetriesOfAnAcceptedPayout(t *testing.T) {
	h := start(t, Config{PayDelay: time.Hour}, nil) // it stays accepted while the test looks
	h.bank.SetFaults(Faults{AmbiguousRate: 1, RefuseRepeatRate: 1})
	if code, _ := h.submit(t, req("p1")); code != http.StatusGatewayTimeout {
		t.Fatalf("first POST = %d, want 504 (accepted, answer lost)", code)
	}
	var codes []int
	for range 6 {
		code, body := h.submit(t, req("p1"))
		if body["error"] == "" {
			t.Errorf("repeat answered %d without the bank's JSON error: %v", code, body)
		}
		codes = append(codes, code)
	}
	want := []int{400, 407, 413, 421, 422, 431}
	if !slices.Equal(codes, want) {
		t.Errorf("repeats answered %v, want %v", codes, want)
	}
	if code, st := call(t, http.MethodGet, h.srv.URL+"/payouts/p1", nil); code != http.StatusOK || st["status"] != "accepted" {
		t.Errorf("GET after refused repeats = %d %v, want 200 accepted: the bank still holds the payout", code, st)
	}
	if s := h.bank.Stats(); s.Accepted != 1 || s.RefusedRepeats != 6 {
		t.Errorf("stats = %+v, want 1 accepted and 6 refused repeats", s)
	}
}
