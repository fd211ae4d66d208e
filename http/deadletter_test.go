package http

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
)

// deadHarness is a harness whose admin API serves dead letters from a fake
// log and a fake inbox.
type deadHarness struct {
	*harness
	log, inbox *fakeDeadLetters
}

func newDeadHarness(t *testing.T) *deadHarness {
	h := &deadHarness{log: newFakeDeadLetters(outlast.FromLog), inbox: newFakeDeadLetters(outlast.FromInbox)}
	h.harness = newHarness(t, func(cfg *Config, svc *Services) {
		cfg.BodyBytesMax = 64 << 10 // room for a replay of DeadLettersMax ids
		svc.DeadLetters = map[outlast.Source]outlast.DeadLetters{outlast.FromLog: h.log, outlast.FromInbox: h.inbox}
	})
	return h
}

type deadPage struct {
	DeadLetters []struct {
		ID           string
		Source       string
		Notification *struct {
			Channel  string `json:"channel"`
			EventID  string `json:"event_id"`
			PayoutID string `json:"payout_id"`
		}
		Raw, Reason string
		Deliveries  int
		At          time.Time
	} `json:"dead_letters"`
	Unavailable []string `json:"unavailable"`
}

func (h *deadHarness) list(query string) (deadPage, string) {
	h.t.Helper()
	rec := h.do("GET", "/admin/v1/deadletters"+query, adminToken, "")
	h.mustStatus(rec, 200)
	var page deadPage
	decode(h.t, rec, &page)
	ids := make([]string, len(page.DeadLetters))
	for i, d := range page.DeadLetters {
		ids[i] = d.ID
	}
	return page, strings.Join(ids, ",")
}

func deadNote(event string) *outlast.Notification {
	return &outlast.Notification{Channel: "tcb", EventID: event, PayoutID: "p-" + event, PartnerRef: "r",
		Status: outlast.StatusSucceeded, OccurredAt: time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC)}
}

func TestListDeadLettersMergesSourcesNewestFirst(t *testing.T) {
	h := newDeadHarness(t)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	h.log.add(deadNote("e1"), "rejected: unknown payout", t0)
	h.inbox.add(deadNote("e2"), "unknown payout", t0.Add(time.Second))
	h.log.add(nil, "undecodable: bad json", t0.Add(2*time.Second))

	page, ids := h.list("")
	if ids != "log:2,inbox:1,log:1" || len(page.Unavailable) != 0 || page.Unavailable == nil {
		t.Fatalf("list = %s, unavailable %v; want log:2,inbox:1,log:1 and none unavailable", ids, page.Unavailable)
	}
	raw, note := page.DeadLetters[0], page.DeadLetters[1]
	if raw.Notification != nil || raw.Raw != "not json" || raw.Source != "log" || raw.Reason != "undecodable: bad json" {
		t.Errorf("undecodable entry = %+v, want its raw body and no notification", raw)
	}
	if note.Notification == nil || note.Notification.EventID != "e2" || note.Notification.PayoutID != "p-e2" ||
		note.Source != "inbox" || note.Deliveries != 3 || !note.At.Equal(t0.Add(time.Second)) {
		t.Errorf("inbox entry = %+v, want e2's notification, 3 deliveries, at %v", note, t0.Add(time.Second))
	}
	rec := h.do("GET", "/admin/v1/deadletters", adminToken, "")
	if got := keysOf(t, rec); got != "dead_letters,unavailable" {
		t.Errorf("listing keys = %s, want dead_letters,unavailable", got)
	}
	if _, ids := h.list("?limit=2"); ids != "log:2,inbox:1" {
		t.Errorf("list?limit=2 = %s, want log:2,inbox:1", ids)
	}
}

// TestListDeadLettersSourceDown: a source that is down does not hide the
// other's entries; with every source down the answer is a 503.
func TestListDeadLettersSourceDown(t *testing.T) {
	h := newDeadHarness(t)
	h.inbox.add(deadNote("e1"), "unknown payout", time.Now())
	h.log.setErr(outlast.Unavailable(nil, 3*time.Second, "notification log not connected"))
	page, ids := h.list("")
	if ids != "inbox:1" || strings.Join(page.Unavailable, ",") != "log" {
		t.Fatalf("list with the log down = %s, unavailable %v; want inbox:1, [log]", ids, page.Unavailable)
	}
	h.inbox.setErr(outlast.Unavailable(nil, 0, "database unavailable"))
	wantError(t, h.do("GET", "/admin/v1/deadletters", adminToken, ""), 503, outlast.EUNAVAILABLE)

	h.inbox.setErr(fmt.Errorf("sql: syntax error near SELECT"))
	rec := h.do("GET", "/admin/v1/deadletters", adminToken, "")
	if msg := wantError(t, rec, 500, outlast.EINTERNAL); msg != "internal error" {
		t.Errorf("internal failure message = %q, want internal error", msg)
	}
}

