package main

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/partnersim"
)

func TestLostWebhooksReconciledSQLite(t *testing.T) {
	testLostWebhooksReconciled(t, "")
}

func TestLostWebhooksReconciledPostgres(t *testing.T) {
	testLostWebhooksReconciled(t, testenv.PostgresDSN(t))
}

// testLostWebhooksReconciled is issue 9's first test: the bank drops
// every final webhook for a window while payouts flow; after the window,
// with nobody acting, every payout reaches its true final state within
// the reconciler's threshold plus one cycle, and the audit against the
// bank's records passes.
func testLostWebhooksReconciled(t *testing.T, dsn string) {
	const (
		after   = 2 * time.Second
		every   = 500 * time.Millisecond
		inside  = 30 // payouts whose final webhook the bank drops
		outside = 10 // payouts after the window, told by webhook
	)
	s := startTestServiceWithBank(t, dsn,
		partnersim.Config{PayDelay: 50 * time.Millisecond, FailRate: 0.2, Faults: partnersim.Faults{DropRate: 1}},
		func(m *Main) {
			m.Config.ReconcileAfter, m.Config.ReconcileEvery, m.Config.ReconcileRate = after, every, 1000
		})
	ctx := context.Background()
	before, err := appliedCounts(s.Registry)
	if err != nil {
		t.Fatal(err)
	}
	key, accounts, err := demoSetup(ctx, s.admin, "lost-"+randomHex(4), 2)
	if err != nil {
		t.Fatal(err)
	}
	api := client.New(s.admin.BaseURL(), key)
	var ids []string
	create := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			p, _, err := api.CreatePayout(ctx, fmt.Sprintf("lost-%d", len(ids)),
				client.PayoutRequest{AccountID: accounts[len(ids)%2], Amount: int64(100 + len(ids)), Currency: "USD", Destination: fmt.Sprintf("DE%018d", len(ids))})
			if err != nil {
				t.Fatalf("create payout %d: %v", len(ids), err)
			}
			ids = append(ids, p.ID)
		}
	}
	create(inside)
	testenv.WaitFor(t, 30*time.Second, "the bank to settle every payout of the window, dropping its webhook", func() bool {
		return len(s.bank.DroppedPayouts()) == inside
	})
	// Every dropped payout was dispatched before it settled, so before now:
	// each is asked about at most After plus one cycle (Every, jittered by
	// a fifth) from now. The second of slack is for the query, the apply
	// and a slow (-race) machine, not for another cycle.
	closed := time.Now()
	s.bank.SetFaults(partnersim.Faults{})
	create(outside)
	deadline := after + every*6/5 + time.Second
	testenv.WaitFor(t, deadline, "every payout to reach its final state", func() bool {
		return finalCount(t, api, ids) == len(ids)
	})
	t.Logf("all %d payouts final %v after the window closed (threshold %v + cycle %v)", len(ids), time.Since(closed).Round(time.Millisecond), after, every)

	// True final states: the ledger agrees with the bank's records, and
	// the reconciler (not a webhook) told the dropped ones.
	var out bytes.Buffer
	ok, err := audit(ctx, s.DB, map[string]string{"tcb": s.bankURL}, &out)
	if err != nil || !ok {
		t.Fatalf("audit = %v, %v:\n%s", ok, err, out.String())
	}
	if recs := s.bank.Records(); len(recs) != len(ids) {
		t.Fatalf("bank has %d records, want %d", len(recs), len(ids))
	}
	now, err := appliedCounts(s.Registry)
	if err != nil {
		t.Fatal(err)
	}
	if got := now[appliedKey{"reconciler", "applied"}] - before[appliedKey{"reconciler", "applied"}]; got < inside {
		t.Fatalf("the reconciler applied %.0f answers, want at least the %d dropped webhooks", got, inside)
	}
}

// finalCount counts the payouts of ids that are succeeded or failed.
func finalCount(t *testing.T, api *client.Client, ids []string) int {
	t.Helper()
	n := 0
	for _, id := range ids {
		p, err := api.Payout(context.Background(), id)
		if err != nil {
			t.Fatalf("GET payout %s: %v", id, err)
		}
		if p.Status == outlast.StatusSucceeded || p.Status == outlast.StatusFailed {
			n++
		}
	}
	return n
}
