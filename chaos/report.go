package chaos

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"image/color"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// The designs a scenario runs against.
const (
	DesignOutlast = "outlast"
	DesignNaive   = "naive"
)

// Figure is one measured number of a run: what the scenario is about
// ("notifications acknowledged then lost", "maintenance took effect").
type Figure struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit,omitempty"`
}

func (f Figure) String() string {
	v := fmt.Sprintf("%g", f.Value)
	if f.Unit != "" {
		v += " " + f.Unit
	}
	return f.Name + " " + v
}

// Check is one invariant checked at a run's end.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Result is one scenario run against one design.
type Result struct {
	Scenario string        `json:"scenario"`
	Design   string        `json:"design"`
	Duration time.Duration `json:"duration"`
	Seconds  []Second      `json:"seconds"`
	Windows  []Window      `json:"windows"`
	Figures  []Figure      `json:"figures"`
	Checks   []Check       `json:"checks"`
	// Err says the run itself could not be carried out (a process would
	// not start): no verdict on the design.
	Err string `json:"error,omitempty"`
}

// OK reports whether the run was carried out and every invariant held.
func (r *Result) OK() bool {
	return r.Err == "" && !slices.ContainsFunc(r.Checks, func(c Check) bool { return !c.OK })
}

// Violations lists the invariants that did not hold.
func (r *Result) Violations() []string {
	var out []string
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c.Name+": "+c.Detail)
		}
	}
	return out
}

// Report is a lab run: every scenario against both designs.
type Report struct {
	Started time.Time `json:"started"`
	Machine string    `json:"machine"`
	Quick   bool      `json:"quick"`
	Results []*Result `json:"results"`
}

// result returns the run of scenario against design, or nil.
func (rep *Report) result(scenario, design string) *Result {
	for _, r := range rep.Results {
		if r.Scenario == scenario && r.Design == design {
			return r
		}
	}
	return nil
}

// scenarios are the scenarios of the report, in the order first run.
func (rep *Report) scenarios() []string {
	var out []string
	for _, r := range rep.Results {
		if !slices.Contains(out, r.Scenario) {
			out = append(out, r.Scenario)
		}
	}
	return out
}

// OK reports whether every run of Outlast was carried out with every
// invariant held: what CI requires of the lab.
func (rep *Report) OK() bool {
	for _, r := range rep.Results {
		if r.Design == DesignOutlast && !r.OK() {
			return false
		}
	}
	return true
}

// Row is one scenario's line of the scorecard.
type Row struct {
	Scenario, Outlast, Naive, Verdict string
}

// Rows is the scorecard: per scenario, what each design did and the
// verdict on Outlast.
func (rep *Report) Rows() []Row {
	var rows []Row
	for _, s := range rep.scenarios() {
		o, n := rep.result(s, DesignOutlast), rep.result(s, DesignNaive)
		row := Row{Scenario: s, Outlast: summary(o), Naive: summary(n)}
		switch {
		case o == nil:
			row.Verdict = "not run"
		case o.Err != "":
			row.Verdict = "could not run"
		case o.OK():
			row.Verdict = "survived"
		default:
			row.Verdict = "VIOLATED: " + strings.Join(o.Violations(), "; ")
		}
		rows = append(rows, row)
	}
	return rows
}

// summary is one design's cell: its figures and broken invariants.
func summary(r *Result) string {
	switch {
	case r == nil:
		return "—"
	case r.Err != "":
		return "error: " + r.Err
	}
	var parts []string
	for _, f := range r.Figures {
		parts = append(parts, f.String())
	}
	if v := r.Violations(); len(v) > 0 {
		parts = append(parts, fmt.Sprintf("%d invariants broken", len(v)))
	}
	return strings.Join(parts, ", ")
}

// WriteScorecard writes the scorecard as a terminal table.
func (rep *Report) WriteScorecard(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tOutlast\tnaive\tverdict")
	for _, r := range rep.Rows() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Scenario, r.Outlast, r.Naive, r.Verdict)
	}
	return tw.Flush()
}

// WriteJSON writes the whole report, every series included.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

//go:embed report.html
var reportFiles embed.FS

var reportPage = template.Must(template.ParseFS(reportFiles, "report.html"))

