package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/cache"
	"github.com/outlast/outlast/store"
)

// Read-cache settings of the service.
const (
	// readCacheTTL is how long a cached account or payout is fresh. Writes
	// through this instance and the Redis broadcast keep it current sooner;
	// without Redis, other instances' changes show after at most this long.
	readCacheTTL = 10 * time.Second
	// readCacheEntriesMax bounds each in-process cache.
	readCacheEntriesMax = 100_000
)

// cachedLedger is the ledger with the tiered cache in front of its two hot
// reads, GET account and GET payout (seeds 001, 002: with Redis gone the
// service is slower, not down, and the database is not flooded). Every
// write through it refreshes or invalidates what it changed.
type cachedLedger struct {
	*store.DB
	accounts *cache.Cache[string, *outlast.Account]
	payouts  *cache.Cache[string, *outlast.Payout]
}

var (
	_ outlast.AccountService = (*cachedLedger)(nil)
	_ outlast.PayoutService  = (*cachedLedger)(nil)
	_ outlast.OutboxService  = (*cachedLedger)(nil)
)

// newCachedLedger builds the two caches over db; l2 and bc may be nil (L1
// only).
func newCachedLedger(db *store.DB, l2 cache.L2, bc cache.Broadcaster) (*cachedLedger, error) {
	accounts, err := cache.New(cache.Options[string, *outlast.Account]{
		Name: "accounts", L1MaxEntries: readCacheEntriesMax, TTL: readCacheTTL, L2: l2, Broadcaster: bc,
		Key: prefixKey("account:"), ParseKey: parsePrefixKey("account:"),
		Encode:  func(a *outlast.Account) ([]byte, error) { return json.Marshal(a) },
		Decode:  decodeJSON[outlast.Account],
		Version: func(a *outlast.Account) int64 { return a.Version },
		Load: func(ctx context.Context, id string) (*outlast.Account, error) {
			return notFoundAs(db.Account(ctx, id))
		},
	})
	if err != nil {
		return nil, err
	}
	payouts, err := cache.New(cache.Options[string, *outlast.Payout]{
		Name: "payouts", L1MaxEntries: readCacheEntriesMax, TTL: readCacheTTL, L2: l2, Broadcaster: bc,
		Key: prefixKey("payout:"), ParseKey: parsePrefixKey("payout:"),
		Encode:  encodePayout,
		Decode:  decodePayout,
		Version: func(p *outlast.Payout) int64 { return p.Version },
		Load: func(ctx context.Context, id string) (*outlast.Payout, error) {
			return notFoundAs(db.Payout(ctx, id))
		},
	})
	if err != nil {
		accounts.Close()
		return nil, err
	}
	return &cachedLedger{DB: db, accounts: accounts, payouts: payouts}, nil
}

// Run runs both caches' background work until ctx ends.
func (c *cachedLedger) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- c.payouts.Run(ctx) }()
	return errors.Join(c.accounts.Run(ctx), <-errc)
}

// Close releases the caches (not the database).
func (c *cachedLedger) Close() error {
	return errors.Join(c.accounts.Close(), c.payouts.Close())
}

func (c *cachedLedger) Account(ctx context.Context, id string) (*outlast.Account, error) {
	a, info, err := c.accounts.Get(ctx, id)
	if err != nil {
		return nil, cacheError(err, "account", id)
	}
	reportFreshness(ctx, info)
	cp := *a // cached values are shared; callers get their own copy
	return &cp, nil
}

func (c *cachedLedger) Payout(ctx context.Context, id string) (*outlast.Payout, error) {
	p, info, err := c.payouts.Get(ctx, id)
	if err != nil {
		return nil, cacheError(err, "payout", id)
	}
	reportFreshness(ctx, info)
	cp := *p
	return &cp, nil
}

func (c *cachedLedger) CreatePayout(ctx context.Context, req *outlast.PayoutRequest) (*outlast.Payout, bool, error) {
	p, created, err := c.DB.CreatePayout(ctx, req)
	if err == nil && created {
		c.payoutChanged(ctx, p)
	}
	return p, created, err
}

func (c *cachedLedger) FundAccount(ctx context.Context, id string, amount int64) (*outlast.Account, error) {
	a, err := c.DB.FundAccount(ctx, id, amount)
	if err == nil {
		_ = c.accounts.Set(ctx, a.ID, a)
	}
	return a, err
}

