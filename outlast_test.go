package outlast_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
)

func TestNextTransition(t *testing.T) {
	P, D, S, F := outlast.StatusPending, outlast.StatusDispatched, outlast.StatusSucceeded, outlast.StatusFailed
	tests := []struct {
		from, to outlast.PayoutStatus
		want     outlast.Transition
	}{
		{P, D, outlast.TransitionApply},
		{P, S, outlast.TransitionApply},
		{P, F, outlast.TransitionApply},
		{D, S, outlast.TransitionApply},
		{D, F, outlast.TransitionApply},
		{D, D, outlast.TransitionStale},
		{S, D, outlast.TransitionStale},
		{F, D, outlast.TransitionStale},
		{S, S, outlast.TransitionStale},
		{D, P, outlast.TransitionStale},
		{S, F, outlast.TransitionConflict},
		{F, S, outlast.TransitionConflict},
		{P, "paid", outlast.TransitionInvalid},
		{"", S, outlast.TransitionInvalid},
	}
	for _, tt := range tests {
		if got := outlast.NextTransition(tt.from, tt.to); got != tt.want {
			t.Errorf("NextTransition(%q, %q) = %v, want %v", tt.from, tt.to, got, tt.want)
		}
	}
}

func TestNewIDTimeOrdered(t *testing.T) {
	prev := outlast.NewID()
	// 100,000 ids take a few milliseconds: many share a millisecond, and
	// some exhaust a millisecond's counter.
	for i := 0; i < 100_000; i++ {
		id := outlast.NewID()
		if len(id) != 36 || id[14] != '7' {
			t.Fatalf("NewID() = %q, want a UUIDv7", id)
		}
		if !outlast.ValidID(id) {
			t.Fatalf("ValidID(%q) = false", id)
		}
		if id <= prev {
			t.Fatalf("NewID() = %q after %q: ids must strictly increase", id, prev)
		}
		prev = id
	}
}

func TestPayoutRequestValidate(t *testing.T) {
	ok := outlast.PayoutRequest{ClientID: "c1", IdempotencyKey: "k1", AccountID: "a1", Amount: 100, Currency: "USD", Destination: "DE89370400440532013000"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v, want nil", ok, err)
	}
	tests := []struct {
		name string
		mod  func(*outlast.PayoutRequest)
		code string
	}{
		{"zero amount", func(r *outlast.PayoutRequest) { r.Amount = 0 }, outlast.EVALIDATION},
		{"negative amount", func(r *outlast.PayoutRequest) { r.Amount = -5 }, outlast.EVALIDATION},
		{"huge amount", func(r *outlast.PayoutRequest) { r.Amount = outlast.AmountMax + 1 }, outlast.EVALIDATION},
		{"unknown currency", func(r *outlast.PayoutRequest) { r.Currency = "XXQ" }, outlast.EVALIDATION},
		{"lower-case currency", func(r *outlast.PayoutRequest) { r.Currency = "usd" }, outlast.EVALIDATION},
		{"no key", func(r *outlast.PayoutRequest) { r.IdempotencyKey = "" }, outlast.EINVALID},
		{"bad account id", func(r *outlast.PayoutRequest) { r.AccountID = "a/b" }, outlast.EVALIDATION},
		{"no destination", func(r *outlast.PayoutRequest) { r.Destination = "" }, outlast.EVALIDATION},
	}
	for _, tt := range tests {
		r := ok
		tt.mod(&r)
		if got := outlast.ErrorCode(r.Validate()); got != tt.code {
			t.Errorf("%s: Validate() code = %q, want %q", tt.name, got, tt.code)
		}
	}
}

func TestFingerprint(t *testing.T) {
	a := outlast.PayoutRequest{ClientID: "c", IdempotencyKey: "k", AccountID: "a", Amount: 1, Currency: "USD", Destination: "d"}
	b := a
	b.IdempotencyKey = "other"
	b.Channel = "tcb"
	if a.Fingerprint() != b.Fingerprint() {
		t.Errorf("Fingerprint differs for same body with different key/channel")
	}
	c := a
	c.Amount = 2
	if a.Fingerprint() == c.Fingerprint() {
		t.Errorf("Fingerprint equal for different amounts")
	}
	// Length-prefixing keeps field boundaries: "ab"+"c" != "a"+"bc".
	d := a
	d.AccountID, d.Currency = "aU", "SD"
	if a.Fingerprint() == d.Fingerprint() {
		t.Errorf("Fingerprint ignores field boundaries")
	}
}

func TestErrorCode(t *testing.T) {
	err := outlast.Errorf(outlast.ENOTFOUND, "payout %q not found", "x")
	if got := outlast.ErrorCode(err); got != outlast.ENOTFOUND {
		t.Errorf("ErrorCode = %q, want %q", got, outlast.ENOTFOUND)
	}
	if got := outlast.ErrorMessage(errPlain{}); got != "internal error" {
		t.Errorf("ErrorMessage(plain) = %q, want internal error", got)
	}
	if got := outlast.ErrorCode(errPlain{}); got != outlast.EINTERNAL {
		t.Errorf("ErrorCode(plain) = %q, want %q", got, outlast.EINTERNAL)
	}
}

type errPlain struct{}

func (errPlain) Error() string { return "pq: syntax error at or near SELECT" }

