package http

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const notificationBody = `{"event_id":"ev-1","payout_id":"p0001","partner_ref":"TCB-77","status":"succeeded","occurred_at":"2026-03-01T11:59:30Z"}`

func TestNotification(t *testing.T) {
	h := newHarness(t)
	rec := h.webhook("tcb", tcbSecret, h.clock.Now(), notificationBody)
	h.mustStatus(rec, 200)
	if rec.Body.String() != "{\"status\":\"accepted\"}\n" {
		t.Errorf("body = %q", rec.Body)
	}
	got := h.log.all()
	if len(got) != 1 {
		t.Fatalf("log has %d notifications, want 1", len(got))
	}
	want := outlast.Notification{
		Channel: "tcb", EventID: "ev-1", PayoutID: "p0001", PartnerRef: "TCB-77", Status: outlast.StatusSucceeded,
		OccurredAt: time.Date(2026, 3, 1, 11, 59, 30, 0, time.UTC), ReceivedAt: h.clock.Now(),
	}
	if *got[0] != want {
		t.Errorf("logged %+v, want %+v", *got[0], want)
	}
	if n := len(h.inbox.all()); n != 0 {
		t.Errorf("inbox has %d notifications, want 0 while the log is up", n)
	}

	// A partner retrying a delivered webhook is accepted again; the
	// committer deduplicates by (channel, event id).
	h.mustStatus(h.webhook("tcb", tcbSecret, h.clock.Now(), notificationBody), 200)
	if n := len(h.log.all()); n != 2 {
		t.Errorf("after a replay the log has %d notifications, want 2", n)
	}

	// A failure reason, and a timestamp a little in the future (clock skew),
	// are fine.
	failed := `{"event_id":"ev-2","payout_id":"p0001","partner_ref":"","status":"failed","reason":"account closed","occurred_at":"2026-03-01T19:00:00+07:00"}`
	h.mustStatus(h.webhook("acb", "acb-secret", h.clock.Now().Add(time.Minute), failed), 200)
	got = h.log.all()
	if n := got[2]; n.Channel != "acb" || n.Reason != "account closed" || !n.OccurredAt.Equal(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("logged %+v", *n)
	}
}

func TestNotificationRefused(t *testing.T) {
	h := newHarness(t)
	now := h.clock.Now()
	unix := strconv.FormatInt(now.Unix(), 10)
	sig := outlast.Sign([]byte(tcbSecret), now.Unix(), []byte(notificationBody))
	signed := func(body string) []string {
		return []string{outlast.HeaderTimestamp, unix, outlast.HeaderSignature, outlast.Sign([]byte(tcbSecret), now.Unix(), []byte(body))}
	}
	big := strings.Replace(notificationBody, "TCB-77", strings.Repeat("x", 5000), 1)
	for _, tc := range []struct {
		name, channel, body string
		hdr                 []string
		status              int
		code                string
	}{
		{"bad signature", "tcb", notificationBody, []string{outlast.HeaderTimestamp, unix, outlast.HeaderSignature, strings.Repeat("ab", 32)}, 401, "unauthorized"},
		{"wrong secret", "tcb", notificationBody, []string{outlast.HeaderTimestamp, unix, outlast.HeaderSignature, outlast.Sign([]byte("acb-secret"), now.Unix(), []byte(notificationBody))}, 401, "unauthorized"},
		{"other channel's path", "acb", notificationBody, []string{outlast.HeaderTimestamp, unix, outlast.HeaderSignature, sig}, 401, "unauthorized"},
		{"tampered body", "tcb", strings.Replace(notificationBody, "succeeded", "failed", 1), []string{outlast.HeaderTimestamp, unix, outlast.HeaderSignature, sig}, 401, "unauthorized"},
		{"stale timestamp", "tcb", notificationBody, staleHeaders(now.Add(-6*time.Minute), notificationBody), 401, "unauthorized"},
		{"future timestamp", "tcb", notificationBody, staleHeaders(now.Add(6*time.Minute), notificationBody), 401, "unauthorized"},
		{"missing signature", "tcb", notificationBody, []string{outlast.HeaderTimestamp, unix}, 401, "unauthorized"},
		{"missing timestamp", "tcb", notificationBody, []string{outlast.HeaderSignature, sig}, 401, "unauthorized"},
		{"no headers", "tcb", notificationBody, nil, 401, "unauthorized"},
		{"unknown channel", "vcb", notificationBody, []string{outlast.HeaderTimestamp, unix, outlast.HeaderSignature, sig}, 404, "not_found"},
		{"oversized body", "tcb", big, signed(big), 413, "body_too_large"},
		{"unknown field", "tcb", `{"event_id":"e","payout_id":"p","status":"failed","occurred_at":"2026-03-01T12:00:00Z","amount":5}`,
			signed(`{"event_id":"e","payout_id":"p","status":"failed","occurred_at":"2026-03-01T12:00:00Z","amount":5}`), 400, "invalid_request"},
		{"channel in body", "tcb", `{"channel":"acb","event_id":"e","payout_id":"p","status":"failed","occurred_at":"2026-03-01T12:00:00Z"}`,
			signed(`{"channel":"acb","event_id":"e","payout_id":"p","status":"failed","occurred_at":"2026-03-01T12:00:00Z"}`), 400, "invalid_request"},
		{"trailing garbage", "tcb", notificationBody + "]", signed(notificationBody + "]"), 400, "invalid_request"},
		{"bad time", "tcb", `{"event_id":"e","payout_id":"p","status":"failed","occurred_at":"yesterday"}`,
			signed(`{"event_id":"e","payout_id":"p","status":"failed","occurred_at":"yesterday"}`), 400, "invalid_request"},
		{"pending status", "tcb", strings.Replace(notificationBody, "succeeded", "pending", 1),
			signed(strings.Replace(notificationBody, "succeeded", "pending", 1)), 422, "validation_failed"},
		{"missing event id", "tcb", strings.Replace(notificationBody, `"ev-1"`, `""`, 1),
			signed(strings.Replace(notificationBody, `"ev-1"`, `""`, 1)), 422, "validation_failed"},
		{"missing occurred_at", "tcb", `{"event_id":"e","payout_id":"p","status":"failed"}`,
			signed(`{"event_id":"e","payout_id":"p","status":"failed"}`), 422, "validation_failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := h.do("POST", "/v1/partners/"+tc.channel+"/notifications", "", tc.body, tc.hdr...)
			wantError(t, rec, tc.status, tc.code)
		})
	}
	if n, m := len(h.log.all()), len(h.inbox.all()); n+m != 0 {
		t.Errorf("refused webhooks reached the log (%d) or the inbox (%d)", n, m)
	}
}

