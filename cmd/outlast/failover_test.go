package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	nethttp "net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/channel"
	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/partnersim"
)

// Channels of the failover test: foa is active, fob the fallback.
const (
	foActive   = "foa"
	foFallback = "fob"
)

// hangSwitch passes requests to a bank or, while hang is set, accepts
// them and never answers: the caller's timeout is all that ends them (or
// closing stop, when the test ends).
type hangSwitch struct {
	bank nethttp.Handler
	hang atomic.Bool
	stop chan struct{}
}

func (h *hangSwitch) ServeHTTP(w nethttp.ResponseWriter, r *nethttp.Request) {
	if h.hang.Load() {
		// Read the body, so the server watches the connection and the
		// request's context ends when the caller hangs up.
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		select {
		case <-r.Context().Done():
		case <-h.stop:
		}
		return
	}
	h.bank.ServeHTTP(w, r)
}

// sentPayout is a payout the traffic created, with where it was bound and
// what the router said of the active channel just before.
type sentPayout struct {
	id, channel, activeState string
}

// failoverRig is the service with two simulated banks that settle and
// send webhooks, and steady payout traffic.
type failoverRig struct {
	m       *Main
	admin   *client.Client
	banks   map[string]*partnersim.Bank
	hang    *hangSwitch
	clients map[string]*channel.Client // to ask the banks' status as an auditor would

	mu   sync.Mutex // guards sent, errs
	sent []sentPayout
	errs []error
}

func startFailoverRig(t *testing.T) *failoverRig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	port := testenv.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	g := &failoverRig{banks: map[string]*partnersim.Bank{}, clients: map[string]*channel.Client{}}
	m := NewMain()
	m.Config.DataDir = t.TempDir()
	m.Config.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	m.Config.AdminToken = "test-admin"
	m.Config.LogLevel = "error"
	m.Config.ActiveChannel = foActive
	// Short enough for a test: failures are noticed within a few
	// timeouts, ejections last 2 s, 4 s, 8 s, returns take 2 s.
	m.Config.ChannelTimeout = 300 * time.Millisecond
	m.Config.BreakerDelay = 300 * time.Millisecond
	m.Config.EjectBase, m.Config.EjectMax, m.Config.ReturnWindow = 2*time.Second, 8*time.Second, 2*time.Second
	m.dispatcher = channel.DispatcherConfig{BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond, ConfirmDelay: 300 * time.Millisecond}
	var wg sync.WaitGroup
	for i, name := range []string{foActive, foFallback} {
		secret := name + "-secret"
		b := partnersim.New(partnersim.Config{Name: name, WebhookURL: url + "/v1/partners/" + name + "/notifications",
			Secret: []byte(secret), PayDelay: 100 * time.Millisecond, Seed: int64(i + 1),
			WebhookBackoffBase: 50 * time.Millisecond, WebhookBackoffMax: 500 * time.Millisecond})
		var h nethttp.Handler = b
		if name == foActive {
			g.hang = &hangSwitch{bank: b, stop: make(chan struct{})}
			h = g.hang
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		if name == foActive {
			t.Cleanup(func() { close(g.hang.stop) })
		}
		wg.Go(func() { _ = b.Run(ctx) })
		g.banks[name] = b
		g.clients[name] = channel.NewClient(name, srv.URL, channel.ClientOptions{Timeout: 5 * time.Second})
		m.Config.Channels[name] = srv.URL
		m.Config.ChannelSecrets[name] = secret
	}
	if err := m.Run(ctx); err != nil {
		t.Fatalf("Main.Run: %v", err)
	}
	t.Cleanup(func() {
		g.hang.hang.Store(false)
		if err := m.Close(); err != nil {
			t.Errorf("Main.Close: %v", err)
		}
		cancel()
		wg.Wait()
	})
	g.m, g.admin = m, client.New(url, "test-admin")
	return g
}

