package reconcile

import "github.com/prometheus/client_golang/prometheus"

var (
	repairsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_reconcile_repairs_total",
		Help: "Stuck payouts the reconciler asked a partner about, by what came of it: succeeded or failed (applied), unchanged, not_found (asked again later), error, conflict, rejected.",
	}, []string{"kind"})
	deadLettersReplayedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_reconcile_dead_letters_replayed_total",
		Help: "Dead-lettered notifications the reconciler replayed because their payout now takes them.",
	})
	payoutsByAge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_reconcile_payouts",
		Help: "Payouts not yet final (pending, dispatched) whose last change is older than older_than, at the reconciler's last cycle.",
	}, []string{"status", "older_than"})
	exceptionsOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_exceptions_open",
		Help: "Exceptions waiting for a human, by kind, at the reconciler's last cycle (outlast exceptions lists them).",
	}, []string{"kind"})
	reportRunsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_discrepancy_report_runs_total",
		Help: "Runs of the periodic discrepancy report per channel, by result: ok, for_human (exceptions wait), error.",
	}, []string{"channel", "result"})
	reportDiscrepancies = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_discrepancy_report_discrepancies",
		Help: "What the last discrepancy report of a channel left, by state: for_human (filed as exceptions), in_flight, settled (a resolved exception), repaired (by that run).",
	}, []string{"channel", "state"})
	reportLastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_discrepancy_report_last_success_timestamp_seconds",
		Help: "When the discrepancy report of a channel last compared the ledger with all of the bank's records.",
	}, []string{"channel"})
	oldestAgeSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_reconcile_oldest_age_seconds",
		Help: "Age of the least recent change of a payout in status (pending, dispatched), at the reconciler's last cycle; 0 if there is none.",
	}, []string{"status"})
)

// Collectors returns the package's metrics for the binary to register once.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{repairsTotal, deadLettersReplayedTotal, payoutsByAge, oldestAgeSeconds, exceptionsOpen,
		reportRunsTotal, reportDiscrepancies, reportLastSuccess}
}
