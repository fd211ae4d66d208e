// Package ledger is the one entry point to Outlast's ledger: it implements
// outlast.Ledger over another outlast.Ledger (the store) and owns what every
// caller must get the same way, whichever path it came by:
//
//   - the read cache in front of accounts and payouts, written through or
//     invalidated by every change made here (seeds 001, 002: with Redis
//     gone the service is slower, not down);
//   - the one rule for a rejected notification: delivered again with
//     backoff while under the bound, then dead-lettered with its reason
//     (principle 9: rejected is not seen);
//   - the one metric of notification outcomes, by source.
//
// The log consumer, the inbox drainer (Drainer, here) and the reconciler
// call Apply and nothing else. Every method is written out: an embedded
// one would silently skip the cache.
package ledger

import (
	"context"
	"errors"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/cache"
	"github.com/outlast/outlast/internal/backoff"
)

// Defaults for Config fields left at their zero value.
const (
	// CacheTTLDefault is how long a cached account or payout is fresh.
	// Writes through this instance and the Redis broadcast keep it current
	// sooner; without Redis, other instances' changes show after at most
	// this long.
	CacheTTLDefault = 10 * time.Second
	// CacheEntriesMaxDefault bounds each in-process cache.
	CacheEntriesMaxDefault = 100_000
	// RejectDeliveriesMaxDefault is how many deliveries a rejected
	// notification gets before it is dead-lettered.
	RejectDeliveriesMaxDefault = 10
)

// RejectRetryDefault spaces the deliveries of a rejected notification:
// 23-46 s in all before the default bound dead-letters it, time for a
// payout that was not visible yet (a replica behind, a partner faster than
// our commit) to appear. Equal jitter: each wait is at least half its
// ceiling, so that time has a floor, yet instances do not retry in step.
var RejectRetryDefault = backoff.Policy{Base: 250 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.5}

// Config configures a Ledger. The zero value is an L1-only cache with the
// defaults above.
type Config struct {
	// L2 and Broadcaster are the shared cache layer (Redis) and its
	// invalidation channel; nil for the in-process cache only.
	L2          cache.L2
	Broadcaster cache.Broadcaster
	// CacheTTL: if <= 0, CacheTTLDefault.
	CacheTTL time.Duration
	// CacheEntriesMax: if <= 0, CacheEntriesMaxDefault.
	CacheEntriesMax int
	// RejectDeliveriesMax bounds the deliveries of a rejected notification;
	// the one that reaches it is dead-lettered. If <= 0,
	// RejectDeliveriesMaxDefault.
	RejectDeliveriesMax int
	// RejectRetry spaces those deliveries. Base, Max and Jitter left at
	// zero are RejectRetryDefault's.
	RejectRetry backoff.Policy
}

func (c Config) withDefaults() Config {
	if c.CacheTTL <= 0 {
		c.CacheTTL = CacheTTLDefault
	}
	if c.CacheEntriesMax <= 0 {
		c.CacheEntriesMax = CacheEntriesMaxDefault
	}
	if c.RejectDeliveriesMax <= 0 {
		c.RejectDeliveriesMax = RejectDeliveriesMaxDefault
	}
	if c.RejectRetry.Base <= 0 {
		c.RejectRetry.Base = RejectRetryDefault.Base
	}
	if c.RejectRetry.Max <= 0 {
		c.RejectRetry.Max = RejectRetryDefault.Max
	}
	if c.RejectRetry.Jitter <= 0 {
		c.RejectRetry.Jitter = RejectRetryDefault.Jitter
	}
	return c
}

// Ledger is the ledger behind its read cache. It is safe for concurrent
// use; Run runs the caches' background work, Close releases them.
type Ledger struct {
	// Written once in New, read-only afterwards.
	store    outlast.Ledger
	cfg      Config
	accounts *cache.Cache[string, *outlast.Account]
	payouts  *cache.Cache[string, *outlast.Payout]
}

var _ outlast.Ledger = (*Ledger)(nil)

// New puts the read cache and the notification rules in front of store.
func New(store outlast.Ledger, cfg Config) (*Ledger, error) {
	cfg = cfg.withDefaults()
	accounts, payouts, err := newCaches(store, cfg)
	if err != nil {
		return nil, err
	}
	return &Ledger{store: store, cfg: cfg, accounts: accounts, payouts: payouts}, nil
}

// Run runs both caches' background work (L2 repair, warm-up,
// invalidations) until ctx ends.
func (l *Ledger) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- l.payouts.Run(ctx) }()
	return errors.Join(l.accounts.Run(ctx), <-errc)
}

// Close releases the caches (not the store).
func (l *Ledger) Close() error {
	return errors.Join(l.accounts.Close(), l.payouts.Close())
}

