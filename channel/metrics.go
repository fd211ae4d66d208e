package channel

import "github.com/prometheus/client_golang/prometheus"

// Results of a submit, the "result" label of submitsTotal.
const (
	resultAccepted       = "accepted"
	resultRejected       = "rejected"
	resultAmbiguous      = "ambiguous"
	resultBreakerOpen    = "breaker_open"
	resultUnknownChannel = "unknown_channel"
	resultDisabled       = "disabled"
)

// Breaker states as gauge values.
const (
	breakerClosed   = 0
	breakerHalfOpen = 1
	breakerOpen     = 2
)

var (
	submitsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_partner_submits_total",
		Help: "Payout submissions to partner channels by result: accepted, rejected (definitive), ambiguous, breaker_open, unknown_channel, disabled (by the operators).",
	}, []string{"channel", "result"})
	submitSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "outlast_partner_submit_seconds",
		Help:    "Latency of payout submissions that reached the partner, including timeouts.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"channel"})
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_partner_requests_total",
		Help: "Status and records queries to partner channels by result: ok, not_found, error.",
	}, []string{"channel", "op", "result"})
	breakerState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_partner_breaker_state",
		Help: "Circuit breaker state per channel: 0 closed, 1 half-open, 2 open.",
	}, []string{"channel"})
	channelChosenTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_channel_chosen_total",
		Help: "New payouts bound to each channel by the router.",
	}, []string{"channel"})
	channelEjectionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_channel_ejections_total",
		Help: "Outlier ejections of a channel: consecutive ambiguous submits took it out of the choice for new payouts.",
	}, []string{"channel"})
	channelEjectionsSparedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_channel_ejections_spared_total",
		Help: "Times a failing channel was not ejected because it was the last one that could take new payouts.",
	}, []string{"channel"})
	channelRouteChangesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_channel_route_changes_total",
		Help: "Changes of a channel's routing state, by the state entered: ok, returning (after an ejection), ejected, breaker_open, disabled.",
	}, []string{"channel", "state"})
	channelEjected = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_channel_ejected",
		Help: "1 while a channel is ejected from the choice for new payouts.",
	}, []string{"channel"})
	channelReturnShare = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_channel_return_share",
		Help: "Share of new payouts a channel is offered: 0 while ejected, ramping up after, 1 when fully back.",
	}, []string{"channel"})
	dispatchClaimedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_dispatch_claimed_total",
		Help: "Outbox entries claimed by the dispatcher.",
	})
	dispatchOutcomesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_dispatch_outcomes_total",
		Help: "Dispatch attempts by outcome: dispatched, rejected (refused and confirmed by the partner's status, no other channel left), rerouted (the same, moved to the next channel), retried, refusal_overruled (refused, yet the partner's status says it holds the payout: dispatched). Alert on refusal_overruled: the partner answers retries of payouts it holds with errors.",
	}, []string{"channel", "outcome"})
	dispatchReroutesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_dispatch_reroutes_total",
		Help: "Payouts moved from a channel that definitively refused them (confirmed by its status) to the next channel in the router's order, instead of failing them.",
	}, []string{"from", "to"})
	dispatchParkedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_dispatch_parked_total",
		Help: "Retries of payouts past AttemptsMax (stuck: retried about every BackoffMax, never failed). Alert when it grows.",
	}, []string{"channel"})
	dispatchOutboxErrorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_dispatch_outbox_errors_total",
		Help: "Failed outbox calls by operation: claim, mark, reject, reroute, retry.",
	}, []string{"op"})
)

// Collectors returns the package's metrics for the binary to register once.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		submitsTotal, submitSeconds, requestsTotal, breakerState,
		channelChosenTotal, channelEjectionsTotal, channelEjectionsSparedTotal, channelRouteChangesTotal, channelEjected, channelReturnShare,
		dispatchClaimedTotal, dispatchOutcomesTotal, dispatchReroutesTotal, dispatchParkedTotal, dispatchOutboxErrorsTotal,
	}
}
