// Package backoff is Outlast's one retry-delay policy: capped exponential
// backoff with full jitter by default. Every loop that retries a shared
// dependency uses it, so that instances coming back from the same outage
// spread their retries instead of hitting the database, Redis or a bank in
// lock-step (AWS Architecture Blog, "Exponential Backoff And Jitter").
//
// Policy computes the delay for a numbered attempt (for retries that are
// scheduled, such as a payout's next dispatch); Backoff is a loop's state
// (wait, reset on success). It imports nothing of Outlast, so every package,
// the generic cache included, can use it.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Defaults for Policy fields left at their zero value.
const (
	BaseDefault = 100 * time.Millisecond
	MaxDefault  = 5 * time.Second
)

// Policy is a capped exponential backoff. The zero value is usable: 100 ms
// doubling up to 5 s, full jitter.
type Policy struct {
	// Base is the ceiling of the first delay. If Base <= 0, 100 ms is used.
	Base time.Duration
	// Max caps every delay. If Max <= 0, 5 s is used; if Max < Base, Base
	// is lowered to Max.
	Max time.Duration
	// Jitter is the fraction of each ceiling that is random: a delay is
	// uniform in [ceiling×(1-Jitter), ceiling]. If Jitter <= 0 or > 1, 1 is
	// used (full jitter); 0.5 is "equal jitter", for loops that must not
	// come back at once. Without jitter instances retry in lock-step, so
	// there is no way to turn it off.
	Jitter float64
	// Rand returns a number in [0, 1). If Rand is nil, math/rand/v2's
	// Float64 is used; tests inject a fixed one.
	Rand func() float64
}

// Ceiling is the largest delay of attempt n (n >= 1): min(Max, Base×2^(n-1)).
// Attempts below 1 count as 1.
func (p Policy) Ceiling(n int) time.Duration {
	base, maxDelay := p.bounds()
	c := base
	for i := 1; i < n && c < maxDelay; i++ {
		c *= 2
	}
	return min(c, maxDelay)
}

// Delay is the wait before attempt n+1 after attempt n failed (n >= 1):
// uniform in [Ceiling(n)×(1-Jitter), Ceiling(n)].
func (p Policy) Delay(n int) time.Duration {
	c := p.Ceiling(n)
	j := p.Jitter
	if j <= 0 || j > 1 {
		j = 1
	}
	r := rand.Float64
	if p.Rand != nil {
		r = p.Rand
	}
	x := min(max(r(), 0), 1)
	return c - time.Duration(j*x*float64(c))
}

func (p Policy) bounds() (base, maxDelay time.Duration) {
	base, maxDelay = p.Base, p.Max
	if base <= 0 {
		base = BaseDefault
	}
	if maxDelay <= 0 {
		maxDelay = MaxDefault
	}
	return min(base, maxDelay), maxDelay
}

// Backoff is the state of one retry loop: each Wait sleeps the next delay
// of Policy, Reset starts over after a success. It is not safe for
// concurrent use; each loop owns its own.
type Backoff struct {
	Policy
	// After is the clock: it returns a channel that delivers once d has
	// passed. If After is nil, time.After is used; tests inject one that
	// fires at once or under their control.
	After func(d time.Duration) <-chan time.Time

	failures int
}

// New returns a Backoff with policy p and the real clock.
func New(p Policy) *Backoff { return &Backoff{Policy: p} }

// Next counts a failure and returns the delay to wait before trying again.
func (b *Backoff) Next() time.Duration {
	b.failures++
	return b.Delay(b.failures)
}

// Wait counts a failure and waits out the next delay. It returns false if
// ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool {
	return b.Sleep(ctx, b.Next())
}

// Sleep waits d on the Backoff's clock, or until ctx ends; it reports
// whether the full d passed. Loops use it for their fixed waits too, so
// one injected clock covers them.
func (b *Backoff) Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	after := b.After
	if after == nil {
		return Sleep(ctx, d)
	}
	select {
	case <-after(d):
		return ctx.Err() == nil
	case <-ctx.Done():
		return false
	}
}

// Sleep waits d on the real clock, or until ctx ends; it reports whether
// the full d passed. For fixed waits outside a retry loop.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Reset forgets the failures: the next delay is the first one again.
func (b *Backoff) Reset() { b.failures = 0 }

// Failures is how many failures were counted since the last Reset.
func (b *Backoff) Failures() int { return b.failures }
