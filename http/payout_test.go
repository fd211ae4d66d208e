package http

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
)

const payoutBody = `{"account_id":"acc-a","amount":2500,"currency":"USD","destination":"VN-0123456789"}`

func TestCreatePayout(t *testing.T) {
	h := newHarness(t)
	rec := h.payout("key-1", h.alice, payoutBody)
	h.mustStatus(rec, 201)
	const payoutKeys = "account_id,amount,channel,created_at,currency,destination,id,partner_ref,status,updated_at"
	if got := keysOf(t, rec); got != payoutKeys {
		t.Errorf("payout keys = %s, want %s", got, payoutKeys)
	}
	var p payoutJSON
	decode(t, rec, &p)
	if p.AccountID != "acc-a" || p.Amount != 2500 || p.Currency != "USD" || p.Destination != "VN-0123456789" ||
		p.Status != outlast.StatusPending || p.Channel != "tcb" || p.ID == "" {
		t.Errorf("created payout = %+v", p)
	}
	if rec.Header().Get("Idempotent-Replayed") != "" {
		t.Errorf("a new payout must not be marked replayed")
	}
	if loc := rec.Header().Get("Location"); loc != "/v1/payouts/"+p.ID {
		t.Errorf("Location = %q", loc)
	}

	// An honest retry gets the same payout, 200, marked replayed; no new
	// hold.
	before := h.store.snapshot()
	again := h.payout("key-1", h.alice, payoutBody)
	h.mustStatus(again, 200)
	if again.Header().Get("Idempotent-Replayed") != "true" {
		t.Errorf("Idempotent-Replayed = %q, want true", again.Header().Get("Idempotent-Replayed"))
	}
	var p2 payoutJSON
	decode(t, again, &p2)
	if p2 != p {
		t.Errorf("replayed payout = %+v, want %+v", p2, p)
	}
	if after := h.store.snapshot(); after != before {
		t.Errorf("replay changed the store:\n%s\n%s", before, after)
	}

	// The same key from another client is another payout space: bob has no
	// acc-a, so the fake refuses it as an unknown account.
	wantError(t, h.payout("key-1", h.bob, payoutBody), 422, "validation_failed")
}

func TestCreatePayoutRefused(t *testing.T) {
	h := newHarness(t)
	h.mustStatus(h.payout("used", h.alice, payoutBody), 201)
	before := h.store.snapshot()
	body := func(s string) string { return strings.Replace(payoutBody, `"amount":2500`, s, 1) }
	for _, tc := range []struct {
		name, key, token, body string
		status                 int
		code                   string
	}{
		{"key reused with another body", "used", h.alice, body(`"amount":2501`), 422, "idempotency_key_reused"},
		{"missing Idempotency-Key", "", h.alice, payoutBody, 400, "invalid_request"},
		{"bad Idempotency-Key", "a key with spaces", h.alice, payoutBody, 400, "invalid_request"},
		{"negative amount", "k", h.alice, body(`"amount":-1`), 422, "validation_failed"},
		{"zero amount", "k", h.alice, body(`"amount":0`), 422, "validation_failed"},
		{"fractional amount", "k", h.alice, body(`"amount":10.5`), 400, "invalid_request"},
		{"string amount", "k", h.alice, body(`"amount":"2500"`), 400, "invalid_request"},
		{"unknown currency", "k", h.alice, strings.Replace(payoutBody, "USD", "ABC", 1), 422, "validation_failed"},
		{"currency mismatch", "k", h.alice, strings.Replace(payoutBody, "USD", "EUR", 1), 422, "validation_failed"},
		{"unknown account", "k", h.alice, strings.Replace(payoutBody, "acc-a", "acc-nope", 1), 422, "validation_failed"},
		{"another client's account", "k", h.bob, payoutBody, 422, "validation_failed"},
		{"insufficient funds", "k", h.alice, body(`"amount":10001`), 422, "insufficient_funds"},
		{"missing destination", "k", h.alice, strings.Replace(payoutBody, "VN-0123456789", "", 1), 422, "validation_failed"},
		{"unknown field", "k", h.alice, strings.Replace(payoutBody, "{", `{"channel":"acb",`, 1), 400, "invalid_request"},
		{"trailing garbage", "k", h.alice, payoutBody + "garbage", 400, "invalid_request"},
		{"oversized body", "k", h.alice, strings.Replace(payoutBody, "VN-", strings.Repeat("x", 5000), 1), 413, "body_too_large"},
		{"invalid JSON", "k", h.alice, `{"account_id":`, 400, "invalid_request"},
		{"admin token", "k", adminToken, payoutBody, 403, "forbidden"},
		{"no credentials", "k", "", payoutBody, 401, "unauthorized"},
		{"unknown API key", "k", "olk_AAAA", payoutBody, 401, "unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.key != "" {
				hdr = []string{"Idempotency-Key", tc.key}
			}
			wantError(t, h.do("POST", "/v1/payouts", tc.token, tc.body, hdr...), tc.status, tc.code)
		})
	}
	if after := h.store.snapshot(); after != before {
		t.Errorf("store changed by refused requests:\n%s\n%s", before, after)
	}
}

