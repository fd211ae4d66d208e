package outlast

import (
	"context"
	"maps"
	"slices"
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