// traffic creates one payout every interval until ctx is done, one at a
// time, so the rate is bounded whatever the service does.
func (g *failoverRig) traffic(ctx context.Context, api *client.Client, account string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, _ := g.m.Router.State(foActive)
		p, status, err := api.CreatePayout(ctx, fmt.Sprintf("fo-%d", n), client.PayoutRequest{AccountID: account, Amount: 100 + int64(n), Currency: "USD", Destination: "DE89370400440532013000"})
		g.mu.Lock()
		switch {
		case ctx.Err() != nil:
		case err != nil || status != nethttp.StatusCreated:
			g.errs = append(g.errs, fmt.Errorf("payout %d: HTTP %d: %v", n, status, err))
		default:
			g.sent = append(g.sent, sentPayout{id: p.ID, channel: p.Channel, activeState: st.String()})
		}
		g.mu.Unlock()
	}
}

// since returns the payouts created from index from on.
func (g *failoverRig) since(from int) []sentPayout {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sent[min(from, len(g.sent)):])
}

func (g *failoverRig) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sent)
}

// lastAllOn reports whether the last n payouts created from index from
// on were all bound to ch.
func (g *failoverRig) lastAllOn(from, n int, ch string) bool {
	s := g.since(from)
	if len(s) < n {
		return false
	}
	for _, p := range s[len(s)-n:] {
		if p.channel != ch {
			return false
		}
	}
	return true
}

// TestFailoverUnderFailingActiveChannel is issue 9's failover test: the
// active channel fails with errors, then timeouts, then a hang; each time
// new payouts go to the fallback within seconds, the active channel's
// ejection shows in the heartbeat, and when it recovers new payouts
// return to it, gradually, then all. In the end every payout is paid by
// exactly one bank, the one it was bound to (both banks' records and
// status), and those left ambiguous on the failing bank are resolved
// there, never sent to the other.
func TestFailoverUnderFailingActiveChannel(t *testing.T) {
	g := startFailoverRig(t)
	ctx := context.Background()
	on := outlast.ChannelConfig{Enabled: true}
	cur, err := g.admin.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cur.Channels = map[string]outlast.ChannelConfig{foActive: on, foFallback: on}
	cur.ActiveChannel, cur.Fallback = foActive, []string{foFallback}
	if _, err := g.admin.PutConfig(ctx, cur, cur.Version, "failover test"); err != nil {
		t.Fatalf("PUT /admin/v1/config: %v", err)
	}
	testenv.WaitFor(t, 10*time.Second, "the fallback order to apply", func() bool {
		return slices.Equal(g.m.Router.Order(), []string{foActive, foFallback})
	})
	key, accounts, err := demoSetup(ctx, g.admin, "fo-"+randomHex(4), 1)
	if err != nil {
		t.Fatal(err)
	}
	tctx, stopTraffic := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { g.traffic(tctx, client.New(g.admin.BaseURL(), key), accounts[0], 40*time.Millisecond) })
	defer func() { stopTraffic(); wg.Wait() }()

	testenv.WaitFor(t, 10*time.Second, "payouts to go to the active channel", func() bool { return g.lastAllOn(0, 5, foActive) })
	heal := partnersim.Faults{RefuseRepeatRate: 0.2} // retries of accepted payouts sometimes refused: the status decides
	phases := []struct {
		name  string
		fail  func()
		check func(t *testing.T)
	}{
		{"errors", func() { g.banks[foActive].SetFaults(partnersim.Faults{ErrorRate: 0.5, AmbiguousRate: 1}) }, nil},
		{"timeouts", func() { g.banks[foActive].SetFaults(partnersim.Faults{Latency: time.Second}) }, nil},
		{"hang", func() { g.hang.hang.Store(true) }, g.waitHeartbeatEjected},
	}
	var ambiguous []string // bound to the active channel while it failed
	for _, ph := range phases {
		from := g.count()
		start := time.Now()
		ph.fail()
		testenv.WaitFor(t, 6*time.Second, ph.name+": new payouts to go to the fallback", func() bool {
			return g.lastAllOn(from, 5, foFallback)
		})
		t.Logf("%s: new payouts on the fallback %s after the failure began", ph.name, time.Since(start).Round(10*time.Millisecond))
		if st, _ := g.m.Router.State(foActive); !strings.Contains(st.String(), "ejected until") {
			t.Errorf("%s: active channel state = %q, want ejected", ph.name, st)
		}
		if ph.check != nil {
			ph.check(t)
		}
		for _, p := range g.since(from) {
			if p.channel == foActive {
				ambiguous = append(ambiguous, p.id)
			}
		}
		from = g.count()
		g.hang.hang.Store(false)
		g.banks[foActive].SetFaults(heal)
		testenv.WaitFor(t, 25*time.Second, ph.name+": new payouts to return to the active channel", func() bool {
			return g.lastAllOn(from, 10, foActive)
		})
	}
	stopTraffic()
	wg.Wait()
	g.checkReturnedGradually(t)
	g.checkPaidOnce(t, ambiguous)
}

