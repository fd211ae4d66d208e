package http

import (
	"strings"
	"testing"
)

// TestStrictJSONNames is issue 7 item 3: member names match exactly and
// once. Before json/v2 semantics, {"amount":1,"AMOUNT":5000} paid 5000
// and "deſtination" (long s) overrode "destination".
func TestStrictJSONNames(t *testing.T) {
	h := newHarness(t)
	payout := func(members string) string {
		return `{"account_id":"acc-a","currency":"USD",` + members + `}`
	}
	note := func(members string) string {
		return `{"event_id":"ev-1","payout_id":"p0001","partner_ref":"TCB-77","occurred_at":"2026-03-01T11:59:30Z",` + members + `}`
	}
	type call struct{ method, path, body string }
	for _, tc := range []struct {
		name string
		call call
		want string
	}{
		{"payout: upper-case duplicate", call{"POST", "/v1/payouts", payout(`"amount":1,"AMOUNT":5000,"destination":"VN-1"`)},
			`field names are case-sensitive: unknown field "AMOUNT" (did you mean "amount"?)`},
		{"payout: long s", call{"POST", "/v1/payouts", payout(`"amount":1,"destination":"REAL","deſtination":"SHADOW"`)},
			`field names are case-sensitive: unknown field "deſtination" (did you mean "destination"?)`},
		{"payout: upper-case only", call{"POST", "/v1/payouts", payout(`"Amount":1,"destination":"VN-1"`)}, `unknown field "Amount"`},
		{"payout: duplicate", call{"POST", "/v1/payouts", payout(`"amount":1,"destination":"REAL","destination":"SHADOW"`)},
			`duplicate field "destination"`},
		{"payout: invalid UTF-8", call{"POST", "/v1/payouts", payout(`"amount":1,"destination":"VN-` + "\xff" + `"`)}, "invalid UTF-8"},
		{"payout: null", call{"POST", "/v1/payouts", `null`}, "must be a JSON object, not null"},
		{"account: upper-case", call{"POST", "/v1/accounts", `{"id":"x","client_id":"alice","CLIENT_ID":"bob","currency":"USD"}`}, `"CLIENT_ID"`},
		{"account: duplicate", call{"POST", "/v1/accounts", `{"id":"x","id":"y","client_id":"alice","currency":"USD"}`}, `duplicate field "id"`},
		{"account: nested duplicate", call{"POST", "/v1/accounts", `{"id":"x","client_id":"alice","currency":"USD","flags":{"daily_limit":1,"daily_limit":0}}`},
			`duplicate field "flags.daily_limit"`},
		{"account: null", call{"POST", "/v1/accounts", ` null `}, "not null"},
		{"funds: upper-case", call{"POST", "/v1/accounts/acc-a/funds", `{"amount":1,"AMOUNT":5000}`}, `"AMOUNT"`},
		{"funds: duplicate", call{"POST", "/v1/accounts/acc-a/funds", `{"amount":1,"amount":5000}`}, `duplicate field "amount"`},
		{"flags: duplicate", call{"PUT", "/v1/accounts/acc-a/flags", `{"payouts_disabled":true,"payouts_disabled":false}`}, `duplicate field "payouts_disabled"`},
		{"flags: case", call{"PUT", "/v1/accounts/acc-a/flags", `{"Payouts_Disabled":false}`}, "case-sensitive"},
		// A null body used to clear every flag, turning payouts back on.
		{"flags: null", call{"PUT", "/v1/accounts/acc-a/flags", `null`}, "not null"},
		{"client: duplicate", call{"POST", "/admin/v1/clients", `{"id":"carol","id":"dave"}`}, `duplicate field "id"`},
		{"webhook: upper-case", call{"POST", "/v1/partners/tcb/notifications", note(`"status":"failed","STATUS":"succeeded"`)}, `"STATUS"`},
		{"webhook: duplicate", call{"POST", "/v1/partners/tcb/notifications", note(`"status":"failed","status":"succeeded"`)}, `duplicate field "status"`},
		{"webhook: invalid UTF-8", call{"POST", "/v1/partners/tcb/notifications", note(`"status":"failed","reason":"` + "\xc3\x28" + `"`)}, "invalid UTF-8"},
		{"webhook: null", call{"POST", "/v1/partners/tcb/notifications", `null`}, "not null"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.store.snapshot()
			msg := wantError(t, h.send(tc.call.method, tc.call.path, tc.call.body), 400, "invalid_request")
			if !strings.Contains(msg, tc.want) {
				t.Errorf("message %q, want it to contain %q", msg, tc.want)
			}
			if after := h.store.snapshot(); after != before {
				t.Errorf("store changed by a refused body:\n%s\n%s", before, after)
			}
		})
	}
	if n, m := len(h.log.all()), len(h.inbox.all()); n+m != 0 {
		t.Errorf("refused webhooks reached the log (%d) or the inbox (%d)", n, m)
	}
}
