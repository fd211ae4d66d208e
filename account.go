package outlast

import (
	"context"
	"fmt"
	"time"
)

// Client is an API client (a merchant or an internal service). It
// authenticates with an API key that is stored only as a SHA-256 hash.
type Client struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
}

// Account holds money for one client in one currency. The buckets obey, at
// every committed state: Available + Held + PaidOut == Funded, Available >= 0,
// Held >= 0.
type Account struct {
	ID        string       `json:"id"`
	ClientID  string       `json:"client_id"`
	Currency  string       `json:"currency"`
	Funded    int64        `json:"funded"`
	Available int64        `json:"available"`
	Held      int64        `json:"held"`
	PaidOut   int64        `json:"paid_out"`
	Flags     AccountFlags `json:"flags"`
	// Version increases by one on every change; caches use it to keep an
	// older copy from overwriting a newer one.
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// AccountFlags are per-account settings. They live in the database (seed
// 001: settings kept only in Redis vanished with it); caches sit above them.
type AccountFlags struct {
	// PayoutsDisabled stops new payouts from this account. The zero value
	// (payouts allowed) is the default.
	PayoutsDisabled bool `json:"payouts_disabled"`
	// DailyLimit, if > 0, caps the sum of payouts created per UTC day.
	DailyLimit int64 `json:"daily_limit,omitempty"`
}

// Validate checks a new account's fields.
func (a *Account) Validate() error {
	switch {
	case !validID(a.ID):
		return Errorf(EVALIDATION, "id must be %s", IDRule)
	case !validID(a.ClientID):
		return Errorf(EVALIDATION, "client_id must be %s", IDRule)
	case !ValidCurrency(a.Currency):
		return Errorf(EVALIDATION, "currency %q is not an ISO 4217 code", a.Currency)
	case a.Flags.DailyLimit < 0:
		return Errorf(EVALIDATION, "flags.daily_limit must not be negative")
	}
	return nil
}

// CheckInvariant reports a violated balance invariant. The ledger panics on a
// non-nil result before committing: a violation is a bug, never bad input.
func (a *Account) CheckInvariant() error {
	if a.Available+a.Held+a.PaidOut != a.Funded {
		return fmt.Errorf("account %s: available %d + held %d + paid_out %d != funded %d",
			a.ID, a.Available, a.Held, a.PaidOut, a.Funded)
	}
	if a.Available < 0 || a.Held < 0 || a.PaidOut < 0 || a.Funded < 0 {
		return fmt.Errorf("account %s: negative bucket: funded %d available %d held %d paid_out %d",
			a.ID, a.Funded, a.Available, a.Held, a.PaidOut)
	}
	return nil
}

// CheckPayout refuses a request this account cannot pay out: another
// currency, payouts disabled, or too little available. Every ledger asks
// it, in this order, before it holds the amount; the daily limit, which
// needs the day's payouts, is CheckDailyLimit's.
func (a *Account) CheckPayout(req *PayoutRequest) error {
	switch {
	case a.Currency != req.Currency:
		return Errorf(EVALIDATION, "currency %s does not match the account's %s", req.Currency, a.Currency)
	case a.Flags.PayoutsDisabled:
		return Errorf(EVALIDATION, "payouts are disabled for this account")
	case a.Available < req.Amount:
		return Errorf(EINSUFFICIENT, "available balance is too low")
	}
	return nil
}

// CheckDailyLimit refuses amount if, with today's payouts (failed ones
// left out) already at today, it would pass the account's daily limit.
func (a *Account) CheckDailyLimit(today, amount int64) error {
	if a.Flags.DailyLimit > 0 && today+amount > a.Flags.DailyLimit {
		return Errorf(EVALIDATION, "daily payout limit of %d would be exceeded", a.Flags.DailyLimit)
	}
	return nil
}

// ValidateIdempotencyKey checks an Idempotency-Key header's value.
func ValidateIdempotencyKey(key string) error {
	if !validID(key) {
		return Errorf(EINVALID, "Idempotency-Key header must be %s", IDRule)
	}
	return nil
}

// FundingKeyReused is FundAccount's EIDEMPOTENCY: key already funded
// account with first, and this funding asks for amount.
func FundingKeyReused(key, account string, first, amount int64) error {
	return Errorf(EIDEMPOTENCY, "Idempotency-Key %q already funded account %q with %d, not %d", key, account, first, amount)
}

// ValidateAmount checks a positive amount in minor units.
func ValidateAmount(amount int64) error {
	if amount <= 0 {
		return Errorf(EVALIDATION, "amount must be a positive integer of minor units")
	}
	if amount > AmountMax {
		return Errorf(EVALIDATION, "amount must be at most %d", AmountMax)
	}
	return nil
}

// AccountService manages clients, accounts and funding.
type AccountService interface {
	// CreateClient stores a new client with the SHA-256 hash of its API key.
	// ECONFLICT if the id exists.
	CreateClient(ctx context.Context, c *Client, keyHash []byte) error
	// ClientByKeyHash finds the client owning an API key hash; ENOTFOUND.
	ClientByKeyHash(ctx context.Context, keyHash []byte) (*Client, error)
	// CreateAccount creates a zero-balance account. ECONFLICT if the id
	// exists, EVALIDATION if the client does not.
	CreateAccount(ctx context.Context, a *Account) error
	// FundAccount adds amount to funded and available, with journal rows,
	// once per (account, idempotencyKey): a repeat with the same amount
	// credits nothing and returns the account as it stands with funded ==
	// false; with another amount it is EIDEMPOTENCY. EINVALID for a
	// malformed key, ENOTFOUND, EVALIDATION.
	FundAccount(ctx context.Context, id string, amount int64, idempotencyKey string) (a *Account, funded bool, err error)
	// Account returns an account and how fresh the read is; ENOTFOUND.
	Account(ctx context.Context, id string) (*Account, Freshness, error)
	// SetAccountFlags replaces an account's flags.
	SetAccountFlags(ctx context.Context, id string, flags AccountFlags) (*Account, error)
}
