package http

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
)

// conflict pays amount out of acc-a, settles the payout as first, then
// applies the bank's contrary report second: failed then succeeded files
// a paid_but_failed exception, succeeded then failed a
// succeeded_not_paid one. It returns the exception filed.
func (h *harness) conflict(amount int64, first, second outlast.PayoutStatus) *outlast.Exception {
	h.t.Helper()
	h.sent++
	body := fmt.Sprintf(`{"account_id":"acc-a","amount":%d,"currency":"USD","destination":"VN-0123456789"}`, amount)
	rec := h.payout("conflict-"+strconv.Itoa(h.sent), h.alice, body)
	h.mustStatus(rec, 201)
	var out struct{ ID string }
	decode(h.t, rec, &out)
	p, _, err := h.store.mem.Payout(context.Background(), out.ID)
	if err != nil {
		h.t.Fatal(err)
	}
	ledgertest.WantOutcomes(h.t, ledgertest.Apply(h.t, h.store.mem, ledgertest.Note(p, first)), outlast.OutcomeApplied)
	rs := ledgertest.Apply(h.t, h.store.mem, ledgertest.Note(p, second))
	if rs[0].Filed == nil {
		h.t.Fatalf("%s after %s filed no exception (outcome %s)", second, first, rs[0].Outcome)
	}
	return rs[0].Filed
}

// balances reads acc-a through the API.
func (h *harness) balances() accountJSON {
	h.t.Helper()
	rec := h.do("GET", "/v1/accounts/acc-a", adminToken, "")
	h.mustStatus(rec, 200)
	var a accountJSON
	decode(h.t, rec, &a)
	return a
}

type exceptionPageOut struct {
	Exceptions []outlast.Exception `json:"exceptions"`
	NextBefore int64               `json:"next_before"`
	Open       map[string]int      `json:"open"`
}

// listExceptions lists with query and returns the page and its ids.
func (h *harness) listExceptions(query string) (exceptionPageOut, string) {
	h.t.Helper()
	rec := h.do("GET", "/admin/v1/exceptions"+query, adminToken, "")
	h.mustStatus(rec, 200)
	var page exceptionPageOut
	decode(h.t, rec, &page)
	ids := make([]string, len(page.Exceptions))
	for i, e := range page.Exceptions {
		ids[i] = strconv.FormatInt(e.ID, 10)
	}
	return page, strings.Join(ids, ",")
}

func resolveBody(action outlast.ResolveAction, amount int64, reason string) string {
	return fmt.Sprintf(`{"action":%q,"amount":%d,"reason":%q}`, action, amount, reason)
}

