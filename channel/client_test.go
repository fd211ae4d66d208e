package channel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/partnersim"
)

func testPayout(id string) *outlast.Payout {
	return &outlast.Payout{ID: id, AccountID: "acc-1", Amount: 1200, Currency: "EUR", Destination: "DE89370400440532013000", Status: outlast.StatusPending}
}

// startBank runs a simulated bank without webhooks until the test ends.
func startBank(t *testing.T, name string, f partnersim.Faults) (*partnersim.Bank, *httptest.Server) {
	t.Helper()
	bank := partnersim.New(partnersim.Config{Name: name, PayDelay: 10 * time.Millisecond, Faults: f, Seed: 7, Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(bank)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = bank.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	return bank, srv
}

func TestSubmitClassification(t *testing.T) {
	tests := []struct {
		name      string
		code      int
		body      string
		wantRef   string
		rejected  bool
		reasonHas string
	}{
		{"accepted", 202, `{"partner_ref":"ref-1","status":"accepted"}`, "ref-1", false, ""},
		{"unprocessable", 422, `{"error":"invalid destination"}`, "", true, "invalid destination"},
		{"bad request", 400, `{"error":"amount too large"}`, "", true, "amount too large"},
		{"payment required", 402, `{"error":"insufficient funds at the bank"}`, "", true, "insufficient funds at the bank"},
		// A refusal counts only in the partner's own JSON, and only as
		// 400, 402 or 422: what a proxy or the transport says is not the
		// bank's word (issue 7).
		{"plain text 422", 422, `no such account`, "", false, ""},
		{"html 400 from a proxy", 400, `<html>400 Bad Request</html>`, "", false, ""},
		{"proxy auth", 407, `{"error":"proxy authentication required"}`, "", false, ""},
		{"too large", 413, `{"error":"request entity too large"}`, "", false, ""},
		{"misdirected", 421, `{"error":"misdirected request"}`, "", false, ""},
		{"too early", 425, `{"error":"too early"}`, "", false, ""},
		{"headers too large", 431, `{"error":"request header fields too large"}`, "", false, ""},
		{"gone", 410, `{"error":"gone"}`, "", false, ""},
		{"server error", 500, `{"error":"boom"}`, "", false, ""},
		{"unavailable", 503, ``, "", false, ""},
		{"gateway timeout", 504, ``, "", false, ""},
		{"request timeout", 408, ``, "", false, ""},
		{"throttled", 429, ``, "", false, ""},
		{"wrong url", 404, `404 page not found`, "", false, ""},
		{"conflict", 409, `{"error":"payout_id already used"}`, "", false, ""},
		{"unauthorized", 401, ``, "", false, ""},
		{"accepted without ref", 202, `{}`, "", false, ""},
		{"accepted with garbage", 202, `not json`, "", false, ""},
		// An answer that could mean two things is no answer.
		{"accepted with two refs", 202, `{"partner_ref":"ref-1","partner_ref":"ref-2"}`, "", false, ""},
		{"accepted with a ref by another case", 202, `{"PARTNER_REF":"ref-1"}`, "", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.code)
				fmt.Fprint(w, tt.body)
			}))
			defer srv.Close()
			ref, err := NewClient("tcb", srv.URL, ClientOptions{}).Submit(context.Background(), testPayout("p1"))
			switch {
			case tt.wantRef != "":
				if err != nil || ref != tt.wantRef {
					t.Fatalf("Submit = %q, %v; want %q, nil", ref, err, tt.wantRef)
				}
			case tt.rejected:
				reason, _ := RejectionReason(err)
				if !errors.Is(err, ErrRejected) || errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), tt.reasonHas) || reason != tt.reasonHas {
					t.Fatalf("Submit error = %v (reason %q); want ErrRejected with reason %q", err, reason, tt.reasonHas)
				}
			default:
				if !errors.Is(err, ErrAmbiguous) || errors.Is(err, ErrRejected) || outlast.ErrorCode(err) != outlast.EUNAVAILABLE || outlast.ErrorRetryAfter(err) <= 0 {
					t.Fatalf("Submit error = %v; want ErrAmbiguous, EUNAVAILABLE with RetryAfter", err)
				}
			}
		})
	}
}

func TestSubmitTimeoutIsAmbiguousAndQuick(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	c := NewClient("tcb", srv.URL, ClientOptions{Timeout: 100 * time.Millisecond})
	start := time.Now()
	_, err := c.Submit(context.Background(), testPayout("p1"))
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Submit took %s, want about the 100ms timeout", elapsed)
	}
	if !errors.Is(err, ErrAmbiguous) || errors.Is(err, ErrRejected) {
		t.Errorf("Submit error = %v, want ErrAmbiguous", err)
	}
}

