package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	nethttp "net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/outlast/outlast"
)

// apiClient is the small client the demo, bench and end-to-end tests use to
// drive a running service over its public API.
type apiClient struct {
	BaseURL string
	Token   string // admin token or a client's API key
	HTTP    *nethttp.Client
}

func newAPIClient(baseURL, token string) *apiClient {
	return &apiClient{BaseURL: baseURL, Token: token, HTTP: &nethttp.Client{
		Timeout:   10 * time.Second,
		Transport: &nethttp.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second},
	}}
}

// apiError is a non-2xx answer, with the JSON error shape decoded.
// newRequest returns a JSON request with the bearer token, if any.
func newRequest(ctx context.Context, method, url, token string, body io.Reader) (*nethttp.Request, error) {
	req, err := nethttp.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, nil
}

type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// do sends body as JSON and decodes a 2xx answer into out; it returns the
// status, and an *apiError for any other status.
func (c *apiClient) do(ctx context.Context, method, path string, hdr map[string]string, body, out any) (int, error) {
	_, status, err := c.exchange(ctx, method, path, hdr, body, out)
	return status, err
}

// exchange is do that also returns the answer's headers.
func (c *apiClient) exchange(ctx context.Context, method, path string, hdr map[string]string, body, out any) (nethttp.Header, int, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, 0, err
		}
		r = bytes.NewReader(b)
	}
	req, err := newRequest(ctx, method, c.BaseURL+path, c.Token, r)
	if err != nil {
		return nil, 0, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return resp.Header, resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		return resp.Header, resp.StatusCode, &apiError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.Header, resp.StatusCode, fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return resp.Header, resp.StatusCode, nil
}

func (c *apiClient) createClient(ctx context.Context, id string) (apiKey string, err error) {
	var out struct {
		APIKey string `json:"api_key"`
	}
	_, err = c.do(ctx, "POST", "/admin/v1/clients", nil, map[string]string{"id": id}, &out)
	return out.APIKey, err
}

func (c *apiClient) createAccount(ctx context.Context, id, clientID, currency string) error {
	_, err := c.do(ctx, "POST", "/v1/accounts", nil, map[string]string{"id": id, "client_id": clientID, "currency": currency}, nil)
	return err
}

// fund credits an account once per key: retried with the same key, it
// credits nothing more.
func (c *apiClient) fund(ctx context.Context, id string, amount int64, key string) error {
	_, err := c.do(ctx, "POST", "/v1/accounts/"+id+"/funds", map[string]string{"Idempotency-Key": key},
		map[string]int64{"amount": amount}, nil)
	return err
}

func (c *apiClient) account(ctx context.Context, id string) (*outlast.Account, error) {
	var a outlast.Account
	_, err := c.do(ctx, "GET", "/v1/accounts/"+id, nil, nil, &a)
	return &a, err
}

type payoutBody struct {
	AccountID   string `json:"account_id"`
	Amount      int64  `json:"amount"`
	Currency    string `json:"currency"`
	Destination string `json:"destination"`
}

func (c *apiClient) createPayout(ctx context.Context, key string, body payoutBody) (*outlast.Payout, int, error) {
	var p outlast.Payout
	status, err := c.do(ctx, "POST", "/v1/payouts", map[string]string{"Idempotency-Key": key}, body, &p)
	return &p, status, err
}

func (c *apiClient) payout(ctx context.Context, id string) (*outlast.Payout, error) {
	var p outlast.Payout
	_, err := c.do(ctx, "GET", "/v1/payouts/"+id, nil, nil, &p)
	return &p, err
}

// deadLetter is one entry of GET /admin/v1/deadletters.
type deadLetter struct {
	ID           string                `json:"id"`
	Source       string                `json:"source"`
	Notification *outlast.Notification `json:"notification"`
	Raw          string                `json:"raw"`
	Reason       string                `json:"reason"`
	Deliveries   int                   `json:"deliveries"`
	At           time.Time             `json:"at"`
}

type deadLetterPage struct {
	DeadLetters []deadLetter `json:"dead_letters"`
	Unavailable []string     `json:"unavailable"`
}

// deadLetters returns the listing both as the API's JSON and decoded.
func (c *apiClient) deadLetters(ctx context.Context, limit int) (json.RawMessage, *deadLetterPage, error) {
	var page deadLetterPage
	raw, err := c.get(ctx, "/admin/v1/deadletters?limit="+strconv.Itoa(limit), &page)
	return raw, &page, err
}

// get reads path and returns the answer both as the API's JSON, for a
// command's --json, and decoded into out, for its table.
func (c *apiClient) get(ctx context.Context, path string, out any) (json.RawMessage, error) {
	var raw json.RawMessage
	if _, err := c.do(ctx, "GET", path, nil, nil, &raw); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("decode GET %s: %w", path, err)
	}
	return raw, nil
}

func (c *apiClient) replayDeadLetters(ctx context.Context, ids []string) (int, error) {
	var out struct {
		Replayed int `json:"replayed"`
	}
	_, err := c.do(ctx, "POST", "/admin/v1/deadletters/replay", nil, map[string][]string{"ids": ids}, &out)
	return out.Replayed, err
}

// exceptionPage is GET /admin/v1/exceptions.
type exceptionPage struct {
	Exceptions []*outlast.Exception          `json:"exceptions"`
	NextBefore int64                         `json:"next_before"`
	Open       map[outlast.ExceptionKind]int `json:"open"`
}

// exceptions lists the exceptions query selects, as JSON and decoded.
func (c *apiClient) exceptions(ctx context.Context, query url.Values) (json.RawMessage, *exceptionPage, error) {
	var page exceptionPage
	raw, err := c.get(ctx, "/admin/v1/exceptions?"+query.Encode(), &page)
	return raw, &page, err
}

// exception reads one exception, as JSON and decoded.
func (c *apiClient) exception(ctx context.Context, id int64) (json.RawMessage, *outlast.Exception, error) {
	var e outlast.Exception
	raw, err := c.get(ctx, "/admin/v1/exceptions/"+strconv.FormatInt(id, 10), &e)
	return raw, &e, err
}

// resolution is what an operator sends to resolve an exception; who
// resolved it is the service's to say.
type resolution struct {
	Action outlast.ResolveAction `json:"action"`
	Amount int64                 `json:"amount,omitempty"`
	Payout outlast.PayoutStatus  `json:"payout,omitempty"`
	Reason string                `json:"reason"`
}

// resolved is POST /admin/v1/exceptions/{id}/resolve's answer; Account is
// nil for an exception without one.
type resolved struct {
	Exception *outlast.Exception `json:"exception"`
	Account   *outlast.Account   `json:"account"`
}

func (c *apiClient) resolveException(ctx context.Context, id int64, r resolution) (*resolved, error) {
	var out resolved
	_, err := c.do(ctx, "POST", "/admin/v1/exceptions/"+strconv.FormatInt(id, 10)+"/resolve", nil, r, &out)
	return &out, err
}
