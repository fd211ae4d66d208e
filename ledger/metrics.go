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
	exceptionsFiledTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_exceptions_filed_total",
		Help: "Exceptions filed for a human, by kind (paid_but_failed, paid_twice, ...). outlast_exceptions_open says how many wait.",
	}, []string{"kind"})
	exceptionsResolvedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_exceptions_resolved_total",
		Help: "Exceptions resolved by an operator, by kind and action (book_paid, reverse_paid, no_money).",
	}, []string{"kind", "action"})
)

// Collectors returns the package's metrics for the binary to register once.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{outcomesTotal, applyErrorsTotal, inboxDrainErrorsTotal, exceptionsFiledTotal, exceptionsResolvedTotal}
}
