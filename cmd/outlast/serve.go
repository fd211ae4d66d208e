package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/cache"
	"github.com/outlast/outlast/channel"
	"github.com/outlast/outlast/control"
	ohttp "github.com/outlast/outlast/http"
	"github.com/outlast/outlast/jetstream"
	"github.com/outlast/outlast/ledger"
	"github.com/outlast/outlast/reconcile"
	"github.com/outlast/outlast/redis"
	"github.com/outlast/outlast/store"
)

// Config is everything `outlast serve` needs. The zero value plus a DataDir
// is the embedded mode: SQLite and embedded JetStream under DataDir.
type Config struct {
	DataDir        string            // if "", ./outlast-data
	DB             string            // DSN; if "", a SQLite file in DataDir
	NATS           string            // NATS URL; if "", embedded JetStream in DataDir
	Redis          string            // Redis URL for the shared cache; if "", in-process cache only
	Addr           string            // HTTP listen address; if "", 127.0.0.1:8080
	AdminToken     string            // if "" in embedded mode, generated once into DataDir
	Channels       map[string]string // partner channel name → base URL
	ChannelSecrets map[string]string // partner channel name → webhook HMAC secret
	ActiveChannel  string            // if "", the first channel by name
	// ChannelTimeout bounds one call to a partner; if <= 0,
	// channel.TimeoutDefault.
	ChannelTimeout time.Duration
	// BreakerDelay is how long a channel's open breaker waits before a
	// probe; if <= 0, 5 s.
	BreakerDelay time.Duration
	// EjectBase, EjectMax and ReturnWindow shape outlier ejection
	// (channel.EjectionConfig Base, Max and ReturnWindow); if <= 0, its
	// defaults.
	EjectBase, EjectMax, ReturnWindow time.Duration
	// EjectAfter is how many submits in a row that end ambiguous eject a
	// channel (channel.EjectionConfig Consecutive); if <= 0, its default.
	EjectAfter int
	LogLevel   string // debug, info, warn, error; if "", info
	// RejectDeliveriesMax is how many deliveries a rejected notification
	// gets before it is dead-lettered; if <= 0, ledger.RejectDeliveriesMaxDefault.
	RejectDeliveriesMax int
	// InstanceID names this instance in heartbeats; if "", host:port.
	InstanceID string
	// AdvertiseAddr is where others reach this instance, for heartbeats;
	// if "", Addr, with an unspecified host replaced by the hostname.
	AdvertiseAddr string
	// ControlPoll is how often the config version is polled; if <= 0,
	// control.PollIntervalDefault.
	ControlPoll time.Duration
	// OverrideFile, if set, is the break-glass file re-read every second:
	// while it exists the instance is in maintenance.
	OverrideFile string
	// ControlPollOnly turns off the config change hint (PostgreSQL
	// LISTEN/NOTIFY, or the in-process one): changes apply at the next
	// poll. For measuring the poll; an operator has no reason to set it.
	ControlPollOnly bool
	// ReconcileAfter is how long a payout stays dispatched without a
	// final notification before the reconciler asks its partner; if <= 0,
	// reconcile.AfterDefault.
	ReconcileAfter time.Duration
	// ReconcileEvery is the time between the reconciler's cycles; if <= 0,
	// reconcile.EveryDefault.
	ReconcileEvery time.Duration
	// ReconcileRate bounds the reconciler's status queries per second;
	// if <= 0, reconcile.QueryRateDefault.
	ReconcileRate float64
	// ReconcileLostAfter is how long a dispatched payout's bank may say it
	// has no such payout before an exception is filed; if <= 0,
	// reconcile.LostAfterDefault.
	ReconcileLostAfter time.Duration
	// DiscrepancyEvery is the time between periodic discrepancy reports
	// (every payout against every bank record, repairing what is safe
	// and filing the rest as exceptions); if 0,
	// reconcile.ReportEveryDefault; if < 0, none run.
	DiscrepancyEvery time.Duration
}

