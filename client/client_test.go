package client_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	ohttp "github.com/outlast/outlast/http"
	"github.com/outlast/outlast/internal/ledgertest"
)

const adminToken = "admin-token"

// service is the real API handler over the memory ledger.
type service struct {
	url  string
	down atomic.Bool // while set, new payouts are refused: no channel
}

func newService(t *testing.T) *service {
	t.Helper()
	s := &service{}
	mem := ledgertest.NewMemory()
	srv, err := ohttp.New(ohttp.Config{
		Addr:       "127.0.0.1:0",
		AdminToken: adminToken,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, ohttp.Services{
		Accounts: mem, Payouts: mem, Inbox: discardInbox{}, Control: mem, Exceptions: mem,
		ChooseChannel: func(ctx context.Context) (string, error) {
			if s.down.Load() {
				return "", outlast.Unavailable(nil, 7*time.Second, "no channel is taking payouts")
			}
			return "tcb", nil
		},
	})
	if err != nil {
		t.Fatalf("http.New: %v", err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	s.url = ts.URL
	return s
}

type discardInbox struct{}

func (discardInbox) AppendInbox(ctx context.Context, ns []*outlast.Notification) error { return nil }

// customer creates a client with a funded USD account and returns a
// client of the API with its key, and the account's id.
func customer(t *testing.T, s *service, funded int64) (*client.Client, string) {
	t.Helper()
	ctx := context.Background()
	admin := client.New(s.url+"/", adminToken)
	key, err := admin.CreateClient(ctx, "alice")
	if err != nil {
		t.Fatalf("CreateClient: %v", err)
	}
	if _, err := admin.CreateAccount(ctx, "acc-a", "alice", "USD"); err != nil {
		t.Fatalf("CreateAccount: %v", err)
	}
	for range 2 { // the same key twice credits once
		if _, err := admin.Fund(ctx, "acc-a", funded, "fund-1"); err != nil {
			t.Fatalf("Fund: %v", err)
		}
	}
	return client.New(s.url, key), "acc-a"
}

func TestPublicAPI(t *testing.T) {
	s := newService(t)
	api, acc := customer(t, s, 10_000)
	ctx := context.Background()
	if a, err := api.Account(ctx, acc); err != nil || a.Available != 10_000 {
		t.Fatalf("Account(%q) = %+v, %v, want 10000 available (funded once per key)", acc, a, err)
	}
	req := client.PayoutRequest{AccountID: acc, Amount: 500, Currency: "USD", Destination: "DE89370400440532013000"}
	p, status, err := api.CreatePayout(ctx, "k1", req)
	if err != nil || status != 201 || p.ID == "" {
		t.Fatalf("CreatePayout(k1) = %+v, %d, %v, want a new payout, 201", p, status, err)
	}
	again, status, err := api.CreatePayout(ctx, "k1", req)
	if err != nil || status != 200 || again.ID != p.ID {
		t.Errorf("CreatePayout(k1) again = %s, %d, %v, want %s, 200", again.ID, status, err, p.ID)
	}
	if got, err := api.Payout(ctx, p.ID); err != nil || got.Amount != 500 {
		t.Errorf("Payout(%q) = %+v, %v, want amount 500", p.ID, got, err)
	}
	page, err := api.Payouts(ctx, client.PayoutQuery{AccountID: acc})
	if err != nil || len(page.Payouts) != 1 || page.Payouts[0].ID != p.ID {
		t.Errorf("Payouts(%s) = %+v, %v, want [%s]", acc, page, err, p.ID)
	}
}

// TestErrors: a refusal reads as an *outlast.Error with the service's code
// and message, and Retry-After, under a *client.StatusError with the status.
func TestErrors(t *testing.T) {
	s := newService(t)
	api, acc := customer(t, s, 10_000)
	ctx := context.Background()
	req := client.PayoutRequest{AccountID: acc, Amount: 500, Currency: "USD", Destination: "dest"}
	if _, _, err := api.CreatePayout(ctx, "k1", req); err != nil {
		t.Fatalf("CreatePayout(k1): %v", err)
	}

	req.Amount = 600
	_, status, err := api.CreatePayout(ctx, "k1", req)
	var oe *outlast.Error
	if status != 422 || client.Status(err) != 422 || outlast.ErrorCode(err) != outlast.EIDEMPOTENCY || !errors.As(err, &oe) || oe.Message == "" {
		t.Errorf("CreatePayout(k1, other body) = %d, %v, want 422 %s with a message", status, err, outlast.EIDEMPOTENCY)
	}
	if !strings.HasPrefix(err.Error(), "HTTP 422 "+outlast.EIDEMPOTENCY+": ") {
		t.Errorf("error text %q, want HTTP 422 %s: message", err, outlast.EIDEMPOTENCY)
	}

	s.down.Store(true)
	_, status, err = api.CreatePayout(ctx, "k2", req)
	if status != 503 || outlast.ErrorCode(err) != outlast.EUNAVAILABLE || outlast.ErrorRetryAfter(err) <= 0 {
		t.Errorf("CreatePayout with no channel = %d, %v (Retry-After %v), want 503 %s with Retry-After",
			status, err, outlast.ErrorRetryAfter(err), outlast.EUNAVAILABLE)
	}

	if _, err := client.New(s.url, "wrong").Account(ctx, acc); outlast.ErrorCode(err) != outlast.EUNAUTHORIZED {
		t.Errorf("Account with a wrong key: %v, want %s", err, outlast.EUNAUTHORIZED)
	}
	if _, err := client.New("http://127.0.0.1:1", "k").Account(ctx, acc); err == nil || client.Status(err) != 0 {
		t.Errorf("Account with no service: %v (status %d), want a network error, status 0", err, client.Status(err))
	}
}

// TestPutConfigIfMatch: a change names the version it read; one made
// from a stale read is refused.
func TestPutConfigIfMatch(t *testing.T) {
	s := newService(t)
	admin := client.New(s.url, adminToken)
	ctx := context.Background()
	cfg, err := admin.Config(ctx)
	if err != nil {
		t.Fatalf("Config: %v", err)
	}
	read := cfg.Version
	cfg.Maintenance = outlast.Maintenance{On: true, Message: "upgrade"}
	next, err := admin.PutConfig(ctx, cfg, read, "test")
	if err != nil || next.Version != read+1 || !next.Maintenance.On {
		t.Fatalf("PutConfig(if %d) = %+v, %v, want version %d in maintenance", read, next, err, read+1)
	}
	if _, err := admin.PutConfig(ctx, cfg, read, "stale"); client.Status(err) != 412 || outlast.ErrorCode(err) != outlast.EPRECONDITION {
		t.Errorf("PutConfig(if %d) after a change: %v, want 412 %s", read, err, outlast.EPRECONDITION)
	}
	changes, err := admin.ConfigHistory(ctx, 5)
	if err != nil || len(changes) != 1 || changes[0].Reason != "test" {
		t.Errorf("ConfigHistory = %+v, %v, want the one change, reason \"test\"", changes, err)
	}
}

// recorder answers every request with status and body, and keeps the
// requests' headers.
type recorder struct {
	mu      sync.Mutex // guards headers
	headers []nethttp.Header
}

func (rec *recorder) serve(t *testing.T, status int, header nethttp.Header, body string) string {
	t.Helper()
	ts := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		rec.mu.Lock()
		rec.headers = append(rec.headers, r.Header.Clone())
		rec.mu.Unlock()
		for k, vs := range header {
			w.Header()[k] = vs
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

func (rec *recorder) last() nethttp.Header {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.headers[len(rec.headers)-1]
}

func TestHeadersSent(t *testing.T) {
	var rec recorder
	api := client.New(rec.serve(t, 200, nil, `{}`), "the-key")
	ctx := context.Background()
	calls := []struct {
		name, header, want string
		call               func() error
	}{
		{"CreatePayout", "Idempotency-Key", "pay-1", func() error {
			_, _, err := api.CreatePayout(ctx, "pay-1", client.PayoutRequest{AccountID: "a", Amount: 1, Currency: "USD", Destination: "d"})
			return err
		}},
		{"Fund", "Idempotency-Key", "fund-1", func() error { _, err := api.Fund(ctx, "a", 1, "fund-1"); return err }},
		{"PutConfig", "If-Match", `"41"`, func() error { _, err := api.PutConfig(ctx, &outlast.ControlConfig{}, 41, "why"); return err }},
		{"PutConfig", "Outlast-Change-Reason", "why", func() error { _, err := api.PutConfig(ctx, &outlast.ControlConfig{}, 41, "why"); return err }},
		{"Account", "Authorization", "Bearer the-key", func() error { _, err := api.Account(ctx, "a"); return err }},
	}
	for _, c := range calls {
		if err := c.call(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := rec.last().Get(c.header); got != c.want {
			t.Errorf("%s sent %s %q, want %q", c.name, c.header, got, c.want)
		}
	}
}

// TestRecordedErrors: answers not from Outlast (a proxy's page) still
// read as codes, and both forms of Retry-After are read.
func TestRecordedErrors(t *testing.T) {
	ctx := context.Background()
	date := time.Now().Add(time.Minute).UTC().Format(nethttp.TimeFormat)
	cases := []struct {
		status     int
		header     nethttp.Header
		body, code string
		retryMin   time.Duration
	}{
		{422, nil, `{"error":{"code":"insufficient_funds","message":"available 5 < 10"}}`, outlast.EINSUFFICIENT, 0},
		{503, nethttp.Header{"Retry-After": {"3"}}, `{"error":{"code":"unavailable","message":"the log is down"}}`, outlast.EUNAVAILABLE, 3 * time.Second},
		{503, nethttp.Header{"Retry-After": {date}}, `<html>bad gateway</html>`, outlast.EUNAVAILABLE, 50 * time.Second},
		{429, nil, ``, outlast.ERATELIMITED, 0},
	}
	for _, c := range cases {
		var rec recorder
		_, err := client.New(rec.serve(t, c.status, c.header, c.body), "k").Account(ctx, "a")
		if client.Status(err) != c.status || outlast.ErrorCode(err) != c.code || outlast.ErrorMessage(err) == "" {
			t.Errorf("answer %d %s: %v, want status %d code %s with a message", c.status, c.body, err, c.status, c.code)
		}
		if ra := outlast.ErrorRetryAfter(err); ra < c.retryMin || (c.retryMin == 0 && ra != 0) {
			t.Errorf("answer %d %v: RetryAfter %v, want at least %v", c.status, c.header, ra, c.retryMin)
		}
	}
}

func TestBodyBounds(t *testing.T) {
	ctx := context.Background()
	var rec recorder
	url := rec.serve(t, 200, nil, `{"id":"`+strings.Repeat("x", 2000)+`"}`)
	if _, err := client.New(url, "k", client.WithResponseBytesMax(1000)).Account(ctx, "a"); err == nil || !strings.Contains(err.Error(), "over 1000 bytes") {
		t.Errorf("Account with a 2 kB answer and a 1000-byte bound: %v, want an error", err)
	}
	if a, err := client.New(url, "k").Account(ctx, "a"); err != nil || len(a.ID) != 2000 {
		t.Errorf("Account with the default bound: %v, want the account", err)
	}

	api := client.New(url, "k", client.WithRequestBytesMax(100))
	_, _, err := api.CreatePayout(ctx, "k", client.PayoutRequest{Destination: strings.Repeat("d", 200)})
	if outlast.ErrorCode(err) != outlast.ETOOLARGE {
		t.Errorf("CreatePayout with a 200-byte destination and a 100-byte bound: %v, want %s", err, outlast.ETOOLARGE)
	}
	if n := len(rec.headers); n != 2 {
		t.Errorf("the service saw %d requests, want 2: a request over the bound is never sent", n)
	}
}
