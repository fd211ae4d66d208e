// Package client is the Go client of Outlast's API and admin API: what the
// CLI, the demo, the benchmarks, the tests and other Go services use to
// talk to a running service.
//
// Every call takes a context. A refused request returns a *StatusError,
// which wraps the answer's error as an *outlast.Error, so callers ask
// outlast.ErrorCode, outlast.ErrorMessage and outlast.ErrorRetryAfter what
// it was and when to come back, and Status for the HTTP status.
// Requests that create something (a payout, a funding) carry an
// idempotency key, so retrying one with the same key does it once.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/outlast/outlast"
)

// Defaults of a Client made by New.
const (
	// TimeoutDefault bounds a whole request, answer included, unless
	// WithHTTPClient gives another http.Client.
	TimeoutDefault = 10 * time.Second
	// RequestBytesMaxDefault bounds a request body: the service refuses
	// larger ones anyway, so the client refuses them before sending.
	RequestBytesMaxDefault = 1 << 20
	// ResponseBytesMaxDefault bounds an answer's body; a longer one is an
	// error rather than a truncated document.
	ResponseBytesMaxDefault = 4 << 20
)

// Client calls one service. Its methods are safe for concurrent use; its
// fields are written once, by New.
type Client struct {
	baseURL          string
	key              string
	http             *http.Client
	requestBytesMax  int64
	responseBytesMax int64
}

// Option changes a Client made by New.
type Option func(*Client)

// WithHTTPClient sends the requests with hc instead of the default client
// (TimeoutDefault, up to 256 idle connections to the service).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.http = hc }
}

// WithRequestBytesMax bounds request bodies at n bytes. If n <= 0,
// RequestBytesMaxDefault is used.
func WithRequestBytesMax(n int64) Option {
	return func(c *Client) { c.requestBytesMax = n }
}

// WithResponseBytesMax bounds answers' bodies at n bytes. If n <= 0,
// ResponseBytesMaxDefault is used.
func WithResponseBytesMax(n int64) Option {
	return func(c *Client) { c.responseBytesMax = n }
}

// New returns a client of the service at baseURL ("http://host:port", a
// trailing slash is dropped) that authenticates with key: the admin token
// for the admin API, or a client's API key; "" sends no Authorization.
func New(baseURL, key string, opts ...Option) *Client {
	c := &Client{baseURL: strings.TrimRight(baseURL, "/"), key: key}
	for _, o := range opts {
		o(c)
	}
	if c.http == nil {
		c.http = &http.Client{
			Timeout: TimeoutDefault,
			// Load generators keep many requests in flight to one host;
			// the default 2 idle connections would redial most of them.
			Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second},
		}
	}
	if c.requestBytesMax <= 0 {
		c.requestBytesMax = RequestBytesMaxDefault
	}
	if c.responseBytesMax <= 0 {
		c.responseBytesMax = ResponseBytesMaxDefault
	}
	return c
}

// BaseURL returns the service's URL, without a trailing slash.
func (c *Client) BaseURL() string { return c.baseURL }

// Key returns the token or API key the client sends.
func (c *Client) Key() string { return c.key }

// StatusError is an answer with a status other than 2xx. It wraps the
// answer's JSON error ({"error": {"code", "message"}}) as an
// *outlast.Error whose RetryAfter comes from the Retry-After header; an
// answer without that shape gets the code its status stands for.
type StatusError struct {
	Status int
	Header http.Header
	Err    *outlast.Error
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Err.Code, e.Err.Message)
}

func (e *StatusError) Unwrap() error { return e.Err }

// Status returns the HTTP status of err's *StatusError, or 0 if the
// service did not answer (or err is nil).
func Status(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

// Response is what came back of a request: its status and headers.
type Response struct {
	Status int
	Header http.Header
}

// Do sends body, if not nil, as JSON to path (with its query) and decodes
// a 2xx answer into out, if not nil; a *json.RawMessage keeps the answer as
// sent. header is added to the request. The Response is nil only if no
// answer arrived; any other status than 2xx is a *StatusError.
func (c *Client) Do(ctx context.Context, method, path string, header http.Header, body, out any) (*Response, error) {
	req, err := c.request(ctx, method, path, header, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	r := &Response{Status: resp.StatusCode, Header: resp.Header}
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.responseBytesMax+1))
	if err != nil {
		return r, fmt.Errorf("read %s %s: %w", method, path, err)
	}
	if int64(len(data)) > c.responseBytesMax {
		return r, fmt.Errorf("%s %s: answer over %d bytes", method, path, c.responseBytesMax)
	}
	if resp.StatusCode/100 != 2 {
		return r, &StatusError{Status: resp.StatusCode, Header: resp.Header, Err: decodeError(resp, data)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return r, fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return r, nil
}

// request builds a JSON request with the key, if any, and header.
func (c *Client) request(ctx context.Context, method, path string, header http.Header, body any) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		if int64(len(b)) > c.requestBytesMax {
			return nil, outlast.Errorf(outlast.ETOOLARGE, "%s %s: request body of %d bytes is over %d", method, path, len(b), c.requestBytesMax)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	return req, nil
}

// decodeError reads the JSON error shape of a refused request's answer.
func decodeError(resp *http.Response, data []byte) *outlast.Error {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	_ = json.Unmarshal(data, &e) // a proxy's page is not JSON: the status says enough
	oe := &outlast.Error{Code: e.Error.Code, Message: e.Error.Message, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	if oe.Code == "" {
		oe.Code = statusCode(resp.StatusCode)
	}
	if oe.Message == "" {
		oe.Message = http.StatusText(resp.StatusCode)
	}
	return oe
}

// statusCode is the error code an answer without one stands for: the
// inverse of the service's mapping of codes to statuses.
func statusCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return outlast.EINVALID
	case http.StatusUnauthorized:
		return outlast.EUNAUTHORIZED
	case http.StatusForbidden:
		return outlast.EFORBIDDEN
	case http.StatusNotFound:
		return outlast.ENOTFOUND
	case http.StatusConflict:
		return outlast.ECONFLICT
	case http.StatusPreconditionFailed:
		return outlast.EPRECONDITION
	case http.StatusRequestEntityTooLarge:
		return outlast.ETOOLARGE
	case http.StatusUnprocessableEntity:
		return outlast.EVALIDATION
	case http.StatusTooManyRequests:
		return outlast.ERATELIMITED
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return outlast.EUNAVAILABLE
	}
	return outlast.EINTERNAL
}

// retryAfter parses a Retry-After header, in seconds or an HTTP date; 0
// if there is none or it cannot be read.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		return max(time.Duration(s)*time.Second, 0)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