// Main is the running service. Tests drive it in-process on port :0; the
// binary drives it from `serve` and `demo`.
type Main struct {
	Config Config
	Logger *slog.Logger

	DB       *store.DB
	Ledger   *ledger.Ledger // DB behind the read cache; every reader and writer goes through it
	Redis    *redis.Store   // nil without --redis
	Router   *channel.Router
	Control  *control.Client // the control plane: config, break-glass, heartbeats
	HTTP     *ohttp.Server
	Registry *prometheus.Registry

	Log    *jetstream.Link // the notification log, open now or once the broker is back
	cancel context.CancelFunc

	// adminTokenFrom says where the admin token came from, for the
	// operator: a flag, or the file in DataDir serve generated it into.
	adminTokenFrom string
	// adminTokenFile and channelSecretFiles (name → path) are the flags
	// that read AdminToken and ChannelSecrets from files.
	adminTokenFile     string
	channelSecretFiles map[string]string
	wg                 sync.WaitGroup // background loops: committer, inbox drainer, dispatcher

	// dispatcher is the dispatcher's configuration less its Logger: tests
	// shorten its backoffs there. The zero value has its defaults.
	dispatcher channel.DispatcherConfig

	// storeOpened, if set, runs on the store as soon as it is open, before
	// anything shares it: tests set the store's seams (NewID) there.
	storeOpened func(*store.DB)
}

// NewMain returns a Main with embedded defaults.
func NewMain() *Main {
	return &Main{Config: Config{
		DataDir:        dataDirDefault,
		Addr:           "127.0.0.1:8080",
		Channels:       map[string]string{},
		ChannelSecrets: map[string]string{},
	}}
}

// ParseFlags fills m.Config from args and OUTLAST_* variables.
func (m *Main) ParseFlags(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "Run the service: HTTP API, partner webhooks, committer and dispatcher.", stdout, stderr)
	m.registerFlags(fs.FlagSet)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := m.readSecretFiles(); err != nil {
		return fs.fail("%v", err)
	}
	return nil
}

// readSecretFiles reads the secrets given as files into m.Config.
func (m *Main) readSecretFiles() error {
	c := &m.Config
	switch {
	case m.adminTokenFile != "":
		m.adminTokenFrom = "the one in " + m.adminTokenFile + " (--admin-token-file)"
	case c.AdminToken != "":
		m.adminTokenFrom = "the one given with --admin-token (OUTLAST_ADMIN_TOKEN)"
	}
	var err error
	if c.AdminToken, err = secret("admin-token", c.AdminToken, m.adminTokenFile); err != nil {
		return err
	}
	for _, name := range sortedKeys(m.channelSecretFiles) {
		if c.ChannelSecrets[name], err = secret("channel-secret", c.ChannelSecrets[name], m.channelSecretFiles[name]); err != nil {
			return fmt.Errorf("channel %s: %w", name, err)
		}
	}
	return nil
}

