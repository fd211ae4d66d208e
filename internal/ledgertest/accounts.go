package ledgertest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/outlast/outlast"
)

func testClients(t *testing.T, h *Harness) {
	ctx := context.Background()
	l := h.Ledger
	c := &outlast.Client{ID: "merchant-1"}
	if err := l.CreateClient(ctx, c, keyHash("m1")); err != nil {
		t.Fatalf("CreateClient: %v", err)
	}
	if c.CreatedAt.IsZero() || c.CreatedAt.Location() != time.UTC {
		t.Fatalf("CreatedAt = %v, want a UTC time", c.CreatedAt)
	}
	WantCode(t, "CreateClient(duplicate id)", l.CreateClient(ctx, &outlast.Client{ID: "merchant-1"}, keyHash("other")), outlast.ECONFLICT)
	WantCode(t, "CreateClient(duplicate key)", l.CreateClient(ctx, &outlast.Client{ID: "merchant-2"}, keyHash("m1")), outlast.ECONFLICT)
	WantCode(t, "CreateClient(bad id)", l.CreateClient(ctx, &outlast.Client{ID: "a b"}, keyHash("x")), outlast.EVALIDATION)
	WantCode(t, "CreateClient(no key)", l.CreateClient(ctx, &outlast.Client{ID: "merchant-3"}, nil), outlast.EVALIDATION)
	got, err := l.ClientByKeyHash(ctx, keyHash("m1"))
	if err != nil || got.ID != "merchant-1" || !got.CreatedAt.Equal(c.CreatedAt) {
		t.Fatalf("ClientByKeyHash = %+v, %v; want merchant-1 created %v", got, err, c.CreatedAt)
	}
	_, err = l.ClientByKeyHash(ctx, keyHash("nobody"))
	WantCode(t, "ClientByKeyHash(unknown)", err, outlast.ENOTFOUND)
	_, err = l.ClientByKeyHash(ctx, keyHash("other"))
	WantCode(t, "ClientByKeyHash(key of a refused client)", err, outlast.ENOTFOUND)
}

