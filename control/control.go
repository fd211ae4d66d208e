// Package control is the control plane's client: what every instance runs
// to follow the operators' config document and to be stopped when the
// database cannot be reached.
//
// It polls the document's version on its own schedule (every second by
// default), loads and validates the whole document when the version
// changes and swaps it in at once; a hint (PostgreSQL's LISTEN/NOTIFY,
// or the in-process signal of embedded mode) makes it look at once, the
// poll being the safety net. When the database cannot be read it keeps the
// last good document, says so (Status, metrics, logs) and keeps polling.
// It writes a heartbeat with the version it applied and the health of the
// instance's dependencies.
//
// Two break-glass overrides hold one instance in maintenance with nothing
// but the instance itself: a local switch (SetLocal, behind the admin
// API's /admin/v1/local/maintenance, kept in a state file so a restart
// does not undo it) and an override file the instance re-reads every
// second. Neither touches the database, the log or Redis; each lasts until
// it is cleared.
//
// Nothing here touches Redis or the notification log (DESIGN.md
// principle 3).
package control

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/backoff"
)

// Defaults for Config fields left at their zero value.
const (
	PollIntervalDefault      = time.Second
	HeartbeatIntervalDefault = 2 * time.Second
	OverrideIntervalDefault  = time.Second
	ReadTimeoutDefault       = 2 * time.Second
	// healthTimeout bounds the dependency checks of one heartbeat.
	healthTimeout = time.Second
	// watchBackoffMax bounds the wait before a broken watch is opened
	// again; the poll covers the gap.
	watchBackoffMax = 30 * time.Second
	// unreachableLogEvery spaces the warnings while the database stays
	// unreachable: one a poll would flood the log.
	unreachableLogEvery = 30 * time.Second
)

