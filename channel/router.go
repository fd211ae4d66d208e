package channel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"github.com/outlast/outlast"
)

// noChannelRetryAfter is what callers are asked to wait when no channel is
// active: an operator has to act, so there is no point coming back sooner.
const noChannelRetryAfter = 5 * time.Second

// breakerRetryAfterMin keeps a breaker's retry hint from being zero when it
// is about to half-open.
const breakerRetryAfterMin = 100 * time.Millisecond

// route is one channel: its client and breaker, both written once, and
// its ejection record.
type route struct {
	client  *Client
	breaker circuitbreaker.CircuitBreaker[any]
	out     outlier // guarded by Router.omu
}

// Router chooses the channel for new payouts and submits through each
// channel's circuit breaker. Choose skips channels that are disabled,
// behind an open breaker or ejected (EjectionConfig), and offers a channel
// back from ejection a growing share of new payouts. It is safe for
// concurrent use.
type Router struct {
	routes map[string]*route // written once in NewRouter
	names  []string          // sorted channel names; written once
	ej     EjectionConfig    // defaults applied; written once

	// omu guards every route's outlier record. Lock order: mu, then omu.
	omu sync.Mutex

	mu sync.RWMutex
	// cfg is the control plane's document in force, a copy of its own:
	// the active channel, fallback order and disabled channels. Before
	// the first document it is the default one.
	cfg *outlast.ControlConfig // guarded by mu
	// boot is the active channel given at start (SetActive), which a
	// config document without an active channel leaves in place.
	boot string // guarded by mu
}

// RouterConfig configures a Router.
type RouterConfig struct {
	// Active is the channel for new payouts given at start (SetActive);
	// "" for none.
	Active string
	// Ejection configures outlier ejection; the zero value uses its
	// defaults.
	Ejection EjectionConfig
}

// NewRouter returns a router over clients (unique, valid names) with active
// as the channel for new payouts, "" for none, and default ejection.
func NewRouter(active string, clients ...*Client) (*Router, error) {
	return NewRouterWith(RouterConfig{Active: active}, clients...)
}

// NewRouterWith returns a router configured by cfg over clients (unique,
// valid names).
func NewRouterWith(cfg RouterConfig, clients ...*Client) (*Router, error) {
	r := &Router{routes: make(map[string]*route, len(clients)), cfg: &outlast.ControlConfig{}, ej: cfg.Ejection.withDefaults()}
	for _, c := range clients {
		if c == nil || !outlast.ValidID(c.Name()) {
			return nil, outlast.Errorf(outlast.EVALIDATION, "channel name must be a valid id")
		}
		if _, dup := r.routes[c.Name()]; dup {
			return nil, outlast.Errorf(outlast.EVALIDATION, "channel %q configured twice", c.Name())
		}
		r.routes[c.Name()] = &route{client: c, breaker: newBreaker(c), out: outlier{shown: routeOK}}
		r.names = append(r.names, c.Name())
		channelEjected.WithLabelValues(c.Name()).Set(0)
		channelReturnShare.WithLabelValues(c.Name()).Set(1)
	}
	slices.Sort(r.names)
	if err := r.SetActive(cfg.Active); err != nil {
		return nil, err
	}
	return r, nil
}

func newBreaker(c *Client) circuitbreaker.CircuitBreaker[any] {
	name := c.Name()
	breakerState.WithLabelValues(name).Set(breakerClosed)
	return circuitbreaker.NewBuilder[any]().
		WithFailureThreshold(uint(c.opts.BreakerFailures)).
		WithSuccessThreshold(1).
		WithDelay(c.opts.BreakerDelay).
		// Breakers of many instances opened by one outage should not all
		// probe the partner at the same instant.
		WithJitterFactor(0.2).
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) {
			breakerState.WithLabelValues(name).Set(stateValue(e.NewState))
		}).
		Build()
}

func stateValue(s circuitbreaker.State) float64 {
	switch s {
	case circuitbreaker.OpenState:
		return breakerOpen
	case circuitbreaker.HalfOpenState:
		return breakerHalfOpen
	}
	return breakerClosed
}

