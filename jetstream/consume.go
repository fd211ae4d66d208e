package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outlast/outlast"
)

// ApplyFunc applies notifications to the ledger in one transaction and
// returns one result per notification (outlast.NotificationService's
// ApplyNotifications). An error means nothing was committed.
type ApplyFunc func(ctx context.Context, ns []*outlast.Notification) ([]outlast.ApplyResult, error)

// fetchMessagesMax bounds the messages one fetch asks for, whatever the
// average batch size suggests.
const fetchMessagesMax = 256

// errStopped means Consume's ctx ended while the database was unavailable.
var errStopped = errors.New("committer stopped")

// item is one fetched batch message and its decoded notifications.
type item struct {
	msg        jetstream.Msg
	ns         []*outlast.Notification
	seq        uint64 // stream sequence, for dead-letter provenance
	deliveries uint64 // including this one
	settled    bool   // acked or nak'd: no more InProgress for it
}

// committer is one Consume call's state; it is used by that goroutine only.
type committer struct {
	l      *Log
	apply  ApplyFunc
	perMsg float64 // notifications per message in recent fetches
	// held is every message of the current fetch: all of them are kept
	// from redelivery while one chunk waits out a database outage.
	held []*item
}

// Consume runs the committer until ctx ends or the Log is closed, then
// returns nil after the batch in hand is finished. It fetches batch
// messages from the durable consumer shared by every instance, calls apply
// once for up to ApplyMax notifications, and acknowledges the messages only
// after apply returned without error.
//
// While apply fails with EUNAVAILABLE (database down) the batch is held and
// retried with backoff, and never dead-lettered. Any other error re-applies
// the messages one by one to isolate the failing one. A message that still
// fails, or holds a notification apply rejected, is redelivered with backoff
// until it has been delivered MaxDeliver times; then those notifications go
// to the dead-letter stream and the message is acknowledged, so it never
// blocks the others. Several instances may run Consume at once.
func (l *Log) Consume(ctx context.Context, apply ApplyFunc) error {
	if apply == nil {
		return outlast.Errorf(outlast.EINVALID, "apply is required")
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return outlast.Unavailable(errClosed, retryAfter, "notification log unavailable")
	}
	l.consumers.Add(1)
	l.mu.RUnlock()
	defer l.consumers.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopOnClose := context.AfterFunc(l.stopCtx, cancel)
	defer stopOnClose()

	c := &committer{l: l, apply: apply, perMsg: 1}
	delay := l.cfg.RetryDelayMin
	for ctx.Err() == nil {
		msgs, err := c.fetch()
		if err != nil {
			consumerErrorsTotal.Inc()
			l.log.Warn("committer fetch failed", "err", err, "retry_in", delay)
			l.repair(ctx)
			if !sleep(ctx, delay) {
				break
			}
			delay = min(2*delay, l.cfg.RetryDelayMax)
			continue
		}
		delay = l.cfg.RetryDelayMin
		if len(msgs) > 0 {
			c.process(ctx, msgs)
		}
	}
	return nil
}