func TestListExceptionsFiltersAndPages(t *testing.T) {
	h := newHarness(t)
	e1 := h.conflict(100, outlast.StatusFailed, outlast.StatusSucceeded)
	e2 := h.conflict(200, outlast.StatusFailed, outlast.StatusSucceeded)
	e3 := h.conflict(300, outlast.StatusSucceeded, outlast.StatusFailed)
	h.mustStatus(h.do("POST", fmt.Sprintf("/admin/v1/exceptions/%d/resolve", e1.ID), adminToken,
		resolveBody(outlast.ResolveNoMoney, 0, "the bank reversed it")), 200)
	id := func(es ...*outlast.Exception) string {
		s := make([]string, len(es))
		for i, e := range es {
			s[i] = strconv.FormatInt(e.ID, 10)
		}
		return strings.Join(s, ",")
	}

	page, ids := h.listExceptions("")
	if ids != id(e3, e2) || page.NextBefore != 0 {
		t.Errorf("default listing = %s (next %d), want the open ones %s, newest first, and no next page", ids, page.NextBefore, id(e3, e2))
	}
	if len(page.Open) != 2 || page.Open["paid_but_failed"] != 1 || page.Open["succeeded_not_paid"] != 1 {
		t.Errorf("open counts = %v, want paid_but_failed 1, succeeded_not_paid 1", page.Open)
	}
	got := page.Exceptions[1]
	if got.Kind != outlast.ExceptionPaidButFailed || got.AccountID != "acc-a" || got.Claim != 200 || got.Held != 200 ||
		got.Currency != "USD" || len(got.Evidence) != 2 || got.Summary == "" || got.Resolution != nil {
		t.Errorf("listed exception = %+v, want an open paid_but_failed on acc-a claiming and holding 200 USD with two pieces of evidence", got)
	}
	for _, tc := range []struct{ query, want string }{
		{"?status=open", id(e3, e2)},
		{"?status=resolved", id(e1)},
		{"?status=all", id(e3, e2, e1)},
		{"?status=all&kind=paid_but_failed", id(e2, e1)},
		{"?kind=succeeded_not_paid", id(e3)},
		{"?status=all&payout_id=" + e2.PayoutID, id(e2)},
		{"?status=all&account_id=acc-b", ""},
		{"?status=all&before=" + strconv.FormatInt(e3.ID, 10), id(e2, e1)},
	} {
		if _, ids := h.listExceptions(tc.query); ids != tc.want {
			t.Errorf("GET /admin/v1/exceptions%s = %q, want %q", tc.query, ids, tc.want)
		}
	}

	first, ids := h.listExceptions("?status=all&limit=2")
	if ids != id(e3, e2) || first.NextBefore != e2.ID {
		t.Fatalf("first page = %s, next_before %d; want %s and next_before %d", ids, first.NextBefore, id(e3, e2), e2.ID)
	}
	last, ids := h.listExceptions(fmt.Sprintf("?status=all&limit=2&before=%d", first.NextBefore))
	if ids != id(e1) || last.NextBefore != 0 {
		t.Errorf("second page = %s, next_before %d; want %s and no next page", ids, last.NextBefore, id(e1))
	}
	if rec := h.do("GET", "/admin/v1/exceptions?status=all&limit=1&before="+strconv.FormatInt(e1.ID, 10), adminToken, ""); !strings.Contains(rec.Body.String(), `"exceptions":[]`) ||
		strings.Contains(rec.Body.String(), "next_before") {
		t.Errorf("page past the last = %s, want an empty list and no next_before", rec.Body)
	}
}

func TestListExceptionsRefusesBadQueries(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		query, code, mention string
	}{
		{"?status=pending", outlast.EINVALID, "status must be open, resolved or all"},
		{"?kind=paid_thrice", outlast.EINVALID, "paid_but_failed"},
		{"?payout_id=a%20b", outlast.EINVALID, "payout_id"},
		{"?account_id=" + strings.Repeat("x", outlast.IDBytesMax+1), outlast.EINVALID, "account_id"},
		{"?before=soon", outlast.EINVALID, "before must be an exception id"},
		{"?before=0", outlast.EINVALID, "before must be an exception id"},
		{"?limit=many", outlast.EINVALID, "limit must be an integer"},
		{"?limit=1001", outlast.EVALIDATION, "limit must be between 1 and 1000"},
	} {
		rec := h.do("GET", "/admin/v1/exceptions"+tc.query, adminToken, "")
		status := statusOf(tc.code)
		if msg := wantError(t, rec, status, tc.code); !strings.Contains(msg, tc.mention) {
			t.Errorf("GET /admin/v1/exceptions%s: message %q, want it to mention %q", tc.query, msg, tc.mention)
		}
	}
}

func TestGetException(t *testing.T) {
	h := newHarness(t)
	e := h.conflict(400, outlast.StatusFailed, outlast.StatusSucceeded)
	rec := h.do("GET", fmt.Sprintf("/admin/v1/exceptions/%d", e.ID), adminToken, "")
	h.mustStatus(rec, 200)
	var got outlast.Exception
	decode(t, rec, &got)
	if got.ID != e.ID || got.Key != e.Key || got.PayoutID != e.PayoutID || got.Channel != "tcb" || got.Claim != 400 ||
		got.FiledBy != string(outlast.FromLog) || got.OpenedAt.IsZero() || got.Resolution != nil {
		t.Errorf("GET exception = %+v, want %+v", got, e)
	}
	if len(got.Evidence) != 2 || got.Evidence[0].Source != "ledger" || !strings.HasPrefix(got.Evidence[1].Source, "notification tcb/") ||
		!strings.Contains(got.Evidence[1].Says, "succeeded") {
		t.Errorf("evidence = %+v, want the ledger's and the notification's", got.Evidence)
	}
	wantError(t, h.do("GET", "/admin/v1/exceptions/999", adminToken, ""), 404, outlast.ENOTFOUND)
	wantError(t, h.do("GET", "/admin/v1/exceptions/one", adminToken, ""), 404, outlast.ENOTFOUND)
	wantError(t, h.do("GET", fmt.Sprintf("/admin/v1/exceptions/%d", e.ID), "", ""), 401, outlast.EUNAUTHORIZED)
	wantError(t, h.do("GET", fmt.Sprintf("/admin/v1/exceptions/%d", e.ID), h.alice, ""), 401, outlast.EUNAUTHORIZED)
}

