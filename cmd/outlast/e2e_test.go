package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/proc"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/partnersim"
)

var (
	raceBuild bool // set by race_test.go when the tests run with -race
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// outlastBinary builds the real binary once per test run.
func outlastBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "outlast-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "outlast")
		args := []string{"build", "-o", binPath}
		if raceBuild {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// serviceProc is `outlast serve` running as a real subprocess.
type serviceProc struct {
	t    *testing.T
	args []string
	url  string
	logs *os.File // every run of serve appends here
	p    *proc.Server
}

// start starts serve, or restarts it after kill.
func (s *serviceProc) start() {
	s.t.Helper()
	if s.p != nil {
		if err := s.p.Restart(context.Background()); err != nil {
			s.t.Fatalf("%v (logs in %s)", err, s.logs.Name())
		}
		return
	}
	// args start with "serve", as the command line would.
	p, err := startServeProcess(context.Background(), outlastBinary(s.t), s.args[1:], s.url, s.logs)
	if err != nil {
		s.t.Fatalf("%v (logs in %s)", err, s.logs.Name())
	}
	s.p = p
	// A test that fails half-way must not leave the service running.
	s.t.Cleanup(func() {
		if !p.Running() {
			return
		}
		if err := p.Kill(); err != nil {
			s.t.Errorf("outlast serve: %v", err)
		}
	})
}

// kill sends sig and waits for the process to be gone.
func (s *serviceProc) kill(sig syscall.Signal) {
	s.t.Helper()
	if err := s.p.Terminate(sig); err != nil {
		s.t.Fatalf("outlast serve: %v", err)
	}
}

type ackedPayout struct {
	id      string
	account string
	amount  int64
}

// loadGen creates payouts at a steady pace and remembers which were
// acknowledged (201/200). A request that got no answer is retried with the
// same Idempotency-Key, as a careful client would, until acknowledged.
type loadGen struct {
	api      *client.Client
	accounts []string

	mu      sync.Mutex
	acked   map[string]ackedPayout          // idempotency key → payout
	unacked map[string]client.PayoutRequest // keys sent without an answer yet
}

func (g *loadGen) ackedCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.acked)
}

func (g *loadGen) try(ctx context.Context, key string, body client.PayoutRequest) bool {
	p, _, err := g.api.CreatePayout(ctx, key, body)
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		g.unacked[key] = body
		return false
	}
	delete(g.unacked, key)
	if prev, ok := g.acked[key]; ok && prev.id != p.ID {
		panic(fmt.Sprintf("key %s acknowledged as payout %s and then %s", key, prev.id, p.ID))
	}
	g.acked[key] = ackedPayout{id: p.ID, account: body.AccountID, amount: body.Amount}
	return true
}

func (g *loadGen) run(ctx context.Context, workers int) {
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("e2e-%d-%d", w, i)
				body := client.PayoutRequest{AccountID: g.accounts[rand.IntN(len(g.accounts))], Amount: int64(1 + rand.IntN(10_000)),
					Currency: "USD", Destination: fmt.Sprintf("DE%018d", rand.Int64N(1e17))}
				if !g.try(ctx, key, body) {
					// Down: pause briefly so a dead service is not spun on.
					select {
					case <-ctx.Done():
					case <-time.After(50 * time.Millisecond):
					}
				}
			}
		}(w)
	}
	wg.Wait()
}

// messyBank duplicates and reorders its webhooks.
var messyBank = partnersim.Faults{DuplicateRate: 0.2, ReorderRate: 0.2}

func TestKillRestartSQLite(t *testing.T) {
	testKillRestart(t, "", messyBank)
}

func TestKillRestartPostgres(t *testing.T) {
	testKillRestart(t, testenv.PostgresDSN(t), messyBank)
}

// TestKillRestartRefusedRetries* run the kill test against banks that lose
// the answer to a third of the payouts they accept (504) and answer every
// retry of those with a 4xx, while paying them: no payout the bank paid
// may be failed here (issue 7, defect 1).
func TestKillRestartRefusedRetriesSQLite(t *testing.T) {
	testKillRestart(t, "", refusingBank())
}

