package outlast_test

import (
	"strings"
	"testing"

	"github.com/outlast/outlast"
)

// validControl is a document every case starts from: two enabled
// channels and a disabled one, tcb active, acb then vcb behind it.
func validControl() *outlast.ControlConfig {
	return &outlast.ControlConfig{
		Maintenance: outlast.Maintenance{Message: "back at 02:00 UTC"},
		Channels: map[string]outlast.ChannelConfig{
			"tcb": {Enabled: true}, "acb": {Enabled: true}, "vcb": {Enabled: false},
		},
		ActiveChannel: "tcb",
		Fallback:      []string{"acb", "vcb"},
	}
}

func TestControlConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c *outlast.ControlConfig)
		want   string // a part of the message; "" for valid
	}{
		{"valid", func(c *outlast.ControlConfig) {}, ""},
		{"zero value", func(c *outlast.ControlConfig) { *c = outlast.ControlConfig{} }, ""},
		{"no active channel", func(c *outlast.ControlConfig) { c.ActiveChannel = "" }, ""},
		{"maintenance on", func(c *outlast.ControlConfig) { c.Maintenance.On = true }, ""},
		{"message at its limit", func(c *outlast.ControlConfig) {
			c.Maintenance.Message = strings.Repeat("é", outlast.MaintenanceMessageBytesMax/2)
		}, ""},
		{"message too long", func(c *outlast.ControlConfig) {
			c.Maintenance.Message = strings.Repeat("a", outlast.MaintenanceMessageBytesMax+1)
		}, "maintenance.message must be at most"},
		{"message with a control character", func(c *outlast.ControlConfig) {
			c.Maintenance.Message = "back\x1b[2J soon"
		}, "maintenance.message must not contain control characters"},
		{"message not UTF-8", func(c *outlast.ControlConfig) { c.Maintenance.Message = "back \xff" }, "maintenance.message must be UTF-8"},
		{"bad channel name", func(c *outlast.ControlConfig) { c.Channels["a b"] = outlast.ChannelConfig{} }, `channels: name "a b"`},
		{"empty channel name", func(c *outlast.ControlConfig) { c.Channels[""] = outlast.ChannelConfig{} }, `channels: name ""`},
		{"too many channels", func(c *outlast.ControlConfig) {
			for i := range outlast.ChannelsMax {
				c.Channels[strings.Repeat("x", i+1)] = outlast.ChannelConfig{}
			}
		}, "at most 64 channels"},
		{"active channel not configured", func(c *outlast.ControlConfig) { c.ActiveChannel = "bidv" }, `active_channel "bidv" is not in channels`},
		{"active channel disabled", func(c *outlast.ControlConfig) { c.ActiveChannel = "vcb"; c.Fallback = []string{"acb"} },
			`active_channel "vcb" is not enabled`},
		{"fallback not configured", func(c *outlast.ControlConfig) { c.Fallback = []string{"acb", "bidv"} }, `fallback[1]: "bidv" is not in channels`},
		{"fallback duplicate", func(c *outlast.ControlConfig) { c.Fallback = []string{"acb", "vcb", "acb"} }, `fallback[2]: "acb" is listed twice`},
		{"fallback names the active channel", func(c *outlast.ControlConfig) { c.Fallback = []string{"tcb"} },
			`fallback[0]: "tcb" is the active channel`},
		{"fallback without an active channel", func(c *outlast.ControlConfig) { c.ActiveChannel = ""; c.Fallback = []string{"tcb", "acb"} }, ""},
	} {
		c := validControl()
		tc.change(c)
		wantRefusal(t, tc.name+": Validate()", c.Validate(), tc.want)
	}
}

// wantRefusal fails t unless err is EVALIDATION with a message holding
// want, or, for want "", nil.
func wantRefusal(t *testing.T, what string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s = %v, want nil", what, err)
	case want != "" && (outlast.ErrorCode(err) != outlast.EVALIDATION || !strings.Contains(outlast.ErrorMessage(err), want)):
		t.Errorf("%s = %v, want %s containing %q", what, err, outlast.EVALIDATION, want)
	}
}

func TestValidateControlChange(t *testing.T) {
	for _, tc := range []struct {
		name          string
		c             *outlast.ControlConfig
		actor, reason string
		want          string
	}{
		{"valid", validControl(), "alice@ops", "bank maintenance", ""},
		{"no reason", validControl(), "alice@ops", "", ""},
		{"no document", nil, "alice@ops", "", "the config document is required"},
		{"no actor", validControl(), "", "why", "actor is required"},
		{"actor too long", validControl(), strings.Repeat("a", outlast.ActorBytesMax+1), "", "actor must be at most"},
		{"actor with a newline", validControl(), "alice\nbob", "", "actor must not contain control characters"},
		{"reason too long", validControl(), "alice", strings.Repeat("a", outlast.ReasonBytesMax+1), "reason must be at most"},
		{"reason with a control character", validControl(), "alice", "a\x00b", "reason must not contain control characters"},
		{"invalid document", &outlast.ControlConfig{ActiveChannel: "tcb"}, "alice", "", "active_channel"},
	} {
		wantRefusal(t, tc.name+": ValidateControlChange", outlast.ValidateControlChange(tc.c, tc.actor, tc.reason), tc.want)
	}
}

