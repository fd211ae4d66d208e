package outlast

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Limits of the control plane's config document.
const (
	// ChannelsMax bounds the channels a config document names.
	ChannelsMax = 64
	// MaintenanceMessageBytesMax bounds the message shown during
	// maintenance.
	MaintenanceMessageBytesMax = 500
	// ActorBytesMax bounds who made a config change.
	ActorBytesMax = 128
	// ControlHistoryMax bounds one listing of config changes.
	ControlHistoryMax = 1000
	// MaintenanceRetryAfterMax bounds maintenance.retry_after_seconds.
	MaintenanceRetryAfterMax = 3600
	// MaintenanceRetryAfterDefault is the Retry-After of a payout refused
	// for maintenance when the document sets none.
	MaintenanceRetryAfterDefault = 30 * time.Second
)

// ControlConfig is the control plane's one versioned document: what every
// instance applies, whole, once it sees a new version. It lives in the
// database, never in Redis or the log (principle 3), and is stored as one
// JSON document, so a field added later (per-client limits) needs no
// migration; a reader ignores fields it does not know.
//
// The zero value is the default, what a ledger holds before the first
// change: version 0, maintenance off, no channels.
type ControlConfig struct {
	// Version increases by one on every change; a write names the version
	// it read (If-Match) and loses to any write since.
	Version     int64       `json:"version"`
	Maintenance Maintenance `json:"maintenance"`
	// Channels are the partner channels by name and whether each may be
	// used.
	Channels map[string]ChannelConfig `json:"channels"`
	// ActiveChannel, if set, is the channel new payouts go to first.
	ActiveChannel string `json:"active_channel"`
	// Fallback are the channels tried, in order, after the active one.
	Fallback  []string  `json:"fallback"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by"`
}

// Maintenance stops the service taking new payouts while On, answering
// with Message.
type Maintenance struct {
	On      bool   `json:"on"`
	Message string `json:"message,omitempty"`
	// RetryAfterSeconds is the Retry-After of a payout refused for
	// maintenance; 0 means MaintenanceRetryAfterDefault.
	RetryAfterSeconds int `json:"retry_after_seconds,omitempty"`
}

// RetryAfter is when a caller refused for maintenance is asked to come
// back.
func (m Maintenance) RetryAfter() time.Duration {
	if m.RetryAfterSeconds <= 0 {
		return MaintenanceRetryAfterDefault
	}
	return time.Duration(m.RetryAfterSeconds) * time.Second
}

// MaintenanceError is the EUNAVAILABLE a payout is refused with during
// maintenance: the operators' message, or a default one.
func MaintenanceError(message string, retryAfter time.Duration) error {
	if message == "" {
		message = "payouts are paused for maintenance"
	}
	return &Error{Code: EUNAVAILABLE, Message: message, RetryAfter: retryAfter}
}

// ChannelConfig is one channel's setting.
type ChannelConfig struct {
	Enabled bool `json:"enabled"`
}

// Validate checks the document, refusing it whole (EVALIDATION) on the
// first problem, with a message naming the field. Version, UpdatedAt and
// UpdatedBy are the store's to set and are not checked.
func (c *ControlConfig) Validate() error {
	if len(c.Maintenance.Message) > MaintenanceMessageBytesMax {
		return Errorf(EVALIDATION, "maintenance.message must be at most %d bytes", MaintenanceMessageBytesMax)
	}
	if err := checkText("maintenance.message", c.Maintenance.Message); err != nil {
		return err
	}
	if r := c.Maintenance.RetryAfterSeconds; r < 0 || r > MaintenanceRetryAfterMax {
		return Errorf(EVALIDATION, "maintenance.retry_after_seconds must be 0 (the default, %d) to %d", int(MaintenanceRetryAfterDefault/time.Second), MaintenanceRetryAfterMax)
	}
	if len(c.Channels) > ChannelsMax {
		return Errorf(EVALIDATION, "channels must name at most %d channels", ChannelsMax)
	}
	// Sorted, so the same document is always refused for the same reason.
	for _, name := range slices.Sorted(maps.Keys(c.Channels)) {
		if !validID(name) {
			return Errorf(EVALIDATION, "channels: name %q must be %s", name, IDRule)
		}
	}
	if c.ActiveChannel != "" {
		ch, ok := c.Channels[c.ActiveChannel]
		switch {
		case !ok:
			return Errorf(EVALIDATION, "active_channel %q is not in channels", c.ActiveChannel)
		case !ch.Enabled:
			return Errorf(EVALIDATION, "active_channel %q is not enabled", c.ActiveChannel)
		}
	}
	return c.validateFallback()
}

