// Package jetstream is Outlast's durable notification log on NATS
// JetStream: partner notifications are appended here (group-committed, every
// append fsync'd or replicated before it is acknowledged) and the committer
// consumes them in batches through one durable consumer shared by every
// instance, applying them to the ledger and dead-lettering the ones that can
// never apply.
//
// It runs either an embedded NATS server under a data directory (the
// zero-set-up mode) or against an external NATS cluster.
package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/backoff"
)

var _ outlast.NotificationLog = (*Log)(nil)

// retryAfter is what callers are told when the log cannot take or serve a
// request: long enough for a reconnect, short enough not to pile up.
const retryAfter = time.Second

// Config configures a Log. The zero value plus DataDir is a working embedded
// log.
type Config struct {
	// URL of an external NATS server or cluster (comma-separated URLs). If
	// URL is "", an embedded server is started under DataDir.
	URL string
	// DataDir is the embedded server's JetStream store directory; required
	// when URL is "".
	DataDir string
	// ListenAddr, if not "", makes the embedded server also listen for
	// clients on this host:port (port 0 picks a free one), so other
	// processes (the demo, a second instance) can connect; ClientURL reports
	// it. If ListenAddr is "", the embedded server has no network listener
	// and is used in-process only. Ignored when URL is set.
	ListenAddr string
	// Replicas is the stream replica count on an external cluster. If
	// Replicas <= 0, 1 is used. The embedded server always uses 1.
	Replicas int
	// StreamPrefix names the streams and subjects, so several logs can share
	// one NATS account (tests use a unique prefix). Streams are
	// <prefix>_NOTIFICATIONS and <prefix>_DEAD, subjects
	// <lower(prefix)>.notifications.<channel> and <lower(prefix)>.dead.<channel>.
	// It must be 1-32 characters of [A-Za-z0-9_-]. If StreamPrefix is "",
	// "OUTLAST" is used.
	StreamPrefix string
	// ConsumerName is the durable consumer every committer instance shares.
	// If ConsumerName is "", "committer" is used.
	ConsumerName string

	// BatchMax bounds the notifications per appended message. If BatchMax
	// <= 0, 256 is used.
	BatchMax int
	// InflightMax bounds the appended messages awaiting their PubAck. Only
	// full batches (BatchMax) pipeline; at most one partly filled batch is
	// in flight, so batches grow while it is stored. If InflightMax <= 0, 8
	// is used.
	InflightMax int
	// QueueMax bounds the Append calls waiting to be batched; beyond it
	// Append fails at once with EUNAVAILABLE. If QueueMax <= 0,
	// 4 × BatchMax × InflightMax is used.
	QueueMax int
	// AckTimeout bounds the wait for a PubAck. If AckTimeout <= 0, 2s is used.
	AckTimeout time.Duration

	// MaxBytes bounds the notifications stream, which holds only what the
	// committer has not applied yet: it is a work queue, so an applied
	// message is removed when it is acked and nothing unapplied is ever
	// discarded, by age or to make room. When unapplied notifications fill
	// it, appends fail (DiscardNew) and the HTTP layer falls back to the
	// database inbox. If MaxBytes <= 0, 1 GiB is used.
	MaxBytes int64
	// MaxMsgs bounds the messages in the notifications stream, likewise.
	// If MaxMsgs <= 0, 1,000,000 is used.
	MaxMsgs int64
	// DeadMaxBytes bounds the dead-letter stream, which keeps entries until
	// an operator removes them; when it is full, dead-lettering fails and
	// the message is retried rather than lost. If DeadMaxBytes <= 0,
	// 256 MiB is used.
	DeadMaxBytes int64
	// DuplicateWindow is how long JetStream remembers a message id, so a
	// republished batch is stored once. If DuplicateWindow <= 0, 2 minutes
	// is used.
	DuplicateWindow time.Duration

	// AckWait is how long the consumer waits for the committer's ack before
	// redelivering a message to any instance; it also bounds one apply call.
	// If AckWait <= 0, 30s is used.
	AckWait time.Duration
	// MaxAckPending bounds the messages delivered but not yet acknowledged,
	// across all instances. If MaxAckPending <= 0, 1024 is used.
	MaxAckPending int
	// ApplyMax bounds the notifications passed to one apply call (one
	// database transaction); a single message larger than that is applied
	// alone. If ApplyMax <= 0, 1000 is used.
	ApplyMax int
	// FetchWait is how long one fetch waits for a first message; it also
	// bounds how long Consume takes to notice cancellation. If FetchWait
	// <= 0, 1s is used.
	FetchWait time.Duration
	// RetryDelayMin and RetryDelayMax bound the backoff (full jitter)
	// between fetches while the broker fails, apply attempts while the
	// database is unavailable, and redeliveries of a message whose apply
	// failed. If RetryDelayMin <= 0, 100ms is used; if RetryDelayMax <= 0,
	// 5s is used.
	RetryDelayMin time.Duration
	RetryDelayMax time.Duration

	// Logger receives the log's and the embedded server's messages. If
	// Logger is nil, slog.Default() is used.
	Logger *slog.Logger

	// beforePublish, if set, runs in the group-commit goroutine before each
	// publish: a seam for tests to hold the pipeline.
	beforePublish func()
	// beforeDeleteDead, if set, runs before a replayed dead letter is
	// deleted; an error fails the delete: a seam for tests of a failure
	// between a replay's append and its delete.
	beforeDeleteDead func() error
}

