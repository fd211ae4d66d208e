// Command outlast is the one binary of the Outlast payout service: serve,
// demo, partnersim, admin, audit, reconcile, deadletters, exceptions and
// bench. Every flag has an OUTLAST_* environment equivalent (--admin-token
// ↔ OUTLAST_ADMIN_TOKEN); a flag on the command line wins over the
// environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
)

const usage = `outlast — a payout service that survives the failure of any one dependency.

Usage:
  outlast <command> [flags]

Commands:
  serve       run the service (HTTP API, committer, dispatcher)
  demo        run the service with two simulated partner banks and traffic, then audit
  partnersim  run one simulated partner bank
  admin       maintenance on/off, channel switch, status of every instance, config history (admin API)
  audit       check the ledger against its journal and against partners' records
  reconcile   compare the ledger with partners' records, repair missed successes and failures, list the rest
  deadletters list or replay the notifications that could never be applied (admin API)
  exceptions  list, show and resolve what only a human may settle: paid but failed, paid twice, mismatches (admin API)
  bench       measure ingest (vs the naive design), the read cache (vs go-redis/cache, cache-aside) or control plane propagation

Run 'outlast <command> --help' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runMain runs the command args and returns the process's exit status: 0,
// also for --help; 2 for a usage error (reported by the command already);
// 1 for any other failure, printed here.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := run(ctx, args, stdout, stderr)
	var ex exitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ex):
		return int(ex)
	}
	fmt.Fprintln(stderr, "outlast:", err)
	return 1
}

// exitError ends the process with a status and no further message: the
// command already said what went wrong.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError(2)
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stdout, stderr)
	case "demo":
		return runDemo(ctx, rest, stdout, stderr)
	case "partnersim":
		return runPartnersim(ctx, rest, stdout, stderr)
	case "admin":
		return runAdmin(ctx, rest, stdout, stderr)
	case "audit":
		return runAudit(ctx, rest, stdout, stderr)
	case "reconcile":
		return runReconcile(ctx, rest, stdout, stderr)
	case "deadletters":
		return runDeadLetters(ctx, rest, stdout, stderr)
	case "exceptions":
		return runExceptions(ctx, rest, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 && rest[0] != cmd {
			// outlast help serve: the command's own --help.
			return run(ctx, []string{rest[0], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "outlast: unknown command %q\n\n%s", cmd, usage)
	return exitError(2)
}

// command runs one command with its arguments.
type command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// runSubcommand runs the subcommand args[0] of command name. Without one
// it prints usage on stderr and exits 2; on help, usage on stdout.
func runSubcommand(ctx context.Context, name, usage string, subs map[string]command, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError(2)
	}
	if sub, ok := subs[args[0]]; ok {
		return sub(ctx, args[1:], stdout, stderr)
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "outlast %s: unknown command %q\n\n%s", name, args[0], usage)
	return exitError(2)
}

// flagSet is one command's flags. --help prints the command's usage to
// stdout; a bad flag or environment value is reported once, on stderr,
// and ends the command with exit status 2.
type flagSet struct {
	*flag.FlagSet
	summary        string
	stdout, stderr io.Writer
}

// newFlagSet returns the flags of command name ("serve", "deadletters
// list"); summary is what --help prints above the flags.
func newFlagSet(name, summary string, stdout, stderr io.Writer) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// parse reports errors and help itself, each once.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, summary: summary, stdout: stdout, stderr: stderr}
}

// usage prints the command's usage and every flag with its default.
func (fs *flagSet) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: outlast %s [flags]\n\n%s\n\nFlags (each also read from OUTLAST_<NAME>, e.g. --data-dir ↔ OUTLAST_DATA_DIR):\n", fs.Name(), fs.summary)
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	// The flag package writes -name; both forms parse, and the
	// documentation writes --name.
	fmt.Fprint(w, strings.ReplaceAll("\n"+b.String(), "\n  -", "\n  --")[1:])
}

// fail reports a usage error once, with where to find the flags, and
// returns the error that ends the command with exit status 2.
func (fs *flagSet) fail(format string, args ...any) error {
	fmt.Fprintf(fs.stderr, "outlast %s: %s\nRun 'outlast %s --help' for its flags.\n", fs.Name(), fmt.Sprintf(format, args...), fs.Name())
	return exitError(2)
}

// parse applies OUTLAST_* environment values first, then the command
// line, so a flag given explicitly always wins. On --help it prints the
// usage and returns flag.ErrHelp.
func (fs *flagSet) parse(args []string) error {
	var bad error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok || bad != nil {
			return
		}
		if err := f.Value.Set(v); err != nil {
			bad = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
		}
	})
	if bad != nil {
		return fs.fail("%v", bad)
	}
	return fs.parseArgs(args)
}

// parseArgs parses args alone, without the environment.
func (fs *flagSet) parseArgs(args []string) error {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.usage(fs.stdout)
		return err
	case err != nil:
		// The flag package names a flag -name; the documentation, --name.
		return fs.fail("%s", flagName.ReplaceAllString(err.Error(), "$1--$2"))
	}
	return nil
}

// flagName finds a flag's name in the flag package's error messages.
var flagName = regexp.MustCompile(`(flag |: )-([A-Za-z])`)

// dataDirDefault is where serve, audit and the admin commands look for
// the embedded ledger, and under which demo runs are kept.
const dataDirDefault = "outlast-data"

func envName(flagName string) string {
	return "OUTLAST_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// secret returns the value of flag --name or, given --name-file, the
// contents of that file without its trailing line break, so that a secret
// need not show in ps. Giving both is an error.
func secret(name, value, file string) (string, error) {
	if file == "" {
		return value, nil
	}
	if value != "" {
		return "", fmt.Errorf("both --%s (or %s) and --%s-file (or %s) are given: give one", name, envName(name), name, envName(name+"-file"))
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", name, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("--%s-file %s is empty", name, file)
	}
	return s, nil
}

// mapFlag is a repeatable name=value flag (also comma-separated), used for
// --channel tcb=http://... and --channel-secret tcb=....
type mapFlag map[string]string

func (m mapFlag) String() string {
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (m mapFlag) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok || k == "" || v == "" {
			return fmt.Errorf("want name=value, got %q", part)
		}
		m[k] = v
	}
	return nil
}