func TestSubmitConnectionRefusedIsAmbiguous(t *testing.T) {
	addr := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
	_, err := NewClient("tcb", addr, ClientOptions{Timeout: time.Second}).Submit(context.Background(), testPayout("p1"))
	if !errors.Is(err, ErrAmbiguous) || outlast.ErrorCode(err) != outlast.EUNAVAILABLE {
		t.Errorf("Submit to a closed port = %v, want ErrAmbiguous EUNAVAILABLE", err)
	}
}

func TestSubmitOversizedAnswerIsAmbiguous(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"partner_ref":"r","pad":"%s"}`, strings.Repeat("x", ResponseBytesMax))
	}))
	defer srv.Close()
	_, err := NewClient("tcb", srv.URL, ClientOptions{}).Submit(context.Background(), testPayout("p1"))
	if !errors.Is(err, ErrAmbiguous) {
		t.Errorf("Submit with a %d-byte answer = %v, want ErrAmbiguous", ResponseBytesMax+30, err)
	}
}

func TestClientAgainstSimulatedBank(t *testing.T) {
	bank, srv := startBank(t, "tcb", partnersim.Faults{})
	c := NewClient("tcb", srv.URL, ClientOptions{})
	ctx := context.Background()
	if _, err := c.Status(ctx, "p1"); !errors.Is(err, ErrNotFound) || outlast.ErrorCode(err) != outlast.ENOTFOUND {
		t.Fatalf("Status before submit = %v, want ErrNotFound", err)
	}
	ref, err := c.Submit(ctx, testPayout("p1"))
	if err != nil {
		t.Fatalf("Submit = %v", err)
	}
	again, err := c.Submit(ctx, testPayout("p1"))
	if err != nil || again != ref {
		t.Fatalf("repeat Submit = %q, %v; want %q", again, err, ref)
	}
	changed := testPayout("p1")
	changed.Amount++
	if _, err := c.Submit(ctx, changed); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("Submit with changed amount = %v, want ErrAmbiguous (409 never fails a payout)", err)
	}
	testenv.WaitFor(t, 5*time.Second, "payout to settle", func() bool { return bank.Stats().Succeeded == 1 })
	st, err := c.Status(ctx, "p1")
	if err != nil || st.Status != outlast.StatusSucceeded || st.PartnerRef != ref || st.PayoutID != "p1" {
		t.Fatalf("Status = %+v, %v; want succeeded with ref %q", st, err, ref)
	}
	recs, err := c.Records(ctx)
	if err != nil || len(recs) != 1 || recs[0].PartnerRef != ref || recs[0].Amount != 1200 || recs[0].Status != outlast.StatusSucceeded {
		t.Fatalf("Records = %+v, %v; want one succeeded record with ref %q", recs, err, ref)
	}
	rej := testPayout("p2")
	rej.Destination = "REJECT-closed"
	if _, err := c.Submit(ctx, rej); !errors.Is(err, ErrRejected) {
		t.Errorf("Submit REJECT destination = %v, want ErrRejected", err)
	}
}

func TestStatusPlain404IsNotNotFound(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	_, err := NewClient("tcb", srv.URL, ClientOptions{}).Status(context.Background(), "p1")
	if errors.Is(err, ErrNotFound) || !errors.Is(err, ErrAmbiguous) {
		t.Errorf("Status on a plain 404 = %v, want ErrAmbiguous, not ErrNotFound", err)
	}
}

// A status answer that could mean two things is ambiguous: never a reason
// to fail or settle a payout. A member named by another case is only an
// unknown member: the exact "status" decides.
func TestStatusThatMeansTwoThingsIsAmbiguous(t *testing.T) {
	status := func(body string) (*Status, error) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, body)
		}))
		defer srv.Close()
		return NewClient("tcb", srv.URL, ClientOptions{}).Status(context.Background(), "p1")
	}
	for _, body := range []string{
		`{"payout_id":"p1","partner_ref":"r1","status":"failed","status":"succeeded"}`,
		"{\"payout_id\":\"p1\",\"partner_ref\":\"r1\",\"status\":\"failed\",\"reason\":\"\xff\"}",
	} {
		if st, err := status(body); !errors.Is(err, ErrAmbiguous) {
			t.Errorf("Status(%q) = %+v, %v; want ErrAmbiguous", body, st, err)
		}
	}
	body := `{"payout_id":"p1","partner_ref":"r1","status":"accepted","STATUS":"failed"}`
	if st, err := status(body); err != nil || st.Status != outlast.StatusDispatched {
		t.Errorf("Status(%s) = %+v, %v; want dispatched", body, st, err)
	}
}
