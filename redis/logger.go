package redis

import (
	"context"
	"fmt"
	"log/slog"

	goredis "github.com/redis/go-redis/v9"
)

// SetLogger sends go-redis's internal messages (every failed dial, every
// Sentinel switch) to l at debug level instead of stderr: during an outage
// they repeat per connection attempt, and the cache's breaker state changes
// already say what matters at info level. It affects the whole process.
func SetLogger(l *slog.Logger) {
	goredis.SetLogger(slogPrinter{l})
}

type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Printf(ctx context.Context, format string, v ...any) {
	p.l.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}
