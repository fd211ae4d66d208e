// Package naive is the design of seeds 000 and 002, built honestly: the
// chaos lab's baseline, never a mode of Outlast. It speaks Outlast's HTTP
// contract so the lab's load and checks run unchanged against both, and it
// is what a competent team would have shipped before those incidents:
//
//   - A partner notification is verified, PUBLISHed to a Redis Pub/Sub
//     channel and answered 200 at once; a subscriber commits it to
//     PostgreSQL. Pub/Sub keeps nothing: a message published while no
//     subscriber listens (Redis restarting, the committer disconnected or
//     not yet subscribed) is acknowledged to the partner and lost (seed 000).
//   - Maintenance mode and the active channel are a config document an
//     admin PUBLISHes; each instance applies what its subscriber receives.
//     With Redis down the switch reaches no one (seed 000's dead control
//     plane).
//   - Reads of payouts and accounts are cache-aside over Redis with
//     go-redis defaults; a Redis error is treated as a miss and the read
//     goes to the database, with no breaker, so every read waits on the
//     failing Redis and then lands on the database (seed 002).
//
// It deliberately imports none of Outlast's adapters (store, ledger, http,
// channel, jetstream, control, reconcile, redis): only the root domain types
// and validation, so no durability of Outlast's leaks into the baseline.
package naive

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	goredis "github.com/redis/go-redis/v9"

	"github.com/outlast/outlast"
)

// Defaults for Config fields left at their zero value.
const (
	defaultCacheTTL         = 30 * time.Second
	defaultDispatchInterval = 100 * time.Millisecond
	defaultDispatchLease    = 5 * time.Second
	defaultDispatchBatchMax = 100
	defaultBankTimeout      = 5 * time.Second
	bodyBytesMax            = 64 << 10
)

// Redis names shared by every instance.
const (
	notificationsChannel = "naive:notifications"
	controlChannel       = "naive:control"
	controlKey           = "naive:config"
)

// Config configures a Server.
type Config struct {
	// DSN is the PostgreSQL database (postgres://…). Required.
	DSN string
	// RedisAddr is host:port of the Redis server. Required.
	RedisAddr string
	// Channels maps each partner channel to its bank's base URL. At least
	// one is required.
	Channels map[string]string
	// ChannelSecrets maps each channel to its webhook HMAC secret.
	// Webhooks for channels without one are refused with 404.
	ChannelSecrets map[string][]byte
	// DefaultChannel takes new payouts while the config names no active
	// channel. If empty, the first of Channels by name is used.
	DefaultChannel string
	// AdminToken is the bearer token of the admin endpoints. Required.
	AdminToken string
	// NoCommitter leaves out this instance's notification subscriber, for
	// an instance that only serves the API (seed 000's API and committer
	// were separate processes).
	NoCommitter bool
	// NoDispatcher leaves out this instance's dispatcher loop.
	NoDispatcher bool
	// CacheTTL is the lifetime of a cached payout or account. If <= 0,
	// 30 s is used.
	CacheTTL time.Duration
	// DispatchInterval is how often the dispatcher looks for pending
	// payouts. If <= 0, 100 ms is used.
	DispatchInterval time.Duration
	// DispatchLease is how long a claimed payout is left to one
	// dispatcher before another may send it again. If <= 0, 5 s is used.
	DispatchLease time.Duration
	// BankTimeout bounds one call to a bank. If <= 0, 5 s is used.
	BankTimeout time.Duration
	// Logger; if nil, slog.Default() is used.
	Logger *slog.Logger
}

// Server is one instance of the naive design. Handler serves the API; Run
// runs the subscribers and the dispatcher until its context ends.
type Server struct {
	cfg   Config
	db    *sql.DB
	rdb   *goredis.Client
	log   *slog.Logger
	bank  *http.Client
	names []string // channel names, sorted; written once in New

	mu     sync.Mutex             // guards config
	config *outlast.ControlConfig // the last document this instance applied
}

// New checks cfg, opens the database and a go-redis client with its
// defaults, and creates the tables if they are missing.
func New(cfg Config) (*Server, error) {
	if err := check(&cfg); err != nil {
		return nil, err
	}
	db, err := sql.Open("pgx", cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	s := &Server{
		cfg:    cfg,
		db:     db,
		rdb:    goredis.NewClient(&goredis.Options{Addr: cfg.RedisAddr}),
		log:    cfg.Logger,
		bank:   &http.Client{Timeout: cfg.BankTimeout},
		names:  slices.Sorted(maps.Keys(cfg.Channels)),
		config: &outlast.ControlConfig{},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := migrate(ctx, db); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

func check(cfg *Config) error {
	switch {
	case cfg.DSN == "":
		return errors.New("naive: DSN is required")
	case cfg.RedisAddr == "":
		return errors.New("naive: RedisAddr is required")
	case cfg.AdminToken == "":
		return errors.New("naive: AdminToken is required")
	case len(cfg.Channels) == 0:
		return errors.New("naive: at least one channel is required")
	}
	if _, ok := cfg.Channels[cfg.DefaultChannel]; cfg.DefaultChannel != "" && !ok {
		return fmt.Errorf("naive: default channel %q is not in Channels", cfg.DefaultChannel)
	}
	for _, d := range []struct {
		field *time.Duration
		def   time.Duration
	}{
		{&cfg.CacheTTL, defaultCacheTTL},
		{&cfg.DispatchInterval, defaultDispatchInterval},
		{&cfg.DispatchLease, defaultDispatchLease},
		{&cfg.BankTimeout, defaultBankTimeout},
	} {
		if *d.field <= 0 {
			*d.field = d.def
		}
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	return nil
}

// Run loads the config document from Redis, then runs the control
// subscriber, the notification subscriber and the dispatcher until ctx
// ends. A config it cannot load at start is left at the default (no
// maintenance), as the seed's services did.
func (s *Server) Run(ctx context.Context) error {
	s.loadConfig(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.subscribe(ctx, controlChannel, s.applyConfigMessage) })
	if !s.cfg.NoCommitter {
		wg.Go(func() { s.subscribe(ctx, notificationsChannel, s.commit) })
	}
	if !s.cfg.NoDispatcher {
		wg.Go(func() { s.dispatchLoop(ctx) })
	}
	wg.Wait()
	return nil
}

// Close releases the database and Redis clients; call it after Run has
// returned.
func (s *Server) Close() error {
	return errors.Join(s.rdb.Close(), s.db.Close())
}

// currentConfig returns the document this instance applies now.
func (s *Server) currentConfig() *outlast.ControlConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.config
}

// applyConfig replaces the instance's document, unless c is older: a
// message that arrives after a newer one must not undo it.
func (s *Server) applyConfig(c *outlast.ControlConfig) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Version < s.config.Version {
		return
	}
	s.config = c
}

// chooseChannel is the active channel of the applied config, else the
// default one.
func (s *Server) chooseChannel() string {
	if c := s.currentConfig(); c.ActiveChannel != "" {
		if _, ok := s.cfg.Channels[c.ActiveChannel]; ok {
			return c.ActiveChannel
		}
	}
	if s.cfg.DefaultChannel != "" {
		return s.cfg.DefaultChannel
	}
	return s.names[0]
}