// WriteHTML writes a self-contained page: the scorecard, then per
// scenario its figures, its checks and its per-second plots (both designs
// on the same axes, fault windows shaded), as inline SVG.
func (rep *Report) WriteHTML(w io.Writer) error {
	type section struct {
		Name           string
		Outlast, Naive *Result
		Plots          []template.HTML
	}
	view := struct {
		*Report
		Rows     []Row
		Sections []section
	}{Report: rep, Rows: rep.Rows()}
	for _, s := range rep.scenarios() {
		sec := section{Name: s, Outlast: rep.result(s, DesignOutlast), Naive: rep.result(s, DesignNaive)}
		for _, m := range plotted {
			svg, err := plotSVG(s, m, sec.Outlast, sec.Naive)
			if err != nil {
				return fmt.Errorf("plot %s %s: %w", s, m.title, err)
			}
			sec.Plots = append(sec.Plots, template.HTML(svg)) //nolint:gosec // our own SVG
		}
		view.Sections = append(view.Sections, sec)
	}
	return reportPage.Execute(w, view)
}

// measure is a per-second value plotted for every scenario; ok false
// means the second has no value (no request succeeded, so it has no
// latency), and the line breaks there rather than dropping to zero.
type measure struct {
	title, unit string
	value       func(Second) (v float64, ok bool)
}

var plotted = []measure{
	{"Successful requests", "per second", func(s Second) (float64, bool) {
		return float64(s.Requests - failed(s)), true
	}},
	{"Failed requests", "per second", func(s Second) (float64, bool) { return float64(failed(s)), true }},
	{"Latency p99 of successful requests", "ms", func(s Second) (float64, bool) {
		return s.P99MS, s.Requests > failed(s)
	}},
}

// failed counts a second's failed requests.
func failed(s Second) int {
	n := 0
	for _, e := range s.Errors {
		n += e
	}
	return n
}

// Colours of the designs, and of a fault window's shading.
var (
	colourOutlast = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colourNaive   = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	colourWindow  = color.NRGBA{R: 0xff, G: 0xa5, B: 0x00, A: 0x50}
)

// segments are the runs of consecutive seconds that have a value of m:
// one line each, so a second without one is a gap, not a zero.
func segments(secs []Second, m measure) []plotter.XYs {
	var out []plotter.XYs
	var cur plotter.XYs
	for _, s := range secs {
		v, ok := m.value(s)
		if !ok {
			if len(cur) > 0 {
				out, cur = append(out, cur), nil
			}
			continue
		}
		cur = append(cur, plotter.XY{X: float64(s.T), Y: v})
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// plotSVG draws m over time for both designs, with the fault windows of
// either shaded behind them.
func plotSVG(scenario string, m measure, runs ...*Result) (string, error) {
	p := plot.New()
	p.Title.Text = scenario + ": " + m.title
	p.X.Label.Text = "seconds"
	p.Y.Label.Text = m.unit
	p.Legend.Top = true
	yMax := 1.0
	for _, r := range runs {
		if r == nil {
			continue
		}
		for _, s := range r.Seconds {
			if v, ok := m.value(s); ok {
				yMax = max(yMax, v)
			}
		}
	}
	var shaded []Window
	for _, r := range runs {
		if r == nil {
			continue
		}
		for _, win := range r.Windows {
			if slices.Contains(shaded, win) { // both designs' same fault: once
				continue
			}
			shaded = append(shaded, win)
			box, err := plotter.NewPolygon(plotter.XYs{
				{X: win.From.Seconds(), Y: 0}, {X: win.To.Seconds(), Y: 0},
				{X: win.To.Seconds(), Y: yMax * 1.05}, {X: win.From.Seconds(), Y: yMax * 1.05},
			})
			if err != nil {
				return "", err
			}
			box.Color, box.LineStyle.Width = colourWindow, 0
			p.Add(box)
		}
	}
	for _, r := range runs {
		if r == nil {
			continue
		}
		colour := colourOutlast
		if r.Design == DesignNaive {
			colour = colourNaive
		}
		for i, seg := range segments(r.Seconds, m) {
			line, err := plotter.NewLine(seg)
			if err != nil {
				return "", err
			}
			line.Color, line.Width = colour, vg.Points(1.5)
			p.Add(line)
			if i == 0 {
				p.Legend.Add(r.Design, line)
			}
		}
	}
	p.Y.Min, p.Y.Max = 0, yMax*1.05
	wt, err := p.WriterTo(10*vg.Inch, 2.8*vg.Inch, "svg")
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		return "", err
	}
	svg := b.String()
	if i := strings.Index(svg, "<svg"); i > 0 { // drop the XML prolog: the SVG sits inside HTML
		svg = svg[i:]
	}
	return svg, nil
}
