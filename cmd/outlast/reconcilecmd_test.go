package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/partnersim"
	"github.com/outlast/outlast/reconcile"
	"github.com/outlast/outlast/store"
)

func TestReconcileCommandSQLite(t *testing.T) {
	testReconcileCommand(t, "")
}

func TestReconcileCommandPostgres(t *testing.T) {
	testReconcileCommand(t, testenv.PostgresDSN(t))
}

// testReconcileCommand: the bank drops every final webhook, so the ledger
// is behind it and the audit fails; `outlast reconcile --dry-run` says what
// it would repair and changes nothing; `outlast reconcile` repairs every
// payout from the bank's records, exits 0, and the audit then passes; a
// second run finds nothing to do.
func testReconcileCommand(t *testing.T, dsn string) {
	const payouts = 12
	s := startTestServiceWithBank(t, dsn,
		partnersim.Config{PayDelay: 20 * time.Millisecond, FailRate: 0.5, Faults: partnersim.Faults{DropRate: 1}},
		func(m *Main) {
			// The serve's own reconciler must not get there first.
			m.Config.ReconcileAfter = time.Hour
		})
	ctx := context.Background()
	key, accounts, err := demoSetup(ctx, s.admin, "rec-"+randomHex(4), 1)
	if err != nil {
		t.Fatal(err)
	}
	api := client.New(s.admin.BaseURL(), key)
	var ids []string
	for i := 0; i < payouts; i++ {
		p, _, err := api.CreatePayout(ctx, fmt.Sprintf("rec-%d", i), client.PayoutRequest{AccountID: accounts[0], Amount: int64(100 + i), Currency: "USD", Destination: fmt.Sprintf("DE%018d", i)})
		if err != nil {
			t.Fatalf("create payout %d: %v", i, err)
		}
		ids = append(ids, p.ID)
	}
	testenv.WaitFor(t, 30*time.Second, "the bank to settle every payout, dropping its webhook", func() bool {
		return len(s.bank.DroppedPayouts()) == payouts
	})
	if n := finalCount(t, api, ids); n != 0 {
		t.Fatalf("%d payouts final before reconcile; want none (every webhook dropped)", n)
	}
	// The bank answers before the dispatcher records the hand-over; a
	// payout still pending here is in flight, not a repair.
	testenv.WaitFor(t, 30*time.Second, "every payout recorded as dispatched", func() bool {
		return storedCount(t, s, ids, outlast.StatusDispatched) == payouts
	})
	where := []string{"--data-dir", s.Config.DataDir}
	if dsn != "" {
		where = []string{"--db", dsn}
	}
	partner := []string{"--partner", "tcb=" + s.bankURL}
	args := func(cmd string, extra ...string) []string {
		return append(append(append([]string{cmd}, where...), partner...), extra...)
	}

	out, _ := mustCLI(t, 1, args("audit")...)
	wantIn(t, "audit of a ledger behind its bank", out, "audit: FAILED")

	out, _ = mustCLI(t, 0, args("reconcile", "--dry-run", "--json")...)
	var dry reconcileReport
	if i := indexJSON(out); i < 0 || json.Unmarshal([]byte(out[i:]), &dry) != nil || len(dry.Partners) != 1 ||
		len(dry.Partners[0].Repairs) != payouts || !dry.OK || !dry.DryRun {
		t.Fatalf("reconcile --dry-run --json printed\n%s\nwant %d repairs planned, nothing for a human", out, payouts)
	}
	if n := storedFinal(t, s, ids); n != 0 {
		t.Fatalf("%d payouts final after a dry run; want none", n)
	}

	out, _ = mustCLI(t, 0, args("reconcile")...)
	t.Logf("outlast reconcile:\n%s", out)
	wantIn(t, "reconcile", out, "tcb", fmt.Sprintf("%d", payouts), "repair: tcb "+ids[0], "applied", "reconcile: OK")
	// Read from the store: the service's read cache learns of a change
	// made by another process only when its entry expires.
	if n := storedFinal(t, s, ids); n != payouts {
		t.Fatalf("%d of %d payouts final after reconcile", n, payouts)
	}
	for _, r := range s.bank.Records() {
		p, _, err := s.DB.Payout(ctx, r.PayoutID)
		if err != nil || p.Status != r.Status {
			t.Fatalf("payout %s = %v, %v; want the bank's %s", r.PayoutID, p, err, r.Status)
		}
	}
	out, _ = mustCLI(t, 0, args("audit")...)
	wantIn(t, "audit after reconcile", out, "audit: OK")

	out, _ = mustCLI(t, 0, args("reconcile", "--json")...)
	var again reconcileReport
	if i := indexJSON(out); i < 0 || json.Unmarshal([]byte(out[i:]), &again) != nil || len(again.Partners) != 1 ||
		len(again.Partners[0].Repairs) != 0 || !again.OK {
		t.Fatalf("second reconcile --json printed\n%s\nwant nothing to repair", out)
	}
}

