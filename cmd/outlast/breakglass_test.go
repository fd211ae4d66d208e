package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/natsproc"
	"github.com/outlast/outlast/internal/redisproc"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/partnersim"
)

// overrideDeadline is how long the override file may take to act: the
// instance re-reads it every second, and the margin is for a loaded
// machine running the race detector.
const overrideDeadline = 3 * time.Second

// breakGlassService is `outlast serve` as a process on a private
// PostgreSQL the test stops and starts, a private redis-server (--redis)
// and nats-server (--nats) the test kills, and an override file.
type breakGlassService struct {
	*serviceProc
	t        *testing.T
	pg       *testenv.Postgres
	redis    *redisproc.Server
	nats     *natsproc.Server
	admin    *client.Client
	client   *client.Client // the payout client's API key
	account  string
	override string // the --override-file
	dataDir  string
	payouts  int // payouts tried, for fresh idempotency keys
}

func startBreakGlassService(t *testing.T) *breakGlassService {
	requireDataPlaneBinaries(t)
	pg := testenv.StartPostgres(t)
	r, ns := startDataPlane(t, "")
	bank := httptest.NewServer(partnersim.New(partnersim.Config{Name: "tcb", Secret: []byte("tcb-secret"), PayDelay: time.Hour}))
	t.Cleanup(bank.Close)
	port := testenv.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	dataDir := t.TempDir()
	override := filepath.Join(t.TempDir(), "maintenance.json")
	const token = "break-glass-admin"
	logs, err := os.Create(filepath.Join(dataDir, "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logs.Close() })
	s := &breakGlassService{t: t, pg: pg, redis: r, nats: ns, admin: client.New(url, token), override: override, dataDir: dataDir,
		serviceProc: &serviceProc{t: t, url: url, logs: logs, args: []string{"serve", "--addr", fmt.Sprintf("127.0.0.1:%d", port),
			"--data-dir", dataDir, "--db", pg.DSN(), "--nats", ns.URL(), "--redis", r.URL(), "--admin-token", token, "--instance-id", "bg-1",
			"--channel", "tcb=" + bank.URL, "--channel-secret", "tcb=tcb-secret", "--override-file", override, "--log-level", "warn"}}}
	s.start()
	key, accounts, err := demoSetup(context.Background(), s.admin, "bg", 1)
	if err != nil {
		t.Fatal(err)
	}
	s.client, s.account = client.New(url, key), accounts[0]
	return s
}

// payout tries a new payout and returns its status, error message and
// Retry-After.
func (s *breakGlassService) payout() (status int, message, retryAfter string) {
	s.t.Helper()
	s.payouts++
	return tryPayout(s.t, s.client.BaseURL(), s.client.Key(), fmt.Sprintf("bg-%d", s.payouts), s.account)
}

// wantPayoutRefused checks that a payout is refused for maintenance with
// message and Retry-After.
func (s *breakGlassService) wantPayoutRefused(what, message string) {
	s.t.Helper()
	if st, msg, ra := s.payout(); st != 503 || msg != message || ra == "" {
		s.t.Errorf("%s: POST /v1/payouts = %d %q Retry-After %q, want 503 %q with Retry-After", what, st, msg, ra, message)
	}
}

// readyz returns /readyz's status and, on 503, its message.
func (s *breakGlassService) readyz() (int, string) {
	s.t.Helper()
	err := s.admin.Ready(context.Background())
	if st := client.Status(err); st != 0 {
		return st, outlast.ErrorMessage(err)
	}
	if err != nil {
		s.t.Fatalf("GET /readyz: %v", err)
	}
	return 200, ""
}

// localStatus is GET /admin/v1/local/status, which must answer whatever
// is down.
func (s *breakGlassService) localStatus() outlast.ControlStatus {
	s.t.Helper()
	st, err := s.admin.LocalStatus(context.Background())
	if err != nil {
		s.t.Fatalf("GET /admin/v1/local/status: %v", err)
	}
	return st.Control
}

func (s *breakGlassService) setLocal(on bool, message string) {
	s.t.Helper()
	st, _, err := s.admin.SetLocalMaintenance(context.Background(), on, message)
	if err != nil {
		s.t.Fatalf("POST /admin/v1/local/maintenance on=%t: %v", on, err)
	}
	if st.Maintenance != on {
		s.t.Fatalf("POST /admin/v1/local/maintenance on=%t answered maintenance %t", on, st.Maintenance)
	}
}

func (s *breakGlassService) writeOverride(content string) time.Time {
	s.t.Helper()
	if err := os.WriteFile(s.override, []byte(content), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return time.Now()
}

func (s *breakGlassService) removeOverride() time.Time {
	s.t.Helper()
	if err := os.Remove(s.override); err != nil {
		s.t.Fatal(err)
	}
	return time.Now()
}

// localHealth returns the dependencies this instance sees, from
// /admin/v1/local/status, by name: whether each is up.
func (s *breakGlassService) localHealth() map[string]bool {
	s.t.Helper()
	st, err := s.admin.LocalStatus(context.Background())
	if err != nil {
		s.t.Fatalf("GET /admin/v1/local/status: %v", err)
	}
	if st.Instance == nil {
		s.t.Fatal("GET /admin/v1/local/status has no instance")
	}
	out := map[string]bool{}
	for _, d := range st.Instance.Dependencies {
		out[d.Name] = d.OK
	}
	return out
}

// killAll kills Redis and NATS and stops the database, and waits until
// the instance sees all three down and payouts fail for the database.
// It returns the database's message to payouts.
func (s *breakGlassService) killAll() string {
	t := s.t
	if err := s.redis.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.nats.Kill(); err != nil {
		t.Fatal(err)
	}
	s.pg.Stop()
	var dbMessage string
	testenv.WaitFor(t, 20*time.Second, "payouts to fail with the database's 503", func() bool {
		st, msg, _ := s.payout()
		dbMessage = msg
		return st == 503
	})
	var health map[string]bool
	testenv.WaitFor(t, 30*time.Second, "the instance to see the database, the log and Redis down", func() bool {
		health = s.localHealth()
		down := true
		for _, name := range []string{"database", "log", "redis"} {
			up, ok := health[name]
			down = down && ok && !up
		}
		return down
	})
	t.Logf("dependencies as the instance sees them: %v", health)
	return dbMessage
}

// TestBreakGlassWithEverythingDown (issue 8): with the database stopped
// and Redis and NATS killed, the break-glass endpoint and the override
// file each put the instance in maintenance — payouts refused with the
// operators' message, not the database's error — and clearing them takes
// it out; the local status answers throughout; once the database is back
// (Redis and NATS still dead) the override shows in /admin/v1/instances;
// the local switch survives a restart with Redis and NATS still dead.
func TestBreakGlassWithEverythingDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a private PostgreSQL, redis-server, nats-server and outlast serve")
	}
	s := startBreakGlassService(t)
	if st, msg, _ := s.payout(); st != 201 {
		t.Fatalf("payout with every dependency up = %d %q, want 201", st, msg)
	}
	if h := s.localHealth(); !h["database"] || !h["log"] || !h["redis"] {
		t.Fatalf("dependencies with every one up = %v, want database, log and redis ok", h)
	}

	dbMessage := s.killAll()
	if st := s.localStatus(); st.Maintenance {
		t.Fatalf("local status with everything down = %+v, want no maintenance yet", st)
	}

	s.checkLocalSwitch(dbMessage)
	s.checkOverrideFile()
	s.pg.Start()
	testenv.WaitFor(t, 30*time.Second, "/readyz once the database is back", func() bool {
		st, _ := s.readyz()
		return st == 200
	})
	s.checkInstancesShowOverride()
	s.checkLocalSurvivesRestart()
}

// checkLocalSwitch: the local switch holds the instance in maintenance
// with the database stopped, and clearing it takes it out.
func (s *breakGlassService) checkLocalSwitch(dbMessage string) {
	t := s.t
	const msg = "break-glass: payouts paused"
	if msg == dbMessage {
		t.Fatal("the test's message is the database's")
	}
	s.setLocal(true, msg)
	s.wantPayoutRefused("local switch on", msg)
	// /readyz fails for the database, and says the instance holds
	// maintenance by its local switch on a config it cannot confirm.
	testenv.WaitFor(t, 20*time.Second, "/readyz to say maintenance (local) on a stale config", func() bool {
		st, m := s.readyz()
		return st == 503 && strings.Contains(m, "maintenance on (local)") && strings.Contains(m, "last good config is kept")
	})
	if st := s.localStatus(); !st.Maintenance || st.Source != outlast.OverrideLocal || st.Message != msg || !st.Stale {
		t.Errorf("local status = %+v, want maintenance by the local switch with its message, config stale", st)
	}
	s.setLocal(false, "")
	if st, m, _ := s.payout(); st != 503 || m == msg {
		t.Errorf("payout after the local switch is cleared = %d %q, want the database's 503, not maintenance", st, m)
	}
	if st, m := s.readyz(); st != 503 || strings.Contains(m, "maintenance on") {
		t.Errorf("/readyz after the local switch is cleared = %d %q, want 503 without maintenance", st, m)
	}
	if st := s.localStatus(); st.Maintenance || len(st.Overrides) != 0 {
		t.Errorf("local status after clearing = %+v, want no maintenance, no override", st)
	}
}

// checkOverrideFile: the override file does the same, within a second and
// a margin of being written or deleted.
func (s *breakGlassService) checkOverrideFile() {
	t := s.t
	const msg = "override file: bank cut-over"
	at := s.writeOverride(`{"message": "` + msg + `"}`)
	testenv.WaitFor(t, overrideDeadline, "the override file to refuse payouts", func() bool {
		_, m, _ := s.payout()
		return m == msg
	})
	t.Logf("override file in force %s after it was written", time.Since(at).Round(time.Millisecond))
	s.wantPayoutRefused("override file", msg)
	if st, m := s.readyz(); st != 503 || !strings.Contains(m, "maintenance on (file)") {
		t.Errorf("/readyz with the override file = %d %q, want 503 saying maintenance on (file)", st, m)
	}
	if st := s.localStatus(); !st.Maintenance || st.Source != outlast.OverrideFile || st.Message != msg {
		t.Errorf("local status = %+v, want maintenance by the override file with its message", st)
	}
	at = s.removeOverride()
	testenv.WaitFor(t, overrideDeadline, "deleting the override file to clear maintenance", func() bool {
		st, m, _ := s.payout()
		return st == 503 && m != msg
	})
	t.Logf("override file cleared %s after it was deleted", time.Since(at).Round(time.Millisecond))
	if st := s.localStatus(); st.Maintenance {
		t.Errorf("local status after deleting the file = %+v, want no maintenance", st)
	}
}

// checkInstancesShowOverride: with the database back, the instance's
// heartbeat carries the override while it is in force.
func (s *breakGlassService) checkInstancesShowOverride() {
	t := s.t
	s.writeOverride("")
	// The heartbeat is written again within a beat of the database's
	// return (the one before the stop may not have been).
	instance := func() client.Instance {
		list, err := s.admin.Instances(context.Background())
		if err != nil || len(list.Instances) > 1 {
			t.Fatalf("GET /admin/v1/instances = %+v, %v; want bg-1 alone", list, err)
		}
		if len(list.Instances) == 0 {
			return client.Instance{}
		}
		return list.Instances[0]
	}
	testenv.WaitFor(t, 10*time.Second, "/admin/v1/instances to show the override file", func() bool {
		in := instance()
		return in.ID == "bg-1" && in.Maintenance && len(in.Overrides) == 1 && in.Overrides[0].Source == outlast.OverrideFile && in.Overrides[0].Actor == s.override
	})
	s.wantPayoutRefused("empty override file", outlast.ErrorMessage(outlast.MaintenanceError("", 0)))
	out, _ := mustCLI(t, 0, "admin", "status", "--url", s.admin.BaseURL(), "--admin-token", s.admin.Key())
	wantIn(t, "admin status with the override file", out, "bg-1", "on (file)", "database ok")
	s.removeOverride()
	testenv.WaitFor(t, 10*time.Second, "/admin/v1/instances to show the override cleared", func() bool {
		in := instance()
		return in.ID == "bg-1" && !in.Maintenance && len(in.Overrides) == 0
	})
	if st, m, _ := s.payout(); st != 201 {
		t.Errorf("payout with the database back and no override = %d %q, want 201", st, m)
	}
}

// checkLocalSurvivesRestart: the local switch is kept in the data
// directory and is in force again after a restart, which the instance
// makes with Redis and NATS still dead (serve needs only the database).
func (s *breakGlassService) checkLocalSurvivesRestart() {
	t := s.t
	const msg = "held across a restart"
	state := filepath.Join(s.dataDir, breakGlassFile)
	s.setLocal(true, msg)
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("the local switch is on, but %s: %v", state, err)
	}
	s.kill(syscall.SIGTERM)
	s.start()
	if h := s.localHealth(); !h["database"] || h["log"] || h["redis"] {
		t.Errorf("dependencies after the restart = %v, want the database ok, the log and Redis still down", h)
	}
	if st := s.localStatus(); !st.Maintenance || st.Source != outlast.OverrideLocal || st.Message != msg {
		t.Errorf("local status after the restart = %+v, want the local switch still on with its message", st)
	}
	s.wantPayoutRefused("after the restart", msg)
	s.setLocal(false, "")
	if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the local switch is off, but %s: %v; want it removed", state, err)
	}
	if st, m, _ := s.payout(); st != 201 {
		t.Errorf("payout after the local switch is cleared = %d %q, want 201", st, m)
	}
}
