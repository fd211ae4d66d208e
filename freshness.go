package outlast

import (
	"context"
	"time"
)

// Freshness says where a read was served from and how old it is, so a
// response can tell the caller (seed 001: during a Redis outage, users could
// not tell stale settings from real ones).
type Freshness struct {
	// Source is "memory" (the instance's own cache), "redis" (the shared
	// cache) or "database".
	Source string
	// Age is how long ago the value was read from the database.
	Age time.Duration
	// Stale reports a value served past its freshness lifetime because the
	// database or Redis was failing (stale-if-error).
	Stale bool
}

// Freshness sources.
const (
	SourceMemory   = "memory"
	SourceRedis    = "redis"
	SourceDatabase = "database"
)

type freshnessKey struct{}

// WithFreshness returns a context that carries a Freshness for a read
// further down to fill in, and that Freshness. Readers that do not know
// leave it zero.
func WithFreshness(ctx context.Context) (context.Context, *Freshness) {
	f := &Freshness{}
	return context.WithValue(ctx, freshnessKey{}, f), f
}

// ReportFreshness records f in the Freshness carried by ctx, if any.
func ReportFreshness(ctx context.Context, f Freshness) {
	if p, ok := ctx.Value(freshnessKey{}).(*Freshness); ok {
		*p = f
	}
}
