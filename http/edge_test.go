package http

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
)

// The tests of issue 7 item 4: what the edge used to accept and store.

// note is a webhook body reporting p0001 failed, with members replaced
// by the pairs in with.
func note(with ...string) string {
	body := `{"event_id":"ev-1","payout_id":"p0001","partner_ref":"TCB-77","status":"failed","reason":"closed","occurred_at":"2026-03-01T11:59:30Z"}`
	for i := 0; i+1 < len(with); i += 2 {
		start := strings.Index(body, `"`+with[i]+`":`)
		end := start + strings.IndexAny(body[start:], ",}")
		body = body[:start] + `"` + with[i] + `":` + with[i+1] + body[end:]
	}
	return body
}

func TestDotIDsRefused(t *testing.T) {
	h := newHarness(t)
	before := h.store.snapshot()
	for _, tc := range []struct {
		name, method, path, body string
		want                     string
	}{
		{"client", "POST", "/admin/v1/clients", `{"id":"."}`, "id must"},
		{"account", "POST", "/v1/accounts", `{"id":"..","client_id":"alice","currency":"USD"}`, "id must"},
		{"account's client", "POST", "/v1/accounts", `{"id":"acc-x","client_id":"...","currency":"USD"}`, "client_id must"},
		{"payout's account", "POST", "/v1/payouts", `{"account_id":".","amount":1,"currency":"USD","destination":"VN-1"}`, "account_id must"},
		{"event id", "POST", "/v1/partners/tcb/notifications", note("event_id", `".."`), "event_id must"},
		{"payout id", "POST", "/v1/partners/tcb/notifications", note("payout_id", `"."`), "payout_id must"},
		{"partner ref", "POST", "/v1/partners/tcb/notifications", note("partner_ref", `".."`), "partner_ref must"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := wantError(t, h.send(tc.method, tc.path, tc.body), 422, "validation_failed")
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "not only dots") {
				t.Errorf("message %q, want it to contain %q and say why dots are refused", msg, tc.want)
			}
		})
	}
	wantError(t, h.payout(".", h.alice, payoutBody), 400, "invalid_request")
	wantError(t, h.do("GET", "/v1/payouts?account_id=..", h.alice, ""), 422, "validation_failed")
	if after := h.store.snapshot(); after != before {
		t.Errorf("store changed by refused requests:\n%s\n%s", before, after)
	}
	if n, m := len(h.log.all()), len(h.inbox.all()); n+m != 0 {
		t.Errorf("refused webhooks reached the log (%d) or the inbox (%d)", n, m)
	}
}

// TestOccurredAtBounded: a year-9999 occurred_at overflowed the store's
// UnixNano; a partner's clock may be hours off, never a day.
func TestOccurredAtBounded(t *testing.T) {
	h := newHarness(t)
	now := h.clock.Now()
	at := func(t time.Time) string { return `"` + t.Format(time.RFC3339) + `"` }
	for _, tc := range []struct {
		name, occurred string
		status         int
	}{
		{"year 9999", `"9999-12-31T23:59:59Z"`, 422},
		{"past the nanosecond clock", `"2262-04-12T00:00:00Z"`, 422},
		{"a day and a second ahead", at(now.Add(outlast.OccurredAtAheadMax + time.Second)), 422},
		{"unix epoch", `"1970-01-01T00:00:00Z"`, 422},
		{"year 1", `"0001-01-01T00:00:01Z"`, 422},
		{"a day ahead", at(now.Add(outlast.OccurredAtAheadMax)), 200},
		{"a wrong time zone", `"2026-03-01T19:00:00Z"`, 200},
		{"a year ago", at(now.AddDate(-1, 0, 0)), 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := h.send("POST", "/v1/partners/tcb/notifications", note("occurred_at", tc.occurred))
			if tc.status == 200 {
				h.mustStatus(rec, 200)
				return
			}
			if msg := wantError(t, rec, tc.status, "validation_failed"); !strings.Contains(msg, "occurred_at") {
				t.Errorf("message %q does not name occurred_at", msg)
			}
		})
	}
	if n := len(h.log.all()); n != 3 {
		t.Errorf("log has %d notifications, want the 3 accepted", n)
	}
}

// TestControlCharactersNotStored: a destination with control characters
// is refused; a partner's reason is kept, its control characters spaces.
func TestControlCharactersNotStored(t *testing.T) {
	h := newHarness(t)
	before := h.store.snapshot()
	for i, dest := range []string{`VN-1\u0000`, `VN-1\n2`, `VN\t1`, `VN-1\u007f`, `VN-1\u0085`, `\u001b[2JVN-1`} {
		body := strings.Replace(payoutBody, "VN-0123456789", dest, 1)
		msg := wantError(t, h.payout("k-"+strconv.Itoa(i), h.alice, body), 422, "validation_failed")
		if !strings.Contains(msg, "destination must not contain control characters") {
			t.Errorf("destination %s: message %q", dest, msg)
		}
	}
	if after := h.store.snapshot(); after != before {
		t.Errorf("store changed by refused payouts:\n%s\n%s", before, after)
	}

	h.mustStatus(h.send("POST", "/v1/partners/tcb/notifications", note("reason", `"account\r\nclosed\t\u0007\u009b"`)), 200)
	got := h.log.all()
	if len(got) != 1 || got[0].Reason != "account  closed   " {
		t.Fatalf("logged %+v, want the reason with each control character a space", got)
	}
}

// TestWebhookTimestampDigitsOnly: "+1700000000" and "01700000000" parsed
// as the same second, so one signature passed under several headers.
func TestWebhookTimestampDigitsOnly(t *testing.T) {
	h := newHarness(t)
	now := h.clock.Now()
	unix := strconv.FormatInt(now.Unix(), 10)
	sig := outlast.Sign([]byte(tcbSecret), now.Unix(), []byte(notificationBody))
	for _, ts := range []string{"+" + unix, "0" + unix, "00" + unix, " " + unix, unix + " ", "1e9", unix + ".0"} {
		rec := h.do("POST", "/v1/partners/tcb/notifications", "", notificationBody,
			outlast.HeaderTimestamp, ts, outlast.HeaderSignature, sig)
		if msg := wantError(t, rec, 401, "unauthorized"); !strings.Contains(msg, "digits") {
			t.Errorf("timestamp %q: message %q, want it to say the header is digits only", ts, msg)
		}
	}
	h.mustStatus(h.do("POST", "/v1/partners/tcb/notifications", "", notificationBody,
		outlast.HeaderTimestamp, unix, outlast.HeaderSignature, sig), 200)
}
