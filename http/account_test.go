package http

import (
	"context"
	"crypto/sha256"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCreateClient(t *testing.T) {
	h := newHarness(t)
	rec := h.do("POST", "/admin/v1/clients", adminToken, `{"id":"carol"}`)
	h.mustStatus(rec, 201)
	if got := keysOf(t, rec); got != "api_key,id" {
		t.Errorf("client keys = %s, want api_key,id", got)
	}
	var raw struct {
		APIKey string `json:"api_key"`
	}
	decode(t, rec, &raw)
	if !strings.HasPrefix(raw.APIKey, "olk_") || len(raw.APIKey) != 4+43 {
		t.Fatalf("api_key = %q, want olk_ + 43 base64url characters", raw.APIKey)
	}
	sum := sha256.Sum256([]byte(raw.APIKey))
	owner, err := h.store.mem.ClientByKeyHash(context.Background(), sum[:])
	if err != nil || owner.ID != "carol" {
		t.Errorf("ClientByKeyHash(SHA-256 of the key) = %+v, %v; want carol (the key must be stored as its SHA-256)", owner, err)
	}
	// The new key authenticates (carol owns nothing, so a 404 not a 401).
	wantError(t, h.do("GET", "/v1/accounts/acc-a", raw.APIKey, ""), 404, "not_found")
}

func TestCreateClientRefused(t *testing.T) {
	h := newHarness(t)
	before := h.store.snapshot()
	for _, tc := range []struct {
		name, token, body string
		status            int
		code              string
	}{
		{"wrong admin token", "not-the-token", `{"id":"carol"}`, 401, "unauthorized"},
		{"no token", "", `{"id":"carol"}`, 401, "unauthorized"},
		{"client key", h.alice, `{"id":"carol"}`, 401, "unauthorized"},
		{"bad id", adminToken, `{"id":"a b"}`, 422, "validation_failed"},
		{"empty id", adminToken, `{}`, 422, "validation_failed"},
		{"unknown field", adminToken, `{"id":"carol","role":"admin"}`, 400, "invalid_request"},
		{"duplicate", adminToken, `{"id":"alice"}`, 409, "conflict"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, h.do("POST", "/admin/v1/clients", tc.token, tc.body), tc.status, tc.code)
		})
	}
	if after := h.store.snapshot(); after != before {
		t.Errorf("store changed by refused requests:\n%s\n%s", before, after)
	}
}

func TestAccounts(t *testing.T) {
	h := newHarness(t)
	rec := h.do("POST", "/v1/accounts", adminToken, `{"id":"acc-c","client_id":"alice","currency":"VND","flags":{"daily_limit":500}}`)
	h.mustStatus(rec, 201)
	const accountKeys = "available,client_id,currency,flags,funded,held,id,paid_out,updated_at,version"
	if got := keysOf(t, rec); got != accountKeys {
		t.Errorf("account keys = %s, want %s", got, accountKeys)
	}
	if loc := rec.Header().Get("Location"); loc != "/v1/accounts/acc-c" {
		t.Errorf("Location = %q", loc)
	}

	rec = h.do("POST", "/v1/accounts/acc-c/funds", adminToken, `{"amount":700}`, "Idempotency-Key", "fund-c-1")
	h.mustStatus(rec, 200)
	var a accountJSON
	decode(t, rec, &a)
	if a.Funded != 700 || a.Available != 700 || a.Flags.DailyLimit != 500 || a.Currency != "VND" || a.ClientID != "alice" {
		t.Errorf("after funding: %+v", a)
	}

	rec = h.do("PUT", "/v1/accounts/acc-c/flags", adminToken, `{"payouts_disabled":true}`)
	h.mustStatus(rec, 200)
	a = accountJSON{}
	decode(t, rec, &a)
	if !a.Flags.PayoutsDisabled || a.Flags.DailyLimit != 0 {
		t.Errorf("flags after PUT = %+v, want payouts disabled and no limit", a.Flags)
	}

	for _, token := range []string{h.alice, adminToken} {
		rec = h.do("GET", "/v1/accounts/acc-c", token, "")
		h.mustStatus(rec, 200)
		decode(t, rec, &a)
		if a.ID != "acc-c" || a.Funded != 700 || !a.Flags.PayoutsDisabled {
			t.Errorf("GET account = %+v", a)
		}
	}
}