func TestReplayDeadLetters(t *testing.T) {
	h := newDeadHarness(t)
	now := time.Now()
	l1 := h.log.add(deadNote("e1"), "rejected: unknown payout", now)
	i1 := h.inbox.add(deadNote("e2"), "unknown payout", now)
	rec := h.do("POST", "/admin/v1/deadletters/replay", adminToken, fmt.Sprintf(`{"ids":[%q,%q,%q,"log:99"]}`, l1, i1, l1))
	h.mustStatus(rec, 200)
	if rec.Body.String() != `{"replayed":2}`+"\n" {
		t.Fatalf("replay = %s, want {\"replayed\":2}", rec.Body)
	}
	if got := h.log.replayed(); len(got) != 1 || got[0].EventID != "e1" {
		t.Errorf("log replayed %v, want e1 once", got)
	}
	if got := h.inbox.replayed(); len(got) != 1 || got[0].EventID != "e2" {
		t.Errorf("inbox replayed %v, want e2", got)
	}
	if _, ids := h.list(""); ids != "" {
		t.Errorf("list after replay = %s, want none", ids)
	}
}

// TestReplayDeadLettersFailures: refusals and outages answer in the error
// shape; a source down is a 503 that says what the other source did.
func TestReplayDeadLettersFailures(t *testing.T) {
	h := newDeadHarness(t)
	now := time.Now()
	raw := h.log.add(nil, "undecodable: bad json", now)
	l2 := h.log.add(deadNote("e2"), "rejected: unknown payout", now)
	i1 := h.inbox.add(deadNote("e1"), "unknown payout", now)
	wantError(t, h.do("POST", "/admin/v1/deadletters/replay", adminToken, fmt.Sprintf(`{"ids":[%q,%q]}`, l2, raw)), 422, outlast.EVALIDATION)
	if got := h.log.replayed(); len(got) != 0 {
		t.Fatalf("a refused replay replayed %v", got)
	}

	h.log.setErr(outlast.Unavailable(nil, 3*time.Second, "notification log not connected"))
	rec := h.do("POST", "/admin/v1/deadletters/replay", adminToken, fmt.Sprintf(`{"ids":[%q,%q]}`, l2, i1))
	msg := wantError(t, rec, 503, outlast.EUNAVAILABLE)
	if ra := rec.Header().Get("Retry-After"); ra != "3" {
		t.Errorf("Retry-After = %q, want 3 (the source's)", ra)
	}
	if !strings.Contains(msg, "notification log not connected") || !strings.Contains(msg, "(other sources had replayed 1 before it)") {
		t.Errorf("message = %q, want the log's reason and the inbox's 1 replayed", msg)
	}
}

func TestDeadLettersBadRequests(t *testing.T) {
	h := newDeadHarness(t)
	many, _ := json.Marshal(map[string][]string{"ids": make([]string, outlast.DeadLettersMax+1)})
	replay := "/admin/v1/deadletters/replay"
	tests := []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"list without a token", "GET", "/admin/v1/deadletters", "", "", 401, outlast.EUNAUTHORIZED},
		{"list with a client key", "GET", "/admin/v1/deadletters", h.alice, "", 401, outlast.EUNAUTHORIZED},
		{"limit not a number", "GET", "/admin/v1/deadletters?limit=x", adminToken, "", 400, outlast.EINVALID},
		{"limit 0", "GET", "/admin/v1/deadletters?limit=0", adminToken, "", 422, outlast.EVALIDATION},
		{"limit too large", "GET", "/admin/v1/deadletters?limit=1001", adminToken, "", 422, outlast.EVALIDATION},
		{"replay without a token", "POST", replay, "", `{"ids":["log:1"]}`, 401, outlast.EUNAUTHORIZED},
		{"replay with a client key", "POST", replay, h.alice, `{"ids":["log:1"]}`, 401, outlast.EUNAUTHORIZED},
		{"replay of no ids", "POST", replay, adminToken, `{"ids":[]}`, 422, outlast.EVALIDATION},
		{"replay without ids", "POST", replay, adminToken, `{}`, 422, outlast.EVALIDATION},
		{"replay of too many ids", "POST", replay, adminToken, string(many), 422, outlast.EVALIDATION},
		{"replay of an id without a source", "POST", replay, adminToken, `{"ids":["17"]}`, 422, outlast.EVALIDATION},
		{"replay of an unknown source", "POST", replay, adminToken, `{"ids":["redis:1"]}`, 422, outlast.EVALIDATION},
		{"replay of a malformed key", "POST", replay, adminToken, `{"ids":["log:x"]}`, 422, outlast.EVALIDATION},
		{"replay with an unknown field", "POST", replay, adminToken, `{"ids":["log:1"],"all":true}`, 400, outlast.EINVALID},
		{"replay of ids not strings", "POST", replay, adminToken, `{"ids":[1]}`, 400, outlast.EINVALID},
		{"replay of no JSON", "POST", replay, adminToken, `ids=log:1`, 400, outlast.EINVALID},
		{"replay with GET", "GET", replay, adminToken, "", 405, codeMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, h.do(tt.method, tt.path, tt.token, tt.body), tt.status, tt.code)
		})
	}
}

// TestDeadLettersWithoutSources: a server with no dead-letter stores lists
// none and refuses every id.
func TestDeadLettersWithoutSources(t *testing.T) {
	h := newHarness(t)
	rec := h.do("GET", "/admin/v1/deadletters", adminToken, "")
	h.mustStatus(rec, 200)
	if rec.Body.String() != `{"dead_letters":[],"unavailable":[]}`+"\n" {
		t.Errorf("list = %s, want empty", rec.Body)
	}
	wantError(t, h.do("POST", "/admin/v1/deadletters/replay", adminToken, `{"ids":["log:1"]}`), 422, outlast.EVALIDATION)
}
