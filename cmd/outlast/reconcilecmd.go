package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/reconcile"
)

// reconcileReport is `outlast reconcile --json`'s output: one report per
// partner, in name order.
type reconcileReport struct {
	OK       bool                      `json:"ok"` // nothing left for a human
	DryRun   bool                      `json:"dry_run"`
	Partners []*reconcile.RepairReport `json:"partners"`
}

func runReconcile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("reconcile", "Compare the ledger with each partner's records in both directions and repair what is safely\n"+
		"repairable: a success or failure the bank has for a payout still dispatched here, applied as the\n"+
		"reconciler applies a status answer (a no-op if it or a webhook got there first). The rest is filed\n"+
		"as exceptions for a human (outlast exceptions), once each; a discrepancy whose exception was\n"+
		"resolved is settled. Exit status 0 when nothing is left for a human, 1 otherwise; 2 if there is\n"+
		"no ledger where the flags point.", stdout, stderr)
	dataDir := fs.String("data-dir", dataDirDefault, "directory of the embedded SQLite ledger (as for audit)")
	dsn := fs.String("db", "", "database DSN: postgres://…; empty for SQLite in --data-dir")
	partners := mapFlag{}
	fs.Var(partners, "partner", "partner as `channel=base-url` whose /records to reconcile with (repeatable, at least one)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	dryRun := fs.Bool("dry-run", false, "repair nothing; say what would be repaired")
	if err := fs.parse(args); err != nil {
		return err
	}
	if len(partners) == 0 {
		return fs.fail("at least one --partner is required")
	}
	db, err := openExistingLedger(ctx, fs, *dataDir, *dsn, "reconcile", stdout)
	if err != nil {
		return err
	}
	defer db.Close()
	if len(db.PendingMigrations()) > 0 && !*dryRun {
		// Repairs write through the current schema's apply path.
		return fmt.Errorf("the ledger's schema is behind this outlast: run serve once to migrate it, or use --dry-run")
	}
	out := &reconcileReport{OK: true, DryRun: *dryRun}
	err = eachPartner(ctx, partners, func(name string, records []outlast.PartnerRecord) error {
		rep, err := reconcile.Repair(ctx, db, name, records, *dryRun)
		if err != nil {
			return fmt.Errorf("reconcile %s: %w", name, err)
		}
		out.Partners = append(out.Partners, rep)
		out.OK = out.OK && rep.OK()
		return nil
	})
	if err != nil {
		return err
	}
	if *asJSON {
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		if err := printJSON(stdout, b); err != nil {
			return err
		}
	} else {
		printReconcile(stdout, out)
	}
	if !out.OK {
		return exitError(1)
	}
	return nil
}

// printReconcile writes the report as a table per partner, then each
// repair and each discrepancy left for a human.
func printReconcile(w io.Writer, out *reconcileReport) {
	repaired := "repaired"
	if out.DryRun {
		repaired = "would repair"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "partner\trecords\tdiscrepancies\t%s\tleft for a human\tfiled now\tsettled\tin flight\t\n", repaired)
	for _, r := range out.Partners {
		found := 0
		for _, n := range r.Found {
			found += n
		}
		done := r.Repaired()
		if out.DryRun {
			done = len(r.Repairs)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", r.Channel, r.Records, found, done, len(r.ForHuman),
			r.Filed, len(r.Settled), len(r.InFlight))
	}
	tw.Flush()
	for _, r := range out.Partners {
		kinds := make([]string, 0, len(r.Found))
		for k := range r.Found {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			fmt.Fprintf(w, "  %s: %d %s\n", r.Channel, r.Found[k], k)
		}
		lines := make([]string, len(r.Repairs))
		for i, a := range r.Repairs {
			lines[i] = fmt.Sprintf("%s %s → %s: %s", a.Channel, a.PayoutID, a.Status, a.Outcome)
		}
		printFindings(w, "repair", lines)
		lines = lines[:0]
		for _, d := range r.ForHuman {
			lines = append(lines, d.String())
		}
		printFindings(w, "needs a human", lines)
		lines = lines[:0]
		for _, d := range r.InFlight {
			lines = append(lines, d.String())
		}
		printFindings(w, "in flight", lines)
	}
	switch {
	case out.OK && out.DryRun:
		fmt.Fprintln(w, "reconcile (dry run): nothing would be left for a human; nothing was changed")
	case out.DryRun:
		fmt.Fprintln(w, "reconcile (dry run): some discrepancies need a human; nothing was changed")
	case out.OK:
		fmt.Fprintln(w, "reconcile: OK, nothing left for a human")
	default:
		fmt.Fprintln(w, "reconcile: FAILED, some discrepancies need a human: they are filed as exceptions (outlast exceptions)")
	}
}
