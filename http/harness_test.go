package http

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/testenv"
)

const (
	adminToken = "admin-secret-token"
	tcbSecret  = "tcb-webhook-secret"
)

// harness is a Server over fakes, with two clients (alice owns acc-a
// funded with 10000 USD, bob owns acc-b) created through the API.
type harness struct {
	t      *testing.T
	srv    *Server
	store  *fakeStore
	log    *fakeLog
	inbox  *fakeInbox
	clock  *testenv.Clock
	alice  string // API keys
	bob    string
	mu     sync.Mutex // guards chooseErr, readyErr
	choose error
	ready  error
	sent   int // payouts made by send, for their Idempotency-Keys
}

func newHarness(t *testing.T, opts ...func(*Config, *Services)) *harness {
	t.Helper()
	h := &harness{
		t: t, store: newFakeStore(), log: &fakeLog{}, inbox: &fakeInbox{},
		clock: testenv.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)),
	}
	h.store.mem.Now = h.clock.Now
	cfg := Config{
		Addr:           "127.0.0.1:0",
		AdminToken:     adminToken,
		ChannelSecrets: map[string][]byte{"tcb": []byte(tcbSecret), "acb": []byte("acb-secret")},
		BodyBytesMax:   4 << 10,
		Now:            h.clock.Now,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	svc := Services{
		Accounts: h.store, Payouts: h.store, Log: h.log, Inbox: h.inbox, Control: h.store.mem, Exceptions: h.store.mem,
		ChooseChannel: func(ctx context.Context) (string, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			return "tcb", h.choose
		},
		Ready: func(ctx context.Context) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			return h.ready
		},
	}
	for _, o := range opts {
		o(&cfg, &svc)
	}
	srv, err := New(cfg, svc)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.srv = srv
	h.alice = h.createClient("alice")
	h.bob = h.createClient("bob")
	h.mustStatus(h.do("POST", "/v1/accounts", adminToken, `{"id":"acc-a","client_id":"alice","currency":"USD"}`), 201)
	h.mustStatus(h.do("POST", "/v1/accounts", adminToken, `{"id":"acc-b","client_id":"bob","currency":"USD"}`), 201)
	h.mustStatus(h.do("POST", "/v1/accounts/acc-a/funds", adminToken, `{"amount":10000}`, "Idempotency-Key", "fund-a-1"), 200)
	return h
}

func (h *harness) createClient(id string) string {
	h.t.Helper()
	rec := h.do("POST", "/admin/v1/clients", adminToken, `{"id":"`+id+`"}`)
	h.mustStatus(rec, 201)
	var out struct {
		ID     string `json:"id"`
		APIKey string `json:"api_key"`
	}
	decode(h.t, rec, &out)
	return out.APIKey
}

// do serves one request; hdr is key, value pairs.
func (h *harness) do(method, path, token, body string, hdr ...string) *httptest.ResponseRecorder {
	h.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(rec, req)
	return rec
}

// webhook sends body to channel's webhook, signed with secret at ts.
func (h *harness) webhook(channel, secret string, ts time.Time, body string) *httptest.ResponseRecorder {
	h.t.Helper()
	unix := ts.Unix()
	return h.do("POST", "/v1/partners/"+channel+"/notifications", "", body,
		outlast.HeaderTimestamp, strconv.FormatInt(unix, 10),
		outlast.HeaderSignature, outlast.Sign([]byte(secret), unix, []byte(body)))
}

// send serves body to path as the caller its endpoint expects: a webhook
// signed with tcb's secret now, a payout from alice or a funding under a
// new Idempotency-Key, anything else with the admin token.
func (h *harness) send(method, path, body string) *httptest.ResponseRecorder {
	h.t.Helper()
	switch {
	case path == "/v1/partners/tcb/notifications":
		return h.webhook("tcb", tcbSecret, h.clock.Now(), body)
	case path == "/v1/payouts":
		h.sent++
		return h.payout("send-"+strconv.Itoa(h.sent), h.alice, body)
	case strings.HasSuffix(path, "/funds"):
		h.sent++
		return h.do(method, path, adminToken, body, "Idempotency-Key", "send-"+strconv.Itoa(h.sent))
	}
	return h.do(method, path, adminToken, body)
}

func (h *harness) payout(key, token, body string) *httptest.ResponseRecorder {
	h.t.Helper()
	return h.do("POST", "/v1/payouts", token, body, "Idempotency-Key", key)
}

func (h *harness) setChooseErr(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.choose = err
}

func (h *harness) setReadyErr(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ready = err
}

func (h *harness) mustStatus(rec *httptest.ResponseRecorder, want int) {
	h.t.Helper()
	if rec.Code != want {
		h.t.Fatalf("status = %d, want %d; body %s", rec.Code, want, rec.Body)
	}
}

// wantError checks an error answer's status, code and JSON shape.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, code string) string {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body map[string]map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %q is not the error shape: %v", rec.Body, err)
	}
	e := body["error"]
	if e["code"] != code {
		t.Errorf("error code = %q, want %q (message %q)", e["code"], code, e["message"])
	}
	if e["message"] == "" {
		t.Errorf("error message is empty")
	}
	if len(body) != 1 || len(e) != 2 {
		t.Errorf("error body = %s, want exactly {\"error\":{\"code\",\"message\"}}", rec.Body)
	}
	if status == 429 || status == 503 {
		if ra := rec.Header().Get("Retry-After"); ra == "" {
			t.Errorf("status %d without Retry-After", status)
		}
	}
	if status == 401 && rec.Header().Get("WWW-Authenticate") == "" {
		t.Errorf("401 without WWW-Authenticate")
	}
	return e["message"]
}

func decode(t *testing.T, rec *httptest.ResponseRecorder, v any) {
	t.Helper()
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("decode %s: %v", rec.Body, err)
	}
}

// keysOf returns the sorted top-level keys of a JSON object.
func keysOf(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var m map[string]json.RawMessage
	decode(t, rec, &m)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, ",")
}
