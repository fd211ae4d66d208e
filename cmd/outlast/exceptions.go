package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/client"
)

const exceptionsUsage = `Usage:
  outlast exceptions [list] [--status open|resolved|all] [--kind K] [--payout ID] [--json] [flags]
  outlast exceptions show ID [--json] [flags]
  outlast exceptions resolve ID --action book_paid|reverse_paid|no_money --reason "..." [--amount N] [--payout-status succeeded|failed] [flags]

What cannot be repaired safely — a bank paid a payout that is failed here, a
payout paid twice or by two channels, an amount or currency mismatch, a
partner ref conflict — is an exception with its evidence, waiting for an
operator. A claim the bank already paid is held on the account meanwhile.
resolve records the decision with a reason and moves its money by journal
rows: book_paid (the bank's payment stands), reverse_paid (the bank did not
pay what the ledger paid out), no_money (nothing moves; any hold is released).

Run 'outlast exceptions list --help' (or show, resolve) for flags.
`

func runExceptions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// list is the default: what an operator asks first is what is open.
	if len(args) == 0 || (strings.HasPrefix(args[0], "-") && !isHelp(args[0])) {
		return runExceptionsList(ctx, args, stdout, stderr)
	}
	return runSubcommand(ctx, "exceptions", exceptionsUsage, map[string]command{
		"list": runExceptionsList, "show": runExceptionsShow, "resolve": runExceptionsResolve,
	}, args, stdout, stderr)
}

func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help":
		return true
	}
	return false
}

func runExceptionsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("exceptions list", "List exceptions, newest first, and how many of each kind are open.", stdout, stderr)
	var admin adminFlags
	admin.register(fs.FlagSet)
	status := fs.String("status", "open", "which to list: open, resolved or all")
	kind := fs.String("kind", "", "only this kind: "+kindNames())
	payout := fs.String("payout", "", "only those about this payout id")
	account := fs.String("account", "", "only those on this account id")
	before := fs.Int64("before", 0, "only ids below this one (the next page, as a full listing says)")
	limit := fs.Int("limit", 100, fmt.Sprintf("how many to list, 1 to %d", outlast.ExceptionsMax))
	asJSON := fs.Bool("json", false, "print the API's JSON instead of a table")
	api, err := admin.parseNoArgs(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *status != "open" && *status != "resolved" && *status != "all":
		return fs.fail("--status must be open, resolved or all, not %q", *status)
	case *kind != "" && !outlast.ExceptionKind(*kind).Valid():
		return fs.fail("--kind must be one of %s, not %q", kindNames(), *kind)
	case *limit < 1 || *limit > outlast.ExceptionsMax:
		return fs.fail("--limit must be 1 to %d", outlast.ExceptionsMax)
	}
	page, err := api.Exceptions(ctx, client.ExceptionQuery{Status: *status, Kind: outlast.ExceptionKind(*kind),
		PayoutID: *payout, AccountID: *account, Before: *before, Limit: *limit})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, page.Raw)
	}
	return printExceptions(stdout, page, time.Now())
}

func kindNames() string {
	names := make([]string, len(outlast.ExceptionKinds))
	for i, k := range outlast.ExceptionKinds {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

// summaryRunesMax bounds a summary in the table; show prints it whole.
const summaryRunesMax = 70

func printExceptions(w io.Writer, page *client.ExceptionPage, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(page.Exceptions) == 0 {
		fmt.Fprintln(tw, "no exceptions listed")
	} else {
		fmt.Fprintln(tw, "ID\tKIND\tPAYOUT\tACCOUNT\tCLAIM\tHELD\tOPENED\tSTATUS\tSUMMARY")
	}
	for _, e := range page.Exceptions {
		state := "open"
		if !e.Open() {
			state = string(e.Resolution.Action)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s ago\t%s\t%s\n", e.ID, e.Kind, e.PayoutID, orDash(e.AccountID),
			money(e.Claim, e.Currency), e.Held, seconds(now.Sub(e.OpenedAt).Seconds()), state, shorten(e.Summary, summaryRunesMax))
	}
	if page.NextBefore > 0 {
		fmt.Fprintf(tw, "more may follow: add --before %d\n", page.NextBefore)
	}
	fmt.Fprintln(tw, openCounts(page.Open))
	return tw.Flush()
}

// openCounts says how many exceptions of each kind wait, in
// ExceptionKinds' order.
func openCounts(open map[outlast.ExceptionKind]int) string {
	var parts []string
	for _, k := range outlast.ExceptionKinds {
		if open[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", open[k], k))
		}
	}
	if len(parts) == 0 {
		return "open: none"
	}
	return "open: " + strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// money is an amount of minor units with its currency, if known.
func money(amount int64, currency string) string {
	if currency == "" {
		return strconv.FormatInt(amount, 10)
	}
	return strconv.FormatInt(amount, 10) + " " + currency
}

func runExceptionsShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("exceptions show", "Arguments: ID\n\nShow one exception: every field, its evidence and its resolution, if any.", stdout, stderr)
	var admin adminFlags
	admin.register(fs.FlagSet)
	asJSON := fs.Bool("json", false, "print the API's JSON")
	api, id, err := admin.parseExceptionID(fs, args)
	if err != nil {
		return err
	}
	d, err := api.Exception(ctx, id)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, d.Raw)
	}
	return printException(stdout, d.Exception, time.Now())
}

