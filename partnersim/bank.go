// Package partnersim simulates a partner bank for demos, tests and the chaos
// lab. It speaks the partner protocol of DESIGN.md §7: POST /payouts
// (idempotent on payout id), GET /payouts/{payout_id}, GET /records, and
// signed webhooks to the service that are retried until acknowledged. Faults
// (errors, ambiguous answers, latency, outages, dropped, duplicated and
// reordered webhooks, rejections) can be changed while it runs through
// SetFaults or PUT /faults.
//
// A Bank keeps everything in memory, bounded by Config.PayoutsMax. It pays a
// payout id at most once, however often it is submitted.
//
// Test hooks: a destination starting with "REJECT" is always refused with
// 422, and one starting with "FAIL" is accepted and always settles failed.
package partnersim

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outlast/outlast"
)

// Defaults for Config.
const (
	PayDelayDefault           = 200 * time.Millisecond
	PayoutsMaxDefault         = 1_000_000
	WebhookQueueMaxDefault    = 100_000
	WebhookConcurrencyDefault = 8
	WebhookTimeoutDefault     = 5 * time.Second
	WebhookBackoffBaseDefault = 100 * time.Millisecond
	WebhookBackoffMaxDefault  = 10 * time.Second
)

// Config configures a Bank. Only WebhookURL and Secret are needed for
// webhooks; the zero value is a well-behaved bank that sends none.
type Config struct {
	// Name prefixes partner refs and labels logs; it should be a valid
	// outlast id. If empty, "bank" is used.
	Name string
	// WebhookURL receives the bank's notifications. If empty, no webhooks
	// are queued (and none counted as dropped).
	WebhookURL string
	// Secret signs webhooks (outlast.Sign).
	Secret []byte
	// PayDelay is how long an accepted payout takes to settle. If <= 0,
	// 200 ms is used.
	PayDelay time.Duration
	// FailRate is the share of accepted payouts that settle failed.
	FailRate float64
	// Faults are the initial faults; see SetFaults.
	Faults Faults
	// Seed seeds fault and failure decisions. If 0, a random seed is used.
	Seed int64
	// Logger; if nil, slog.Default() is used.
	Logger *slog.Logger
	// Now is the clock for settlement, event times and signatures. If nil,
	// time.Now is used.
	Now func() time.Time
	// PayoutsMax bounds the payouts (accepted or rejected) held in memory;
	// new ones beyond it are answered 503. If <= 0, 1,000,000 is used.
	PayoutsMax int
	// WebhookQueueMax bounds webhooks waiting or being retried; settlement
	// pauses while the queue is full rather than lose a notification. If
	// <= 0, 100,000 is used.
	WebhookQueueMax int
	// WebhookConcurrency bounds parallel webhook calls. If <= 0, 8 is used.
	WebhookConcurrency int
	// WebhookTimeout bounds one webhook call. If <= 0, 5 s is used.
	WebhookTimeout time.Duration
	// WebhookBackoffBase and WebhookBackoffMax shape the capped exponential
	// backoff between attempts of one webhook: after n failures it waits
	// uniform [c/2, c], c = min(WebhookBackoffMax,
	// WebhookBackoffBase×2^(n-1)). If <= 0, 100 ms and 10 s are used.
	WebhookBackoffBase time.Duration
	WebhookBackoffMax  time.Duration
	// HTTPClient sends webhooks. If nil, a client with its own transport is
	// used.
	HTTPClient *http.Client
}

// Payout states inside the bank. "rejected" is never shown: to callers a
// rejected payout id simply was never accepted.
const (
	bankAccepted  = "accepted"
	bankSucceeded = "succeeded"
	bankFailed    = "failed"
	bankRejected  = "rejected"
)

// payout is the bank's record of one payout id. Fields are guarded by
// Bank.mu.
type payout struct {
	id, ref     string
	amount      int64
	currency    string
	destination string
	status      string
	reason      string
	acceptedAt  time.Time
	settleAt    time.Time
	// reorder holds the "dispatched" webhook back until the final one was
	// acknowledged.
	reorder bool
	// dispatched is the "dispatched" webhook sent on acceptance, if any:
	// the final one waits behind it until it is acknowledged, so that
	// without ReorderRate a payout's webhooks arrive in order even with
	// several webhook workers.
	dispatched *delivery
}

