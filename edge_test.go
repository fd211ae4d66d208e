package outlast_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
)

// The domain's half of issue 7 item 4: ids of dots, an unbounded
// occurred_at, control characters kept (a signed "+" timestamp is in
// TestVerifySignature).

func TestValidIDNotOnlyDots(t *testing.T) {
	for id, want := range map[string]bool{
		".": false, "..": false, "...": false, strings.Repeat(".", outlast.IDBytesMax): false,
		".a": true, "a.": true, "a..b": true, "v1.2": true, "-": true, "acc-a": true,
	} {
		if got := outlast.ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
	if long := strings.Repeat("a", outlast.IDBytesMax); !outlast.ValidID(long) || outlast.ValidID(long+"a") {
		t.Errorf("ValidID takes up to %d bytes: %v for %d, %v for one more", outlast.IDBytesMax, outlast.ValidID(long), len(long), outlast.ValidID(long+"a"))
	}
	if want := "1-" + strconv.Itoa(outlast.IDBytesMax) + " characters"; !strings.Contains(outlast.IDRule, want) {
		t.Errorf("IDRule = %q, want it to say %q", outlast.IDRule, want)
	}
	a := outlast.Account{ID: "..", ClientID: "c", Currency: "USD"}
	if err := a.Validate(); outlast.ErrorCode(err) != outlast.EVALIDATION || !strings.Contains(outlast.ErrorMessage(err), "not only dots") {
		t.Errorf("Account{ID: %q}.Validate() = %v, want %s saying ids are not only dots", a.ID, err, outlast.EVALIDATION)
	}
}

func TestNotificationOccurredAt(t *testing.T) {
	received := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		occurred time.Time
		received time.Time
		ok       bool
	}{
		{"a minute ago", received.Add(-time.Minute), received, true},
		{"a day ahead", received.Add(outlast.OccurredAtAheadMax), received, true},
		{"a day and a nanosecond ahead", received.Add(outlast.OccurredAtAheadMax + 1), received, false},
		{"year 9999", time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), received, false},
		{"year 9999, not yet received", time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), time.Time{}, false},
		{"past UnixNano, not yet received", time.Date(2262, 4, 12, 0, 0, 0, 0, time.UTC), time.Time{}, false},
		{"2000", time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), received, true},
		{"1999", time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC), received, false},
		{"year 1", time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC), received, false},
	} {
		n := outlast.Notification{Channel: "tcb", EventID: "e", PayoutID: "p", Status: outlast.StatusSucceeded,
			OccurredAt: tc.occurred, ReceivedAt: tc.received}
		err := n.Validate()
		if tc.ok {
			if err != nil {
				t.Errorf("%s: Validate() = %v, want nil", tc.name, err)
			}
			if got := time.Unix(0, n.OccurredAt.UnixNano()); !got.Equal(n.OccurredAt) {
				t.Errorf("%s: occurred_at %v does not survive UnixNano (%v)", tc.name, n.OccurredAt, got)
			}
			continue
		}
		if outlast.ErrorCode(err) != outlast.EVALIDATION || !strings.Contains(outlast.ErrorMessage(err), "occurred_at") {
			t.Errorf("%s: Validate() = %v, want %s naming occurred_at", tc.name, err, outlast.EVALIDATION)
		}
	}
}

func TestDestinationControlCharacters(t *testing.T) {
	for _, dest := range []string{"VN-1\x00", "VN-1\n", "VN\t1", "VN-1\x7f", "VN-1\u0085", "\x1b[2JVN-1", "VN-\xff"} {
		r := outlast.PayoutRequest{ClientID: "c", IdempotencyKey: "k", AccountID: "a", Amount: 1, Currency: "USD", Destination: dest}
		if err := r.Validate(); outlast.ErrorCode(err) != outlast.EVALIDATION || !strings.Contains(outlast.ErrorMessage(err), "destination") {
			t.Errorf("Validate(destination %q) = %v, want %s naming destination", dest, err, outlast.EVALIDATION)
		}
	}
	for _, dest := range []string{"DE89 3704 0044 0532 0130 00", "Nguyễn Văn A / 0123", "VN-1"} {
		r := outlast.PayoutRequest{ClientID: "c", IdempotencyKey: "k", AccountID: "a", Amount: 1, Currency: "USD", Destination: dest}
		if err := r.Validate(); err != nil {
			t.Errorf("Validate(destination %q) = %v, want nil", dest, err)
		}
	}
}

func TestFailureReasonWithoutControlCharacters(t *testing.T) {
	p := &outlast.Payout{Status: outlast.StatusDispatched}
	p.MoveTo(outlast.StatusFailed, "", "", "closed\r\n\x1b[31mby bank\x00\u0085", time.Now())
	if p.FailureReason != "closed   [31mby bank " {
		t.Errorf("FailureReason = %q, want each control character a space and NUL gone", p.FailureReason)
	}
}
