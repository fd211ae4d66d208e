package chaos

import (
	"strings"
	"testing"

	"github.com/outlast/outlast"
	"github.com/outlast/outlast/partnersim"
)

const (
	S = outlast.StatusSucceeded
	F = outlast.StatusFailed
	D = outlast.StatusDispatched
)

func TestNothingAckedLost(t *testing.T) {
	payouts := map[string]PayoutView{"p1": {ID: "p1", Status: S}, "p2": {ID: "p2", Status: D}, "p3": {ID: "p3", Status: F}}
	acked := []partnersim.Ack{
		{EventID: "e1", PayoutID: "p1", Status: S},
		{EventID: "e1", PayoutID: "p1", Status: S}, // a duplicate delivery
		{EventID: "e2", PayoutID: "p2", Status: D}, // not final: says nothing of the end
		{EventID: "e3", PayoutID: "p2", Status: S}, // acknowledged, still dispatched: lost
		{EventID: "e4", PayoutID: "p3", Status: F},
		{EventID: "e5", PayoutID: "p9", Status: S}, // a payout the service does not know
	}
	c, n := NothingAckedLost(acked, payouts)
	if c.OK || n != 2 || !strings.Contains(c.Detail, "p2 succeeded acknowledged, service says dispatched") ||
		!strings.Contains(c.Detail, "p9 succeeded acknowledged, service says unknown") {
		t.Errorf("check = %+v, %d; want p2 and p9 lost", c, n)
	}
	if c, n := NothingAckedLost(acked[:2], payouts); !c.OK || n != 0 {
		t.Errorf("check = %+v, %d; want OK", c, n)
	}
}

func TestNothingPaidTwice(t *testing.T) {
	records := map[string][]outlast.PartnerRecord{
		"tcb": {{PayoutID: "p1", PartnerRef: "t1", Status: S}, {PayoutID: "p2", PartnerRef: "t2", Status: S}, {PayoutID: "p3", PartnerRef: "t3", Status: S}, {PayoutID: "p3", PartnerRef: "t4", Status: S}},
		"acb": {{PayoutID: "p2", PartnerRef: "a2", Status: S}, {PayoutID: "p1", PartnerRef: "a1", Status: F}},
	}
	c, n := NothingPaidTwice(records)
	if c.OK || n != 2 || !strings.Contains(c.Detail, "p2 paid by acb/a2 and tcb/t2") || !strings.Contains(c.Detail, "p3 paid by tcb/t3 and tcb/t4") {
		t.Errorf("check = %+v, %d; want p2 (two banks) and p3 (one bank twice)", c, n)
	}
}

func TestStatusesAndBalancesMatchBanks(t *testing.T) {
	records := map[string][]outlast.PartnerRecord{"tcb": {
		{PayoutID: "p1", Amount: 100, Status: S}, {PayoutID: "p2", Amount: 50, Status: F}, {PayoutID: "p3", Amount: 30, Status: S},
	}}
	payouts := map[string]PayoutView{"p1": {Account: "a", Status: S}, "p2": {Account: "a", Status: F}, "p3": {Account: "b", Status: D}}
	c, n := StatusesMatchBanks(records, payouts)
	if c.OK || n != 1 || !strings.Contains(c.Detail, "p3: succeeded at tcb, dispatched here") {
		t.Errorf("statuses = %+v, %d; want p3 differing", c, n)
	}
	accounts := map[string]Balances{"a": {Funded: 1000, Available: 900, PaidOut: 100}, "b": {Funded: 100, Available: 70, Held: 30}}
	b := BalancesMatchBanks(records, payouts, accounts)
	if b.OK || !strings.Contains(b.Detail, "b: paid_out 0 (banks paid 30), held 30") || strings.Contains(b.Detail, "a:") {
		t.Errorf("balances = %+v; want b alone differing", b)
	}
}