func staleHeaders(ts time.Time, body string) []string {
	return []string{
		outlast.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10),
		outlast.HeaderSignature, outlast.Sign([]byte(tcbSecret), ts.Unix(), []byte(body)),
	}
}

func TestNotificationLogDown(t *testing.T) {
	h := newHarness(t)
	h.log.setErr(outlast.Unavailable(errors.New("nats: no responders"), time.Second, "log unavailable"))
	fallbacks := testutil.ToFloat64(webhookFallbackTotal.WithLabelValues("tcb"))
	h.mustStatus(h.webhook("tcb", tcbSecret, h.clock.Now(), notificationBody), 200)
	in := h.inbox.all()
	if len(in) != 1 || in[0].EventID != "ev-1" || in[0].Channel != "tcb" || !in[0].ReceivedAt.Equal(h.clock.Now()) {
		t.Fatalf("inbox = %+v, want the notification", in)
	}
	if got := testutil.ToFloat64(webhookFallbackTotal.WithLabelValues("tcb")); got != fallbacks+1 {
		t.Errorf("fallback metric = %v, want %v", got, fallbacks+1)
	}

	// Any log error falls back, not only EUNAVAILABLE.
	h.log.setErr(errors.New("something odd"))
	h.mustStatus(h.webhook("tcb", tcbSecret, h.clock.Now(), notificationBody), 200)
	if n := len(h.inbox.all()); n != 2 {
		t.Errorf("inbox has %d, want 2", n)
	}
}

func TestNotificationNoLog(t *testing.T) {
	h := newHarness(t, func(_ *Config, s *Services) { s.Log = nil })
	h.mustStatus(h.webhook("tcb", tcbSecret, h.clock.Now(), notificationBody), 200)
	if n := len(h.inbox.all()); n != 1 {
		t.Errorf("inbox has %d, want 1 without a log", n)
	}
}

func TestNotificationLogAndInboxDown(t *testing.T) {
	h := newHarness(t)
	h.log.setErr(outlast.Unavailable(nil, time.Second, "log unavailable"))
	h.inbox.setErr(outlast.Unavailable(errors.New("database is locked"), 4*time.Second, "database unavailable"))
	unavailable := testutil.ToFloat64(webhookUnavailableTotal.WithLabelValues("tcb"))
	rec := h.webhook("tcb", tcbSecret, h.clock.Now(), notificationBody)
	msg := wantError(t, rec, 503, "unavailable")
	if ra := rec.Header().Get("Retry-After"); ra != "4" {
		t.Errorf("Retry-After = %q, want 4 (the longer of the two)", ra)
	}
	if strings.Contains(msg, "locked") {
		t.Errorf("message %q leaks the cause", msg)
	}
	if got := testutil.ToFloat64(webhookUnavailableTotal.WithLabelValues("tcb")); got != unavailable+1 {
		t.Errorf("unavailable metric = %v, want %v", got, unavailable+1)
	}
	if n, m := len(h.log.all()), len(h.inbox.all()); n+m != 0 {
		t.Errorf("log %d, inbox %d; want nothing stored", n, m)
	}
}

// TestNotificationLogHangs checks that a hung log leaves time for the inbox.
func TestNotificationLogHangs(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *Services) { c.LogAppendTimeout = 50 * time.Millisecond })
	h.log.mu.Lock()
	h.log.release = make(chan struct{}) // never released: Append waits for its ctx
	h.log.mu.Unlock()
	h.mustStatus(h.webhook("tcb", tcbSecret, h.clock.Now(), notificationBody), 200)
	if n := len(h.inbox.all()); n != 1 {
		t.Errorf("inbox has %d, want 1 after the log timed out", n)
	}
}
