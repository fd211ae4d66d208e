package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/testenv"
)

// adminArgs are the flags that point a command at s's admin API.
func (s *testService) adminArgs(args ...string) []string {
	return append(args, "--url", s.admin.BaseURL(), "--admin-token", "test-admin")
}

// mustCLI runs outlast with args and fails t unless it exits with code.
func mustCLI(t *testing.T, code int, args ...string) (stdout, stderr string) {
	t.Helper()
	got, out, errOut := outlastCLI(t, args...)
	if got != code {
		t.Fatalf("outlast %s = exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), got, code, out, errOut)
	}
	return out, errOut
}

func wantIn(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s printed\n%s\nwant %q in it", what, got, w)
		}
	}
}

// tryPayout sends a payout and returns the status, the error message, if
// any, and Retry-After.
func tryPayout(t *testing.T, url, key, idemKey, account string) (status int, message, retryAfter string) {
	t.Helper()
	_, status, err := client.New(url, key).CreatePayout(context.Background(), idemKey,
		client.PayoutRequest{AccountID: account, Amount: 100, Currency: "USD", Destination: "dest"})
	var se *client.StatusError
	switch {
	case errors.As(err, &se):
		return status, se.Err.Message, se.Header.Get("Retry-After")
	case err != nil:
		t.Fatalf("POST /v1/payouts: %v", err)
	}
	return status, "", ""
}

// TestAdminMaintenance: maintenance on through the config reaches the
// instance before the command returns, refuses payouts with the message
// and Retry-After given, shows in status and history; off resumes them.
func TestAdminMaintenance(t *testing.T) {
	s := startTestService(t, "")
	ctx := context.Background()
	key, accounts, err := demoSetup(ctx, s.admin, "client-a", 1)
	if err != nil {
		t.Fatal(err)
	}
	id := s.Control.Status().InstanceID
	out, _ := mustCLI(t, 0, s.adminArgs("admin", "maintenance", "on", "--message", "bank cut-over", "--retry-after", "2m", "--reason", "cut-over at 14:00")...)
	wantIn(t, "maintenance on", out, "config version 1: maintenance on", "applied by "+id, "every live instance (1) runs version 1")
	// The command waited: the instance runs it already.
	if st, msg, ra := tryPayout(t, s.admin.BaseURL(), key, "k1", accounts[0]); st != 503 || msg != "bank cut-over" || ra != "120" {
		t.Errorf("payout during maintenance = %d %q Retry-After %q, want 503 \"bank cut-over\" 120", st, msg, ra)
	}

	out, _ = mustCLI(t, 0, s.adminArgs("admin", "status")...)
	wantIn(t, "admin status", out, "config version 1, changed", `by admin token from 127.0.0.1: "cut-over at 14:00"`,
		`maintenance: ON: new payouts refused with "bank cut-over", Retry-After 2m0s`,
		id, "1 (current)", "on (config)", "database ok", "log ok", "channel:tcb closed", "1 instance\n")
	out, _ = mustCLI(t, 0, s.adminArgs("admin", "status", "--json")...)
	var list client.Instances
	if err := json.Unmarshal([]byte(out), &list); err != nil || list.ConfigVersion != 1 || len(list.Instances) != 1 ||
		!list.Instances[0].Maintenance || list.Instances[0].ID != id {
		t.Errorf("admin status --json = %s (%v), want the API's instances: %s at version 1 in maintenance", out, err, id)
	}

	out, _ = mustCLI(t, 0, s.adminArgs("admin", "maintenance", "off")...)
	wantIn(t, "maintenance off", out, "config version 2: maintenance off", "applied by "+id)
	if st, msg, _ := tryPayout(t, s.admin.BaseURL(), key, "k1", accounts[0]); st != 201 {
		t.Errorf("payout after maintenance off = %d %q, want 201", st, msg)
	}
	out, _ = mustCLI(t, 0, s.adminArgs("admin", "maintenance", "off", "--wait", "0")...)
	wantIn(t, "maintenance off again", out, "config version 2 already says so: nothing changed")

	out, _ = mustCLI(t, 0, s.adminArgs("admin", "history")...)
	wantIn(t, "admin history", out, "version 2 ", "why: outlast admin maintenance off", "maintenance: ON: new payouts refused with \"bank cut-over\", Retry-After 2m0s → off",
		"version 1 ", "why: cut-over at 14:00", "maintenance: off → ON")
	if i, j := strings.Index(out, "version 2 "), strings.Index(out, "version 1 "); i > j {
		t.Errorf("admin history lists version 1 before version 2:\n%s", out)
	}
	out, _ = mustCLI(t, 0, s.adminArgs("admin", "history", "--limit", "1")...)
	if strings.Contains(out, "version 1 ") {
		t.Errorf("admin history --limit 1 printed\n%s\nwant only version 2", out)
	}

	for _, bad := range [][]string{{"admin", "maintenance"}, {"admin", "maintenance", "maybe"}, {"admin", "maintenance", "off", "--message", "x"},
		{"admin", "maintenance", "on", "--retry-after", "1.5s"}, {"admin", "maintenance", "on", "--local", "--reason", "x"}, {"admin", "history", "--limit", "0"}} {
		_, errOut := mustCLI(t, 2, s.adminArgs(bad...)...)
		wantIn(t, strings.Join(bad, " "), errOut, "Run 'outlast admin ")
	}
	_, errOut := mustCLI(t, 1, "admin", "status", "--url", s.admin.BaseURL(), "--admin-token", "wrong")
	wantIn(t, "admin status with a wrong token", errOut, "the admin token was refused", "--admin-token-file")
}

