package http

import (
	nethttp "net/http"
	"sync"

	"github.com/outlast/outlast"
)

// What the console charts, per second: the index of each count in a
// rateRing slot.
const (
	ratePayouts = iota
	rateNotifications
	rateErrors
	rateMaintenance // payouts refused for maintenance, not errors
	rateKinds
)

// Routes whose successes the console charts.
const (
	routeCreatePayout = "POST /v1/payouts"
	routeNotify       = "POST /v1/partners/{channel}/notifications"
)

// rateRing keeps per-second counts of the last outlast.RateSeriesMax
// seconds in a fixed ring: slot sec%RateSeriesMax holds second sec, and
// a slot that holds an older second reads as zero. Its size never
// changes, whatever the traffic.
type rateRing struct {
	mu     sync.Mutex // guards secs, counts
	secs   [outlast.RateSeriesMax]int64
	counts [outlast.RateSeriesMax][rateKinds]int64
}

// slot returns second sec's slot, cleared if it held an older second.
// r.mu is held.
func (r *rateRing) slot(sec int64) *[rateKinds]int64 {
	i := sec % outlast.RateSeriesMax
	if r.secs[i] != sec {
		r.secs[i], r.counts[i] = sec, [rateKinds]int64{}
	}
	return &r.counts[i]
}

func (r *rateRing) add(kind int, sec int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.slot(sec)[kind]++
}

// set replaces second sec's counts.
func (r *rateRing) set(sec int64, v [rateKinds]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.slot(sec) = v
}

// series returns the n seconds up to end (at most RateSeriesMax).
func (r *rateRing) series(end int64, n int) *outlast.RateSeries {
	n = min(max(n, 1), outlast.RateSeriesMax)
	out := &outlast.RateSeries{End: end, Payouts: make([]int64, n), Notifications: make([]int64, n), Errors: make([]int64, n),
		MaintenanceRefused: make([]int64, n)}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range n {
		sec := end - int64(n-1-k)
		i := sec % outlast.RateSeriesMax
		if sec < 0 || r.secs[i] != sec {
			continue
		}
		c := r.counts[i]
		out.Payouts[k], out.Notifications[k], out.Errors[k] = c[ratePayouts], c[rateNotifications], c[rateErrors]
		out.MaintenanceRefused[k] = c[rateMaintenance]
	}
	return out
}

// count adds one answered request to the console's rates. A payout
// refused for maintenance is a planned pause the operators asked for, so
// it has its own series rather than showing as an error.
func (s *Server) count(ri *routeInfo, status int) {
	sec := s.now().Unix()
	route := ri.name
	switch {
	case ri.maintenance:
		s.rates.add(rateMaintenance, sec)
	case status >= nethttp.StatusInternalServerError:
		s.rates.add(rateErrors, sec)
	case route == routeCreatePayout && status == nethttp.StatusCreated:
		s.rates.add(ratePayouts, sec)
	case route == routeNotify && status == nethttp.StatusOK:
		s.rates.add(rateNotifications, sec)
	}
}

// Rates returns this server's counts of its last seconds (at most
// outlast.RateSeriesMax), the current one last: what its heartbeat
// carries to the other instances' consoles.
func (s *Server) Rates(seconds int) *outlast.RateSeries {
	return s.rates.series(s.now().Unix(), seconds)
}
