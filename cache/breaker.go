package cache

import (
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
)

// newBreaker builds a count-based breaker for one layer (see
// BreakerOptions) that reports its state to metrics and logs, and to
// onChange if not nil.
func (c *Cache[K, V]) newBreaker(o BreakerOptions, layer string, onChange func(circuitbreaker.State)) circuitbreaker.CircuitBreaker[any] {
	gauge := breakerState.WithLabelValues(c.name, layer)
	gauge.Set(0)
	return circuitbreaker.NewBuilder[any]().
		WithFailureThresholdRatio(o.FailureThreshold, o.WindowCalls).
		WithSuccessThresholdRatio(o.SuccessThreshold, o.SuccessThreshold).
		WithDelay(o.Delay).
		OnStateChanged(func(ev circuitbreaker.StateChangedEvent) {
			gauge.Set(stateValue(ev.NewState))
			c.log.Warn("cache: breaker "+ev.NewState.String(), "layer", layer, "from", ev.OldState.String())
			if onChange != nil {
				onChange(ev.NewState)
			}
		}).
		Build()
}

// stateValue is the breaker state gauge's value: 0 closed, 1 half-open,
// 2 open.
func stateValue(s circuitbreaker.State) float64 {
	switch s {
	case circuitbreaker.OpenState:
		return 2
	case circuitbreaker.HalfOpenState:
		return 1
	}
	return 0
}

// l2Permit says whether a request may call L2 now.
func (c *Cache[K, V]) l2Permit() bool {
	if (c.l2Down.Load() && c.probing.Load() > 0) || !c.l2Breaker.TryAcquirePermit() {
		c.counters.l2Rejected.Add(1)
		return false
	}
	return true
}