func (c Config) withDefaults() Config {
	setInt := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setInt(&c.Replicas, 1)
	setInt(&c.BatchMax, 256)
	setInt(&c.InflightMax, 8)
	setInt(&c.QueueMax, 4*c.BatchMax*c.InflightMax)
	setInt(&c.MaxAckPending, 1024)
	setInt(&c.ApplyMax, 1000)
	setDur(&c.AckTimeout, 2*time.Second)
	setDur(&c.DuplicateWindow, 2*time.Minute)
	setDur(&c.AckWait, 30*time.Second)
	setDur(&c.FetchWait, time.Second)
	setDur(&c.RetryDelayMin, 100*time.Millisecond)
	setDur(&c.RetryDelayMax, 5*time.Second)
	if c.MaxBytes <= 0 {
		c.MaxBytes = 1 << 30
	}
	if c.MaxMsgs <= 0 {
		c.MaxMsgs = 1_000_000
	}
	if c.DeadMaxBytes <= 0 {
		c.DeadMaxBytes = 256 << 20
	}
	if c.StreamPrefix == "" {
		c.StreamPrefix = "OUTLAST"
	}
	if c.ConsumerName == "" {
		c.ConsumerName = "committer"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.URL != "" {
		c.ListenAddr = ""
	} else {
		c.Replicas = 1
	}
	return c
}

// retryPolicy is the one backoff of the committer's loops.
func (c Config) retryPolicy() backoff.Policy {
	return backoff.Policy{Base: c.RetryDelayMin, Max: c.RetryDelayMax}
}

func (c Config) validate() error {
	switch {
	case c.URL == "" && c.DataDir == "":
		return errors.New("jetstream: DataDir is required for the embedded server")
	case !validName(c.StreamPrefix, 32):
		return fmt.Errorf("jetstream: StreamPrefix %q must be 1-32 characters of [A-Za-z0-9_-]", c.StreamPrefix)
	case !validName(c.ConsumerName, 64):
		return fmt.Errorf("jetstream: ConsumerName %q must be 1-64 characters of [A-Za-z0-9_-]", c.ConsumerName)
	case c.RetryDelayMax < c.RetryDelayMin:
		return errors.New("jetstream: RetryDelayMax must be at least RetryDelayMin")
	case c.AckWait <= 2*c.RetryDelayMax:
		// A message held while the database is down is kept alive with
		// InProgress once per backoff step; a step longer than AckWait
		// would let it be redelivered to another instance meanwhile.
		return errors.New("jetstream: AckWait must be more than twice RetryDelayMax")
	}
	return nil
}

func validName(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// Log is the durable notification log. It is safe for concurrent use.
type Log struct {
	// Written once in Open, read-only afterwards.
	cfg         Config
	log         *slog.Logger
	srv         *server.Server // embedded server; nil with an external URL
	nc          *nats.Conn
	js          jetstream.JetStream
	stream      jetstream.Stream // notifications
	dead        jetstream.Stream
	consumer    jetstream.Consumer
	streamName  string
	deadName    string
	subjectBase string // lower(prefix), the first subject token
	payloadMax  int    // bytes of one appended message's body

	// queue holds Append requests for the group-commit goroutine; it is
	// never closed (senders hold mu.RLock and check closed instead).
	queue    chan *request
	inflight chan struct{} // semaphore: one token per unacknowledged message
	partial  chan struct{} // capacity 1: held by the one partly filled batch in flight

	mu        sync.RWMutex
	closed    bool           // guarded by mu; once true no request is queued and no Consume starts
	consumers sync.WaitGroup // running Consume calls; Add under mu while !closed

	repairMu sync.Mutex // serialises repair within this process

	stopCtx   context.Context // cancelled by Close
	stop      context.CancelFunc
	writerWG  sync.WaitGroup // the group-commit goroutine and its ack waiters
	closeOnce sync.Once
	closeErr  error

	stats stats
}

// stats are this Log's own counters (the Prometheus ones are process-wide).
type stats struct {
	appends, appended, appendErrors, consumed, deadLetters, naks atomic.Uint64
}

// Stats is a snapshot of one Log's counters.
type Stats struct {
	Appends               uint64 // batch messages acknowledged by JetStream
	NotificationsAppended uint64 // notifications in them
	AppendErrors          uint64 // notifications whose Append failed
	Consumed              uint64 // notifications passed to a successful apply
	DeadLetters           uint64 // notifications dead-lettered
	Naks                  uint64 // messages handed back for redelivery
}

// Stats returns a snapshot of this Log's counters.
func (l *Log) Stats() Stats {
	return Stats{
		Appends:               l.stats.appends.Load(),
		NotificationsAppended: l.stats.appended.Load(),
		AppendErrors:          l.stats.appendErrors.Load(),
		Consumed:              l.stats.consumed.Load(),
		DeadLetters:           l.stats.deadLetters.Load(),
		Naks:                  l.stats.naks.Load(),
	}
}

// Open starts (or connects to) NATS, creates or updates the streams and the
// durable consumer, and starts the group-commit goroutine. If the broker is
// unreachable it returns EUNAVAILABLE; the caller may keep serving from the
// database inbox and retry Open later.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	l := &Log{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "jetstream"),
		streamName:  cfg.StreamPrefix + "_NOTIFICATIONS",
		deadName:    cfg.StreamPrefix + "_DEAD",
		subjectBase: strings.ToLower(cfg.StreamPrefix),
		queue:       make(chan *request, cfg.QueueMax),
		inflight:    make(chan struct{}, cfg.InflightMax),
		partial:     make(chan struct{}, 1),
	}
	l.stopCtx, l.stop = context.WithCancel(context.Background())
	if err := l.connect(ctx); err != nil {
		l.shutdown()
		return nil, err
	}
	if err := l.setup(ctx); err != nil {
		l.shutdown()
		return nil, err
	}
	l.writerWG.Add(2)
	go l.writer()
	go l.watchStreams(streamWatchInterval)
	return l, nil
}

