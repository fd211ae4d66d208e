// Package channel hands payouts to partner banks. A Client speaks one
// partner's protocol (DESIGN.md §7) and sorts every answer into accepted,
// definitively rejected, or ambiguous; a Router picks the channel for new
// payouts, guards each channel with a circuit breaker, and ejects a
// channel whose submits keep failing from the choice for new payouts for a
// growing time, then lets it back gradually (EjectionConfig); a Dispatcher
// drains the outbox through the Router.
//
// The rule it exists to keep (DESIGN.md principle 7): only a definitive
// "not accepted" may fail a payout. Timeouts, 5xx, open breakers, what
// proxies say and anything unclear are ambiguous: the payout is retried on
// the same channel, whose idempotency on payout id makes the retry safe,
// and never failed. Even the partner's own refusal is confirmed against its
// status before a payout fails: a retry of a payout it accepted earlier,
// whose answer was lost, may be refused while the bank pays it. Partner
// answers are read with json/v2 semantics (exact names, no duplicates,
// valid UTF-8): an answer that could mean two things is ambiguous.
package channel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/outlast/outlast"
)

// Defaults and limits for a Client.
const (
	TimeoutDefault        = 3 * time.Second
	RecordsTimeoutDefault = 2 * time.Minute
	// ResponseBytesMax bounds a submit or status response body.
	ResponseBytesMax = 1 << 20
	// RecordsBytesMax bounds a /records response (about 1.5 million
	// records).
	RecordsBytesMax = 256 << 20
	// retryAfterDefault is what an ambiguous error asks callers to wait
	// when the partner did not say.
	retryAfterDefault = time.Second
)

var (
	// ErrRejected marks a definitive refusal: the partner did not accept
	// the payout and never will under this id. Only this may fail a payout.
	ErrRejected = errors.New("partner rejected the payout")
	// ErrAmbiguous marks an outcome the caller cannot know: the partner
	// may or may not have accepted. Retry on the same channel.
	ErrAmbiguous = errors.New("partner outcome unknown")
	// ErrNotFound: the partner says it never accepted the payout.
	ErrNotFound = errors.New("partner has no such payout")
	// ErrBreakerOpen: the call was not made because the channel's breaker
	// is open. It also matches ErrAmbiguous.
	ErrBreakerOpen = errors.New("channel circuit breaker open")
	// ErrUnknownChannel: the router has no such channel. It also matches
	// ErrAmbiguous, since a payout bound to a channel must wait for it.
	ErrUnknownChannel = errors.New("unknown channel")
	// ErrDisabled: the call was not made because the operators disabled
	// the channel. It also matches ErrAmbiguous: a payout bound to the
	// channel waits.
	ErrDisabled = errors.New("channel disabled")
)

// Rejection is the detail of an ErrRejected error.
type Rejection struct {
	Channel    string
	StatusCode int
	// Reason is the partner's own words, at most outlast.ReasonBytesMax.
	Reason string
}

func (r *Rejection) Error() string {
	return fmt.Sprintf("partner %s rejected the payout (HTTP %d): %s", r.Channel, r.StatusCode, r.Reason)
}

// Is makes errors.Is(err, ErrRejected) true.
func (r *Rejection) Is(target error) bool { return target == ErrRejected }

// RejectionReason returns the partner's reason if err is a rejection.
func RejectionReason(err error) (string, bool) {
	var r *Rejection
	if errors.As(err, &r) {
		return r.Reason, true
	}
	return "", false
}

// ClientOptions configures a Client.
type ClientOptions struct {
	// Timeout bounds one submit or status call. If <= 0, 3 s is used.
	Timeout time.Duration
	// RecordsTimeout bounds one /records call. If <= 0, 2 min is used.
	RecordsTimeout time.Duration
	// HTTPClient makes the calls. If nil, a client with its own pooled
	// transport is used. Its own Timeout, if any, also applies.
	HTTPClient *http.Client
	// BreakerFailures is how many consecutive ambiguous submits open the
	// channel's breaker in a Router. If <= 0, 5 is used.
	BreakerFailures int
	// BreakerDelay is how long the breaker stays open before one probe
	// call is let through. If <= 0, 5 s is used.
	BreakerDelay time.Duration
}

// Status is a partner's answer about one payout.
type Status struct {
	PayoutID   string
	PartnerRef string
	// Status is dispatched (the bank's "accepted": paying, not yet paid),
	// succeeded or failed.
	Status outlast.PayoutStatus
	Reason string
}

// Client calls one partner bank. It is safe for concurrent use.
type Client struct {
	name    string
	baseURL string
	opts    ClientOptions // defaults applied; written once
	hc      *http.Client
}

// NewClient returns a client for the partner called name at baseURL.
func NewClient(name, baseURL string, opts ClientOptions) *Client {
	if opts.Timeout <= 0 {
		opts.Timeout = TimeoutDefault
	}
	if opts.RecordsTimeout <= 0 {
		opts.RecordsTimeout = RecordsTimeoutDefault
	}
	if opts.BreakerFailures <= 0 {
		opts.BreakerFailures = 5
	}
	if opts.BreakerDelay <= 0 {
		opts.BreakerDelay = 5 * time.Second
	}
	hc := opts.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64 // the dispatcher's parallel calls reuse connections
		hc = &http.Client{Transport: tr}
	}
	return &Client{name: name, baseURL: strings.TrimRight(baseURL, "/"), opts: opts, hc: hc}
}

