package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/testenv"
)

// TestExceptionsCLI: the bank's late success of a payout failed here is
// a paid_but_failed exception, which the audit reports; `outlast
// exceptions` lists it with the open counts, show prints its evidence,
// resolve book_paid books it as paid out, and then the audit is clean.
func TestExceptionsCLI(t *testing.T) {
	// The reconciler must not ask the bank about the payout meanwhile: the
	// test's webhooks are the bank's word here.
	s := startTestService(t, "", func(m *Main) { m.Config.ReconcileEvery = time.Hour })
	ctx := context.Background()
	key, accounts, err := demoSetup(ctx, s.admin, "client-x", 1)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := client.New(s.admin.BaseURL(), key).CreatePayout(ctx, "k1", client.PayoutRequest{AccountID: accounts[0], Amount: 2500, Currency: "USD", Destination: "dest"})
	if err != nil {
		t.Fatal(err)
	}
	s.webhook(t, "ev-fail", p.ID, outlast.StatusFailed)
	testenv.WaitFor(t, 30*time.Second, "the payout to fail", func() bool {
		got, _, err := s.DB.Payout(ctx, p.ID)
		return err == nil && got.Status == outlast.StatusFailed
	})
	s.webhook(t, "ev-late", p.ID, outlast.StatusSucceeded)
	var e *outlast.Exception
	testenv.WaitFor(t, 30*time.Second, "the late success to file an exception", func() bool {
		page, err := s.admin.Exceptions(ctx, client.ExceptionQuery{})
		if err != nil || len(page.Exceptions) != 1 {
			return false
		}
		e = page.Exceptions[0]
		return true
	})
	id := strconv.FormatInt(e.ID, 10)
	before, _, err := s.DB.Account(ctx, accounts[0])
	if err != nil {
		t.Fatal(err)
	}
	out, _ := mustCLI(t, 1, "audit", "--data-dir", s.Config.DataDir)
	wantIn(t, "audit with the exception open", out, "exception "+id)

	out, _ = mustCLI(t, 0, s.adminArgs("exceptions")...)
	wantIn(t, "exceptions", out, "ID  ", "KIND", id, "paid_but_failed", p.ID, accounts[0], "2500 USD", "open: 1 paid_but_failed")
	out, _ = mustCLI(t, 0, s.adminArgs("exceptions", "list", "--status", "resolved")...)
	wantIn(t, "exceptions list --status resolved", out, "no exceptions listed", "open: 1 paid_but_failed")
	out, _ = mustCLI(t, 0, s.adminArgs("exceptions", "list", "--json", "--payout", p.ID)...)
	var page client.ExceptionPage
	if err := json.Unmarshal([]byte(out), &page); err != nil || len(page.Exceptions) != 1 || page.Exceptions[0].ID != e.ID {
		t.Errorf("exceptions list --json = %s (%v), want the API's page with exception %d", out, err, e.ID)
	}
	out, _ = mustCLI(t, 0, s.adminArgs("exceptions", "show", id)...)
	out = strings.Join(strings.Fields(out), " ") // the table's padding aside
	wantIn(t, "exceptions show", out, "paid_but_failed, open", "claim 2500 USD held 2500 USD", "evidence: - ledger (",
		"- notification tcb/ev-late (", "succeeded under")

	_, errOut := mustCLI(t, 2, s.adminArgs("exceptions", "resolve", id, "--action", "book_paid")...)
	wantIn(t, "resolve without --reason", errOut, "--reason is required")
	out, _ = mustCLI(t, 0, s.adminArgs("exceptions", "resolve", id, "--action", "book_paid", "--reason", "tcb statement line 42")...)
	wantIn(t, "exceptions resolve", out, "resolved exception "+id, "as book_paid", "moved: held -2500, paid_out +2500",
		fmt.Sprintf("available %d, held 0, paid out 2500", before.Available))
	_, errOut = mustCLI(t, 1, s.adminArgs("exceptions", "resolve", id, "--action", "no_money", "--reason", "again")...)
	wantIn(t, "resolving twice", errOut, "409", "resolved already")
	out, _ = mustCLI(t, 0, s.adminArgs("exceptions", "show", id)...)
	wantIn(t, "exceptions show after resolving", out, "resolution:", "book_paid", "tcb statement line 42", "admin token from 127.0.0.1")

	out, _ = mustCLI(t, 0, "audit", "--data-dir", s.Config.DataDir)
	wantIn(t, "audit after resolving", out, "audit: OK")
}

// webhook sends the bank's signed report of status for payout as tcb.
func (s *testService) webhook(t *testing.T, event, payout string, status outlast.PayoutStatus) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"event_id": event, "payout_id": payout, "status": status,
		"occurred_at": time.Now().UTC().Format(time.RFC3339Nano)})
	if st, code := raw(t, "POST", s.admin.BaseURL()+"/v1/partners/tcb/notifications", signedHeaders(s.secret, time.Now(), body), body); st != 200 {
		t.Fatalf("webhook %s = %d %s, want 200", event, st, code)
	}
}