func testAccounts(t *testing.T, h *Harness) {
	ctx := context.Background()
	l := h.Ledger
	f := Seed(t, l, "a", 0)
	WantCode(t, "CreateAccount(duplicate)", l.CreateAccount(ctx, &outlast.Account{ID: f.Account, ClientID: f.Client, Currency: "EUR"}), outlast.ECONFLICT)
	WantCode(t, "CreateAccount(unknown client)", l.CreateAccount(ctx, &outlast.Account{ID: "x", ClientID: "nobody", Currency: "EUR"}), outlast.EVALIDATION)
	WantCode(t, "CreateAccount(bad currency)", l.CreateAccount(ctx, &outlast.Account{ID: "y", ClientID: f.Client, Currency: "XXX"}), outlast.EVALIDATION)
	// An account starts empty whatever the caller filled in.
	z := &outlast.Account{ID: "z", ClientID: f.Client, Currency: "EUR", Funded: 5, Available: 5}
	if err := l.CreateAccount(ctx, z); err != nil || z.Version != 1 || z.CreatedAt.IsZero() {
		t.Fatalf("CreateAccount(z) = %+v, %v; want version 1 with its creation time", z, err)
	}
	WantBalances(t, l, "z", 0, 0, 0)

	a, funded, err := l.FundAccount(ctx, f.Account, 1000, "fund-1")
	if err != nil || !funded || a.Funded != 1000 || a.Available != 1000 || a.Version != 2 {
		t.Fatalf("FundAccount = %+v, %v, %v; want funded 1000 available 1000 version 2", a, funded, err)
	}
	if _, _, err := l.FundAccount(ctx, f.Account, 500, "fund-2"); err != nil {
		t.Fatalf("FundAccount: %v", err)
	}
	_, _, err = l.FundAccount(ctx, "nope", 1, "fund-3")
	WantCode(t, "FundAccount(unknown)", err, outlast.ENOTFOUND)
	_, _, err = l.FundAccount(ctx, f.Account, 0, "fund-3")
	WantCode(t, "FundAccount(0)", err, outlast.EVALIDATION)
	_, _, err = l.FundAccount(ctx, f.Account, outlast.AmountMax+1, "fund-3")
	WantCode(t, "FundAccount(over AmountMax)", err, outlast.EVALIDATION)
	_, _, err = l.FundAccount(ctx, f.Account, 1, "")
	WantCode(t, "FundAccount(no key)", err, outlast.EINVALID)

	// Once per key (issue 7, item 5): a retry credits nothing and answers
	// the account as it stands; the key with another amount is refused;
	// keys are per account.
	a, funded, err = l.FundAccount(ctx, f.Account, 1000, "fund-1")
	if err != nil || funded || a.Funded != 1500 {
		t.Fatalf("FundAccount(retry) = %+v, funded %v, %v; want the account as it stands (1500), not funded again", a, funded, err)
	}
	_, _, err = l.FundAccount(ctx, f.Account, 999, "fund-1")
	WantCode(t, "FundAccount(key reused, other amount)", err, outlast.EIDEMPOTENCY)
	if _, funded, err := l.FundAccount(ctx, "z", 5, "fund-1"); err != nil || !funded {
		t.Fatalf("FundAccount(another account, same key) = funded %v, %v; want funded", funded, err)
	}
	a = WantBalances(t, l, f.Account, 1500, 0, 0)
	if a.Funded != 1500 || a.ClientID != f.Client || a.Currency != "EUR" || a.Version != 3 {
		t.Fatalf("Account = %+v, want funded 1500 of %s in EUR, version 3", a, f.Client)
	}
	_, _, err = l.Account(ctx, "nope")
	WantCode(t, "Account(unknown)", err, outlast.ENOTFOUND)

	a, err = l.SetAccountFlags(ctx, f.Account, outlast.AccountFlags{PayoutsDisabled: true, DailyLimit: 70})
	if err != nil || !a.Flags.PayoutsDisabled || a.Flags.DailyLimit != 70 || a.Version != 4 {
		t.Fatalf("SetAccountFlags = %+v, %v; want disabled with limit 70, version 4", a, err)
	}
	if a, _, err := l.Account(ctx, f.Account); err != nil || a.Flags != (outlast.AccountFlags{PayoutsDisabled: true, DailyLimit: 70}) {
		t.Fatalf("Account after SetAccountFlags = %+v, %v; want the new flags", a, err)
	}
	_, err = l.SetAccountFlags(ctx, "nope", outlast.AccountFlags{})
	WantCode(t, "SetAccountFlags(unknown)", err, outlast.ENOTFOUND)
	_, err = l.SetAccountFlags(ctx, f.Account, outlast.AccountFlags{DailyLimit: -1})
	WantCode(t, "SetAccountFlags(negative limit)", err, outlast.EVALIDATION)
	wantCleanAudit(t, h)
}

// testFreshness: every read says where it came from, the first one and a
// repeat (which a cache serves).
func testFreshness(t *testing.T, h *Harness) {
	ctx := context.Background()
	l := h.Ledger
	f := Seed(t, l, "fr", 1000)
	p := MustPayout(t, l, f.Req("k1", 100))
	for read := range 2 {
		_, fresh, err := l.Account(ctx, f.Account)
		if err != nil || !knownSource(fresh.Source) {
			t.Fatalf("Account(%q) read %d: freshness %+v, %v; want a known source", f.Account, read, fresh, err)
		}
		_, fresh, err = l.Payout(ctx, p.ID)
		if err != nil || !knownSource(fresh.Source) {
			t.Fatalf("Payout(%q) read %d: freshness %+v, %v; want a known source", p.ID, read, fresh, err)
		}
	}
}

func knownSource(s string) bool {
	return s == outlast.SourceMemory || s == outlast.SourceRedis || s == outlast.SourceDatabase
}

// testFundingConcurrent: an admin's client that retries a funding while
// the first attempt is still running (a timeout, then a retry) credits
// once, however the attempts interleave.
func testFundingConcurrent(t *testing.T, h *Harness) {
	l := h.Ledger
	f := Seed(t, l, "fc", 0)
	const attempts = 8
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		funded int
		errs   []error
	)
	for range attempts {
		wg.Go(func() {
			_, ok, err := l.FundAccount(context.Background(), f.Account, 250, "top-up")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else if ok {
				funded++
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 || funded != 1 {
		t.Fatalf("%d concurrent fundings under one key: %d credited, errors %v; want exactly one credit and no errors", attempts, funded, errs)
	}
	WantBalances(t, l, f.Account, 250, 0, 0)
}
