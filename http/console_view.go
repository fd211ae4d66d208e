package http

import (
	"context"
	"fmt"
	"html/template"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/outlast/outlast"
)

// HeartbeatRateSeconds is how many seconds of Rates a heartbeat should
// carry: the console adds up the instances' counts over that window.
const HeartbeatRateSeconds = 60

// consoleView is what every console template is given; each page uses
// its part.
type consoleView struct {
	Page    string
	Now     time.Time
	Notice  string // a change that took
	Problem string // a change that did not, or a refused sign-in
	// DBDown says why the database could not be read; the page then
	// shows this instance's own view.
	DBDown string
	// Config is the current document and Change its last change; nil
	// while the database cannot be read.
	Config *outlast.ControlConfig
	Change *outlast.ConfigChange
	// PageVersion is the version the page's forms were made from (-1:
	// this page's own); Behind says the document moved on since.
	PageVersion int64
	Behind      bool
	Instances   []instanceView
	// Fresh counts the instances seen recently, Applied those of them at
	// Config's version.
	Fresh, Applied int
	// Local is this instance's control plane; nil without one.
	Local *outlast.ControlStatus
	Self  *outlast.InstanceStatus
	// Active is where new payouts go first under Config: its active
	// channel or, when it sets none (Startup), the channel every instance
	// seen recently was started with, if they agree ("" if not). Order
	// is the whole order Config makes that way; an instance whose own
	// order differs shows it.
	Active   string
	Startup  bool
	Order    []string
	Channels []channelView
	Charts   []template.HTML
	// ChartScope says whose requests the charts count.
	ChartScope string
	History    []changeView
	// The exceptions page: the open ones (newest first, at most
	// consoleOpenExceptionsMax), how many of each kind are open and in
	// all, the ones resolved last, the resolve form's actions, and a
	// refused form as it was sent.
	OpenExceptions, ResolvedExceptions []*outlast.Exception
	OpenCounts                         map[outlast.ExceptionKind]int
	OpenTotal                          int
	ResolveOptions                     []resolveOption
	ResolveForm                        resolveForm
}

type instanceView struct {
	*outlast.InstanceStatus
	Stale, Applied, Self bool
	// OrderDiffers says the instance reports a channel order other than
	// the view's Order; Lacks are the channels of Order it does not have.
	OrderDiffers bool
	Lacks        []string
}

type channelView struct {
	Name                string
	Enabled, Configured bool
	// Active: new payouts go here first, by the config or, Startup, as
	// every instance's start-up channel.
	Active, Startup  bool
	FallbackPosition int // 1-based; 0 when not in the fallback order
	// FirstOn counts the instances seen recently that send new payouts
	// here first although it is not the active channel.
	FirstOn int
	// Unserved: no instance seen recently has it.
	Unserved bool
}

type changeView struct {
	outlast.ConfigChange
	Summary []string
}

// gather reads what the overview shows. The database part is read
// within consoleReadTimeout; if it cannot be, DBDown says why and the
// rest comes from this instance's memory.
func (s *Server) gather(ctx context.Context, pageVersion int64) *consoleView {
	v := &consoleView{Page: "overview", PageVersion: pageVersion}
	var selfID string
	if s.svc.Local != nil {
		selfID = s.svc.Local.Status().InstanceID
	}
	if err := s.gatherDB(ctx, v, selfID); err != nil {
		v.DBDown = s.unreachable(err)
		v.Config, v.Change, v.Instances = nil, nil, nil
	}
	// This instance's own view is read after the database's, so a version
	// it applied in between shows in both places, not only in its row.
	if s.svc.Local != nil {
		st := s.svc.Local.Status()
		v.Local, v.Self = &st, s.svc.Local.Heartbeat(ctx)
	}
	if v.PageVersion < 0 && v.Config != nil {
		v.PageVersion = v.Config.Version
	}
	v.Behind = v.Config != nil && v.PageVersion != v.Config.Version
	fresh := v.fresh()
	if v.Config != nil {
		v.order(fresh)
	}
	v.Channels = channelsOf(v, fresh)
	v.Charts, v.ChartScope = s.charts(v)
	return v
}

func (s *Server) gatherDB(ctx context.Context, v *consoleView, selfID string) error {
	if s.svc.Control == nil {
		return outlast.Errorf(outlast.ENOTFOUND, "this server keeps no config document")
	}
	ctx, cancel := context.WithTimeout(ctx, consoleReadTimeout)
	defer cancel()
	c, err := s.svc.Control.ControlConfig(ctx)
	if err != nil {
		return err
	}
	v.Config = c
	changes, err := s.svc.Control.ControlHistory(ctx, 1)
	if err != nil {
		return err
	}
	if len(changes) > 0 {
		v.Change = &changes[0]
	}
	if s.svc.Instances == nil {
		return nil
	}
	list, err := s.svc.Instances.Instances(ctx)
	if err != nil {
		return err
	}
	for _, is := range list {
		iv := instanceView{InstanceStatus: is, Stale: s.stale(is),
			Applied: is.AppliedVersion == c.Version, Self: selfID != "" && is.ID == selfID}
		if !iv.Stale {
			v.Fresh++
			if iv.Applied {
				v.Applied++
			}
		}
		v.Instances = append(v.Instances, iv)
	}
	return nil
}