func (m *Main) registerFlags(fs *flag.FlagSet) {
	c := &m.Config
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for the embedded SQLite database, JetStream store and generated admin token")
	fs.StringVar(&c.DB, "db", c.DB, "database DSN: postgres://… for PostgreSQL; empty for SQLite in --data-dir")
	fs.StringVar(&c.NATS, "nats", c.NATS, "NATS URL of an external JetStream cluster; empty for embedded JetStream in --data-dir")
	fs.StringVar(&c.Redis, "redis", c.Redis, "Redis for the shared read cache: redis://host:port/db, redis-sentinel://h1,h2,h3/master, redis-cluster://h1,h2; empty for the in-process cache only")
	fs.StringVar(&c.Addr, "addr", c.Addr, "HTTP listen address")
	fs.StringVar(&c.AdminToken, "admin-token", c.AdminToken, "bearer token for admin endpoints; generated into --data-dir if empty in embedded mode")
	fs.Var(mapFlag(c.Channels), "channel", "partner channel as `name=base-url` (repeatable, or comma-separated)")
	fs.StringVar(&m.adminTokenFile, "admin-token-file", "", "file holding the admin token, instead of --admin-token (which ps shows)")
	fs.Var(mapFlag(c.ChannelSecrets), "channel-secret", "webhook HMAC secret as `name=secret`, one per channel")
	m.channelSecretFiles = map[string]string{}
	fs.Var(mapFlag(m.channelSecretFiles), "channel-secret-file", "file holding a channel's webhook secret, as `name=path` (repeatable), instead of --channel-secret")
	fs.StringVar(&c.ActiveChannel, "active-channel", c.ActiveChannel, "channel new payouts go to; default the first by name")
	fs.DurationVar(&c.ChannelTimeout, "channel-timeout", c.ChannelTimeout, "bound on one call to a partner bank; 0 for 3s")
	fs.DurationVar(&c.BreakerDelay, "channel-breaker-delay", c.BreakerDelay, "how long a channel's open circuit breaker waits before letting a probe through; 0 for 5s")
	fs.IntVar(&c.EjectAfter, "channel-eject-after", c.EjectAfter,
		fmt.Sprintf("submits in a row ending ambiguous (5xx, timeout) that eject a channel from the choice for new payouts; 0 for %d", channel.EjectConsecutiveDefault))
	fs.DurationVar(&c.EjectBase, "channel-eject-base", c.EjectBase,
		"how long a channel is ejected from the choice for new payouts after --channel-eject-after ambiguous submits in a row, doubling with each ejection; 0 for 10s")
	fs.DurationVar(&c.EjectMax, "channel-eject-max", c.EjectMax, "longest ejection of a channel, also the healthy spell that forgets one; 0 for 5m")
	fs.DurationVar(&c.ReturnWindow, "channel-return-window", c.ReturnWindow,
		"how long, after its ejection, a channel's share of new payouts takes to ramp from 10% to all; 0 for 30s")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.InstanceID, "instance-id", c.InstanceID, "this instance's name in heartbeats and `outlast admin status`; default host:port")
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", c.AdvertiseAddr, "host:port other instances, operators and `outlast admin` reach this instance at, shown in heartbeats; default --addr, with an unspecified host (:8080, 0.0.0.0:8080) replaced by this machine's hostname")
	fs.DurationVar(&c.ControlPoll, "control-poll", c.ControlPoll, "how often the config version is polled (a PostgreSQL NOTIFY applies changes at once; the poll is the safety net); 0 for 1s")
	fs.BoolVar(&c.ControlPollOnly, "control-poll-only", c.ControlPollOnly, "apply config changes at the next poll only, without the LISTEN/NOTIFY hint (for measuring the poll)")
	fs.StringVar(&c.OverrideFile, "override-file", c.OverrideFile, "break-glass file re-read every second: while it exists this instance refuses new payouts (empty, or {\"message\": \"…\"}; {\"maintenance\": false} or deleting it clears it); works with every dependency down")
	fs.DurationVar(&c.ReconcileAfter, "reconcile-after", c.ReconcileAfter,
		fmt.Sprintf("how long a payout stays dispatched without a final notification before its bank is asked for its status; 0 for %s", reconcile.AfterDefault))
	fs.DurationVar(&c.ReconcileEvery, "reconcile-every", c.ReconcileEvery,
		fmt.Sprintf("time between the reconciler's cycles (jittered by a fifth); 0 for %s", reconcile.EveryDefault))
	fs.Float64Var(&c.ReconcileRate, "reconcile-rate", c.ReconcileRate,
		fmt.Sprintf("the reconciler's status queries per second, at most, on this instance; 0 for %g", reconcile.QueryRateDefault))
	fs.DurationVar(&c.ReconcileLostAfter, "reconcile-lost-after", c.ReconcileLostAfter,
		fmt.Sprintf("how long a payout may stay dispatched while its bank says it has no such payout before it is filed as an exception (unknown_to_bank) for a human; 0 for %s", reconcile.LostAfterDefault))
	fs.DurationVar(&c.DiscrepancyEvery, "discrepancy-every", c.DiscrepancyEvery,
		fmt.Sprintf("time between discrepancy reports, each comparing every payout with every record of each bank (as outlast reconcile does), repairing what is safe and filing the rest as exceptions; 0 for %s, negative for none", reconcile.ReportEveryDefault))
	fs.IntVar(&c.RejectDeliveriesMax, "reject-deliveries-max", c.RejectDeliveriesMax,
		fmt.Sprintf("deliveries of a notification that cannot apply (unknown payout, wrong channel) before it is dead-lettered, spaced by backoff; 0 for %d", ledger.RejectDeliveriesMaxDefault))
}