// TestAccountNotYours checks that another client's account looks exactly
// like a missing one.
func TestAccountNotYours(t *testing.T) {
	h := newHarness(t)
	theirs := h.do("GET", "/v1/accounts/acc-a", h.bob, "")
	missing := h.do("GET", "/v1/accounts/acc-zzz", h.bob, "")
	wantError(t, theirs, 404, "not_found")
	wantError(t, missing, 404, "not_found")
	strip := func(s string) string { return strings.ReplaceAll(s, "acc-zzz", "acc-a") }
	if theirs.Body.String() != strip(missing.Body.String()) {
		t.Errorf("another client's account %s differs from a missing one %s", theirs.Body, missing.Body)
	}
	wantError(t, h.do("GET", "/v1/accounts/acc-a", "olk_nonsense", ""), 401, "unauthorized")
	wantError(t, h.do("GET", "/v1/accounts/acc-a", "", ""), 401, "unauthorized")
}

func TestAccountsRefused(t *testing.T) {
	h := newHarness(t)
	before := h.store.snapshot()
	big := `{"amount":1` + strings.Repeat("0", 5000) + `}`
	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"create: wrong admin token", "POST", "/v1/accounts", "nope", `{"id":"x","client_id":"alice","currency":"USD"}`, 401, "unauthorized"},
		{"create: client key", "POST", "/v1/accounts", h.alice, `{"id":"x","client_id":"alice","currency":"USD"}`, 401, "unauthorized"},
		{"create: unknown currency", "POST", "/v1/accounts", adminToken, `{"id":"x","client_id":"alice","currency":"XXX"}`, 422, "validation_failed"},
		{"create: lower-case currency", "POST", "/v1/accounts", adminToken, `{"id":"x","client_id":"alice","currency":"usd"}`, 422, "validation_failed"},
		{"create: unknown client", "POST", "/v1/accounts", adminToken, `{"id":"x","client_id":"nobody","currency":"USD"}`, 422, "validation_failed"},
		{"create: exists", "POST", "/v1/accounts", adminToken, `{"id":"acc-a","client_id":"alice","currency":"USD"}`, 409, "conflict"},
		{"create: unknown field", "POST", "/v1/accounts", adminToken, `{"id":"x","client_id":"alice","currency":"USD","funded":5}`, 400, "invalid_request"},
		{"create: negative limit", "POST", "/v1/accounts", adminToken, `{"id":"x","client_id":"alice","currency":"USD","flags":{"daily_limit":-1}}`, 422, "validation_failed"},
		{"fund: negative", "POST", "/v1/accounts/acc-a/funds", adminToken, `{"amount":-5}`, 422, "validation_failed"},
		{"fund: zero", "POST", "/v1/accounts/acc-a/funds", adminToken, `{"amount":0}`, 422, "validation_failed"},
		{"fund: fractional", "POST", "/v1/accounts/acc-a/funds", adminToken, `{"amount":10.5}`, 400, "invalid_request"},
		{"fund: string", "POST", "/v1/accounts/acc-a/funds", adminToken, `{"amount":"10"}`, 400, "invalid_request"},
		{"fund: exponent", "POST", "/v1/accounts/acc-a/funds", adminToken, `{"amount":1e3}`, 400, "invalid_request"},
		{"fund: over max", "POST", "/v1/accounts/acc-a/funds", adminToken, `{"amount":1125899906842625}`, 422, "validation_failed"},
		{"fund: oversized", "POST", "/v1/accounts/acc-a/funds", adminToken, big, 413, "body_too_large"},
		{"fund: trailing", "POST", "/v1/accounts/acc-a/funds", adminToken, `{"amount":5}{"amount":5}`, 400, "invalid_request"},
		{"fund: unknown account", "POST", "/v1/accounts/nope/funds", adminToken, `{"amount":5}`, 404, "not_found"},
		{"fund: client key", "POST", "/v1/accounts/acc-a/funds", h.alice, `{"amount":5}`, 401, "unauthorized"},
		{"flags: negative limit", "PUT", "/v1/accounts/acc-a/flags", adminToken, `{"daily_limit":-1}`, 422, "validation_failed"},
		{"flags: wrong type", "PUT", "/v1/accounts/acc-a/flags", adminToken, `{"payouts_disabled":"yes"}`, 400, "invalid_request"},
		{"flags: unknown account", "PUT", "/v1/accounts/nope/flags", adminToken, `{}`, 404, "not_found"},
		{"flags: wrong admin token", "PUT", "/v1/accounts/acc-a/flags", "nope", `{}`, 401, "unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, h.do(tc.method, tc.path, tc.token, tc.body, "Idempotency-Key", "k-refused"), tc.status, tc.code)
		})
	}
	for _, key := range []string{"", "no spaces allowed", strings.Repeat("k", 200)} {
		wantError(t, h.do("POST", "/v1/accounts/acc-a/funds", adminToken, `{"amount":5}`, "Idempotency-Key", key), 400, "invalid_request")
	}
	if after := h.store.snapshot(); after != before {
		t.Errorf("store changed by refused requests:\n%s\n%s", before, after)
	}
}

