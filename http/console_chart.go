package http

import (
	"fmt"
	"html"
	"html/template"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outlast/outlast"
)

// chartSeconds is the span of the console's charts: five minutes.
const chartSeconds = 300

// charts draws the per-second charts, and says whose requests they
// count: every instance recently seen when the database can be read,
// this one alone when it cannot.
func (s *Server) charts(v *consoleView) ([]template.HTML, string) {
	end := s.now().Unix() - 1 // the last whole second
	series, scope := s.rates.series(end, chartSeconds), "this instance only"
	switch {
	case v.DBDown != "":
		scope += ": the database is unreachable, so the other instances' counts cannot be read"
	case v.Config != nil && s.svc.Instances != nil:
		var n int
		series, end, n = s.clusterSeries(v, end)
		scope = fmt.Sprintf("the sum over the %d instances seen in the last %s, up to %s ago (heartbeats carry the last minute; this instance keeps five)",
			n, InstanceStaleAfter, time.Duration(s.now().Unix()-end)*time.Second)
	}
	charts := []template.HTML{chartSVG("Payouts created", "#1a66cc", series.Payouts)}
	// A planned pause is not an outage: its refusals have their own
	// chart, drawn only while the window holds some so that it does not
	// crowd the page the rest of the time.
	if slices.Max(series.MaintenanceRefused) > 0 {
		charts = append(charts, chartSVG("Payouts refused for maintenance", "#b26a00", series.MaintenanceRefused))
	}
	return append(charts,
		chartSVG("Partner notifications accepted", "#1a8a4a", series.Notifications),
		chartSVG("Errors (5xx responses, maintenance refusals apart)", "#c62828", series.Errors),
	), scope
}

// clusterSeries adds this instance's counts of the last minute to those
// the other fresh instances' heartbeats carry, keeps the sums in
// s.cluster (so five minutes build up while a console is open) and
// returns its last chartSeconds up to the last second every instance
// reported whole, that second and the number of instances counted.
func (s *Server) clusterSeries(v *consoleView, end int64) (*outlast.RateSeries, int64, int) {
	var others []*outlast.RateSeries
	for _, iv := range v.Instances {
		if iv.Stale || iv.Self || iv.Rates == nil || !iv.Rates.Valid() || len(iv.Rates.Payouts) == 0 {
			continue
		}
		others = append(others, iv.Rates)
		// Its last second was still counting when its heartbeat was written.
		end = max(min(end, iv.Rates.End-1), end-HeartbeatRateSeconds+1)
	}
	start := end - HeartbeatRateSeconds + 1
	sums := make([][rateKinds]int64, HeartbeatRateSeconds)
	for _, r := range append(others, s.rates.series(end, HeartbeatRateSeconds)) {
		first := r.End - int64(len(r.Payouts)) + 1
		for i := range r.Payouts {
			if sec := first + int64(i); sec >= start && sec <= end {
				k := sec - start
				sums[k][ratePayouts] += r.Payouts[i]
				sums[k][rateNotifications] += r.Notifications[i]
				sums[k][rateErrors] += r.Errors[i]
				if r.MaintenanceRefused != nil { // nil from an instance that does not report it
					sums[k][rateMaintenance] += r.MaintenanceRefused[i]
				}
			}
		}
	}
	for k := range sums {
		s.cluster.set(start+int64(k), sums[k])
	}
	return s.cluster.series(end, chartSeconds), end, len(others) + 1
}

// chartSVG draws values (one a second, the last one newest) as an inline
// SVG area chart with its title, the last second's value and the peak.
// Only numbers and the fixed titles go into it.
func chartSVG(title, color string, values []int64) template.HTML {
	const width, height, left, right, top, bottom = 640, 150, 48, 12, 10, 22
	pw, ph := width-left-right, height-top-bottom
	n := len(values)
	peak := slices.Max(values)
	ymax := niceCeil(max(peak, 1))
	var b strings.Builder
	fmt.Fprintf(&b, `<figure class="chart"><figcaption><span class="chart-title">%s per second</span> `+
		`<span class="chart-now">now <b>%d</b>/s</span> <span class="chart-peak">peak %d/s in %d min</span></figcaption>`,
		html.EscapeString(title), values[n-1], peak, n/60)
	fmt.Fprintf(&b, `<svg viewBox="0 0 %d %d" role="img" aria-label="%s per second, last %d minutes">`,
		width, height, html.EscapeString(title), n/60)
	for i, label := range []string{"0", formatHalf(ymax), strconv.FormatInt(ymax, 10)} {
		y := top + ph - ph*i/2
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/>`, left, y, width-right, y)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" font-size="11" fill="#555">%s</text>`, left-6, y+4, label)
	}
	for sec := 0; sec <= n; sec += 60 {
		x := left + pw*sec/n
		label := "now"
		if sec < n {
			label = fmt.Sprintf("−%d min", (n-sec)/60)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" font-size="11" fill="#555">%s</text>`, x, height-6, label)
	}
	points := make([]string, 0, n)
	for i, val := range values {
		x := float64(left) + float64(pw)*float64(i)/float64(max(n-1, 1))
		y := float64(top+ph) - float64(ph)*float64(val)/float64(ymax)
		points = append(points, fmt.Sprintf("%.1f,%.1f", x, y))
	}
	line := strings.Join(points, " ")
	fmt.Fprintf(&b, `<polygon points="%d,%d %s %d,%d" fill="%s" fill-opacity="0.18"/>`, left, top+ph, line, width-right, top+ph, color)
	fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"/>`, line, color)
	b.WriteString(`</svg></figure>`)
	return template.HTML(b.String())
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, for a y axis a
// person reads at a glance.
func niceCeil(v int64) int64 {
	for p := int64(1); ; p *= 10 {
		for _, m := range []int64{1, 2, 5} {
			if m*p >= v {
				return m * p
			}
		}
	}
}

func formatHalf(v int64) string {
	if v%2 == 0 {
		return strconv.FormatInt(v/2, 10)
	}
	return strconv.FormatFloat(float64(v)/2, 'f', 1, 64)
}