// connect starts the embedded server if needed and connects the client.
func (l *Log) connect(ctx context.Context) error {
	opts := []nats.Option{
		nats.Name("outlast"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.Timeout(2 * time.Second),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		// Without a reconnect buffer a publish during an outage fails at
		// once instead of waiting out AckTimeout, so Append falls back to
		// the database inbox quickly.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				l.log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { l.log.Info("nats reconnected", "url", c.ConnectedUrl()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			l.log.Warn("nats async error", "err", err)
		}),
	}
	url := l.cfg.URL
	if url == "" {
		srv, err := startServer(ctx, l.cfg, l.log)
		if err != nil {
			return err
		}
		l.srv = srv
		opts = append(opts, nats.InProcessServer(srv))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return outlast.Unavailable(err, retryAfter, "notification log unavailable")
	}
	l.nc = nc
	// Leave room for headers and the JSON array's brackets and commas.
	l.payloadMax = int(nc.MaxPayload()) - 4096
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(l.cfg.AckTimeout))
	if err != nil {
		return fmt.Errorf("jetstream: new context: %w", err)
	}
	l.js = js
	return nil
}

// startServer runs the embedded server with JetStream, every write fsync'd.
func startServer(ctx context.Context, cfg Config, log *slog.Logger) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "outlast-embedded",
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		// JetStream's default fsyncs only every 2 minutes, so an
		// acknowledged append could vanish in a power loss (Jepsen, NATS
		// 2.12.1, 2025). SyncAlways fsyncs before the PubAck; group commit
		// wins the throughput back.
		SyncAlways: true,
		NoSigs:     true,
		DontListen: cfg.ListenAddr == "",
	}
	if cfg.ListenAddr != "" {
		host, portText, err := net.SplitHostPort(cfg.ListenAddr)
		if err != nil {
			return nil, fmt.Errorf("jetstream: listen address %q: %w", cfg.ListenAddr, err)
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			return nil, fmt.Errorf("jetstream: listen port %q: %w", portText, err)
		}
		if port == 0 {
			port = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, port
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("jetstream: embedded server: %w", err)
	}
	srv.SetLoggerV2(serverLogger{log.With("component", "nats-server")}, false, false, false)
	srv.Start()
	ready := 10 * time.Second
	if d, ok := ctx.Deadline(); ok && time.Until(d) < ready {
		ready = max(time.Until(d), time.Millisecond)
	}
	if !srv.ReadyForConnections(ready) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, outlast.Unavailable(errors.New("embedded server not ready"), retryAfter, "notification log unavailable")
	}
	return srv, nil
}

