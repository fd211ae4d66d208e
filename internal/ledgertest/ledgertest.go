// Package ledgertest is the conformance suite of outlast.Ledger: one set of
// cases, written against the interface alone, that every implementation
// runs — the store on SQLite and on PostgreSQL, the cached ledger over
// either, and every in-memory ledger other packages' tests use — so that a
// fake cannot behave unlike the store without a test failing (litestream's
// RunWithReplicaClient). What only one implementation has (the store's
// durability, inbox and journal) is tested by that implementation alone.
//
// It is a test helper: only _test.go files import it.
package ledgertest

import (
	"testing"
	"time"

	"github.com/outlast/outlast"
)

// Harness is one fresh, empty implementation for one case of the suite,
// with the few seams the suite needs beyond the interface. Only Ledger is
// required: a case that needs a seam left nil is skipped, and says so.
type Harness struct {
	Ledger outlast.Ledger
	// Clock is the ledger's clock, for the daily limit and outbox leases.
	Clock Clock
	// SetNewID makes the ledger take the id of every payout created after
	// it from newID, so that a notification can arrive before the payout
	// it reports on.
	SetNewID func(newID func() string)
	// Auditor, if not nil, is the implementation's self-audit (the
	// store's, over its journal): the cases that move money expect it to
	// find nothing, and the paging case checks EachPayout.
	Auditor outlast.Auditor
	// Control, if not nil, is the implementation's config store, for the
	// control case. It is not part of Ledger: the control path does not
	// go through the data plane's caches.
	Control outlast.ControlStore
}

// Clock is a ledger's clock under the suite's control; testenv.Clock is
// one.
type Clock interface {
	Now() time.Time
	Advance(d time.Duration)
}

// Run runs every case of the suite, in parallel, each on the fresh
// implementation open returns.
func Run(t *testing.T, open func(t *testing.T) *Harness) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, open(t))
		})
	}
}

var cases = []struct {
	name string
	fn   func(t *testing.T, h *Harness)
}{
	{"Clients", testClients},
	{"Accounts", testAccounts},
	{"FundingRetriedConcurrently", testFundingConcurrent},
	{"Freshness", testFreshness},
	{"PayoutHappyPath", testPayoutHappyPath},
	{"PayoutIdempotentReplay", testPayoutIdempotentReplay},
	{"PayoutIdempotencyMismatch", testPayoutIdempotencyMismatch},
	{"PayoutConcurrentSameKey", testPayoutConcurrentSameKey},
	{"PayoutConcurrentDrain", testPayoutConcurrentDrain},
	{"PayoutRejections", testPayoutRejections},
	{"PayoutDailyLimit", testPayoutDailyLimit},
	{"Pagination", testPagination},
	{"NotificationsLifecycle", testNotificationsLifecycle},
	{"NotificationsFailedReleasesHold", testNotificationsFailed},
	{"NotificationsRejected", testNotificationsRejected},
	{"NotificationsKeepThePartnerRef", testNotificationsPartnerRef},
	{"NotificationBeforeItsPayout", testNotificationBeforeItsPayout},
	{"NotificationsBatchDuplicates", testNotificationsBatchDuplicates},
	{"NotificationsConcurrentBatches", testNotificationsConcurrent},
	{"Outbox", testOutbox},
	{"OutboxReject", testOutboxReject},
	{"OutboxRejectFencedByClaim", testOutboxRejectFenced},
	{"OutboxReroute", testOutboxReroute},
	{"OutboxRerouteFencedByClaim", testOutboxRerouteFenced},
	{"OutboxConcurrentClaimers", testOutboxConcurrentClaimers},
	{"StalePayouts", testStalePayouts},
	{"RandomWorkload", testRandomWorkload},
	{"ExceptionLateSuccessHoldsItsClaim", testExceptionLateSuccess},
	{"ExceptionShortClaimHoldsPayouts", testExceptionShortClaim},
	{"ExceptionReversePaid", testExceptionReversePaid},
	{"ExceptionPartnerRefNoMoney", testExceptionPartnerRef},
	{"ExceptionFiledOnceConcurrently", testExceptionFiledOnce},
	{"ExceptionListing", testExceptionListing},
	{"ControlConfig", testControlConfig},
	{"ControlConfigConcurrentPuts", testControlConcurrentPuts},
}