// Config configures a Client.
type Config struct {
	// Store holds the config document. Required.
	Store outlast.ControlStore
	// Watch, if set, calls hint with the version of each change as it
	// commits, after calling ready once it listens; it returns when ctx is
	// done (nil) or the watch breaks (an error; it is opened again with
	// backoff). store.DB.WatchControl is one.
	Watch func(ctx context.Context, ready func(), hint func(version int64)) error
	// Instances, if set, receives this instance's heartbeats.
	Instances outlast.InstanceStore
	// Apply is called with each document the client takes, the first one
	// included, before Status reports its version as applied. It must not
	// block: it swaps settings in. If nil, nothing but the maintenance
	// switch (Maintenance) follows the document.
	Apply func(c *outlast.ControlConfig)
	// Health, if set, reports the instance's dependencies for the
	// heartbeat; it is given a second.
	Health func(ctx context.Context) []outlast.DependencyHealth
	// Rates, if set, gives the per-second counts the heartbeat carries
	// (the HTTP server's); it must answer from memory.
	Rates func() *outlast.RateSeries
	// Channels, if set, gives the partner channels for the heartbeat:
	// the order new payouts are tried in (channel.Router.Order) and every
	// channel the instance has. It must answer from memory. Without it
	// the heartbeat reports none (nil).
	Channels func() (order, all []string)
	// InstanceID names this instance in heartbeats, and Addr says where
	// it serves; SetInstance sets them later, for an instance that learns
	// its port once it listens. An InstanceID is required by Run with
	// Instances.
	InstanceID string
	Addr       string
	// PollInterval is the wait between version polls. If <= 0, 1 s.
	PollInterval time.Duration
	// HeartbeatInterval is the wait between heartbeats; a change of
	// applied version or override beats at once. If <= 0, 2 s.
	HeartbeatInterval time.Duration
	// ReadTimeout bounds one read of the database. If <= 0, 2 s.
	ReadTimeout time.Duration
	// OverrideFile, if set, is re-read every OverrideInterval: while it
	// exists (and does not say "maintenance": false) the instance is in
	// maintenance. See ParseOverride.
	OverrideFile string
	// OverrideInterval is the wait between reads of OverrideFile. If <= 0,
	// 1 s.
	OverrideInterval time.Duration
	// StateFile, if set, keeps the local override across restarts.
	StateFile string
	// Logger; if nil, slog.Default().
	Logger *slog.Logger
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	setDur := func(p *time.Duration, def time.Duration) {
		if *p <= 0 {
			*p = def
		}
	}
	setDur(&c.PollInterval, PollIntervalDefault)
	setDur(&c.HeartbeatInterval, HeartbeatIntervalDefault)
	setDur(&c.ReadTimeout, ReadTimeoutDefault)
	setDur(&c.OverrideInterval, OverrideIntervalDefault)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// applied is a document as this instance took it.
type applied struct {
	config *outlast.ControlConfig
	at     time.Time
}

// Client follows the config document for one instance. Its methods are
// safe for concurrent use.
type Client struct {
	cfg     Config // defaults applied; written once
	log     *slog.Logger
	started time.Time

	cur atomic.Pointer[applied] // nil until the first document is taken
	// checked is when the database last confirmed the version (unix ns).
	checked atomic.Int64
	// listening is whether the watch is open.
	listening atomic.Bool
	// poke asks the poll loop to look now; beat asks for a heartbeat now.
	poke, beat chan struct{}
	// loadMu serializes loads, so two hints cannot apply out of order.
	loadMu sync.Mutex
	// refused is the last version that did not validate, not read again
	// until another replaces it; guarded by loadMu.
	refused int64

	// setMu serializes SetLocal, so that the state file is written in
	// the order the switches took effect: it says what is in force.
	setMu sync.Mutex

	mu          sync.Mutex        // guards the fields below
	id, addr    string            // InstanceID and Addr
	local, file *outlast.Override // the break-glass overrides; nil when clear
	lastErr     error             // the last failed read of the database
	lastErrAt   time.Time
	warnedAt    time.Time // when the last "unreachable" warning was logged
	// fileErr is the override file's last problem, logged once; only the
	// override loop touches it.
	fileErr string
}

// New returns a client; Load takes the first document, Run follows it.
// A local override kept in StateFile is in force from here.
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	switch {
	case cfg.Store == nil:
		return nil, errors.New("control: Store is required")
	}
	c := &Client{id: cfg.InstanceID, addr: cfg.Addr, refused: -1, cfg: cfg, log: cfg.Logger, started: cfg.Now(), poke: make(chan struct{}, 1), beat: make(chan struct{}, 1)}
	if cfg.StateFile != "" {
		o, err := readState(cfg.StateFile)
		if err != nil {
			// Fail closed: a break-glass switch that cannot be read
			// might be on.
			c.log.Error("break-glass state file unreadable; holding maintenance until it is cleared", "file", cfg.StateFile, "err", err)
			o = &outlast.Override{Source: outlast.OverrideLocal, Message: "", Since: cfg.Now().UTC(), Actor: "unreadable " + cfg.StateFile}
		}
		c.local = o
		if o != nil {
			c.log.Warn("break-glass maintenance in force from the last run", "since", o.Since, "by", o.Actor)
		}
	}
	c.publishOverrides()
	return c, nil
}

// Load reads the document and applies it, so that an instance serves its
// first request under the operators' settings. If the database cannot be
// read, it returns the error and the instance runs on the defaults until
// a poll succeeds.
func (c *Client) Load(ctx context.Context) error {
	return c.check(ctx, true)
}

// Run follows the document until ctx is done: the poll, the watch, the
// override file and the heartbeats, each in its own goroutine, all
// stopped and waited for before it returns nil.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	id := c.id
	c.mu.Unlock()
	if c.cfg.Instances != nil && id == "" {
		return errors.New("control: an instance id is required for heartbeats")
	}
	var wg sync.WaitGroup
	wg.Go(func() { c.pollLoop(ctx) })
	if c.cfg.Watch != nil {
		wg.Go(func() { c.watchLoop(ctx) })
	}
	if c.cfg.OverrideFile != "" {
		wg.Go(func() { c.overrideLoop(ctx) })
	}
	if c.cfg.Instances != nil {
		wg.Go(func() { c.heartbeatLoop(ctx) })
	}
	wg.Wait()
	return nil
}

// SetInstance names this instance and where it serves, for heartbeats.
func (c *Client) SetInstance(id, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.id, c.addr = id, addr
}

// Config returns the document in force: the last good one, or the default
// (version 0) before any was read.
func (c *Client) Config() *outlast.ControlConfig {
	if a := c.cur.Load(); a != nil {
		return a.config
	}
	return (&outlast.ControlConfig{}).Clone()
}