// storedFinal counts the payouts of ids that the store has succeeded or
// failed.
func storedFinal(t *testing.T, s *testService, ids []string) int {
	t.Helper()
	return storedCount(t, s, ids, outlast.StatusSucceeded) + storedCount(t, s, ids, outlast.StatusFailed)
}

// storedCount counts the payouts of ids in status in the database.
func storedCount(t *testing.T, s *testService, ids []string, status outlast.PayoutStatus) int {
	t.Helper()
	n := 0
	for _, id := range ids {
		p, _, err := s.DB.Payout(context.Background(), id)
		if err != nil {
			t.Fatalf("Payout(%s): %v", id, err)
		}
		if p.Status == status {
			n++
		}
	}
	return n
}

// TestReconcileUsage: no partner, or no ledger, is a usage error.
func TestReconcileUsage(t *testing.T) {
	_, errOut := mustCLI(t, 2, "reconcile", "--data-dir", t.TempDir())
	wantIn(t, "reconcile without --partner", errOut, "--partner")
	_, errOut = mustCLI(t, 2, "reconcile", "--data-dir", t.TempDir(), "--partner", "tcb=http://127.0.0.1:1")
	wantIn(t, "reconcile without a ledger", errOut, "holds no ledger")
}

// TestReconcileNeedsHuman: a payout failed here that the bank paid is not
// repaired — its money would move back — but listed for a human, in the
// table and the JSON, with exit status 1; the ledger is left as it was.
func TestReconcileNeedsHuman(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(dir, ledgerFile))
	if err != nil {
		t.Fatal(err)
	}
	f := ledgertest.Seed(t, db, "human", 1000)
	p := ledgertest.MustPayout(t, db, f.Req("p1", 250))
	if _, err := db.MarkDispatched(ctx, p.ID, "tcb", "ref-1"); err != nil {
		t.Fatal(err)
	}
	fail := ledgertest.Note(p, outlast.StatusFailed)
	fail.PartnerRef = "ref-1"
	ledgertest.WantOutcomes(t, ledgertest.Apply(t, db, fail), outlast.OutcomeApplied)
	db.Close()
	paid := []outlast.PartnerRecord{{PayoutID: p.ID, PartnerRef: "ref-1", Amount: p.Amount, Currency: p.Currency, Status: outlast.StatusSucceeded}}
	bank := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(paid)
	}))
	defer bank.Close()

	out, _ := mustCLI(t, 1, "reconcile", "--data-dir", dir, "--partner", "tcb="+bank.URL)
	wantIn(t, "reconcile of a failed payout the bank paid", out, "needs a human: tcb "+p.ID, "reconcile: FAILED")
	out, _ = mustCLI(t, 1, "reconcile", "--data-dir", dir, "--partner", "tcb="+bank.URL, "--json")
	var rep reconcileReport
	if i := indexJSON(out); i < 0 || json.Unmarshal([]byte(out[i:]), &rep) != nil || rep.OK || len(rep.Partners) != 1 ||
		len(rep.Partners[0].ForHuman) != 1 || rep.Partners[0].ForHuman[0].Kind != reconcile.KindPaidNotSucceeded {
		t.Fatalf("reconcile --json printed\n%s\nwant the payout paid but failed here for a human", out)
	}
	db, err = store.Open(ctx, filepath.Join(dir, ledgerFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got, _, err := db.Payout(ctx, p.ID); err != nil || got.Status != outlast.StatusFailed {
		t.Fatalf("Payout = %v, %v; want still failed", got, err)
	}
}