// setup creates or updates the streams and the durable consumer and keeps
// their handles. The handles address them by name, so they stay valid if
// repair has to create them again.
func (l *Log) setup(ctx context.Context) error {
	stream, dead, consumer, err := l.ensure(ctx)
	if err != nil {
		return err
	}
	l.stream, l.dead, l.consumer = stream, dead, consumer
	return nil
}

// repair recreates the streams or the consumer if they are gone (an
// operator deleted them, or an external cluster lost them), so the log
// heals instead of failing until someone notices.
func (l *Log) repair(ctx context.Context) {
	if !l.missing(ctx) {
		return
	}
	// The server answers a stream delete before it has finished moving the
	// stream's files away; recreating at once can lose the new stream's
	// files to that move (seen with nats-server 2.15). Wait, then look again.
	if !backoff.Sleep(ctx, repairGrace) || !l.missing(ctx) {
		return
	}
	l.repairMu.Lock()
	defer l.repairMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, l.cfg.AckTimeout)
	defer cancel()
	if _, _, _, err := l.ensure(ctx); err != nil {
		l.log.Error("recreating missing stream or consumer failed", "err", err)
		return
	}
	l.log.Warn("recreated missing stream or consumer", "stream", l.streamName, "consumer", l.cfg.ConsumerName)
}

// streamWatchInterval is how often the stream gauges are refreshed.
const streamWatchInterval = 5 * time.Second

// repairGrace is how long a stream or consumer must stay missing before
// repair recreates it.
const repairGrace = time.Second

// missing reports whether the stream or the consumer is known to be gone
// (not merely unreachable).
func (l *Log) missing(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.AckTimeout)
	defer cancel()
	_, err := l.js.Consumer(ctx, l.streamName, l.cfg.ConsumerName)
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound)
}