// Maintenance returns nil while new payouts are taken, and the EUNAVAILABLE
// to refuse them with (message, Retry-After) while the document or an
// override holds the instance in maintenance. It reads memory only.
func (c *Client) Maintenance() error {
	cfg := c.Config()
	c.mu.Lock()
	o := c.overrideLocked()
	c.mu.Unlock()
	switch {
	case o != nil:
		return outlast.MaintenanceError(o.Message, cfg.Maintenance.RetryAfter())
	case cfg.Maintenance.On:
		return outlast.MaintenanceError(cfg.Maintenance.Message, cfg.Maintenance.RetryAfter())
	}
	return nil
}

// overrideLocked is the override in force: the local one before the
// file's. c.mu is held.
func (c *Client) overrideLocked() *outlast.Override {
	if c.local != nil {
		return c.local
	}
	return c.file
}

// Hint makes the client look at the document now rather than at its next
// poll.
func (c *Client) Hint() { signal(c.poke) }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// pollLoop checks the version every PollInterval, and at once when poked.
func (c *Client) pollLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.poke:
		}
		_ = c.check(ctx, false)
		configAgeSeconds.Set(c.Status().AgeSeconds)
	}
}

// check reads the version and, if it is not the one applied (or force),
// loads, validates and applies the whole document. A document that does
// not validate (edited in the database by hand) is not applied: the last
// good one stays.
func (c *Client) check(ctx context.Context, force bool) error {
	c.loadMu.Lock()
	defer c.loadMu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, c.cfg.ReadTimeout)
	defer cancel()
	cur := c.cur.Load()
	v, err := c.cfg.Store.ControlVersion(rctx)
	if err != nil {
		return c.failed(ctx, err)
	}
	if !force && ((cur != nil && v == cur.config.Version) || v == c.refused) {
		c.confirmed()
		return nil
	}
	doc, err := c.cfg.Store.ControlConfig(rctx)
	if outlast.ErrorCode(err) == outlast.EUNAVAILABLE {
		return c.failed(ctx, err)
	}
	if err == nil {
		v = doc.Version
		err = doc.Validate()
	}
	if err != nil {
		// The database answered, with a document that does not decode
		// or validate (edited by hand): it is refused, once.
		c.refused = v
		configRefusedTotal.Inc()
		c.log.Error("config document refused; keeping the last good one", "version", v, "err", err)
		c.confirmed()
		return err
	}
	if cur != nil && doc.Version < cur.config.Version {
		c.log.Warn("config version went back; applying the database's", "from", cur.config.Version, "to", doc.Version)
	}
	c.apply(doc)
	c.confirmed()
	return nil
}

// apply swaps doc in.
func (c *Client) apply(doc *outlast.ControlConfig) {
	if c.cfg.Apply != nil {
		c.cfg.Apply(doc)
	}
	c.cur.Store(&applied{config: doc, at: c.cfg.Now()})
	configVersion.Set(float64(doc.Version))
	configAppliesTotal.Inc()
	c.publishOverrides()
	c.log.Info("config applied", "version", doc.Version, "maintenance", doc.Maintenance.On,
		"active_channel", doc.ActiveChannel, "fallback", doc.Fallback, "by", doc.UpdatedBy)
	signal(c.beat)
}

// confirmed records that the database answered.
func (c *Client) confirmed() {
	c.checked.Store(c.cfg.Now().UnixNano())
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr != nil {
		c.log.Info("config database reachable again", "was_unreachable_since", c.lastErrAt)
		c.lastErr, c.warnedAt = nil, time.Time{}
	}
}

// failed records a failed read; it is the error, unless ctx is done.
func (c *Client) failed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err
	}
	configReadErrorsTotal.Inc()
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr == nil {
		c.lastErrAt = now
	}
	c.lastErr = err
	if now.Sub(c.warnedAt) >= unreachableLogEvery {
		c.warnedAt = now
		st := c.statusLocked(now)
		c.log.Warn("config database unreachable; keeping the last good config", "version", st.AppliedVersion,
			"age", time.Duration(st.AgeSeconds*float64(time.Second)).Round(time.Second), "err", err)
	}
	return err
}

