package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/backoff"
)

// Link is the service's hold on the notification log, which may not be
// open yet: the service starts even when the broker is down — webhooks go
// to the database inbox meanwhile — and Run keeps trying to open the log
// (seed 000: one dependency down must not take the rest with it). Appends
// fail fast with EUNAVAILABLE until the log is open; Consume waits for it.
type Link struct {
	cfg Config

	mu  sync.Mutex // guards log
	log *Log
	up  chan struct{} // closed once log is set
}

var (
	_ outlast.NotificationLog = (*Link)(nil)
	_ outlast.DeadLetters     = (*Link)(nil)
)

// NewLink returns a Link that opens a Log with cfg.
func NewLink(cfg Config) *Link { return &Link{cfg: cfg, up: make(chan struct{})} }

// Open tries once to open the log; once it is open, Open does nothing.
// Open and Run are not to be called at the same time.
func (k *Link) Open(ctx context.Context) error {
	if k.Log() != nil {
		return nil
	}
	log, err := Open(ctx, k.cfg)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.log = log
	close(k.up)
	return nil
}

// Run opens the log, retrying with backoff, and returns once it is open or
// ctx ends.
func (k *Link) Run(ctx context.Context) error {
	b := backoff.New(backoff.Policy{Base: 250 * time.Millisecond, Max: 5 * time.Second})
	for ctx.Err() == nil && k.Log() == nil {
		err := k.Open(ctx)
		if err == nil {
			k.logger().Info("notification log connected")
			return nil
		}
		k.logger().Warn("notification log unavailable; webhooks go to the database inbox", "err", err)
		b.Wait(ctx)
	}
	return nil
}

func (k *Link) logger() *slog.Logger { return k.cfg.withDefaults().Logger }

// Log returns the log once it is open, nil before.
func (k *Link) Log() *Log {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.log
}

// Append appends to the log, or fails fast with EUNAVAILABLE while it is
// not open yet so the caller falls back to the inbox.
func (k *Link) Append(ctx context.Context, n *outlast.Notification) error {
	log, err := k.open()
	if err != nil {
		return err
	}
	return log.Append(ctx, n)
}

// DeadLetters lists the log's dead letters (Log.DeadLetters), or fails
// with EUNAVAILABLE while the log is not open yet.
func (k *Link) DeadLetters(ctx context.Context, limit int) ([]outlast.DeadLetter, error) {
	log, err := k.open()
	if err != nil {
		return nil, err
	}
	return log.DeadLetters(ctx, limit)
}

// ReplayDeadLetters replays the log's dead letters
// (Log.ReplayDeadLetters), or fails with EUNAVAILABLE while the log is not
// open yet.
func (k *Link) ReplayDeadLetters(ctx context.Context, ids []string) (int, error) {
	log, err := k.open()
	if err != nil {
		return 0, err
	}
	return log.ReplayDeadLetters(ctx, ids)
}

// open returns the log, or EUNAVAILABLE while it is not open yet.
func (k *Link) open() (*Log, error) {
	if log := k.Log(); log != nil {
		return log, nil
	}
	return nil, outlast.Unavailable(nil, retryAfter, "notification log not connected")
}

// Consume waits for the log to open, then runs its committer (Log.Consume)
// until ctx ends.
func (k *Link) Consume(ctx context.Context, ledger Applier) error {
	select {
	case <-k.up:
		return k.Log().Consume(ctx, ledger)
	case <-ctx.Done():
		return nil
	}
}

// Close closes the log if it was opened.
func (k *Link) Close() error {
	if log := k.Log(); log != nil {
		return log.Close()
	}
	return nil
}

// Health says whether the log can be appended to now: nil while it is
// open and connected to its broker, otherwise why not. It only reads the
// connection's state.
func (k *Link) Health() error {
	l := k.Log()
	if l == nil {
		return errors.New("not open: the broker was unreachable; webhooks go to the database inbox")
	}
	if st := l.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("broker connection %s; webhooks go to the database inbox", strings.ToLower(st.String()))
	}
	return nil
}
