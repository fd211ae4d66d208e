package channel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/backoff"
)

// Defaults for DispatcherConfig.
const (
	BatchMaxDefault      = 64
	ConcurrencyDefault   = 16
	LeaseDefault         = time.Minute
	PollIntervalDefault  = 100 * time.Millisecond
	BackoffBaseDefault   = 200 * time.Millisecond
	BackoffMaxDefault    = 30 * time.Second
	AttemptsMaxDefault   = 12
	OutboxTimeoutDefault = 5 * time.Second
	// outboxWriteAttemptsMax bounds how often one outcome is written before
	// it is left to the lease.
	outboxWriteAttemptsMax = 3
	// lastErrorBytesMax bounds the error text kept on an outbox entry.
	lastErrorBytesMax = 512
)

// DispatcherConfig configures a Dispatcher.
type DispatcherConfig struct {
	// BatchMax bounds the dispatches claimed per poll and held (claimed,
	// queued or in flight) at once. If <= 0, 64 is used.
	BatchMax int
	// Concurrency bounds parallel partner calls. If <= 0, 16 is used.
	Concurrency int
	// Lease is how long a claim lasts; a dispatch claimed by an instance
	// that died, or left unstarted when Run stopped, is retried when it
	// ends. It should exceed (BatchMax/Concurrency + 1) × 2 × the client
	// timeout: an attempt is a submit and, after a refusal, a status call.
	// A claim that outlives its lease cannot fail its payout or move it
	// to another channel (see outlast.Dispatch.Claim), but another
	// instance sends it again. If <= 0, a minute is used (30 s for the
	// defaults above, doubled).
	Lease time.Duration
	// PollInterval is the wait after a claim that was not full. If <= 0,
	// 100 ms is used.
	PollInterval time.Duration
	// BackoffBase and BackoffMax shape retries: a payout that failed n
	// times waits uniform [0, min(BackoffMax, BackoffBase×2^(n-1))] (full
	// jitter). If <= 0, 200 ms and 30 s are used.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// AttemptsMax is the number of attempts after which a payout is
	// parked: still retried, about every BackoffMax (uniform in
	// [BackoffMax/2, BackoffMax]), and counted in
	// outlast_dispatch_parked_total, never failed — its outcome is
	// ambiguous and only the partner can settle it. If <= 0, 12 is used.
	AttemptsMax int
	// OutboxTimeout bounds one outbox call. If <= 0, 5 s is used.
	OutboxTimeout time.Duration
	// ConfirmDelay is how long, after a refusal of a payout whose earlier
	// attempt was ambiguous, the partner's "no such payout" is asked
	// again before it is believed: the bank may still be processing that
	// attempt. If <= 0, the client timeout default (3 s) is used.
	ConfirmDelay time.Duration
	// Logger; if nil, slog.Default() is used.
	Logger *slog.Logger
	// Now is the clock for retry times. If nil, time.Now is used.
	Now func() time.Time
	// Rand returns a number in [0, 1] for jitter, as backoff.Policy.Rand:
	// 0 gives the longest delay, 1 the shortest. If nil, math/rand/v2's
	// Float64 is used.
	Rand func() float64
}

