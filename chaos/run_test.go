package chaos

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// The runner runs each scenario against each design in order, records
// each run's series, figures and checks, keeps going past a run that
// could not be carried out, and says which run and phase it is in with
// the time left by the plans.
func TestRunner(t *testing.T) {
	plan := func(quick bool) []Phase {
		if quick {
			return []Phase{{"steady", time.Second}, {"fault", 2 * time.Second}}
		}
		return []Phase{{"steady", time.Minute}, {"fault", time.Minute}}
	}
	ok := Scenario{Name: "S-ok", Plan: plan, Run: func(ctx context.Context, env *Env) ([]Figure, []Check, error) {
		if _, err := os.Stat(env.Dir); err != nil {
			return nil, nil, err
		}
		env.Phase("steady")
		env.Recorder.Request(0, time.Millisecond, "")
		env.Phase("fault")
		return []Figure{{Name: "lost", Value: 0}}, []Check{{Name: "nothing lost", OK: env.Design == DesignOutlast}}, nil
	}}
	broken := Scenario{Name: "S-broken", Plan: plan, Run: func(ctx context.Context, env *Env) ([]Figure, []Check, error) {
		return nil, nil, errors.New("redis-server would not start")
	}}
	var out bytes.Buffer
	r := &Runner{Scenarios: []Scenario{ok, broken}, Designs: []string{DesignOutlast, DesignNaive}, Quick: true,
		Dir: t.TempDir(), Progress: &out}
	rep := r.Run(context.Background(), "test machine")
	if len(rep.Results) != 4 || !rep.Quick || rep.Machine != "test machine" {
		t.Fatalf("report = %+v", rep)
	}
	o, n := rep.result("S-ok", DesignOutlast), rep.result("S-ok", DesignNaive)
	if !o.OK() || n.OK() || len(o.Seconds) != 1 || o.Figures[0].Name != "lost" {
		t.Errorf("S-ok: outlast %+v, naive %+v", o, n)
	}
	if b := rep.result("S-broken", DesignOutlast); b.Err != "redis-server would not start" || b.OK() {
		t.Errorf("S-broken = %+v, want its error recorded", b)
	}
	if rep.OK() {
		t.Error("report OK though Outlast's S-broken could not run")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	// The quick plans add up to 3 s a run, 12 s for the four.
	want := []string{"[1/4] S-ok · outlast · steady · about 12s left", "[1/4] S-ok · outlast · fault · about 11s left",
		"[2/4] S-ok · naive · steady · about 9s left", "[2/4] S-ok · naive · fault · about 8s left"}
	for i, w := range want {
		if i >= len(lines) || lines[i] != w {
			t.Fatalf("progress:\n%s\nwant line %d %q", out.String(), i, w)
		}
	}
}

// A cancelled run stops before the next scenario.
func TestRunnerCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := Scenario{Name: "S", Plan: func(bool) []Phase { return nil }, Run: func(context.Context, *Env) ([]Figure, []Check, error) {
		cancel()
		return nil, nil, nil
	}}
	rep := (&Runner{Scenarios: []Scenario{s, s}, Designs: []string{DesignOutlast}, Dir: t.TempDir()}).Run(ctx, "m")
	if len(rep.Results) != 1 {
		t.Errorf("%d runs after cancelling in the first, want 1", len(rep.Results))
	}
}
