package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/cache"
)

// newCaches builds the account and payout caches, loading from store.
func newCaches(store outlast.Ledger, cfg Config) (*cache.Cache[string, *outlast.Account], *cache.Cache[string, *outlast.Payout], error) {
	accounts, err := cache.New(cache.Options[string, *outlast.Account]{
		Name: "accounts", L1MaxEntries: cfg.CacheEntriesMax, TTL: cfg.CacheTTL, L2: cfg.L2, Broadcaster: cfg.Broadcaster,
		Key: prefixKey("account:"), ParseKey: parsePrefixKey("account:"),
		Encode:  func(a *outlast.Account) ([]byte, error) { return json.Marshal(a) },
		Decode:  decodeJSON[outlast.Account],
		Version: func(a *outlast.Account) int64 { return a.Version },
		Load: func(ctx context.Context, id string) (*outlast.Account, error) {
			a, _, err := store.Account(ctx, id)
			return notFoundAs(a, err)
		},
	})
	if err != nil {
		return nil, nil, err
	}
	payouts, err := cache.New(cache.Options[string, *outlast.Payout]{
		Name: "payouts", L1MaxEntries: cfg.CacheEntriesMax, TTL: cfg.CacheTTL, L2: cfg.L2, Broadcaster: cfg.Broadcaster,
		Key: prefixKey("payout:"), ParseKey: parsePrefixKey("payout:"),
		Encode:  encodePayout,
		Decode:  decodePayout,
		Version: func(p *outlast.Payout) int64 { return p.Version },
		Load: func(ctx context.Context, id string) (*outlast.Payout, error) {
			p, _, err := store.Payout(ctx, id)
			return notFoundAs(p, err)
		},
	})
	if err != nil {
		accounts.Close()
		return nil, nil, err
	}
	return accounts, payouts, nil
}

// freshness says in the domain's terms where the cache found a value.
func freshness(info cache.Info) outlast.Freshness {
	source := outlast.SourceDatabase
	switch info.Source {
	case cache.SourceL1:
		source = outlast.SourceMemory
	case cache.SourceL2:
		source = outlast.SourceRedis
	}
	return outlast.Freshness{Source: source, Age: info.Age, Stale: info.Stale}
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
