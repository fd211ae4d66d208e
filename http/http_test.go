package http

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestNew(t *testing.T) {
	svc := Services{
		Accounts: newFakeStore(), Payouts: newFakeStore(), Inbox: &fakeInbox{},
		ChooseChannel: func(context.Context) (string, error) { return "tcb", nil },
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		svc  func(Services) Services
	}{
		{"no admin token", Config{}, nil},
		{"empty secret", Config{AdminToken: "t", ChannelSecrets: map[string][]byte{"tcb": nil}}, nil},
		{"bad channel name", Config{AdminToken: "t", ChannelSecrets: map[string][]byte{"a/b": []byte("s")}}, nil},
		{"no inbox", Config{AdminToken: "t"}, func(s Services) Services { s.Inbox = nil; return s }},
		{"no accounts", Config{AdminToken: "t"}, func(s Services) Services { s.Accounts = nil; return s }},
		{"no router", Config{AdminToken: "t"}, func(s Services) Services { s.ChooseChannel = nil; return s }},
	} {
		s := svc
		if tc.svc != nil {
			s = tc.svc(svc)
		}
		if _, err := New(tc.cfg, s); err == nil {
			t.Errorf("%s: New succeeded, want an error", tc.name)
		}
	}
	srv, err := New(Config{AdminToken: "t"}, svc)
	if err != nil {
		t.Fatal(err)
	}
	c := srv.cfg
	if c.Addr != "127.0.0.1:8080" || c.BodyBytesMax != 64<<10 || c.ReadTimeout != 5*time.Second ||
		c.ReadHeaderTimeout != 5*time.Second || c.WriteTimeout != 10*time.Second || c.IdleTimeout != 60*time.Second ||
		c.ShutdownTimeout != 15*time.Second || c.LogAppendTimeout != 2500*time.Millisecond || c.Now == nil || c.Logger == nil {
		t.Errorf("defaults = %+v", c)
	}
	if srv.URL() != "" {
		t.Errorf("URL before Open = %q, want empty", srv.URL())
	}
	if err := srv.Close(); err != nil {
		t.Errorf("Close before Open = %v", err)
	}
}

func TestRouting(t *testing.T) {
	h := newHarness(t)
	wantError(t, h.do("GET", "/v2/nothing", "", ""), 404, "not_found")
	wantError(t, h.do("GET", "/", "", ""), 404, "not_found")

	rec := h.do("DELETE", "/v1/payouts", h.alice, "")
	wantError(t, rec, 405, "method_not_allowed")
	if allow := rec.Header().Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
		t.Errorf("Allow = %q, want GET and POST", allow)
	}
	rec = h.do("GET", "/v1/partners/tcb/notifications", "", "")
	wantError(t, rec, 405, "method_not_allowed")
	if allow := rec.Header().Get("Allow"); allow != "POST" {
		t.Errorf("Allow = %q, want POST", allow)
	}

	// The request id is echoed when usable and made up otherwise.
	rec = h.do("GET", "/healthz", "", "", "X-Request-Id", "req-42")
	if got := rec.Header().Get("X-Request-Id"); got != "req-42" {
		t.Errorf("X-Request-Id = %q, want req-42", got)
	}
	rec = h.do("GET", "/healthz", "", "", "X-Request-Id", "bad id\twith tab")
	if got := rec.Header().Get("X-Request-Id"); len(got) != 24 {
		t.Errorf("X-Request-Id = %q, want a generated 24-hex id", got)
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
}

func TestHealth(t *testing.T) {
	h := newHarness(t)
	rec := h.do("GET", "/healthz", "", "")
	h.mustStatus(rec, 200)
	if rec.Body.String() != "{\"status\":\"ok\"}\n" {
		t.Errorf("healthz body = %q", rec.Body)
	}
	h.mustStatus(h.do("GET", "/readyz", "", ""), 200)

	h.setReadyErr(outlast.Unavailable(errors.New("dial tcp: refused"), 2*time.Second, "database unavailable"))
	rec = h.do("GET", "/readyz", "", "")
	msg := wantError(t, rec, 503, "unavailable")
	if msg != "not ready: database unavailable" || rec.Header().Get("Retry-After") != "2" {
		t.Errorf("readyz: message %q, Retry-After %q", msg, rec.Header().Get("Retry-After"))
	}
	// A plain error is still 503, not 500, and its detail stays in the log.
	h.setReadyErr(errors.New("pq: secret detail"))
	rec = h.do("GET", "/readyz", "", "")
	if msg := wantError(t, rec, 503, "unavailable"); strings.Contains(msg, "secret") || rec.Header().Get("Retry-After") != "1" {
		t.Errorf("readyz: message %q, Retry-After %q", msg, rec.Header().Get("Retry-After"))
	}
	wantError(t, h.do("GET", "/metrics", "", ""), 404, "not_found")
}

