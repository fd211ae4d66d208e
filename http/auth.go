package http

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	nethttp "net/http"
	"strings"
	"sync"
	"time"

	"github.com/outlast/outlast"
)

// API keys are "olk_" and 32 random bytes, base64url without padding.
const (
	apiKeyPrefix    = "olk_"
	apiKeyRandBytes = 32
	// tokenBytesMax bounds a bearer token worth hashing and looking up, so
	// garbage never reaches the database.
	tokenBytesMax = 256
)

// Key lookups are cached so that every payout request does not cost a
// database read; only found clients are cached, so random keys cannot fill
// the cache, and a key stays usable for at most keyCacheTTL after its client
// is gone.
const (
	keyCacheEntriesMax = 1000
	keyCacheTTL        = 30 * time.Second
)

// principal is who a request authenticated as: the admin, or one client.
type principal struct {
	admin  bool
	client *outlast.Client
}

func bearerToken(r *nethttp.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// isAdmin compares in constant time; hashing first keeps the comparison
// from revealing the token's length too.
func (s *Server) isAdmin(token string) bool {
	got, want := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(s.cfg.AdminToken))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

var errNoCredentials = outlast.Errorf(outlast.EUNAUTHORIZED, "missing credentials: send Authorization: Bearer <token>")

// requireAdmin authenticates the admin token and nothing else: admin
// endpoints never look client keys up.
func (s *Server) requireAdmin(r *nethttp.Request) error {
	token, ok := bearerToken(r)
	if !ok {
		return errNoCredentials
	}
	if !s.isAdmin(token) {
		return outlast.Errorf(outlast.EUNAUTHORIZED, "invalid admin token")
	}
	return nil
}

// authenticate accepts the admin token or a client's API key.
func (s *Server) authenticate(ctx context.Context, r *nethttp.Request) (principal, error) {
	token, ok := bearerToken(r)
	if !ok {
		return principal{}, errNoCredentials
	}
	if s.isAdmin(token) {
		return principal{admin: true}, nil
	}
	if !strings.HasPrefix(token, apiKeyPrefix) || len(token) > tokenBytesMax {
		return principal{}, outlast.Errorf(outlast.EUNAUTHORIZED, "invalid API key")
	}
	hash := sha256.Sum256([]byte(token))
	now := s.now()
	if c := s.keys.get(hash, now); c != nil {
		return principal{client: c}, nil
	}
	c, err := s.svc.Accounts.ClientByKeyHash(ctx, hash[:])
	if outlast.ErrorCode(err) == outlast.ENOTFOUND {
		return principal{}, outlast.Errorf(outlast.EUNAUTHORIZED, "invalid API key")
	}
	if err != nil {
		return principal{}, err
	}
	s.keys.put(hash, c, now)
	return principal{client: c}, nil
}

// requireClient authenticates a client's API key; the admin token is
// refused with 403, since payouts belong to a client.
func (s *Server) requireClient(ctx context.Context, r *nethttp.Request) (*outlast.Client, error) {
	p, err := s.authenticate(ctx, r)
	if err != nil {
		return nil, err
	}
	if p.client == nil {
		return nil, outlast.Errorf(outlast.EFORBIDDEN, "this endpoint takes a client API key, not the admin token")
	}
	return p.client, nil
}

// keyCache maps API key hashes to clients: bounded, with a TTL.
type keyCache struct {
	entriesMax int
	ttl        time.Duration

	mu      sync.Mutex // guards entries
	entries map[[sha256.Size]byte]keyEntry
}

type keyEntry struct {
	client  *outlast.Client
	expires time.Time
}

func newKeyCache(entriesMax int, ttl time.Duration) *keyCache {
	return &keyCache{entriesMax: entriesMax, ttl: ttl, entries: make(map[[sha256.Size]byte]keyEntry)}
}

func (c *keyCache) get(hash [sha256.Size]byte, now time.Time) *outlast.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[hash]
	if !ok {
		return nil
	}
	if !now.Before(e.expires) {
		delete(c.entries, hash)
		return nil
	}
	return e.client
}

func (c *keyCache) put(hash [sha256.Size]byte, client *outlast.Client, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.entriesMax {
		c.evict(now)
	}
	c.entries[hash] = keyEntry{client: client, expires: now.Add(c.ttl)}
}

// evict drops expired entries, or, if none are, an arbitrary one (map order
// is random): cheaper than LRU and good enough for a cache that only saves
// a read.
func (c *keyCache) evict(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
		}
	}
	for k := range c.entries {
		if len(c.entries) < c.entriesMax {
			return
		}
		delete(c.entries, k)
	}
}

func (c *keyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