// Validate says what is missing or inconsistent in c, before anything
// touches the disk, the database or the network.
func (c *Config) Validate() error {
	var bad configError
	if len(c.Channels) == 0 {
		bad = append(bad, "--channel name=url: no partner bank channel; at least one is needed")
	}
	for _, name := range sortedKeys(c.Channels) {
		if !outlast.ValidID(name) {
			bad = append(bad, fmt.Sprintf("--channel %s: a channel name must be %s", name, outlast.IDRule))
		}
		if u, err := url.Parse(c.Channels[name]); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad = append(bad, fmt.Sprintf("--channel %s=%s: want the bank's http:// or https:// base URL", name, c.Channels[name]))
		}
		if c.ChannelSecrets[name] == "" {
			bad = append(bad, fmt.Sprintf("--channel-secret %s=secret or --channel-secret-file %s=path: channel %s has no webhook secret", name, name, name))
		}
	}
	for _, name := range sortedKeys(c.ChannelSecrets) {
		if _, ok := c.Channels[name]; !ok {
			bad = append(bad, fmt.Sprintf("--channel-secret %s: there is no --channel %s", name, name))
		}
	}
	if _, ok := c.Channels[c.ActiveChannel]; c.ActiveChannel != "" && !ok {
		bad = append(bad, fmt.Sprintf("--active-channel %s: there is no --channel %s", c.ActiveChannel, c.ActiveChannel))
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		bad = append(bad, fmt.Sprintf("--addr %s: want host:port, e.g. 127.0.0.1:8080 or :8080", c.Addr))
	}
	if c.AdminToken == "" && store.IsPostgres(c.DB) {
		bad = append(bad, "--admin-token or --admin-token-file: required with an external --db (only embedded mode generates one)")
	}
	switch strings.ToLower(c.LogLevel) {
	case "", "debug", "info", "warn", "error":
	default:
		bad = append(bad, fmt.Sprintf("--log-level %s: want debug, info, warn or error", c.LogLevel))
	}
	if len(bad) > 0 {
		return bad
	}
	return nil
}

// configError lists what is wrong with a Config, one line each.
type configError []string

func (e configError) Error() string {
	return "configuration: " + strings.Join(e, "; ")
}

