package ledger

import "github.com/prometheus/client_golang/prometheus"

var (
	outcomesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_notifications_applied_total",
		Help: "Notifications through Apply, by source (log, inbox, reconciler) and outcome (applied, duplicate, stale, conflict, rejected). The one count of outcomes.",
	}, []string{"source", "outcome"})
	applyErrorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_apply_errors_total",
		Help: "Apply calls that committed nothing and will be retried, by source and error code (unavailable: the database cannot take it now).",
	}, []string{"source", "code"})
	inboxDrainErrorsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_inbox_drain_errors_total",
		Help: "Inbox claims or settlements that failed and will be retried.",
	})
)

// Collectors returns the package's metrics for the binary to register once.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{outcomesTotal, applyErrorsTotal, inboxDrainErrorsTotal}
}
