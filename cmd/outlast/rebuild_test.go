package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/ledgertest"
	"github.com/outlast/outlast/reconcile"
	"github.com/outlast/outlast/store"
)

// TestAuditRebuild: `outlast audit --rebuild` rebuilds every account
// from the journal: OK on a clean ledger; on one whose balances were
// changed behind the journal's back it prints both sides, exits 1 and
// changes nothing.
func TestAuditRebuild(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(dir, ledgerFile))
	if err != nil {
		t.Fatal(err)
	}
	f := ledgertest.Seed(t, db, "rebuild", 1000)
	p := ledgertest.MustPayout(t, db, f.Req("p1", 250))
	ledgertest.Apply(t, db, ledgertest.Note(p, outlast.StatusSucceeded))
	db.Close()

	out, _ := mustCLI(t, 0, "audit", "--data-dir", dir, "--rebuild")
	wantIn(t, "audit --rebuild", out, "rebuild: 1 accounts from", "every account's balances match its journal", "audit: OK")

	db, err = store.Open(ctx, filepath.Join(dir, ledgerFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.SQL().Exec("UPDATE accounts SET funded = funded + 5, available = available + 5"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	out, _ = mustCLI(t, 1, "audit", "--data-dir", dir, "--rebuild")
	wantIn(t, "audit --rebuild of a tampered ledger", out, f.Account, "stored", "journal says", "1005", "755",
		"1 accounts differ from their journal", "nothing was changed")
	out, _ = mustCLI(t, 1, "audit", "--data-dir", dir, "--rebuild", "--rebuild-json")
	var rep reconcile.RebuildReport
	if i := indexJSON(out); i < 0 || json.Unmarshal([]byte(out[i:]), &rep) != nil || len(rep.Differences) != 1 || rep.Differences[0].Stored.Funded != 1005 {
		t.Fatalf("--rebuild-json printed\n%s\nwant the report with the one difference", out)
	}
	mustCLI(t, 2, "audit", "--data-dir", dir, "--rebuild-json")
}

// indexJSON is where the JSON object printed last in out starts.
func indexJSON(out string) int {
	for i := len(out) - 1; i >= 0; i-- {
		if out[i] == '{' && (i == 0 || out[i-1] == '\n') {
			return i
		}
	}
	return -1
}
