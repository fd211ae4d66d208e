package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/outlast/outlast"
)

// headerCount carries the number of notifications in a batch message, so a
// truncated or foreign body is detected on decode.
const headerCount = "Outlast-Count"

var (
	errClosed    = errors.New("notification log closed")
	errQueueFull = errors.New("append queue full")
)

// request is one Append waiting for its batch's PubAck.
type request struct {
	channel string
	data    []byte     // the notification's JSON, encoded by the caller's goroutine
	done    chan error // buffered 1: the writer never blocks on a caller that left
}

// Append makes n durable: it returns nil only once the batch holding n is
// stored and fsync'd (or replicated) by JetStream. Concurrent calls are
// group-committed into one message. If the queue is full, the log is closed
// or the broker does not acknowledge within AckTimeout, it returns
// EUNAVAILABLE so the caller can fall back to the database inbox. If ctx ends
// first it returns EUNAVAILABLE too, though n may still be written (applying
// is idempotent).
func (l *Log) Append(ctx context.Context, n *outlast.Notification) error {
	r, err := newRequest(n)
	if err != nil {
		return err
	}
	if err := l.enqueue(r); err != nil {
		return err
	}
	// The writer bounds its own wait for an ack, but a request may first
	// wait for an inflight slot; this timer keeps the caller's total wait
	// within AckTimeout whatever is queued ahead of it.
	timer := time.NewTimer(l.cfg.AckTimeout)
	defer timer.Stop()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		l.countFailed("canceled", 1)
		return outlast.Unavailable(ctx.Err(), retryAfter, "notification log unavailable")
	case <-timer.C:
		l.countFailed("timeout", 1)
		return outlast.Unavailable(fmt.Errorf("append: not acknowledged within %s", l.cfg.AckTimeout), retryAfter, "notification log unavailable")
	}
}

// newRequest validates and encodes n in the caller's goroutine, so the
// single writer only concatenates.
func newRequest(n *outlast.Notification) (*request, error) {
	if n == nil {
		return nil, outlast.Errorf(outlast.EINVALID, "notification is required")
	}
	if err := n.Validate(); err != nil {
		return nil, err
	}
	data, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("jetstream: encode notification: %w", err)
	}
	return &request{channel: n.Channel, data: data, done: make(chan error, 1)}, nil
}

// enqueue hands r to the writer without ever waiting: a full queue means the
// log is behind, and the caller is better served by the inbox right now.
func (l *Log) enqueue(r *request) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.countFailed("closed", 1)
		return outlast.Unavailable(errClosed, retryAfter, "notification log unavailable")
	}
	select {
	case l.queue <- r:
		return nil
	default:
		l.countFailed("queue_full", 1)
		return outlast.Unavailable(errQueueFull, retryAfter, "notification log unavailable")
	}
}

func (l *Log) countFailed(reason string, n int) {
	appendErrorsTotal.WithLabelValues(reason).Add(float64(n))
	l.stats.appendErrors.Add(uint64(n))
}

// writer is the group-commit goroutine. It takes whatever is queued, up to
// BatchMax, and publishes it as one message per channel.
//
// A JetStream stream stores (and, with SyncAlways, fsyncs) its messages one
// at a time, so throughput is fsyncs/s × notifications per message. Hence
// at most one partly filled batch is in flight: while it awaits its PubAck,
// the next one keeps gathering. Only full batches use the other InflightMax
// slots to pipeline. Measured on the embedded server (bench_test.go), eight
// partial batches in flight carried about a quarter as many notifications
// per message, and per second, as one.
func (l *Log) writer() {
	defer l.writerWG.Done()
	buf := make([]*request, 0, l.cfg.BatchMax)
	var carry *request // taken from the queue but did not fit the last batch
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case <-l.stopCtx.Done():
				l.failQueued()
				return
			case first = <-l.queue:
			}
		}
		if !l.acquire() {
			l.fail([]*request{first}, "closed", errClosed)
			l.failQueued()
			return
		}
		var bodyBytes int
		buf, carry, bodyBytes = l.gather(buf[:0], first, 0)
		partial := false
		if carry == nil && len(buf) < l.cfg.BatchMax {
			var ok bool
			if buf, carry, partial, ok = l.awaitTurn(buf, bodyBytes); !ok {
				l.release()
				l.fail(buf, "closed", errClosed)
				l.failQueued()
				return
			}
		}
		l.publishGroups(groupByChannel(buf), partial)
		clear(buf) // the groups own the requests now
	}
}

// awaitTurn waits for the partial-batch token, adding requests as they
// arrive; if the batch fills up first it goes without the token. ok is false
// once the log is closing.
func (l *Log) awaitTurn(batch []*request, bodyBytes int) (_ []*request, carry *request, partial, ok bool) {
	for {
		select {
		case l.partial <- struct{}{}:
			return batch, nil, true, true
		case r := <-l.queue:
			batch, carry, bodyBytes = l.gather(batch, r, bodyBytes)
			if carry != nil || len(batch) == l.cfg.BatchMax {
				return batch, carry, false, true
			}
		case <-l.stopCtx.Done():
			return batch, nil, false, false
		}
	}
}

// acquire takes an inflight slot, or reports false once the log is closing.
func (l *Log) acquire() bool {
	select {
	case l.inflight <- struct{}{}:
		return true
	case <-l.stopCtx.Done():
		return false
	}
}

func (l *Log) release() { <-l.inflight }

