package http

import "github.com/prometheus/client_golang/prometheus"

// Label values are bounded: route is a registered pattern or "other", code
// an HTTP status, channel a configured partner channel or "other".
var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_http_requests_total",
		Help: "HTTP requests answered, by route pattern and status code.",
	}, []string{"route", "code"})
	requestSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "outlast_http_request_seconds",
		Help:    "HTTP request latency, by route pattern.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route"})
	webhookFallbackTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_http_webhook_inbox_fallbacks_total",
		Help: "Partner notifications sent to the database inbox because the log was absent or failed.",
	}, []string{"channel"})
	webhookUnavailableTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_http_webhook_unavailable_total",
		Help: "Partner notifications refused with 503 because both the log and the inbox failed.",
	}, []string{"channel"})
	maintenanceRefusedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_http_maintenance_refusals_total",
		Help: "New payouts refused with 503 because the instance is in maintenance.",
	})
	webhookRejectedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_http_webhook_signature_failures_total",
		Help: "Partner notifications refused with 401: missing, stale or wrong signatures.",
	}, []string{"channel"})
)

// Collectors returns the package's metrics for the binary to register once.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{requestsTotal, requestSeconds, webhookFallbackTotal, webhookUnavailableTotal, webhookRejectedTotal, maintenanceRefusedTotal}
}