// parseExceptionID parses the flags of a command about one exception,
// given as its one argument, and returns the admin API client and the
// id; an error has been reported (exit 2).
func (a *adminFlags) parseExceptionID(fs *flagSet, args []string) (*client.Client, int64, error) {
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return nil, 0, err
	}
	if len(pos) != 1 {
		return nil, 0, fs.fail("takes one exception id, got %q", pos)
	}
	id, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || id < 1 {
		return nil, 0, fs.fail("%q is not an exception id (a positive integer, as listed)", pos[0])
	}
	api, err := a.client()
	if err != nil {
		return nil, 0, fs.fail("%v", err)
	}
	return api, id, nil
}

func printException(w io.Writer, e *outlast.Exception, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	state := "open"
	if !e.Open() {
		state = "resolved"
	}
	fmt.Fprintf(tw, "exception\t%d (%s, %s)\n", e.ID, e.Kind, state)
	fmt.Fprintf(tw, "key\t%s\n", e.Key)
	fmt.Fprintf(tw, "payout\t%s\n", e.PayoutID)
	fmt.Fprintf(tw, "account\t%s\n", orDash(e.AccountID))
	fmt.Fprintf(tw, "channel\t%s\n", e.Channel)
	fmt.Fprintf(tw, "claim\t%s\n", money(e.Claim, e.Currency))
	fmt.Fprintf(tw, "held\t%s\n", money(e.Held, e.Currency))
	if e.Open() && e.Short() > 0 {
		fmt.Fprintf(tw, "short\t%s (the account's payouts are refused until this is resolved)\n", money(e.Short(), e.Currency))
	}
	fmt.Fprintf(tw, "filed by\t%s\n", e.FiledBy)
	fmt.Fprintf(tw, "opened\t%s (%s ago)\n", stamp(e.OpenedAt), seconds(now.Sub(e.OpenedAt).Seconds()))
	fmt.Fprintf(tw, "summary\t%s\n", e.Summary)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "evidence:")
	for _, ev := range e.Evidence {
		fmt.Fprintf(w, "  - %s (%s): %s\n", ev.Source, stamp(ev.At), ev.Says)
	}
	if e.Resolution != nil {
		return printResolution(w, e)
	}
	return nil
}

func printResolution(w io.Writer, e *outlast.Exception) error {
	r := e.Resolution
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "resolution:")
	fmt.Fprintf(tw, "  action\t%s\n", r.Action)
	fmt.Fprintf(tw, "  amount\t%s\n", money(r.Amount, e.Currency))
	fmt.Fprintf(tw, "  moves\t%s\n", outlast.DescribeMoves(r.Moves))
	fmt.Fprintf(tw, "  advanced\t%s\n", money(r.Advanced, e.Currency))
	fmt.Fprintf(tw, "  by\t%s\n", r.By)
	fmt.Fprintf(tw, "  at\t%s\n", stamp(r.At))
	fmt.Fprintf(tw, "  reason\t%s\n", r.Reason)
	return tw.Flush()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "time unknown"
	}
	return t.UTC().Format(time.RFC3339)
}

func runExceptionsResolve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("exceptions resolve", "Arguments: ID\n\nResolve an exception with a reason; its money moves by journal rows. Exit status 1 if the\nservice refuses (resolved already, an amount the account cannot take), with its message.", stdout, stderr)
	var admin adminFlags
	admin.register(fs.FlagSet)
	action := fs.String("action", "", "book_paid (the bank's payment stands), reverse_paid (the bank did not pay what was paid out)\nor no_money (nothing moves; any hold goes back to available)")
	reason := fs.String("reason", "", "why: the audit trail of a decision about money (required)")
	amount := fs.Int64("amount", 0, "minor units book_paid or reverse_paid moves; 0 takes it from the exception's claim")
	payout := fs.String("payout-status", "", "also settle the exception's payout, still pending or dispatched here, as succeeded or failed\n(what the bank's statement shows), moving its own hold as a webhook would")
	api, id, err := admin.parseExceptionID(fs, args)
	if err != nil {
		return err
	}
	r := client.Resolution{Action: outlast.ResolveAction(*action), Amount: *amount, Payout: outlast.PayoutStatus(*payout), Reason: *reason}
	switch {
	case r.Action != outlast.ResolveBookPaid && r.Action != outlast.ResolveReversePaid && r.Action != outlast.ResolveNoMoney:
		return fs.fail("--action must be book_paid, reverse_paid or no_money")
	case strings.TrimSpace(r.Reason) == "":
		return fs.fail("--reason is required: it is the audit trail of a decision about money")
	case r.Amount < 0:
		return fs.fail("--amount must be 0 or a positive number of minor units")
	case r.Payout != "" && r.Payout != outlast.StatusSucceeded && r.Payout != outlast.StatusFailed:
		return fs.fail("--payout-status must be succeeded or failed")
	}
	out, err := api.ResolveException(ctx, id, r)
	if err != nil {
		return err
	}
	return printResolved(stdout, out)
}

func printResolved(w io.Writer, out *client.Resolved) error {
	e, r := out.Exception, out.Exception.Resolution
	fmt.Fprintf(w, "resolved exception %d (%s, payout %s) as %s by %s\n", e.ID, e.Kind, e.PayoutID, r.Action, r.By)
	fmt.Fprintf(w, "moved: %s\n", outlast.DescribeMoves(r.Moves))
	if r.Payout != "" {
		fmt.Fprintf(w, "payout %s settled as %s\n", e.PayoutID, r.Payout)
	}
	if r.Advanced > 0 {
		fmt.Fprintf(w, "advanced: %s (neither the hold nor available covered it: the client owes it)\n", money(r.Advanced, e.Currency))
	}
	if a := out.Account; a != nil {
		fmt.Fprintf(w, "account %s now: available %d, held %d, paid out %d, funded %d %s\n",
			a.ID, a.Available, a.Held, a.PaidOut, a.Funded, a.Currency)
	}
	return nil
}
