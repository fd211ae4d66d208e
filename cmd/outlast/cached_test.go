package main

import (
	"context"
	"testing"
	"time"

	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/testenv"
)

// TestReadsThroughCache: account and payout reads come from the cache, say
// so, and never show a state older than a write this instance made.
func TestReadsThroughCache(t *testing.T) {
	testenv.RequireTCP(t, "Redis", testenv.RedisAddr)
	s := startTestService(t, "", func(m *Main) { m.Config.Redis = "redis://" + testenv.RedisAddr + "/0" })
	ctx := context.Background()
	clientID := "cache-" + randomHex(4)
	key, accounts, err := demoSetup(ctx, s.admin, clientID, 1)
	if err != nil {
		t.Fatal(err)
	}
	api := client.New(s.admin.BaseURL(), key)
	get := func(path string) (source, age string) {
		t.Helper()
		resp, err := api.Do(ctx, "GET", path, nil, nil, nil)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return resp.Header.Get("Outlast-Source"), resp.Header.Get("Age")
	}
	get("/v1/accounts/" + accounts[0])
	if src, _ := get("/v1/accounts/" + accounts[0]); src != "memory" {
		t.Errorf("second account read: Outlast-Source = %q, want memory", src)
	}
	before, err := api.Account(ctx, accounts[0])
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := api.CreatePayout(ctx, "k1", client.PayoutRequest{AccountID: accounts[0], Amount: 700, Currency: "USD", Destination: "dest"})
	if err != nil {
		t.Fatal(err)
	}
	// The payout's hold must show at once: the write invalidated the account.
	after, err := api.Account(ctx, accounts[0])
	if err != nil {
		t.Fatal(err)
	}
	if after.Held != before.Held+700 || after.Available != before.Available-700 {
		t.Errorf("account after payout: held %d available %d; want held %d available %d (a stale cached read)",
			after.Held, after.Available, before.Held+700, before.Available-700)
	}
	if src, _ := get("/v1/payouts/" + p.ID); src != "memory" {
		t.Errorf("payout read after create: Outlast-Source = %q, want memory (written through)", src)
	}
	// The dispatcher's hand-over is written through too.
	testenv.WaitFor(t, 10*time.Second, "the cached payout to show dispatched", func() bool {
		got, err := api.Payout(ctx, p.ID)
		return err == nil && got.Status == "dispatched"
	})
}
