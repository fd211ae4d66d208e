package control

import "github.com/prometheus/client_golang/prometheus"

var (
	configVersion = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "outlast_control_config_version",
		Help: "Version of the config document this instance applied.",
	})
	configAgeSeconds = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "outlast_control_config_age_seconds",
		Help: "Seconds since the database last confirmed the applied config version; it grows while the database is unreachable and the last good config is kept.",
	})
	configAppliesTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_control_config_applies_total",
		Help: "Config documents applied.",
	})
	configRefusedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_control_config_refused_total",
		Help: "Config documents read from the database that did not validate and were not applied.",
	})
	configReadErrorsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_control_config_read_errors_total",
		Help: "Failed reads of the config from the database.",
	})
	hintsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_control_hints_total",
		Help: "Config change hints received (LISTEN/NOTIFY, or in-process in embedded mode).",
	})
	listenUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "outlast_control_listen_up",
		Help: "1 while the config change hint (LISTEN/NOTIFY) is open, 0 while the instance relies on polling alone.",
	})
	maintenanceOn = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "outlast_control_maintenance",
		Help: "1 while this instance refuses new payouts for maintenance (config or override).",
	})
	overrideActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outlast_control_override_active",
		Help: "1 while a break-glass maintenance override is in force on this instance, by source: local (the endpoint) or file.",
	}, []string{"source"})
	heartbeatErrorsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "outlast_control_heartbeat_errors_total",
		Help: "Heartbeats that could not be written.",
	})
)

// Collectors returns the package's metrics for the binary to register once.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{configVersion, configAgeSeconds, configAppliesTotal, configRefusedTotal,
		configReadErrorsTotal, hintsTotal, listenUp, maintenanceOn, overrideActive, heartbeatErrorsTotal}
}
