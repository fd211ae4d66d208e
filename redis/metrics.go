package redis

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Operation and result label values.
const (
	opGet       = "get"
	opSet       = "set"
	opDelete    = "delete"
	opPublish   = "publish"
	opPing      = "ping"
	opSubscribe = "subscribe"

	resultOK      = "ok"
	resultMiss    = "miss"    // Get found nothing
	resultIgnored = "ignored" // Set carried a version not newer than the stored one
	resultTimeout = "timeout" // a hang: the server accepted but did not answer in time
	resultError   = "error"   // anything else, typically connection refused
)

var (
	// Calls counts Redis calls by op and result (ok, miss, ignored, timeout, error).
	Calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_redis_calls_total",
		Help: "Redis cache calls by operation and result (ok, miss, ignored, timeout, error).",
	}, []string{"op", "result"})

	// CallSeconds is the latency of Redis calls by op, whatever the result.
	CallSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "outlast_redis_call_duration_seconds",
		Help:    "Latency of Redis cache calls by operation.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"op"})

	// InvalidationsReceived counts invalidation messages handed to Subscribe callbacks.
	InvalidationsReceived = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_redis_invalidations_received_total",
		Help: "Invalidation messages received over Redis Pub/Sub.",
	})

	// Resubscribes counts subscriptions re-established after a failure;
	// invalidations published in between were missed.
	Resubscribes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_redis_resubscribes_total",
		Help: "Redis Pub/Sub subscriptions re-established after a failure (invalidations may have been missed).",
	})
)

// Collectors returns the package's metrics for the binary to register once.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{Calls, CallSeconds, InvalidationsReceived, Resubscribes}
}

func observe(op string, start time.Time, result string) {
	CallSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
	Calls.WithLabelValues(op, result).Inc()
}

func resultOf(err error) string {
	if err == nil {
		return resultOK
	}
	if isTimeout(err) {
		return resultTimeout
	}
	return resultError
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}