// ensure creates or updates the streams and the durable consumer.
func (l *Log) ensure(ctx context.Context) (stream, dead jetstream.Stream, consumer jetstream.Consumer, err error) {
	if err := l.upgradeRetention(ctx); err != nil {
		return nil, nil, nil, err
	}
	stream, err = l.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        l.streamName,
		Description: "Outlast partner notifications awaiting apply",
		Subjects:    []string{l.subjectBase + ".notifications.>"},
		// A work queue removes a message once the committer acks it, so
		// applied traffic never fills the stream and refuses appends; no
		// MaxAge, so an unapplied message is never dropped.
		Retention:  jetstream.WorkQueuePolicy,
		MaxBytes:   l.cfg.MaxBytes,
		MaxMsgs:    l.cfg.MaxMsgs,
		MaxMsgSize: int32(l.payloadMax + 4096),
		Discard:    jetstream.DiscardNew,
		Storage:    jetstream.FileStorage,
		Replicas:   l.cfg.Replicas,
		Duplicates: l.cfg.DuplicateWindow,
	})
	if err != nil {
		return nil, nil, nil, setupErr("create stream "+l.streamName, err)
	}
	dead, err = l.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        l.deadName,
		Description: "Outlast notifications that could never be applied",
		Subjects:    []string{l.subjectBase + ".dead.>"},
		Retention:   jetstream.LimitsPolicy,
		MaxBytes:    l.cfg.DeadMaxBytes,
		Discard:     jetstream.DiscardNew,
		Storage:     jetstream.FileStorage,
		Replicas:    l.cfg.Replicas,
		Duplicates:  l.cfg.DuplicateWindow,
	})
	if err != nil {
		return nil, nil, nil, setupErr("create stream "+l.deadName, err)
	}
	consumer, err = l.js.CreateOrUpdateConsumer(ctx, l.streamName, jetstream.ConsumerConfig{
		Durable:       l.cfg.ConsumerName,
		Description:   "Outlast committer, shared by every instance",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       l.cfg.AckWait,
		// Unlimited: the committer dead-letters by itself when the
		// ledger says so; a server-side limit would drop messages
		// silently instead.
		MaxDeliver:    -1,
		MaxAckPending: l.cfg.MaxAckPending,
	})
	if err != nil {
		return nil, nil, nil, setupErr("create consumer "+l.cfg.ConsumerName, err)
	}
	return stream, dead, consumer, nil
}

// setupErr keeps configuration conflicts (a stream that exists with
// incompatible settings) apart from an unreachable broker.
func setupErr(what string, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code != 503 {
		return fmt.Errorf("jetstream: %s: %w", what, err)
	}
	return outlast.Unavailable(fmt.Errorf("%s: %w", what, err), retryAfter, "notification log unavailable")
}

// Close stops the group-commit goroutine (queued Appends fail with
// EUNAVAILABLE), waits for running Consume calls and outstanding acks,
// closes the connection and shuts the embedded server down.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.stop()
		l.consumers.Wait()
		l.writerWG.Wait()
		l.closeErr = l.shutdown()
	})
	return l.closeErr
}

// shutdown releases the connection and the embedded server.
func (l *Log) shutdown() error {
	var err error
	if l.nc != nil {
		// A flush can only succeed, and is only worth waiting for, on a
		// live connection.
		if l.nc.IsConnected() {
			if ferr := l.nc.FlushTimeout(time.Second); ferr != nil && !errors.Is(ferr, nats.ErrConnectionClosed) {
				err = fmt.Errorf("jetstream: flush: %w", ferr)
			}
		}
		l.nc.Close()
	}
	if l.srv != nil {
		l.srv.Shutdown()
		l.srv.WaitForShutdown()
	}
	return err
}

// Ping reports whether the notifications stream is reachable, for
// readiness. It does not repair a missing stream; Consume does.
func (l *Log) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.AckTimeout)
	defer cancel()
	if _, err := l.stream.Info(ctx); err != nil {
		return outlast.Unavailable(err, retryAfter, "notification log unavailable")
	}
	return nil
}

// ClientURL returns the embedded server's client URL when it listens on the
// network (Config.ListenAddr), "" otherwise.
func (l *Log) ClientURL() string {
	if l.srv == nil || l.cfg.ListenAddr == "" {
		return ""
	}
	return l.srv.ClientURL()
}