// fresh returns the heartbeats of the instances seen recently or, if
// there is none, this instance's own: those whose word counts on where
// new payouts go.
func (v *consoleView) fresh() []*outlast.InstanceStatus {
	var out []*outlast.InstanceStatus
	for _, iv := range v.Instances {
		if !iv.Stale {
			out = append(out, iv.InstanceStatus)
		}
	}
	if len(out) == 0 && v.Self != nil {
		out = append(out, v.Self)
	}
	return out
}

// order sets Active, Startup and Order from the config and the fresh
// instances' heartbeats, and marks the instances whose order differs.
func (v *consoleView) order(fresh []*outlast.InstanceStatus) {
	v.Active = v.Config.ActiveChannel
	if v.Active == "" {
		v.Startup, v.Active = true, outlast.AgreedChannel(fresh)
	}
	v.Order = v.Config.Order(v.Active)
	for i := range v.Instances {
		iv := &v.Instances[i]
		if iv.ChannelOrder == nil { // it does not say
			continue
		}
		iv.OrderDiffers = !slices.Equal(iv.ChannelOrder, v.Order)
		for _, name := range v.Order {
			if !slices.Contains(iv.ChannelNames(), name) {
				iv.Lacks = append(iv.Lacks, name)
			}
		}
	}
}

// stale says an instance was not seen recently.
func (s *Server) stale(is *outlast.InstanceStatus) bool {
	return s.now().Sub(is.SeenAt) > InstanceStaleAfter
}

// channelsOf lists the channels the document names and those the
// instances report, so that one no document names yet can be made active,
// with where each stands.
func channelsOf(v *consoleView, fresh []*outlast.InstanceStatus) []channelView {
	byName := map[string]*channelView{}
	get := func(name string) *channelView {
		if byName[name] == nil {
			byName[name] = &channelView{Name: name}
		}
		return byName[name]
	}
	if v.Config != nil {
		for name, cc := range v.Config.Channels {
			ch := get(name)
			ch.Configured, ch.Enabled = true, cc.Enabled
		}
		for i, name := range v.Config.Fallback {
			get(name).FallbackPosition = i + 1
		}
	}
	served := map[string]bool{}
	for _, is := range fresh {
		for _, name := range is.ChannelNames() {
			served[name] = true
		}
	}
	have := func(is *outlast.InstanceStatus) {
		for _, name := range is.ChannelNames() {
			if len(byName) < outlast.ChannelsMax {
				get(name)
			}
		}
	}
	if v.Self != nil {
		have(v.Self)
	}
	for _, iv := range v.Instances {
		have(iv.InstanceStatus)
	}
	out := make([]channelView, 0, len(byName))
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		ch := byName[name]
		if !ch.Configured {
			ch.Enabled = true // an instance's own channel is on until the document says otherwise
		}
		ch.Active, ch.Startup = v.Active != "" && name == v.Active, v.Startup
		ch.Unserved = len(fresh) > 0 && !served[name]
		for _, is := range fresh {
			if !ch.Active && len(is.ChannelOrder) > 0 && is.ChannelOrder[0] == name {
				ch.FirstOn++
			}
		}
		out = append(out, *ch)
	}
	return out
}

// describeChange says in words what a change did to the document.
func describeChange(before, after *outlast.ControlConfig) []string {
	if before == nil {
		before = &outlast.ControlConfig{}
	}
	if after == nil {
		after = &outlast.ControlConfig{}
	}
	var out []string
	bm, am := before.Maintenance, after.Maintenance
	switch {
	case !bm.On && am.On:
		out = append(out, fmt.Sprintf("maintenance turned on: %q", am.Message))
	case bm.On && !am.On:
		out = append(out, "maintenance turned off")
	case bm.Message != am.Message:
		out = append(out, fmt.Sprintf("maintenance message %q → %q", bm.Message, am.Message))
	}
	if bm.RetryAfterSeconds != am.RetryAfterSeconds {
		out = append(out, fmt.Sprintf("maintenance Retry-After %d s → %d s", bm.RetryAfterSeconds, am.RetryAfterSeconds))
	}
	if before.ActiveChannel != after.ActiveChannel {
		out = append(out, fmt.Sprintf("active channel %s → %s", orNone(before.ActiveChannel), orNone(after.ActiveChannel)))
	}
	if !slices.Equal(before.Fallback, after.Fallback) {
		out = append(out, fmt.Sprintf("fallback [%s] → [%s]", strings.Join(before.Fallback, ", "), strings.Join(after.Fallback, ", ")))
	}
	names := maps.Clone(before.Channels)
	if names == nil {
		names = map[string]outlast.ChannelConfig{}
	}
	maps.Copy(names, after.Channels)
	for _, name := range slices.Sorted(maps.Keys(names)) {
		b, inBefore := before.Channels[name]
		a, inAfter := after.Channels[name]
		switch {
		case !inBefore:
			out = append(out, fmt.Sprintf("channel %s added, %s", name, enabledWord(a.Enabled)))
		case !inAfter:
			out = append(out, fmt.Sprintf("channel %s removed", name))
		case a.Enabled != b.Enabled:
			out = append(out, fmt.Sprintf("channel %s %s", name, enabledWord(a.Enabled)))
		}
	}
	if len(out) == 0 {
		out = append(out, "no setting changed")
	}
	return out
}

// channelOrderText says where an instance sends new payouts, in order.
func channelOrderText(order []string) string {
	if len(order) == 0 {
		return "no channel: new payouts are refused"
	}
	return strings.Join(order, ", then ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func enabledWord(on bool) string {
	if on {
		return "enabled"
	}
	return "disabled"
}