func TestKillRestartRefusedRetriesPostgres(t *testing.T) {
	testKillRestart(t, testenv.PostgresDSN(t), refusingBank())
}

// refusingBank is messyBank that also loses the answer to a third of the
// payouts it accepts and refuses every retry of those.
func refusingBank() partnersim.Faults {
	f := messyBank
	f.AmbiguousRate, f.RefuseRepeatRate = 0.3, 1
	return f
}

// testKillRestart runs `outlast serve` under steady load from two simulated
// banks with faults, SIGKILLs it at random moments, restarts it, and then
// proves with the audit that no acknowledged payout or notification was
// lost and none was applied twice.
func testKillRestart(t *testing.T, dsn string, faults partnersim.Faults) {
	if testing.Short() {
		t.Skip("end-to-end kill test skipped in -short mode")
	}
	dataDir := t.TempDir()
	port := testenv.FreePort(t)
	svcURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	const adminToken = "e2e-admin-token"
	args := []string{"serve", "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", dataDir,
		"--admin-token", adminToken, "--active-channel", "tcb", "--log-level", "warn"}
	if dsn != "" {
		args = append(args, "--db", dsn)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	partners := map[string]string{}
	banks := map[string]*partnersim.Bank{}
	var bankWG sync.WaitGroup
	defer bankWG.Wait()
	defer cancel()
	for i, name := range []string{"tcb", "acb"} {
		secret := "secret-" + name
		bank := partnersim.New(partnersim.Config{
			Name: name, WebhookURL: svcURL + "/v1/partners/" + name + "/notifications", Secret: []byte(secret),
			PayDelay: 30 * time.Millisecond, FailRate: 0.1, Seed: int64(i + 1),
			Faults: faults,
		})
		srv := httptest.NewServer(bank)
		defer srv.Close()
		bankWG.Add(1)
		go func() { defer bankWG.Done(); _ = bank.Run(ctx) }()
		banks[name], partners[name] = bank, srv.URL
		args = append(args, "--channel", name+"="+srv.URL, "--channel-secret", name+"="+secret)
	}

	logs, err := os.Create(filepath.Join(dataDir, "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	svc := &serviceProc{t: t, args: args, url: svcURL, logs: logs}
	svc.start()

	admin := client.New(svcURL, adminToken)
	apiKey, accounts, err := demoSetup(ctx, admin, "e2e", 4)
	if err != nil {
		t.Fatalf("set-up: %v", err)
	}
	gen := &loadGen{api: client.New(svcURL, apiKey), accounts: accounts,
		acked: map[string]ackedPayout{}, unacked: map[string]client.PayoutRequest{}}
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() { defer close(loadDone); gen.run(loadCtx, 8) }()

	const kills = 4
	for k := 0; k < kills; k++ {
		// A random moment: after a random number of further acknowledgements.
		target := gen.ackedCount() + 50 + rand.IntN(250)
		testenv.WaitFor(t, 60*time.Second, fmt.Sprintf("%d acknowledged payouts", target), func() bool { return gen.ackedCount() >= target })
		svc.kill(syscall.SIGKILL)
		t.Logf("kill %d: SIGKILL after %d acknowledged payouts", k+1, gen.ackedCount())
		svc.start()
	}
	target := gen.ackedCount() + 100
	testenv.WaitFor(t, 60*time.Second, "load after the last restart", func() bool { return gen.ackedCount() >= target })
	stopLoad()
	<-loadDone

	// Every request that got no answer is retried with its key until
	// acknowledged: the idempotency key must make this exactly-once.
	gen.mu.Lock()
	pending := make(map[string]client.PayoutRequest, len(gen.unacked))
	for k, b := range gen.unacked {
		pending[k] = b
	}
	gen.mu.Unlock()
	for key, body := range pending {
		if !gen.try(ctx, key, body) {
			t.Fatalf("retry of unanswered key %s failed after restart", key)
		}
	}

	userAPI := client.New(svcURL, apiKey)
	testenv.WaitFor(t, 120*time.Second, "every acknowledged payout to be terminal and banks to have delivered every webhook", func() bool {
		for _, b := range banks {
			if b.Stats().WebhooksPending > 0 {
				return false
			}
		}
		gen.mu.Lock()
		defer gen.mu.Unlock()
		for _, a := range gen.acked {
			p, err := userAPI.Payout(ctx, a.id)
			if err != nil || !p.Status.Terminal() {
				return false
			}
		}
		return true
	})
	checkBalances(t, ctx, admin, gen, banks)
	if faults.RefuseRepeatRate > 0 {
		refused := int64(0)
		for _, b := range banks {
			refused += b.Stats().RefusedRepeats
		}
		if refused == 0 {
			t.Error("the banks refused no retries: the test exercised nothing")
		}
		t.Logf("the banks refused %d retries of payouts they held", refused)
	}
	svc.kill(syscall.SIGTERM)
	// Every run of serve wrote to the same log; a race report is printed
	// when the race happens, so a later SIGKILL does not hide it.
	if out, err := os.ReadFile(logs.Name()); err == nil {
		if i := strings.Index(string(out), "WARNING: DATA RACE"); i >= 0 {
			t.Errorf("the race detector found a data race in outlast serve:\n%s", firstLines(string(out[i:]), 60))
		}
	}

	auditArgs := []string{"audit", "--data-dir", dataDir}
	if dsn != "" {
		auditArgs = append(auditArgs, "--db", dsn)
	}
	for name, u := range partners {
		auditArgs = append(auditArgs, "--partner", name+"="+u)
	}
	out, err := exec.Command(outlastBinary(t), auditArgs...).CombinedOutput()
	if err != nil {
		t.Fatalf("outlast audit: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "audit: OK") {
		t.Fatalf("outlast audit did not say OK:\n%s", out)
	}
	t.Logf("%d payouts acknowledged across %d SIGKILLs; audit:\n%s", gen.ackedCount(), kills, firstLines(string(out), 5))
}

// checkBalances proves nothing was applied twice or lost: each account's
// paid_out is exactly the sum of its acknowledged payouts the bank paid, and
// nothing is left held.
func checkBalances(t *testing.T, ctx context.Context, admin *client.Client, gen *loadGen, banks map[string]*partnersim.Bank) {
	t.Helper()
	paidByBank := map[string]outlast.PartnerRecord{}
	for _, b := range banks {
		for _, r := range b.Records() {
			if r.Status == outlast.StatusSucceeded {
				paidByBank[r.PayoutID] = r
			}
		}
	}
	gen.mu.Lock()
	defer gen.mu.Unlock()
	want := map[string]int64{}
	for _, a := range gen.acked {
		if _, ok := paidByBank[a.id]; ok {
			want[a.account] += a.amount
		}
	}
	if len(paidByBank) > len(gen.acked) {
		t.Errorf("banks paid %d payouts, but only %d were acknowledged to the client", len(paidByBank), len(gen.acked))
	}
	for _, id := range gen.accounts {
		a, err := admin.Account(ctx, id)
		if err != nil {
			t.Fatalf("account %s: %v", id, err)
		}
		if a.PaidOut != want[id] || a.Held != 0 || a.Available+a.PaidOut != a.Funded {
			t.Errorf("account %s: paid_out %d held %d available %d funded %d; want paid_out %d (sum of bank-paid acknowledged payouts), held 0",
				id, a.PaidOut, a.Held, a.Available, a.Funded, want[id])
		}
	}
}

func firstLines(s string, n int) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	var out []string
	for sc.Scan() && len(out) < n {
		out = append(out, sc.Text())
	}
	return strings.Join(out, "\n")
}

var _ = errors.New
