package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/backoff"
)

// Applier applies notifications to the ledger in one transaction and
// returns one result per notification, each saying what becomes of it
// (outlast.Ledger's Apply). An error means nothing was committed.
type Applier interface {
	Apply(ctx context.Context, source outlast.Source, ns []*outlast.Notification) ([]outlast.ApplyResult, error)
}

// fetchMessagesMax bounds the messages one fetch asks for, whatever the
// average batch size suggests.
const fetchMessagesMax = 256

// errStopped means Consume's ctx ended while the database was unavailable.
var errStopped = errors.New("committer stopped")

// item is one fetched batch message and its decoded notifications.
type item struct {
	msg        jetstream.Msg
	ns         []*outlast.Notification
	seq        uint64    // stream sequence, for dead-letter provenance
	published  time.Time // when the stream stored it: with seq, names it across stream re-creations
	deliveries uint64    // including this one
	settled    bool      // acked or nak'd: no more InProgress for it
}

// committer is one Consume call's state; it is used by that goroutine only.
type committer struct {
	l      *Log
	ledger Applier
	perMsg float64 // notifications per message in recent fetches
	retry  backoff.Policy
	// held is every message of the current fetch: all of them are kept
	// from redelivery while one chunk waits out a database outage.
	held []*item
}

// Consume is the committer: it runs until ctx ends or the Log is closed,
// then returns nil after the batch in hand is finished. It fetches batch
// messages from the durable consumer shared by every instance, calls
// ledger.Apply once for up to ApplyMax notifications, and acknowledges the
// messages only after Apply returned without error.
//
// While Apply fails with EUNAVAILABLE (database down, read-only, busy) the
// batch is held and retried with backoff, without limit, and never
// dead-lettered. Any other error re-applies the messages one by one to
// isolate the failing one, which is redelivered with backoff, also without
// limit: an error is not a verdict on the notification. What becomes of a
// rejected notification is the ledger's call (its result's RetryAfter or
// DeadLetter); a message holding one is redelivered after RetryAfter or,
// once the ledger says so, its rejected notifications go to the
// dead-letter stream and the message is acknowledged. Several instances
// may run Consume at once.
func (l *Log) Consume(ctx context.Context, ledger Applier) error {
	if ledger == nil {
		return outlast.Errorf(outlast.EINVALID, "ledger is required")
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

	c := &committer{l: l, ledger: ledger, perMsg: 1, retry: l.cfg.retryPolicy()}
	b := backoff.New(c.retry)
	for ctx.Err() == nil {
		msgs, err := c.fetch()
		if err != nil {
			consumerErrorsTotal.Inc()
			l.log.Warn("committer fetch failed", "err", err, "failures", b.Failures()+1)
			l.repair(ctx)
			b.Wait(ctx)
			continue
		}
		b.Reset()
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
	it := &item{msg: m, seq: meta.Sequence.Stream, published: meta.Timestamp, deliveries: meta.NumDelivered}
	ns, err := decodeBatch(m.Data(), m.Headers())
	for _, n := range ns {
		n.Deliveries = int(min(meta.NumDelivered, 1<<30))
	}
	if err != nil {
		c.l.log.Error("undecodable notification batch", "seq", it.seq, "err", err)
		if derr := c.l.deadLetterRaw(ctx, it, err.Error()); derr != nil {
			c.nak([]*item{it}, c.retry.Delay(int(it.deliveries)), "dead_letter")
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
		c.failed(items[0], err)
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
			c.failed(it, err)
		default:
			c.settle(ctx, it, results)
		}
	}
}

// applyRetrying calls Apply until it succeeds or fails with anything but
// EUNAVAILABLE. While the database is down the messages are held with
// InProgress rather than Nak'd: a Nak would count a delivery, and a long
// outage would then spend a rejected notification's deliveries.
func (c *committer) applyRetrying(ctx context.Context, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
	b := backoff.New(c.retry)
	for {
		results, err := c.applyOnce(ctx, ns)
		if err == nil || !outlast.Transient(err) {
			return results, err
		}
		applyUnavailableTotal.Inc()
		delay := b.Next()
		c.l.log.Warn("apply unavailable; holding the batch", "notifications", len(ns), "retry_in", delay, "err", err)
		for _, it := range c.held {
			if it.settled {
				continue
			}
			if err := it.msg.InProgress(); err != nil {
				c.l.log.Warn("committer in-progress failed", "seq", it.seq, "err", err)
			}
		}
		if !b.Sleep(ctx, delay) {
			return nil, errStopped
		}
	}
}

// applyOnce runs apply detached from ctx's cancellation, so a transaction
// in flight when Consume is stopped can finish and be acknowledged; AckWait
// bounds it, since after that the messages go to another instance anyway.
func (c *committer) applyOnce(ctx context.Context, ns []*outlast.Notification) ([]outlast.ApplyResult, error) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.l.cfg.AckWait)
	defer cancel()
	results, err := c.ledger.Apply(actx, outlast.FromLog, ns)
	if err != nil {
		return nil, err
	}
	if len(results) != len(ns) {
		return nil, fmt.Errorf("apply returned %d results for %d notifications", len(results), len(ns))
	}
	return results, nil
}

// settle acks it unless the ledger rejected some of its notifications:
// then the message is redelivered after the longest RetryAfter asked for,
// or, once the ledger marks them DeadLetter, those go to the dead-letter
// stream and the message is acked. All notifications of a message share
// its delivery count, so the ledger's bound is reached by all at once.
func (c *committer) settle(ctx context.Context, it *item, results []outlast.ApplyResult) {
	c.l.stats.consumed.Add(uint64(len(results)))
	var dead []int
	var reasons []string
	var retry time.Duration
	retrying := false
	for i, r := range results {
		switch {
		case r.Outcome != outlast.OutcomeRejected:
		case r.DeadLetter:
			dead = append(dead, i)
			reasons = append(reasons, "rejected: "+r.Reason)
		default:
			retrying, retry = true, max(retry, r.RetryAfter)
		}
	}
	switch {
	case retrying:
		c.nak([]*item{it}, max(retry, c.retry.Base), "rejected")
	case len(dead) > 0:
		c.deadLetterAndAck(ctx, it, dead, reasons)
	default:
		c.ack(it)
	}
}

// failed handles a message whose Apply keeps failing with an error other
// than EUNAVAILABLE: redelivered with backoff, never dead-lettered, since
// the error says nothing about whether the notification can apply.
func (c *committer) failed(it *item, err error) {
	applyErrorsTotal.Inc()
	delay := c.retry.Delay(int(it.deliveries))
	c.l.log.Error("apply failed; message will be redelivered", "seq", it.seq, "deliveries", it.deliveries, "retry_in", delay, "err", err)
	c.nak([]*item{it}, delay, "error")
}

func (c *committer) deadLetterAndAck(ctx context.Context, it *item, idx []int, reasons []string) {
	if err := c.l.deadLetter(ctx, it, idx, reasons); err != nil {
		c.l.log.Error("dead-lettering failed; message will be redelivered", "seq", it.seq, "err", err)
		c.nak([]*item{it}, c.retry.Delay(int(it.deliveries)), "dead_letter")
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