// Stats counts what the bank did since New.
type Stats struct {
	Payouts   int   // payouts held in memory (accepted or rejected)
	Unsettled int   // accepted, not yet settled
	Accepted  int64 // distinct payout ids accepted
	Rejected  int64 // distinct payout ids rejected
	// RefusedRepeats counts repeats of accepted payouts answered with a
	// 4xx (Faults.RefuseRepeatRate).
	RefusedRepeats int64
	Succeeded      int64
	Failed         int64
	// WebhooksSent counts acknowledged deliveries (duplicates included).
	WebhooksSent int64
	// WebhooksRetried counts failed attempts that were scheduled again.
	WebhooksRetried int64
	// WebhooksDropped counts final webhooks never sent (Faults.DropRate).
	WebhooksDropped int64
	// WebhooksDuplicated counts extra copies queued (Faults.DuplicateRate).
	WebhooksDuplicated int64
	// WebhooksSkipped counts optional "dispatched" webhooks not queued
	// because the queue was full.
	WebhooksSkipped int64
	// WebhooksPending counts webhooks queued, in flight or waiting behind
	// another one.
	WebhooksPending int
}

// Bank is one simulated partner bank. Its methods are safe for concurrent
// use.
type Bank struct {
	cfg    Config // written once in New
	log    *slog.Logger
	now    func() time.Time
	client *http.Client
	mux    *http.ServeMux
	// wake nudges idle webhook workers when a delivery is queued.
	wake    chan struct{}
	running atomic.Bool

	mu      sync.Mutex
	faults  Faults
	rng     *rand.Rand
	payouts map[string]*payout
	// unsettled holds accepted payout ids in acceptance order; PayDelay is
	// fixed, so that is settlement order too.
	unsettled []string
	queue     deliveryHeap
	// live counts deliveries queued, in flight or chained behind another.
	live    int
	dropped []string
	acks    []Ack // acknowledged webhook deliveries, in order
	stats   Stats
}

// New returns a Bank; call Run to settle payouts and send webhooks.
func New(cfg Config) *Bank {
	cfg = withDefaults(cfg)
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Int64()
	}
	b := &Bank{
		cfg:     cfg,
		log:     cfg.Logger.With("bank", cfg.Name),
		now:     cfg.Now,
		client:  cfg.HTTPClient,
		wake:    make(chan struct{}, cfg.WebhookConcurrency),
		faults:  cfg.Faults.clamp(),
		rng:     rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15)),
		payouts: make(map[string]*payout),
	}
	b.mux = b.routes()
	return b
}

func withDefaults(cfg Config) Config {
	if cfg.Name == "" {
		cfg.Name = "bank"
	}
	if cfg.PayDelay <= 0 {
		cfg.PayDelay = PayDelayDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PayoutsMax <= 0 {
		cfg.PayoutsMax = PayoutsMaxDefault
	}
	if cfg.WebhookQueueMax <= 0 {
		cfg.WebhookQueueMax = WebhookQueueMaxDefault
	}
	if cfg.WebhookConcurrency <= 0 {
		cfg.WebhookConcurrency = WebhookConcurrencyDefault
	}
	if cfg.WebhookTimeout <= 0 {
		cfg.WebhookTimeout = WebhookTimeoutDefault
	}
	if cfg.WebhookBackoffBase <= 0 {
		cfg.WebhookBackoffBase = WebhookBackoffBaseDefault
	}
	if cfg.WebhookBackoffMax <= 0 {
		cfg.WebhookBackoffMax = WebhookBackoffMaxDefault
	}
	if cfg.HTTPClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = cfg.WebhookConcurrency
		cfg.HTTPClient = &http.Client{Transport: tr}
	}
	return cfg
}

// Name returns the bank's name.
func (b *Bank) Name() string { return b.cfg.Name }

// SetFaults replaces the faults; out-of-range values are clamped.
func (b *Bank) SetFaults(f Faults) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.faults = f.clamp()
}

// Faults returns the current faults.
func (b *Bank) Faults() Faults {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.faults
}

// Stats returns a snapshot of the counters.
func (b *Bank) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.Payouts = len(b.payouts)
	s.Unsettled = len(b.unsettled)
	s.WebhooksPending = b.live
	return s
}

// DroppedPayouts returns, in the order they were dropped, the ids of
// payouts whose final webhook was dropped (Faults.DropRate): the service
// learns their outcome only by asking (GET /payouts/{id}).
func (b *Bank) DroppedPayouts() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.dropped)
}

// Ack is a webhook delivery the receiver acknowledged (answered 2xx): from
// then on the bank considers it told, and never sends it again.
type Ack struct {
	EventID  string
	PayoutID string
	Status   outlast.PayoutStatus
}

// Acknowledged returns every acknowledged webhook delivery, in order
// (a duplicate delivered twice is there twice): what the chaos lab holds
// the receiver to — an acknowledged notification must never be lost.
func (b *Bank) Acknowledged() []Ack {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.acks)
}

