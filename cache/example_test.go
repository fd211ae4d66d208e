package cache_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/outlast/outlast/cache"
)

func Example() {
	type account struct {
		ID      string
		Balance int64
	}
	accounts, err := cache.New(cache.Options[string, account]{
		Name: "accounts",
		Load: func(ctx context.Context, id string) (account, error) {
			if id == "missing" {
				return account{}, fmt.Errorf("account %s: %w", id, cache.ErrNotFound)
			}
			return account{ID: id, Balance: 100}, nil // a database read
		},
		Version: func(a account) int64 { return a.Balance }, // a row version in real use
		Key:     func(id string) string { return "acct:" + id },
		ParseKey: func(s string) (string, error) {
			if len(s) < 5 || s[:5] != "acct:" {
				return "", strconv.ErrSyntax
			}
			return s[5:], nil
		},
		Logger: slog.New(slog.DiscardHandler),
		// L2: a redis store, Broadcaster: its pub/sub, Encode/Decode: JSON.
	})
	if err != nil {
		panic(err)
	}
	defer accounts.Close()
	ctx := context.Background()
	// go accounts.Run(ctx) — invalidations, L2 probes and warm-up.

	a, info, err := accounts.Get(ctx, "a1")
	fmt.Println(a.Balance, info.Source, info.Stale, err)
	a, info, err = accounts.Get(ctx, "a1")
	fmt.Println(a.Balance, info.Source, info.Stale, err)
	_, _, err = accounts.Get(ctx, "missing")
	fmt.Println(err)
	// Output:
	// 100 loader false <nil>
	// 100 l1 false <nil>
	// cache: not found
}