func (c DispatcherConfig) withDefaults() DispatcherConfig {
	setInt := func(p *int, def int) {
		if *p <= 0 {
			*p = def
		}
	}
	setDur := func(p *time.Duration, def time.Duration) {
		if *p <= 0 {
			*p = def
		}
	}
	setInt(&c.BatchMax, BatchMaxDefault)
	setInt(&c.Concurrency, ConcurrencyDefault)
	setInt(&c.AttemptsMax, AttemptsMaxDefault)
	setDur(&c.Lease, LeaseDefault)
	setDur(&c.PollInterval, PollIntervalDefault)
	setDur(&c.BackoffBase, BackoffBaseDefault)
	setDur(&c.BackoffMax, BackoffMaxDefault)
	setDur(&c.OutboxTimeout, OutboxTimeoutDefault)
	setDur(&c.ConfirmDelay, TimeoutDefault)
	c.BackoffBase = min(c.BackoffBase, c.BackoffMax)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Dispatcher drains the outbox: it claims due dispatches, submits each
// through the router on the payout's own channel, and records the outcome.
// It never fails a payout on an ambiguous outcome.
type Dispatcher struct {
	outbox outlast.OutboxService
	router *Router
	cfg    DispatcherConfig // defaults applied; written once
	log    *slog.Logger
	// retries spaces a payout's attempts and an outcome's writes; parked
	// spaces the attempts of a parked payout. Written once.
	retries, parked backoff.Policy
}

// NewDispatcher returns a dispatcher; call Run.
func NewDispatcher(outbox outlast.OutboxService, router *Router, cfg DispatcherConfig) *Dispatcher {
	cfg = cfg.withDefaults()
	return &Dispatcher{
		outbox: outbox, router: router, cfg: cfg, log: cfg.Logger,
		retries: backoff.Policy{Base: cfg.BackoffBase, Max: cfg.BackoffMax, Rand: cfg.Rand},
		// Equal jitter keeps a parked payout's period near BackoffMax, as
		// documented, while still spreading them.
		parked: backoff.Policy{Base: cfg.BackoffMax, Max: cfg.BackoffMax, Jitter: 0.5, Rand: cfg.Rand},
	}
}

// Run dispatches until ctx is done. It then stops claiming, lets calls
// already made finish (each bounded by the client's timeout) and records
// their outcomes, and returns nil once every goroutine has stopped. Outbox
// failures are retried with backoff; they never end Run.
func (d *Dispatcher) Run(ctx context.Context) error {
	work := make(chan *outlast.Dispatch, d.cfg.BatchMax)
	// held has a token per dispatch claimed and not yet finished, so no
	// more than BatchMax leases are ever held by this instance.
	held := make(chan struct{}, d.cfg.BatchMax)
	freed := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for range d.cfg.Concurrency {
		wg.Go(func() {
			for dp := range work {
				d.handle(ctx, dp)
				<-held
				signal(freed)
			}
		})
	}
	d.poll(ctx, work, held, freed)
	close(work)
	wg.Wait()
	return nil
}

// poll claims at its own pace: again at once after a full claim, after
// PollInterval otherwise, and with backoff while the outbox fails.
func (d *Dispatcher) poll(ctx context.Context, work chan<- *outlast.Dispatch, held chan struct{}, freed <-chan struct{}) {
	// Claim in chunks of at least half a batch: one-at-a-time claims as
	// calls finish would cost a query each.
	claimMin := max(1, d.cfg.BatchMax/2)
	// Ceilings start at PollInterval at least: a failing outbox should
	// not be asked more often than an idle one for long.
	claims := backoff.New(backoff.Policy{Base: max(d.cfg.BackoffBase, d.cfg.PollInterval), Max: d.cfg.BackoffMax, Rand: d.cfg.Rand})
	for ctx.Err() == nil {
		free := cap(held) - len(held)
		if free < claimMin && len(held) > 0 {
			select {
			case <-ctx.Done():
			case <-freed:
			}
			continue
		}
		batch, err := d.claim(ctx, free)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait := claims.Next()
			d.log.Warn("outbox claim failed; backing off", "err", err, "failures", claims.Failures(), "wait", wait)
			claims.Sleep(ctx, wait)
			continue
		}
		claims.Reset()
		for _, dp := range batch {
			held <- struct{}{}
			work <- dp
		}
		if len(batch) < free {
			claims.Sleep(ctx, d.cfg.PollInterval)
		}
	}
}

func (d *Dispatcher) claim(ctx context.Context, limit int) ([]*outlast.Dispatch, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.OutboxTimeout)
	defer cancel()
	batch, err := d.outbox.ClaimDispatches(ctx, limit, d.cfg.Lease)
	if err != nil {
		dispatchOutboxErrorsTotal.WithLabelValues("claim").Inc()
		return nil, err
	}
	if len(batch) > limit { // a misbehaving outbox must not break the bound
		batch = batch[:limit]
	}
	dispatchClaimedTotal.Add(float64(len(batch)))
	return batch, nil
}

