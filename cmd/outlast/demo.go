package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/load"
	"github.com/outlast/outlast/partnersim"
)

// demoRunPrefix names a demo run's data directory under dataDirDefault:
// demo-<UTC time>, so that names sort by time.
const demoRunPrefix = "demo-"

// demoConfig is what `outlast demo` runs.
type demoConfig struct {
	Addr         string
	DataDir      string
	TempData     bool // DataDir is a temporary directory, removed at exit
	Rate         int  // payouts per second
	Duration     time.Duration
	Accounts     int
	DrainTimeout time.Duration
	// SwitchEvery is how often new payouts move to the other bank.
	SwitchEvery time.Duration
	Bank        partnersim.Config // template for both banks
}

const demoSummary = `Run the service on its embedded defaults with two simulated partner banks (tcb, acb)
and steady payout traffic, switching new payouts between the banks; print a status line
per second; on Ctrl-C or --duration, stop the traffic, let in-flight payouts settle,
and run the audit. The data lives in a temporary directory removed at exit, unless
--keep-data (or --data-dir) keeps it.`

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", demoSummary, stdout, stderr)
	cfg := demoConfig{Bank: partnersim.Config{PayDelay: 300 * time.Millisecond, FailRate: 0.05,
		Faults: partnersim.Faults{DuplicateRate: 0.05, ReorderRate: 0.05}}}
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "HTTP listen address of the service")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "data directory, kept after the run; default a temporary one, removed at exit")
	keep := fs.Bool("keep-data", false, "keep the run's data in "+filepath.Join(dataDirDefault, demoRunPrefix+"<time>")+", where 'outlast audit' finds it")
	fs.IntVar(&cfg.Rate, "rate", 50, "payouts created per second")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (0: run until Ctrl-C)")
	fs.IntVar(&cfg.Accounts, "accounts", 8, "number of funded accounts the traffic draws on")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", time.Minute, "how long to wait for in-flight payouts to settle before the audit")
	fs.DurationVar(&cfg.SwitchEvery, "switch-every", 5*time.Second, "how often new payouts switch to the other bank, as an operator's channel switch would")
	fs.DurationVar(&cfg.Bank.PayDelay, "pay-delay", cfg.Bank.PayDelay, "banks' time from accepting a payout to settling it")
	fs.Float64Var(&cfg.Bank.FailRate, "fail-rate", cfg.Bank.FailRate, "share of payouts the banks fail")
	fs.Float64Var(&cfg.Bank.Faults.DuplicateRate, "duplicate-rate", cfg.Bank.Faults.DuplicateRate, "share of bank notifications sent twice")
	fs.Float64Var(&cfg.Bank.Faults.ReorderRate, "reorder-rate", cfg.Bank.Faults.ReorderRate, "share of bank notifications sent out of order")
	if err := fs.parse(args); err != nil {
		return err
	}
	if cfg.Rate <= 0 || cfg.Accounts <= 0 || cfg.SwitchEvery <= 0 {
		return fs.fail("--rate, --accounts and --switch-every must be positive")
	}
	switch {
	case cfg.DataDir == "" && !*keep:
		dir, err := os.MkdirTemp("", "outlast-demo-")
		if err != nil {
			return err
		}
		cfg.DataDir, cfg.TempData = dir, true
	case cfg.DataDir == "":
		cfg.DataDir = filepath.Join(dataDirDefault, demoRunPrefix+time.Now().UTC().Format("20060102-150405"))
	}
	err := demo(ctx, cfg, stdout, stderr)
	if !cfg.TempData {
		fmt.Fprintf(stdout, "data kept in %s; audit it again with: outlast audit --data-dir %s\n", cfg.DataDir, cfg.DataDir)
		return err
	}
	if rerr := os.RemoveAll(cfg.DataDir); rerr != nil {
		return errors.Join(err, fmt.Errorf("remove the demo's data: %w", rerr))
	}
	fmt.Fprintln(stdout, "data removed (run with --keep-data to keep it for 'outlast audit')")
	return err
}

// demoBank is one simulated bank the demo runs beside the service.
type demoBank struct {
	name   string
	url    string
	ln     net.Listener
	secret string
	bank   *partnersim.Bank
}

