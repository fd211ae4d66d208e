package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	nethttp "net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/ledger"
	"github.com/outlast/outlast/partnersim"
)

// testService is Main running in-process on a free port with one
// simulated bank, "tcb".
type testService struct {
	*Main
	admin   *client.Client
	bank    *partnersim.Bank
	bankURL string
	secret  []byte
}

func startTestService(t *testing.T, dsn string, opts ...func(*Main)) *testService {
	t.Helper()
	// The bank never settles by itself: the test sends the webhooks.
	return startTestServiceWithBank(t, dsn, partnersim.Config{PayDelay: time.Hour}, opts...)
}

// startTestServiceWithBank is startTestService with the bank configured
// by bankCfg; its name, webhook URL and secret are filled in.
func startTestServiceWithBank(t *testing.T, dsn string, bankCfg partnersim.Config, opts ...func(*Main)) *testService {
	t.Helper()
	port := testenv.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	secret := []byte("tcb-secret")
	ctx, cancel := context.WithCancel(context.Background())
	bankCfg.Name, bankCfg.WebhookURL, bankCfg.Secret = "tcb", url+"/v1/partners/tcb/notifications", secret
	bank := partnersim.New(bankCfg)
	bankSrv := httptest.NewServer(bank)
	t.Cleanup(bankSrv.Close)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = bank.Run(ctx) }()

	m := NewMain()
	m.Config.DataDir = t.TempDir()
	m.Config.DB = dsn
	m.Config.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	m.Config.AdminToken = "test-admin"
	m.Config.Channels["tcb"] = bankSrv.URL
	m.Config.ChannelSecrets["tcb"] = string(secret)
	m.Config.LogLevel = "error"
	for _, o := range opts {
		o(m)
	}
	if err := m.Run(ctx); err != nil {
		t.Fatalf("Main.Run: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Main.Close: %v", err)
		}
		cancel()
		wg.Wait()
	})
	return &testService{Main: m, admin: client.New(url, "test-admin"), bank: bank, bankURL: bankSrv.URL, secret: secret}
}

// ledgerSnapshot is everything a bad request must leave unchanged.
type ledgerSnapshot struct {
	Accounts []outlast.Account
	Report   outlast.LedgerReport
}

