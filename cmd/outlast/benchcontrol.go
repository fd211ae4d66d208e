package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/control"
	"github.com/outlast/outlast/internal/backoff"
	"github.com/outlast/outlast/internal/load"
	"github.com/outlast/outlast/internal/proc"
)

const benchControlSummary = `Measure how long a config change takes to reach every instance: three
'outlast serve' processes of this binary on one PostgreSQL database; each change is a PUT
/admin/v1/config, and its propagation is the time from just before the PUT is sent to the
moment the last of the three instances applied it (its applied_at heartbeat). Run with the
LISTEN/NOTIFY hint and with polling only (--control-poll-only), against the issue's targets;
the 30 s poll of the seed's own fix and Unleash's 15 s SDK refresh are computed alongside.

The report is Markdown, for BENCHMARKS.md.`

// controlBench is one run of `outlast bench control`.
type controlBench struct {
	DB            string
	Binary        string
	Changes       int
	Poll          time.Duration
	Modes         string
	ProgressEvery int
	Out           string

	stderr io.Writer
	dsn    string
	dir    string
}

// benchControlModes are the ways the instances learn of a change.
var benchControlModes = map[string]string{
	"notify": "LISTEN/NOTIFY hint (and the poll)",
	"poll":   "polling only (--control-poll-only)",
}

func runBenchControl(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench control", benchControlSummary, stdout, stderr)
	b := controlBench{stderr: stderr}
	fs.StringVar(&b.DB, "db", "", "PostgreSQL DSN; empty creates a fresh database on postgres://postgres@127.0.0.1:5432 and drops it at the end")
	fs.StringVar(&b.Binary, "binary", "", "the outlast binary to run the instances from; empty for this one (os.Executable)")
	fs.IntVar(&b.Changes, "changes", 200, "config changes per mode")
	fs.DurationVar(&b.Poll, "poll", control.PollIntervalDefault, "the instances' --control-poll")
	fs.StringVar(&b.Modes, "modes", "notify,poll", "comma-separated: notify (LISTEN/NOTIFY hint), poll (--control-poll-only)")
	fs.IntVar(&b.ProgressEvery, "progress-every", 50, "print a progress line every this many changes")
	fs.StringVar(&b.Out, "out", "", "also write the Markdown report to this file")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := b.validate(); err != nil {
		return fs.fail("%v", err)
	}
	var md bytes.Buffer
	err := b.run(ctx, &md)
	stdout.Write(md.Bytes())
	if b.Out != "" && md.Len() > 0 {
		err = errors.Join(err, os.WriteFile(b.Out, md.Bytes(), 0o644))
	}
	return err
}

func (b *controlBench) validate() error {
	if b.Changes <= 0 || b.ProgressEvery <= 0 || b.Poll <= 0 {
		return errors.New("--changes, --progress-every and --poll must be positive")
	}
	for _, m := range b.modes() {
		if _, ok := benchControlModes[m]; !ok {
			return fmt.Errorf("--modes: unknown mode %q: want notify or poll", m)
		}
	}
	if b.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("--binary: this binary's path: %w", err)
		}
		b.Binary = exe
	}
	return nil
}

func (b *controlBench) modes() []string {
	var out []string
	for _, m := range strings.Split(b.Modes, ",") {
		out = append(out, strings.TrimSpace(m))
	}
	return out
}

func (b *controlBench) progress(format string, args ...any) {
	fmt.Fprintf(b.stderr, "bench control: "+format+"\n", args...)
}

// controlRun is one mode's measurements, in microseconds.
type controlRun struct {
	mode string
	last *hdrhistogram.Histogram // PUT → the last of the three applied
	each *hdrhistogram.Histogram // PUT → each instance applied
	put  *hdrhistogram.Histogram // the PUT's own round trip
}