// fetch waits up to FetchWait for a first message, then takes whatever else
// is ready without waiting, so a lone notification is applied at once and a
// backlog is applied in large batches. The pull is not tied to ctx: a pull
// abandoned mid-flight would strand its messages until AckWait.
func (c *committer) fetch() ([]jetstream.Msg, error) {
	first, err := c.l.consumer.Fetch(1, jetstream.FetchMaxWait(c.l.cfg.FetchWait))
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	msgs := collect(first, nil)
	if err := first.Error(); err != nil && len(msgs) == 0 {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	want := int(float64(c.l.cfg.ApplyMax)/c.perMsg) - 1
	want = min(want, fetchMessagesMax-1, c.l.cfg.MaxAckPending-1)
	if want > 0 {
		more, err := c.l.consumer.FetchNoWait(want)
		if err != nil {
			// The first message is worth applying on its own.
			c.l.log.Warn("committer fetch failed", "err", err)
			return msgs, nil
		}
		msgs = collect(more, msgs)
	}
	return msgs, nil
}

func collect(b jetstream.MessageBatch, msgs []jetstream.Msg) []jetstream.Msg {
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	return msgs
}

// process decodes msgs and applies them in chunks of at most ApplyMax
// notifications (a larger single message is applied alone).
func (c *committer) process(ctx context.Context, msgs []jetstream.Msg) {
	items := make([]*item, 0, len(msgs))
	total := 0
	for _, m := range msgs {
		it, ok := c.decode(ctx, m)
		if ok {
			items = append(items, it)
			total += len(it.ns)
		}
	}
	c.perMsg = max(1, float64(total)/float64(len(msgs)))
	c.held = items
	defer func() { c.held = nil }()
	for start := 0; start < len(items); {
		end, count := start, 0
		for end < len(items) && (end == start || count+len(items[end].ns) <= c.l.cfg.ApplyMax) {
			count += len(items[end].ns)
			end++
		}
		if ctx.Err() != nil {
			c.nak(items[start:], 0, "stopped")
			return
		}
		c.applyChunk(ctx, items[start:end])
		start = end
	}
}

// decode turns m into an item; a message that cannot be decoded can never
// apply, so it is dead-lettered at once.
func (c *committer) decode(ctx context.Context, m jetstream.Msg) (*item, bool) {
	meta, err := m.Metadata()
	if err != nil {
		// Not a JetStream delivery; nothing to ack or redeliver.
		c.l.log.Error("committer got a message without metadata", "subject", m.Subject(), "err", err)
		return nil, false
	}
	it := &item{msg: m, seq: meta.Sequence.Stream, deliveries: meta.NumDelivered}
	ns, err := decodeBatch(m.Data(), m.Headers())
	if err != nil {
		c.l.log.Error("undecodable notification batch", "seq", it.seq, "err", err)
		if derr := c.l.deadLetterRaw(ctx, it, err.Error()); derr != nil {
			c.nak([]*item{it}, c.backoff(it.deliveries), "dead_letter")
			return nil, false
		}
		c.ack(it)
		return nil, false
	}
	it.ns = ns
	return it, true
}

// applyChunk applies items' notifications in one call; on an error other
// than EUNAVAILABLE it re-applies them message by message to find the
// failing one.
func (c *committer) applyChunk(ctx context.Context, items []*item) {
	all := items[0].ns
	if len(items) > 1 {
		all = make([]*outlast.Notification, 0, len(items)*len(items[0].ns))
		for _, it := range items {
			all = append(all, it.ns...)
		}
	}
	results, err := c.applyRetrying(ctx, all)
	switch {
	case errors.Is(err, errStopped):
		c.nak(items, 0, "stopped")
		return
	case err == nil:
		for _, it := range items {
			c.settle(ctx, it, results[:len(it.ns)])
			results = results[len(it.ns):]
		}
		return
	case len(items) == 1:
		c.failed(ctx, items[0], err)
		return
	}
	c.l.log.Warn("apply failed; isolating the failing message", "messages", len(items), "err", err)
	for i, it := range items {
		results, err := c.applyRetrying(ctx, it.ns)
		switch {
		case errors.Is(err, errStopped):
			c.nak(items[i:], 0, "stopped")
			return
		case err != nil:
			c.failed(ctx, it, err)
		default:
			c.settle(ctx, it, results)
		}
	}
}

// applyRetrying calls apply until it succeeds or fails with anything but
// EUNAVAILABLE. While the database is down the messages are held with
// InProgress rather than Nak'd: a Nak would count a delivery, and a long
// outage would then dead-letter good notifications at their first
// rejection.
func (c *committer) applyRetrying(ctx context.Context, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
	delay := c.l.cfg.RetryDelayMin
	for {
		results, err := c.applyOnce(ctx, ns)
		if err == nil || !unavailable(err) {
			return results, err
		}
		applyUnavailableTotal.Inc()
		c.l.log.Warn("apply unavailable; holding the batch", "notifications", len(ns), "retry_in", delay, "err", err)
		for _, it := range c.held {
			if it.settled {
				continue
			}
			if err := it.msg.InProgress(); err != nil {
				c.l.log.Warn("committer in-progress failed", "seq", it.seq, "err", err)
			}
		}
		if !sleep(ctx, delay) {
			return nil, errStopped
		}
		delay = min(2*delay, c.l.cfg.RetryDelayMax)
	}
}

// applyOnce runs apply detached from ctx's cancellation, so a transaction
// in flight when Consume is stopped can finish and be acknowledged; AckWait
// bounds it, since after that the messages go to another instance anyway.
func (c *committer) applyOnce(ctx context.Context, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.l.cfg.AckWait)
	defer cancel()
	results, err := c.apply(actx, ns)
	if err != nil {
		return nil, err
	}
	if len(results) != len(ns) {
		return nil, fmt.Errorf("apply returned %d results for %d notifications", len(results), len(ns))
	}
	return results, nil
}

