package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/partnersim"
)

// TestMaintenanceKeepsAcceptedPayoutsMoving: maintenance refuses new
// payouts only. A payout accepted before it, still waiting for its bank,
// is dispatched while maintenance is on, and the bank's notification of
// it is applied; new payouts stay refused throughout. On SQLite and
// PostgreSQL.
func TestMaintenanceKeepsAcceptedPayoutsMoving(t *testing.T) {
	testenv.EachDatabase(t, func(t *testing.T, dsn string) {
		s := startTestService(t, dsn)
		ctx := context.Background()
		key, accounts, err := demoSetup(ctx, s.admin, "client-m", 1)
		if err != nil {
			t.Fatal(err)
		}
		s.bank.SetFaults(partnersim.Faults{Down: true}) // the payout waits before its bank
		p, status, err := client.New(s.admin.BaseURL(), key).CreatePayout(ctx, "before", client.PayoutRequest{AccountID: accounts[0], Amount: 100, Currency: "USD", Destination: "dest"})
		if err != nil || status != 201 || p.Status != outlast.StatusPending {
			t.Fatalf("payout before maintenance = %+v, %d, %v; want 201 pending", p, status, err)
		}

		cur, err := s.DB.ControlConfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cur.Maintenance = outlast.Maintenance{On: true, Message: "paused for the test"}
		if _, err := s.DB.PutControlConfig(ctx, cur, cur.Version, "test", "maintenance"); err != nil {
			t.Fatal(err)
		}
		refused := func(what string) {
			t.Helper()
			if st, msg, _ := tryPayout(t, s.admin.BaseURL(), key, "during-"+what, accounts[0]); st != 503 || msg != "paused for the test" {
				t.Fatalf("new payout %s = %d %q, want the maintenance 503", what, st, msg)
			}
		}
		testenv.WaitFor(t, 5*time.Second, "maintenance applied", func() bool { return s.Control.Maintenance() != nil })
		refused("once maintenance is on")

		s.bank.SetFaults(partnersim.Faults{}) // the bank is back
		var ref string
		testenv.WaitFor(t, 30*time.Second, "the accepted payout dispatched during maintenance", func() bool {
			got, err := s.admin.Payout(ctx, p.ID)
			if err == nil {
				ref = got.PartnerRef
			}
			return err == nil && got.Status == outlast.StatusDispatched
		})
		event, _ := json.Marshal(map[string]any{"event_id": "ev-" + p.ID, "payout_id": p.ID, "partner_ref": ref,
			"status": "succeeded", "occurred_at": time.Now().UTC().Format(time.RFC3339)})
		if st, body := raw(t, "POST", s.admin.BaseURL()+"/v1/partners/tcb/notifications", signedHeaders(s.secret, time.Now(), event), event); st != 200 {
			t.Fatalf("webhook during maintenance = %d %s, want 200", st, body)
		}
		testenv.WaitFor(t, 30*time.Second, "the notification applied during maintenance", func() bool {
			got, err := s.admin.Payout(ctx, p.ID)
			return err == nil && got.Status == outlast.StatusSucceeded
		})
		refused("after the payout settled")
	})
}
