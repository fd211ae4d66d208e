package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
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
	}
}

// appliedSummary lists the applied-notification counter by source and
// outcome ("log applied 158, log duplicate 12, ..."), read from the metric
// itself so the demo's summary and /metrics can never disagree.
func appliedSummary(g prometheus.Gatherer) (string, error) {
	mfs, err := g.Gather()
	if err != nil {
		return "", err
	}
	var parts []string
	for _, mf := range mfs {
		if mf.GetName() != "outlast_notifications_applied_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			parts = append(parts, fmt.Sprintf("%s %s %.0f", labels["source"], labels["outcome"], m.GetCounter().GetValue()))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", "), nil
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