// unavailable reports whether err means "the database is down, retry":
// EUNAVAILABLE, or apply's own deadline running out.
func unavailable(err error) bool {
	return outlast.ErrorCode(err) == outlast.EUNAVAILABLE ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// settle acks it unless apply rejected some of its notifications: those are
// redelivered until MaxDeliver, then dead-lettered.
func (c *committer) settle(ctx context.Context, it *item, results []outlast.ApplyResult) {
	c.l.stats.consumed.Add(uint64(len(results)))
	var rejected []int
	for i, r := range results {
		consumedTotal.WithLabelValues(string(r.Outcome)).Inc()
		if r.Outcome == outlast.OutcomeRejected {
			rejected = append(rejected, i)
		}
	}
	if len(rejected) == 0 {
		c.ack(it)
		return
	}
	if it.deliveries < uint64(c.l.cfg.MaxDeliver) {
		c.nak([]*item{it}, c.backoff(it.deliveries), "rejected")
		return
	}
	reasons := make([]string, len(rejected))
	for j, i := range rejected {
		reasons[j] = "rejected: " + results[i].Reason
	}
	c.deadLetterAndAck(ctx, it, rejected, reasons)
}

// failed handles a message whose apply keeps failing with an error other
// than EUNAVAILABLE.
func (c *committer) failed(ctx context.Context, it *item, err error) {
	c.l.log.Error("apply failed", "seq", it.seq, "deliveries", it.deliveries, "err", err)
	if it.deliveries < uint64(c.l.cfg.MaxDeliver) {
		c.nak([]*item{it}, c.backoff(it.deliveries), "error")
		return
	}
	idx := make([]int, len(it.ns))
	reasons := make([]string, len(it.ns))
	for i := range it.ns {
		idx[i], reasons[i] = i, "apply failed: "+err.Error()
	}
	c.deadLetterAndAck(ctx, it, idx, reasons)
}

func (c *committer) deadLetterAndAck(ctx context.Context, it *item, idx []int, reasons []string) {
	if err := c.l.deadLetter(ctx, it, idx, reasons); err != nil {
		c.l.log.Error("dead-lettering failed; message will be redelivered", "seq", it.seq, "err", err)
		c.nak([]*item{it}, c.backoff(it.deliveries), "dead_letter")
		return
	}
	c.ack(it)
}

func (c *committer) ack(it *item) {
	it.settled = true
	// A lost ack only means a redelivery, which apply absorbs as duplicates.
	if err := it.msg.Ack(); err != nil {
		c.l.log.Warn("committer ack failed", "seq", it.seq, "err", err)
	}
}

func (c *committer) nak(items []*item, delay time.Duration, reason string) {
	for _, it := range items {
		it.settled = true
		consumerNaksTotal.WithLabelValues(reason).Inc()
		c.l.stats.naks.Add(1)
		var err error
		if delay > 0 {
			err = it.msg.NakWithDelay(delay)
		} else {
			err = it.msg.Nak()
		}
		if err != nil {
			c.l.log.Warn("committer nak failed; redelivery after AckWait", "seq", it.seq, "err", err)
		}
	}
}

// backoff is the redelivery delay after the given number of deliveries:
// RetryDelayMin doubling up to RetryDelayMax.
func (c *committer) backoff(deliveries uint64) time.Duration {
	d := c.l.cfg.RetryDelayMin
	for i := uint64(1); i < deliveries && d < c.l.cfg.RetryDelayMax; i++ {
		d *= 2
	}
	return min(d, c.l.cfg.RetryDelayMax)
}

// sleep waits d or until ctx ends, reporting whether it waited the full d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
