// Package http serves Outlast's JSON API: clients, accounts, dead
// letters and exceptions (admin), payouts (clients), partner bank
// webhooks, health and metrics. It speaks only in domain terms — the
// root package's service interfaces and a few function fields — so it
// never knows which store or log sits behind them.
//
// Its one promise to the rest of the system: a partner notification is
// answered 200 only after the log (or, when the log is down, the database
// inbox) has made it durable, and every refusal a caller could retry carries
// Retry-After.
package http

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	nethttp "net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outlast/outlast"
)

// Defaults for Config fields left at their zero value.
const (
	defaultAddr              = "127.0.0.1:8080"
	defaultBodyBytesMax      = 64 << 10
	defaultReadHeaderTimeout = 5 * time.Second
	defaultReadTimeout       = 5 * time.Second
	defaultWriteTimeout      = 10 * time.Second
	defaultIdleTimeout       = 60 * time.Second
	defaultShutdownTimeout   = 15 * time.Second
	// headerBytesMax bounds request headers (net/http's default is 1 MiB,
	// far more than any bearer token or signature needs).
	headerBytesMax = 64 << 10
)

// Config configures a Server.
type Config struct {
	// Addr is the TCP listen address; a port of 0 picks a free port (see
	// URL). If Addr is empty, 127.0.0.1:8080 is used.
	Addr string
	// AdminToken is the bearer token of the admin endpoints. Required: New
	// fails without it.
	AdminToken string
	// ChannelSecrets maps each partner channel to its webhook HMAC secret.
	// Webhooks for channels not listed are refused with 404. Secrets must
	// not be empty (an empty HMAC key is a key anyone knows).
	ChannelSecrets map[string][]byte
	// BodyBytesMax bounds every request body. If BodyBytesMax <= 0, 64 KiB
	// is used.
	BodyBytesMax int64
	// ReadHeaderTimeout bounds reading request headers. If <= 0, 5 s is used.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request. If <= 0, 5 s is used.
	ReadTimeout time.Duration
	// WriteTimeout bounds handling and writing a response. If <= 0, 10 s is
	// used.
	WriteTimeout time.Duration
	// LogAppendTimeout bounds a webhook's append to the notification log
	// before it falls back to the inbox (which gets WriteTimeout/2). If <= 0,
	// WriteTimeout/4 is used.
	LogAppendTimeout time.Duration
	// IdleTimeout bounds an idle keep-alive connection. If <= 0, 60 s is used.
	IdleTimeout time.Duration
	// ShutdownTimeout bounds how long Close waits for in-flight requests
	// before cutting connections. If <= 0, 15 s is used.
	ShutdownTimeout time.Duration
	// Now is the clock (webhook signature windows, timestamps). If nil,
	// time.Now is used.
	Now func() time.Time
	// Logger receives request logs (debug) and failures. If nil,
	// slog.Default() is used.
	Logger *slog.Logger
}

// InboxAppender is the database inbox as the webhook handler sees it.
type InboxAppender interface {
	AppendInbox(ctx context.Context, ns []*outlast.Notification) error
}

// Services are what the API serves from.
type Services struct {
	Accounts outlast.AccountService // required
	Payouts  outlast.PayoutService  // required
	// Log is the durable notification log. If nil, every notification goes
	// to Inbox.
	Log   outlast.NotificationLog
	Inbox InboxAppender // required: the fallback when the log is down
	// ChooseChannel picks the partner channel of a new payout (the router).
	// Required. Any error is answered 503 with Retry-After.
	ChooseChannel func(ctx context.Context) (string, error)
	// Ready reports whether this instance can take payouts. If nil, it
	// always can.
	Ready func(ctx context.Context) error
	// Metrics is served at GET /metrics. If nil, /metrics is 404.
	Metrics nethttp.Handler
	// DeadLetters are the stores of dead letters the admin API lists and
	// replays, by the source their ids start with ("log", "inbox"). If
	// empty, there are none to list.
	DeadLetters map[outlast.Source]outlast.DeadLetters
	// Control keeps the config document operators read and change at
	// /admin/v1/config. If nil, those routes are 404.
	Control outlast.ControlStore
	// Instances are the heartbeats listed at /admin/v1/instances. If nil,
	// that route is 404.
	Instances outlast.InstanceStore
	// Exceptions are the disagreements with banks that operators list and
	// resolve at /admin/v1/exceptions (the ledger keeps them). If nil,
	// those routes are 404.
	Exceptions outlast.ExceptionService
	// Local is this instance's control plane: the maintenance switch every
	// new payout asks, its status in /readyz, and the break-glass
	// endpoints /admin/v1/local/*. If nil, payouts are always taken and
	// those routes are 404.
	Local LocalControl
}

// LocalControl is one instance's control plane as the API sees it. Every
// method answers from memory (and a local file): they work with the
// database, the log and Redis all down.
type LocalControl interface {
	// Maintenance returns nil while new payouts are taken, or the error
	// to refuse them with.
	Maintenance() error
	// Status is the instance's config version, its age and overrides.
	Status() outlast.ControlStatus
	// SetLocal turns the break-glass maintenance switch on or off.
	SetLocal(on bool, message, actor string) (outlast.ControlStatus, error)
	// Heartbeat is the heartbeat the instance would write now, with its
	// dependencies' health.
	Heartbeat(ctx context.Context) *outlast.InstanceStatus
}

