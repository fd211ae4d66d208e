package store_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/internal/testenv"
	"github.com/outlast/outlast/store"
)

// TestSQLite runs the conformance suite on a SQLite file per subtest.
func TestSQLite(t *testing.T) {
	runConformance(t, func(t *testing.T) *store.DB {
		return openDB(t, "sqlite:"+t.TempDir()+"/ledger.db")
	})
}

// TestPostgres runs the same suite on a fresh PostgreSQL database per
// subtest.
func TestPostgres(t *testing.T) {
	testenv.PostgresDSN(t) // skip (or fail under CI) early if there is no server
	runConformance(t, func(t *testing.T) *store.DB {
		return openDB(t, testenv.PostgresDSN(t))
	})
}

func openDB(t *testing.T, dsn string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("Open(%q): %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// withClock replaces db's clock; call before db is shared.
func withClock(db *store.DB) *testenv.Clock {
	c := testenv.NewClock(time.Now().UTC())
	db.Now = c.Now
	return c
}

func runConformance(t *testing.T, open func(t *testing.T) *store.DB) {
	tests := []struct {
		name string
		fn   func(t *testing.T, db *store.DB)
	}{
		{"Clients", testClients},
		{"Accounts", testAccounts},
		{"PayoutHappyPath", testPayoutHappyPath},
		{"PayoutIdempotentReplay", testPayoutIdempotentReplay},
		{"PayoutIdempotencyMismatch", testPayoutIdempotencyMismatch},
		{"PayoutConcurrentSameKey", testPayoutConcurrentSameKey},
		{"PayoutConcurrentDrain", testPayoutConcurrentDrain},
		{"PayoutRejections", testPayoutRejections},
		{"PayoutDailyLimit", testPayoutDailyLimit},
		{"NotificationsLifecycle", testNotificationsLifecycle},
		{"NotificationsFailedReleasesHold", testNotificationsFailed},
		{"NotificationsRejected", testNotificationsRejected},
		{"NotificationsBatchDuplicates", testNotificationsBatchDuplicates},
		{"NotificationsConcurrentBatches", testNotificationsConcurrent},
		{"Outbox", testOutbox},
		{"OutboxReject", testOutboxReject},
		{"OutboxConcurrentClaimers", testOutboxConcurrentClaimers},
		{"Inbox", testInbox},
		{"AuditRandomWorkload", testAuditRandomWorkload},
		{"AuditDetectsTampering", testAuditTampering},
		{"Pagination", testPagination},
		{"Durability", testDurability},
		{"UnavailableAfterClose", testUnavailableAfterClose},
		{"InvariantViolationPanics", testInvariantPanics},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

// fixture is one client with one funded account.
type fixture struct {
	client, account string
}

func seed(t *testing.T, db *store.DB, name string, funded int64) fixture {
	t.Helper()
	ctx := context.Background()
	f := fixture{client: "client-" + name, account: "acct-" + name}
	if err := db.CreateClient(ctx, &outlast.Client{ID: f.client}, keyHash(f.client)); err != nil {
		t.Fatalf("CreateClient(%q): %v", f.client, err)
	}
	if err := db.CreateAccount(ctx, &outlast.Account{ID: f.account, ClientID: f.client, Currency: "EUR"}); err != nil {
		t.Fatalf("CreateAccount(%q): %v", f.account, err)
	}
	if funded > 0 {
		if _, err := db.FundAccount(ctx, f.account, funded); err != nil {
			t.Fatalf("FundAccount(%q, %d): %v", f.account, funded, err)
		}
	}
	return f
}

func keyHash(s string) []byte {
	h := sha256.Sum256([]byte("key-" + s))
	return h[:]
}

func (f fixture) req(key string, amount int64) *outlast.PayoutRequest {
	return &outlast.PayoutRequest{
		ClientID: f.client, IdempotencyKey: key, AccountID: f.account,
		Amount: amount, Currency: "EUR", Destination: "DE89370400440532013000", Channel: "tcb",
	}
}

func mustPayout(t *testing.T, db *store.DB, req *outlast.PayoutRequest) *outlast.Payout {
	t.Helper()
	p, created, err := db.CreatePayout(context.Background(), req)
	if err != nil || !created {
		t.Fatalf("CreatePayout(%s) = created %v, %v; want created", req.IdempotencyKey, created, err)
	}
	return p
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := outlast.ErrorCode(err); got != code {
		t.Fatalf("%s: error code = %q (%v), want %q", what, got, err, code)
	}
}

// wantBalances checks an account's buckets and its invariant.
func wantBalances(t *testing.T, db *store.DB, id string, available, held, paidOut int64) *outlast.Account {
	t.Helper()
	a, _, err := db.Account(context.Background(), id)
	if err != nil {
		t.Fatalf("Account(%q): %v", id, err)
	}
	if a.Available != available || a.Held != held || a.PaidOut != paidOut {
		t.Fatalf("Account(%q) = available %d held %d paid_out %d, want %d %d %d",
			id, a.Available, a.Held, a.PaidOut, available, held, paidOut)
	}
	if err := a.CheckInvariant(); err != nil {
		t.Fatalf("Account(%q): %v", id, err)
	}
	return a
}

// wantCleanAudit fails t if the ledger audit finds anything.
func wantCleanAudit(t *testing.T, db *store.DB) *outlast.LedgerReport {
	t.Helper()
	rep, err := db.AuditLedger(context.Background())
	if err != nil {
		t.Fatalf("AuditLedger: %v", err)
	}
	if len(rep.Problems) > 0 {
		t.Fatalf("AuditLedger found %d problems:\n%s", len(rep.Problems), strings.Join(rep.Problems, "\n"))
	}
	return rep
}

// count runs a COUNT(*) query through the raw pool.
func count(t *testing.T, db *store.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.SQL().QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

var eventSeq struct {
	sync.Mutex
	n int
}

// note builds a notification with a unique event id.
func note(p *outlast.Payout, status outlast.PayoutStatus) *outlast.Notification {
	eventSeq.Lock()
	eventSeq.n++
	id := fmt.Sprintf("ev-%d", eventSeq.n)
	eventSeq.Unlock()
	return &outlast.Notification{
		Channel: "tcb", EventID: id, PayoutID: p.ID, PartnerRef: "ref-" + p.ID[:8],
		Status: status, OccurredAt: time.Now().UTC(),
	}
}

func apply(t *testing.T, db *store.DB, ns ...*outlast.Notification) []outlast.ApplyResult {
	t.Helper()
	rs, err := db.Apply(context.Background(), outlast.FromLog, ns)
	if err != nil {
		t.Fatalf("ApplyNotifications: %v", err)
	}
	if len(rs) != len(ns) {
		t.Fatalf("ApplyNotifications returned %d results for %d notifications", len(rs), len(ns))
	}
	return rs
}

func wantOutcomes(t *testing.T, rs []outlast.ApplyResult, want ...outlast.Outcome) {
	t.Helper()
	for i, w := range want {
		if rs[i].Outcome != w {
			t.Fatalf("result %d = %s (%s), want %s", i, rs[i].Outcome, rs[i].Reason, w)
		}
	}
}

// wantMigrations checks that every embedded migration was applied once.
func wantMigrations(t *testing.T, db *store.DB) {
	t.Helper()
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migrations = %v, %v; want some", files, err)
	}
	if n := count(t, db, "SELECT COUNT(*) FROM schema_migrations"); n != len(files) {
		t.Fatalf("schema_migrations rows = %d, want %d (one per migration)", n, len(files))
	}
}
