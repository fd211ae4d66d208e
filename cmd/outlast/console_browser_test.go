package main

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/browsertest"
	"github.com/outlast/outlast/internal/natsproc"
	"github.com/outlast/outlast/internal/redisproc"
	"github.com/outlast/outlast/internal/testenv"
)

// browserWait bounds each wait on the page: a config change reaches every
// instance's heartbeat within a few seconds, even on a loaded machine.
const browserWait = 45 * time.Second

// consoleNode is one instance of the cluster with its own Redis and NATS.
type consoleNode struct {
	*testService
	redis *redisproc.Server
	nats  *natsproc.Server
}

// TestConsoleInBrowser drives the admin console in headless Chromium: sign
// in on one of three instances, press maintenance on and see every
// instance report the new version — once with every dependency up, once
// with every instance's Redis and NATS killed. Each time new payouts are
// refused on every instance, and a screenshot is kept.
func TestConsoleInBrowser(t *testing.T) {
	chromium := browsertest.Chromium(t)
	nodes := startConsoleCluster(t, 3)
	key, accounts, err := demoSetup(context.Background(), nodes[0].admin, "console-client", 1)
	if err != nil {
		t.Fatal(err)
	}
	payout := func(n consoleNode, k string) int {
		_, status, _ := client.New(n.admin.BaseURL(), key).CreatePayout(context.Background(), k, client.PayoutRequest{AccountID: accounts[0], Amount: 100, Currency: "USD", Destination: "dest"})
		return status
	}
	b := browsertest.New(t, chromium)
	browse(t, b, 0, chromedp.Navigate(nodes[0].admin.BaseURL()+"/admin/"))
	browse(t, b, browserWait,
		chromedp.SendKeys(chromedp.ID("token"), "test-admin"),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("maintenance-on")),
		poll(`document.querySelectorAll("tr.instance:not(.stale)").length === 3`))
	checkChannelCard(t, b)

	pressMaintenance(t, b, "maintenance-on", 1, "deps-up")
	for i, n := range nodes {
		if st := payout(n, "up-"+strconv.Itoa(i)); st != 503 {
			t.Errorf("payout on %s in maintenance = %d, want 503", n.Config.InstanceID, st)
		}
	}
	pressMaintenance(t, b, "maintenance-off", 2, "")
	for i, n := range nodes {
		if st := payout(n, "open-"+strconv.Itoa(i)); st != 201 {
			t.Fatalf("payout on %s out of maintenance = %d, want 201", n.Config.InstanceID, st)
		}
	}

	for _, n := range nodes {
		if err := n.redis.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := n.nats.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	browse(t, b, browserWait, poll(`document.querySelectorAll('tr.instance:not(.stale) li.dep.down[data-dep="redis"]').length === 3 &&
		document.querySelectorAll('tr.instance:not(.stale) li.dep.down[data-dep="log"]').length === 3`))
	pressMaintenance(t, b, "maintenance-on", 3, "redis-and-log-down")
	for i, n := range nodes {
		if st := payout(n, "down-"+strconv.Itoa(i)); st != 503 {
			t.Errorf("payout on %s in maintenance with Redis and the log down = %d, want 503", n.Config.InstanceID, st)
		}
	}
}

// checkChannelCard checks that the partner-channel table fits its card
// at the test's window width, every button and field in sight, and that
// it names the start-up channel as the active one while the config sets
// none.
func checkChannelCard(t *testing.T, b context.Context) {
	t.Helper()
	outside, err := chromedp.Run(b, chromedp.Evaluate[string](`(function () {
		var card = document.getElementById("channels").getBoundingClientRect();
		return Array.from(document.querySelectorAll("#channels button, #channels input:not([type=hidden])")).filter(function (e) {
			var r = e.getBoundingClientRect();
			return r.left < card.left || r.right > card.right;
		}).map(function (e) { return e.textContent || e.name; }).join(", ");
	})()`))
	if err != nil {
		t.Fatalf("measure the channel card: %v", err)
	}
	if outside != "" {
		t.Errorf("the partner-channel card cuts off %s", outside)
	}
	state, err := chromedp.Run(b, chromedp.Evaluate[string](`document.querySelector('tr[data-channel="tcb"] .state').textContent.trim()`))
	if err != nil || state != "active (start-up default)" {
		t.Errorf("channel tcb's state = %q (%v), want %q", state, err, "active (start-up default)")
	}
}

// pressMaintenance presses the button with id, waits until the page
// shows all three instances at version, and keeps a screenshot named
// shot, if any.
func pressMaintenance(t *testing.T, b context.Context, id string, version int, shot string) {
	t.Helper()
	v := strconv.Itoa(version)
	if id == "maintenance-on" {
		browse(t, b, browserWait, chromedp.SendKeys(chromedp.ID("maintenance-reason"), "browser test "+shot))
	}
	browse(t, b, browserWait,
		chromedp.Click(chromedp.ID(id)),
		// The answer is a new page; wait for it before looking at its rows.
		chromedp.WaitVisible(chromedp.CSS(`#live[data-version="`+v+`"]`)),
		poll(`document.getElementById("live").dataset.version === "`+v+`" &&
			document.querySelectorAll('tr.instance:not(.stale)[data-applied="`+v+`"]').length === 3`))
	if shot == "" {
		return
	}
	path := browsertest.Screenshot(t, b, "console-"+shot+".png")
	t.Logf("screenshot of the console, maintenance on at version %d (%s): %s", version, shot, path)
}

// poll waits until expression is true in the page.
func poll(expression string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[bool](expression, chromedp.WithPollingInterval(100*time.Millisecond),
			chromedp.WithPollingTimeout(browserWait))(ctx, t)
		return chromedp.Void{}, err
	}
}

// browse runs steps in the browser, within timeout (none for the first run,
// which starts the browser: a timeout there would end it).
func browse(t *testing.T, b context.Context, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx := b
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(b, timeout)
		defer cancel()
	}
	if err := chromedp.Do(ctx, steps...); err != nil {
		html, _ := chromedp.Run(b, chromedp.OuterHTML("body"))
		t.Fatalf("browser: %v\npage body:\n%s", err, firstLines(html, 80))
	}
}

// startConsoleCluster starts n instances on one fresh PostgreSQL
// database, each with its own redis-server and nats-server.
func startConsoleCluster(t *testing.T, n int) []consoleNode {
	t.Helper()
	dsn := testenv.PostgresDSN(t)
	ctx := context.Background()
	nodes := make([]consoleNode, 0, n)
	for i := range n {
		rs, err := redisproc.Start(ctx, redisproc.Options{})
		if err != nil {
			testenv.Missing(t, "redis-server", err)
		}
		t.Cleanup(func() { _ = rs.Stop() })
		ns, err := natsproc.Start(ctx, natsproc.Options{})
		if err != nil {
			testenv.Missing(t, "nats-server", err)
		}
		t.Cleanup(func() { _ = ns.Stop() })
		s := startTestService(t, dsn, func(m *Main) {
			m.Config.Redis, m.Config.NATS = rs.URL(), ns.URL()
			m.Config.InstanceID = fmt.Sprintf("node-%d", i+1)
		})
		nodes = append(nodes, consoleNode{testService: s, redis: rs, nats: ns})
	}
	return nodes
}