// serveExample is what serve prints under a configuration error.
const serveExample = `Example, with one simulated bank (in another terminal):
  openssl rand -hex 32 > tcb.secret
  outlast partnersim --name tcb --addr 127.0.0.1:9001 --secret-file tcb.secret \
    --webhook http://127.0.0.1:8080/v1/partners/tcb/notifications
  outlast serve --channel tcb=http://127.0.0.1:9001 --channel-secret-file tcb=tcb.secret
Or run 'outlast demo': the service with two simulated banks and traffic, nothing to configure.
`

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Run opens every dependency, starts the background loops and the HTTP
// server, and returns once the service is serving. Close stops it. An
// invalid Config is refused before anything is created.
func (m *Main) Run(ctx context.Context) (err error) {
	if err := m.Config.Validate(); err != nil {
		return err
	}
	if m.Logger == nil {
		m.Logger = newLogger(os.Stderr, m.Config.LogLevel)
	}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	if err := os.MkdirAll(m.Config.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := m.openStore(ctx); err != nil {
		return err
	}
	if err := m.openCache(ctx); err != nil {
		return err
	}
	// The link exists before the HTTP server that appends through it; it
	// is opened below, or in the background while the broker is down.
	m.Log = jetstream.NewLink(jetstream.Config{
		URL:     m.Config.NATS,
		DataDir: filepath.Join(m.Config.DataDir, "jetstream"),
		Logger:  m.Logger,
	})
	if err := m.openRouter(); err != nil {
		return err
	}
	if err := m.openControl(ctx); err != nil {
		return err
	}
	if err := m.openHTTP(); err != nil {
		return err
	}
	bg, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	if err := m.openLog(ctx, bg); err != nil {
		return err
	}
	m.start(bg, "read cache", m.Ledger.Run)
	m.start(bg, "committer", func(ctx context.Context) error { return m.Log.Consume(ctx, m.Ledger) })
	m.start(bg, "inbox drainer", (&ledger.Drainer{Inbox: m.DB, Ledger: m.Ledger, Logger: m.Logger}).Run)
	dcfg := m.dispatcher
	dcfg.Logger = m.Logger
	m.start(bg, "dispatcher", channel.NewDispatcher(m.Ledger, m.Router, dcfg).Run)
	rec, err := reconcile.New(reconcile.Config{
		Ledger: m.Ledger, Status: m.partnerStatus,
		DeadLetters: []outlast.DeadLetters{m.Log, m.DB},
		After:       m.Config.ReconcileAfter, Every: m.Config.ReconcileEvery, QueryRate: m.Config.ReconcileRate,
		LostAfter: m.Config.ReconcileLostAfter,
		Logger:    m.Logger.With("component", "reconciler"),
	})
	if err != nil {
		return err
	}
	m.start(bg, "reconciler", rec.Run)
	if m.Config.DiscrepancyEvery >= 0 {
		m.start(bg, "discrepancy report", reconcile.NewReporter(reconcile.ReportConfig{
			Ledger: reportLedger{m.Ledger, m.DB}, Channels: m.Router.Channels, Records: m.partnerRecords,
			Every: m.Config.DiscrepancyEvery, Logger: m.Logger.With("component", "discrepancy report"), Rand: mrand.Float64,
		}).Run)
	}
	if err := m.HTTP.Open(); err != nil {
		return err
	}
	m.Control.SetInstance(m.instanceID(), m.advertiseAddr())
	m.start(bg, "control plane", m.Control.Run)
	return nil
}

// openControl starts following the config document: it is read once
// before the HTTP server opens, so the first request is served under the
// operators' settings (maintenance included). A database that cannot be
// read then is not fatal: the poll takes the document once it can.
func (m *Main) openControl(ctx context.Context) error {
	watch := m.DB.WatchControl
	if m.Config.ControlPollOnly {
		watch = nil
	}
	c, err := control.New(control.Config{
		Store:        m.DB,
		Watch:        watch,
		Instances:    m.DB,
		Apply:        m.applyControl,
		Health:       m.health,
		Rates:        m.rates,
		Channels:     m.channels,
		PollInterval: m.Config.ControlPoll,
		OverrideFile: m.Config.OverrideFile,
		StateFile:    filepath.Join(m.Config.DataDir, breakGlassFile),
		Logger:       m.Logger.With("component", "control"),
	})
	if err != nil {
		return err
	}
	m.Control = c
	if m.Config.OverrideFile != "" {
		c.ReadOverrideFile()
	}
	if err := c.Load(ctx); err != nil {
		m.Logger.Warn("config not read at start; running on the defaults until it can be", "err", err)
	}
	return nil
}

// breakGlassFile keeps the local break-glass switch in the data
// directory, so a restart does not undo it.
const breakGlassFile = "break-glass.json"

// applyControl takes a new config document into the router, and warns of
// channels it names that this instance does not have.
func (m *Main) applyControl(c *outlast.ControlConfig) {
	m.Router.Apply(c)
	have := m.Router.Channels()
	var missing []string
	for _, name := range append(append(slices.Sorted(maps.Keys(c.Channels)), c.ActiveChannel), c.Fallback...) {
		if name != "" && !slices.Contains(have, name) && !slices.Contains(missing, name) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		m.Logger.Warn("the config names channels this instance lacks; they are skipped here", "channels", missing, "have", have)
	}
}

// instanceID is --instance-id, or the advertised host:port.
func (m *Main) instanceID() string {
	if m.Config.InstanceID != "" {
		return m.Config.InstanceID
	}
	return m.advertiseAddr()
}

// advertiseAddr is --advertise-addr, or the address the HTTP server
// listens on, with an unspecified host (":8080", "0.0.0.0:8080") replaced
// by this machine's hostname: 127.0.0.1 would send an operator to their
// own machine.
func (m *Main) advertiseAddr() string {
	if m.Config.AdvertiseAddr != "" {
		return m.Config.AdvertiseAddr
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(m.HTTP.URL(), "http://"))
	host, _, err := net.SplitHostPort(m.Config.Addr)
	if err != nil || host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
		if host, err = os.Hostname(); err != nil || host == "" {
			host = "localhost"
		}
	}
	return net.JoinHostPort(host, port)
}

// rates are the HTTP server's counts of the last minute, for the
// heartbeat that the other instances' consoles add up.
func (m *Main) rates() *outlast.RateSeries {
	if m.HTTP == nil { // a heartbeat asked for before the server exists
		return nil
	}
	return m.HTTP.Rates(ohttp.HeartbeatRateSeconds)
}

// channels are the router's order for new payouts and every channel it
// has, for the heartbeat.
func (m *Main) channels() (order, all []string) {
	return m.Router.Order(), m.Router.Channels()
}

// health is what this instance sees of its dependencies, for its
// heartbeat: each check reads local state or asks once within ctx.
func (m *Main) health(ctx context.Context) []outlast.DependencyHealth {
	var out []outlast.DependencyHealth
	dep := func(name string, err error) {
		d := outlast.DependencyHealth{Name: name, OK: err == nil}
		if err != nil {
			d.Detail = err.Error()
		}
		out = append(out, d)
	}
	dep("database", m.DB.Ping(ctx))
	dep("log", m.Log.Health())
	if m.Redis != nil {
		dep("redis", m.Redis.Ping(ctx))
	}
	for _, name := range m.Router.Channels() {
		st, _ := m.Router.State(name)
		out = append(out, outlast.DependencyHealth{Name: "channel:" + name, OK: st.OK(), State: st.String()})
	}
	return out
}

