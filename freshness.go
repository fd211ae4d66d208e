package outlast

import "time"

// Freshness says where a read was served from and how old it is; reads
// return it beside the value, so a response can tell the caller (seed 001:
// during a Redis outage, users could not tell stale settings from real
// ones).
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