// TestControlConfigClone: a clone shares nothing with its original, and
// its JSON never holds null.
func TestControlConfigClone(t *testing.T) {
	c := validControl()
	cp := c.Clone()
	cp.Channels["tcb"] = outlast.ChannelConfig{}
	cp.Fallback[0] = "tcb"
	if !c.Channels["tcb"].Enabled || c.Fallback[0] != "acb" {
		t.Fatalf("changing the clone changed the original: %+v", c)
	}
	z := (&outlast.ControlConfig{}).Clone()
	if z.Channels == nil || z.Fallback == nil {
		t.Fatalf("Clone(zero) = %+v, want empty, not nil, channels and fallback", z)
	}
}

func TestControlConfigOrder(t *testing.T) {
	noActive := validControl()
	noActive.ActiveChannel = ""
	for _, tc := range []struct {
		c       *outlast.ControlConfig
		startup string
		want    string
	}{
		{validControl(), "xcb", "tcb,acb"},              // vcb disabled; the start-up channel unused
		{noActive, "tcb", "tcb,acb"},                    // the start-up channel first
		{noActive, "acb", "acb"},                        // not repeated
		{noActive, "vcb", "acb"},                        // a disabled start-up channel is left out
		{noActive, "", "acb"},                           // none given at start
		{&outlast.ControlConfig{}, "zcb", "zcb"},        // the default document
		{&outlast.ControlConfig{Fallback: nil}, "", ""}, // nothing at all
	} {
		if got := strings.Join(tc.c.Order(tc.startup), ","); got != tc.want {
			t.Errorf("%+v.Order(%q) = %q, want %q", tc.c, tc.startup, got, tc.want)
		}
	}
}

// TestControlConfigActivate: the channel replaced goes first in the
// fallback order: the document's active one, or the instances' current
// one when it sets none; the result validates.
func TestControlConfigActivate(t *testing.T) {
	for _, tc := range []struct {
		name             string
		c                *outlast.ControlConfig
		activate, cur    string
		active, fallback string
	}{
		{"active replaced", validControl(), "acb", "zcb", "acb", "tcb,vcb"},
		{"active again", validControl(), "tcb", "", "tcb", "acb,vcb"},
		{"disabled one enabled", validControl(), "vcb", "", "vcb", "tcb,acb"},
		{"start-up one replaced", &outlast.ControlConfig{}, "acb", "tcb", "acb", "tcb"},
		{"start-up one made explicit", &outlast.ControlConfig{}, "tcb", "tcb", "tcb", ""},
		{"current unknown", &outlast.ControlConfig{}, "acb", "", "acb", ""},
	} {
		tc.c.Activate(tc.activate, tc.cur)
		if tc.c.ActiveChannel != tc.active || strings.Join(tc.c.Fallback, ",") != tc.fallback || !tc.c.Channels[tc.activate].Enabled {
			t.Errorf("%s: Activate(%q, %q) = active %q, fallback %q, channels %v; want %q, %q, %s enabled",
				tc.name, tc.activate, tc.cur, tc.c.ActiveChannel, tc.c.Fallback, tc.c.Channels, tc.active, tc.fallback, tc.activate)
		}
		if err := tc.c.Validate(); err != nil {
			t.Errorf("%s: Validate() after Activate = %v", tc.name, err)
		}
	}
}

func TestAgreedChannel(t *testing.T) {
	is := func(order ...string) *outlast.InstanceStatus { return &outlast.InstanceStatus{ChannelOrder: order} }
	for _, tc := range []struct {
		name      string
		instances []*outlast.InstanceStatus
		want      string
	}{
		{"agree", []*outlast.InstanceStatus{is("tcb", "acb"), is("tcb")}, "tcb"},
		{"disagree", []*outlast.InstanceStatus{is("tcb"), is("acb", "tcb")}, ""},
		{"one reports nothing", []*outlast.InstanceStatus{is("tcb"), {}}, ""},
		{"one has no channel", []*outlast.InstanceStatus{is(), is("tcb")}, ""},
		{"no instance", nil, ""},
	} {
		if got := outlast.AgreedChannel(tc.instances); got != tc.want {
			t.Errorf("%s: AgreedChannel = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestRateSeriesValid: a heartbeat's series is read only with slices of
// one length, at most RateSeriesMax; MaintenanceRefused may be absent.
func TestRateSeriesValid(t *testing.T) {
	two := []int64{1, 2}
	for _, tc := range []struct {
		name string
		r    outlast.RateSeries
		want bool
	}{
		{"all", outlast.RateSeries{Payouts: two, Notifications: two, Errors: two, MaintenanceRefused: two}, true},
		{"no maintenance series", outlast.RateSeries{Payouts: two, Notifications: two, Errors: two}, true},
		{"short maintenance series", outlast.RateSeries{Payouts: two, Notifications: two, Errors: two, MaintenanceRefused: []int64{1}}, false},
		{"empty maintenance series", outlast.RateSeries{Payouts: two, Notifications: two, Errors: two, MaintenanceRefused: []int64{}}, false},
		{"short errors", outlast.RateSeries{Payouts: two, Notifications: two, Errors: []int64{1}}, false},
		{"too long", outlast.RateSeries{Payouts: make([]int64, outlast.RateSeriesMax+1), Notifications: make([]int64, outlast.RateSeriesMax+1),
			Errors: make([]int64, outlast.RateSeriesMax+1), MaintenanceRefused: make([]int64, outlast.RateSeriesMax+1)}, false},
	} {
		if got := tc.r.Valid(); got != tc.want {
			t.Errorf("%s: Valid() = %t, want %t", tc.name, got, tc.want)
		}
	}
}