func TestMetrics(t *testing.T) {
	h := newHarness(t, func(_ *Config, s *Services) {
		s.Metrics = nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
			io.WriteString(w, "# metrics here\n")
		})
	})
	rec := h.do("GET", "/metrics", "", "")
	h.mustStatus(rec, 200)
	if rec.Body.String() != "# metrics here\n" {
		t.Errorf("metrics body = %q", rec.Body)
	}
	counter := requestsTotal.WithLabelValues("GET /v1/accounts/{id}", "404")
	before := testutil.ToFloat64(counter)
	h.do("GET", "/v1/accounts/nope", adminToken, "")
	if got := testutil.ToFloat64(counter); got != before+1 {
		t.Errorf("requests metric = %v, want %v", got, before+1)
	}
	other := requestsTotal.WithLabelValues("other", "404")
	before = testutil.ToFloat64(other)
	h.do("GET", "/random/path/"+strconv.Itoa(int(time.Now().UnixNano())), "", "")
	if got := testutil.ToFloat64(other); got != before+1 {
		t.Errorf("unrouted requests metric = %v, want %v", got, before+1)
	}
	if n := testutil.CollectAndCount(requestSeconds); n == 0 {
		t.Errorf("latency histogram has no series")
	}
	if got := len(Collectors()); got != 6 {
		t.Errorf("Collectors() has %d, want 6", got)
	}
}

func TestPanicRecovered(t *testing.T) {
	h := newHarness(t)
	h.setChooseErr(nil)
	h.srv.svc.ChooseChannel = func(context.Context) (string, error) { panic("router bug") }
	wantError(t, h.payout("k", h.alice, payoutBody), 500, "internal")
}

func TestErrorMapping(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		err        error
		status     int
		code, msg  string
		retryAfter string
	}{
		{outlast.Errorf(outlast.EINVALID, "m"), 400, "invalid_request", "m", ""},
		{outlast.Errorf(outlast.EVALIDATION, "m"), 422, "validation_failed", "m", ""},
		{outlast.Errorf(outlast.EIDEMPOTENCY, "m"), 422, "idempotency_key_reused", "m", ""},
		{outlast.Errorf(outlast.EINSUFFICIENT, "m"), 422, "insufficient_funds", "m", ""},
		{outlast.Errorf(outlast.EUNAUTHORIZED, "m"), 401, "unauthorized", "m", ""},
		{outlast.Errorf(outlast.EFORBIDDEN, "m"), 403, "forbidden", "m", ""},
		{outlast.Errorf(outlast.ENOTFOUND, "m"), 404, "not_found", "m", ""},
		{outlast.Errorf(codeMethodNotAllowed, "m"), 405, "method_not_allowed", "m", ""},
		{outlast.Errorf(outlast.ECONFLICT, "m"), 409, "conflict", "m", ""},
		{outlast.Errorf(outlast.EPRECONDITION, "m"), 412, "precondition_failed", "m", ""},
		{outlast.Errorf(outlast.ETOOLARGE, "m"), 413, "body_too_large", "m", ""},
		{outlast.Errorf(outlast.ERATELIMITED, "m"), 429, "rate_limited", "m", "1"},
		{&outlast.Error{Code: outlast.ERATELIMITED, Message: "m", RetryAfter: 1500 * time.Millisecond}, 429, "rate_limited", "m", "2"},
		{outlast.Errorf(outlast.EUNAVAILABLE, "m"), 503, "unavailable", "m", "1"},
		{outlast.Unavailable(nil, 30*time.Second, "m"), 503, "unavailable", "m", "30"},
		{fmt.Errorf("wrapped: %w", outlast.Unavailable(nil, 100*time.Millisecond, "m")), 503, "unavailable", "m", "1"},
		{outlast.Errorf(outlast.EINTERNAL, "sql: secret"), 500, "internal", "internal error", ""},
		{errors.New("sql: secret"), 500, "internal", "internal error", ""},
		{outlast.Errorf("made_up_code", "secret"), 500, "internal", "internal error", ""},
	} {
		rec := httptest.NewRecorder()
		h.srv.writeError(rec, httptest.NewRequest("GET", "/", nil), tc.err)
		msg := wantError(t, rec, tc.status, tc.code)
		if msg != tc.msg {
			t.Errorf("%v: message %q, want %q", tc.err, msg, tc.msg)
		}
		if got := rec.Header().Get("Retry-After"); got != tc.retryAfter {
			t.Errorf("%v: Retry-After %q, want %q", tc.err, got, tc.retryAfter)
		}
	}
}