func demo(ctx context.Context, cfg demoConfig, stdout, stderr io.Writer) error {
	banks := make([]*demoBank, 0, 2)
	for _, name := range []string{"tcb", "acb"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		banks = append(banks, &demoBank{name: name, ln: ln, url: "http://" + ln.Addr().String(), secret: randomHex(16)})
	}
	m := NewMain()
	m.Config.DataDir, m.Config.Addr, m.Config.LogLevel = cfg.DataDir, cfg.Addr, "warn"
	m.Config.ActiveChannel = banks[0].name
	for _, b := range banks {
		m.Config.Channels[b.name] = b.url
		m.Config.ChannelSecrets[b.name] = b.secret
	}
	m.Logger = newLogger(stderr, m.Config.LogLevel)
	if err := m.Run(ctx); err != nil {
		return err
	}
	defer m.Close()

	bankCtx, stopBanks := context.WithCancel(context.Background())
	var bankWG sync.WaitGroup
	defer func() { stopBanks(); bankWG.Wait() }()
	partners := map[string]string{}
	for _, b := range banks {
		bc := cfg.Bank
		bc.Name, bc.Secret, bc.Logger = b.name, []byte(b.secret), m.Logger
		bc.WebhookURL = m.HTTP.URL() + "/v1/partners/" + b.name + "/notifications"
		b.bank = partnersim.New(bc)
		partners[b.name] = b.url
		bankWG.Go(func() {
			if err := serveBank(bankCtx, b.ln, b.bank); err != nil {
				m.Logger.Error("bank stopped", "bank", b.name, "err", err)
			}
		})
	}

	admin := client.New(m.HTTP.URL(), m.Config.AdminToken)
	clientID := "demo-" + randomHex(4)
	apiKey, accounts, err := demoSetup(ctx, admin, clientID, cfg.Accounts)
	if err != nil {
		return fmt.Errorf("demo set-up: %w", err)
	}
	printBanner(stdout, cfg, m, banks, clientID, apiKey, accounts[0])
	gen, err := demoTraffic(ctx, cfg, m, banks, apiKey, accounts, stdout)
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "\nstopped traffic after %d payouts created (%d refused, %d errors); waiting up to %s for in-flight payouts to settle…\n",
		gen.created.Load(), gen.refused.Load(), gen.errors.Load(), cfg.DrainTimeout)
	// The drain and audit run even after Ctrl-C: that is the point of the demo.
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	settled := waitSettled(drainCtx, m, banks)
	if !settled {
		fmt.Fprintln(stdout, "not everything settled within --drain-timeout; the audit lists what is still in flight")
	}
	printBanks(stdout, banks)
	if summary, err := appliedSummary(m.Registry); err == nil {
		fmt.Fprintf(stdout, "notifications applied, by source and outcome: %s\n%s", summary, outcomeLegend)
	}
	ok, err := audit(context.Background(), m.DB, partners, stdout)
	if err != nil {
		return err
	}
	if !ok {
		return exitError(1)
	}
	return nil
}

// printBanner says where everything is, with one request to try.
func printBanner(w io.Writer, cfg demoConfig, m *Main, banks []*demoBank, clientID, apiKey, account string) {
	where := cfg.DataDir + " (kept after the run)"
	if cfg.TempData {
		where = cfg.DataDir + " (a temporary directory, removed at exit; --keep-data keeps it)"
	}
	fmt.Fprintf(w, `Outlast demo
  API        %[1]s   (metrics: %[1]s/metrics)
  try        curl -s -H 'Authorization: Bearer %[2]s' %[1]s/v1/accounts/%[3]s
  client     %[4]s, API key %[2]s, %[5]d funded accounts
  admin      token %[6]s (in %[7]s)
  console    %[1]s/admin/ (sign in with the admin token): instances, maintenance and channel switches, charts
  banks      %[8]s %[9]s, %[10]s %[11]s; new payouts go to one of them, switched every %[12]s
             through the config document, as an operator would (a payout stays with the bank it was sent to)
  data       %[13]s
  traffic    %[14]d payouts/s; Ctrl-C to stop, let in-flight payouts settle, and audit

`, m.HTTP.URL(), apiKey, account, clientID, cfg.Accounts, m.Config.AdminToken, filepath.Join(cfg.DataDir, adminTokenFile),
		banks[0].name, banks[0].url, banks[1].name, banks[1].url, cfg.SwitchEvery, where, cfg.Rate)
}

// statusLegend explains the status line: which numbers are running totals
// since the start and which are the state now or the last second.
const statusLegend = `Every second, one line:
  created              payouts the API accepted so far (running total)
  pending, dispatched  payouts now waiting to go to a bank / accepted by one and not yet settled (current)
  succeeded, failed    payouts settled so far (running totals)
  to tcb, to acb       payouts each bank has accepted so far (running totals); * marks where new payouts go now
  webhooks/s           bank notifications delivered in the last second (current)
  p99 ms               creation latency that 99% of the last second's payouts beat (current)
  errors               payout requests that failed so far (running total)

`

// outcomeLegend explains the applied-notification outcomes.
const outcomeLegend = `  applied: changed a payout's state; duplicate: an event already seen (banks resend), ignored;
  stale: older than what the ledger already knows, e.g. a bank's "dispatched" arriving after the
  service marked the payout dispatched itself, or after "succeeded" (reordered): counted, changes nothing.
`

