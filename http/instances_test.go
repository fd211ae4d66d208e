package http

import (
	"context"
	"encoding/json"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/control"
	"github.com/outlast/outlast/store"
)

// controlHarness is the API over the fake ledger with a real control
// plane: the config, heartbeats and break-glass switch of a SQLite store.
// The instance has channels tcb, its start-up channel, and vcb, and
// reports the order the applied config makes of them.
func controlHarness(t *testing.T) (*harness, *control.Client, *store.DB) {
	t.Helper()
	db, err := store.Open(context.Background(), "sqlite:"+t.TempDir()+"/control.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var applied atomic.Pointer[outlast.ControlConfig]
	applied.Store(&outlast.ControlConfig{})
	have := []string{"tcb", "vcb"}
	cc, err := control.New(control.Config{Store: db, InstanceID: "i-1", Addr: "127.0.0.1:1",
		Apply: func(c *outlast.ControlConfig) { applied.Store(c) },
		Channels: func() (order, all []string) {
			return slices.DeleteFunc(applied.Load().Order("tcb"), func(name string) bool { return !slices.Contains(have, name) }), have
		},
		Health: func(ctx context.Context) []outlast.DependencyHealth {
			return []outlast.DependencyHealth{{Name: "redis", OK: false, Detail: "connection refused"}}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config, s *Services) { s.Control, s.Instances, s.Local = db, db, cc })
	return h, cc, db
}

// TestMaintenanceRefusesNewPayoutsOnly: maintenance from the config
// document refuses new payouts with 503, the operators' message and
// Retry-After, while reads, partner notifications and readiness go on.
func TestMaintenanceRefusesNewPayoutsOnly(t *testing.T) {
	h, cc, _ := controlHarness(t)
	h.mustStatus(h.payout("before", h.alice, payoutBody), 201)
	rec := h.do("PUT", "/admin/v1/config", adminToken, `{"maintenance":{"on":true,"message":"bank cut-over until 14:00","retry_after_seconds":120}}`, "If-Match", "0")
	h.mustStatus(rec, 200)
	if err := cc.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec = h.payout("during", h.alice, payoutBody)
	if msg := wantError(t, rec, 503, outlast.EUNAVAILABLE); msg != "bank cut-over until 14:00" {
		t.Fatalf("message %q, want the operators' one", msg)
	}
	if ra := rec.Header().Get("Retry-After"); ra != "120" {
		t.Fatalf("Retry-After = %q, want 120", ra)
	}
	// Even a replay of an accepted payout's key: the client comes back.
	wantError(t, h.payout("before", h.alice, payoutBody), 503, outlast.EUNAVAILABLE)
	h.mustStatus(h.do("GET", "/v1/payouts?account_id=acc-a", h.alice, ""), 200)
	h.mustStatus(h.do("GET", "/v1/accounts/acc-a", h.alice, ""), 200)
	h.mustStatus(h.webhook("tcb", tcbSecret, h.clock.Now(), notificationBody), 200)
	rec = h.do("GET", "/readyz", "", "")
	h.mustStatus(rec, 200)
	var ready struct {
		Payouts string                `json:"payouts"`
		Control outlast.ControlStatus `json:"control"`
	}
	decode(t, rec, &ready)
	if ready.Payouts != "paused" || ready.Control.AppliedVersion != 1 || ready.Control.Source != "config" {
		t.Fatalf("readyz = %+v, want paused at version 1 by the config", ready)
	}
	h.mustStatus(h.do("PUT", "/admin/v1/config", adminToken, `{"maintenance":{"on":false}}`, "If-Match", "1"), 200)
	if err := cc.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.mustStatus(h.payout("after", h.alice, payoutBody), 201)
}

// TestBreakGlassEndpoint: the local switch holds this instance in
// maintenance whatever the document says, shows in /readyz and
// /admin/v1/local/status, and is cleared by the same endpoint; it takes
// the admin token only and refuses a body without "on".
func TestBreakGlassEndpoint(t *testing.T) {
	h, _, _ := controlHarness(t)
	wantError(t, h.do("POST", "/admin/v1/local/maintenance", "", `{"on":true}`), 401, outlast.EUNAUTHORIZED)
	wantError(t, h.do("POST", "/admin/v1/local/maintenance", h.alice, `{"on":true}`), 401, outlast.EUNAUTHORIZED)
	wantError(t, h.do("POST", "/admin/v1/local/maintenance", adminToken, `{"message":"x"}`), 422, outlast.EVALIDATION)
	wantError(t, h.do("POST", "/admin/v1/local/maintenance", adminToken, `{"on":"yes"}`), 400, outlast.EINVALID)

	rec := h.do("POST", "/admin/v1/local/maintenance", adminToken, `{"on":true,"message":"database failover"}`)
	h.mustStatus(rec, 200)
	var st outlast.ControlStatus
	decode(t, rec, &st)
	if !st.Maintenance || st.Source != outlast.OverrideLocal || len(st.Overrides) != 1 || st.Overrides[0].Actor == "" {
		t.Fatalf("after the switch: %+v", st)
	}
	if msg := wantError(t, h.payout("k1", h.alice, payoutBody), 503, outlast.EUNAVAILABLE); msg != "database failover" {
		t.Fatalf("message %q", msg)
	}
	rec = h.do("GET", "/admin/v1/local/status", adminToken, "")
	h.mustStatus(rec, 200)
	var local struct {
		Control  outlast.ControlStatus   `json:"control"`
		Instance *outlast.InstanceStatus `json:"instance"`
	}
	decode(t, rec, &local)
	if !local.Control.Maintenance || local.Instance == nil || local.Instance.ID != "i-1" || len(local.Instance.Dependencies) != 1 ||
		!slices.Equal(local.Instance.ChannelOrder, []string{"tcb"}) || !slices.Equal(local.Instance.Channels, []string{"tcb", "vcb"}) {
		t.Fatalf("local status = %+v", local)
	}
	h.mustStatus(h.do("POST", "/admin/v1/local/maintenance", adminToken, `{"on":false}`), 200)
	h.mustStatus(h.payout("k2", h.alice, payoutBody), 201)
}

// TestListInstances: heartbeats are listed with whether each instance
// runs the current config version and whether it was seen recently.
func TestListInstances(t *testing.T) {
	h, _, db := controlHarness(t)
	db.Now = h.clock.Now
	h.mustStatus(h.do("PUT", "/admin/v1/config", adminToken, `{"maintenance":{"on":true}}`, "If-Match", "0"), 200)
	for _, is := range []*outlast.InstanceStatus{{ID: "old", AppliedVersion: 0}, {ID: "new", AppliedVersion: 1, Maintenance: true}} {
		if err := db.PutInstance(context.Background(), is); err != nil {
			t.Fatal(err)
		}
		h.clock.Advance(InstanceStaleAfter)
	}
	rec := h.do("GET", "/admin/v1/instances", adminToken, "")
	h.mustStatus(rec, 200)
	var out struct {
		ConfigVersion int64 `json:"config_version"`
		Instances     []struct {
			ID      string  `json:"id"`
			Applied bool    `json:"applied"`
			Stale   bool    `json:"stale"`
			Ago     float64 `json:"seen_ago_seconds"`
		} `json:"instances"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if out.ConfigVersion != 1 || len(out.Instances) != 2 {
		t.Fatalf("instances = %s", rec.Body)
	}
	n, o := out.Instances[0], out.Instances[1]
	if n.ID != "new" || !n.Applied || n.Stale || o.ID != "old" || o.Applied || !o.Stale || o.Ago != (2*InstanceStaleAfter).Seconds() {
		t.Fatalf("instances = %s", rec.Body)
	}
	wantError(t, h.do("GET", "/admin/v1/instances", h.alice, ""), 401, outlast.EUNAUTHORIZED)
}
