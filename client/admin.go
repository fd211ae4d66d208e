package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/outlast/outlast"
)

// The admin API: every method here needs the admin token.

// CreateClient creates the API client id and returns its API key, which
// the service shows this once.
func (c *Client) CreateClient(ctx context.Context, id string) (apiKey string, err error) {
	var out struct {
		APIKey string `json:"api_key"`
	}
	_, err = c.Do(ctx, http.MethodPost, "/admin/v1/clients", nil, map[string]string{"id": id}, &out)
	return out.APIKey, err
}

// Config reads the config document; its Version is what PutConfig names
// as ifVersion.
func (c *Client) Config(ctx context.Context) (*outlast.ControlConfig, error) {
	var cfg outlast.ControlConfig
	_, err := c.Do(ctx, http.MethodGet, "/admin/v1/config", nil, nil, &cfg)
	return &cfg, err
}

// PutConfig replaces the config document if it is still at ifVersion
// (If-Match), saying why, and returns what was stored. If another change
// won meanwhile, it is refused with outlast.EPRECONDITION (412): read the
// document again and apply the change to it.
func (c *Client) PutConfig(ctx context.Context, cfg *outlast.ControlConfig, ifVersion int64, reason string) (*outlast.ControlConfig, error) {
	var next outlast.ControlConfig
	hdr := http.Header{
		"If-Match":              {strconv.Quote(strconv.FormatInt(ifVersion, 10))},
		"Outlast-Change-Reason": {reason},
	}
	_, err := c.Do(ctx, http.MethodPut, "/admin/v1/config", hdr, cfg, &next)
	return &next, err
}

// ConfigHistory returns up to limit config changes, newest first; limit 0
// asks for the service's default.
func (c *Client) ConfigHistory(ctx context.Context, limit int) ([]outlast.ConfigChange, error) {
	var out struct {
		Changes []outlast.ConfigChange `json:"changes"`
	}
	_, err := c.Do(ctx, http.MethodGet, "/admin/v1/config/history?limit="+strconv.Itoa(limit), nil, nil, &out)
	return out.Changes, err
}

// Instance is one instance's last heartbeat.
type Instance struct {
	outlast.InstanceStatus
	Stale          bool    `json:"stale"`   // not seen recently: it may be gone
	Applied        bool    `json:"applied"` // runs the current config version
	SeenAgoSeconds float64 `json:"seen_ago_seconds"`
}

// Name is the instance's id, with its address if that says more.
func (in *Instance) Name() string {
	if in.Addr == "" || in.Addr == in.ID {
		return in.ID
	}
	return in.ID + " (" + in.Addr + ")"
}

// Instances is every instance's last heartbeat.
type Instances struct {
	ConfigVersion int64      `json:"config_version"`
	Instances     []Instance `json:"instances"`
	// Raw is the answer as the service sent it, for printing unchanged.
	Raw json.RawMessage `json:"-"`
}

// Fresh returns the heartbeats of the instances seen recently.
func (l *Instances) Fresh() []*outlast.InstanceStatus {
	var out []*outlast.InstanceStatus
	for i := range l.Instances {
		if !l.Instances[i].Stale {
			out = append(out, &l.Instances[i].InstanceStatus)
		}
	}
	return out
}

// Instances lists every instance's last heartbeat. With the database
// down it is refused with 503: LocalStatus still answers.
func (c *Client) Instances(ctx context.Context) (*Instances, error) {
	var out Instances
	err := c.getRaw(ctx, "/admin/v1/instances", &out, &out.Raw)
	return &out, err
}

// LocalStatus is what one instance says of itself, from memory.
type LocalStatus struct {
	Control  outlast.ControlStatus   `json:"control"`
	Instance *outlast.InstanceStatus `json:"instance"`
	// Raw is the answer as the service sent it, for printing unchanged.
	Raw json.RawMessage `json:"-"`
}

// LocalStatus reads the control plane of the instance at the client's
// URL as it sees it; it answers with the database, the log and Redis all
// down.
func (c *Client) LocalStatus(ctx context.Context) (*LocalStatus, error) {
	var out LocalStatus
	err := c.getRaw(ctx, "/admin/v1/local/status", &out, &out.Raw)
	return &out, err
}

// SetLocalMaintenance turns the break-glass maintenance switch of the
// instance at the client's URL on or off; it needs no database. It
// returns the instance's control status and its Warning header, if any.
func (c *Client) SetLocalMaintenance(ctx context.Context, on bool, message string) (st *outlast.ControlStatus, warning string, err error) {
	st = &outlast.ControlStatus{}
	resp, err := c.Do(ctx, http.MethodPost, "/admin/v1/local/maintenance", nil, map[string]any{"on": on, "message": message}, st)
	if err != nil {
		return st, "", err
	}
	return st, resp.Header.Get("Warning"), nil
}