// demoTraffic sends payouts until ctx ends or cfg.Duration passes,
// switching new payouts between the banks and printing a status line a
// second, and returns once every payout request sent has finished.
func demoTraffic(ctx context.Context, cfg demoConfig, m *Main, banks []*demoBank, apiKey string, accounts []string, w io.Writer) (*trafficGen, error) {
	runCtx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	var switcher sync.WaitGroup
	defer switcher.Wait()
	switchCtx, stopSwitching := context.WithCancel(runCtx)
	defer stopSwitching()
	switcher.Go(func() { switchChannels(switchCtx, m, banks, cfg.SwitchEvery) })

	fmt.Fprint(w, statusLegend)
	fmt.Fprintf(w, "%5s  %7s  %7s  %10s  %9s  %6s  %7s  %7s  %10s  %6s  %6s\n",
		"t", "created", "pending", "dispatched", "succeeded", "failed", "to "+banks[0].name, "to "+banks[1].name, "webhooks/s", "p99 ms", "errors")
	gen := &trafficGen{api: client.New(m.HTTP.URL(), apiKey), accounts: accounts, rate: cfg.Rate}
	var notifiedBefore int64 // only the status goroutine touches it
	if err := gen.run(runCtx, func(elapsed time.Duration) { printStatus(ctx, w, m, gen, banks, elapsed, &notifiedBefore) }); err != nil {
		return nil, fmt.Errorf("demo traffic: %w", err)
	}
	return gen, nil
}

// switchChannels makes the banks take turns as the channel new payouts go
// to, every d, until ctx ends, as an operator would: a change of the
// config document's active channel, kept in its history, which the
// control plane applies. The rest of the document (maintenance switched
// from the console, say) is kept; a change lost to an operator's is
// tried again at the next turn.
func switchChannels(ctx context.Context, m *Main, banks []*demoBank, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur, err := m.DB.ControlConfig(ctx)
		if err != nil {
			continue
		}
		next := cur.Clone()
		active := banks[i%len(banks)].name
		next.ActiveChannel, next.Fallback = active, nil
		for _, b := range banks {
			if _, ok := next.Channels[b.name]; !ok {
				next.Channels[b.name] = outlast.ChannelConfig{Enabled: true}
			}
			if b.name != active {
				next.Fallback = append(next.Fallback, b.name)
			}
		}
		if !next.Channels[active].Enabled {
			continue // an operator disabled it: leave the choice to them
		}
		if _, err := m.DB.PutControlConfig(ctx, next, cur.Version, "outlast demo", "the demo's turn-taking between banks"); err != nil && ctx.Err() == nil {
			m.Logger.Debug("demo channel switch not made", "err", err)
		}
	}
}

// printBanks says what each bank did.
func printBanks(w io.Writer, banks []*demoBank) {
	parts := make([]string, len(banks))
	for i, b := range banks {
		st := b.bank.Stats()
		parts[i] = fmt.Sprintf("%s accepted %d (paid %d, failed %d)", b.name, st.Accepted, st.Succeeded, st.Failed)
	}
	fmt.Fprintf(w, "banks: %s\n", strings.Join(parts, "; "))
}

// demoSetup creates the demo's client and funded accounts.
func demoSetup(ctx context.Context, admin *client.Client, clientID string, n int) (apiKey string, accounts []string, err error) {
	apiKey, err = admin.CreateClient(ctx, clientID)
	if err != nil {
		return "", nil, err
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%s-acct-%d", clientID, i)
		if _, err := admin.CreateAccount(ctx, id, clientID, "USD"); err != nil {
			return "", nil, err
		}
		if _, err := admin.Fund(ctx, id, 1_000_000_000_00, "initial-"+id); err != nil {
			return "", nil, err
		}
		accounts = append(accounts, id)
	}
	return apiKey, accounts, nil
}

// trafficGen sends payouts open-loop at a fixed rate and measures the
// creation latency from each request's intended send time, so a stall shows
// up in the numbers instead of silently slowing the sender down.
type trafficGen struct {
	api      *client.Client
	accounts []string
	rate     int

	created, refused, errors atomic.Int64

	mu   sync.Mutex // guards hist
	hist *hdrhistogram.Histogram
}

// trafficInflightMax bounds concurrent requests; past it a request is
// counted as refused rather than queued.
const trafficInflightMax = 512

// run sends traffic until ctx ends, calling everySecond once a second
// meanwhile, and returns when every request sent has finished.
func (g *trafficGen) run(ctx context.Context, everySecond func(elapsed time.Duration)) error {
	g.hist = load.NewHistogram()
	start := time.Now()
	statusCtx, stopStatus := context.WithCancel(ctx)
	var status sync.WaitGroup
	status.Go(func() { tickEverySecond(statusCtx, start, everySecond) })
	defer func() { stopStatus(); status.Wait() }()
	gen := load.Open{Rate: float64(g.rate), Start: start, InflightMax: trafficInflightMax,
		Next: func(seq int) func(context.Context) error {
			return func(ctx context.Context) error { return g.send(ctx, seq) }
		},
		Done: g.done,
	}
	err := gen.Run(ctx)
	if ctx.Err() != nil {
		return nil // the traffic stops when ctx ends
	}
	return err
}