func (l *Ledger) CreateClient(ctx context.Context, c *outlast.Client, keyHash []byte) error {
	return l.store.CreateClient(ctx, c, keyHash)
}

// ClientByKeyHash is not cached: it authenticates every request, and a
// revoked key must stop working at once.
func (l *Ledger) ClientByKeyHash(ctx context.Context, keyHash []byte) (*outlast.Client, error) {
	return l.store.ClientByKeyHash(ctx, keyHash)
}

// CreateAccount writes the new account through, replacing a cached "not
// found" left by a read before it existed.
func (l *Ledger) CreateAccount(ctx context.Context, a *outlast.Account) error {
	if err := l.store.CreateAccount(ctx, a); err != nil {
		return err
	}
	l.accountChanged(ctx, a)
	return nil
}

func (l *Ledger) FundAccount(ctx context.Context, id string, amount int64, idempotencyKey string) (*outlast.Account, bool, error) {
	a, funded, err := l.store.FundAccount(ctx, id, amount, idempotencyKey)
	if err == nil {
		l.accountChanged(ctx, a)
	}
	return a, funded, err
}

func (l *Ledger) Account(ctx context.Context, id string) (*outlast.Account, outlast.Freshness, error) {
	a, info, err := l.accounts.Get(ctx, id)
	if err != nil {
		return nil, outlast.Freshness{}, cacheError(err, "account", id)
	}
	cp := *a // cached values are shared; callers get their own copy
	return &cp, freshness(info), nil
}

func (l *Ledger) SetAccountFlags(ctx context.Context, id string, flags outlast.AccountFlags) (*outlast.Account, error) {
	a, err := l.store.SetAccountFlags(ctx, id, flags)
	if err == nil {
		l.accountChanged(ctx, a)
	}
	return a, err
}

func (l *Ledger) CreatePayout(ctx context.Context, req *outlast.PayoutRequest) (*outlast.Payout, bool, error) {
	p, created, err := l.store.CreatePayout(ctx, req)
	if err == nil && created {
		l.payoutChanged(ctx, p)
	}
	return p, created, err
}

func (l *Ledger) Payout(ctx context.Context, id string) (*outlast.Payout, outlast.Freshness, error) {
	p, info, err := l.payouts.Get(ctx, id)
	if err != nil {
		return nil, outlast.Freshness{}, cacheError(err, "payout", id)
	}
	cp := *p
	return &cp, freshness(info), nil
}

// Payouts is not cached: pages change with every payout.
func (l *Ledger) Payouts(ctx context.Context, f outlast.PayoutFilter) ([]*outlast.Payout, string, error) {
	return l.store.Payouts(ctx, f)
}

// StalePayouts is not cached: the reconciler wants the database's view.
func (l *Ledger) StalePayouts(ctx context.Context, status outlast.PayoutStatus, before time.Time, after outlast.StaleCursor, limit int) ([]*outlast.Payout, error) {
	return l.store.StalePayouts(ctx, status, before, after, limit)
}

func (l *Ledger) PayoutAges(ctx context.Context, status outlast.PayoutStatus, cutoffs []time.Time) ([]int, time.Time, error) {
	return l.store.PayoutAges(ctx, status, cutoffs)
}

func (l *Ledger) ClaimDispatches(ctx context.Context, limit int, lease time.Duration) ([]*outlast.Dispatch, error) {
	return l.store.ClaimDispatches(ctx, limit, lease)
}

func (l *Ledger) MarkDispatched(ctx context.Context, payoutID, channel, partnerRef string) (*outlast.Payout, error) {
	p, err := l.store.MarkDispatched(ctx, payoutID, channel, partnerRef)
	if err == nil {
		// The account's buckets did not move: only the payout changed.
		_ = l.payouts.Set(ctx, p.ID, p)
	}
	return p, err
}

func (l *Ledger) RetryDispatch(ctx context.Context, payoutID string, notBefore time.Time, lastError string) error {
	return l.store.RetryDispatch(ctx, payoutID, notBefore, lastError)
}

func (l *Ledger) RejectDispatch(ctx context.Context, payoutID, channel, reason string, claim time.Time) (*outlast.Payout, error) {
	p, err := l.store.RejectDispatch(ctx, payoutID, channel, reason, claim)
	if err == nil {
		l.payoutChanged(ctx, p)
	}
	return p, err
}

func (l *Ledger) RerouteDispatch(ctx context.Context, payoutID, from, to, reason string, claim time.Time) (*outlast.Payout, error) {
	p, err := l.store.RerouteDispatch(ctx, payoutID, from, to, reason, claim)
	if err == nil {
		// The hold stays where it was: only the payout changed.
		cp := *p
		_ = l.payouts.Set(ctx, cp.ID, &cp)
	}
	return p, err
}