func TestCreatePayoutNoChannel(t *testing.T) {
	h := newHarness(t)
	before := h.store.snapshot()
	h.setChooseErr(errors.New("all breakers open"))
	rec := h.payout("k", h.alice, payoutBody)
	wantError(t, rec, 503, "unavailable")
	if ra := rec.Header().Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q, want 1 (the default)", ra)
	}

	h.setChooseErr(outlast.Unavailable(nil, 3*time.Second, "maintenance"))
	rec = h.payout("k", h.alice, payoutBody)
	msg := wantError(t, rec, 503, "unavailable")
	if ra := rec.Header().Get("Retry-After"); ra != "3" || msg != "maintenance" {
		t.Errorf("Retry-After = %q, message %q; want 3, maintenance", ra, msg)
	}
	if after := h.store.snapshot(); after != before {
		t.Errorf("store changed without a channel:\n%s\n%s", before, after)
	}

	h.setChooseErr(nil)
	h.mustStatus(h.payout("k", h.alice, payoutBody), 201)
}

func TestCreatePayoutStoreDown(t *testing.T) {
	h := newHarness(t)
	h.store.mu.Lock()
	h.store.failWith = outlast.Unavailable(errors.New("connection refused"), 2*time.Second, "database unavailable")
	h.store.mu.Unlock()
	// Nothing has authenticated alice's key yet, so the failing key lookup
	// itself must answer 503, not 401.
	rec := h.payout("k", h.alice, payoutBody)
	wantError(t, rec, 503, "unavailable")
	if ra := rec.Header().Get("Retry-After"); ra != "2" {
		t.Errorf("Retry-After = %q, want 2", ra)
	}
}

func TestGetPayout(t *testing.T) {
	h := newHarness(t)
	rec := h.payout("k", h.alice, payoutBody)
	h.mustStatus(rec, 201)
	var p payoutJSON
	decode(t, rec, &p)

	for _, token := range []string{h.alice, adminToken} {
		rec = h.do("GET", "/v1/payouts/"+p.ID, token, "")
		h.mustStatus(rec, 200)
		var got payoutJSON
		decode(t, rec, &got)
		if got != p {
			t.Errorf("GET payout = %+v, want %+v", got, p)
		}
	}
	theirs := h.do("GET", "/v1/payouts/"+p.ID, h.bob, "")
	wantError(t, theirs, 404, "not_found")
	missing := h.do("GET", "/v1/payouts/p9999", h.bob, "")
	wantError(t, missing, 404, "not_found")
	if theirs.Body.String() != strings.ReplaceAll(missing.Body.String(), "p9999", p.ID) {
		t.Errorf("another client's payout %s differs from a missing one %s", theirs.Body, missing.Body)
	}
	wantError(t, h.do("GET", "/v1/payouts/"+p.ID, "", ""), 401, "unauthorized")
}

func TestListPayouts(t *testing.T) {
	h := newHarness(t)
	for i := range 5 {
		h.mustStatus(h.payout(fmt.Sprintf("k%d", i), h.alice, strings.Replace(payoutBody, "2500", "1000", 1)), 201)
	}
	var ids []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		rec := h.do("GET", "/v1/payouts?account_id=acc-a&status=pending&limit=2&cursor="+cursor, h.alice, "")
		h.mustStatus(rec, 200)
		if got := keysOf(t, rec); got != "data,next_cursor" {
			t.Fatalf("page keys = %s", got)
		}
		var page payoutPage
		decode(t, rec, &page)
		for _, p := range page.Data {
			ids = append(ids, p.ID)
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if want := "p0005,p0004,p0003,p0002,p0001"; strings.Join(ids, ",") != want {
		t.Errorf("paged ids = %v, want %s", ids, want)
	}

	// Bob sees none of them, as an empty array (not null).
	rec := h.do("GET", "/v1/payouts", h.bob, "")
	h.mustStatus(rec, 200)
	if !strings.Contains(rec.Body.String(), `"data":[]`) {
		t.Errorf("empty page = %s, want data []", rec.Body)
	}
	// The admin names the client.
	rec = h.do("GET", "/v1/payouts?client_id=alice&status=succeeded", adminToken, "")
	h.mustStatus(rec, 200)

	for _, tc := range []struct {
		query, token string
		status       int
		code         string
	}{
		{"status=done", h.alice, 422, "validation_failed"},
		{"limit=abc", h.alice, 400, "invalid_request"},
		{"limit=0", h.alice, 422, "validation_failed"},
		{"limit=501", h.alice, 422, "validation_failed"},
		{"account_id=a%20b", h.alice, 422, "validation_failed"},
		{"cursor=zz", h.alice, 400, "invalid_request"},
		{"client_id=bob", h.alice, 400, "invalid_request"},
		{"", adminToken, 422, "validation_failed"},
		{"", "", 401, "unauthorized"},
	} {
		wantError(t, h.do("GET", "/v1/payouts?"+tc.query, tc.token, ""), tc.status, tc.code)
	}
}
