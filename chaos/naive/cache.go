package naive

import (
	"context"
	"encoding/json"
	"errors"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outlast/outlast"
)

func payoutKey(id string) string  { return "naive:payout:" + id }
func accountKey(id string) string { return "naive:account:" + id }

// cachedPayout carries the owner too, which outlast.Payout leaves out of
// its JSON: reads check it before answering.
type cachedPayout struct {
	Payout   *outlast.Payout `json:"payout"`
	ClientID string          `json:"client_id"`
}

// readPayout is cache-aside as the seed 002 team wrote it: Redis first,
// and on a miss or any Redis error the database, then a SET with the TTL.
// There is no breaker, no local cache and no coalescing, so with Redis
// failing every read first waits for go-redis (its default 3 s read
// timeout and 3 retries when Redis hangs), then queries the database:
// the 50x database load of seed 002.
func (s *Server) readPayout(ctx context.Context, id string) (*outlast.Payout, string, error) {
	var c cachedPayout
	if s.cacheGet(ctx, payoutKey(id), &c) && c.Payout != nil {
		c.Payout.ClientID = c.ClientID
		return c.Payout, "cache", nil
	}
	p, err := payout(ctx, s.db, id, false)
	if err != nil {
		return nil, "", err
	}
	s.cacheSet(ctx, payoutKey(id), cachedPayout{Payout: p, ClientID: p.ClientID})
	return p, "database", nil
}

// cachedAccount carries the account's fields that its JSON leaves out.
type cachedAccount struct {
	Account *outlast.Account `json:"account"`
}

// readAccount is readPayout for accounts.
func (s *Server) readAccount(ctx context.Context, id string) (*outlast.Account, string, error) {
	var c cachedAccount
	if s.cacheGet(ctx, accountKey(id), &c) && c.Account != nil {
		return c.Account, "cache", nil
	}
	a, err := account(ctx, s.db, id, false)
	if err != nil {
		return nil, "", err
	}
	s.cacheSet(ctx, accountKey(id), cachedAccount{Account: a})
	return a, "database", nil
}

// cacheGet reports whether key was in Redis and decoded into v; an error
// counts as a miss.
func (s *Server) cacheGet(ctx context.Context, key string, v any) bool {
	b, err := s.rdb.Get(ctx, key).Bytes()
	if err != nil {
		if !errors.Is(err, goredis.Nil) {
			s.log.Warn("naive: cache read failed; reading the database", "key", key, "err", err)
		}
		return false
	}
	return json.Unmarshal(b, v) == nil
}

func (s *Server) cacheSet(ctx context.Context, key string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	if err := s.rdb.Set(ctx, key, b, s.cfg.CacheTTL).Err(); err != nil {
		s.log.Warn("naive: cache write failed", "key", key, "err", err)
	}
}

// invalidate deletes keys after a write to the database. If the DEL
// fails the old value is served until its TTL runs out.
func (s *Server) invalidate(ctx context.Context, keys ...string) {
	if err := s.rdb.Del(ctx, keys...).Err(); err != nil {
		s.log.Warn("naive: cache invalidation failed", "keys", keys, "err", err)
	}
}