func (m *Main) openStore(ctx context.Context) error {
	dsn := m.Config.DB
	if dsn == "" {
		dsn = filepath.Join(m.Config.DataDir, "outlast.db")
	}
	db, err := store.Open(ctx, dsn)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	m.DB = db
	if m.storeOpened != nil {
		m.storeOpened(db)
	}
	if m.Config.AdminToken == "" {
		path := filepath.Join(m.Config.DataDir, adminTokenFile)
		tok, created, err := loadOrCreateToken(path)
		if err != nil {
			return err
		}
		m.Config.AdminToken = tok
		m.adminTokenFrom = "in " + path + map[bool]string{true: " (generated now)", false: ""}[created]
	}
	return nil
}

// openLog opens the notification log. An embedded log that fails to open
// is a local disk problem and fails start-up; an external broker that is
// down is retried in the background while webhooks use the inbox.
func (m *Main) openLog(ctx, bg context.Context) error {
	err := m.Log.Open(ctx)
	switch {
	case err == nil:
	case m.Config.NATS == "":
		return fmt.Errorf("open embedded notification log: %w", err)
	default:
		m.Logger.Warn("notification log unavailable at start; webhooks go to the database inbox until it is back", "err", err)
		m.start(bg, "log opener", m.Log.Run)
	}
	return nil
}

// openCache puts the tiered read cache in front of the ledger, with Redis
// as its shared layer when --redis is given. Redis being down at start is
// not an error: the cache's breaker keeps it out of the way until it is back.
func (m *Main) openCache(ctx context.Context) error {
	var l2 cache.L2
	var bc cache.Broadcaster
	if m.Config.Redis != "" {
		redis.SetLogger(m.Logger)
		r, err := redis.Open(ctx, m.Config.Redis, redis.Options{})
		if err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		m.Redis, l2, bc = r, r, r
	}
	l, err := ledger.New(m.DB, ledger.Config{L2: l2, Broadcaster: bc, RejectDeliveriesMax: m.Config.RejectDeliveriesMax})
	if err != nil {
		return err
	}
	m.Ledger = l
	return nil
}

func (m *Main) openRouter() error {
	names := sortedKeys(m.Config.Channels)
	clients := make([]*channel.Client, 0, len(names))
	for _, name := range names {
		clients = append(clients, channel.NewClient(name, m.Config.Channels[name],
			channel.ClientOptions{Timeout: m.Config.ChannelTimeout, BreakerDelay: m.Config.BreakerDelay}))
	}
	active := m.Config.ActiveChannel
	if active == "" {
		active = names[0]
	}
	r, err := channel.NewRouterWith(channel.RouterConfig{Active: active, Ejection: channel.EjectionConfig{
		Consecutive: m.Config.EjectAfter, Base: m.Config.EjectBase, Max: m.Config.EjectMax, ReturnWindow: m.Config.ReturnWindow,
		Logger: m.Logger.With("component", "router"),
	}}, clients...)
	if err != nil {
		return err
	}
	m.Router = r
	return nil
}

func (m *Main) openHTTP() error {
	m.Registry = prometheus.NewRegistry()
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, cs := range [][]prometheus.Collector{control.Collectors(), ohttp.Collectors(), jetstream.Collectors(), channel.Collectors(), store.Collectors(), cache.Collectors(), redis.Collectors(), ledger.Collectors(), reconcile.Collectors()} {
		m.Registry.MustRegister(cs...)
	}
	secrets := make(map[string][]byte, len(m.Config.ChannelSecrets))
	for name, s := range m.Config.ChannelSecrets {
		secrets[name] = []byte(s)
	}
	srv, err := ohttp.New(ohttp.Config{
		Addr:           m.Config.Addr,
		AdminToken:     m.Config.AdminToken,
		ChannelSecrets: secrets,
		Logger:         m.Logger,
	}, ohttp.Services{
		Accounts:      m.Ledger,
		Payouts:       m.Ledger,
		Log:           m.Log,
		Inbox:         m.DB,
		ChooseChannel: m.Router.Choose,
		Ready:         m.ready,
		Metrics:       promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}),
		DeadLetters:   map[outlast.Source]outlast.DeadLetters{outlast.FromLog: m.Log, outlast.FromInbox: m.DB},
		Control:       m.DB,
		Instances:     m.DB,
		Exceptions:    m.Ledger,
		Local:         m.Control,
	})
	if err != nil {
		return err
	}
	m.HTTP = srv
	return nil
}

