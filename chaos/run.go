package chaos

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Phase is a named span of a scenario's plan ("steady", "redis down",
// "recovery"), for the progress line and the time left.
type Phase struct {
	Name     string
	Duration time.Duration
}

// Scenario is one seed incident as code: it starts what it needs, runs
// its load and faults against one design, and checks the invariants.
type Scenario struct {
	Name  string // "000-redis-maintenance": the seed it reproduces first
	About string // one line: what it does and what it shows
	// Plan is the scenario's phases, full or shortened (--quick), for the
	// progress display; Run should follow it.
	Plan func(quick bool) []Phase
	// Run runs the scenario against env.Design and returns its figures
	// and checks; its series come from env.Recorder. An error means the
	// run could not be carried out (a process would not start), which is
	// no verdict on the design.
	Run func(ctx context.Context, env *Env) (figures []Figure, checks []Check, err error)
}

// Env is what a scenario run gets.
type Env struct {
	Design   string
	Quick    bool
	Dir      string // a scratch directory of its own
	Recorder *Recorder
	// Phase tells the runner that the named phase of the plan started.
	Phase func(name string)
}

// Runner runs scenarios against designs and reports progress.
type Runner struct {
	Scenarios []Scenario
	Designs   []string // DesignOutlast, DesignNaive
	Quick     bool
	// Dir holds each run's scratch directory (Dir/<scenario>-<design>).
	Dir string
	// Progress gets a line whenever a run or a phase starts: which run,
	// which phase, and the time left by the plans. If nil, none.
	Progress io.Writer
	Now      func() time.Time // if nil, time.Now
}

// Run runs every scenario against every design, in order, and returns
// the report; a run that cannot be carried out is recorded as such and
// the others go on. Only ctx's end stops it early.
func (r *Runner) Run(ctx context.Context, machine string) *Report {
	now := r.Now
	if now == nil {
		now = time.Now
	}
	rep := &Report{Started: now(), Machine: machine, Quick: r.Quick}
	left := r.planned()
	total := len(r.Scenarios) * len(r.Designs)
	n := 0
	for _, s := range r.Scenarios {
		plan := s.Plan(r.Quick)
		for _, d := range r.Designs {
			if ctx.Err() != nil {
				return rep
			}
			n++
			p := &progress{w: r.Progress, run: fmt.Sprintf("[%d/%d] %s · %s", n, total, s.Name, d),
				plan: plan, leftAfter: left - sum(plan)}
			rep.Results = append(rep.Results, r.one(ctx, s, d, p, now))
			left = p.leftAfter
		}
	}
	return rep
}

// one runs s against design d.
func (r *Runner) one(ctx context.Context, s Scenario, d string, p *progress, now func() time.Time) *Result {
	start := now()
	env := &Env{Design: d, Quick: r.Quick, Dir: filepath.Join(r.Dir, s.Name+"-"+d),
		Recorder: NewRecorder(start), Phase: p.phase}
	res := &Result{Scenario: s.Name, Design: d}
	figures, checks, err := []Figure(nil), []Check(nil), os.MkdirAll(env.Dir, 0o755)
	if err == nil {
		figures, checks, err = s.Run(ctx, env)
	}
	res.Duration = now().Sub(start)
	res.Seconds, res.Windows = env.Recorder.Series()
	res.Figures, res.Checks = figures, checks
	if err != nil {
		res.Err = err.Error()
	}
	return res
}

// planned is the time every run's plan adds up to.
func (r *Runner) planned() time.Duration {
	var d time.Duration
	for _, s := range r.Scenarios {
		d += sum(s.Plan(r.Quick)) * time.Duration(len(r.Designs))
	}
	return d
}

func sum(plan []Phase) time.Duration {
	var d time.Duration
	for _, p := range plan {
		d += p.Duration
	}
	return d
}

// progress writes one run's progress lines.
type progress struct {
	mu        sync.Mutex
	w         io.Writer
	run       string
	plan      []Phase
	leftAfter time.Duration // planned time of the runs after this one
}

// phase reports that phase name of the plan started: the time left is the
// rest of this run's plan (from that phase on) and the runs after it.
func (p *progress) phase(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.w == nil {
		return
	}
	rest := sum(p.plan)
	for i, ph := range p.plan {
		if ph.Name == name {
			rest = sum(p.plan[i:])
			break
		}
	}
	fmt.Fprintf(p.w, "%s · %s · about %s left\n", p.run, name, (rest + p.leftAfter).Round(time.Second))
}