// Pending returns how many notification messages the committer has not
// finished: not yet delivered plus delivered but unacknowledged.
func (l *Log) Pending(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.AckTimeout)
	defer cancel()
	info, err := l.consumer.Info(ctx)
	if err != nil {
		return 0, outlast.Unavailable(err, retryAfter, "notification log unavailable")
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// subjectToken turns a channel name into one subject token: validID allows
// '.', which NATS reads as a token separator.
func subjectToken(channel string) string {
	return strings.ReplaceAll(channel, ".", "_")
}

// serverLogger sends the embedded server's log lines to slog. Debug and
// trace output is dropped: the server is started without those flags.
type serverLogger struct{ log *slog.Logger }

func (s serverLogger) Noticef(format string, v ...any) { s.log.Debug(fmt.Sprintf(format, v...)) }
func (s serverLogger) Warnf(format string, v ...any)   { s.log.Warn(fmt.Sprintf(format, v...)) }
func (s serverLogger) Fatalf(format string, v ...any)  { s.log.Error(fmt.Sprintf(format, v...)) }
func (s serverLogger) Errorf(format string, v ...any)  { s.log.Error(fmt.Sprintf(format, v...)) }
func (s serverLogger) Debugf(string, ...any)           {}
func (s serverLogger) Tracef(string, ...any)           {}

// upgradeRetention replaces a notifications stream made by an earlier
// version under limits retention (which kept applied messages until they
// filled it) with the work queue: JetStream cannot change a stream's
// retention to work queue in place. It does so only for the embedded
// server, which this process alone serves (no other instance can append
// between the check and the delete), and only when the committer has
// applied everything in it; otherwise it refuses to start, since dropping
// the stream would lose unapplied notifications. A shared cluster is the
// operator's to migrate: other instances may still be appending to it.
func (l *Log) upgradeRetention(ctx context.Context) error {
	old, err := l.js.Stream(ctx, l.streamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return setupErr("look up stream "+l.streamName, err)
	}
	info, err := old.Info(ctx)
	if err != nil {
		return setupErr("look up stream "+l.streamName, err)
	}
	if info.Config.Retention == jetstream.WorkQueuePolicy {
		return nil
	}
	if l.srv == nil {
		return fmt.Errorf("jetstream: stream %s has limits retention (an earlier version): once every instance runs "+
			"this version and the consumer %s has nothing pending, delete the stream and it is created as a work queue",
			l.streamName, l.cfg.ConsumerName)
	}
	c, err := old.Consumer(ctx, l.cfg.ConsumerName)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return setupErr("look up consumer "+l.cfg.ConsumerName, err)
	}
	if c == nil && info.State.Msgs > 0 {
		return fmt.Errorf("jetstream: stream %s (limits retention, from an earlier version) holds %d messages and has no "+
			"consumer to say which were applied: refusing to drop it", l.streamName, info.State.Msgs)
	}
	if c != nil {
		ci, err := c.Info(ctx)
		if err != nil {
			return setupErr("look up consumer "+l.cfg.ConsumerName, err)
		}
		if pending := ci.NumPending + uint64(ci.NumAckPending); pending > 0 {
			return fmt.Errorf("jetstream: stream %s (limits retention, from an earlier version) holds %d unapplied messages: "+
				"run the earlier version until they are applied, then start this one", l.streamName, pending)
		}
	}
	if err := l.js.DeleteStream(ctx, l.streamName); err != nil {
		return setupErr("delete stream "+l.streamName, err)
	}
	l.log.Warn("replaced the notifications stream of an earlier version (limits retention) with a work queue; it held only applied messages",
		"stream", l.streamName, "messages", info.State.Msgs)
	// The server answers a delete before its files are gone (see repair).
	if !backoff.Sleep(ctx, repairGrace) {
		return ctx.Err()
	}
	return nil
}

// watchStreams publishes the streams' size against their limits as
// metrics every interval until the Log is closed.
func (l *Log) watchStreams(interval time.Duration) {
	defer l.writerWG.Done()
	for {
		for _, s := range []struct {
			name   string
			stream jetstream.Stream
		}{{"notifications", l.stream}, {"dead", l.dead}} {
			ctx, cancel := context.WithTimeout(l.stopCtx, l.cfg.AckTimeout)
			info, err := s.stream.Info(ctx)
			cancel()
			if err != nil {
				continue // the broker is down: the gauges keep their last value
			}
			streamBytes.WithLabelValues(s.name).Set(float64(info.State.Bytes))
			streamBytesLimit.WithLabelValues(s.name).Set(float64(info.Config.MaxBytes))
			streamMessages.WithLabelValues(s.name).Set(float64(info.State.Msgs))
			streamMessagesLimit.WithLabelValues(s.name).Set(float64(info.Config.MaxMsgs))
		}
		if !backoff.Sleep(l.stopCtx, interval) {
			return
		}
	}
}
