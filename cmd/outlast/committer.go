package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outlast/outlast"
)

// Limits of the committer side of the service.
const (
	// inboxBatchMax bounds how many inbox entries one drain transaction applies.
	inboxBatchMax = 500
	// inboxPollInterval is how often an idle inbox is looked at; the inbox is
	// only used while the log is down, so this is a trickle of queries.
	inboxPollInterval = 250 * time.Millisecond
	// backoffMax caps the wait between failing attempts of a loop.
	backoffMax = 5 * time.Second
)

var (
	appliedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_notifications_applied_total",
		Help: "Notifications applied to the ledger, by source (log, inbox) and outcome.",
	}, []string{"source", "outcome"})
	inboxErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_inbox_drain_errors_total",
		Help: "Inbox drain transactions that failed and will be retried.",
	})
)

func mainCollectors() []prometheus.Collector {
	return []prometheus.Collector{appliedTotal, inboxErrors}
}

// runCommitter applies the log to the ledger: one database transaction per
// fetched batch, acked only after commit (inside Consume). A Consume that
// stops with an error is restarted with capped backoff, never abandoned.
func (m *Main) runCommitter(ctx context.Context) error {
	apply := func(ctx context.Context, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
		res, err := m.DB.ApplyNotifications(ctx, ns)
		if err == nil {
			countOutcomes("log", res)
			m.Ledger.applied(ctx, res)
		}
		return res, err
	}
	log := m.logs.wait(ctx)
	if log == nil {
		return nil
	}
	return retryLoop(ctx, func() error { return log.Consume(ctx, apply) }, func(err error) {
		m.Logger.Error("committer stopped; restarting", "err", err)
	})
}

// runInboxDrainer applies notifications that were committed to the
// database inbox while the log was unavailable, through the same apply path.
func (m *Main) runInboxDrainer(ctx context.Context) error {
	wait := inboxPollInterval
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, res, err := m.DB.DrainInbox(ctx, inboxBatchMax)
		if err == nil {
			countOutcomes("inbox", res)
			m.Ledger.applied(ctx, res)
		}
		switch {
		case err != nil:
			inboxErrors.Inc()
			m.Logger.Warn("inbox drain failed", "err", err)
			wait = min(wait*2, backoffMax)
		case n == inboxBatchMax:
			wait = 0 // more waiting: drain at full speed
		default:
			wait = inboxPollInterval
		}
		t.Reset(wait)
	}
}

func countOutcomes(source string, res []outlast.ApplyResult) {
	for _, r := range res {
		appliedTotal.WithLabelValues(source, string(r.Outcome)).Inc()
		outcomes.add(source + " " + string(r.Outcome))
	}
}

// outcomes tallies applied notifications by source and outcome for the
// demo's summary; the metrics carry the same numbers for operators.
var outcomes = &tally{n: map[string]int64{}}

type tally struct {
	mu sync.Mutex // guards n
	n  map[string]int64
}

func (t *tally) add(k string) {
	t.mu.Lock()
	t.n[k]++
	t.mu.Unlock()
}

// String lists the counts in key order.
func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make([]string, 0, len(t.n))
	for k := range t.n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, t.n[k])
	}
	return strings.Join(parts, ", ")
}

// errStopRetry, returned by a retryLoop's fn, ends the loop.
var errStopRetry = errors.New("stop retrying")

// retryLoop runs fn until ctx is done or fn returns errStopRetry, waiting
// with capped exponential backoff after each other return (errors are
// reported to onErr).
func retryLoop(ctx context.Context, fn func() error, onErr func(error)) error {
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := fn()
		if ctx.Err() != nil || errors.Is(err, errStopRetry) {
			return nil
		}
		if err != nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(wait*2, backoffMax)
	}
	return nil
}