// handle makes one attempt and records its outcome.
func (d *Dispatcher) handle(ctx context.Context, dp *outlast.Dispatch) {
	if ctx.Err() != nil || dp == nil || dp.Payout == nil {
		return // not started: the lease brings it back
	}
	p := dp.Payout
	// The call is not cut short by ctx: a call in flight at shutdown
	// finishes within the client's timeout, so its outcome is known and
	// recorded instead of left ambiguous.
	callCtx := context.WithoutCancel(ctx)
	ref, err := d.router.Submit(callCtx, p.Channel, p)
	switch {
	case err == nil:
		d.mark(ctx, p, ref, "dispatched")
	case errors.Is(err, ErrRejected):
		d.confirmRejection(ctx, callCtx, dp, err)
	case errors.Is(err, ErrDisabled):
		d.rebind(ctx, callCtx, dp, err)
	default:
		d.retry(ctx, dp, err)
	}
}

// askStatus asks p's channel whether it holds the payout and acts on the
// answer, the one way a refusal and a disabled channel are settled. After
// an attempt that may still be in the bank's hands, "no such payout" is
// asked again ConfirmDelay later, so an attempt the bank is still
// processing is not taken for absent. No such payout, or failed there, is
// a definitive "not accepted": absent is called with the bank's failure
// reason, if it gave one. Holding it (under a valid partner ref) records
// it dispatched there, logged at level with msg and counted as outcome.
// A status that cannot be read leaves it to be retried on its channel,
// with cause; shutting down during the wait leaves it to its lease.
func (d *Dispatcher) askStatus(ctx, callCtx context.Context, dp *outlast.Dispatch, cause error,
	level slog.Level, msg, outcome string, absent func(bankReason string)) {
	p := dp.Payout
	st, err := d.router.Status(callCtx, p.Channel, p.ID)
	if errors.Is(err, ErrNotFound) && dp.Attempts > 0 {
		if !backoff.Sleep(ctx, d.cfg.ConfirmDelay) {
			return
		}
		st, err = d.router.Status(callCtx, p.Channel, p.ID)
	}
	switch {
	case errors.Is(err, ErrNotFound):
		absent("")
	case err != nil:
		d.retry(ctx, dp, fmt.Errorf("%w; its status could not confirm it holds no such payout: %w", cause, err))
	case st.Status == outlast.StatusFailed:
		absent(st.Reason)
	case !outlast.ValidID(st.PartnerRef):
		d.retry(ctx, dp, fmt.Errorf("%w; yet its status says %s without a valid partner_ref", cause, st.Status))
	default:
		d.log.Log(ctx, level, msg, "payout_id", p.ID, "channel", p.Channel, "cause", outlast.ErrorMessage(cause),
			"partner_status", st.Status, "partner_ref", st.PartnerRef)
		d.mark(ctx, p, st.PartnerRef, outcome)
	}
}

// rebind moves a payout off a channel the operators disabled to the
// healthy channel the router would choose instead, but only once the
// disabled channel's status confirms it holds no such payout (or failed
// it): a payout that may have been accepted there never goes to a second
// bank. A channel that cannot answer, or no healthy channel to go to,
// leaves the payout waiting where it is, as before; one the channel
// holds is recorded as dispatched there.
//
// A channel that is failing (breaker open, ejected) keeps its payouts:
// their retries are the probes that close its breaker again, and without
// them new payouts would never return to it.
func (d *Dispatcher) rebind(ctx, callCtx context.Context, dp *outlast.Dispatch, cause error) {
	p := dp.Payout
	to, ok := d.router.ChooseExcept(append(slices.Clone(dp.Refused), p.Channel))
	if st, known := d.router.State(to); !ok || !known || !st.OK() {
		d.retry(ctx, dp, cause)
		return
	}
	d.askStatus(ctx, callCtx, dp, cause, slog.LevelInfo,
		"payout found at its channel, which cannot take new ones now; recording it as dispatched there", "found_at_channel",
		func(string) {
			d.reroute(ctx, dp, to, fmt.Sprintf("%s cannot take it now (%s) and holds no such payout", p.Channel, outlast.ErrorMessage(cause)))
		})
}