func (c *cachedLedger) SetAccountFlags(ctx context.Context, id string, flags outlast.AccountFlags) (*outlast.Account, error) {
	a, err := c.DB.SetAccountFlags(ctx, id, flags)
	if err == nil {
		_ = c.accounts.Set(ctx, a.ID, a)
	}
	return a, err
}

func (c *cachedLedger) MarkDispatched(ctx context.Context, payoutID, channel, partnerRef string) (*outlast.Payout, error) {
	p, err := c.DB.MarkDispatched(ctx, payoutID, channel, partnerRef)
	if err == nil {
		_ = c.payouts.Set(ctx, p.ID, p)
	}
	return p, err
}

func (c *cachedLedger) RejectDispatch(ctx context.Context, payoutID, channel, reason string) (*outlast.Payout, error) {
	p, err := c.DB.RejectDispatch(ctx, payoutID, channel, reason)
	if err == nil {
		c.payoutChanged(ctx, p)
	}
	return p, err
}

// applied writes through what a committed batch of notifications changed.
func (c *cachedLedger) applied(ctx context.Context, res []outlast.ApplyResult) {
	for _, r := range res {
		if r.Outcome == outlast.OutcomeApplied && r.Payout != nil {
			c.payoutChanged(ctx, r.Payout)
		}
	}
}

// payoutChanged stores the payout's new state and drops its account, whose
// buckets moved; the next read of the account loads it (coalesced). Cache
// write errors are not the caller's: the cache repairs L2 itself.
func (c *cachedLedger) payoutChanged(ctx context.Context, p *outlast.Payout) {
	_ = c.payouts.Set(ctx, p.ID, p)
	_ = c.accounts.Invalidate(ctx, p.AccountID)
}

func reportFreshness(ctx context.Context, info cache.Info) {
	source := outlast.SourceDatabase
	switch info.Source {
	case cache.SourceL1:
		source = outlast.SourceMemory
	case cache.SourceL2:
		source = outlast.SourceRedis
	}
	outlast.ReportFreshness(ctx, outlast.Freshness{Source: source, Age: info.Age, Stale: info.Stale})
}

// cacheError turns the cache's errors into the application's.
func cacheError(err error, what, id string) error {
	switch {
	case errors.Is(err, cache.ErrNotFound):
		return outlast.Errorf(outlast.ENOTFOUND, "%s %q not found", what, id)
	case errors.Is(err, cache.ErrUnavailable):
		return outlast.Unavailable(err, time.Second, "%s temporarily unavailable", what)
	}
	return err
}

// notFoundAs passes a read through, marking ENOTFOUND as the cache's
// ErrNotFound so it is cached negatively.
func notFoundAs[V any](v V, err error) (V, error) {
	if outlast.ErrorCode(err) == outlast.ENOTFOUND {
		return v, fmt.Errorf("%w: %v", cache.ErrNotFound, err)
	}
	return v, err
}

func prefixKey(prefix string) func(string) string {
	return func(id string) string { return prefix + id }
}

func parsePrefixKey(prefix string) func(string) (string, error) {
	return func(k string) (string, error) {
		id, ok := strings.CutPrefix(k, prefix)
		if !ok {
			return "", fmt.Errorf("key %q is not %s*", k, prefix)
		}
		return id, nil
	}
}

func decodeJSON[T any](b []byte) (*T, error) {
	v := new(T)
	return v, json.Unmarshal(b, v)
}

// cachedPayout is a payout as stored in Redis: the API's JSON hides the
// owning client, which the authorization check needs.
type cachedPayout struct {
	*outlast.Payout
	ClientID       string `json:"client_id"`
	IdempotencyKey string `json:"idempotency_key"`
}

func encodePayout(p *outlast.Payout) ([]byte, error) {
	return json.Marshal(cachedPayout{Payout: p, ClientID: p.ClientID, IdempotencyKey: p.IdempotencyKey})
}

func decodePayout(b []byte) (*outlast.Payout, error) {
	c := cachedPayout{Payout: &outlast.Payout{}}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	c.Payout.ClientID, c.Payout.IdempotencyKey = c.ClientID, c.IdempotencyKey
	return c.Payout, nil
}
