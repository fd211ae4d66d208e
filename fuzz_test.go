package outlast_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
)

// Signature modes of FuzzVerifySignature: the signature header as fuzzed,
// a partner's HMAC over the timestamp header as sent, or a signature over
// the second the header parses to, moved onto its spelling.
const (
	sigAsFuzzed = iota
	sigOverHeader
	sigOverParsed
	sigModes
)

// canonicalUnix is the one spelling of a timestamp header, as Sign writes it.
var canonicalUnix = regexp.MustCompile(`^[1-9][0-9]{0,18}$`)

// FuzzVerifySignature holds the webhook's signature headers to a
// reference: accepted exactly when the timestamp is canonical unix
// seconds within the window and the signature is the HMAC of that
// header, ".", and the body; refused always with EUNAUTHORIZED and a
// message.
func FuzzVerifySignature(f *testing.F) {
	secret := []byte("fuzz-secret")
	now := time.Unix(1_700_000_000, 0)
	unix := strconv.FormatInt(now.Unix(), 10)
	body := []byte(`{"event_id":"ev-1","payout_id":"p1","status":"succeeded","occurred_at":"2023-11-14T22:13:20Z"}`)
	for _, ts := range []string{unix, "+" + unix, "0" + unix, " " + unix, unix + " ", "-" + unix, "-0", "+0", "0", "",
		"1700000300", "1700000301", "1699999700", "1699999699", "9223372036854775807", "9223372036854775808", "1e9", "١٧٠٠٠٠٠٠٠٠"} {
		for mode := range uint8(sigModes) {
			f.Add(ts, "", body, mode)
		}
	}
	f.Add(unix, strings.Repeat("ab", 32), body, uint8(sigAsFuzzed))
	f.Add(unix, strings.ToUpper(outlast.Sign(secret, now.Unix(), body)), body, uint8(sigAsFuzzed))
	f.Fuzz(func(t *testing.T, tsHeader, sigHeader string, body []byte, mode uint8) {
		switch mode % sigModes {
		case sigOverHeader:
			sigHeader = hmacHex(secret, tsHeader, body)
		case sigOverParsed:
			if ts, err := strconv.ParseInt(tsHeader, 10, 64); err == nil {
				sigHeader = outlast.Sign(secret, ts, body)
			}
		}
		err := outlast.VerifySignature(secret, tsHeader, sigHeader, body, now)

		ts, _ := strconv.ParseInt(tsHeader, 10, 64)
		inWindow := canonicalUnix.MatchString(tsHeader) && ts-now.Unix() >= -300 && ts-now.Unix() <= 300
		got, hexErr := hex.DecodeString(sigHeader)
		want, _ := hex.DecodeString(hmacHex(secret, tsHeader, body))
		accept := inWindow && hexErr == nil && hmac.Equal(got, want)
		switch {
		case accept && err != nil:
			t.Fatalf("VerifySignature(%q, %q) = %v, want nil: canonical, in the window, signed", tsHeader, sigHeader, err)
		case !accept && err == nil:
			t.Fatalf("VerifySignature(%q, %q) = nil, want a refusal (canonical and in the window: %v)", tsHeader, sigHeader, inWindow)
		case err != nil && (outlast.ErrorCode(err) != outlast.EUNAUTHORIZED || outlast.ErrorMessage(err) == ""):
			t.Fatalf("VerifySignature(%q, %q) = %v, want %s with a message", tsHeader, sigHeader, err, outlast.EUNAUTHORIZED)
		}
	})
}

// hmacHex is a partner's signature: HMAC-SHA256 of the timestamp header
// as sent, ".", and the body.
func hmacHex(secret []byte, tsHeader string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(tsHeader + "."))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// legal is the state machine of DESIGN.md §6, written out: the moves a
// payout may make. Terminal states have none.
var legal = map[[2]outlast.PayoutStatus]bool{
	{outlast.StatusPending, outlast.StatusDispatched}:   true,
	{outlast.StatusPending, outlast.StatusSucceeded}:    true,
	{outlast.StatusPending, outlast.StatusFailed}:       true,
	{outlast.StatusDispatched, outlast.StatusSucceeded}: true,
	{outlast.StatusDispatched, outlast.StatusFailed}:    true,
}

// fuzzStatuses are what a partner may report, the two last never valid.
var fuzzStatuses = []outlast.PayoutStatus{
	outlast.StatusDispatched, outlast.StatusSucceeded, outlast.StatusFailed, outlast.StatusPending, "paid",
}

