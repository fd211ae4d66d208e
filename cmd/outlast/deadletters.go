package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
)

const deadLettersUsage = `Usage:
  outlast deadletters list [--limit N] [--json] [flags]
  outlast deadletters replay [flags] ID... | --all

Notifications that could never be applied end, after a bound on deliveries,
in the dead letters with their reason: the log's dead-letter stream (ids
log:<n>) and the database's (ids inbox:<n>). Once the cause is mended — the
payout exists now — replay hands them back to the path they came by, where
they are applied like any delivery (once: a duplicate is ignored).

Run 'outlast deadletters list --help' or 'outlast deadletters replay --help' for flags.
`

func runDeadLetters(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runSubcommand(ctx, "deadletters", deadLettersUsage,
		map[string]command{"list": runDeadLettersList, "replay": runDeadLettersReplay}, args, stdout, stderr)
}

// adminFlags are the flags of a command that talks to a running service's
// admin API.
type adminFlags struct {
	url, token, tokenFile, dataDir string
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.url, "url", "http://127.0.0.1:8080", "base URL of the running service")
	fs.StringVar(&a.token, "admin-token", "", "admin bearer token; if empty, the one serve generated into --data-dir")
	fs.StringVar(&a.tokenFile, "admin-token-file", "", "file holding the admin token, instead of --admin-token (which ps shows)")
	fs.StringVar(&a.dataDir, "data-dir", dataDirDefault, "where an embedded serve keeps its generated admin token")
}

// parseNoArgs parses the flags of a command that takes no arguments and
// returns its admin API client; an error has been reported (exit 2).
func (a *adminFlags) parseNoArgs(fs *flagSet, args []string) (*client.Client, error) {
	if err := fs.parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fs.fail("takes no arguments, got %q", fs.Args())
	}
	api, err := a.client()
	if err != nil {
		return nil, fs.fail("%v", err)
	}
	return api, nil
}

// client returns the admin API client, reading the token serve generated
// in embedded mode when none was given.
func (a *adminFlags) client() (*client.Client, error) {
	token, err := secret("admin-token", a.token, a.tokenFile)
	if err != nil {
		return nil, err
	}
	if token == "" {
		b, err := os.ReadFile(filepath.Join(a.dataDir, adminTokenFile))
		if err != nil {
			return nil, fmt.Errorf("no --admin-token or --admin-token-file, and none generated in --data-dir: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	return client.New(strings.TrimRight(a.url, "/"), token), nil
}

func runDeadLettersList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("deadletters list", "List the newest dead letters of the log and of the database inbox, newest first.", stdout, stderr)
	var admin adminFlags
	admin.register(fs.FlagSet)
	limit := fs.Int("limit", 100, fmt.Sprintf("how many to list, 1 to %d", outlast.DeadLettersMax))
	asJSON := fs.Bool("json", false, "print the API's JSON instead of a table")
	api, err := admin.parseNoArgs(fs, args)
	if err != nil {
		return err
	}
	page, err := api.DeadLetters(ctx, *limit)
	if err != nil {
		return err
	}
	warnUnavailable(stderr, page.Unavailable)
	if *asJSON {
		return printJSON(stdout, page.Raw)
	}
	return printDeadLetters(stdout, page.DeadLetters)
}

// printJSON prints an API's answer indented.
func printJSON(w io.Writer, raw json.RawMessage) error {
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, out.String())
	return err
}

// reasonRunesMax bounds a reason in the table; --json shows it whole.
const reasonRunesMax = 60

func printDeadLetters(w io.Writer, dls []client.DeadLetter) error {
	if len(dls) == 0 {
		_, err := fmt.Fprintln(w, "no dead letters")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCHANNEL\tEVENT ID\tPAYOUT ID\tREASON\tDELIVERIES\tAT")
	for _, d := range dls {
		channel, event, payout := "-", "-", "-"
		if n := d.Notification; n != nil {
			channel, event, payout = n.Channel, n.EventID, n.PayoutID
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", d.ID, channel, event, payout,
			shorten(d.Reason, reasonRunesMax), d.Deliveries, d.At.UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(tw, plural(len(dls), "dead letter"))
	return tw.Flush()
}

// shorten keeps s on one table line: no line breaks, at most n runes.
func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func warnUnavailable(w io.Writer, sources []string) {
	for _, s := range sources {
		fmt.Fprintf(w, "warning: the dead letters of the %s could not be read (unavailable) and are not shown\n", s)
	}
}

func runDeadLettersReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("deadletters replay", "Arguments: ID... | --all\n\nReplay dead letters by id (as listed: log:<n>, inbox:<n>), or every one listed with --all\n(the newest 1000; run again for more). Each goes back to the path it came by and is applied\nlike any delivery; replaying one already replayed is skipped.", stdout, stderr)
	var admin adminFlags
	admin.register(fs.FlagSet)
	all := fs.Bool("all", false, "replay every replayable dead letter listed (undecodable ones cannot be)")
	ids, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if *all == (len(ids) > 0) {
		return fs.fail("give either dead letter ids or --all")
	}
	api, err := admin.client()
	if err != nil {
		return fs.fail("%v", err)
	}
	if *all {
		return replayAll(ctx, api, stdout, stderr)
	}
	n, err := api.ReplayDeadLetters(ctx, ids)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "replayed %d of %s\n", n, plural(len(ids), "dead letter"))
	if n < len(ids) {
		fmt.Fprintln(stdout, "the others are no longer dead letters (replayed already?)")
	}
	return nil
}

// parseInterleaved parses flags given before, between or after the
// positional arguments, and returns those.
func parseInterleaved(fs *flagSet, args []string) ([]string, error) {
	if err := fs.parse(args); err != nil {
		return nil, err
	}
	var pos []string
	for fs.NArg() > 0 {
		pos = append(pos, fs.Arg(0))
		if err := fs.parseArgs(fs.Args()[1:]); err != nil {
			return nil, err
		}
	}
	return pos, nil
}

// replayAll replays what one listing shows: bounded, since a replayed
// notification that is still rejected comes back as a new dead letter.
func replayAll(ctx context.Context, api *client.Client, stdout, stderr io.Writer) error {
	page, err := api.DeadLetters(ctx, outlast.DeadLettersMax)
	if err != nil {
		return err
	}
	warnUnavailable(stderr, page.Unavailable)
	var ids []string
	for _, d := range page.DeadLetters {
		if d.Notification == nil {
			fmt.Fprintf(stderr, "skipping %s: undecodable, there is no notification to replay\n", d.ID)
			continue
		}
		ids = append(ids, d.ID)
	}
	n := 0
	if len(ids) > 0 {
		if n, err = api.ReplayDeadLetters(ctx, ids); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "replayed %s\n", plural(n, "dead letter"))
	if len(page.DeadLetters) == outlast.DeadLettersMax {
		fmt.Fprintln(stdout, "more may remain: run again")
	}
	if len(page.Unavailable) > 0 {
		return errors.New("not every source could be read: run again once it is back")
	}
	return nil
}
