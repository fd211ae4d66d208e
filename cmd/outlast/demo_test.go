package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/outlast/outlast/internal/testenv"
)

// demoArgs is a short demo on a free port that switches banks often.
func demoArgs(t *testing.T, extra ...string) []string {
	return append([]string{"demo", "--addr", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "--duration", "2s",
		"--switch-every", "500ms", "--rate", "20", "--accounts", "2", "--pay-delay", "20ms", "--drain-timeout", "30s"}, extra...)
}

var (
	bankLine = regexp.MustCompile(`banks: tcb accepted (\d+) .*; acb accepted (\d+) `)
	curlLine = regexp.MustCompile(`(?m)^  try +curl -s -H 'Authorization: Bearer olk_\S+' http://127\.0\.0\.1:\d+/v1/accounts/demo-\w+-acct-0$`)
)

// TestDemo: both banks get payouts, the banner has a curl to copy, the
// outcomes and the status numbers are explained, the audit passes, and
// the data directory is gone afterwards.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("demo run skipped in -short mode")
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where the demo's temporary data directory goes
	t.Chdir(t.TempDir())    // where --keep-data would keep it
	code, out, errOut := outlastCLI(t, demoArgs(t)...)
	if code != 0 {
		t.Fatalf("demo = exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	m := bankLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("demo output has no per-bank line:\n%s", out)
	}
	for i, bank := range []string{"tcb", "acb"} {
		if n, _ := strconv.Atoi(m[i+1]); n == 0 {
			t.Errorf("bank %s accepted no payouts:\n%s", bank, out)
		}
	}
	if !curlLine.MatchString(out) {
		t.Errorf("demo output has no curl line with the API key and an account:\n%s", out)
	}
	for _, want := range []string{"(running total)", "(current)", "stale: older than", "audit: OK", "data removed"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if entries, err := os.ReadDir(tmp); err != nil || len(entries) != 0 {
		t.Errorf("demo left %v (%v) in the temporary directory, want nothing", entries, err)
	}
	if _, err := os.Stat(dataDirDefault); err == nil {
		t.Errorf("demo without --keep-data created %s", dataDirDefault)
	}
}

// TestDemoKeepData: --keep-data keeps the run under outlast-data, and a
// plain `outlast audit` there audits it.
func TestDemoKeepData(t *testing.T) {
	if testing.Short() {
		t.Skip("demo run skipped in -short mode")
	}
	t.Chdir(t.TempDir())
	code, out, errOut := outlastCLI(t, demoArgs(t, "--keep-data")...)
	kept := regexp.MustCompile(`data kept in (outlast-data/demo-[0-9-]+);`).FindStringSubmatch(out)
	if code != 0 || kept == nil {
		t.Fatalf("demo --keep-data = exit %d, want 0 and where the data is kept\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	code, out, errOut = outlastCLI(t, "audit")
	if code != 0 || !strings.Contains(out, "auditing "+kept[1]+"/outlast.db") || !strings.Contains(out, "audit: OK") {
		t.Errorf("audit after demo --keep-data = exit %d, stdout %q, stderr %q; want %s audited and OK", code, out, errOut, kept[1])
	}
}