// FuzzStateMachine drives two payouts of one account through a fuzzed
// sequence of partner reports, dispatches and rejections on the ledger
// the HTTP tests run over, checking after each step that Decide applies
// only legal moves on the payout's own channel, that a terminal state
// never changes, that every move is one version, that the account's
// money is where the payouts' states say, and that no failure reason
// keeps a control character.
func FuzzStateMachine(f *testing.F) {
	// Each step is two bytes: the payout (bit 0 of the first) and what
	// happens to it (report, dispatch, reject); the channel (bit 7 of the
	// second), the event id (bits 5-6) and the status reported (bits 0-4).
	f.Add([]byte{0, 0x00, 0, 0x21}, "declined")                                          // dispatched, then succeeded
	f.Add([]byte{2, 0x00, 0, 0x01, 0, 0x22, 0, 0x40}, "closed\r\n\x1b[31m")              // dispatch, succeed, a conflicting failure, a late dispatched
	f.Add([]byte{4, 0x00, 0, 0x02, 0, 0x21, 0, 0x21}, "x\x00y\u0085")                    // reject, report failed, succeeded, succeeded again
	f.Add([]byte{0, 0x85, 0, 0x03, 1, 0x24, 3, 0x80, 1, 0x01}, strings.Repeat("é", 300)) // another channel, pending, "paid", failover, the old channel
	f.Fuzz(func(t *testing.T, ops []byte, reason string) {
		m := ledgertest.NewMemory()
		ctx := context.Background()
		acct := ledgertest.Seed(t, m, "f", 10_000)
		ps := []*outlast.Payout{
			ledgertest.MustPayout(t, m, acct.Req("k1", 3000)),
			ledgertest.MustPayout(t, m, acct.Req("k2", 500)),
		}
		for i := 0; i+1 < len(ops) && i < 200; i += 2 {
			p := ps[ops[i]&1]
			channel := []string{"tcb", "acb"}[ops[i+1]>>7]
			switch (ops[i] >> 1) % 3 {
			case 0:
				n := &outlast.Notification{Channel: channel, EventID: "ev-" + strconv.Itoa(int(ops[i+1]>>5&3)), PayoutID: p.ID,
					PartnerRef: "ref-" + channel, Status: fuzzStatuses[int(ops[i+1]&31)%len(fuzzStatuses)], Reason: reason,
					OccurredAt: time.Now()}
				wantDecision(t, p, n)
				rs, err := m.Apply(ctx, outlast.FromLog, []*outlast.Notification{n})
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				// An invalid notification is rejected before Decide sees it.
				if r := rs[0]; n.Validate() == nil && r.Outcome != outlast.OutcomeDuplicate && r.Outcome != outlast.Decide(p, n).Outcome {
					t.Fatalf("Apply(%s → %s on %s) = %s, Decide says %s", p.Status, n.Status, n.Channel, r.Outcome, outlast.Decide(p, n).Outcome)
				}
			case 1:
				_, _ = m.MarkDispatched(ctx, p.ID, channel, "ref-"+channel)
			case 2:
				_, _ = m.RejectDispatch(ctx, p.ID, channel, reason, time.Time{})
			}
			ps = wantMoves(t, m, ps)
			wantMoney(t, m, acct.Account, 10_000, ps)
		}
	})
}

// wantDecision checks Decide on p, as it stands, against legal.
func wantDecision(t *testing.T, p *outlast.Payout, n *outlast.Notification) {
	t.Helper()
	r := outlast.Decide(p, n)
	sameChannel := p.Channel == "" || p.Channel == n.Channel
	if applies := legal[[2]outlast.PayoutStatus{p.Status, n.Status}] && sameChannel; (r.Outcome == outlast.OutcomeApplied) != applies {
		t.Fatalf("Decide(%s on %q, report %s on %q) = %s, want applied = %v", p.Status, p.Channel, n.Status, n.Channel, r.Outcome, applies)
	}
	if (r.Outcome == outlast.OutcomeRejected || r.Outcome == outlast.OutcomeConflict) && r.Reason == "" {
		t.Fatalf("Decide(%s, report %s) = %s without a reason", p.Status, n.Status, r.Outcome)
	}
}

// wantMoves compares each payout in m with before: a terminal payout is
// unchanged, any other moved only along legal, one version per move. It
// returns the payouts as they are now.
func wantMoves(t *testing.T, m *ledgertest.Memory, before []*outlast.Payout) []*outlast.Payout {
	t.Helper()
	now := make([]*outlast.Payout, len(before))
	for i, b := range before {
		p, _, err := m.Payout(context.Background(), b.ID)
		if err != nil {
			t.Fatalf("Payout(%s): %v", b.ID, err)
		}
		moved := p.Status != b.Status
		switch {
		case b.Status.Terminal() && (*p != *b):
			t.Fatalf("terminal payout changed: %+v, was %+v", *p, *b)
		case moved && !legal[[2]outlast.PayoutStatus{b.Status, p.Status}]:
			t.Fatalf("payout moved %s → %s", b.Status, p.Status)
		case moved && p.Version != b.Version+1, !moved && p.Version != b.Version:
			t.Fatalf("payout %s → %s went from version %d to %d", b.Status, p.Status, b.Version, p.Version)
		case len(p.FailureReason) > outlast.ReasonBytesMax || !utf8.ValidString(p.FailureReason) ||
			strings.IndexFunc(p.FailureReason, unicode.IsControl) >= 0:
			t.Fatalf("FailureReason %q is not clean text of at most %d bytes", p.FailureReason, outlast.ReasonBytesMax)
		}
		now[i] = p
	}
	return now
}

// wantMoney checks that the account's buckets are what its payouts'
// states make them: held while a payout is open or an exception holds its
// claim, paid out once it succeeded, available again once it failed,
// funded unchanged.
func wantMoney(t *testing.T, m *ledgertest.Memory, id string, funded int64, ps []*outlast.Payout) {
	t.Helper()
	a, _, err := m.Account(context.Background(), id)
	if err != nil {
		t.Fatalf("Account(%s): %v", id, err)
	}
	held, paidOut := ledgertest.ExceptionHolds(t, m, id), int64(0)
	for _, p := range ps {
		switch p.Status {
		case outlast.StatusPending, outlast.StatusDispatched:
			held += p.Amount
		case outlast.StatusSucceeded:
			paidOut += p.Amount
		}
	}
	if err := a.CheckInvariant(); err != nil || a.Funded != funded || a.Held != held || a.PaidOut != paidOut {
		t.Fatalf("account funded %d held %d paid_out %d (%v); payouts make it funded %d held %d paid_out %d",
			a.Funded, a.Held, a.PaidOut, err, funded, held, paidOut)
	}
}