// Name returns the channel name.
func (c *Client) Name() string { return c.name }

type submitBody struct {
	PayoutID    string `json:"payout_id"`
	Amount      int64  `json:"amount"`
	Currency    string `json:"currency"`
	Destination string `json:"destination"`
}

// Submit hands p to the partner and returns its reference. Errors match
// ErrRejected (the partner's refusal in its own protocol, with a
// *Rejection; see definitive) or ErrAmbiguous (anything else: timeouts,
// connection errors, 5xx, what proxies say, and answers that prove nothing
// about the payout such as 401, 403, 404 or 409).
func (c *Client) Submit(ctx context.Context, p *outlast.Payout) (string, error) {
	start := time.Now()
	ref, err := c.submit(ctx, p)
	submitSeconds.WithLabelValues(c.name).Observe(time.Since(start).Seconds())
	switch {
	case err == nil:
		submitsTotal.WithLabelValues(c.name, resultAccepted).Inc()
	case errors.Is(err, ErrRejected):
		submitsTotal.WithLabelValues(c.name, resultRejected).Inc()
	default:
		submitsTotal.WithLabelValues(c.name, resultAmbiguous).Inc()
	}
	return ref, err
}

func (c *Client) submit(ctx context.Context, p *outlast.Payout) (string, error) {
	body, err := json.Marshal(submitBody{PayoutID: p.ID, Amount: p.Amount, Currency: p.Currency, Destination: p.Destination})
	if err != nil {
		return "", fmt.Errorf("encode payout %s: %w", p.ID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	code, hdr, raw, err := c.do(ctx, http.MethodPost, "/payouts", bytes.NewReader(body), p.ID, ResponseBytesMax)
	if err != nil {
		return "", c.ambiguous(err, 0, "submit payout %s", p.ID)
	}
	switch {
	case code >= 200 && code <= 299:
		var resp struct {
			PartnerRef string `json:"partner_ref"`
		}
		if err := json.Unmarshal(raw, &resp); err != nil || !outlast.ValidID(resp.PartnerRef) {
			// The bank says yes but we cannot read its reference: the
			// payout may be accepted, so it is not a rejection.
			return "", c.ambiguous(fmt.Errorf("HTTP %d without a valid partner_ref", code), 0, "submit payout %s", p.ID)
		}
		return resp.PartnerRef, nil
	case definitive(code, raw):
		rej := &Rejection{Channel: c.name, StatusCode: code, Reason: reasonOf(raw, code)}
		return "", &outlast.Error{Code: outlast.EVALIDATION, Message: rej.Error(), Err: rej}
	}
	return "", c.ambiguous(fmt.Errorf("HTTP %d: %s", code, reasonOf(raw, code)), retryAfter(hdr), "submit payout %s", p.ID)
}

// definitive reports whether an answer is the partner refusing this payout
// in its own protocol: 400, 402 or 422 with the partner's JSON error body.
// Nothing else is: auth, routing and conflicts (401, 403, 404, 405, 409)
// would fail every payout at once for a misconfigured URL or credential,
// and what a proxy or the transport says (407, 408, 413, 421, 425, 429,
// 431, 5xx) is not the bank's word at all. Even a definitive answer only
// means "not accepted by this call": the dispatcher asks the partner's
// status before it fails a payout (Dispatcher, confirmRejection).
func definitive(code int, raw []byte) bool {
	switch code {
	case http.StatusBadRequest, http.StatusPaymentRequired, http.StatusUnprocessableEntity:
		_, ok := partnerError(raw)
		return ok
	}
	return false
}

// Status asks the partner about a payout. ErrNotFound means the partner
// answered, in its own JSON, that it never accepted it.
func (c *Client) Status(ctx context.Context, payoutID string) (*Status, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	code, hdr, raw, err := c.do(ctx, http.MethodGet, "/payouts/"+url.PathEscape(payoutID), nil, "", ResponseBytesMax)
	if err != nil {
		requestsTotal.WithLabelValues(c.name, "status", "error").Inc()
		return nil, c.ambiguous(err, 0, "status of payout %s", payoutID)
	}
	st, err := c.parseStatus(code, hdr, raw, payoutID)
	result := "ok"
	switch {
	case errors.Is(err, ErrNotFound):
		result = "not_found"
	case err != nil:
		result = "error"
	}
	requestsTotal.WithLabelValues(c.name, "status", result).Inc()
	return st, err
}

func (c *Client) parseStatus(code int, hdr http.Header, raw []byte, payoutID string) (*Status, error) {
	var body struct {
		PayoutID   string `json:"payout_id"`
		PartnerRef string `json:"partner_ref"`
		Status     string `json:"status"`
		Reason     string `json:"reason"`
		Error      string `json:"error"`
	}
	jsonErr := json.Unmarshal(raw, &body)
	if code == http.StatusNotFound && jsonErr == nil && body.Error != "" {
		// Only the bank's own JSON 404 counts: a proxy's or a wrong URL's
		// 404 must not make a reconciler believe a payout was never sent.
		return nil, &outlast.Error{Code: outlast.ENOTFOUND, Message: fmt.Sprintf("partner %s has no payout %s", c.name, payoutID), Err: ErrNotFound}
	}
	if code != http.StatusOK || jsonErr != nil {
		return nil, c.ambiguous(fmt.Errorf("HTTP %d: %s", code, reasonOf(raw, code)), retryAfter(hdr), "status of payout %s", payoutID)
	}
	st := &Status{PayoutID: body.PayoutID, PartnerRef: body.PartnerRef, Reason: truncate(body.Reason, outlast.ReasonBytesMax)}
	switch body.Status {
	case "accepted", "dispatched":
		st.Status = outlast.StatusDispatched
	case "succeeded":
		st.Status = outlast.StatusSucceeded
	case "failed":
		st.Status = outlast.StatusFailed
	default:
		return nil, c.ambiguous(fmt.Errorf("unknown status %q", body.Status), 0, "status of payout %s", payoutID)
	}
	if st.PayoutID != payoutID {
		return nil, c.ambiguous(fmt.Errorf("answer is about payout %q", st.PayoutID), 0, "status of payout %s", payoutID)
	}
	return st, nil
}

// Records returns everything the partner says it paid or failed. The
// answer is decoded as it streams in, at most RecordsBytesMax of it.
func (c *Client) Records(ctx context.Context) ([]outlast.PartnerRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RecordsTimeout)
	defer cancel()
	recs, after, err := c.records(ctx)
	if err != nil {
		requestsTotal.WithLabelValues(c.name, "records", "error").Inc()
		return nil, c.ambiguous(err, after, "records")
	}
	requestsTotal.WithLabelValues(c.name, "records", "ok").Inc()
	return recs, nil
}

func (c *Client) records(ctx context.Context) ([]outlast.PartnerRecord, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.baseURL+"/records", nil)
	if err != nil {
		return nil, 0, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, ResponseBytesMax))
		return nil, retryAfter(resp.Header), fmt.Errorf("HTTP %d: %s", resp.StatusCode, reasonOf(raw, resp.StatusCode))
	}
	lr := &io.LimitedReader{R: resp.Body, N: RecordsBytesMax + 1}
	var recs []outlast.PartnerRecord
	if err := json.UnmarshalRead(lr, &recs); err != nil {
		if lr.N <= 0 {
			return nil, 0, fmt.Errorf("records larger than %d bytes", RecordsBytesMax)
		}
		return nil, 0, fmt.Errorf("decode records: %w", err)
	}
	return recs, 0, nil
}

