package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/store"
)

// outlastCLI runs the outlast command in-process, as the binary would, and
// returns its exit status and output.
func outlastCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = runMain(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// commandFlags lists every command and subcommand with flags it must
// document under --help, each with its default where it has one.
var commandFlags = []struct {
	args  []string
	flags []string
}{
	{[]string{"serve"}, []string{"--data-dir string", `(default "outlast-data")`, "--db ", "--nats ", "--redis ", "--addr ",
		`(default "127.0.0.1:8080")`, "--admin-token ", "--admin-token-file ", "--channel name=base-url", "--channel-secret name=secret", "--channel-secret-file name=path",
		"--active-channel ", "--channel-timeout ", "--channel-breaker-delay ", "--channel-eject-base ", "--channel-eject-max ",
		"--channel-return-window ", "--log-level ", "--reject-deliveries-max "}},
	{[]string{"demo"}, []string{"--addr ", "--data-dir ", "--keep-data", "--switch-every ", "(default 5s)", "--rate ", "(default 50)", "--duration ", "--accounts ",
		"--drain-timeout ", "(default 1m0s)", "--pay-delay ", "--fail-rate ", "--duplicate-rate ", "--reorder-rate "}},
	{[]string{"partnersim"}, []string{"--addr ", `(default "127.0.0.1:9001")`, "--name ", "--webhook ", "--secret ", "--secret-file ",
		"--pay-delay ", "--fail-rate ", "--error-rate ", "--latency ", "--down", "--drop-rate ", "--seed "}},
	{[]string{"audit"}, []string{"--data-dir ", `(default "outlast-data")`, "--db ", "--partner channel=base-url"}},
	{[]string{"reconcile"}, []string{"--data-dir ", `(default "outlast-data")`, "--db ", "--partner channel=base-url", "--json", "--dry-run"}},
	{[]string{"deadletters", "list"}, []string{"--url ", `(default "http://127.0.0.1:8080")`, "--admin-token ", "--admin-token-file ",
		"--data-dir ", "--limit ", "(default 100)", "--json"}},
	{[]string{"deadletters", "replay"}, []string{"--url ", "--admin-token ", "--admin-token-file ", "--data-dir ", "--all"}},
	{[]string{"exceptions", "list"}, []string{"--url ", `(default "http://127.0.0.1:8080")`, "--admin-token ", "--admin-token-file ",
		"--data-dir ", "--status ", `(default "open")`, "--kind ", "--payout ", "--account ", "--before ", "--limit ", "(default 100)", "--json"}},
	{[]string{"exceptions", "show"}, []string{"--url ", "--admin-token ", "--admin-token-file ", "--data-dir ", "--json"}},
	{[]string{"exceptions", "resolve"}, []string{"--url ", "--admin-token ", "--admin-token-file ", "--data-dir ", "--action ", "--reason ", "--amount "}},
	{[]string{"admin", "maintenance"}, []string{"--url ", `(default "http://127.0.0.1:8080")`, "--admin-token ", "--admin-token-file ",
		"--data-dir ", "--reason ", "--wait ", "(default 10s)", "--message ", "--retry-after ", "--local"}},
	{[]string{"admin", "channel", "use"}, []string{"--url ", "--admin-token ", "--reason ", "--wait ", "--force"}},
	{[]string{"admin", "channel", "enable"}, []string{"--url ", "--reason ", "--wait ", "--force"}},
	{[]string{"admin", "channel", "disable"}, []string{"--url ", "--reason ", "--wait "}},
	{[]string{"admin", "status"}, []string{"--url ", "--admin-token ", "--admin-token-file ", "--data-dir ", "--json"}},
	{[]string{"admin", "history"}, []string{"--url ", "--admin-token ", "--limit ", "(default 20)"}},
	{[]string{"bench", "ingest"}, []string{"--db ", "--nats ", "--notifications ", "(default 40000)", "--concurrency ",
		"--half-rate-for ", "--cpuprofile "}},
	{[]string{"bench", "cache"}, []string{"--scenario ", `(default "both")`, "--duration ", "--rate ", "--keys ",
		"--contenders ", "--stampede-rate "}},
}

// TestHelp: --help and -h on every command and subcommand exit 0 and
// print the usage, with every flag and its default, on stdout.
func TestHelp(t *testing.T) {
	for _, c := range commandFlags {
		for _, help := range []string{"--help", "-h"} {
			args := append(append([]string{}, c.args...), help)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				code, out, errOut := outlastCLI(t, args...)
				if code != 0 || errOut != "" {
					t.Fatalf("outlast %s = exit %d, stderr %q; want exit 0 and nothing on stderr", strings.Join(args, " "), code, errOut)
				}
				want := "Usage: outlast " + strings.Join(c.args, " ")
				if !strings.HasPrefix(out, want) {
					t.Errorf("usage starts %q, want %q", firstLines(out, 1), want)
				}
				for _, f := range c.flags {
					if !strings.Contains(out, f) {
						t.Errorf("usage does not mention %q:\n%s", f, out)
					}
				}
			})
		}
	}
}