// confirmRejection decides what a partner's refusal means before it fails
// anything. A refusal says only that this call was not accepted; an
// earlier attempt whose answer was lost (a timeout, a 504, a dispatcher
// that died mid-call) may have been, and some partners answer the retry of
// a payout they hold with a 4xx. So the partner's status decides
// (askStatus): no such payout (or failed there) is a definitive "not
// accepted", and the payout goes to the next channel or fails (refused);
// holding it marks it dispatched under the partner's ref; a status that
// cannot be read leaves it to be retried on the same channel, never sent
// to another. The status is asked after every refusal, not only after a
// known ambiguous attempt, because a dispatcher killed mid-call leaves no
// record that its attempt was made (its claim's lease, a minute, had to
// run out first, so that attempt is long answered).
func (d *Dispatcher) confirmRejection(ctx, callCtx context.Context, dp *outlast.Dispatch, refusal error) {
	reason, _ := RejectionReason(refusal)
	d.askStatus(ctx, callCtx, dp, refusal, slog.LevelWarn,
		"partner refused the payout but its status says it holds it; recording it as dispatched", "refusal_overruled",
		func(bankReason string) { d.refused(ctx, dp, cmp.Or(bankReason, reason)) })
}

// mark records that the partner accepted p under ref; outcome labels the
// attempt in outlast_dispatch_outcomes_total.
func (d *Dispatcher) mark(ctx context.Context, p *outlast.Payout, ref, outcome string) {
	dispatchOutcomesTotal.WithLabelValues(p.Channel, outcome).Inc()
	d.write(ctx, "mark", p.ID, func(ctx context.Context) error {
		_, err := d.outbox.MarkDispatched(ctx, p.ID, p.Channel, ref)
		return err
	})
}

// refused settles dp, which its channel confirmed it does not hold (or
// failed): it moves to the channel the router would choose among those
// that have not refused it, in its order, or fails when none is left,
// with a reason naming every channel that refused it. The move, like the
// failure, is fenced by the claim, so a payout never goes to a second
// channel while an attempt on the first may still be accepted.
func (d *Dispatcher) refused(ctx context.Context, dp *outlast.Dispatch, reason string) {
	p := dp.Payout
	refused := append(slices.Clone(dp.Refused), p.Channel)
	to, ok := d.router.ChooseExcept(refused)
	if !ok {
		d.reject(ctx, p, dp.Claim, refusalsReason(dp.Refused, p.Channel, reason))
		return
	}
	d.reroute(ctx, dp, to, "refused by "+p.Channel+": "+reason)
}

// reroute moves dp's payout from its channel, which confirmed it does not
// hold it, to channel to, fenced by the claim.
func (d *Dispatcher) reroute(ctx context.Context, dp *outlast.Dispatch, to, reason string) {
	p := dp.Payout
	dispatchOutcomesTotal.WithLabelValues(p.Channel, "rerouted").Inc()
	d.write(ctx, "reroute", p.ID, func(ctx context.Context) error {
		if _, err := d.outbox.RerouteDispatch(ctx, p.ID, p.Channel, to, reason, dp.Claim); err != nil {
			return err
		}
		dispatchReroutesTotal.WithLabelValues(p.Channel, to).Inc()
		d.log.Warn("moved payout to another channel", "payout_id", p.ID, "from", p.Channel, "to", to, "reason", reason)
		return nil
	})
}

// refusalsReason is the failure reason of a payout every channel refused:
// the last refusal's reason, after the channels that refused it before.
func refusalsReason(earlier []string, last, reason string) string {
	if len(earlier) == 0 {
		return reason
	}
	return fmt.Sprintf("refused by %s, then by %s: %s", strings.Join(earlier, ", then by "), last, reason)
}