// gather adds r and then queued requests to batch without waiting, up to
// BatchMax and the broker's payload limit. The request that would overflow
// the payload is returned as carry for the next batch.
func (l *Log) gather(batch []*request, r *request, bodyBytes int) (_ []*request, carry *request, _ int) {
	if bodyBytes == 0 {
		bodyBytes = 1 // '['
	}
	for {
		if len(batch) > 0 && bodyBytes+len(r.data)+1 > l.payloadMax {
			return batch, r, bodyBytes
		}
		batch = append(batch, r)
		bodyBytes += len(r.data) + 1 // ',' or ']'
		if len(batch) == l.cfg.BatchMax {
			return batch, nil, bodyBytes
		}
		select {
		case r = <-l.queue:
		default:
			return batch, nil, bodyBytes
		}
	}
}

// groupByChannel splits batch into one slice per channel, in first-seen
// order, so each message lands on its channel's subject.
func groupByChannel(batch []*request) [][]*request {
	groups := make([][]*request, 0, 2)
next:
	for _, r := range batch {
		for i, g := range groups {
			if g[0].channel == r.channel {
				groups[i] = append(g, r)
				continue next
			}
		}
		groups = append(groups, []*request{r})
	}
	return groups
}

// batchState is shared by the messages of one batch; the last one to finish
// hands back the partial-batch token.
type batchState struct {
	left    atomic.Int32
	partial bool // holds the token
}

func (l *Log) finish(st *batchState) {
	if st.left.Add(-1) == 0 && st.partial {
		<-l.partial
	}
}

// publishGroups publishes one message per group; the caller holds one
// inflight slot, and each further group takes another.
func (l *Log) publishGroups(groups [][]*request, partial bool) {
	st := &batchState{partial: partial}
	st.left.Store(int32(len(groups)))
	for i, g := range groups {
		if i > 0 && !l.acquire() {
			for _, rest := range groups[i:] {
				l.fail(rest, "closed", errClosed)
				l.finish(st)
			}
			return
		}
		l.publish(g, st)
	}
}

// publish sends group as one message; it owns one inflight slot, released
// when the ack arrives or the publish fails.
func (l *Log) publish(group []*request, st *batchState) {
	if l.cfg.beforePublish != nil {
		l.cfg.beforePublish()
	}
	if !l.nc.IsConnected() {
		l.release()
		l.fail(group, "disconnected", nats.ErrDisconnected)
		l.finish(st)
		return
	}
	msg := nats.NewMsg(l.subjectBase + ".notifications." + subjectToken(group[0].channel))
	msg.Data = encodeBatch(group)
	msg.Header.Set(headerCount, strconv.Itoa(len(group)))
	start := time.Now()
	// The message id lets JetStream drop a copy if the client library
	// resends the message (it retries on "no responders" during a leader
	// election).
	paf, err := l.js.PublishMsgAsync(msg, jetstream.WithMsgID(nuid.Next()), jetstream.WithExpectStream(l.streamName))
	if err != nil {
		l.release()
		l.fail(group, "publish", err)
		l.finish(st)
		return
	}
	l.writerWG.Add(1)
	go l.awaitAck(paf, group, st, start)
}

// awaitAck completes group's callers once the PubAck, an error or the
// timeout arrives.
func (l *Log) awaitAck(paf jetstream.PubAckFuture, group []*request, st *batchState, start time.Time) {
	defer l.writerWG.Done()
	defer l.finish(st)
	defer l.release()
	timer := time.NewTimer(l.cfg.AckTimeout)
	defer timer.Stop()
	select {
	case <-paf.Ok():
		appendAckSeconds.Observe(time.Since(start).Seconds())
		appendsTotal.Inc()
		notificationsAppendedTotal.Add(float64(len(group)))
		appendBatchNotifications.Observe(float64(len(group)))
		l.stats.appends.Add(1)
		l.stats.appended.Add(uint64(len(group)))
		for _, r := range group {
			r.done <- nil
		}
	case err := <-paf.Err():
		reason := "publish"
		if errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
			reason = "timeout"
		}
		l.fail(group, reason, err)
	case <-timer.C:
		l.fail(group, "timeout", fmt.Errorf("no ack within %s", l.cfg.AckTimeout))
	}
}

func (l *Log) fail(group []*request, reason string, cause error) {
	l.log.Warn("notification append failed", "reason", reason, "notifications", len(group), "err", cause)
	l.countFailed(reason, len(group))
	err := outlast.Unavailable(fmt.Errorf("append: %w", cause), retryAfter, "notification log unavailable")
	for _, r := range group {
		r.done <- err
	}
}

// failQueued fails whatever is still queued once the log is closing. No new
// request can arrive: Close set closed under the write lock first.
func (l *Log) failQueued() {
	var left []*request
	for {
		select {
		case r := <-l.queue:
			left = append(left, r)
		default:
			if len(left) > 0 {
				l.fail(left, "closed", errClosed)
			}
			return
		}
	}
}

// encodeBatch joins the notifications' JSON into one array.
func encodeBatch(group []*request) []byte {
	size := 2
	for _, r := range group {
		size += len(r.data) + 1
	}
	body := make([]byte, 0, size)
	body = append(body, '[')
	for i, r := range group {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, r.data...)
	}
	return append(body, ']')
}

// decodeBatch is encodeBatch's inverse, checked against the count header.
func decodeBatch(data []byte, header nats.Header) ([]*outlast.Notification, error) {
	var ns []*outlast.Notification
	if err := json.Unmarshal(data, &ns); err != nil {
		return nil, fmt.Errorf("decode batch: %w", err)
	}
	if want := header.Get(headerCount); want != "" && want != strconv.Itoa(len(ns)) {
		return nil, fmt.Errorf("decode batch: %d notifications, header says %s", len(ns), want)
	}
	for i, n := range ns {
		if n == nil {
			return nil, fmt.Errorf("decode batch: notification %d is null", i)
		}
	}
	return ns, nil
}
