package jetstream

import "github.com/prometheus/client_golang/prometheus"

var (
	appendsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_jetstream_appends_total",
		Help: "Batch messages appended to the notification log and acknowledged (stored and fsync'd).",
	})
	notificationsAppendedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_jetstream_notifications_appended_total",
		Help: "Notifications acknowledged by the notification log.",
	})
	appendBatchNotifications = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "outlast_jetstream_append_batch_notifications",
		Help:    "Notifications per appended message (group commit size).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 12), // 1 .. 2048
	})
	appendAckSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "outlast_jetstream_append_ack_seconds",
		Help:    "Time from publishing a batch message to its JetStream PubAck.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	appendErrorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_jetstream_append_errors_total",
		Help: "Notifications whose append failed, by reason (queue_full, closed, disconnected, publish, timeout, canceled).",
	}, []string{"reason"})
	applyErrorsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_jetstream_apply_errors_total",
		Help: "Messages whose apply failed with an error other than unavailable; redelivered with backoff, never dead-lettered. Alert when it grows.",
	})
	streamBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_jetstream_stream_bytes",
		Help: "Bytes held by a stream (notifications: not yet applied; dead: dead letters).",
	}, []string{"stream"})
	streamBytesLimit = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_jetstream_stream_bytes_limit",
		Help: "MaxBytes of a stream: appends fail (and webhooks fall back to the inbox) when bytes reach it.",
	}, []string{"stream"})
	streamMessages = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_jetstream_stream_messages",
		Help: "Messages held by a stream.",
	}, []string{"stream"})
	streamMessagesLimit = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_jetstream_stream_messages_limit",
		Help: "MaxMsgs of a stream (-1: unlimited).",
	}, []string{"stream"})
	deadLettersTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_jetstream_dead_letters_total",
		Help: "Notifications moved to the dead-letter stream.",
	})
	consumerNaksTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outlast_jetstream_consumer_naks_total",
		Help: "Messages the committer handed back for redelivery, by reason (rejected, error, dead_letter, stopped).",
	}, []string{"reason"})
	applyUnavailableTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_jetstream_apply_unavailable_total",
		Help: "Apply attempts that failed with EUNAVAILABLE (database down) and were retried after a backoff.",
	})
	consumerErrorsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_jetstream_consumer_fetch_errors_total",
		Help: "Failed fetches from the durable consumer (broker unreachable).",
	})
)

// Collectors returns the package's metrics for the binary to register once.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		appendsTotal, notificationsAppendedTotal, appendBatchNotifications, appendAckSeconds,
		appendErrorsTotal, applyErrorsTotal, deadLettersTotal, consumerNaksTotal,
		streamBytes, streamBytesLimit, streamMessages, streamMessagesLimit,
		applyUnavailableTotal, consumerErrorsTotal,
	}
}