// ready says whether this instance can take payouts: that needs the
// database, and nothing else (a down log falls back to the inbox).
func (m *Main) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := m.DB.Ping(ctx); err != nil {
		return outlast.Unavailable(err, time.Second, "database unavailable")
	}
	return nil
}

// partnerStatus is the router's status query in the reconciler's terms.
func (m *Main) partnerStatus(ctx context.Context, ch, payoutID string) (*reconcile.Answer, error) {
	st, err := m.Router.Status(ctx, ch, payoutID)
	if err != nil {
		return nil, err
	}
	return &reconcile.Answer{PartnerRef: st.PartnerRef, Status: st.Status, Reason: st.Reason}, nil
}

// reportLedger is the ledger the discrepancy report repairs through (the
// cached one, so its cache learns of each repair and hold at once) with
// the store's walk over every payout.
type reportLedger struct {
	*ledger.Ledger
	db *store.DB
}

func (r reportLedger) EachPayout(ctx context.Context, fn func(*outlast.Payout) error) error {
	return r.db.EachPayout(ctx, fn)
}

// partnerRecords reads every record of a channel's bank.
func (m *Main) partnerRecords(ctx context.Context, ch string) ([]outlast.PartnerRecord, error) {
	c, ok := m.Router.Client(ch)
	if !ok {
		return nil, outlast.Errorf(outlast.ENOTFOUND, "no channel %q", ch)
	}
	return c.Records(ctx)
}

// start runs loop in a goroutine owned by m; Close cancels and waits.
func (m *Main) start(ctx context.Context, name string, loop func(context.Context) error) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := loop(ctx); err != nil && ctx.Err() == nil {
			m.Logger.Error("background loop stopped", "loop", name, "err", err)
		}
	}()
}

// Close stops the HTTP server (finishing in-flight requests), then the
// background loops, then the log and the database, in that order so that
// nothing acknowledged is cut off halfway.
func (m *Main) Close() error {
	var errs []error
	if m.HTTP != nil {
		errs = append(errs, m.HTTP.Close())
	}
	if m.cancel != nil {
		m.cancel()
	}
	m.wg.Wait()
	if m.Log != nil {
		errs = append(errs, m.Log.Close())
	}
	if m.Ledger != nil {
		errs = append(errs, m.Ledger.Close())
	}
	if m.Redis != nil {
		errs = append(errs, m.Redis.Close())
	}
	if m.DB != nil {
		errs = append(errs, m.DB.Close())
	}
	return errors.Join(errs...)
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	m := NewMain()
	if err := m.ParseFlags(args, stdout, stderr); err != nil {
		return err
	}
	var bad configError
	if err := m.Config.Validate(); errors.As(err, &bad) {
		fmt.Fprintln(stderr, "outlast serve: missing or wrong configuration:")
		for _, b := range bad {
			fmt.Fprintln(stderr, "  "+b)
		}
		fmt.Fprint(stderr, serveExample, "Run 'outlast serve --help' for every flag.\n")
		return exitError(2)
	}
	m.Logger = newLogger(stderr, m.Config.LogLevel)
	if err := m.Run(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "outlast serving on %s (data %s)\nadmin token: %s\n", m.HTTP.URL(), m.Config.DataDir, m.adminTokenFrom)
	<-ctx.Done()
	fmt.Fprintln(stdout, "outlast: shutting down")
	return m.Close()
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// adminTokenFile is where embedded serve keeps the admin token it
// generated, in its data directory.
const adminTokenFile = "admin-token"

// loadOrCreateToken reads a token file, or creates one (0600) with 32
// random bytes, so a restart keeps the same admin token.
func loadOrCreateToken(path string) (tok string, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if tok := strings.TrimSpace(string(b)); tok != "" {
			return tok, false, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("read admin token: %w", err)
	}
	var r [32]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", false, err
	}
	tok = "oat_" + hex.EncodeToString(r[:])
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("write admin token: %w", err)
	}
	return tok, true, nil
}