func (b *controlBench) run(ctx context.Context, md io.Writer) error {
	var err error
	if b.dir, err = os.MkdirTemp("", "outlast-bench-control-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	b.dsn = b.DB
	if b.dsn == "" {
		var drop func()
		if b.dsn, drop, err = createBenchDatabase(ctx, "control"); err != nil {
			return fmt.Errorf("database: %w", err)
		}
		defer drop()
	}
	var runs []controlRun
	for _, mode := range b.modes() {
		r, err := b.runMode(ctx, mode)
		if err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
		runs = append(runs, r)
	}
	b.report(ctx, md, runs)
	return nil
}

// benchInstances is how many instances a change must reach.
const benchInstances = 3

// controlInstance is one `outlast serve` of the benchmark.
type controlInstance struct {
	id  string
	api *client.Client // with the admin token
	p   *proc.Server
	// logs receives the process's output until it is stopped.
	logs *os.File
}

// stop stops the instance and closes its log.
func (in *controlInstance) stop() error {
	err := stopServe(in.p)
	return errors.Join(err, in.logs.Close())
}

// runMode starts three instances in mode, makes Changes changes through
// the first one and measures each.
func (b *controlBench) runMode(ctx context.Context, mode string) (_ controlRun, err error) {
	b.progress("%s: starting %d instances", mode, benchInstances)
	insts, err := b.startInstances(ctx, mode)
	defer func() {
		for _, in := range insts {
			err = errors.Join(err, in.stop())
		}
	}()
	if err != nil {
		return controlRun{}, err
	}
	run := controlRun{mode: mode, last: load.NewHistogram(), each: load.NewHistogram(), put: load.NewHistogram()}
	api := insts[0].api
	cfg, err := api.Config(ctx)
	if err != nil {
		return controlRun{}, err
	}
	for i := range b.Changes {
		if err := b.pause(ctx, mode); err != nil {
			return controlRun{}, err
		}
		if cfg, err = b.change(ctx, api, cfg, insts, &run); err != nil {
			return controlRun{}, fmt.Errorf("change %d: %w", i+1, err)
		}
		if n := i + 1; n%b.ProgressEvery == 0 || n == b.Changes {
			b.progress("%s: %d/%d changes; last of three so far p50 %s ms, p99 %s ms, max %s ms", mode, n, b.Changes,
				histMs(run.last, 50), histMs(run.last, 99), histMs(run.last, 100))
		}
	}
	return run, nil
}

// pause waits, in polling-only mode, a random time in [0, Poll) before a
// change, so that changes do not fall in step with the instances' poll
// ticks (each change waits for the last instance, right after whose
// tick the next one would otherwise be made).
func (b *controlBench) pause(ctx context.Context, mode string) error {
	if mode != "poll" {
		return nil
	}
	if !backoff.Sleep(ctx, time.Duration(rand.Int64N(int64(b.Poll)))) {
		return ctx.Err()
	}
	return nil
}

func (b *controlBench) startInstances(ctx context.Context, mode string) ([]*controlInstance, error) {
	token := "bench-" + randomHex(16)
	var insts []*controlInstance
	for i := range benchInstances {
		port, err := proc.FreePort()
		if err != nil {
			return insts, err
		}
		id := fmt.Sprintf("bench-%s-%d-%s", mode, i+1, randomHex(3))
		url := fmt.Sprintf("http://127.0.0.1:%d", port)
		dir := filepath.Join(b.dir, id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return insts, err
		}
		logs, err := os.Create(filepath.Join(dir, "serve.log"))
		if err != nil {
			return insts, err
		}
		// The channel is never called: the control plane is measured, and
		// serve needs one to start.
		args := []string{"--addr", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", dir, "--db", b.dsn,
			"--admin-token", token, "--instance-id", id, "--control-poll", b.Poll.String(), "--log-level", "warn",
			"--channel", "tcb=http://127.0.0.1:1", "--channel-secret", "tcb=unused"}
		if mode == "poll" {
			args = append(args, "--control-poll-only")
		}
		p, err := startServeProcess(ctx, b.Binary, args, url, logs)
		if err != nil {
			logs.Close()
			return insts, err
		}
		insts = append(insts, &controlInstance{id: id, api: client.New(url, token), p: p, logs: logs})
	}
	return insts, nil
}

// benchApplyTimeout bounds the wait for every instance to apply one
// change: a few polls, and then something is wrong.
func (b *controlBench) applyTimeout() time.Duration { return 5*b.Poll + 10*time.Second }

// benchHeartbeatPoll spaces the reads of the instances' heartbeats while
// waiting for a change to reach all of them. It does not limit the
// measurement, which is read from the heartbeats' applied_at.
const benchHeartbeatPoll = 5 * time.Millisecond

// change sets a new maintenance message through api, leaving
// maintenance on or off as it was, so that a bench against a --db that
// serves traffic pauses nothing (every change takes the same path: a new
// version, the whole document read and applied), then waits until every instance's heartbeat
// says it applied the new version and records when each did, from t0,
// taken just before the PUT is sent. applied_at is written by the
// instance right as it swaps the document in, on the same machine clock,
// so how often the heartbeats are read adds nothing to the numbers.
func (b *controlBench) change(ctx context.Context, api *client.Client, cur *outlast.ControlConfig, insts []*controlInstance, run *controlRun) (*outlast.ControlConfig, error) {
	next := cur.Clone()
	next.Maintenance.Message = fmt.Sprintf("outlast bench control, change %d", cur.Version+1)
	t0 := time.Now()
	stored, err := api.PutConfig(ctx, next, cur.Version, "outlast bench control")
	if err != nil {
		return nil, err
	}
	load.Record(run.put, time.Since(t0))
	ctx, cancel := context.WithTimeout(ctx, b.applyTimeout())
	defer cancel()
	t := time.NewTicker(benchHeartbeatPoll)
	defer t.Stop()
	for {
		at, err := appliedAt(ctx, api, insts, stored.Version)
		if err != nil {
			return nil, err
		}
		if len(at) == len(insts) {
			var last time.Duration
			for _, a := range at {
				d := a.Sub(t0)
				load.Record(run.each, d)
				last = max(last, d)
			}
			load.Record(run.last, last)
			return stored, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%d of %d instances applied version %d: %w", len(at), len(insts), stored.Version, ctx.Err())
		case <-t.C:
		}
	}
}

// appliedAt returns when each instance that applied version (or a later
// one) did, by the heartbeats.
func appliedAt(ctx context.Context, api *client.Client, insts []*controlInstance, version int64) ([]time.Time, error) {
	list, err := api.Instances(ctx)
	if err != nil {
		return nil, err
	}
	var at []time.Time
	for _, in := range insts {
		for _, h := range list.Instances {
			if h.ID == in.id && h.AppliedVersion >= version {
				at = append(at, h.AppliedAt)
			}
		}
	}
	return at, nil
}

// histMs is quantile q of h (microseconds) in milliseconds, without the
// unit; q 100 is the maximum.
func histMs(h *hdrhistogram.Histogram, q float64) string {
	if q >= 100 {
		return fmtMs(h.Max())
	}
	return fmtMs(h.ValueAtQuantile(q))
}