// Server is the HTTP API server.
type Server struct {
	cfg     Config
	svc     Services
	log     *slog.Logger
	now     func() time.Time
	keys    *keyCache
	srv     *nethttp.Server
	handler nethttp.Handler
	mux     *nethttp.ServeMux
	routes  map[string]bool // registered patterns; written once in New
	// deadSources are svc.DeadLetters' names in order; written once in New.
	deadSources []outlast.Source
	// rates count this server's requests for the console's charts, and
	// cluster keeps the instances' sums it drew; each guards itself.
	rates, cluster rateRing
	// sessionKey signs console sessions; csrf refuses cross-origin
	// console forms. Written once in New.
	sessionKey []byte
	csrf       *nethttp.CrossOriginProtection

	mu     sync.Mutex // guards ln, closed
	ln     net.Listener
	closed bool
	done   chan struct{} // closed when the serve goroutine returns
}

// New checks cfg and svc and builds a Server; Open starts it.
func New(cfg Config, svc Services) (*Server, error) {
	if err := check(&cfg, svc); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:    cfg,
		svc:    svc,
		log:    cfg.Logger,
		now:    cfg.Now,
		keys:   newKeyCache(keyCacheEntriesMax, keyCacheTTL),
		mux:    nethttp.NewServeMux(),
		routes: make(map[string]bool),
		csrf:   nethttp.NewCrossOriginProtection(),
	}
	s.sessionKey = sessionKeyFor(cfg.AdminToken)
	for source := range svc.DeadLetters {
		s.deadSources = append(s.deadSources, source)
	}
	slices.Sort(s.deadSources)
	s.registerRoutes()
	s.handler = s.middleware(nethttp.HandlerFunc(s.route))
	s.srv = &nethttp.Server{
		Addr:              cfg.Addr,
		Handler:           s.handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    headerBytesMax,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// check validates cfg and svc and fills in cfg's defaults.
func check(cfg *Config, svc Services) error {
	switch {
	case cfg.AdminToken == "":
		return errors.New("http: admin token is required")
	case svc.Accounts == nil || svc.Payouts == nil || svc.Inbox == nil:
		return errors.New("http: accounts, payouts and inbox services are required")
	case svc.ChooseChannel == nil:
		return errors.New("http: ChooseChannel is required")
	}
	for source, dls := range svc.DeadLetters {
		if !outlast.ValidID(string(source)) || strings.Contains(string(source), ":") || dls == nil {
			return fmt.Errorf("http: dead-letter source %q must be a name without ':' and not nil", source)
		}
	}
	secrets := make(map[string][]byte, len(cfg.ChannelSecrets))
	for name, secret := range cfg.ChannelSecrets {
		if !outlast.ValidID(name) {
			return fmt.Errorf("http: channel name %q is not a valid id", name)
		}
		if len(secret) == 0 {
			return fmt.Errorf("http: channel %q has an empty webhook secret", name)
		}
		secrets[name] = append([]byte(nil), secret...)
	}
	cfg.ChannelSecrets = secrets // a private copy: the caller may reuse its map
	setDefault(&cfg.Addr, defaultAddr)
	setDefault(&cfg.BodyBytesMax, defaultBodyBytesMax)
	setDefault(&cfg.ReadHeaderTimeout, defaultReadHeaderTimeout)
	setDefault(&cfg.ReadTimeout, defaultReadTimeout)
	setDefault(&cfg.WriteTimeout, defaultWriteTimeout)
	setDefault(&cfg.IdleTimeout, defaultIdleTimeout)
	setDefault(&cfg.LogAppendTimeout, cfg.WriteTimeout/4)
	setDefault(&cfg.ShutdownTimeout, defaultShutdownTimeout)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return nil
}

func setDefault[T string | int64 | time.Duration](v *T, def T) {
	var zero T
	if *v <= zero {
		*v = def
	}
}

// Open listens on cfg.Addr and serves in a goroutine that Close waits for.
func (s *Server) Open() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("http: server is closed")
	}
	if s.ln != nil {
		return errors.New("http: server is already open")
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("http: listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, nethttp.ErrServerClosed) {
			s.log.Error("http server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	s.log.Info("http server listening", "url", s.url(ln))
	return nil
}

// URL returns the base URL of the bound listener ("" before Open). An
// unspecified host (":8080", "0.0.0.0") is reported as 127.0.0.1 so the
// URL can be dialled.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.url(s.ln)
}

func (s *Server) url(ln net.Listener) string {
	addr, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		return "http://" + ln.Addr().String()
	}
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

// Handler returns the whole API with its middleware, for httptest.
func (s *Server) Handler() nethttp.Handler { return s.handler }

// Close stops accepting connections, lets in-flight requests finish within
// ShutdownTimeout, then cuts what is left and waits for the serve goroutine.
// Closing twice, or before Open, is harmless.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ln, done := s.ln, s.done
	s.mu.Unlock()
	if ln == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		// In-flight requests outlived the timeout: cut them so Close returns.
		err = fmt.Errorf("http: shutdown: %w", err)
		if cerr := s.srv.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("http: close: %w", cerr))
		}
	}
	<-done
	return err
}