// DeadLetter is a notification that could not be applied.
type DeadLetter struct {
	ID           string                `json:"id"`
	Source       string                `json:"source"`
	Notification *outlast.Notification `json:"notification"` // nil if Raw could not be read as one
	Raw          string                `json:"raw"`
	Reason       string                `json:"reason"`
	Deliveries   int                   `json:"deliveries"`
	At           time.Time             `json:"at"`
}

// DeadLetterPage is the dead letters of every store that answered.
type DeadLetterPage struct {
	DeadLetters []DeadLetter `json:"dead_letters"`
	Unavailable []string     `json:"unavailable"` // the stores that did not answer
	// Raw is the answer as the service sent it, for printing unchanged.
	Raw json.RawMessage `json:"-"`
}

// DeadLetters lists up to limit dead letters of each store.
func (c *Client) DeadLetters(ctx context.Context, limit int) (*DeadLetterPage, error) {
	var page DeadLetterPage
	err := c.getRaw(ctx, "/admin/v1/deadletters?limit="+strconv.Itoa(limit), &page, &page.Raw)
	return &page, err
}

// ReplayDeadLetters applies the dead letters ids again and returns how
// many were.
func (c *Client) ReplayDeadLetters(ctx context.Context, ids []string) (replayed int, err error) {
	var out struct {
		Replayed int `json:"replayed"`
	}
	_, err = c.Do(ctx, http.MethodPost, "/admin/v1/deadletters/replay", nil, map[string][]string{"ids": ids}, &out)
	return out.Replayed, err
}

// ExceptionQuery selects exceptions to list; an empty field selects all.
type ExceptionQuery struct {
	Status    string // "open", "resolved" or "all"; "" is the service's default, open
	Kind      outlast.ExceptionKind
	PayoutID  string
	AccountID string
	Before    int64 // only ids below this: ExceptionPage.NextBefore of the page before
	Limit     int   // 0 is the service's default
}

func (q ExceptionQuery) values() url.Values {
	v := url.Values{}
	for name, s := range map[string]string{"status": q.Status, "kind": string(q.Kind), "payout_id": q.PayoutID, "account_id": q.AccountID} {
		if s != "" {
			v.Set(name, s)
		}
	}
	if q.Before > 0 {
		v.Set("before", strconv.FormatInt(q.Before, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// ExceptionPage is a page of exceptions, newest first, and how many of
// each kind are open.
type ExceptionPage struct {
	Exceptions []*outlast.Exception          `json:"exceptions"`
	NextBefore int64                         `json:"next_before"` // 0 after the last page
	Open       map[outlast.ExceptionKind]int `json:"open"`
	// Raw is the answer as the service sent it, for printing unchanged.
	Raw json.RawMessage `json:"-"`
}

// Exceptions lists the exceptions q selects.
func (c *Client) Exceptions(ctx context.Context, q ExceptionQuery) (*ExceptionPage, error) {
	var page ExceptionPage
	err := c.getRaw(ctx, "/admin/v1/exceptions?"+q.values().Encode(), &page, &page.Raw)
	return &page, err
}

// ExceptionDetail is one exception.
type ExceptionDetail struct {
	Exception *outlast.Exception
	// Raw is the answer as the service sent it, for printing unchanged.
	Raw json.RawMessage
}

// Exception reads one exception: every field, its evidence and its
// resolution, if any.
func (c *Client) Exception(ctx context.Context, id int64) (*ExceptionDetail, error) {
	d := &ExceptionDetail{Exception: &outlast.Exception{}}
	err := c.getRaw(ctx, "/admin/v1/exceptions/"+strconv.FormatInt(id, 10), d.Exception, &d.Raw)
	return d, err
}

// Resolution is what an operator sends to resolve an exception; who
// resolved it is the service's to say.
type Resolution struct {
	Action outlast.ResolveAction `json:"action"`
	Amount int64                 `json:"amount,omitempty"`
	Payout outlast.PayoutStatus  `json:"payout,omitempty"`
	Reason string                `json:"reason"`
}

// Resolved is the answer to a resolution; Account is nil for an
// exception without one.
type Resolved struct {
	Exception *outlast.Exception `json:"exception"`
	Account   *outlast.Account   `json:"account"`
}

// ResolveException resolves exception id as r says; its money moves by
// journal rows. Resolving one twice is refused (outlast.ECONFLICT).
func (c *Client) ResolveException(ctx context.Context, id int64, r Resolution) (*Resolved, error) {
	var out Resolved
	_, err := c.Do(ctx, http.MethodPost, "/admin/v1/exceptions/"+strconv.FormatInt(id, 10)+"/resolve", nil, r, &out)
	return &out, err
}

// getRaw reads path into raw, as sent, and decoded into out.
func (c *Client) getRaw(ctx context.Context, path string, out any, raw *json.RawMessage) error {
	if _, err := c.Do(ctx, http.MethodGet, path, nil, nil, raw); err != nil {
		return err
	}
	if err := json.Unmarshal(*raw, out); err != nil {
		return fmt.Errorf("decode GET %s: %w", path, err)
	}
	return nil
}
