package main

import (
	"context"
	"sync"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/jetstream"
)

// logLink holds the notification log once it is open. The service starts
// even when the broker is down — webhooks then go to the database inbox —
// and keeps trying to open the log in the background (seed 000: one
// dependency down must not take the rest with it).
type logLink struct {
	mu  sync.Mutex // guards log
	log *jetstream.Log
	up  chan struct{} // closed once log is set
}

var _ outlast.NotificationLog = (*logLink)(nil)

func newLogLink() *logLink { return &logLink{up: make(chan struct{})} }

func (l *logLink) set(log *jetstream.Log) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log = log
	close(l.up)
}

func (l *logLink) get() *jetstream.Log {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.log
}

// Append appends to the log, or fails fast with EUNAVAILABLE while it is not
// open yet so the caller falls back to the inbox.
func (l *logLink) Append(ctx context.Context, n *outlast.Notification) error {
	log := l.get()
	if log == nil {
		return outlast.Unavailable(nil, time.Second, "notification log not connected")
	}
	return log.Append(ctx, n)
}

// wait returns the log once it is open, or nil when ctx ends first.
func (l *logLink) wait(ctx context.Context) *jetstream.Log {
	select {
	case <-l.up:
		return l.get()
	case <-ctx.Done():
		return nil
	}
}

// openLogLoop opens the log with capped backoff until it succeeds or ctx
// ends.
func (m *Main) openLogLoop(ctx context.Context, cfg jetstream.Config) error {
	return retryLoop(ctx, func() error {
		log, err := jetstream.Open(ctx, cfg)
		if err != nil {
			return err
		}
		m.logs.set(log)
		m.Logger.Info("notification log connected")
		return errStopRetry
	}, func(err error) {
		m.Logger.Warn("notification log unavailable; webhooks go to the database inbox", "err", err)
	})
}
