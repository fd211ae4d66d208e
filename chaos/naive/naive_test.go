package naive_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outlast/outlast/chaos/faultproxy"
	"github.com/outlast/outlast/chaos/naive"
	"github.com/outlast/outlast/internal/redisproc"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/partnersim"
)

const (
	adminToken = "test-admin"
	channel    = "tcb"
)

var secret = []byte("tcb-secret")

// lab is one naive deployment: a database, a private redis-server and a
// simulated bank whose webhooks go to the instance named api.
type lab struct {
	t     *testing.T
	dsn   string
	redis *redisproc.Server
	bank  *partnersim.Bank
	url   string // the bank's
}

func newLab(t *testing.T) *lab {
	t.Helper()
	r, err := redisproc.Start(context.Background(), redisproc.Options{})
	if err != nil {
		testenv.Missing(t, "redis-server", err)
		return nil
	}
	t.Cleanup(func() { _ = r.Stop() })
	return &lab{t: t, dsn: testenv.PostgresDSN(t), redis: r}
}

// start runs an instance; the first one started with webhooks true
// receives the bank's webhooks.
func (l *lab) start(mod func(*naive.Config), webhooks bool) string {
	t := l.t
	t.Helper()
	var bank http.Handler = http.NotFoundHandler()
	bankSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { bank.ServeHTTP(w, r) }))
	t.Cleanup(bankSrv.Close)
	if l.url == "" {
		l.url = bankSrv.URL
	}
	cfg := naive.Config{DSN: l.dsn, RedisAddr: l.redis.Addr(), AdminToken: adminToken,
		Channels: map[string]string{channel: l.url}, ChannelSecrets: map[string][]byte{channel: secret},
		DispatchInterval: 20 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	s, err := naive.New(cfg)
	if err != nil {
		t.Fatalf("naive.New: %v", err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	if webhooks {
		l.bank = partnersim.New(partnersim.Config{Name: channel, Secret: secret, PayDelay: 20 * time.Millisecond,
			WebhookURL: srv.URL + "/v1/partners/" + channel + "/notifications", Seed: 1,
			WebhookBackoffBase: 10 * time.Millisecond, WebhookBackoffMax: 100 * time.Millisecond})
		bank = l.bank
		testenv.Start(t, "bank.Run", l.bank.Run)
	}
	stop := testenv.Start(t, "naive.Run", s.Run)
	t.Cleanup(func() {
		stop()
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return srv.URL
}

// call sends a JSON request and decodes the answer into out (if non-nil),
// returning the status.
func call(t *testing.T, method, url, token, key string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, body)
	req.Header.Set("Authorization", "Bearer "+token)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, url, raw, err)
		}
	}
	return resp.StatusCode
}

type account struct {
	Funded, Available, Held int64
	PaidOut                 int64 `json:"paid_out"`
}

type payout struct {
	ID, Status, Channel string
}

// setUp makes a client with a funded account through api and returns the
// client's key.
func setUp(t *testing.T, api string, funds int64) string {
	t.Helper()
	var c struct {
		APIKey string `json:"api_key"`
	}
	if got := call(t, "POST", api+"/admin/v1/clients", adminToken, "", map[string]string{"id": "c1"}, &c); got != 201 {
		t.Fatalf("create client = %d, want 201", got)
	}
	if got := call(t, "POST", api+"/v1/accounts", adminToken, "", map[string]string{"id": "a1", "client_id": "c1", "currency": "VND"}, nil); got != 201 {
		t.Fatalf("create account = %d, want 201", got)
	}
	if got := call(t, "POST", api+"/v1/accounts/a1/funds", adminToken, "f1", map[string]int64{"amount": funds}, nil); got != 200 {
		t.Fatalf("fund account = %d, want 200", got)
	}
	return c.APIKey
}

func createPayout(t *testing.T, api, key, idem string, amount int64) (payout, int) {
	t.Helper()
	var p payout
	in := map[string]any{"account_id": "a1", "amount": amount, "currency": "VND", "destination": "123"}
	return p, call(t, "POST", api+"/v1/payouts", key, idem, in, &p)
}

func payoutStatus(t *testing.T, api, key, id string) string {
	t.Helper()
	var p payout
	if got := call(t, "GET", api+"/v1/payouts/"+id, key, "", nil, &p); got != 200 {
		t.Fatalf("GET payout %s = %d, want 200", id, got)
	}
	return p.Status
}

func getAccount(t *testing.T, api string) account {
	t.Helper()
	var a account
	if got := call(t, "GET", api+"/v1/accounts/a1", adminToken, "", nil, &a); got != 200 {
		t.Fatalf("GET account = %d, want 200", got)
	}
	return a
}