func (s *testService) snapshot(t *testing.T, accountIDs ...string) ledgerSnapshot {
	t.Helper()
	ctx := context.Background()
	var snap ledgerSnapshot
	for _, id := range accountIDs {
		a, _, err := s.DB.Account(ctx, id)
		if err != nil {
			t.Fatalf("Account(%q): %v", id, err)
		}
		a.UpdatedAt = time.Time{}
		snap.Accounts = append(snap.Accounts, *a)
	}
	rep, err := s.DB.AuditLedger(ctx)
	if err != nil {
		t.Fatalf("AuditLedger: %v", err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("ledger problems: %v", rep.Problems)
	}
	snap.Report = *rep
	return snap
}

// raw sends a request with exact bytes and headers and returns status and
// the decoded error code.
func raw(t *testing.T, method, url string, hdr map[string]string, body []byte) (int, string) {
	t.Helper()
	req, err := nethttp.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(data, &e)
	return resp.StatusCode, e.Error.Code
}

func signedHeaders(secret []byte, ts time.Time, body []byte) map[string]string {
	return map[string]string{
		outlast.HeaderTimestamp: strconv.FormatInt(ts.Unix(), 10),
		outlast.HeaderSignature: outlast.Sign(secret, ts.Unix(), body),
	}
}

func TestBadInputChangesNothingSQLite(t *testing.T) {
	testBadInput(t, filepath.Join(t.TempDir(), "ledger.db"))
}

func TestBadInputChangesNothingPostgres(t *testing.T) {
	testBadInput(t, testenv.PostgresDSN(t))
}

func testBadInput(t *testing.T, dsn string) {
	s := startTestService(t, dsn)
	ctx := context.Background()
	keyA, accounts, err := demoSetup(ctx, s.admin, "client-a", 1)
	if err != nil {
		t.Fatal(err)
	}
	keyB, accountsB, err := demoSetup(ctx, s.admin, "client-b", 1)
	if err != nil {
		t.Fatal(err)
	}
	a, b := client.New(s.admin.BaseURL(), keyA), client.New(s.admin.BaseURL(), keyB)
	good := client.PayoutRequest{AccountID: accounts[0], Amount: 500, Currency: "USD", Destination: "DE89370400440532013000"}
	p, status, err := a.CreatePayout(ctx, "key-1", good)
	if err != nil || status != 201 {
		t.Fatalf("createPayout = %d, %v; want 201", status, err)
	}
	// The bank's webhook for it, applied once.
	event, _ := json.Marshal(map[string]any{"event_id": "ev-1", "payout_id": p.ID,
		"status": "succeeded", "occurred_at": time.Now().UTC().Format(time.RFC3339Nano)})
	hookURL := s.admin.BaseURL() + "/v1/partners/tcb/notifications"
	if st, code := raw(t, "POST", hookURL, signedHeaders(s.secret, time.Now(), event), event); st != 200 {
		t.Fatalf("valid webhook = %d %s, want 200", st, code)
	}
	testenv.WaitFor(t, 10*time.Second, "the webhook to be applied", func() bool {
		got, _, err := s.DB.Payout(ctx, p.ID)
		return err == nil && got.Status == outlast.StatusSucceeded
	})
	before := s.snapshot(t, accounts[0], accountsB[0])
	dupsBefore := appliedCount("", outlast.OutcomeDuplicate)

	payoutURL := s.admin.BaseURL() + "/v1/payouts"
	authA := map[string]string{"Authorization": "Bearer " + keyA, "Idempotency-Key": "fresh-key"}
	jsonBody := func(v any) []byte { out, _ := json.Marshal(v); return out }
	withKey := func(k string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + keyA, "Idempotency-Key": k}
	}
	replayWebhook := func() (int, string) {
		return raw(t, "POST", hookURL, signedHeaders(s.secret, time.Now(), event), event)
	}
	tests := []struct {
		name       string
		send       func() (int, string)
		wantStatus int
		wantCode   string
	}{
		{"bad signature", func() (int, string) {
			h := signedHeaders([]byte("wrong"), time.Now(), event)
			return raw(t, "POST", hookURL, h, event)
		}, 401, outlast.EUNAUTHORIZED},
		{"stale timestamp", func() (int, string) {
			return raw(t, "POST", hookURL, signedHeaders(s.secret, time.Now().Add(-6*time.Minute), event), event)
		}, 401, outlast.EUNAUTHORIZED},
		{"replayed webhook", replayWebhook, 200, ""},
		{"unknown fields", func() (int, string) {
			return raw(t, "POST", payoutURL, authA, []byte(`{"account_id":"`+accounts[0]+`","amount":5,"currency":"USD","destination":"x","fee":1}`))
		}, 400, outlast.EINVALID},
		{"oversized body", func() (int, string) {
			big := `{"account_id":"` + accounts[0] + `","amount":5,"currency":"USD","destination":"` + strings.Repeat("x", 1<<20) + `"}`
			return raw(t, "POST", payoutURL, authA, []byte(big))
		}, 413, outlast.ETOOLARGE},
		{"negative amount", func() (int, string) {
			return raw(t, "POST", payoutURL, authA, jsonBody(client.PayoutRequest{AccountID: accounts[0], Amount: -5, Currency: "USD", Destination: "x"}))
		}, 422, outlast.EVALIDATION},
		{"zero amount", func() (int, string) {
			return raw(t, "POST", payoutURL, authA, jsonBody(client.PayoutRequest{AccountID: accounts[0], Amount: 0, Currency: "USD", Destination: "x"}))
		}, 422, outlast.EVALIDATION},
		{"unknown currency", func() (int, string) {
			return raw(t, "POST", payoutURL, authA, jsonBody(client.PayoutRequest{AccountID: accounts[0], Amount: 5, Currency: "XQZ", Destination: "x"}))
		}, 422, outlast.EVALIDATION},
		{"key reuse with a different body", func() (int, string) {
			changed := good
			changed.Amount = 501
			return raw(t, "POST", payoutURL, withKey("key-1"), jsonBody(changed))
		}, 422, outlast.EIDEMPOTENCY},
		{"unknown account", func() (int, string) {
			return raw(t, "POST", payoutURL, authA, jsonBody(client.PayoutRequest{AccountID: "no-such-account", Amount: 5, Currency: "USD", Destination: "x"}))
		}, 422, outlast.EVALIDATION},
		{"another client's account", func() (int, string) {
			return raw(t, "POST", payoutURL, authA, jsonBody(client.PayoutRequest{AccountID: accountsB[0], Amount: 5, Currency: "USD", Destination: "x"}))
		}, 422, outlast.EVALIDATION},
		{"another client's payout", func() (int, string) {
			return raw(t, "GET", payoutURL+"/"+p.ID, map[string]string{"Authorization": "Bearer " + keyB}, nil)
		}, 404, outlast.ENOTFOUND},
		{"no API key", func() (int, string) {
			return raw(t, "POST", payoutURL, map[string]string{"Idempotency-Key": "k"}, jsonBody(good))
		}, 401, outlast.EUNAUTHORIZED},
		{"funding without the admin token", func() (int, string) {
			return raw(t, "POST", s.admin.BaseURL()+"/v1/accounts/"+accounts[0]+"/funds", map[string]string{"Authorization": "Bearer " + keyA}, []byte(`{"amount":5}`))
		}, 401, outlast.EUNAUTHORIZED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code := tt.send()
			if status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("status, code = %d, %q; want %d, %q", status, code, tt.wantStatus, tt.wantCode)
			}
		})
	}
	// The replayed webhook must have been deduplicated when applied: wait
	// for the committer to have seen it, then compare.
	testenv.WaitFor(t, 10*time.Second, "the replayed webhook to be processed", func() bool {
		return appliedCount("", outlast.OutcomeDuplicate) > dupsBefore
	})
	after := s.snapshot(t, accounts[0], accountsB[0])
	if !reflect.DeepEqual(before, after) {
		t.Errorf("bad input changed the ledger:\nbefore %+v\nafter  %+v", before, after)
	}
	if got, _ := b.Payout(ctx, p.ID); got.ID != "" {
		t.Errorf("client B could read client A's payout")
	}
}

// appliedCount reads the ledger's one outcome counter for outcome o from
// source ("" for every source). The metric is process-wide, so a registry
// of its own gathers it whatever Main is running.
func appliedCount(source outlast.Source, o outlast.Outcome) float64 {
	reg := prometheus.NewRegistry()
	reg.MustRegister(ledger.Collectors()...)
	counts, err := appliedCounts(reg)
	if err != nil {
		return 0
	}
	total := 0.0
	for k, v := range counts {
		if k.outcome == string(o) && (source == "" || k.source == string(source)) {
			total += v
		}
	}
	return total
}