// watchLoop keeps the watch open, opening it again with backoff when it
// breaks. Each (re)opening pokes the poll, since changes made while it was
// closed were not hinted.
func (c *Client) watchLoop(ctx context.Context) {
	b := backoff.New(backoff.Policy{Base: c.cfg.PollInterval, Max: watchBackoffMax})
	for ctx.Err() == nil {
		err := c.cfg.Watch(ctx, func() {
			c.listening.Store(true)
			listenUp.Set(1)
			b.Reset()
			c.Hint()
		}, func(v int64) {
			hintsTotal.Inc()
			if a := c.cur.Load(); a == nil || a.config.Version != v {
				c.Hint()
			}
		})
		c.listening.Store(false)
		listenUp.Set(0)
		if ctx.Err() != nil {
			return
		}
		wait := b.Next()
		c.log.Warn("config change hints lost; polling every interval until they are back", "err", err, "retry_in", wait)
		b.Sleep(ctx, wait)
	}
}

// Status returns the control plane's state on this instance.
func (c *Client) Status() outlast.ControlStatus {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.statusLocked(now)
}

func (c *Client) statusLocked(now time.Time) outlast.ControlStatus {
	st := outlast.ControlStatus{InstanceID: c.id, AppliedVersion: -1, Listening: c.listening.Load(), Overrides: []outlast.Override{}}
	if a := c.cur.Load(); a != nil {
		st.AppliedVersion, st.AppliedAt = a.config.Version, a.at.UTC()
		if a.config.Maintenance.On {
			st.Maintenance, st.Source, st.Message = true, "config", a.config.Maintenance.Message
		}
	}
	since := c.started
	if ns := c.checked.Load(); ns != 0 {
		st.CheckedAt = time.Unix(0, ns).UTC()
		since = st.CheckedAt
	}
	st.AgeSeconds = max(0, now.Sub(since).Seconds())
	st.Stale = now.Sub(since) > 3*c.cfg.PollInterval
	if c.lastErr != nil {
		st.LastError = c.lastErr.Error()
	}
	for _, o := range []*outlast.Override{c.local, c.file} {
		if o != nil {
			st.Overrides = append(st.Overrides, *o)
		}
	}
	if o := c.overrideLocked(); o != nil {
		st.Maintenance, st.Source, st.Message = true, o.Source, o.Message
	}
	return st
}

// publishOverrides sets the override and maintenance gauges.
func (c *Client) publishOverrides() {
	c.mu.Lock()
	local, file := c.local != nil, c.file != nil
	c.mu.Unlock()
	overrideActive.WithLabelValues(outlast.OverrideLocal).Set(b2f(local))
	overrideActive.WithLabelValues(outlast.OverrideFile).Set(b2f(file))
	maintenanceOn.Set(b2f(c.Maintenance() != nil))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// heartbeatLoop writes a heartbeat every HeartbeatInterval, and at once
// after a new document or a change of override.
func (c *Client) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		c.heartbeat(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.beat:
		}
	}
}

// Heartbeat returns the heartbeat this instance would write now.
func (c *Client) Heartbeat(ctx context.Context) *outlast.InstanceStatus {
	st := c.Status()
	c.mu.Lock()
	addr := c.addr
	c.mu.Unlock()
	hb := &outlast.InstanceStatus{
		ID: st.InstanceID, Addr: addr, StartedAt: c.started.UTC(), SeenAt: c.cfg.Now().UTC(),
		AppliedVersion: st.AppliedVersion, AppliedAt: st.AppliedAt,
		Maintenance: st.Maintenance, Overrides: st.Overrides, Dependencies: []outlast.DependencyHealth{},
	}
	if c.cfg.Health != nil {
		hctx, cancel := context.WithTimeout(ctx, healthTimeout)
		hb.Dependencies = slices.Clone(c.cfg.Health(hctx))
		cancel()
	}
	if c.cfg.Rates != nil {
		hb.Rates = c.cfg.Rates()
	}
	if c.cfg.Channels != nil {
		order, all := c.cfg.Channels()
		// Non-nil, so that a reported empty order reads [] (no channel
		// takes new payouts), never null (not reported).
		hb.ChannelOrder, hb.Channels = append([]string{}, order...), append([]string{}, all...)
	}
	return hb
}

func (c *Client) heartbeat(ctx context.Context) {
	hb := c.Heartbeat(ctx)
	wctx, cancel := context.WithTimeout(ctx, c.cfg.ReadTimeout)
	defer cancel()
	if err := c.cfg.Instances.PutInstance(wctx, hb); err != nil && ctx.Err() == nil {
		heartbeatErrorsTotal.Inc()
		c.log.Debug("heartbeat not written", "err", err)
	}
}
