package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/channel"
	"github.com/outlast/outlast/reconcile"
	"github.com/outlast/outlast/store"
)

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit", "Recompute every balance from the journal, check the ledger's invariants, and compare\nwith each partner's records. Exit status 1 and a list on any discrepancy; 2 if there is\nno ledger where the flags point (audit never creates one).", stdout, stderr)
	dataDir := fs.String("data-dir", dataDirDefault, "directory of the embedded SQLite ledger; if it holds none but demo runs kept\nwith 'outlast demo --keep-data' (demo-<time>/), the newest of them")
	dsn := fs.String("db", "", "database DSN: postgres://…; empty for SQLite in --data-dir")
	partners := mapFlag{}
	fs.Var(partners, "partner", "partner as `channel=base-url` whose /records to compare (repeatable)")
	rebuild := fs.Bool("rebuild", false, "also rebuild every account's balances from the journal alone, row by row, and compare with\nthe stored ones; a difference is reported, never written over")
	rebuildJSON := fs.Bool("rebuild-json", false, "with --rebuild, print the rebuild report as JSON (every account, rebuilt and stored)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *rebuildJSON && !*rebuild {
		return fs.fail("--rebuild-json needs --rebuild")
	}
	db, err := openExistingLedger(ctx, fs, *dataDir, *dsn, "audit", stdout)
	if err != nil {
		return err
	}
	defer db.Close()
	ok, err := audit(ctx, db, partners, stdout)
	if err != nil {
		return err
	}
	if *rebuild {
		rebuilt, err := rebuildLedger(ctx, db, *rebuildJSON, stdout)
		if err != nil {
			return err
		}
		ok = ok && rebuilt
	}
	if !ok {
		return exitError(1)
	}
	return nil
}

// openExistingLedger opens the ledger at dsn, or else in dataDir, for
// command verb ("audit"), which never creates one: none there is a usage
// error.
func openExistingLedger(ctx context.Context, fs *flagSet, dataDir, dsn, verb string, stdout io.Writer) (*store.DB, error) {
	if dsn == "" {
		dir, err := ledgerDir(dataDir, stdout)
		if err != nil {
			return nil, fs.fail("%v", err)
		}
		dsn = filepath.Join(dir, ledgerFile)
		fmt.Fprintf(stdout, "%sing %s\n", strings.TrimSuffix(verb, "e"), dsn)
	}
	db, err := store.OpenExisting(ctx, dsn)
	if outlast.ErrorCode(err) == outlast.ENOTFOUND {
		return nil, fs.fail("no ledger to %s: %s", verb, outlast.ErrorMessage(err))
	}
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	if pending := db.PendingMigrations(); len(pending) > 0 {
		fmt.Fprintf(stdout, "note: the ledger's schema is behind this outlast (not applied: %s); %sed as it is — serve applies them at start\n",
			strings.Join(pending, ", "), strings.TrimSuffix(verb, "e"))
	}
	return db, nil
}

// rebuildLedger rebuilds every account from the journal and says what
// differs from the stored balances; it writes nothing to the ledger.
func rebuildLedger(ctx context.Context, db outlast.JournalReader, asJSON bool, w io.Writer) (ok bool, err error) {
	rep, err := reconcile.Rebuild(ctx, db)
	if err != nil {
		return false, fmt.Errorf("rebuild from the journal: %w", err)
	}
	if asJSON {
		b, err := json.Marshal(rep)
		if err != nil {
			return false, err
		}
		return rep.OK(), printJSON(w, b)
	}
	fmt.Fprintf(w, "rebuild: %d accounts from %d journal rows, replayed in commit order\n", len(rep.Accounts), rep.Entries)
	if len(rep.Differences) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "account\t\tfunded\tavailable\theld\tpaid_out\t")
		for _, d := range rep.Differences {
			for _, row := range []struct {
				label string
				b     reconcile.Balances
			}{{"stored", d.Stored}, {"journal says", d.Rebuilt}} {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t\n", d.AccountID, row.label, row.b.Funded, row.b.Available, row.b.Held, row.b.PaidOut)
			}
		}
		tw.Flush()
	}
	printFindings(w, "journal problem", rep.Problems)
	if rep.OK() {
		fmt.Fprintln(w, "rebuild: every account's balances match its journal")
	} else {
		fmt.Fprintf(w, "rebuild: %d accounts differ from their journal, %d journal problems; nothing was changed\n", len(rep.Differences), len(rep.Problems))
	}
	return rep.OK(), nil
}