// Channels returns the configured channel names, sorted.
func (r *Router) Channels() []string { return slices.Clone(r.names) }

// SetActive makes name the start-up channel: where new payouts go while
// the control plane's document names no active channel; "" means none,
// and Choose then answers EUNAVAILABLE. The document applied, if any, is
// kept (its disabled channels stay disabled). Payouts already bound to a
// channel stay on it.
func (r *Router) SetActive(name string) error {
	if _, ok := r.routes[name]; name != "" && !ok {
		return outlast.Errorf(outlast.EVALIDATION, "unknown channel %q", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.boot = name
	return nil
}

// Apply takes the control plane's channel settings from c, whole: its
// active channel and fallback order, and which channels are disabled. A
// document that sets no active channel keeps the one given at start. A
// channel the document names but this router lacks is skipped when
// choosing (it is logged by the caller, not refused: the same document
// also carries the maintenance switch, which must apply everywhere).
func (r *Router) Apply(c *outlast.ControlConfig) {
	next := c.Clone()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfg = next
}

// Order returns the channels new payouts may go to, in the order they are
// tried: the document's Order, with the channel given at start where it
// sets no active one, less the channels this router lacks.
func (r *Router) Order() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.orderLocked()
}

func (r *Router) orderLocked() []string {
	return slices.DeleteFunc(r.cfg.Order(r.boot), func(name string) bool { return r.routes[name] == nil })
}

// Disabled reports whether the operators disabled channel name.
func (r *Router) Disabled(name string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ch, named := r.cfg.Channels[name]
	return named && !ch.Enabled
}

// Choose returns the channel for a new payout: the first of Order that
// is neither ejected nor behind an open breaker, where a channel returning
// from ejection is taken only with the chance of its ReturnShare. If none
// is, it is the first returning channel passed over, or else the first of
// Order not ejected, or else the first of Order: the payout waits there
// for the channel to recover. EUNAVAILABLE if Order is empty. Each call
// also logs and counts the channels' routing states that changed.
func (r *Router) Choose(ctx context.Context) (string, error) {
	chosen, ok := r.ChooseExcept(nil)
	if !ok {
		return "", &outlast.Error{Code: outlast.EUNAVAILABLE, Message: "no active partner channel", RetryAfter: noChannelRetryAfter}
	}
	channelChosenTotal.WithLabelValues(chosen).Inc()
	return chosen, nil
}

// ChooseExcept returns the channel for a payout the channels in refused
// definitively refused: the one Choose would pick were they not in
// Order, so a refused payout follows the fallback order and its health
// as a new one does. False if Order has no other channel: only then is
// the payout failed. Like Choose, it logs and counts the channels'
// routing states that changed.
func (r *Router) ChooseExcept(refused []string) (string, bool) {
	order, disabled := r.snapshot()
	order = slices.DeleteFunc(order, func(name string) bool { return slices.Contains(refused, name) })
	if len(order) == 0 {
		return "", false
	}
	now := r.ej.Now()
	r.omu.Lock()
	defer r.omu.Unlock()
	states := make(map[string]RouteState, len(r.names))
	for _, name := range r.names {
		states[name] = r.observeLocked(name, disabled[name], now)
	}
	return r.pickLocked(order, states), true
}

// pickLocked is Choose's decision over states; r.omu is held, which also
// serialises calls to Rand.
func (r *Router) pickLocked(order []string, states map[string]RouteState) string {
	var passed, notEjected string
	for _, name := range order {
		st := states[name]
		if notEjected == "" && st.EjectedUntil.IsZero() {
			notEjected = name
		}
		if !st.OK() {
			continue
		}
		if st.ReturnShare >= 1 || r.ej.Rand() < st.ReturnShare {
			return name
		}
		if passed == "" {
			passed = name
		}
	}
	return cmp.Or(passed, notEjected, order[0])
}

// snapshot returns Order and the channels the operators disabled.
func (r *Router) snapshot() (order []string, disabled map[string]bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	disabled = make(map[string]bool)
	for name, ch := range r.cfg.Channels {
		if !ch.Enabled {
			disabled[name] = true
		}
	}
	return r.orderLocked(), disabled
}

// State returns what the router makes of channel name now, for the
// heartbeat; like Choose, it logs and counts a change of routing state.
func (r *Router) State(name string) (RouteState, bool) {
	if _, ok := r.routes[name]; !ok {
		return RouteState{}, false
	}
	_, disabled := r.snapshot()
	now := r.ej.Now()
	r.omu.Lock()
	defer r.omu.Unlock()
	return r.observeLocked(name, disabled[name], now), true
}

// Client returns the client of channel name.
func (r *Router) Client(name string) (*Client, bool) {
	rt, ok := r.routes[name]
	if !ok {
		return nil, false
	}
	return rt.client, true
}

// BreakerState returns "closed", "open" or "half-open" for channel name.
func (r *Router) BreakerState(name string) (string, bool) {
	rt, ok := r.routes[name]
	if !ok {
		return "", false
	}
	return rt.breaker.State().String(), true
}

// Status asks channel about a payout (Client.Status). It does not go
// through the breaker: it is asked right after the partner answered a
// submit, to find out what that answer meant. An unknown channel answers
// with an error matching ErrAmbiguous.
func (r *Router) Status(ctx context.Context, channel, payoutID string) (*Status, error) {
	rt, ok := r.routes[channel]
	if !ok {
		return nil, unknownChannel(channel)
	}
	return rt.client.Status(ctx, payoutID)
}

// unknownChannel is the EUNAVAILABLE error, matching ErrAmbiguous, for a
// call to a channel the router does not have: a payout bound to it waits.
func unknownChannel(channel string) error {
	return &outlast.Error{
		Code: outlast.EUNAVAILABLE, Message: fmt.Sprintf("channel %q is not configured", channel),
		RetryAfter: noChannelRetryAfter, Err: fmt.Errorf("%w: %w", ErrAmbiguous, ErrUnknownChannel),
	}
}

// Submit hands p to channel through its breaker. A disabled channel is
// sent nothing. An open breaker, like a disabled or an unknown channel,
// answers at once with an EUNAVAILABLE error matching
// ErrAmbiguous and never ErrRejected: a payout is never failed because a
// breaker is open.
func (r *Router) Submit(ctx context.Context, channel string, p *outlast.Payout) (string, error) {
	rt, ok := r.routes[channel]
	if !ok {
		submitsTotal.WithLabelValues(channel, resultUnknownChannel).Inc()
		return "", unknownChannel(channel)
	}
	if r.Disabled(channel) {
		submitsTotal.WithLabelValues(channel, resultDisabled).Inc()
		return "", &outlast.Error{
			Code: outlast.EUNAVAILABLE, Message: fmt.Sprintf("channel %s is disabled by the operators", channel),
			RetryAfter: noChannelRetryAfter, Err: fmt.Errorf("%w: %w", ErrAmbiguous, ErrDisabled),
		}
	}
	if !rt.breaker.TryAcquirePermit() {
		submitsTotal.WithLabelValues(channel, resultBreakerOpen).Inc()
		return "", &outlast.Error{
			Code: outlast.EUNAVAILABLE, Message: fmt.Sprintf("channel %s is failing; its circuit breaker is open", channel),
			RetryAfter: max(rt.breaker.RemainingDelay(), breakerRetryAfterMin),
			Err:        fmt.Errorf("%w: %w", ErrAmbiguous, ErrBreakerOpen),
		}
	}
	ref, err := rt.client.Submit(ctx, p)
	switch {
	case err == nil, errors.Is(err, ErrRejected):
		// A clear answer, yes or no, means the partner is working.
		rt.breaker.RecordSuccess()
		r.recordSubmit(channel, false)
	case ctx.Err() != nil:
		// Our own cancellation says nothing about the partner. (In
		// half-open the permit must be returned, so it counts as a
		// failure there and the breaker probes again later.)
		if !rt.breaker.IsClosed() {
			rt.breaker.RecordFailure()
		}
	default:
		rt.breaker.RecordFailure()
		r.recordSubmit(channel, true)
	}
	return ref, err
}
