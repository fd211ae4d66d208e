package channel

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"
)

// Defaults for EjectionConfig.
const (
	EjectConsecutiveDefault = 5
	EjectBaseDefault        = 10 * time.Second
	EjectMaxDefault         = 5 * time.Minute
	ReturnWindowDefault     = 30 * time.Second
	ReturnShareStartDefault = 0.1
)

// EjectionConfig configures outlier ejection, the router's second line of
// defence after the breakers: a channel whose submits fail Consecutive
// times in a row is ejected, and new payouts go down the fallback order
// until it ends; then their share on it ramps back up over ReturnWindow.
// Ejection only steers new payouts (Choose): a payout already bound to an
// ejected channel is still sent there, through its breaker, since only
// that channel can say whether it pays it (DESIGN.md principle 7).
type EjectionConfig struct {
	// Consecutive is how many submits in a row that end ambiguous (5xx,
	// timeouts, connection errors, anything but an answer) eject the
	// channel. An accepted or a refused payout resets the count: a
	// refusal is the partner working. If <= 0, 5 is used.
	Consecutive int
	// Base and Max bound the ejection time: the n-th ejection (counting
	// those not yet forgotten, see Decay) lasts min(Max, Base×2^(n-1)).
	// If <= 0, 10 s and 5 min are used.
	Base time.Duration
	Max  time.Duration
	// Decay forgets one ejection per Decay the channel spends out of
	// ejection, so a channel that failed once long ago starts again from
	// Base. If <= 0, Max is used.
	Decay time.Duration
	// ReturnWindow is how long, after an ejection ends, the share of new
	// payouts offered to the channel takes to ramp linearly from
	// ReturnShareStart to all of them. If <= 0, 30 s is used.
	ReturnWindow time.Duration
	// ReturnShareStart is the share of new payouts the channel is offered
	// as its ejection ends. If <= 0 or > 1, 0.1 is used.
	ReturnShareStart float64
	// Logger receives one line per change of a channel's routing state.
	// If nil, slog.Default() is used.
	Logger *slog.Logger
	// Now is the clock of ejections and returns. If nil, time.Now is used.
	Now func() time.Time
	// Rand returns a number in [0, 1) that decides, for each new payout,
	// whether a returning channel gets it. If nil, math/rand/v2's Float64
	// is used.
	Rand func() float64
}