// reject fails p, claimed under claim: the partner confirmed it holds no
// such payout, and no other channel is left to try. If the claim was lost
// meanwhile (the lease ran out and another dispatcher sent the payout
// again) the outbox refuses.
func (d *Dispatcher) reject(ctx context.Context, p *outlast.Payout, claim time.Time, reason string) {
	dispatchOutcomesTotal.WithLabelValues(p.Channel, "rejected").Inc()
	d.log.Info("partner rejected payout", "payout_id", p.ID, "channel", p.Channel, "reason", reason)
	d.write(ctx, "reject", p.ID, func(ctx context.Context) error {
		_, err := d.outbox.RejectDispatch(ctx, p.ID, p.Channel, reason, claim)
		return err
	})
}

func (d *Dispatcher) retry(ctx context.Context, dp *outlast.Dispatch, cause error) {
	p := dp.Payout
	delay, parked := d.retryDelay(dp.Attempts, cause)
	dispatchOutcomesTotal.WithLabelValues(p.Channel, "retried").Inc()
	if parked {
		dispatchParkedTotal.WithLabelValues(p.Channel).Inc()
		d.log.Warn("payout stuck: partner outcome still unknown", "payout_id", p.ID, "channel", p.Channel, "attempts", dp.Attempts+1, "err", cause)
	} else {
		d.log.Debug("dispatch ambiguous; will retry", "payout_id", p.ID, "channel", p.Channel, "attempts", dp.Attempts+1, "in", delay, "err", cause)
	}
	notBefore := d.cfg.Now().Add(delay)
	msg := truncate(cause.Error(), lastErrorBytesMax)
	d.write(ctx, "retry", p.ID, func(ctx context.Context) error {
		return d.outbox.RetryDispatch(ctx, p.ID, notBefore, msg)
	})
}

// retryDelay is the wait before the next attempt of a payout that has now
// failed attempts+1 times, and whether it is parked.
func (d *Dispatcher) retryDelay(attempts int, cause error) (time.Duration, bool) {
	if attempts+1 >= d.cfg.AttemptsMax {
		return d.parked.Delay(1), true
	}
	delay := d.retries.Delay(attempts + 1)
	if errors.Is(cause, ErrBreakerOpen) || errors.Is(cause, ErrDisabled) {
		// No point coming back before the breaker lets a call through,
		// or soon after the operators disabled the channel.
		delay = max(delay, min(outlast.ErrorRetryAfter(cause), d.cfg.BackoffMax))
	}
	return delay, false
}

// write records an outcome, trying a few times with short backoff. If the
// outbox stays down the entry keeps its lease and is claimed again when it
// ends; the partner's idempotency on payout id makes that repeat safe.
func (d *Dispatcher) write(ctx context.Context, op, payoutID string, fn func(context.Context) error) {
	// Detached from ctx: an outcome learned during shutdown is still worth
	// writing; OutboxTimeout bounds each try.
	wctx := context.WithoutCancel(ctx)
	b := backoff.Backoff{Policy: d.retries}
	var err error
	for i := range outboxWriteAttemptsMax {
		if i > 0 {
			// On wctx too, so shutdown does not cut the writes short;
			// outboxWriteAttemptsMax bounds what it can add to it.
			b.Wait(wctx)
		}
		cctx, cancel := context.WithTimeout(wctx, d.cfg.OutboxTimeout)
		err = fn(cctx)
		cancel()
		if err == nil {
			return
		}
		dispatchOutboxErrorsTotal.WithLabelValues(op).Inc()
		if outlast.ErrorCode(err) == outlast.ECONFLICT {
			// e.g. a lost claim: the payout is another claim's to settle.
			d.log.Warn("dispatch outcome refused by the ledger; leaving the payout as it is", "op", op, "payout_id", payoutID, "err", err)
			return
		}
		if code := outlast.ErrorCode(err); code != outlast.EUNAVAILABLE && code != outlast.EINTERNAL {
			break // e.g. ENOTFOUND: trying again cannot help
		}
	}
	d.log.Error("recording dispatch outcome failed; the lease will bring it back", "op", op, "payout_id", payoutID, "err", err)
}

// signal does a non-blocking send on a 1-buffered channel.
func signal(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