// TestCommandLists: the commands with subcommands, and outlast itself,
// list them on help (exit 0, stdout) and when none is given (exit 2,
// stderr); `outlast help serve` is serve's --help.
func TestCommandLists(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		code     int
		onStdout bool
		want     []string
	}{
		{nil, 2, false, []string{"serve", "demo", "partnersim", "admin", "audit", "reconcile", "deadletters", "exceptions", "bench"}},
		{[]string{"help"}, 0, true, []string{"serve", "demo", "partnersim", "admin", "audit", "reconcile", "deadletters", "exceptions", "bench"}},
		{[]string{"admin"}, 2, false, []string{"admin maintenance on|off", "--local", "admin channel use", "admin status", "admin history"}},
		{[]string{"admin", "--help"}, 0, true, []string{"admin maintenance on|off", "admin channel enable|disable"}},
		{[]string{"admin", "channel"}, 2, false, []string{"admin channel use NAME", "admin channel disable NAME"}},
		{[]string{"--help"}, 0, true, []string{"serve", "demo", "audit"}},
		{[]string{"help", "serve"}, 0, true, []string{"Usage: outlast serve", "--channel"}},
		{[]string{"deadletters"}, 2, false, []string{"deadletters list", "deadletters replay"}},
		{[]string{"deadletters", "--help"}, 0, true, []string{"deadletters list", "deadletters replay"}},
		{[]string{"exceptions", "--help"}, 0, true, []string{"exceptions [list]", "exceptions show ID", "exceptions resolve ID"}},
		{[]string{"exceptions", "help"}, 0, true, []string{"exceptions [list]", "book_paid"}},
		{[]string{"bench"}, 2, false, []string{"bench ingest", "bench cache"}},
		{[]string{"bench", "--help"}, 0, true, []string{"bench ingest", "bench cache"}},
		{[]string{"bench", "help"}, 0, true, []string{"bench ingest", "bench cache"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := outlastCLI(t, tc.args...)
			printed, other := out, errOut
			if !tc.onStdout {
				printed, other = errOut, out
			}
			if code != tc.code || other != "" {
				t.Fatalf("outlast %s = exit %d, stdout %q, stderr %q; want exit %d and output on one stream only",
					strings.Join(tc.args, " "), code, out, errOut, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(printed, w) {
					t.Errorf("output does not mention %q:\n%s", w, printed)
				}
			}
		})
	}
}