func tickEverySecond(ctx context.Context, start time.Time, f func(elapsed time.Duration)) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(time.Since(start).Round(time.Second))
		}
	}
}

func (g *trafficGen) send(ctx context.Context, seq int) error {
	body := client.PayoutRequest{
		AccountID:   g.accounts[seq%len(g.accounts)],
		Amount:      int64(100 + mrand.IntN(100_000)),
		Currency:    "USD",
		Destination: fmt.Sprintf("DE%020d", mrand.Int64N(1e18)),
	}
	// A request already sent finishes even when the traffic stops, so the
	// count printed at the end matches what the ledger holds; the client's
	// timeout bounds it.
	_, _, err := g.api.CreatePayout(context.WithoutCancel(ctx), "demo-"+randomHex(12), body)
	return err
}

func (g *trafficGen) done(_ int, _, latency time.Duration, err error) {
	switch {
	case errors.Is(err, load.ErrDropped):
		g.refused.Add(1)
	case err != nil:
		g.errors.Add(1)
	default:
		g.created.Add(1)
		g.mu.Lock()
		load.Record(g.hist, latency)
		g.mu.Unlock()
	}
}

// takeP99 returns the p99 since the last call and resets the histogram.
func (g *trafficGen) takeP99() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := time.Duration(g.hist.ValueAtQuantile(99)) * time.Microsecond
	g.hist.Reset()
	return p
}

// printStatus prints one status line (see statusLegend); notifiedBefore
// carries the banks' delivered-webhook count from the previous line.
func printStatus(ctx context.Context, w io.Writer, m *Main, g *trafficGen, banks []*demoBank, elapsed time.Duration, notifiedBefore *int64) {
	counts, err := m.DB.PayoutCounts(ctx)
	if err != nil {
		fmt.Fprintf(w, "%4ds  database unavailable: %v\n", int(elapsed.Seconds()), outlast.ErrorMessage(err))
		return
	}
	active, _ := m.Router.Choose(ctx)
	var notified int64
	accepted := make([]string, len(banks))
	for i, b := range banks {
		st := b.bank.Stats()
		notified += st.WebhooksSent
		accepted[i] = strconv.FormatInt(st.Accepted, 10)
		if b.name == active {
			accepted[i] += "*"
		}
	}
	perSec := notified - *notifiedBefore
	*notifiedBefore = notified
	fmt.Fprintf(w, "%4ds  %7d  %7d  %10d  %9d  %6d  %7s  %7s  %10d  %6.1f  %6d\n",
		int(elapsed.Seconds()), g.created.Load(), counts[outlast.StatusPending], counts[outlast.StatusDispatched],
		counts[outlast.StatusSucceeded], counts[outlast.StatusFailed], accepted[0], accepted[1], perSec,
		float64(g.takeP99().Microseconds())/1000, g.errors.Load())
}

// waitSettled waits until no payout is pending or dispatched and no bank has
// a notification still to deliver, or ctx ends.
func waitSettled(ctx context.Context, m *Main, banks []*demoBank) bool {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		counts, err := m.DB.PayoutCounts(ctx)
		if err == nil && counts[outlast.StatusPending]+counts[outlast.StatusDispatched] == 0 {
			pending := 0
			for _, b := range banks {
				pending += b.bank.Stats().WebhooksPending
			}
			if pending == 0 {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// appliedSummary lists the applied-notification counter by source and
// outcome ("log applied 158, log duplicate 12, ..."), read from the metric
// itself so the demo's summary and /metrics can never disagree.
func appliedSummary(g prometheus.Gatherer) (string, error) {
	counts, err := appliedCounts(g)
	if err != nil {
		return "", err
	}
	parts := make([]string, 0, len(counts))
	for k, v := range counts {
		parts = append(parts, fmt.Sprintf("%s %s %.0f", k.source, k.outcome, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", "), nil
}

// appliedKey is one series of the applied-notification counter.
type appliedKey struct{ source, outcome string }

// appliedCounts reads outlast_notifications_applied_total from g.
func appliedCounts(g prometheus.Gatherer) (map[appliedKey]float64, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	counts := map[appliedKey]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "outlast_notifications_applied_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var k appliedKey
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "source":
					k.source = l.GetValue()
				case "outcome":
					k.outcome = l.GetValue()
				}
			}
			counts[k] += m.GetCounter().GetValue()
		}
	}
	return counts, nil
}