// TestAdminWaitsForEveryInstance: an instance seen recently that does not
// apply the change makes the command fail once --wait is over, naming it;
// one not seen recently is skipped.
func TestAdminWaitsForEveryInstance(t *testing.T) {
	s := startTestService(t, "")
	ctx := context.Background()
	if err := s.DB.PutInstance(ctx, &outlast.InstanceStatus{ID: "ghost", Addr: "10.0.0.9:8080"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, errOut := mustCLI(t, 1, s.adminArgs("admin", "maintenance", "on", "--wait", "1s")...)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the command took %s with --wait 1s", d)
	}
	wantIn(t, "maintenance on with a ghost instance", out, "config version 1: maintenance on",
		"applied by "+s.Control.Status().InstanceID, "NOT applied by ghost (10.0.0.9:8080): still at version 0")
	wantIn(t, "maintenance on with a ghost instance (stderr)", errOut, "1 instance did not apply version 1 within 1s")
	// The change itself was made: it is the waiting that failed.
	if cfg, err := s.DB.ControlConfig(ctx); err != nil || !cfg.Maintenance.On {
		t.Errorf("config = %+v, %v; want maintenance on", cfg, err)
	}
}

// TestAdminChangeRetriesOnConflict: another operator's change between the
// read and the write (412) does not fail the command and is not
// overwritten: the change is made again on top of it.
func TestAdminChangeRetriesOnConflict(t *testing.T) {
	s := startTestService(t, "")
	ctx := context.Background()
	// The other operator's change: a setting this change does not touch.
	interfere := func(attempt int) {
		cur, err := s.DB.ControlConfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cur.Channels["acb"] = outlast.ChannelConfig{Enabled: false}
		cur.Maintenance.RetryAfterSeconds = 60 + attempt
		if _, err := s.DB.PutControlConfig(ctx, cur, cur.Version, "other operator", "meanwhile"); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	ch := &configChanger{api: s.admin, out: &out, beforePut: func(attempt int) {
		if attempt <= 2 {
			interfere(attempt)
		}
	}}
	next, changed, err := ch.change(ctx, "conflict test", func(c *outlast.ControlConfig) (bool, error) {
		c.Maintenance.On, c.Maintenance.Message = true, "paused"
		return true, nil
	})
	if err != nil || !changed {
		t.Fatalf("change = %v, %v; want it made after two conflicts", changed, err)
	}
	want := outlast.Maintenance{On: true, Message: "paused", RetryAfterSeconds: 62}
	if _, ok := next.Channels["acb"]; next.Version != 3 || next.Maintenance != want || !ok {
		t.Errorf("config after the change = %+v, want version 3 with the other operator's acb and retry_after_seconds 62 kept, and maintenance on", next)
	}
	if n := strings.Count(out.String(), "the config changed since version"); n != 2 {
		t.Errorf("printed\n%s\nwant the conflict reported twice", out.String())
	}
	hist, err := s.DB.ControlHistory(ctx, 10)
	if err != nil || len(hist) != 3 || hist[0].Reason != "conflict test" || hist[1].Actor != "other operator" {
		t.Errorf("history = %+v, %v; want the two other changes and then this one", hist, err)
	}

	// Losing every time, it gives up, saying so, and writes nothing.
	ch = &configChanger{api: s.admin, out: &bytes.Buffer{}, beforePut: interfere}
	_, _, err = ch.change(ctx, "always loses", func(c *outlast.ControlConfig) (bool, error) {
		c.Maintenance.On = false
		return true, nil
	})
	if err == nil || !strings.Contains(err.Error(), "other changes kept winning") {
		t.Errorf("change losing every race = %v, want it to give up", err)
	}
	if cur, err := s.DB.ControlConfig(ctx); err != nil || !cur.Maintenance.On || cur.Version != 3+configPutAttemptsMax {
		t.Errorf("config = %+v, %v; want maintenance still on at version %d", cur, err, 3+configPutAttemptsMax)
	}
}

// TestAdminChannel: use, enable and disable, and the refusals that keep
// the config sensible. The channel an instance was started with counts
// as the active one while the config names none.
func TestAdminChannel(t *testing.T) {
	s := startTestService(t, "", func(m *Main) {
		m.Config.Channels["acb"] = m.Config.Channels["tcb"]
		m.Config.ChannelSecrets["acb"] = "acb-secret"
		m.Config.ActiveChannel = "tcb" // not the first by name
	})
	ctx := context.Background()
	order := func(want ...string) {
		t.Helper()
		if got := s.Router.Order(); !slices.Equal(got, want) {
			t.Errorf("Router.Order() = %v, want %v", got, want)
		}
	}
	config := func() *outlast.ControlConfig {
		t.Helper()
		c, err := s.DB.ControlConfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var out string
	testenv.WaitFor(t, 10*time.Second, "status to show the start-up channel from the heartbeat", func() bool {
		// The heartbeat in the database, not the local view status falls
		// back to when the instances cannot be listed (a loaded machine).
		if is, err := s.DB.Instances(ctx); err != nil || len(is) != 1 || len(is[0].ChannelOrder) == 0 {
			return false
		}
		out, _ = mustCLI(t, 0, s.adminArgs("admin", "status")...)
		return strings.Contains(out, "channels: active tcb (each instance's start-up channel; the config sets none)")
	})
	wantIn(t, "status at version 0", out, "CHANNEL ORDER", " tcb ")
	out, _ = mustCLI(t, 0, s.adminArgs("admin", "channel", "use", "acb")...)
	wantIn(t, "channel use acb", out, "config version 1: channel use acb", "every live instance (1) runs version 1",
		"the instances sent new payouts to tcb (their serve --active-channel), now first in the fallback order")
	if strings.Contains(out, "note:") {
		t.Errorf("channel use acb printed\n%s\nwant no note: the start-up channel is known", out)
	}
	if c := config(); c.ActiveChannel != "acb" || !slices.Equal(c.Fallback, []string{"tcb"}) || !c.Channels["tcb"].Enabled {
		t.Errorf("config after use acb = %+v, want acb active, tcb (the start-up channel) the fallback", c)
	}
	order("acb", "tcb")
	mustCLI(t, 0, s.adminArgs("admin", "channel", "use", "tcb")...)
	if c := config(); c.ActiveChannel != "tcb" || !slices.Equal(c.Fallback, []string{"acb"}) || !c.Channels["acb"].Enabled || !c.Channels["tcb"].Enabled {
		t.Errorf("config after use acb, use tcb = %+v, want tcb active, acb the fallback", c)
	}
	order("tcb", "acb")

	_, errOut := mustCLI(t, 1, s.adminArgs("admin", "channel", "disable", "tcb")...)
	wantIn(t, "disable the active channel", errOut, "tcb is the active channel", "outlast admin channel use")
	mustCLI(t, 0, s.adminArgs("admin", "channel", "disable", "acb")...)
	order("tcb")
	out, _ = mustCLI(t, 0, s.adminArgs("admin", "status")...)
	wantIn(t, "status with acb disabled", out, "channels: active tcb, then acb; disabled: acb", "channel:acb disabled", " tcb ")
	_, errOut = mustCLI(t, 1, s.adminArgs("admin", "channel", "use", "acb")...)
	wantIn(t, "use a disabled channel", errOut, "channel acb is disabled: enable it first (outlast admin channel enable acb)")
	mustCLI(t, 0, s.adminArgs("admin", "channel", "enable", "acb")...)
	mustCLI(t, 0, s.adminArgs("admin", "channel", "use", "acb", "--reason", "tcb is slow")...)
	if c := config(); c.ActiveChannel != "acb" || !slices.Equal(c.Fallback, []string{"tcb"}) || c.Version != 5 {
		t.Errorf("config = %+v, want version 5, acb active, tcb the fallback", c)
	}
	order("acb", "tcb")
	out, _ = mustCLI(t, 0, s.adminArgs("admin", "history", "--limit", "1")...)
	wantIn(t, "history of use acb", out, "why: tcb is slow", `active channel: "tcb" → "acb"`, "fallback: [acb] → [tcb]")

	_, errOut = mustCLI(t, 1, s.adminArgs("admin", "channel", "use", "tbc")...)
	wantIn(t, "use a typo", errOut, "no instance seen recently serves channel tbc (they serve acb, tcb)", "--force")
	mustCLI(t, 2, s.adminArgs("admin", "channel", "use", "no/such")...)
	mustCLI(t, 2, s.adminArgs("admin", "channel", "use")...)
	if c := config(); c.Version != 5 {
		t.Errorf("config version = %d after refused changes, want 5", c.Version)
	}
	out, _ = mustCLI(t, 0, s.adminArgs("admin", "status")...)
	wantIn(t, "status with acb active", out, " acb>tcb ")

	// Back to a config without an active channel, and an instance
	// started with another channel: they disagree, so nothing is known
	// to go to the fallback order, and the command says so.
	cur := config()
	cur.ActiveChannel, cur.Fallback = "", nil
	if _, err := s.DB.PutControlConfig(ctx, cur, cur.Version, "test", "none active"); err != nil {
		t.Fatal(err)
	}
	id := s.Control.Status().InstanceID
	testenv.WaitFor(t, 10*time.Second, "the heartbeat of version 6", func() bool {
		list, err := s.DB.Instances(ctx)
		return err == nil && len(list) == 1 && list[0].ID == id && list[0].AppliedVersion == 6
	})
	ghost := func() {
		t.Helper()
		if err := s.DB.PutInstance(ctx, &outlast.InstanceStatus{ID: "ghost", ChannelOrder: []string{"acb"}, Channels: []string{"acb"}}); err != nil {
			t.Fatal(err)
		}
	}
	ghost()
	out, _ = mustCLI(t, 0, s.adminArgs("admin", "channel", "use", "acb", "--wait", "0")...)
	wantIn(t, "use with instances that disagree", out, "config version 7: channel use acb",
		"note: the config named no active channel before, and the instances seen recently do not all send new payouts to one channel")
	if c := config(); c.ActiveChannel != "acb" || len(c.Fallback) != 0 {
		t.Errorf("config = %+v, want acb active and no fallback", c)
	}
	mustCLI(t, 0, s.adminArgs("admin", "channel", "use", "tcb", "--wait", "0")...)
	ghost()
	out, _ = mustCLI(t, 0, s.adminArgs("admin", "status")...)
	wantIn(t, "status with an instance lacking the active channel", out, "channels: active tcb, then acb", " acb (LACKS tcb) ")
}

// TestAdminWithDatabaseDown: with the database stopped the config cannot
// change and the command says what to do instead; the break-glass switch
// of one instance works, and status shows that instance alone, saying so.
func TestAdminWithDatabaseDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a private PostgreSQL")
	}
	pg := testenv.StartPostgres(t)
	s := startTestService(t, pg.DSN())
	ctx := context.Background()
	key, accounts, err := demoSetup(ctx, s.admin, "client-a", 1)
	if err != nil {
		t.Fatal(err)
	}
	id := s.Control.Status().InstanceID
	pg.Stop()

	_, errOut := mustCLI(t, 1, s.adminArgs("admin", "maintenance", "on")...)
	wantIn(t, "maintenance on with the database down", errOut, "cannot reach its database",
		"outlast admin maintenance on --local --url http://INSTANCE", "--override-file")
	out, errOut := mustCLI(t, 0, s.adminArgs("admin", "status")...)
	wantIn(t, "status with the database down (stderr)", errOut, "ONLY THE INSTANCE AT "+s.admin.BaseURL()+" IS SHOWN")
	wantIn(t, "status with the database down", out, "instance "+id, "only this one: the database is down", "maintenance: off",
		"channel order: tcb\n", "database DOWN")

	out, _ = mustCLI(t, 0, s.adminArgs("admin", "maintenance", "on", "--local", "--message", "database down: paused")...)
	wantIn(t, "maintenance on --local", out, "instance "+id, "maintenance on (local switch)", "maintenance off --local --url "+s.admin.BaseURL())
	if st, msg, ra := tryPayout(t, s.admin.BaseURL(), key, "k1", accounts[0]); st != 503 || msg != "database down: paused" || ra == "" {
		t.Errorf("payout = %d %q Retry-After %q, want 503 with the local switch's message and Retry-After", st, msg, ra)
	}
	testenv.WaitFor(t, 20*time.Second, "status to show the local switch and the stale config", func() bool {
		out, _ = mustCLI(t, 0, s.adminArgs("admin", "status")...)
		return strings.Contains(out, `maintenance: on (local switch): "database down: paused"`) && strings.Contains(out, "STALE")
	})
	out, _ = mustCLI(t, 0, s.adminArgs("admin", "status", "--json")...)
	var st client.LocalStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || !st.Control.Maintenance || st.Control.Source != outlast.OverrideLocal {
		t.Errorf("status --json = %s (%v), want the local status in maintenance by the local switch", out, err)
	}

	out, _ = mustCLI(t, 0, s.adminArgs("admin", "maintenance", "off", "--local")...)
	wantIn(t, "maintenance off --local", out, "local switch cleared; it takes new payouts")
	if st, msg, _ := tryPayout(t, s.admin.BaseURL(), key, "k1", accounts[0]); st != 503 || msg == "database down: paused" {
		t.Errorf("payout = %d %q, want the database's 503, not maintenance", st, msg)
	}
}

// TestAdvertiseAddr: an instance listening on every interface is shown in
// heartbeats by this machine's hostname, never 127.0.0.1 (which would send
// an operator to their own machine); --advertise-addr says it outright.
func TestAdvertiseAddr(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no hostname:", err)
	}
	s := startTestService(t, "", func(m *Main) {
		_, port, _ := net.SplitHostPort(m.Config.Addr)
		m.Config.Addr = ":" + port
	})
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(s.admin.BaseURL(), "http://"))
	if hb := s.Control.Heartbeat(context.Background()); hb.Addr != net.JoinHostPort(host, port) || hb.ID != hb.Addr {
		t.Errorf("heartbeat of an instance on :%s: id %q addr %q, want both %s", port, hb.ID, hb.Addr, net.JoinHostPort(host, port))
	}
	s = startTestService(t, "", func(m *Main) { m.Config.AdvertiseAddr = "payouts-3.internal:8080" })
	if hb := s.Control.Heartbeat(context.Background()); hb.Addr != "payouts-3.internal:8080" {
		t.Errorf("heartbeat addr %q, want the advertised one", hb.Addr)
	}
}