// waitHeartbeatEjected waits for /admin/v1/instances to show the active
// channel ejected.
func (g *failoverRig) waitHeartbeatEjected(t *testing.T) {
	t.Helper()
	var last string
	testenv.WaitFor(t, 6*time.Second, "the heartbeat to show the active channel ejected", func() bool {
		list, err := g.admin.Instances(context.Background())
		if err != nil || len(list.Instances) != 1 {
			return false
		}
		for _, d := range list.Instances[0].Dependencies {
			if d.Name == "channel:"+foActive {
				last = d.State
				return !d.OK && strings.Contains(d.State, "ejected until")
			}
		}
		return false
	})
	t.Logf("heartbeat: channel:%s %s", foActive, last)
}

// checkReturnedGradually: while the active channel was returning, new
// payouts went to both channels.
func (g *failoverRig) checkReturnedGradually(t *testing.T) {
	t.Helper()
	n := map[string]int{}
	for _, p := range g.since(0) {
		if strings.Contains(p.activeState, "returning") {
			n[p.channel]++
		}
	}
	t.Logf("payouts created while the active channel was returning: %v", n)
	if n[foActive] == 0 || n[foFallback] == 0 {
		t.Errorf("payouts created while the active channel was returning went %v; want some to each channel", n)
	}
}

// checkPaidOnce waits for every payout to succeed and checks that exactly
// the bank it was bound to paid it, by both banks' records and status; the
// ambiguous ones in particular.
func (g *failoverRig) checkPaidOnce(t *testing.T, ambiguous []string) {
	t.Helper()
	g.mu.Lock()
	errs, sent := slices.Clone(g.errs), slices.Clone(g.sent)
	g.mu.Unlock()
	if len(errs) > 0 {
		t.Errorf("%d payouts not created, e.g. %v", len(errs), errs[0])
	}
	ctx := context.Background()
	done := map[string]bool{}
	testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("all %d payouts to succeed", len(sent)), func() bool {
		for _, s := range sent {
			if done[s.id] {
				continue
			}
			p, _, err := g.m.Ledger.Payout(ctx, s.id)
			if err != nil || p.Status != outlast.StatusSucceeded {
				return false
			}
			if p.Channel != s.channel {
				t.Fatalf("payout %s bound to %s at creation, succeeded on %s", s.id, s.channel, p.Channel)
			}
			done[s.id] = true
		}
		return true
	})
	paidBy := map[string][]string{}
	for name, b := range g.banks {
		for _, r := range b.Records() {
			if r.Status == outlast.StatusSucceeded {
				paidBy[r.PayoutID] = append(paidBy[r.PayoutID], name)
			}
		}
	}
	for _, s := range sent {
		if got := paidBy[s.id]; !slices.Equal(got, []string{s.channel}) {
			t.Errorf("payout %s bound to %s was paid by %v", s.id, s.channel, got)
		}
	}
	if len(ambiguous) == 0 {
		t.Fatal("no payout was bound to the active channel while it failed: the test proves nothing about them")
	}
	for _, id := range ambiguous {
		st, err := g.clients[foActive].Status(ctx, id)
		if err != nil || st.Status != outlast.StatusSucceeded {
			t.Errorf("status of %s at %s = %+v, %v; want succeeded", id, foActive, st, err)
		}
		if _, err := g.clients[foFallback].Status(ctx, id); !errors.Is(err, channel.ErrNotFound) {
			t.Errorf("status of %s at the fallback %s: %v; want no such payout", id, foFallback, err)
		}
	}
	stats := g.banks[foActive].Stats()
	t.Logf("%d payouts, %d bound to the active channel while it failed; active bank stats %+v", len(sent), len(ambiguous), stats)
}
