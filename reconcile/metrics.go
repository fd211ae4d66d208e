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
	oldestAgeSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_reconcile_oldest_age_seconds",
		Help: "Age of the least recent change of a payout in status (pending, dispatched), at the reconciler's last cycle; 0 if there is none.",
	}, []string{"status"})
)

// Collectors returns the package's metrics for the binary to register once.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{repairsTotal, deadLettersReplayedTotal, payoutsByAge, oldestAgeSeconds}
}