// TestKeyCache checks that key lookups are cached, bounded and expire.
func TestKeyCache(t *testing.T) {
	h := newHarness(t)
	reads := func() int {
		h.store.mu.Lock()
		defer h.store.mu.Unlock()
		return h.store.keyReads
	}
	start := reads()
	for range 3 {
		h.mustStatus(h.do("GET", "/v1/accounts/acc-a", h.alice, ""), 200)
	}
	if got := reads() - start; got != 1 {
		t.Errorf("3 requests read the key %d times, want 1", got)
	}
	h.clock.Advance(keyCacheTTL)
	h.mustStatus(h.do("GET", "/v1/accounts/acc-a", h.alice, ""), 200)
	if got := reads() - start; got != 2 {
		t.Errorf("after the TTL the key was read %d times, want 2", got)
	}
	// Unknown keys are never cached.
	for range 3 {
		wantError(t, h.do("GET", "/v1/accounts/acc-a", "olk_unknown", ""), 401, "unauthorized")
	}
	if got := reads() - start; got != 5 {
		t.Errorf("unknown keys read %d times in all, want 5", got)
	}

	c := newKeyCache(4, time.Minute)
	now := time.Now()
	for i := range 10 {
		c.put([32]byte{byte(i)}, &outlast.Client{ID: strconv.Itoa(i)}, now)
		if c.len() > 4 {
			t.Fatalf("cache holds %d entries, bound is 4", c.len())
		}
	}
	if got := c.get([32]byte{9}, now); got == nil || got.ID != "9" {
		t.Errorf("latest entry = %v, want client 9", got)
	}
	if got := c.get([32]byte{9}, now.Add(time.Minute)); got != nil {
		t.Errorf("expired entry = %v, want nil", got)
	}
}

// TestGracefulShutdown checks that Close stops accepting connections but
// lets an in-flight webhook finish and answer 200.
func TestGracefulShutdown(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *Services) {
		c.Now = time.Now // a real server, real signatures
		c.WriteTimeout = 30 * time.Second
		c.ShutdownTimeout = 30 * time.Second
	})
	if err := h.srv.Open(); err != nil {
		t.Fatal(err)
	}
	base := h.srv.URL()
	if !strings.HasPrefix(base, "http://127.0.0.1:") || strings.HasSuffix(base, ":0") {
		t.Fatalf("URL = %q, want the bound address", base)
	}
	entered, release := make(chan struct{}, 1), make(chan struct{})
	h.log.mu.Lock()
	h.log.entered, h.log.release = entered, release
	h.log.mu.Unlock()

	type result struct {
		status int
		err    error
	}
	resc := make(chan result, 1)
	go func() {
		status, err := postWebhook(base)
		resc <- result{status, err}
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the webhook never reached the log")
	}

	closed := make(chan error, 1)
	go func() { closed <- h.srv.Close() }()
	host := strings.TrimPrefix(base, "http://")
	testenv.WaitFor(t, 10*time.Second, "listener closed", func() bool {
		c, err := net.DialTimeout("tcp", host, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a request was in flight", err)
	default:
	}

	close(release)
	select {
	case r := <-resc:
		if r.err != nil || r.status != 200 {
			t.Fatalf("in-flight webhook: status %d, err %v; want 200", r.status, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("in-flight webhook never answered")
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close never returned")
	}
	if n := len(h.log.all()); n != 1 {
		t.Errorf("log has %d, want the in-flight notification", n)
	}
	if err := h.srv.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := h.srv.Open(); err == nil {
		t.Errorf("Open after Close succeeded")
	}
}

// TestShutdownTimeout checks that Close returns within ShutdownTimeout even
// when a request never finishes.
func TestShutdownTimeout(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *Services) {
		c.Now = time.Now
		c.WriteTimeout = 30 * time.Second
		c.ShutdownTimeout = 100 * time.Millisecond
	})
	if err := h.srv.Open(); err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}, 1), make(chan struct{})
	defer close(release)
	h.log.mu.Lock()
	h.log.entered, h.log.release = entered, release
	h.log.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = postWebhook(h.srv.URL()) // cut by Close: its error is expected
	}()
	<-entered
	start := time.Now()
	if err := h.srv.Close(); err == nil {
		t.Errorf("Close = nil, want the shutdown timeout reported")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v with a 100ms ShutdownTimeout", d)
	}
	<-done
}

// postWebhook sends notificationBody, signed now, to a running server.
func postWebhook(base string) (status int, err error) {
	now := time.Now().Unix()
	req, err := nethttp.NewRequest("POST", base+"/v1/partners/tcb/notifications", strings.NewReader(notificationBody))
	if err != nil {
		return 0, err
	}
	req.Header.Set(outlast.HeaderTimestamp, strconv.FormatInt(now, 10))
	req.Header.Set(outlast.HeaderSignature, outlast.Sign([]byte(tcbSecret), now, []byte(notificationBody)))
	resp, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