// TestResolveExceptionMovesMoney: each action moves the account's money
// as the resolution rule says, answers the account after it, and logs
// who decided what.
func TestResolveExceptionMovesMoney(t *testing.T) {
	for _, tc := range []struct {
		name          string
		first, second outlast.PayoutStatus
		action        outlast.ResolveAction
		amount        int64
		// balances of acc-a (funded 10000) after, and the moves.
		available, held, paidOut, funded int64
		moves                            string
	}{
		{"book_paid takes the hold", outlast.StatusFailed, outlast.StatusSucceeded, outlast.ResolveBookPaid, 0,
			9000, 0, 1000, 10000, "held:-1000 paid_out:1000"},
		{"book_paid more than held advances", outlast.StatusFailed, outlast.StatusSucceeded, outlast.ResolveBookPaid, 10500,
			0, 0, 10500, 10500, "external:-500 available:-9000 held:-1000 paid_out:10500"},
		{"no_money releases the hold", outlast.StatusFailed, outlast.StatusSucceeded, outlast.ResolveNoMoney, 0,
			10000, 0, 0, 10000, "available:1000 held:-1000"},
		{"reverse_paid gives back", outlast.StatusSucceeded, outlast.StatusFailed, outlast.ResolveReversePaid, 0,
			10000, 0, 0, 10000, "available:1000 paid_out:-1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			h := newHarness(t, func(cfg *Config, _ *Services) {
				cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			})
			e := h.conflict(1000, tc.first, tc.second)
			rec := h.do("POST", fmt.Sprintf("/admin/v1/exceptions/%d/resolve", e.ID), adminToken,
				resolveBody(tc.action, tc.amount, "matched the bank's statement"))
			h.mustStatus(rec, 200)
			var out struct {
				Exception outlast.Exception
				Account   accountJSON
			}
			decode(t, rec, &out)
			res := out.Exception.Resolution
			if res == nil || res.Action != tc.action || res.Reason != "matched the bank's statement" ||
				res.By != "admin token from 192.0.2.1" || res.At.IsZero() {
				t.Fatalf("resolution = %+v, want %s by the admin token with the reason", res, tc.action)
			}
			if got := movesText(res.Moves); got != tc.moves {
				t.Errorf("moves = %s, want %s", got, tc.moves)
			}
			a := out.Account
			if a.ID != "acc-a" || a.Available != tc.available || a.Held != tc.held || a.PaidOut != tc.paidOut || a.Funded != tc.funded {
				t.Errorf("account answered = %+v, want available %d held %d paid_out %d funded %d", a, tc.available, tc.held, tc.paidOut, tc.funded)
			}
			if now := h.balances(); now.Available != a.Available || now.Held != a.Held || now.PaidOut != a.PaidOut || now.Funded != a.Funded {
				t.Errorf("account read after = %+v, want the answered %+v", now, a)
			}
			if page, _ := h.listExceptions(""); len(page.Exceptions) != 0 || len(page.Open) != 0 {
				t.Errorf("open exceptions after resolving = %+v, want none", page)
			}
			wantIn(t, logs.String(), "exception resolved", fmt.Sprintf("id=%d", e.ID), "action="+string(tc.action),
				"payout="+e.PayoutID, `by="admin token from 192.0.2.1"`, `reason="matched the bank's statement"`)
		})
	}
}

func movesText(ms []outlast.Move) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = fmt.Sprintf("%s:%d", m.Bucket, m.Amount)
	}
	return strings.Join(s, " ")
}

