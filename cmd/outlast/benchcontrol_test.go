package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast/internal/testenv"
)

// TestBenchControlSmoke runs `outlast bench control` for 5 changes per
// mode on three real serve processes and checks the report's shape: the
// machine line, one row per mode with its 5 changes and a verdict, the
// computed pollers, a histogram per mode, and the progress lines.
func TestBenchControlSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs six serve processes")
	}
	dsn := testenv.PostgresDSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := runBenchControl(ctx, []string{"--changes", "5", "--progress-every", "5", "--poll", "200ms",
		"--db", dsn, "--binary", outlastBinary(t)}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench control: %v\nstderr:\n%s", err, stderr.String())
	}
	report := stdout.String()
	for _, want := range []string{
		"Machine: nproc ",
		"each a separate process of " + outlastBinary(t),
		"| the seed's own fix (\"self-poll config from DB every 30 seconds\", seed 000) | 30s | 15.00 s | 29.70 s | 23.81 s | 29.90 s |",
		"| Unleash server-side SDKs (default refresh interval 15 s) | 15s | 7.50 s |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q\n%s", want, report)
		}
	}
	rows := regexp.MustCompile(`(?m)^\| (LISTEN/NOTIFY hint \(and the poll\)|polling only \(--control-poll-only\)) \| 5 \|.*\| < (100ms|300ms) \| (PASS|FAIL) \|$`)
	if n := len(rows.FindAllString(report, -1)); n != 2 {
		t.Errorf("result rows with 5 changes = %d, want 2\n%s", n, report)
	}
	if n := strings.Count(report, "#[Max     ="); n != 2 {
		t.Errorf("histograms = %d, want 2", n)
	}
	for _, mode := range []string{"notify", "poll"} {
		if !strings.Contains(stderr.String(), "bench control: "+mode+": 5/5 changes") {
			t.Errorf("no progress line for %s:\n%s", mode, stderr.String())
		}
	}
}

func TestBenchControlFlags(t *testing.T) {
	for _, args := range [][]string{{"--modes", "notify,push"}, {"--changes", "0"}} {
		var stdout, stderr bytes.Buffer
		err := runBenchControl(context.Background(), args, &stdout, &stderr)
		if ex := exitError(0); !errors.As(err, &ex) || ex != 2 {
			t.Errorf("bench control %v = %v, want exit status 2", args, err)
		}
	}
}