// Apply applies ns through the store, then, for every source alike:
// counts each outcome, writes through what changed, and decides what
// becomes of each rejected notification (judge).
func (l *Ledger) Apply(ctx context.Context, source outlast.Source, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
	results, err := l.store.Apply(ctx, source, ns)
	if err != nil {
		applyErrorsTotal.WithLabelValues(string(source), outlast.ErrorCode(err)).Inc()
		return nil, err
	}
	// A batch moves a payout several times (dispatched, then succeeded)
	// and many payouts of few accounts: each payout's last state is
	// written through once, each account invalidated once.
	changed := make(map[string]*outlast.Payout)
	accounts := make(map[string]struct{})
	for i := range results {
		r := &results[i]
		if r.Outcome == outlast.OutcomeRejected {
			l.judge(ns[i], r)
		}
		outcomesTotal.WithLabelValues(string(source), string(r.Outcome)).Inc()
		if r.Filed != nil {
			exceptionsFiledTotal.WithLabelValues(string(r.Filed.Kind)).Inc()
			if r.Filed.Held > 0 {
				accounts[r.Filed.AccountID] = struct{}{}
			}
		}
		if r.Outcome == outlast.OutcomeApplied && r.Payout != nil {
			if prev := changed[r.Payout.ID]; prev == nil || r.Payout.Version > prev.Version {
				changed[r.Payout.ID] = r.Payout
			}
		}
	}
	for _, p := range changed {
		cp := *p
		_ = l.payouts.Set(ctx, cp.ID, &cp)
		accounts[cp.AccountID] = struct{}{}
	}
	for id := range accounts {
		_ = l.accounts.Invalidate(ctx, id)
	}
	return results, nil
}

// FileException files e through the store; a claim it held changed the
// account.
func (l *Ledger) FileException(ctx context.Context, e *outlast.Exception) (*outlast.Exception, bool, error) {
	got, filed, err := l.store.FileException(ctx, e)
	if err == nil && filed {
		exceptionsFiledTotal.WithLabelValues(string(got.Kind)).Inc()
		if got.Held > 0 {
			_ = l.accounts.Invalidate(ctx, got.AccountID)
		}
	}
	return got, filed, err
}

func (l *Ledger) Exceptions(ctx context.Context, f outlast.ExceptionFilter) ([]*outlast.Exception, error) {
	return l.store.Exceptions(ctx, f)
}

func (l *Ledger) Exception(ctx context.Context, id int64) (*outlast.Exception, error) {
	return l.store.Exception(ctx, id)
}

// ResolveException resolves through the store and writes the account's
// new state through; a payout it settled is dropped from the cache.
func (l *Ledger) ResolveException(ctx context.Context, id int64, r *outlast.Resolution) (*outlast.Exception, *outlast.Account, error) {
	e, a, err := l.store.ResolveException(ctx, id, r)
	if err == nil {
		exceptionsResolvedTotal.WithLabelValues(string(e.Kind), string(e.Resolution.Action)).Inc()
		if a != nil {
			l.accountChanged(ctx, a)
		}
		if e.Resolution.Payout != "" {
			_ = l.payouts.Invalidate(ctx, e.PayoutID)
		}
	}
	return e, a, err
}

func (l *Ledger) OpenExceptions(ctx context.Context) (map[outlast.ExceptionKind]int, error) {
	return l.store.OpenExceptions(ctx)
}

// judge is the one rule for a rejected notification: delivered again,
// with backoff, until its deliveries reach the bound; then dead-lettered
// with its reason, to be replayed once an operator mends the cause.
func (l *Ledger) judge(n *outlast.Notification, r *outlast.ApplyResult) {
	deliveries := max(n.Deliveries, 1)
	if deliveries >= l.cfg.RejectDeliveriesMax {
		r.DeadLetter, r.RetryAfter = true, 0
		return
	}
	r.DeadLetter, r.RetryAfter = false, l.cfg.RejectRetry.Delay(deliveries)
}

// accountChanged stores the account's new state. Cache write errors are
// not the caller's: the cache repairs L2 itself.
func (l *Ledger) accountChanged(ctx context.Context, a *outlast.Account) {
	cp := *a
	_ = l.accounts.Set(ctx, cp.ID, &cp)
}

// payoutChanged stores the payout's new state and drops its account, whose
// buckets moved; the next read of the account loads it (coalesced).
func (l *Ledger) payoutChanged(ctx context.Context, p *outlast.Payout) {
	cp := *p
	_ = l.payouts.Set(ctx, cp.ID, &cp)
	_ = l.accounts.Invalidate(ctx, p.AccountID)
}