// validateFallback checks that the fallback order names configured
// channels, each once, and not the active one. A disabled channel may
// stay in it: disabling a channel for a while does not lose its place.
func (c *ControlConfig) validateFallback() error {
	seen := make(map[string]bool, len(c.Fallback))
	for i, name := range c.Fallback {
		_, ok := c.Channels[name]
		switch {
		case !ok:
			return Errorf(EVALIDATION, "fallback[%d]: %q is not in channels", i, name)
		case seen[name]:
			return Errorf(EVALIDATION, "fallback[%d]: %q is listed twice", i, name)
		case name == c.ActiveChannel:
			return Errorf(EVALIDATION, "fallback[%d]: %q is the active channel", i, name)
		}
		seen[name] = true
	}
	return nil
}

// ValidateControlChange checks a change a ControlStore is asked to
// make: the document (see Validate), who makes it (required, at most
// ActorBytesMax bytes of text) and why (at most ReasonBytesMax bytes of
// text). It is the one check both stores run.
func ValidateControlChange(c *ControlConfig, actor, reason string) error {
	switch {
	case c == nil:
		return Errorf(EVALIDATION, "the config document is required")
	case actor == "":
		return Errorf(EVALIDATION, "actor is required")
	case len(actor) > ActorBytesMax:
		return Errorf(EVALIDATION, "actor must be at most %d bytes", ActorBytesMax)
	case len(reason) > ReasonBytesMax:
		return Errorf(EVALIDATION, "reason must be at most %d bytes", ReasonBytesMax)
	}
	if err := checkText("actor", actor); err != nil {
		return err
	}
	if err := checkText("reason", reason); err != nil {
		return err
	}
	return c.Validate()
}

// Clone returns a deep copy of c. Nil Channels and Fallback become empty,
// so that the JSON of a stored document reads {} and [], never null.
func (c *ControlConfig) Clone() *ControlConfig {
	cp := *c
	cp.Channels = maps.Clone(c.Channels)
	if cp.Channels == nil {
		cp.Channels = map[string]ChannelConfig{}
	}
	cp.Fallback = append([]string{}, c.Fallback...)
	return &cp
}

