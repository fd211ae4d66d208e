package chaos

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The recorder buckets requests by the second they were due, fills the
// seconds between with zeros, keeps the last gauge reading and the
// windows.
func TestRecorderSeries(t *testing.T) {
	start := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	r := NewRecorder(start)
	r.Request(100*time.Millisecond, 10*time.Millisecond, "")
	r.Request(900*time.Millisecond, 30*time.Millisecond, "")
	r.Request(950*time.Millisecond, time.Second, "503")
	r.Request(3*time.Second+time.Millisecond, 5*time.Millisecond, "")
	r.Gauge("oldest_unapplied_s", start.Add(1500*time.Millisecond), 1)
	r.Gauge("oldest_unapplied_s", start.Add(1700*time.Millisecond), 2)
	r.Window("redis down", start.Add(time.Second), start.Add(2*time.Second))
	secs, wins := r.Series()
	if len(secs) != 4 {
		t.Fatalf("%d seconds, want 0..3: %+v", len(secs), secs)
	}
	s0 := secs[0]
	if s0.Requests != 3 || s0.Errors["503"] != 1 || s0.P50MS < 9 || s0.P50MS > 11 || s0.MaxMS < 29 || s0.MaxMS > 31 {
		t.Errorf("second 0 = %+v; want 3 requests, one 503, latencies of the two that succeeded (10, 30 ms)", s0)
	}
	if secs[1].Requests != 0 || secs[1].Gauges["oldest_unapplied_s"] != 2 || secs[2].Requests != 0 || secs[3].Requests != 1 {
		t.Errorf("seconds 1..3 = %+v; want no requests in 1 and 2, the last gauge reading in 1, one request in 3", secs[1:])
	}
	if len(wins) != 1 || wins[0].From != time.Second || wins[0].To != 2*time.Second {
		t.Errorf("windows = %+v", wins)
	}
}

func sampleReport() *Report {
	run := func(scenario, design string, lost float64, ok bool) *Result {
		r := NewRecorder(time.Unix(0, 0))
		for i := range 5 {
			outcome := ""
			if !ok && i == 2 {
				outcome = "500"
			}
			r.Request(time.Duration(i)*time.Second, 20*time.Millisecond, outcome)
		}
		r.Window("redis down", time.Unix(1, 0), time.Unix(3, 0))
		secs, wins := r.Series()
		return &Result{Scenario: scenario, Design: design, Seconds: secs, Windows: wins,
			Figures: []Figure{{Name: "notifications lost", Value: lost}},
			Checks:  []Check{{Name: "nothing acknowledged lost", OK: ok, Detail: map[bool]string{false: "3 lost"}[ok]}}}
	}
	return &Report{Started: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC), Machine: "test", Results: []*Result{
		run("000-redis-maintenance", DesignOutlast, 0, true), run("000-redis-maintenance", DesignNaive, 3, false),
		run("S2-db-down", DesignOutlast, 0, false),
	}}
}

// The scorecard gives Outlast's verdict per scenario, naming what broke;
// the report is OK only when every run of Outlast held every invariant.
func TestScorecard(t *testing.T) {
	rep := sampleReport()
	rows := rep.Rows()
	if len(rows) != 2 || rows[0].Verdict != "survived" || !strings.HasPrefix(rows[1].Verdict, "VIOLATED: nothing acknowledged lost: 3 lost") {
		t.Fatalf("rows = %+v", rows)
	}
	if !strings.Contains(rows[0].Naive, "notifications lost 3") || rows[1].Naive != "—" {
		t.Errorf("naive cells = %q, %q", rows[0].Naive, rows[1].Naive)
	}
	if rep.OK() {
		t.Error("report OK with a violated invariant of Outlast's")
	}
	rep.Results = rep.Results[:2]
	if !rep.OK() {
		t.Error("report not OK though only the naive design broke an invariant")
	}
	var b bytes.Buffer
	if err := rep.WriteScorecard(&b); err != nil || !strings.Contains(b.String(), "000-redis-maintenance") {
		t.Errorf("scorecard = %q, %v", b.String(), err)
	}
}

// The JSON report carries every series; the HTML report is one page with
// the scorecard and, per scenario, a plot per measure with both designs
// and the fault windows.
func TestReportFiles(t *testing.T) {
	rep := sampleReport()
	var j bytes.Buffer
	if err := rep.WriteJSON(&j); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(j.Bytes(), &back); err != nil || len(back.Results) != 3 || len(back.Results[1].Seconds) != 5 {
		t.Fatalf("JSON round trip = %+v, %v", back, err)
	}
	var h bytes.Buffer
	if err := rep.WriteHTML(&h); err != nil {
		t.Fatal(err)
	}
	page := h.String()
	for _, want := range []string{`id="scorecard"`, `id="000-redis-maintenance"`, `id="S2-db-down"`, "VIOLATED", "<svg"} {
		if !strings.Contains(page, want) {
			t.Errorf("HTML report lacks %q", want)
		}
	}
	if n := strings.Count(page, "<svg"); n != 2*len(plotted) {
		t.Errorf("%d plots, want %d (a plot per measure per scenario)", n, 2*len(plotted))
	}
	if strings.Contains(page, "<?xml") {
		t.Error("an SVG kept its XML prolog inside the HTML")
	}
}
