package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast/internal/testenv"
)

func TestBenchCacheWindows(t *testing.T) {
	w := newWindows(30*time.Second, time.Second)
	for _, c := range []struct {
		name           string
		win            func() (int, int)
		wantLo, wantHi int
	}{
		{"before", w.before, 5, 9},
		{"db during", w.dbDuring, 11, 19},
		{"p99 during", w.p99During, 10, 19},
		{"after", w.after, 21, 29},
		{"after max", w.afterMax, 20, 29},
	} {
		if lo, hi := c.win(); lo != c.wantLo || hi != c.wantHi {
			t.Errorf("%s = %d–%d, want %d–%d", c.name, lo, hi, c.wantLo, c.wantHi)
		}
	}
	if got := newWindows(3*time.Second, 100*time.Millisecond); got != w {
		t.Errorf("3 s in 100 ms buckets = %+v, want the same windows as 30 s in 1 s buckets %+v", got, w)
	}
}

// TestBenchCacheSmoke runs a 3-second Redis-dies run (SIGKILL at 1 s, back
// empty at 2 s, 100 ms rows) against a real redis-server and PostgreSQL,
// and checks the report's shape: machine line, summary rows, targets,
// per-row tables and the fault events.
func TestBenchCacheSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real servers for several seconds")
	}
	if _, err := exec.LookPath(benchRedisBinary()); err != nil {
		testenv.Missing(t, "redis-server binary", err)
	}
	dsn := testenv.PostgresDSN(t)
	out := filepath.Join(t.TempDir(), "report.md")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := runBenchCache(ctx, []string{"--scenario", "kill", "--duration", "3s", "--bucket", "100ms",
		"--rate", "200", "--keys", "1000", "--l1", "100", "--db", dsn, "--db-pool", "4",
		"--contenders", "outlast,aside", "--out", out}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench cache: %v\nstderr:\n%s", err, stderr.String())
	}
	report := stdout.String()
	written, err := os.ReadFile(out)
	if err != nil || string(written) != report {
		t.Errorf("--out file differs from stdout (err %v)", err)
	}
	for _, want := range []string{
		"Machine: nproc ",
		"#### SIGKILL (connection refused): summary",
		"| outlast cache | ",
		"| cache-aside (go-redis, no L1) | ",
		"#### Targets for the outlast cache",
		"| DB queries during the outage ≤ 1.2x before |",
		"| p99 during the outage ≤ 2x before |",
		"| no errors |",
		"| no second after the restart > 1.2x the DB rate before |",
		"- SIGKILL redis-server at 1.0",
		"- restart redis-server empty at 2.0",
		"- counters: L1 hits ",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// Every contender's summary row accounts for all 600 requests, and the
	// targets table says PASS or FAIL in every row.
	if n := len(regexp.MustCompile(`(?m)^\| (outlast cache|cache-aside \(go-redis, no L1\)) \|.* / 600 \|$`).FindAllString(report, -1)); n != 2 {
		t.Errorf("summary rows with 600 requests = %d, want 2\n%s", n, report)
	}
	if n := len(regexp.MustCompile(`(?m)^\| (DB|p99|no) .*\| (PASS|FAIL) \(.*\) \|$`).FindAllString(report, -1)); n != 4 {
		t.Errorf("target rows = %d, want 4", n)
	}
	// 30 rows per contender, 0 to 2.9 s, each with 20 requests (200 req/s).
	rows := regexp.MustCompile(`(?m)^\| (\d+(?:\.\d)?) \| \d+ \| 200 \| `).FindAllStringSubmatch(report, -1)
	if len(rows) != 60 {
		t.Fatalf("per-row table rows at 200 req/s = %d, want 60\n%s", len(rows), report)
	}
	if rows[0][1] != "0" || rows[29][1] != "2.9" || rows[30][1] != "0" {
		t.Errorf("row labels run %s…%s, then %s; want 0…2.9, then 0", rows[0][1], rows[29][1], rows[30][1])
	}
}
