package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/outlast/outlast"
)

// CreateAccount opens an account of clientID in currency (admin token).
func (c *Client) CreateAccount(ctx context.Context, id, clientID, currency string) (*outlast.Account, error) {
	var a outlast.Account
	_, err := c.Do(ctx, http.MethodPost, "/v1/accounts", nil, map[string]string{"id": id, "client_id": clientID, "currency": currency}, &a)
	return &a, err
}

// Fund credits amount (minor units) to the account once per
// idempotencyKey (admin token): retried with the same key, it credits
// nothing more.
func (c *Client) Fund(ctx context.Context, accountID string, amount int64, idempotencyKey string) (*outlast.Account, error) {
	var a outlast.Account
	_, err := c.Do(ctx, http.MethodPost, "/v1/accounts/"+url.PathEscape(accountID)+"/funds", idempotency(idempotencyKey),
		map[string]int64{"amount": amount}, &a)
	return &a, err
}

// Account reads an account and its balances.
func (c *Client) Account(ctx context.Context, id string) (*outlast.Account, error) {
	var a outlast.Account
	_, err := c.Do(ctx, http.MethodGet, "/v1/accounts/"+url.PathEscape(id), nil, nil, &a)
	return &a, err
}

// PayoutRequest is the body of POST /v1/payouts.
type PayoutRequest struct {
	AccountID   string `json:"account_id"`
	Amount      int64  `json:"amount"` // minor units
	Currency    string `json:"currency"`
	Destination string `json:"destination"`
}

// CreatePayout asks for a payout once per idempotencyKey and returns it
// with the answer's status: 201 for a new payout, 200 for the one an
// earlier request with the key made; 0 if no answer arrived. The same key
// with a different request is refused (outlast.EIDEMPOTENCY).
func (c *Client) CreatePayout(ctx context.Context, idempotencyKey string, req PayoutRequest) (*outlast.Payout, int, error) {
	var p outlast.Payout
	resp, err := c.Do(ctx, http.MethodPost, "/v1/payouts", idempotency(idempotencyKey), req, &p)
	if resp == nil {
		return &p, 0, err
	}
	return &p, resp.Status, err
}

// Payout reads a payout.
func (c *Client) Payout(ctx context.Context, id string) (*outlast.Payout, error) {
	var p outlast.Payout
	_, err := c.Do(ctx, http.MethodGet, "/v1/payouts/"+url.PathEscape(id), nil, nil, &p)
	return &p, err
}

// PayoutQuery selects payouts to list; an empty field selects all.
type PayoutQuery struct {
	AccountID string
	Status    outlast.PayoutStatus
	ClientID  string // admin token only: whose payouts
	Cursor    string // PayoutPage.NextCursor of the page before
}

// PayoutPage is a page of payouts, newest first.
type PayoutPage struct {
	Payouts []*outlast.Payout `json:"data"`
	// NextCursor is the cursor of the next page; "" after the last.
	NextCursor string `json:"next_cursor"`
}

// Payouts lists a page of the payouts q selects: a client's own, or with
// the admin token those of q.ClientID.
func (c *Client) Payouts(ctx context.Context, q PayoutQuery) (*PayoutPage, error) {
	v := url.Values{}
	for name, s := range map[string]string{"account_id": q.AccountID, "status": string(q.Status), "client_id": q.ClientID, "cursor": q.Cursor} {
		if s != "" {
			v.Set(name, s)
		}
	}
	var page PayoutPage
	_, err := c.Do(ctx, http.MethodGet, "/v1/payouts?"+v.Encode(), nil, nil, &page)
	return &page, err
}

// Ready returns nil if the service can take payouts (GET /readyz), or the
// *StatusError that says why not.
func (c *Client) Ready(ctx context.Context) error {
	_, err := c.Do(ctx, http.MethodGet, "/readyz", nil, nil, nil)
	return err
}

// idempotency is the header that makes a retried request count once.
func idempotency(key string) http.Header {
	return http.Header{"Idempotency-Key": {key}}
}