// TestHappyPath: a payout is dispatched to the bank, its webhook is
// published and committed, and the balances settle.
func TestHappyPath(t *testing.T) {
	l := newLab(t)
	api := l.start(func(c *naive.Config) {
		c.CacheTTL = 50 * time.Millisecond
		c.Channels["acb"] = "http://127.0.0.1:1" // a bank that never answers
		c.DefaultChannel = channel
	}, true)
	key := setUp(t, api, 1000)
	p, got := createPayout(t, api, key, "k1", 100)
	if got != 201 {
		t.Fatalf("create payout = %d, want 201", got)
	}
	again, got := createPayout(t, api, key, "k1", 100)
	if got != 200 || again.ID != p.ID {
		t.Fatalf("replay = %d %s, want 200 %s", got, again.ID, p.ID)
	}
	if _, got := createPayout(t, api, key, "k1", 101); got != 422 {
		t.Fatalf("same key, other amount = %d, want 422", got)
	}
	testenv.WaitFor(t, 10*time.Second, "payout succeeded", func() bool { return payoutStatus(t, api, key, p.ID) == "succeeded" })
	want := account{Funded: 1000, Available: 900, Held: 0, PaidOut: 100}
	testenv.WaitFor(t, 5*time.Second, "balances settled", func() bool { return getAccount(t, api) == want })

	// The channel switch is a published config document too.
	doc := map[string]any{"channels": map[string]any{"tcb": map[string]bool{"enabled": true}, "acb": map[string]bool{"enabled": true}},
		"active_channel": "acb"}
	if got := call(t, "PUT", api+"/admin/v1/config", adminToken, "", doc, nil); got != 200 {
		t.Fatalf("PUT config = %d, want 200", got)
	}
	testenv.WaitFor(t, 5*time.Second, "new payouts on acb", func() bool {
		p, _ := createPayout(t, api, key, fmt.Sprintf("k-%d", time.Now().UnixNano()), 1)
		return p.Channel == "acb"
	})
}

// TestAcknowledgedWebhookLost reproduces seed 000: while no committer is
// subscribed, the bank's webhooks are answered 200 and published to no
// one; a committer that subscribes afterwards never sees them. The payout
// the bank paid stays dispatched, its amount held: the baseline's known
// loss.
func TestAcknowledgedWebhookLost(t *testing.T) {
	l := newLab(t)
	api := l.start(func(c *naive.Config) { c.NoCommitter = true }, true)
	key := setUp(t, api, 1000)
	p, got := createPayout(t, api, key, "k1", 100)
	if got != 201 {
		t.Fatalf("create payout = %d, want 201", got)
	}
	l.waitAcknowledged(t, 1)
	l.start(func(c *naive.Config) { c.NoDispatcher = true }, false) // the committer comes back
	p2, got := createPayout(t, api, key, "k2", 50)
	if got != 201 {
		t.Fatalf("create payout = %d, want 201", got)
	}
	assertLost(t, api, key, p.ID, p2.ID, account{Funded: 1000, Available: 850, Held: 100, PaidOut: 50})
}

// waitAcknowledged waits until the bank has paid succeeded payouts and
// every webhook was acknowledged at the first attempt.
func (l *lab) waitAcknowledged(t *testing.T, succeeded int64) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "the bank to pay and be acknowledged", func() bool {
		st := l.bank.Stats()
		return st.Succeeded == succeeded && st.WebhooksPending == 0
	})
	if st := l.bank.Stats(); st.WebhooksRetried != 0 {
		t.Fatalf("bank retried %d webhooks, want 0: every one was acknowledged", st.WebhooksRetried)
	}
}

// assertLost checks that the payout lost, paid by the bank, stays
// dispatched while the later payout next, committed by a listening
// committer, succeeds; and that the account holds what was lost.
func assertLost(t *testing.T, api, key, lost, next string, want account) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "the later payout to succeed", func() bool { return payoutStatus(t, api, key, next) == "succeeded" })
	if got := payoutStatus(t, api, key, lost); got != "dispatched" {
		t.Errorf("paid payout status = %s, want dispatched (its acknowledged webhook lost)", got)
	}
	testenv.WaitFor(t, 5*time.Second, "balances with the loss", func() bool { return getAccount(t, api) == want })
}

// TestMaintenanceLostWithRedis reproduces seed 000's dead control plane:
// with Redis down, maintenance cannot be published, payouts keep being
// taken, and once Redis is back the switch is not there either. Reads
// meanwhile fall through to the database (seed 002).
func TestMaintenanceLostWithRedis(t *testing.T) {
	l := newLab(t)
	api := l.start(nil, true)
	key := setUp(t, api, 1000)
	if err := l.redis.Kill(); err != nil {
		t.Fatal(err)
	}
	doc := map[string]any{"maintenance": map[string]any{"on": true, "message": "investigating"}}
	if got := call(t, "PUT", api+"/admin/v1/config", adminToken, "", doc, nil); got != 503 {
		t.Fatalf("PUT config with Redis down = %d, want 503", got)
	}
	p, got := createPayout(t, api, key, "k1", 100)
	if got != 201 {
		t.Fatalf("create payout during the failed maintenance = %d, want 201 (still taken)", got)
	}
	if got := payoutStatus(t, api, key, p.ID); got == "" {
		t.Fatalf("payout read with Redis down: no status")
	}
	if err := l.redis.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "ready again", func() bool { return call(t, "GET", api+"/readyz", "", "", nil, nil) == 200 })
	if _, got := createPayout(t, api, key, "k2", 100); got != 201 {
		t.Fatalf("create payout after Redis came back = %d, want 201: the switch was never applied", got)
	}
	// Published with Redis up, the same document does take effect.
	if got := call(t, "PUT", api+"/admin/v1/config", adminToken, "", doc, nil); got != 200 {
		t.Fatalf("PUT config = %d, want 200", got)
	}
	testenv.WaitFor(t, 10*time.Second, "maintenance applied", func() bool {
		_, got := createPayout(t, api, key, fmt.Sprintf("k-%d", time.Now().UnixNano()), 1)
		return got == 503
	})
}

