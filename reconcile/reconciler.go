package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/backoff"
)

// Defaults for Config fields left at their zero value.
const (
	AfterDefault          = time.Minute
	LostAfterDefault      = time.Hour
	EveryDefault          = 10 * time.Second
	BatchDefault          = 100
	QueryRateDefault      = 20.0
	DeadLettersMaxDefault = 100
)

// Answer is a partner's answer to a status query: dispatched (the bank
// accepted the payout and is paying it), succeeded or failed.
type Answer struct {
	PartnerRef string
	Status     outlast.PayoutStatus
	Reason     string
}

// Ledger is what the reconciler reads and writes: the payouts that have
// not moved, and the one apply path every notification takes.
type Ledger interface {
	outlast.StaleService
	OpenExceptions(ctx context.Context) (map[outlast.ExceptionKind]int, error)
	FileException(ctx context.Context, e *outlast.Exception) (*outlast.Exception, bool, error)
	Payout(ctx context.Context, id string) (*outlast.Payout, outlast.Freshness, error)
	Apply(ctx context.Context, source outlast.Source, ns []*outlast.Notification) ([]outlast.ApplyResult, error)
}

// Config configures a Reconciler. Ledger and Status are required.
type Config struct {
	Ledger Ledger
	// Status asks channel's partner about a payout. An error with code
	// ENOTFOUND means the partner says it has no such payout.
	Status func(ctx context.Context, channel, payoutID string) (*Answer, error)
	// DeadLetters, if set, are the stores of dead-lettered notifications
	// (the log's, the inbox's): each cycle replays those whose cause is
	// gone.
	DeadLetters []outlast.DeadLetters
	// After is how long a payout stays dispatched with no final
	// notification before its partner is asked. If <= 0, AfterDefault.
	After time.Duration
	// LostAfter is how long a payout stays dispatched, its bank saying it
	// has no such payout, before it is filed as an unknown_to_bank
	// exception (it is asked about every cycle meanwhile: a bank may be
	// slow to show what it accepted). If <= 0, LostAfterDefault.
	LostAfter time.Duration
	// Every is the time between cycles, give or take a fifth (jitter,
	// so that instances do not ask in step). If <= 0, EveryDefault.
	Every time.Duration
	// Batch bounds the payouts asked about per cycle. If <= 0,
	// BatchDefault; at most outlast.StalePayoutsMax.
	Batch int
	// QueryRate bounds the status queries per second, per instance. If
	// <= 0, QueryRateDefault.
	QueryRate float64
	// DeadLettersMax bounds the dead letters looked at per store and cycle.
	// If <= 0, DeadLettersMaxDefault; at most outlast.DeadLettersMax.
	DeadLettersMax int
	Logger         *slog.Logger     // if nil, slog.Default()
	Now            func() time.Time // if nil, time.Now
	Rand           func() float64   // jitter source in [0, 1); if nil, math/rand/v2
}

// Reconciler repairs what notifications left undone: every Every it asks
// the partners about payouts dispatched longer than After and applies
// their answers as notifications from outlast.FromReconciler.
//
// Every instance runs one. That is safe: an answer becomes a notification
// whose event id is the payout's and the status's, so the same answer
// applied by two instances, or racing the late webhook it stands in for,
// is a counted no-op. It is not free: n instances may each ask about the
// same stuck payout once per cycle; the jitter spreads them, and the
// first answer applied takes the payout out of every instance's next
// list.
type Reconciler struct {
	cfg Config // defaults applied; written once

	mu sync.Mutex // guards next
	// next is where the next cycle starts: after the last payout a full
	// batch asked about, so payouts a bank keeps failing to answer for
	// do not hold back those behind them; the zero cursor once a cycle
	// reached the end.
	next outlast.StaleCursor
}

// New returns a reconciler; it starts with Run.
func New(cfg Config) (*Reconciler, error) {
	if cfg.Ledger == nil || cfg.Status == nil {
		return nil, errors.New("reconcile: Ledger and Status are required")
	}
	if cfg.After <= 0 {
		cfg.After = AfterDefault
	}
	if cfg.LostAfter <= 0 {
		cfg.LostAfter = LostAfterDefault
	}
	if cfg.Every <= 0 {
		cfg.Every = EveryDefault
	}
	if cfg.Batch <= 0 {
		cfg.Batch = BatchDefault
	}
	cfg.Batch = min(cfg.Batch, outlast.StalePayoutsMax)
	if cfg.QueryRate <= 0 {
		cfg.QueryRate = QueryRateDefault
	}
	if cfg.DeadLettersMax <= 0 {
		cfg.DeadLettersMax = DeadLettersMaxDefault
	}
	cfg.DeadLettersMax = min(cfg.DeadLettersMax, outlast.DeadLettersMax)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	return &Reconciler{cfg: cfg}, nil
}