// Order returns the channels new payouts go to under c, in the order
// they are tried: the active channel — or startup, the one an instance
// was started with, when c sets none — then the fallback order, leaving
// out disabled channels and repeats. An instance leaves out, besides,
// the channels it lacks.
func (c *ControlConfig) Order(startup string) []string {
	active := c.ActiveChannel
	if active == "" {
		active = startup
	}
	var out []string
	for _, name := range append([]string{active}, c.Fallback...) {
		if ch, named := c.Channels[name]; name != "" && (!named || ch.Enabled) && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// Activate makes name the active channel, enabled, and puts the channel
// it replaces first in the fallback order: the active channel or, when c
// sets none, current, where the instances send new payouts now
// (AgreedChannel; "" if unknown). A current channel c does not name yet
// is added to it, enabled, since the fallback order may name only
// channels c names.
func (c *ControlConfig) Activate(name, current string) {
	prev := c.ActiveChannel
	if prev == "" {
		prev = current
	}
	if c.Channels == nil {
		c.Channels = map[string]ChannelConfig{}
	}
	c.Channels[name] = ChannelConfig{Enabled: true}
	c.Fallback = slices.DeleteFunc(slices.Clone(c.Fallback), func(f string) bool { return f == name || f == prev })
	if prev != "" && prev != name {
		if _, named := c.Channels[prev]; !named {
			c.Channels[prev] = ChannelConfig{Enabled: true}
		}
		c.Fallback = append([]string{prev}, c.Fallback...)
	}
	c.ActiveChannel = name
}

// ConfigChange is the audit row of one change of the config document:
// who made it, when and why, and the document before and after.
type ConfigChange struct {
	// Version is the version the change made (After.Version).
	Version       int64
	At            time.Time
	Actor, Reason string
	Before, After *ControlConfig
}

// ControlStore keeps the config document and its history. It is kept
// apart from Ledger: the control path reads the database directly, never
// through the data plane's caches.
type ControlStore interface {
	// ControlConfig returns the current document; before the first
	// change, the default (the zero ControlConfig: version 0, maintenance
	// off, no channels).
	ControlConfig(ctx context.Context) (*ControlConfig, error)
	// ControlVersion returns the current document's version: the cheap
	// read instances poll.
	ControlVersion(ctx context.Context) (int64, error)
	// PutControlConfig replaces the document with c if the current
	// version is still ifVersion, and returns what it stored: c at
	// version ifVersion+1, UpdatedAt now and UpdatedBy actor (c's own
	// Version, UpdatedAt and UpdatedBy are ignored; c is not changed).
	// The change row with the document before and after commits in the
	// same transaction. EVALIDATION if ValidateControlChange refuses it,
	// EPRECONDITION if the version is no longer ifVersion; then nothing
	// changes. Of concurrent puts with the same ifVersion one wins.
	PutControlConfig(ctx context.Context, c *ControlConfig, ifVersion int64, actor, reason string) (*ControlConfig, error)
	// ControlHistory lists up to limit changes, newest first. If limit
	// <= 0 or > ControlHistoryMax, ControlHistoryMax is used.
	ControlHistory(ctx context.Context, limit int) ([]ConfigChange, error)
}

// StaleConfig is PutControlConfig's EPRECONDITION: the document is at
// version current, not the ifVersion the change was made from.
func StaleConfig(current, ifVersion int64) error {
	return Errorf(EPRECONDITION, "the config is at version %d, not %d: read it again", current, ifVersion)
}

// Sources of a maintenance override: the break-glass paths that act on
// one instance without the database.
const (
	// OverrideLocal is POST /admin/v1/local/maintenance on the instance.
	OverrideLocal = "local"
	// OverrideFile is the file every instance re-reads (--override-file).
	OverrideFile = "file"
)

// Override is a break-glass maintenance switch of one instance: it holds
// the instance in maintenance whatever the config document says, until it
// is cleared.
type Override struct {
	Source  string    `json:"source"` // OverrideLocal or OverrideFile
	Message string    `json:"message,omitempty"`
	Since   time.Time `json:"since"`
	// Actor says who set a local override ("admin token from 10.0.0.7"),
	// or which file holds it.
	Actor string `json:"actor,omitempty"`
}

// DependencyHealth is what one instance sees of one dependency.
type DependencyHealth struct {
	// Name is "database", "log", "redis" or "channel:NAME".
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// State says more where there is more than up and down: a channel's
	// breaker ("closed", "open", "half-open") or "disabled" for a channel
	// the operators turned off, then, after "; ", its outlier ejection
	// where one applies: "ejected until 15:04:05 UTC (ejection 2)" or
	// "returning 40%" (its share of new payouts as it comes back).
	State string `json:"state,omitempty"`
	// Detail is the error, if any, for a person to read.
	Detail string `json:"detail,omitempty"`
}

// InstanceStatus is one instance's heartbeat: who it is, which config it
// runs, and how its dependencies look from where it stands.
type InstanceStatus struct {
	ID        string    `json:"id"`
	Addr      string    `json:"addr"`
	StartedAt time.Time `json:"started_at"`
	// SeenAt is when the heartbeat was written; the store sets it.
	SeenAt time.Time `json:"seen_at"`
	// AppliedVersion is the config version the instance runs, applied at
	// AppliedAt.
	AppliedVersion int64     `json:"applied_version"`
	AppliedAt      time.Time `json:"applied_at"`
	// Maintenance says whether the instance refuses new payouts now, for
	// whichever reason (the config or an override).
	Maintenance  bool               `json:"maintenance"`
	Overrides    []Override         `json:"overrides"`
	Dependencies []DependencyHealth `json:"dependencies"`
	// ChannelOrder is where the instance sends new payouts, in the order
	// it tries them, the first while its breaker is closed: the config's
	// Order with the channel it was started with (serve
	// --active-channel), less the channels it lacks. Empty when no
	// channel may take new payouts.
	ChannelOrder []string `json:"channel_order"`
	// Channels are the partner channels the instance has, sorted.
	// ChannelOrder and Channels are nil from an instance that does not
	// report them.
	Channels []string `json:"channels"`
	// Rates are the instance's counts of its last seconds, for the admin
	// console's cluster charts; nil from an instance that keeps none.
	Rates *RateSeries `json:"rates,omitempty"`
}

// ChannelNames returns the partner channels the instance has: Channels,
// or, from an instance that does not report them, the channels its
// Dependencies name ("channel:NAME").
func (s *InstanceStatus) ChannelNames() []string {
	if s.Channels != nil {
		return s.Channels
	}
	var out []string
	for _, d := range s.Dependencies {
		if name, ok := strings.CutPrefix(d.Name, "channel:"); ok {
			out = append(out, name)
		}
	}
	return out
}

// AgreedChannel returns the channel where every one of instances sends
// new payouts first (ChannelOrder[0]), if each reports one and they
// agree; "" otherwise. Under a config that sets no active channel, it is
// the channel the instances were started with. Callers pass the
// instances seen recently: one that is gone has no say.
func AgreedChannel(instances []*InstanceStatus) string {
	agreed := ""
	for _, is := range instances {
		if len(is.ChannelOrder) == 0 || (agreed != "" && is.ChannelOrder[0] != agreed) {
			return ""
		}
		agreed = is.ChannelOrder[0]
	}
	return agreed
}

// RateSeriesMax bounds the seconds a RateSeries holds.
const RateSeriesMax = 300

// RateSeries counts what one instance did in each of its last seconds:
// entry i of each slice is the second End-len+1+i (unix seconds), the
// last one still counting. The slices have the same length, at most
// RateSeriesMax.
type RateSeries struct {
	End int64 `json:"end"`
	// Payouts are payouts created (answered 201), Notifications partner
	// notifications accepted (200), Errors responses of status 500 and
	// above other than maintenance refusals.
	Payouts       []int64 `json:"payouts"`
	Notifications []int64 `json:"notifications"`
	Errors        []int64 `json:"errors"`
	// MaintenanceRefused are payouts refused for maintenance (503 with
	// the operators' message): a planned pause, kept out of Errors so
	// that it does not read as an outage. Nil from an instance that does
	// not report it.
	MaintenanceRefused []int64 `json:"maintenance_refused"`
}

// Valid reports whether the slices have one length, at most
// RateSeriesMax (MaintenanceRefused may also be nil): a series from
// another instance's heartbeat is read only if it is.
func (r *RateSeries) Valid() bool {
	n := len(r.Payouts)
	return n <= RateSeriesMax && len(r.Notifications) == n && len(r.Errors) == n &&
		(r.MaintenanceRefused == nil || len(r.MaintenanceRefused) == n)
}

// InstanceStore keeps the instances' heartbeats, in the same database as
// the config document.
type InstanceStore interface {
	// PutInstance records s as instance s.ID's latest heartbeat, with
	// SeenAt now, and forgets instances not seen for InstanceForgetAfter.
	PutInstance(ctx context.Context, s *InstanceStatus) error
	// Instances lists the latest heartbeats of the InstancesMax instances
	// seen most recently, by id.
	Instances(ctx context.Context) ([]*InstanceStatus, error)
}

// InstanceForgetAfter is how long an instance's heartbeat is kept after
// it stopped beating: long enough to see which instance went away, short
// enough that a crash loop's names do not pile up.
const InstanceForgetAfter = time.Hour

// InstancesMax bounds a listing of heartbeats: the most recently seen.
const InstancesMax = 1000

// ControlStatus is what an instance says of its control plane: in /readyz, the
// heartbeat and the local break-glass endpoint.
type ControlStatus struct {
	InstanceID string `json:"instance_id,omitempty"`
	// AppliedVersion is the document version in force, applied at
	// AppliedAt; -1 before any was read.
	AppliedVersion int64     `json:"applied_version"`
	AppliedAt      time.Time `json:"applied_at,omitzero"`
	// CheckedAt is when the database last confirmed it; AgeSeconds is
	// how long ago, and Stale says it is longer than three polls: the
	// instance runs on its last good config.
	CheckedAt  time.Time `json:"checked_at,omitzero"`
	AgeSeconds float64   `json:"age_seconds"`
	Stale      bool      `json:"stale"`
	// LastError is why the database could not be read, while it cannot.
	LastError string `json:"last_error,omitempty"`
	// Listening says the change hint (LISTEN/NOTIFY) is open.
	Listening bool `json:"listening"`
	// Maintenance is whether new payouts are refused now; Source says by
	// what: "config", "local" or "file".
	Maintenance bool   `json:"maintenance"`
	Source      string `json:"maintenance_source,omitempty"`
	Message     string `json:"maintenance_message,omitempty"`
	// Overrides are the break-glass switches in force.
	Overrides []Override `json:"overrides"`
}

// String is the status in one line, for /readyz's 503 and logs.
func (s ControlStatus) String() string {
	out := fmt.Sprintf("config version %d", s.AppliedVersion)
	if s.Stale {
		out += fmt.Sprintf(", last confirmed %.0fs ago (the last good config is kept)", s.AgeSeconds)
	}
	if s.Maintenance {
		out += ", maintenance on (" + s.Source + ")"
	}
	return out
}