// TestUnknownFlagReportedOnce: a flag a command does not have is named
// once on stderr, with where to find the flags, and exits 2 before the
// command does anything.
func TestUnknownFlagReportedOnce(t *testing.T) {
	cases := [][]string{{"nope"}, {"bench", "nope"}, {"deadletters", "nope"}, {"admin", "nope"}, {"admin", "channel", "nope"}}
	for _, c := range commandFlags {
		cases = append(cases, append(append([]string{}, c.args...), "--no-such-flag"))
	}
	cases = append(cases, []string{"deadletters", "replay", "log:1", "--no-such-flag"}, []string{"exceptions", "--no-such-flag"},
		[]string{"exceptions", "resolve", "7", "--no-such-flag"}, []string{"exceptions", "show", "seven"}, []string{"exceptions", "nope"},
		[]string{"admin", "maintenance", "on", "--no-such-flag"}, []string{"admin", "channel", "use", "tcb", "--no-such-flag"}, []string{"demo", "--rate=fast"})
	for _, args := range cases {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, errOut := outlastCLI(t, args...)
			bad := args[len(args)-1]
			if code != 2 || out != "" {
				t.Fatalf("outlast %s = exit %d, stdout %q; want exit 2 and nothing on stdout", strings.Join(args, " "), code, out)
			}
			if n := strings.Count(errOut, strings.TrimLeft(strings.SplitN(bad, "=", 2)[0], "-")); n != 1 {
				t.Errorf("stderr names %q %d times, want once:\n%s", bad, n, errOut)
			}
		})
	}
}

// TestAuditRefusesNoLedger: audit on a directory or database without a
// ledger says so and exits 2, and creates nothing.
func TestAuditRefusesNoLedger(t *testing.T) {
	empty := t.TempDir()
	missing := filepath.Join(t.TempDir(), "mistyped")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"audit", "--data-dir", empty}, "holds no ledger"},
		{[]string{"audit", "--data-dir", missing}, "does not exist"},
	} {
		code, out, errOut := outlastCLI(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) || strings.Contains(out, "audit: OK") {
			t.Errorf("outlast %s = exit %d, stdout %q, stderr %q; want exit 2 and %q", strings.Join(tc.args, " "), code, out, errOut, tc.want)
		}
	}
	if entries, err := os.ReadDir(empty); err != nil || len(entries) != 0 {
		t.Errorf("audit left %v (%v) in the empty directory, want nothing", entries, err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("audit of a mistyped directory: Stat = %v, want it still missing", err)
	}

	dsn := testenv.PostgresDSN(t)
	code, _, errOut := outlastCLI(t, "audit", "--db", dsn)
	if code != 2 || !strings.Contains(errOut, "no ledger") {
		t.Errorf("audit --db <empty database> = exit %d, stderr %q; want exit 2 and no ledger", code, errOut)
	}
	if db, err := store.OpenExisting(context.Background(), dsn); outlast.ErrorCode(err) != outlast.ENOTFOUND {
		if err == nil {
			db.Close()
		}
		t.Errorf("after audit, OpenExisting(empty database) = %v, want still no ledger", err)
	}
}

// TestAuditFindsNewestDemoRun: a data directory that holds no ledger but
// demo runs kept with --keep-data is audited as its newest run, named.
func TestAuditFindsNewestDemoRun(t *testing.T) {
	dir := t.TempDir()
	for i, run := range []string{"demo-20250101-120000", "demo-20250102-090000"} {
		db, err := store.Open(context.Background(), filepath.Join(dir, run, "outlast.db"))
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j <= i; j++ {
			ledgertest.Seed(t, db, fmt.Sprintf("run%d-%d", i, j), 100)
		}
		db.Close()
	}
	code, out, errOut := outlastCLI(t, "audit", "--data-dir", dir)
	newest := filepath.Join(dir, "demo-20250102-090000")
	for _, want := range []string{"auditing " + filepath.Join(newest, "outlast.db"), "ledger: 2 accounts", "audit: OK",
		"--data-dir " + filepath.Join(dir, "demo-20250101-120000")} {
		if !strings.Contains(out, want) {
			t.Errorf("audit output lacks %q:\n%s", want, out)
		}
	}
	if code != 0 || errOut != "" {
		t.Errorf("audit = exit %d, stderr %q; want 0 and nothing", code, errOut)
	}
}

