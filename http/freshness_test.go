package http

import (
	"context"
	"testing"
	"time"

	"github.com/outlast/outlast"
)

// freshStore reports a fixed freshness for every account and payout read,
// as the cached ledger does.
type freshStore struct {
	*fakeStore
	fresh outlast.Freshness
}

func (f freshStore) Account(ctx context.Context, id string) (*outlast.Account, outlast.Freshness, error) {
	a, _, err := f.fakeStore.Account(ctx, id)
	return a, f.fresh, err
}

func (f freshStore) Payout(ctx context.Context, id string) (*outlast.Payout, outlast.Freshness, error) {
	p, _, err := f.fakeStore.Payout(ctx, id)
	return p, f.fresh, err
}

func TestReadsSayHowFreshTheyAre(t *testing.T) {
	stale := outlast.Freshness{Source: outlast.SourceMemory, Age: 42*time.Second + 900*time.Millisecond, Stale: true}
	var fs *freshStore
	h := newHarness(t, func(_ *Config, svc *Services) {
		fs = &freshStore{fakeStore: svc.Accounts.(*fakeStore), fresh: stale}
		svc.Accounts, svc.Payouts = fs, fs
	})
	rec := h.payout("k", h.alice, payoutBody)
	h.mustStatus(rec, 201)
	var p payoutJSON
	decode(t, rec, &p)
	for _, path := range []string{"/v1/accounts/acc-a", "/v1/payouts/" + p.ID} {
		rec := h.do("GET", path, h.alice, "")
		h.mustStatus(rec, 200)
		if got := rec.Header().Get("Outlast-Source"); got != "memory" {
			t.Errorf("GET %s: Outlast-Source = %q, want memory", path, got)
		}
		if got := rec.Header().Get("Age"); got != "42" {
			t.Errorf("GET %s: Age = %q, want 42", path, got)
		}
		if got := rec.Header().Get("Outlast-Stale"); got != "true" {
			t.Errorf("GET %s: Outlast-Stale = %q, want true", path, got)
		}
	}
	fs.fresh = outlast.Freshness{}
	rec = h.do("GET", "/v1/accounts/acc-a", h.alice, "")
	if got, stale := rec.Header().Get("Outlast-Source"), rec.Header().Get("Outlast-Stale"); got != "database" || stale != "" {
		t.Errorf("uncached read: Outlast-Source = %q, Outlast-Stale = %q; want database and none", got, stale)
	}
}