// do makes one call and reads at most maxBytes of the answer; a longer
// answer is an error. A non-empty idempotencyKey is sent as the
// Idempotency-Key header, which also lets net/http replay the request on a
// keep-alive connection that died before it was sent.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, idempotencyKey string, maxBytes int64) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, body)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idempotencyKey != "" {
		req.Header.Set("Idempotency-Key", idempotencyKey)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBytes+1))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read response: %w", err)
	}
	if int64(len(raw)) > maxBytes {
		return 0, nil, nil, fmt.Errorf("response larger than %d bytes", maxBytes)
	}
	return resp.StatusCode, resp.Header, raw, nil
}

// ambiguous wraps cause as an EUNAVAILABLE error matching ErrAmbiguous.
func (c *Client) ambiguous(cause error, after time.Duration, format string, args ...any) error {
	if after <= 0 {
		after = retryAfterDefault
	}
	what := fmt.Sprintf(format, args...)
	return &outlast.Error{
		Code:       outlast.EUNAVAILABLE,
		Message:    fmt.Sprintf("partner %s: %s: outcome unknown, retry later", c.name, what),
		RetryAfter: after,
		Err:        fmt.Errorf("%w: %w", ErrAmbiguous, cause),
	}
}

// partnerError returns the partner's own {"error": "..."}, if raw is one.
func partnerError(raw []byte) (string, bool) {
	var body struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.Error == "" {
		return "", false
	}
	return body.Error, true
}

// reasonOf extracts the partner's {"error": "..."} or, failing that, a
// short prefix of the body.
func reasonOf(raw []byte, code int) string {
	if reason, ok := partnerError(raw); ok {
		return truncate(reason, outlast.ReasonBytesMax)
	}
	if s := strings.TrimSpace(string(raw)); s != "" {
		return truncate(s, 200)
	}
	return http.StatusText(code)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// retryAfter reads a Retry-After header in seconds; 0 if absent.
func retryAfter(h http.Header) time.Duration {
	if h == nil {
		return 0
	}
	secs, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || secs <= 0 {
		return 0
	}
	return min(time.Duration(secs)*time.Second, time.Hour)
}
