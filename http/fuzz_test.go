package http

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/outlast/outlast"
)

// The fuzz targets of the edge's decoders run each body through its
// handler on a fresh harness and hold the answer to strictDecode, a
// reference built on encoding/json: a body it takes is never refused
// with 400 and is acted on with exactly its values; a body it refuses
// gets 400 in the error shape and changes nothing. No body gets a 5xx.

// edge is one decoder at the edge: where its bodies go, the type the
// reference decodes them into, and what an accepted body must have done.
type edge[T any] struct {
	method, path string
	seeds        []string
	accepted     func(t *testing.T, h *harness, rec *httptest.ResponseRecorder, want *T)
}

// attackSeeds are issue 7's bodies, for every target: names differing by
// case or by a long s, duplicates, invalid UTF-8, null, trailing data.
var attackSeeds = []string{
	`null`, ` null `, `[]`, `"x"`, `0`, ``, `{}`, `{} {}`, `{}]`, "{\"\xff\":1}", `{"\ud800":1}`,
}

func fuzzEdge[T any](f *testing.F, e edge[T]) {
	for _, s := range append(e.seeds, attackSeeds...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		h := newHarness(t)
		before := h.store.snapshot()
		rec := h.send(e.method, e.path, string(body))
		status, msg := wantAnswer(t, rec)
		var want T
		strict := strictDecode(body, &want)
		switch {
		case int64(len(body)) > h.srv.cfg.BodyBytesMax:
			if status != 413 {
				t.Fatalf("a body of %d bytes got %d, want 413", len(body), status)
			}
		case status == 400 && strict:
			t.Fatalf("refused %q, which the strict reference takes as %+v: %s", body, want, msg)
		case status != 400 && !strict:
			t.Fatalf("answered %d (%s) to %q, which the strict reference refuses", status, msg, body)
		case strict && status >= 300 && status != 409 && status != 422:
			t.Fatalf("answered %d (%s) to %q, a strict body: want success, a conflict or a validation failure", status, msg, body)
		case status < 300:
			e.accepted(t, h, rec, &want)
		}
		if after := h.store.snapshot(); status >= 300 && after != before {
			t.Fatalf("a %d answer changed the store:\n%s\n%s", status, before, after)
		}
	})
}

// wantAnswer checks what every answer shares: never a 5xx, JSON, and a
// refusal in the error shape with the code of its status. It returns the
// status and the error message, if any.
func wantAnswer(t *testing.T, rec *httptest.ResponseRecorder) (int, string) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	if rec.Code < 300 {
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("answer %q is not JSON", rec.Body)
		}
		return rec.Code, ""
	}
	var e errorBody
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error.Message == "" || statusOf(e.Error.Code) != rec.Code {
		t.Fatalf("status %d answered %q (%v), want the error shape with a message and a code of that status", rec.Code, rec.Body, err)
	}
	return rec.Code, e.Error.Message
}

// strictDecode is the reference: body is valid UTF-8 holding one JSON
// object whose member names, at every level, are the JSON names of v's
// fields exactly and once each, with values of their types. It decodes
// into v with encoding/json, which, names being exact and unique, agrees
// with json/v2.
func strictDecode(body []byte, v any) bool {
	if !utf8.Valid(body) || loneSurrogate(body) {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if !exactObject(dec, reflect.TypeOf(v).Elem()) {
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		return false
	}
	return json.Unmarshal(body, v) == nil
}

// exactObject reads one JSON object from dec and reports whether its
// names are t's fields' JSON names, each at most once; an object for a
// field of struct type is held to the same rule, and a time to RFC 3339.
func exactObject(dec *json.Decoder, t reflect.Type) bool {
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		fields[name] = t.Field(i).Type
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		name, _ := tok.(string)
		ft, known := fields[name]
		if err != nil || !known || seen[name] {
			return false
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return false
		}
		switch {
		case string(raw) == "null":
		case ft == reflect.TypeFor[time.Time]():
			var s string
			if json.Unmarshal(raw, &s) != nil || !rfc3339.MatchString(s) {
				return false
			}
		case ft.Kind() == reflect.Struct && !exactObject(json.NewDecoder(bytes.NewReader(raw)), ft):
			return false
		}
	}
	tok, err := dec.Token()
	return err == nil && tok == json.Delim('}')
}

