package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/testenv"
)

// TestServeStartsWithBrokerDown: an external broker that is down at start
// must not keep the service from taking payouts and notifications. Webhooks
// go to the database inbox; once the broker is up, the log takes over.
func TestServeStartsWithBrokerDown(t *testing.T) {
	natsPort := testenv.FreePort(t)
	s := startTestService(t, "", func(m *Main) { m.Config.NATS = fmt.Sprintf("nats://127.0.0.1:%d", natsPort) })
	ctx := context.Background()
	key, accounts, err := demoSetup(ctx, s.admin, "client-a", 1)
	if err != nil {
		t.Fatal(err)
	}
	api := client.New(s.admin.BaseURL(), key)
	notify := func(p *outlast.Payout, event string) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"event_id": event, "payout_id": p.ID,
			"status": "succeeded", "occurred_at": time.Now().UTC().Format(time.RFC3339Nano)})
		if st, code := raw(t, "POST", s.admin.BaseURL()+"/v1/partners/tcb/notifications", signedHeaders(s.secret, time.Now(), body), body); st != 200 {
			t.Fatalf("webhook = %d %s, want 200", st, code)
		}
		testenv.WaitFor(t, 20*time.Second, "payout "+p.ID+" to succeed", func() bool {
			got, _, err := s.DB.Payout(ctx, p.ID)
			return err == nil && got.Status == outlast.StatusSucceeded
		})
	}
	p1, _, err := api.CreatePayout(ctx, "k1", client.PayoutRequest{AccountID: accounts[0], Amount: 100, Currency: "USD", Destination: "dest"})
	if err != nil {
		t.Fatalf("createPayout with the broker down: %v", err)
	}
	notify(p1, "ev-1") // through the inbox
	if s.Log.Log() != nil {
		t.Fatal("log connected although the broker is down")
	}

	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: natsPort, JetStream: true,
		StoreDir: filepath.Join(t.TempDir(), "js"), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	testenv.WaitFor(t, 30*time.Second, "the log to connect", func() bool { return s.Log.Log() != nil })
	before := appliedCount(outlast.FromLog, outlast.OutcomeApplied)
	p2, _, err := api.CreatePayout(ctx, "k2", client.PayoutRequest{AccountID: accounts[0], Amount: 100, Currency: "USD", Destination: "dest"})
	if err != nil {
		t.Fatal(err)
	}
	notify(p2, "ev-2") // through the log
	if after := appliedCount(outlast.FromLog, outlast.OutcomeApplied); after <= before {
		t.Errorf("log-applied counter = %v after the broker came up, want > %v: the notification did not go through the log", after, before)
	}
}
