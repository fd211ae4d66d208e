package chaos

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/partnersim"
)

// The end-of-run invariants, the same for both designs: computed from
// what the banks did (their records, the webhooks the service
// acknowledged) and what the service answers through its API, never from
// the service's own database, so the naive design is held to the same
// truth.

// checkDetailMax bounds the examples a failed check names.
const checkDetailMax = 5

// PayoutView is a payout as the service's API answers it.
type PayoutView struct {
	ID      string
	Account string
	Status  outlast.PayoutStatus
}

// NothingAckedLost checks that every final notification a bank's webhook
// delivered and the service acknowledged is reflected in the payout's
// status: an acknowledged success or failure that the service does not
// show was acknowledged and lost (seed 000). payouts maps payout ids to
// their state at the end; one the service does not know counts as lost.
func NothingAckedLost(acked []partnersim.Ack, payouts map[string]PayoutView) (Check, int) {
	var lost []string
	seen := map[string]bool{}
	for _, a := range acked {
		if !a.Status.Terminal() || seen[a.EventID] {
			continue
		}
		seen[a.EventID] = true
		if p, ok := payouts[a.PayoutID]; !ok || p.Status != a.Status {
			got := "unknown"
			if ok {
				got = string(p.Status)
			}
			lost = append(lost, fmt.Sprintf("%s %s acknowledged, service says %s", a.PayoutID, a.Status, got))
		}
	}
	return Check{Name: "nothing acknowledged lost", OK: len(lost) == 0, Detail: detail(len(lost), "lost", lost)}, len(lost)
}

// NothingPaidTwice checks that no payout was paid more than once, by one
// bank or by two: records are every bank's, by bank name.
func NothingPaidTwice(records map[string][]outlast.PartnerRecord) (Check, int) {
	paid := map[string][]string{}
	for _, bank := range slices.Sorted(maps.Keys(records)) {
		for _, r := range records[bank] {
			if r.Status == outlast.StatusSucceeded {
				paid[r.PayoutID] = append(paid[r.PayoutID], bank+"/"+r.PartnerRef)
			}
		}
	}
	var twice []string
	for _, id := range slices.Sorted(maps.Keys(paid)) {
		if len(paid[id]) > 1 {
			twice = append(twice, fmt.Sprintf("%s paid by %s", id, strings.Join(paid[id], " and ")))
		}
	}
	return Check{Name: "nothing paid twice", OK: len(twice) == 0, Detail: detail(len(twice), "paid twice", twice)}, len(twice)
}

// StatusesMatchBanks checks that the service's status of every payout a
// bank settled is the bank's: succeeded where it paid, failed where it
// failed (the audit against every bank's records, from the outside).
func StatusesMatchBanks(records map[string][]outlast.PartnerRecord, payouts map[string]PayoutView) (Check, int) {
	var wrong []string
	for _, bank := range slices.Sorted(maps.Keys(records)) {
		for _, r := range records[bank] {
			p, ok := payouts[r.PayoutID]
			if !ok || p.Status != r.Status {
				got := "unknown"
				if ok {
					got = string(p.Status)
				}
				wrong = append(wrong, fmt.Sprintf("%s: %s at %s, %s here", r.PayoutID, r.Status, bank, got))
			}
		}
	}
	return Check{Name: "every payout as its bank settled it", OK: len(wrong) == 0,
		Detail: detail(len(wrong), "differ", wrong)}, len(wrong)
}

// Balances is an account's buckets as the service's API answers them.
type Balances struct {
	Funded, Available, Held, PaidOut int64
}

// BalancesMatchBanks checks that every account's paid_out is what the
// banks paid from it and that nothing is left held once no payout is in
// flight: accounts are the service's answers by account id, and payouts
// say which account each payout is from.
func BalancesMatchBanks(records map[string][]outlast.PartnerRecord, payouts map[string]PayoutView, accounts map[string]Balances) Check {
	paid := map[string]int64{}
	for _, rs := range records {
		for _, r := range rs {
			if p, ok := payouts[r.PayoutID]; ok && r.Status == outlast.StatusSucceeded {
				paid[p.Account] += r.Amount
			}
		}
	}
	var wrong []string
	for _, id := range slices.Sorted(maps.Keys(accounts)) {
		a := accounts[id]
		if a.PaidOut != paid[id] || a.Held != 0 || a.Available+a.Held+a.PaidOut != a.Funded {
			wrong = append(wrong, fmt.Sprintf("%s: paid_out %d (banks paid %d), held %d, available %d of funded %d",
				id, a.PaidOut, paid[id], a.Held, a.Available, a.Funded))
		}
	}
	return Check{Name: "balances equal what the banks paid", OK: len(wrong) == 0,
		Detail: detail(len(wrong), "accounts differ", wrong)}
}

// detail is a failed check's count and its first examples.
func detail(n int, what string, examples []string) string {
	if n == 0 {
		return ""
	}
	if len(examples) > checkDetailMax {
		examples = append(examples[:checkDetailMax:checkDetailMax], "…")
	}
	return fmt.Sprintf("%d %s: %s", n, what, strings.Join(examples, "; "))
}