func wantIn(t *testing.T, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%q lacks %q", got, w)
		}
	}
}

func TestResolveExceptionRefusals(t *testing.T) {
	h := newHarness(t)
	e := h.conflict(1000, outlast.StatusFailed, outlast.StatusSucceeded)
	path := fmt.Sprintf("/admin/v1/exceptions/%d/resolve", e.ID)
	before := h.balances()
	for _, tc := range []struct {
		name, path, token, body string
		status                  int
		code, mention           string
	}{
		{"no token", path, "", resolveBody(outlast.ResolveBookPaid, 0, "r"), 401, outlast.EUNAUTHORIZED, "credentials"},
		{"a client's key", path, h.alice, resolveBody(outlast.ResolveBookPaid, 0, "r"), 401, outlast.EUNAUTHORIZED, "admin token"},
		{"unknown action", path, adminToken, resolveBody("refund", 0, "r"), 422, outlast.EVALIDATION, "book_paid, reverse_paid or no_money"},
		{"no reason", path, adminToken, resolveBody(outlast.ResolveBookPaid, 0, ""), 422, outlast.EVALIDATION, "needs a reason"},
		{"negative amount", path, adminToken, resolveBody(outlast.ResolveBookPaid, -5, "r"), 422, outlast.EVALIDATION, "amount"},
		{"no_money with an amount", path, adminToken, resolveBody(outlast.ResolveNoMoney, 5, "r"), 422, outlast.EVALIDATION, "no_money moves no amount"},
		{"reverse more than paid out", path, adminToken, resolveBody(outlast.ResolveReversePaid, 0, "r"), 422, outlast.EVALIDATION, "reverse_paid needs an amount"},
		{"unknown field", path, adminToken, `{"action":"no_money","reason":"r","by":"me"}`, 400, outlast.EINVALID, `unknown field "by"`},
		{"fractional amount", path, adminToken, `{"action":"book_paid","amount":1.5,"reason":"r"}`, 400, outlast.EINVALID, "amount must be an integer"},
		{"an unknown payout status", path, adminToken, `{"action":"no_money","payout":"paid","reason":"r"}`, 422, outlast.EVALIDATION, "payout must be empty, succeeded or failed"},
		{"settling a failed payout", path, adminToken, `{"action":"book_paid","payout":"succeeded","reason":"r"}`, 422, outlast.EVALIDATION, "already failed"},
		{"unknown exception", "/admin/v1/exceptions/999/resolve", adminToken, resolveBody(outlast.ResolveNoMoney, 0, "r"), 404, outlast.ENOTFOUND, "999"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if msg := wantError(t, h.do("POST", tc.path, tc.token, tc.body), tc.status, tc.code); !strings.Contains(msg, tc.mention) {
				t.Errorf("message %q, want it to mention %q", msg, tc.mention)
			}
		})
	}
	if after := h.balances(); after != before {
		t.Fatalf("refused resolutions changed acc-a: %+v, was %+v", after, before)
	}
	h.mustStatus(h.do("POST", path, adminToken, resolveBody(outlast.ResolveBookPaid, 0, "paid, per statement")), 200)
	booked := h.balances()
	msg := wantError(t, h.do("POST", path, adminToken, resolveBody(outlast.ResolveNoMoney, 0, "again")), 409, outlast.ECONFLICT)
	if !strings.Contains(msg, "resolved already (book_paid") {
		t.Errorf("second resolution refused with %q, want it to say how it was resolved", msg)
	}
	if after := h.balances(); after != booked {
		t.Errorf("a second resolution changed acc-a: %+v, was %+v", after, booked)
	}
}

// TestExceptionRoutesWithoutService: a server that keeps no exceptions
// says so rather than listing none.
func TestExceptionRoutesWithoutService(t *testing.T) {
	h := newHarness(t, func(_ *Config, svc *Services) { svc.Exceptions = nil })
	wantError(t, h.do("GET", "/admin/v1/exceptions", adminToken, ""), 404, outlast.ENOTFOUND)
	wantError(t, h.do("POST", "/admin/v1/exceptions/1/resolve", adminToken, resolveBody(outlast.ResolveNoMoney, 0, "r")), 404, outlast.ENOTFOUND)
}
