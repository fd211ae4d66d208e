package store

import "github.com/prometheus/client_golang/prometheus"

var (
	txSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "outlast_store_tx_seconds",
		Help:    "Duration of ledger write transactions, including waiting for the write lock.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"op"})
	errorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_store_errors_total",
		Help: "Ledger operations that failed, by operation and error code (unavailable or internal).",
	}, []string{"op", "code"})
	payoutsCreatedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_store_payouts_created_total",
		Help: "Payouts created (idempotent replays not counted).",
	})
	deadLettersTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_store_dead_letters_total",
		Help: "Inbox notifications moved to the dead-letter table.",
	})
)

// Collectors returns the package's metrics for the binary to register once.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{txSeconds, errorsTotal, payoutsCreatedTotal, deadLettersTotal}
}