// TestJSONMessages checks that a malformed body is answered with a message
// that says what to fix.
func TestJSONMessages(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct{ body, want string }{
		{`{"amount":5,"foo":1}`, `unknown field "foo"`},
		{`{"amount":10.5}`, "amount must be an integer"},
		{`{"amount":"10"}`, "amount must be an integer"},
		{`{"amount":5} x`, "single JSON object"},
		{`{"amount":`, "ends in the middle"},
		{`{amount:5}`, "not valid JSON"},
		{``, "empty"},
		{`[1]`, "must be a JSON object"},
		{` null `, "must be a JSON object, not null"},
		{`{"amount":99999999999999999999}`, "amount must be an integer; 99999999999999999999 is out of range"},
		{`{"amount":5,"Amount":5}`, `field names are case-sensitive: unknown field "Amount" (did you mean "amount"?)`},
		{`{"amount":5,"amount":5}`, `duplicate field "amount"`},
		{"{\"amount\":5,\"\xffoo\":1}", "invalid UTF-8 at byte 13"},
	} {
		msg := wantError(t, h.do("POST", "/v1/accounts/acc-a/funds", adminToken, tc.body, "Idempotency-Key", "k-json"), 400, "invalid_request")
		if !strings.Contains(msg, tc.want) {
			t.Errorf("body %q: message %q, want it to contain %q", tc.body, msg, tc.want)
		}
	}
}

// TestFundingIsIdempotent: an admin retrying a funding after a timeout
// must not credit twice (issue 7, item 5). The same key and amount answer
// the account as it stands, marked replayed; the same key with another
// amount is refused.
func TestFundingIsIdempotent(t *testing.T) {
	h := newHarness(t)
	fund := func(key, body string) *httptest.ResponseRecorder {
		return h.do("POST", "/v1/accounts/acc-b/funds", adminToken, body, "Idempotency-Key", key)
	}
	rec := fund("top-up-1", `{"amount":700}`)
	h.mustStatus(rec, 200)
	if rec.Header().Get("Idempotent-Replayed") != "" {
		t.Error("first funding marked as replayed")
	}
	rec = fund("top-up-1", `{"amount":700}`)
	h.mustStatus(rec, 200)
	var a accountJSON
	decode(t, rec, &a)
	if a.Funded != 700 || rec.Header().Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry answered funded %d, replayed %q; want 700 and true: one credit", a.Funded, rec.Header().Get("Idempotent-Replayed"))
	}
	wantError(t, fund("top-up-1", `{"amount":900}`), 422, "idempotency_key_reused")
	h.mustStatus(fund("top-up-2", `{"amount":300}`), 200)
	rec = h.do("GET", "/v1/accounts/acc-b", adminToken, "")
	decode(t, rec, &a)
	if a.Funded != 1000 || a.Available != 1000 {
		t.Errorf("account after two keys and a retry = funded %d available %d, want 1000 and 1000", a.Funded, a.Available)
	}
}