// subscribers counts the subscribers of the naive design's notification
// channel on the lab's Redis.
func (l *lab) subscribers(t *testing.T) int64 {
	t.Helper()
	rdb := goredis.NewClient(&goredis.Options{Addr: l.redis.Addr()})
	defer rdb.Close()
	n, err := rdb.PubSubNumSub(context.Background(), "naive:notifications").Result()
	if err != nil {
		t.Fatalf("PUBSUB NUMSUB: %v", err)
	}
	return n["naive:notifications"]
}

// TestSubscribersCutOff is seed 000 as it happened: Redis stays up for
// the API, which publishes and acknowledges, while the committer's and the
// control subscriber's connections are cut. The webhook acknowledged
// meanwhile is never committed, and the maintenance switch, answered 200,
// never reaches the instance that was cut off, even after it reconnects.
func TestSubscribersCutOff(t *testing.T) {
	l := newLab(t)
	api := l.start(func(c *naive.Config) { c.NoCommitter = true }, true)
	proxy, err := faultproxy.Start("redis", l.redis.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	cut := l.start(func(c *naive.Config) { c.RedisAddr, c.NoDispatcher = proxy.Addr(), true }, false)
	key := setUp(t, api, 1000)
	testenv.WaitFor(t, 10*time.Second, "the committer to subscribe", func() bool { return l.subscribers(t) == 1 })
	p1, _ := createPayout(t, api, key, "k1", 100)
	testenv.WaitFor(t, 10*time.Second, "the first payout to succeed", func() bool { return payoutStatus(t, api, key, p1.ID) == "succeeded" })

	if err := proxy.Partition(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the committer to be cut off", func() bool { return l.subscribers(t) == 0 })
	p2, _ := createPayout(t, api, key, "k2", 100)
	l.waitAcknowledged(t, 2)
	doc := map[string]any{"maintenance": map[string]any{"on": true, "message": "investigating"}}
	if got := call(t, "PUT", api+"/admin/v1/config", adminToken, "", doc, nil); got != 200 {
		t.Fatalf("PUT config = %d, want 200 (published)", got)
	}

	if err := proxy.Heal(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the committer to resubscribe", func() bool { return l.subscribers(t) == 1 })
	testenv.WaitFor(t, 10*time.Second, "maintenance on the connected instance", func() bool {
		_, got := createPayout(t, api, key, "k-api", 1)
		return got == 503
	})
	p3, got := createPayout(t, cut, key, "k3", 100)
	if got != 201 {
		t.Fatalf("create payout on the cut-off instance = %d, want 201: its switch was lost", got)
	}
	assertLost(t, api, key, p2.ID, p3.ID, account{Funded: 1000, Available: 700, Held: 100, PaidOut: 200})
}

// TestReadsFallThroughToDatabase is seed 002's cache-aside: with Redis
// gone every read is answered from the database, and with Redis hung
// every read first waits out go-redis's default timeouts.
func TestReadsFallThroughToDatabase(t *testing.T) {
	l := newLab(t)
	api := l.start(func(c *naive.Config) { c.NoDispatcher = true }, true)
	key := setUp(t, api, 1000)
	source := func() string {
		req, _ := http.NewRequest("GET", api+"/v1/accounts/a1", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET account = %d, want 200", resp.StatusCode)
		}
		return resp.Header.Get("Outlast-Source")
	}
	source()
	if got := source(); got != "cache" {
		t.Fatalf("second read from %q, want cache", got)
	}
	if err := l.redis.Kill(); err != nil {
		t.Fatal(err)
	}
	if got := source(); got != "database" {
		t.Errorf("read with Redis down from %q, want database", got)
	}
	if err := l.redis.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	source() // a fresh connection, and the account cached again
	if err := l.redis.Pause(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.redis.Resume() }()
	start := time.Now()
	if got := source(); got != "database" {
		t.Errorf("read with Redis hung from %q, want database", got)
	}
	if took := time.Since(start); took < 3*time.Second {
		t.Errorf("read with Redis hung took %s, want at least go-redis's 3 s read timeout", took)
	} else {
		t.Logf("read with Redis hung took %s", took)
	}
}