// Records returns what /records serves: every settled payout, by id.
func (b *Bank) Records() []outlast.PartnerRecord {
	b.mu.Lock()
	recs := make([]outlast.PartnerRecord, 0, len(b.payouts)-len(b.unsettled))
	for _, p := range b.payouts {
		if p.status == bankSucceeded || p.status == bankFailed {
			recs = append(recs, outlast.PartnerRecord{
				PayoutID: p.id, PartnerRef: p.ref, Amount: p.amount,
				Currency: p.currency, Status: outlast.PayoutStatus(p.status),
			})
		}
	}
	b.mu.Unlock()
	slices.SortFunc(recs, func(a, b outlast.PartnerRecord) int { return strings.Compare(a.PayoutID, b.PayoutID) })
	return recs
}

// Run settles payouts and sends webhooks until ctx is done, then returns
// nil once every goroutine it started has stopped. Webhooks in flight at
// that moment stay queued for the next Run. Only one Run may be active.
func (b *Bank) Run(ctx context.Context) error {
	if !b.running.CompareAndSwap(false, true) {
		return errors.New("partnersim: bank is already running")
	}
	defer b.running.Store(false)
	var wg sync.WaitGroup
	wg.Go(func() { b.settleLoop(ctx) })
	if b.cfg.WebhookURL != "" {
		for range b.cfg.WebhookConcurrency {
			wg.Go(func() { b.webhookWorker(ctx) })
		}
	}
	wg.Wait()
	return nil
}

// settleTick is how often settlement looks for due payouts: fine enough
// that a payout settles within a tenth of PayDelay, coarse enough to cost
// nothing.
func (b *Bank) settleTick() time.Duration {
	return min(max(b.cfg.PayDelay/10, 5*time.Millisecond), 100*time.Millisecond)
}

func (b *Bank) settleLoop(ctx context.Context) {
	t := time.NewTicker(b.settleTick())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b.settleDue()
		}
	}
}

// deliveriesPerSettlementMax is the most webhooks one settlement can queue:
// the final one, its duplicate, a held-back "dispatched" and its duplicate.
const deliveriesPerSettlementMax = 4

func (b *Bank) settleDue() {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	n := 0
	for n < len(b.unsettled) {
		p := b.payouts[b.unsettled[n]]
		if p.settleAt.After(now) {
			break
		}
		if b.webhooksOn() && b.live+deliveriesPerSettlementMax > b.cfg.WebhookQueueMax {
			break // a full queue pauses settlement; nothing is lost
		}
		b.settleLocked(p, now)
		n++
	}
	clear(b.unsettled[:n])
	b.unsettled = b.unsettled[n:]
}

func (b *Bank) settleLocked(p *payout, now time.Time) {
	f := b.faults
	if strings.HasPrefix(p.destination, "FAIL") || b.chance(b.cfg.FailRate) {
		p.status, p.reason = bankFailed, "beneficiary account cannot receive funds"
		b.stats.Failed++
	} else {
		p.status = bankSucceeded
		b.stats.Succeeded++
	}
	if !b.webhooksOn() {
		return
	}
	var dispatched *delivery
	if p.reorder {
		dispatched = b.newDeliveryLocked(p, bankDispatchedEvent, p.acceptedAt, f)
	}
	if b.chance(f.DropRate) {
		b.dropped = append(b.dropped, p.id)
		b.stats.WebhooksDropped++
		b.log.Debug("dropping webhook", "payout_id", p.id, "status", p.status)
		if dispatched != nil {
			b.pushLocked(dispatched, now)
		}
		return
	}
	final := b.newDeliveryLocked(p, p.status, now, f)
	if dispatched != nil {
		final.then = append(final.then, dispatched)
	}
	first := p.dispatched
	p.dispatched = nil // settled: nothing else waits on it
	if first != nil && !first.acked {
		first.then = append(first.then, final)
		return
	}
	b.pushLocked(final, now)
}

func (b *Bank) webhooksOn() bool { return b.cfg.WebhookURL != "" }

// chance reports true with probability rate. Callers hold mu (rng is not
// safe for concurrent use).
func (b *Bank) chance(rate float64) bool {
	return rate > 0 && b.rng.Float64() < rate
}

// ServeHTTP serves the partner protocol, /faults and /healthz.
func (b *Bank) ServeHTTP(w http.ResponseWriter, r *http.Request) { b.mux.ServeHTTP(w, r) }

// drain reads and discards at most n bytes so keep-alive connections can be
// reused.
func drain(r io.Reader, n int64) { _, _ = io.Copy(io.Discard, io.LimitReader(r, n)) }

var _ http.Handler = (*Bank)(nil)
