package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outlast/outlast/internal/redisproc"
)

// benchRedisBinary is the redis-server the cache benchmark runs;
// OUTLAST_BENCH_REDIS_SERVER overrides it.
func benchRedisBinary() string {
	if b := os.Getenv("OUTLAST_BENCH_REDIS_SERVER"); b != "" {
		return b
	}
	return redisproc.DefaultBinary
}

// startBenchRedis starts a private, empty, non-persistent redis-server on a
// port of its own (never the shared one on 6379), with its working
// directory in dir, for the benchmark to kill, pause and restart empty.
func startBenchRedis(ctx context.Context, dir string) (*redisproc.Server, error) {
	// Warnings only: the benchmark reads the log only when a start fails.
	return redisproc.Start(ctx, redisproc.Options{Binary: benchRedisBinary(), Dir: dir, Args: []string{"--loglevel", "warning"}})
}

// benchRedisVersion returns the redis-server version line, for the report.
func benchRedisVersion(ctx context.Context) string {
	v, err := redisproc.Version(ctx, benchRedisBinary())
	if err != nil {
		return "redis-server version unknown"
	}
	return v
}

// quietRedisLog is go-redis's logger during the benchmark: a dead Redis
// makes every pool dial log a line, thousands per second, which would bury
// the report and cost CPU the contenders need. It passes on one line per
// second and counts the rest.
type quietRedisLog struct {
	w          io.Writer
	mu         sync.Mutex
	last       time.Time
	suppressed int64
}

func (q *quietRedisLog) Printf(_ context.Context, format string, v ...any) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if time.Since(q.last) < time.Second {
		q.suppressed++
		return
	}
	q.last = time.Now()
	fmt.Fprintf(q.w, "go-redis: "+format+" (%d similar lines suppressed)\n", append(v, q.suppressed)...)
	q.suppressed = 0
}

// quietLog is the process's one quietRedisLog: go-redis has one global
// logger; each run points it at its own writer.
var quietLog = &quietRedisLog{w: io.Discard}

var quietRedisLogOnce sync.Once

// quietenRedisLog installs quietRedisLog for the process and sends its
// lines to w.
func quietenRedisLog(w io.Writer) {
	quietLog.mu.Lock()
	quietLog.w = w
	quietLog.mu.Unlock()
	quietRedisLogOnce.Do(func() { goredis.SetLogger(quietLog) })
}

// syncWriter serialises writes to w from several goroutines.
type syncWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