func (c EjectionConfig) withDefaults() EjectionConfig {
	if c.Consecutive <= 0 {
		c.Consecutive = EjectConsecutiveDefault
	}
	if c.Base <= 0 {
		c.Base = EjectBaseDefault
	}
	if c.Max <= 0 {
		c.Max = EjectMaxDefault
	}
	c.Base = min(c.Base, c.Max)
	if c.Decay <= 0 {
		c.Decay = c.Max
	}
	if c.ReturnWindow <= 0 {
		c.ReturnWindow = ReturnWindowDefault
	}
	if !(c.ReturnShareStart > 0 && c.ReturnShareStart <= 1) {
		c.ReturnShareStart = ReturnShareStartDefault
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	return c
}

// ejectionTime is how long the n-th ejection (n >= 1) lasts.
func (c EjectionConfig) ejectionTime(n int) time.Duration {
	d := c.Base
	for i := 1; i < n && d < c.Max; i++ {
		d *= 2
	}
	return min(d, c.Max)
}

// Routing states of a channel, as Choose sees it: the "state" label of
// outlast_channel_route_changes_total.
const (
	routeOK          = "ok"           // takes its share of new payouts
	routeReturning   = "returning"    // ejection over; its share is ramping up
	routeEjected     = "ejected"      // skipped by Choose until the ejection ends
	routeBreakerOpen = "breaker_open" // skipped by Choose while its breaker is open
	routeDisabled    = "disabled"     // turned off by the operators
)

// outlier is one channel's ejection record, guarded by Router.omu.
type outlier struct {
	failures  int       // consecutive ambiguous submits
	ejections int       // ejections not yet forgotten (Decay)
	until     time.Time // end of the last ejection; zero if never ejected
	// spared is set while the channel met the ejection rule but was kept
	// as the last one that could take new payouts; it is logged once.
	spared bool
	// shown is the routing state last logged and counted.
	shown string
}

// RouteState is what the router makes of one channel now.
type RouteState struct {
	// Breaker is "closed", "open" or "half-open".
	Breaker string
	// Disabled: the operators turned the channel off.
	Disabled bool
	// EjectedUntil is when the ejection in force ends; zero if none.
	EjectedUntil time.Time
	// Ejections counts the ejections not yet forgotten.
	Ejections int
	// ReturnShare is the share of new payouts the channel is offered, in
	// [0, 1]: 0 while ejected, ramping up after, 1 once fully back.
	ReturnShare float64
}

// OK reports whether the channel can take payouts now: its breaker is
// not open and it is not ejected.
func (s RouteState) OK() bool {
	return s.Breaker != "open" && s.EjectedUntil.IsZero()
}

// String is the state in a few words for a heartbeat and the console:
// the breaker's state or "disabled", then "ejected until 15:04:05 UTC"
// or "returning 40%" where that applies.
func (s RouteState) String() string {
	parts := []string{s.Breaker}
	if s.Disabled {
		parts[0] = "disabled"
	}
	switch {
	case !s.EjectedUntil.IsZero():
		parts = append(parts, fmt.Sprintf("ejected until %s (ejection %d)", s.EjectedUntil.UTC().Format("15:04:05 MST"), s.Ejections))
	case s.ReturnShare < 1:
		parts = append(parts, fmt.Sprintf("returning %d%%", int(s.ReturnShare*100)))
	}
	return strings.Join(parts, "; ")
}

// recordSubmit counts a submit to channel name that reached the partner
// (failed: it ended ambiguous) and ejects the channel when that makes
// Consecutive failures in a row — unless it is the last channel of Order
// not ejected: with nowhere else to go, new payouts had better wait on it.
func (r *Router) recordSubmit(name string, failed bool) {
	rt := r.routes[name]
	if !failed {
		r.omu.Lock()
		rt.out.failures, rt.out.spared = 0, false
		r.omu.Unlock()
		return
	}
	order, _ := r.snapshot()
	now := r.ej.Now()
	r.omu.Lock()
	defer r.omu.Unlock()
	o := &rt.out
	if now.Before(o.until) {
		// Already ejected: retries of payouts bound to it count towards
		// nothing; after the ejection it starts again from zero, as in
		// Envoy.
		o.failures = 0
		return
	}
	o.failures++
	if o.failures < r.ej.Consecutive {
		return
	}
	if !r.othersLocked(name, order, now) {
		if !o.spared {
			o.spared = true
			channelEjectionsSparedTotal.WithLabelValues(name).Inc()
			r.ej.Logger.Warn("channel failing, but not ejected: it is the last one that could take new payouts",
				"channel", name, "consecutive_failures", o.failures)
		}
		return
	}
	r.ejectLocked(name, o, now)
}

// ejectLocked ejects channel name at now; r.omu is held.
func (r *Router) ejectLocked(name string, o *outlier, now time.Time) {
	if !o.until.IsZero() && o.ejections > 0 {
		forgotten := int(now.Sub(o.until) / r.ej.Decay)
		o.ejections = max(0, o.ejections-forgotten)
	}
	o.ejections++
	d := r.ej.ejectionTime(o.ejections)
	failures := o.failures
	o.until, o.failures, o.spared, o.shown = now.Add(d), 0, false, routeEjected
	channelEjectionsTotal.WithLabelValues(name).Inc()
	channelRouteChangesTotal.WithLabelValues(name, routeEjected).Inc()
	channelEjected.WithLabelValues(name).Set(1)
	channelReturnShare.WithLabelValues(name).Set(0)
	r.ej.Logger.Warn("channel ejected: new payouts go down the fallback order; payouts bound to it stay on it",
		"channel", name, "consecutive_failures", failures, "ejection", o.ejections, "for", d, "until", o.until)
}

// othersLocked reports whether a channel of order other than name is not
// ejected at now; r.omu is held.
func (r *Router) othersLocked(name string, order []string, now time.Time) bool {
	for _, other := range order {
		if other != name && !now.Before(r.routes[other].out.until) {
			return true
		}
	}
	return false
}

// stateLocked is channel name's state at now; r.omu is held.
func (r *Router) stateLocked(name string, disabled bool, now time.Time) RouteState {
	rt := r.routes[name]
	o := &rt.out
	st := RouteState{Breaker: rt.breaker.State().String(), Disabled: disabled, Ejections: o.ejections, ReturnShare: 1}
	switch {
	case now.Before(o.until):
		st.EjectedUntil, st.ReturnShare = o.until, 0
	case !o.until.IsZero() && now.Before(o.until.Add(r.ej.ReturnWindow)):
		ramp := float64(now.Sub(o.until)) / float64(r.ej.ReturnWindow)
		st.ReturnShare = r.ej.ReturnShareStart + (1-r.ej.ReturnShareStart)*ramp
	}
	return st
}

// routeOf is the routing state st stands for, the most telling first.
func routeOf(st RouteState) string {
	switch {
	case st.Disabled:
		return routeDisabled
	case !st.EjectedUntil.IsZero():
		return routeEjected
	case st.Breaker == "open":
		return routeBreakerOpen
	case st.ReturnShare < 1:
		return routeReturning
	}
	return routeOK
}

// routeMessages are the log lines of a change to each routing state.
var routeMessages = map[string]string{
	routeOK:          "channel takes its full share of new payouts again",
	routeReturning:   "channel ejection over: new payouts return to it gradually",
	routeEjected:     "channel ejected: new payouts go down the fallback order",
	routeBreakerOpen: "channel circuit breaker open: new payouts skip it",
	routeDisabled:    "channel disabled by the operators: new payouts skip it",
}

// observeLocked returns channel name's state at now and, the first time
// its routing state differs from the one last seen, logs and counts the
// change; r.omu is held.
func (r *Router) observeLocked(name string, disabled bool, now time.Time) RouteState {
	st := r.stateLocked(name, disabled, now)
	channelEjected.WithLabelValues(name).Set(map[bool]float64{true: 1}[!st.EjectedUntil.IsZero()])
	channelReturnShare.WithLabelValues(name).Set(st.ReturnShare)
	o := &r.routes[name].out
	state := routeOf(st)
	if state == o.shown {
		return st
	}
	prev := o.shown
	o.shown = state
	channelRouteChangesTotal.WithLabelValues(name, state).Inc()
	level := slog.LevelInfo
	if state != routeOK && state != routeReturning {
		level = slog.LevelWarn
	}
	r.ej.Logger.Log(context.Background(), level, routeMessages[state],
		"channel", name, "was", prev, "state", st.String(), "return_window", r.ej.ReturnWindow)
	return st
}