// Run runs a cycle every Every until ctx is done. A cycle that asked
// about a full batch, all answered, starts the next at once: a backlog (seed 000's
// 22,000 lost notifications) is worked through at QueryRate, not at
// Batch per Every, which would be 10 a second with the defaults.
func (r *Reconciler) Run(ctx context.Context) error {
	backlog := false
	for {
		if !backlog {
			wait := time.Duration(float64(r.cfg.Every) * (0.8 + 0.4*r.cfg.Rand()))
			if !backoff.Sleep(ctx, wait) {
				return ctx.Err()
			}
		}
		rep, err := r.Cycle(ctx)
		if err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("reconciler cycle failed; trying again next cycle", "err", err)
		}
		// After an error, or a query the partner failed to answer, the
		// next cycle waits: a failing ledger or bank is not pressed harder.
		backlog = err == nil && rep.Asked == r.cfg.Batch && rep.Repairs[RepairError] == 0
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// Repairs by kind, the label of outlast_reconcile_repairs_total.
const (
	RepairSucceeded = "succeeded" // the partner paid it: applied
	RepairFailed    = "failed"    // the partner failed it: applied, hold released
	// RepairUnchanged: the partner is still paying it, or the answer was
	// already known (a webhook or another instance got there first).
	RepairUnchanged = "unchanged"
	// RepairNotFound: the partner says it has no such payout. For a
	// dispatched payout that is not a failure by itself (principle 7):
	// it is asked about again next cycle, and counted; its age shows in
	// outlast_reconcile_oldest_age_seconds.
	RepairNotFound = "not_found"
	RepairError    = "error"    // the query failed: asked again next cycle
	RepairConflict = "conflict" // the answer contradicts the ledger: an exception for a human
	RepairRejected = "rejected" // the ledger could not apply the answer
)

// Report is what one cycle did.
type Report struct {
	Asked    int            // status queries made
	Repairs  map[string]int // by Repair* kind
	Replayed int            // dead letters handed back to their path
	Payouts  []string       // ids of the payouts asked about, oldest change first
}

// Cycle runs one cycle: it asks about up to Batch payouts dispatched
// before now-After, going on from where the last full batch stopped, at most QueryRate a second, applies the final answers
// in one batch, replays the dead letters whose cause is gone, and
// updates the age gauges. An error is the ledger's; what one partner
// answered wrongly is counted, not returned.
func (r *Reconciler) Cycle(ctx context.Context) (*Report, error) {
	rep := &Report{Repairs: map[string]int{}}
	now := r.cfg.Now()
	if err := r.measure(ctx, now); err != nil {
		return rep, err
	}
	r.mu.Lock()
	from := r.next
	r.mu.Unlock()
	ps, err := r.cfg.Ledger.StalePayouts(ctx, outlast.StatusDispatched, now.Add(-r.cfg.After), from, r.cfg.Batch)
	if err != nil {
		return rep, err
	}
	next := outlast.StaleCursor{}
	if len(ps) == r.cfg.Batch {
		next = outlast.StaleCursorOf(ps[len(ps)-1])
	}
	r.mu.Lock()
	r.next = next
	r.mu.Unlock()
	ns, err := r.ask(ctx, ps, rep)
	if err != nil {
		return rep, err
	}
	if err := r.apply(ctx, ns, rep); err != nil {
		return rep, err
	}
	rep.Replayed, err = r.replay(ctx)
	return rep, err
}

// queriesInflightMax bounds the status queries in flight at once. A bank
// answers a status query in tens of milliseconds, not microseconds: one
// query at a time would hold the rate to a few dozen a second whatever
// QueryRate says.
const queriesInflightMax = 32

// answer is a partner's reply to one status query.
type answer struct {
	ans *Answer
	err error
}

// ask queries the partner of each payout, starting query i at i/QueryRate
// seconds with at most queriesInflightMax in flight, and returns the final
// answers as notifications, in the order of ps.
func (r *Reconciler) ask(ctx context.Context, ps []*outlast.Payout, rep *Report) ([]*outlast.Notification, error) {
	answers, err := r.query(ctx, ps)
	if err != nil {
		return nil, err
	}
	var ns []*outlast.Notification
	for i, p := range ps {
		rep.Asked++
		rep.Payouts = append(rep.Payouts, p.ID)
		ans, err := answers[i].ans, answers[i].err
		switch {
		case outlast.ErrorCode(err) == outlast.ENOTFOUND:
			r.count(rep, RepairNotFound)
			if r.cfg.Now().Sub(p.UpdatedAt) < r.cfg.LostAfter {
				r.cfg.Logger.Warn("partner has no record of a dispatched payout; asking again next cycle",
					"payout", p.ID, "channel", p.Channel, "dispatched_since", p.UpdatedAt)
				break
			}
			if err := r.fileLost(ctx, p); err != nil {
				return nil, err
			}
		case err != nil:
			r.count(rep, RepairError)
			r.cfg.Logger.Debug("status query failed", "payout", p.ID, "channel", p.Channel, "err", err)
		case !ans.Status.Terminal():
			r.count(rep, RepairUnchanged)
		default:
			ns = append(ns, r.notification(p, ans))
		}
	}
	return ns, nil
}

// fileLost files p, whose bank has said for LostAfter that it has no such
// payout, as an exception for a human (once: later cycles find it filed).
func (r *Reconciler) fileLost(ctx context.Context, p *outlast.Payout) error {
	e, filed, err := r.cfg.Ledger.FileException(ctx, outlast.UnknownToBankException(p, r.cfg.Now()))
	if err != nil {
		return err
	}
	if filed {
		r.cfg.Logger.Warn("partner has had no record of a dispatched payout for too long: filed an exception for a human",
			"payout", p.ID, "channel", p.Channel, "dispatched_since", p.UpdatedAt, "exception", e.ID)
	}
	return nil
}

// query makes the status queries of ask: paced to a schedule, so that the
// time a query takes does not lower the rate, and bounded in flight.
func (r *Reconciler) query(ctx context.Context, ps []*outlast.Payout) ([]answer, error) {
	pace := time.Duration(float64(time.Second) / r.cfg.QueryRate)
	answers := make([]answer, len(ps))
	slots := make(chan struct{}, queriesInflightMax)
	var wg sync.WaitGroup
	defer wg.Wait()
	start := time.Now() // the real clock: the pace is real waiting, whatever Now says
	for i, p := range ps {
		if !backoff.Sleep(ctx, time.Until(start.Add(time.Duration(i)*pace))) {
			return nil, ctx.Err()
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-slots }()
			answers[i].ans, answers[i].err = r.cfg.Status(ctx, p.Channel, p.ID)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return answers, nil
}

// notification is ans as the partner's webhook would have said it.
func (r *Reconciler) notification(p *outlast.Payout, ans *Answer) *outlast.Notification {
	return statusNotification(p.Channel, p.ID, ans, r.cfg.Now())
}

// statusNotification is a partner's answer about a payout (to a status
// query, or in its records) as its webhook would have said it, at now.
// Its event id is the payout's and the status's: the same answer, from
// any instance, cycle or `outlast reconcile`, is one event, applied once.
func statusNotification(channel, payoutID string, ans *Answer, now time.Time) *outlast.Notification {
	now = now.UTC()
	return &outlast.Notification{
		Channel: channel, EventID: "reconcile:" + payoutID + ":" + string(ans.Status), PayoutID: payoutID,
		PartnerRef: ans.PartnerRef, Status: ans.Status, Reason: outlast.CleanText(ans.Reason, outlast.ReasonBytesMax),
		OccurredAt: now, ReceivedAt: now,
	}
}

// apply applies the answers through the path notifications take.
func (r *Reconciler) apply(ctx context.Context, ns []*outlast.Notification, rep *Report) error {
	if len(ns) == 0 {
		return nil
	}
	results, err := r.cfg.Ledger.Apply(ctx, outlast.FromReconciler, ns)
	if err != nil {
		return err
	}
	for i, res := range results {
		kind := repairKind(ns[i], res)
		r.count(rep, kind)
		if kind == RepairConflict || kind == RepairRejected {
			r.cfg.Logger.Warn("partner's answer not applied", "payout", ns[i].PayoutID, "channel", ns[i].Channel,
				"status", ns[i].Status, "outcome", res.Outcome, "reason", res.Reason)
		}
	}
	return nil
}

// repairKind says what applying n did. A duplicate or stale answer that
// left the payout in another status than n's is a conflict seen before:
// the ledger remembers a conflicting event like an applied one, so the
// same answer from another instance or a later cycle is a duplicate, and
// counting it unchanged would hide that the payout is still stuck.
func repairKind(n *outlast.Notification, res outlast.ApplyResult) string {
	switch {
	case res.Outcome == outlast.OutcomeApplied:
		return string(n.Status)
	case res.Outcome == outlast.OutcomeConflict:
		return RepairConflict
	case res.Outcome == outlast.OutcomeRejected:
		return RepairRejected
	case res.Payout != nil && res.Payout.Status != n.Status:
		return RepairConflict
	}
	return RepairUnchanged
}

func (r *Reconciler) count(rep *Report, kind string) {
	rep.Repairs[kind]++
	repairsTotal.WithLabelValues(kind).Inc()
}
