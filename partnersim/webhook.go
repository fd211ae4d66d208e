package partnersim

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/backoff"
)

// bankDispatchedEvent is the optional webhook sent when a payout is
// accepted.
const bankDispatchedEvent = "dispatched"

// idleWaitMax bounds how long an idle webhook worker sleeps before looking
// at the queue again, so an injected clock that jumps is noticed.
const idleWaitMax = 100 * time.Millisecond

// responseDrainBytes bounds what is read from a webhook response.
const responseDrainBytes = 4 << 10

// event is a webhook body (DESIGN.md §7).
type event struct {
	EventID    string    `json:"event_id"`
	PayoutID   string    `json:"payout_id"`
	PartnerRef string    `json:"partner_ref"`
	Status     string    `json:"status"`
	Reason     string    `json:"reason,omitempty"`
	OccurredAt time.Time `json:"occurred_at"`
}

// delivery is one webhook on its way. then holds deliveries that may start
// only once this one was acknowledged (a duplicate, a held-back
// "dispatched"); they count in Bank.live from the moment they exist.
type delivery struct {
	payoutID string
	ack      Ack // what acknowledging it tells the receiver
	body     []byte
	attempts int
	at       time.Time
	then     []*delivery
	acked    bool // acknowledged; guarded by Bank.mu
}

// deliveryHeap orders deliveries by due time.
type deliveryHeap []*delivery

func (h deliveryHeap) Len() int           { return len(h) }
func (h deliveryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h deliveryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *deliveryHeap) Push(x any)        { *h = append(*h, x.(*delivery)) }
func (h *deliveryHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return d
}

// newDeliveryLocked builds the webhook reporting status for p, with its
// duplicate chained behind it when Faults.DuplicateRate says so.
func (b *Bank) newDeliveryLocked(p *payout, status string, occurredAt time.Time, f Faults) *delivery {
	ev := event{
		EventID: "evt-" + outlast.NewID(), PayoutID: p.id, PartnerRef: p.ref,
		Status: status, OccurredAt: occurredAt.UTC(),
	}
	if status == bankFailed {
		ev.Reason = p.reason
	}
	body, err := json.Marshal(ev)
	if err != nil {
		panic(fmt.Sprintf("partnersim: marshal event: %v", err)) // plain strings and a time: cannot fail
	}
	ack := Ack{EventID: ev.EventID, PayoutID: p.id, Status: outlast.PayoutStatus(status)}
	d := &delivery{payoutID: p.id, ack: ack, body: body}
	b.live++
	if b.chance(f.DuplicateRate) {
		d.then = append(d.then, &delivery{payoutID: p.id, ack: ack, body: body})
		b.live++
		b.stats.WebhooksDuplicated++
	}
	return d
}

// pushLocked queues d, due at at, and wakes a worker.
func (b *Bank) pushLocked(d *delivery, at time.Time) {
	d.at = at
	heap.Push(&b.queue, d)
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// webhookWorker delivers due webhooks one at a time until ctx is done;
// Config.WebhookConcurrency of them run.
func (b *Bank) webhookWorker(ctx context.Context) {
	timer := time.NewTimer(idleWaitMax)
	defer timer.Stop()
	for ctx.Err() == nil {
		d, wait := b.nextDelivery()
		if d != nil {
			err := b.deliver(ctx, d)
			b.finish(d, err, ctx.Err() != nil)
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		case <-timer.C:
		}
	}
}

// nextDelivery pops a due delivery, or says how long to wait for one.
func (b *Bank) nextDelivery() (*delivery, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		return nil, idleWaitMax
	}
	now := b.now()
	if wait := b.queue[0].at.Sub(now); wait > 0 {
		return nil, min(wait, idleWaitMax)
	}
	d := heap.Pop(&b.queue).(*delivery)
	if len(b.queue) > 0 && !b.queue[0].at.After(now) {
		select { // more is due: let another worker take it
		case b.wake <- struct{}{}:
		default:
		}
	}
	return d, 0
}

// deliver makes one signed attempt; nil means the service acknowledged.
func (b *Bank) deliver(ctx context.Context, d *delivery) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.cfg.WebhookURL, bytes.NewReader(d.body))
	if err != nil {
		return fmt.Errorf("build webhook request: %w", err)
	}
	// Signed per attempt: a retry hours later must not carry a timestamp
	// the receiver refuses as stale.
	ts := b.now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(outlast.HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(outlast.HeaderSignature, outlast.Sign(b.cfg.Secret, ts, d.body))
	resp, err := b.client.Do(req)
	if err != nil {
		return fmt.Errorf("post webhook: %w", err)
	}
	defer resp.Body.Close()
	drain(resp.Body, responseDrainBytes)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook answered %d", resp.StatusCode)
	}
	return nil
}

// finish records the outcome of an attempt: acknowledged deliveries release
// what was chained behind them; others are scheduled again, forever, as
// banks do. An attempt cut short by Run stopping is queued again as due
// without counting as a retry.
func (b *Bank) finish(d *delivery, err error, stopping bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if err == nil {
		d.acked = true
		b.live--
		b.stats.WebhooksSent++
		b.acks = append(b.acks, d.ack)
		for _, next := range d.then {
			b.pushLocked(next, now)
		}
		d.then = nil
		return
	}
	if stopping && errors.Is(err, context.Canceled) {
		b.pushLocked(d, now)
		return
	}
	d.attempts++
	b.stats.WebhooksRetried++
	delay := b.webhookBackoffLocked(d.attempts)
	b.log.Debug("webhook failed, will retry", "payout_id", d.payoutID, "attempts", d.attempts, "in", delay, "err", err)
	b.pushLocked(d, now.Add(delay))
}

// webhookBackoffLocked is the wait after a webhook's attempts-th failure.
// It takes equal jitter (uniform in the upper half of each ceiling), not
// the full jitter Outlast's own loops use: this imitates a bank, and banks
// do not redeliver a failed webhook at once, so neither does the
// simulation, lest the chaos lab load the service as no partner would.
// The random half still spreads the retries of an outage's backlog.
// rng is why mu must be held.
func (b *Bank) webhookBackoffLocked(attempts int) time.Duration {
	p := backoff.Policy{Base: b.cfg.WebhookBackoffBase, Max: b.cfg.WebhookBackoffMax, Jitter: 0.5, Rand: b.rng.Float64}
	return p.Delay(attempts)
}
