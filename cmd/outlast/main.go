// Command outlast is the one binary of the Outlast payout service: serve,
// demo, partnersim, audit, deadletters and bench. Every flag has an
// OUTLAST_* environment equivalent (--admin-token ↔ OUTLAST_ADMIN_TOKEN); a
// flag on the command line wins over the environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
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
  audit       check the ledger against its journal and against partners' records
  deadletters list or replay the notifications that could never be applied (admin API)
  bench       measure ingest (vs the naive design) or the read cache (vs go-redis/cache, cache-aside)

Run 'outlast <command> --help' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		var ex exitError
		if errors.As(err, &ex) {
			os.Exit(int(ex))
		}
		fmt.Fprintln(os.Stderr, "outlast:", err)
		os.Exit(1)
	}
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
	case "audit":
		return runAudit(ctx, rest, stdout, stderr)
	case "deadletters":
		return runDeadLetters(ctx, rest, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "outlast: unknown command %q\n\n%s", cmd, usage)
	return exitError(2)
}

// newFlagSet returns a FlagSet that prints its usage to stderr and whose
// flags are parsed by parseFlags.
func newFlagSet(name, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: outlast %s [flags]\n\n%s\n\nFlags (each also read from OUTLAST_<NAME>, e.g. --data-dir ↔ OUTLAST_DATA_DIR):\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags applies OUTLAST_* environment values first, then the command
// line, so a flag given explicitly always wins.
func parseFlags(fs *flag.FlagSet, args []string) error {
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
		return bad
	}
	return fs.Parse(args)
}

func envName(flagName string) string {
	return "OUTLAST_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
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