func TestVerifySignature(t *testing.T) {
	secret := []byte("s3cret")
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"event_id":"e1"}`)
	ts := strconv.FormatInt(now.Unix(), 10)
	sig := outlast.Sign(secret, now.Unix(), body)
	if err := outlast.VerifySignature(secret, ts, sig, body, now); err != nil {
		t.Fatalf("VerifySignature(valid) = %v", err)
	}
	stale := strconv.FormatInt(now.Add(-6*time.Minute).Unix(), 10)
	cases := map[string]error{
		"tampered body": outlast.VerifySignature(secret, ts, sig, []byte(`{"event_id":"e2"}`), now),
		"wrong secret":  outlast.VerifySignature([]byte("other"), ts, sig, body, now),
		"stale":         outlast.VerifySignature(secret, stale, outlast.Sign(secret, now.Add(-6*time.Minute).Unix(), body), body, now),
		"bad ts":        outlast.VerifySignature(secret, "yesterday", sig, body, now),
		"bad hex":       outlast.VerifySignature(secret, ts, "zz", body, now),
	}
	for name, err := range cases {
		if got := outlast.ErrorCode(err); got != outlast.EUNAUTHORIZED {
			t.Errorf("%s: code = %q, want %q", name, got, outlast.EUNAUTHORIZED)
		}
	}
	// Issue 7: one signature passed under "+1700000000" and "01700000000".
	for _, other := range []string{"+" + ts, "0" + ts, "-0", "+0", " " + ts, ts + "\n", "١٧٠٠٠٠٠٠٠٠"} {
		err := outlast.VerifySignature(secret, other, sig, body, now)
		if outlast.ErrorCode(err) != outlast.EUNAUTHORIZED || !strings.Contains(outlast.ErrorMessage(err), "digits") {
			t.Errorf("VerifySignature(timestamp %q) = %v, want %s saying digits only", other, err, outlast.EUNAUTHORIZED)
		}
	}
}

func TestDeadLetterKeys(t *testing.T) {
	keys, err := outlast.DeadLetterKeys(outlast.FromInbox, []string{"inbox:7", outlast.DeadLetterID(outlast.FromInbox, "12")})
	if err != nil || len(keys) != 2 || keys[0] != 7 || keys[1] != 12 {
		t.Fatalf("DeadLetterKeys = %v, %v; want [7 12]", keys, err)
	}
	for _, id := range []string{"log:7", "inbox:", "inbox:x", "inbox:-1", "inbox:0", "7", ""} {
		if _, err := outlast.DeadLetterKeys(outlast.FromInbox, []string{id}); outlast.ErrorCode(err) != outlast.EVALIDATION {
			t.Errorf("DeadLetterKeys(%q) = %v, want %s", id, err, outlast.EVALIDATION)
		}
	}
	tooMany := make([]string, outlast.DeadLettersMax+1)
	for i := range tooMany {
		tooMany[i] = "inbox:" + strconv.Itoa(i+1)
	}
	if _, err := outlast.DeadLetterKeys(outlast.FromInbox, tooMany); outlast.ErrorCode(err) != outlast.EVALIDATION {
		t.Errorf("DeadLetterKeys(%d ids) = %v, want %s", len(tooMany), err, outlast.EVALIDATION)
	}
}

func TestCleanText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 10, "plain"},
		{"nul\x00byte", 10, "nulbyte"},
		{"tab\there\r\n\x7f\u0085\u009b!", 20, "tab here     !"},
		{"bad \xff utf-8", 20, "bad \uFFFD utf-8"},
		{"éé", 3, "é"}, // never half a character
		{"abc", 0, ""},
	} {
		if got := outlast.CleanText(tc.in, tc.max); got != tc.want {
			t.Errorf("CleanText(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func TestCheckDailyLimit(t *testing.T) {
	for _, tc := range []struct {
		limit, today, amount int64
		want                 string
	}{
		{0, 1 << 40, 1, ""}, // no limit
		{100, 60, 40, ""},   // up to the limit
		{100, 60, 41, outlast.EVALIDATION},
		{100, 0, 101, outlast.EVALIDATION},
	} {
		a := &outlast.Account{Flags: outlast.AccountFlags{DailyLimit: tc.limit}}
		if got := outlast.ErrorCode(a.CheckDailyLimit(tc.today, tc.amount)); got != tc.want {
			t.Errorf("CheckDailyLimit(%d, %d) under limit %d = %q, want %q", tc.today, tc.amount, tc.limit, got, tc.want)
		}
	}
}

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{outlast.Unavailable(nil, time.Second, "database unavailable"), true},
		{fmt.Errorf("apply: %w", context.DeadlineExceeded), true},
		{context.Canceled, true},
		{outlast.Errorf(outlast.EVALIDATION, "bad"), false},
		{errors.New("constraint violated"), false},
		{nil, false},
	} {
		if got := outlast.Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%v) = %t, want %t", tc.err, got, tc.want)
		}
	}
}

func TestDescribeMoves(t *testing.T) {
	for _, tc := range []struct {
		moves []outlast.Move
		want  string
	}{
		{nil, "nothing"},
		{[]outlast.Move{{Bucket: outlast.BucketHeld, Amount: -2500}, {Bucket: outlast.BucketPaidOut, Amount: 2500}}, "held -2500, paid_out +2500"},
	} {
		if got := outlast.DescribeMoves(tc.moves); got != tc.want {
			t.Errorf("DescribeMoves(%v) = %q, want %q", tc.moves, got, tc.want)
		}
	}
}