// TestServeRefusesMissingConfig: serve without what it needs lists every
// missing piece with an example and exits 2, before creating anything.
func TestServeRefusesMissingConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"--channel name=url", "Example", "outlast demo"}},
		{[]string{"--channel", "tcb=http://127.0.0.1:1"}, []string{"--channel-secret tcb=secret"}},
		{[]string{"--channel", "tcb=127.0.0.1:1", "--channel-secret", "tcb=s,acb=s", "--active-channel", "xyz", "--log-level", "loud", "--addr", "8080"},
			[]string{"http:// or https://", "no --channel acb", "--active-channel xyz", "--log-level loud", "--addr 8080"}},
		{[]string{"--channel", "tcb=http://127.0.0.1:1", "--channel-secret", "tcb=s", "--db", "postgres://127.0.0.1:1/none"},
			[]string{"--admin-token-file: required with an external --db"}},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		args := append([]string{"serve", "--data-dir", dir, "--addr", "127.0.0.1:0"}, tc.args...)
		code, out, errOut := outlastCLI(t, args...)
		if code != 2 || out != "" {
			t.Errorf("outlast %s = exit %d, stdout %q; want exit 2 and nothing on stdout", strings.Join(args, " "), code, out)
		}
		for _, w := range append(tc.want, "missing or wrong configuration") {
			if !strings.Contains(errOut, w) {
				t.Errorf("outlast %s: stderr lacks %q:\n%s", strings.Join(args, " "), w, errOut)
			}
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("outlast %s created %s (Stat = %v); want nothing created", strings.Join(args, " "), dir, err)
		}
	}
}

// lockedBuffer is a bytes.Buffer a command writes while a test reads it.
type lockedBuffer struct {
	syncWriter // writes to b under its mu
	b          bytes.Buffer
}

func newLockedBuffer() *lockedBuffer {
	l := &lockedBuffer{}
	l.w = &l.b
	return l
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServe runs `outlast serve args...` in-process until the test ends
// and returns once it says where its admin token is.
func startServe(t *testing.T, args ...string) (stdout *lockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := newLockedBuffer(), newLockedBuffer()
	done := make(chan int, 1)
	go func() { done <- runMain(ctx, append([]string{"serve", "--log-level", "error"}, args...), out, errOut) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d: %s", code, errOut.String())
		}
	})
	testenv.WaitFor(t, 30*time.Second, "serve to print its admin token", func() bool {
		select {
		case code := <-done:
			done <- code
			t.Fatalf("serve exited %d: %s", code, errOut.String())
		default:
		}
		return strings.Contains(out.String(), "admin token:")
	})
	return out
}

// TestServeSaysWhereTheAdminTokenIs: generated, the path of its file;
// given, which flag gave it (never the token itself).
func TestServeSaysWhereTheAdminTokenIs(t *testing.T) {
	dir := t.TempDir()
	bank := []string{"--addr", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "--channel", "tcb=http://127.0.0.1:1", "--channel-secret", "tcb=s"}
	out := startServe(t, append([]string{"--data-dir", dir}, bank...)...)
	path := filepath.Join(dir, "admin-token")
	tok, err := os.ReadFile(path)
	if err != nil || !strings.Contains(out.String(), "admin token: in "+path+" (generated now)") {
		t.Errorf("serve printed %q, token file %q (%v); want the generated token's path", out.String(), tok, err)
	}

	bank[1] = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	out = startServe(t, append([]string{"--data-dir", t.TempDir(), "--admin-token", "tok-given"}, bank...)...)
	if s := out.String(); !strings.Contains(s, "admin token: the one given with --admin-token") || strings.Contains(s, "tok-given") {
		t.Errorf("serve printed %q; want it to name the flag and not show the token", s)
	}
}