// rfc3339 is RFC 3339's date-time, which encoding/json's time.Time
// stretches (a one-digit hour, a comma before the fraction, an offset of
// +24:00) and json/v2 does not; ranges beyond the digits are left to
// time.Parse.
var rfc3339 = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`)

// loneSurrogate reports whether a string in body escapes half a UTF-16
// surrogate pair: encoding/json makes it U+FFFD, json/v2 refuses it as
// not text.
func loneSurrogate(body []byte) bool {
	inString := false
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c == '"':
			inString = !inString
		case c != '\\' || !inString:
		case i+1 < len(body) && body[i+1] == 'u':
			r := hex4(body[i+2:])
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return true
			case r >= 0xD800 && r <= 0xDBFF:
				if !bytes.HasPrefix(body[i+6:], []byte(`\u`)) {
					return true
				}
				if lo := hex4(body[i+8:]); lo < 0xDC00 || lo > 0xDFFF {
					return true
				}
				i += 6
			}
			i += 5
		default:
			i++ // the escaped character
		}
	}
	return false
}

// hex4 is the value of the four hex digits b starts with, or -1.
func hex4(b []byte) int {
	if len(b) < 4 {
		return -1
	}
	n, err := strconv.ParseUint(string(b[:4]), 16, 16)
	if err != nil {
		return -1
	}
	return int(n)
}

// wantCleanText fails t unless s is UTF-8 without control characters.
func wantCleanText(t *testing.T, what, s string) {
	t.Helper()
	if !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 {
		t.Fatalf("%s %q is stored with invalid UTF-8 or a control character", what, s)
	}
}

type payoutIn struct {
	AccountID   string `json:"account_id"`
	Amount      int64  `json:"amount"`
	Currency    string `json:"currency"`
	Destination string `json:"destination"`
}

func FuzzCreatePayout(f *testing.F) {
	fuzzEdge(f, edge[payoutIn]{
		method: "POST", path: "/v1/payouts",
		seeds: []string{
			payoutBody,
			`{"account_id":"acc-a","amount":1,"AMOUNT":5000,"currency":"USD","destination":"VN-1"}`,
			`{"account_id":"acc-a","amount":1,"currency":"USD","destination":"REAL","deſtination":"SHADOW"}`,
			`{"account_id":"acc-a","amount":1,"amount":5000,"currency":"USD","destination":"VN-1"}`,
			`{"account_id":"acc-a","amount":1,"currency":"USD","destination":"VN-1\n2\u0085"}`,
			`{"account_id":".","amount":1,"currency":"USD","destination":"VN-1"}`,
			`{"account_id":"acc-a","amount":-0,"currency":"USD","destination":"\ud83d\ude00"}`,
			"{\"account_id\":\"acc-a\",\"amount\":1,\"currency\":\"USD\",\"destination\":\"VN-\xc3\x28\"}",
		},
		accepted: func(t *testing.T, h *harness, rec *httptest.ResponseRecorder, want *payoutIn) {
			var p payoutJSON
			decode(t, rec, &p)
			if rec.Code != 201 || p.AccountID != want.AccountID || p.Amount != want.Amount || p.Currency != want.Currency || p.Destination != want.Destination {
				t.Fatalf("%d: created %+v from %+v", rec.Code, p, *want)
			}
			wantCleanText(t, "destination", p.Destination)
		},
	})
}

type accountIn struct {
	ID       string               `json:"id"`
	ClientID string               `json:"client_id"`
	Currency string               `json:"currency"`
	Flags    outlast.AccountFlags `json:"flags"`
}

func FuzzCreateAccount(f *testing.F) {
	fuzzEdge(f, edge[accountIn]{
		method: "POST", path: "/v1/accounts",
		seeds: []string{
			`{"id":"acc-c","client_id":"alice","currency":"VND","flags":{"daily_limit":500}}`,
			`{"id":"acc-c","client_id":"alice","CLIENT_ID":"bob","currency":"USD"}`,
			`{"id":"acc-c","client_id":"alice","currency":"USD","flags":{"payouts_disabled":true,"payouts_disabled":false}}`,
			`{"id":"acc-c","client_id":"alice","currency":"USD","flags":null}`,
			`{"id":"..","client_id":"alice","currency":"USD"}`,
		},
		accepted: func(t *testing.T, h *harness, rec *httptest.ResponseRecorder, want *accountIn) {
			var a accountJSON
			decode(t, rec, &a)
			if rec.Code != 201 || a.ID != want.ID || a.ClientID != want.ClientID || a.Currency != want.Currency || a.Flags != want.Flags {
				t.Fatalf("%d: created %+v from %+v", rec.Code, a, *want)
			}
		},
	})
}

type fundsIn struct {
	Amount int64 `json:"amount"`
}

func FuzzFundAccount(f *testing.F) {
	fuzzEdge(f, edge[fundsIn]{
		method: "POST", path: "/v1/accounts/acc-a/funds",
		seeds: []string{`{"amount":5}`, `{"amount":1,"AMOUNT":5000}`, `{"amount":1,"amount":5000}`, `{"amount":1e3}`, `{"amount":1125899906842624}`},
		accepted: func(t *testing.T, h *harness, rec *httptest.ResponseRecorder, want *fundsIn) {
			var a accountJSON
			decode(t, rec, &a)
			if rec.Code != 200 || a.Funded != 10000+want.Amount {
				t.Fatalf("%d: funded %d after adding %d to 10000", rec.Code, a.Funded, want.Amount)
			}
		},
	})
}

func FuzzSetAccountFlags(f *testing.F) {
	fuzzEdge(f, edge[outlast.AccountFlags]{
		method: "PUT", path: "/v1/accounts/acc-a/flags",
		seeds: []string{`{"payouts_disabled":true}`, `{"daily_limit":500}`, `{"payouts_disabled":true,"payouts_disabled":false}`,
			`{"Payouts_Disabled":true}`, `{"payouts_disabled":null}`},
		accepted: func(t *testing.T, h *harness, rec *httptest.ResponseRecorder, want *outlast.AccountFlags) {
			var a accountJSON
			decode(t, rec, &a)
			if rec.Code != 200 || a.Flags != *want {
				t.Fatalf("%d: flags %+v, want %+v", rec.Code, a.Flags, *want)
			}
		},
	})
}

func FuzzNotification(f *testing.F) {
	fuzzEdge(f, edge[notificationJSON]{
		method: "POST", path: "/v1/partners/tcb/notifications",
		seeds: []string{
			notificationBody,
			note("reason", `"account\r\nclosed\u0000\u009b"`),
			note("status", `"failed","STATUS":"succeeded"`),
			note("status", `"failed","status":"succeeded"`),
			note("occurred_at", `"9999-12-31T23:59:59Z"`),
			note("occurred_at", `"2026-03-02T12:00:00Z"`),
			note("occurred_at", `"2026-03-01T19:00:00+07:00"`),
			note("event_id", `".."`),
			note("reason", `"`+strings.Repeat("é", 256)+`"`),
		},
		accepted: func(t *testing.T, h *harness, rec *httptest.ResponseRecorder, want *notificationJSON) {
			got := h.log.all()
			if rec.Code != 200 || len(got) != 1 {
				t.Fatalf("%d: log holds %d notifications, want the one accepted", rec.Code, len(got))
			}
			n := got[0]
			if n.Channel != "tcb" || n.EventID != want.EventID || n.PayoutID != want.PayoutID || n.PartnerRef != want.PartnerRef ||
				n.Status != want.Status || n.Reason != outlast.CleanText(want.Reason, outlast.ReasonBytesMax) ||
				!n.OccurredAt.Equal(want.OccurredAt) || !n.ReceivedAt.Equal(h.clock.Now()) {
				t.Fatalf("logged %+v from %+v", *n, *want)
			}
			if err := n.Validate(); err != nil {
				t.Fatalf("logged a notification that is not valid: %v", err)
			}
			wantCleanText(t, "reason", n.Reason)
		},
	})
}