// ledgerFile is the SQLite ledger's name in a data directory.
const ledgerFile = "outlast.db"

// ledgerDir returns dir if it holds a ledger; else, if it holds demo runs
// kept with --keep-data, the newest of them, saying so on w, since that is
// where `outlast demo --keep-data` put the ledger the user means.
func ledgerDir(dir string, w io.Writer) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, ledgerFile)); err == nil {
		return dir, nil
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("--data-dir %s does not exist", dir)
	} else if err != nil {
		return "", err
	}
	runs, err := filepath.Glob(filepath.Join(dir, demoRunPrefix+"*", ledgerFile))
	if err != nil || len(runs) == 0 {
		return "", fmt.Errorf("--data-dir %s holds no ledger (no %s, and no demo run kept with --keep-data)", dir, ledgerFile)
	}
	sort.Strings(runs) // demo-<time> sorts oldest first
	newest := filepath.Dir(runs[len(runs)-1])
	if len(runs) == 1 {
		fmt.Fprintf(w, "%s holds no ledger itself, only a demo run kept with --keep-data: auditing that\n", dir)
	} else {
		fmt.Fprintf(w, "%s holds no ledger itself but %d demo runs kept with --keep-data: auditing the newest (another: --data-dir %s)\n",
			dir, len(runs), filepath.Dir(runs[len(runs)-2]))
	}
	return newest, nil
}

// auditFindingsMax bounds how many findings of each kind are printed; the
// counts are always complete.
const auditFindingsMax = 50

// auditedLedger is what audit reads: the ledger's self-audit, every
// payout, and the exceptions that settle a discrepancy once resolved.
type auditedLedger interface {
	outlast.Auditor
	reconcile.Exceptions
}

// audit checks the ledger and compares it with each partner's records,
// writing a readable report to w. ok is false on any problem: a
// discrepancy counts unless a human resolved the exception it filed.
func audit(ctx context.Context, ledger auditedLedger, partners map[string]string, w io.Writer) (ok bool, err error) {
	rep, err := ledger.AuditLedger(ctx)
	if err != nil {
		return false, fmt.Errorf("audit ledger: %w", err)
	}
	fmt.Fprintf(w, "ledger: %d accounts; payouts %s; outbox %d, inbox %d, dead letters %d\n",
		rep.Accounts, statusCounts(rep.Payouts), rep.Outbox, rep.Inbox, rep.DeadLetters)
	ok = len(rep.Problems) == 0
	printFindings(w, "ledger problem", rep.Problems)
	err = eachPartner(ctx, partners, func(name string, records []outlast.PartnerRecord) error {
		ds, err := reconcile.ComparePartner(ctx, ledger, name, records)
		if err != nil {
			return err
		}
		open, err := reconcile.Settle(ctx, ledger, ds)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "partner %s: %d records, %d discrepancies (%d settled by a resolved exception)\n",
			name, len(records), len(ds), len(ds)-len(open))
		lines := make([]string, len(ds))
		for i, d := range ds {
			lines[i] = d.String()
		}
		printFindings(w, "discrepancy", lines)
		ok = ok && len(open) == 0
		return nil
	})
	if err != nil {
		return false, err
	}
	if ok {
		fmt.Fprintln(w, "audit: OK")
	} else {
		fmt.Fprintln(w, "audit: FAILED")
	}
	return ok, nil
}

// eachPartner fetches the /records of each partner (channel → base URL),
// in name order, and calls fn with them until fn errors.
func eachPartner(ctx context.Context, partners map[string]string, fn func(name string, records []outlast.PartnerRecord) error) error {
	names := make([]string, 0, len(partners))
	for name := range partners {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c := channel.NewClient(name, partners[name], channel.ClientOptions{Timeout: 30 * time.Second})
		records, err := c.Records(ctx)
		if err != nil {
			return fmt.Errorf("records of %s: %w", name, err)
		}
		if err := fn(name, records); err != nil {
			return err
		}
	}
	return nil
}

func printFindings(w io.Writer, label string, lines []string) {
	for i, l := range lines {
		if i == auditFindingsMax {
			fmt.Fprintf(w, "  … and %d more\n", len(lines)-i)
			return
		}
		fmt.Fprintf(w, "  %s: %s\n", label, l)
	}
}

func statusCounts(m map[outlast.PayoutStatus]int) string {
	return fmt.Sprintf("pending %d, dispatched %d, succeeded %d, failed %d",
		m[outlast.StatusPending], m[outlast.StatusDispatched], m[outlast.StatusSucceeded], m[outlast.StatusFailed])
}