// writeSecret writes a secret file as an operator would: with a newline.
func writeSecret(t *testing.T, secret string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSecretsFromFiles: the admin token and the channel secrets can be
// files, read without their newline, for serve and for the admin CLI.
func TestSecretsFromFiles(t *testing.T) {
	tokenFile, tcbFile := writeSecret(t, "token-from-file"), writeSecret(t, "tcb-from-file")
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	out := startServe(t, "--data-dir", t.TempDir(), "--addr", addr, "--admin-token-file", tokenFile,
		"--channel", "tcb=http://127.0.0.1:1", "--channel-secret-file", "tcb="+tcbFile)
	if !strings.Contains(out.String(), "admin token: the one in "+tokenFile) {
		t.Errorf("serve printed %q; want it to name the token file", out.String())
	}
	url := "http://" + addr
	if _, err := client.New(url, "token-from-file").CreateClient(context.Background(), "c1"); err != nil {
		t.Errorf("admin call with the file's token: %v", err)
	}
	body := []byte(`{"event_id":"e1","payout_id":"p1","partner_ref":"r1","status":"succeeded","occurred_at":"2025-01-01T00:00:00Z"}`)
	for secret, want := range map[string]int{"tcb-from-file": 200, "tcb-from-file\n": 401} {
		if st, code := raw(t, "POST", url+"/v1/partners/tcb/notifications", signedHeaders([]byte(secret), time.Now(), body), body); st != want {
			t.Errorf("webhook signed with %q = %d %s, want %d", secret, st, code, want)
		}
	}
	code, stdout, errOut := outlastCLI(t, "deadletters", "list", "--url", url, "--admin-token-file", tokenFile)
	if code != 0 || !strings.Contains(stdout, "no dead letters") {
		t.Errorf("deadletters list --admin-token-file = exit %d, %q, %q; want the listing", code, stdout, errOut)
	}
}

// TestSecretGivenTwice: a secret given both as a value and as a file, or
// as an empty or missing file, is refused once with exit 2.
func TestSecretGivenTwice(t *testing.T) {
	file, empty := writeSecret(t, "s"), writeSecret(t, "")
	serve := []string{"serve", "--data-dir", filepath.Join(t.TempDir(), "data"), "--channel", "tcb=http://127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(serve, "--channel-secret", "tcb=s", "--admin-token", "t", "--admin-token-file", file), "both --admin-token (or OUTLAST_ADMIN_TOKEN) and --admin-token-file"},
		{append(serve, "--channel-secret", "tcb=s", "--channel-secret-file", "tcb="+file), "both --channel-secret (or OUTLAST_CHANNEL_SECRET) and --channel-secret-file"},
		{append(serve, "--channel-secret-file", "tcb="+empty), "is empty"},
		{append(serve, "--channel-secret-file", "tcb="+file+".missing"), "no such file"},
		{[]string{"deadletters", "list", "--admin-token", "t", "--admin-token-file", file}, "both --admin-token (or OUTLAST_ADMIN_TOKEN) and --admin-token-file"},
		{[]string{"deadletters", "replay", "--all", "--admin-token", "t", "--admin-token-file", file}, "both --admin-token (or OUTLAST_ADMIN_TOKEN) and --admin-token-file"},
		{[]string{"partnersim", "--webhook", "http://127.0.0.1:1", "--secret", "s", "--secret-file", file}, "both --secret (or OUTLAST_SECRET) and --secret-file"},
	} {
		code, out, errOut := outlastCLI(t, tc.args...)
		if code != 2 || out != "" || strings.Count(errOut, tc.want) != 1 {
			t.Errorf("outlast %s = exit %d, stdout %q, stderr %q; want exit 2 and %q once", strings.Join(tc.args, " "), code, out, errOut, tc.want)
		}
	}
	if _, err := os.Stat(serve[2]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("serve with bad secrets created %s (Stat = %v)", serve[2], err)
	}
}
