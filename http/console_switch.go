package http

import (
	"context"
	nethttp "net/http"
	"strconv"

	"github.com/outlast/outlast"
)

// consoleMaintenance turns maintenance on (with a message) or off for
// every instance, through the config document.
func (s *Server) consoleMaintenance(w nethttp.ResponseWriter, r *nethttp.Request) {
	if !s.consoleForm(w, r, true) {
		return
	}
	on := r.PostForm.Get("on") == "1"
	message := r.PostForm.Get("message")
	s.consoleChange(w, r, func(c *outlast.ControlConfig) error {
		c.Maintenance.On = on
		c.Maintenance.Message = ""
		if on {
			c.Maintenance.Message = message
		}
		return nil
	})
}

// consoleChannel makes a channel the active one (the one it replaces
// goes to the front of the fallback order), or enables or disables it. A
// channel the document does not name yet is added to it.
func (s *Server) consoleChannel(w nethttp.ResponseWriter, r *nethttp.Request) {
	if !s.consoleForm(w, r, true) {
		return
	}
	name, action := r.PostForm.Get("name"), r.PostForm.Get("action")
	current := ""
	if action == "activate" {
		current = s.currentChannel(r.Context())
	}
	s.consoleChange(w, r, func(c *outlast.ControlConfig) error {
		if !outlast.ValidID(name) {
			return outlast.Errorf(outlast.EVALIDATION, "channel name %q must be %s", name, outlast.IDRule)
		}
		switch action {
		case "activate":
			c.Activate(name, current)
		case "enable", "disable":
			c.Channels[name] = outlast.ChannelConfig{Enabled: action == "enable"}
		default:
			return outlast.Errorf(outlast.EVALIDATION, "unknown channel action %q", action)
		}
		return nil
	})
}

// currentChannel is where every instance seen recently sends new
// payouts first (outlast.AgreedChannel): what a config without an active
// channel means. "" if they do not agree or cannot be read.
func (s *Server) currentChannel(ctx context.Context) string {
	v := &consoleView{}
	if s.svc.Instances != nil {
		ictx, cancel := context.WithTimeout(ctx, consoleReadTimeout)
		list, err := s.svc.Instances.Instances(ictx)
		cancel()
		if err != nil {
			return ""
		}
		for _, is := range list {
			v.Instances = append(v.Instances, instanceView{InstanceStatus: is, Stale: s.stale(is)})
		}
	}
	if v.fresh() == nil && s.svc.Local != nil {
		v.Self = s.svc.Local.Heartbeat(ctx)
	}
	return outlast.AgreedChannel(v.fresh())
}

// consoleChange applies change to the current document and stores it if
// the document is still at the version the page was made from. A change
// someone else made since is answered 412 with the page as it is now; a
// refused document 422 with the reason.
func (s *Server) consoleChange(w nethttp.ResponseWriter, r *nethttp.Request, change func(c *outlast.ControlConfig) error) {
	if s.svc.Control == nil {
		s.consoleRefused(w, r, outlast.Errorf(outlast.ENOTFOUND, "this server keeps no config document"))
		return
	}
	version, err := strconv.ParseInt(r.PostForm.Get("version"), 10, 64)
	if err != nil || version < 0 {
		s.consoleRefused(w, r, outlast.Errorf(outlast.EINVALID, "the form lacks the config version it was made from: reload the page"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), consoleReadTimeout)
	defer cancel()
	cur, err := s.svc.Control.ControlConfig(ctx)
	if err != nil {
		s.consoleRefused(w, r, err)
		return
	}
	next := cur.Clone()
	if err := change(next); err != nil {
		s.consoleRefused(w, r, err)
		return
	}
	reason := r.PostForm.Get("reason")
	saved, err := s.svc.Control.PutControlConfig(ctx, next, version, "console: "+adminActor(r), reason)
	if err != nil {
		s.consoleRefused(w, r, err)
		return
	}
	s.log.Info("config changed", "version", saved.Version, "by", saved.UpdatedBy, "reason", reason)
	nethttp.Redirect(w, r, "/admin/?saved="+strconv.FormatInt(saved.Version, 10), nethttp.StatusSeeOther)
}

// consoleRefused answers a switch that did not take with the overview as
// it is now and why, under the status the API would give.
func (s *Server) consoleRefused(w nethttp.ResponseWriter, r *nethttp.Request, err error) {
	status := statusOf(outlast.ErrorCode(err))
	v := s.gather(r.Context(), -1)
	switch status {
	case nethttp.StatusPreconditionFailed:
		v.Problem = "Nothing was saved: the config was changed by someone else since you loaded this page. " +
			"This is the page as it is now; make your change again if it is still needed."
	case nethttp.StatusInternalServerError, nethttp.StatusServiceUnavailable:
		v.Problem = "Nothing was saved: " + s.unreachable(err) + ". The break-glass switch of this instance works without the database."
	default:
		v.Problem = "Nothing was saved: " + outlast.ErrorMessage(err)
	}
	s.render(w, status, "overview", v)
}

// consoleLocal is the break-glass switch of this instance alone: it
// needs nothing but the instance.
func (s *Server) consoleLocal(w nethttp.ResponseWriter, r *nethttp.Request) {
	if !s.consoleForm(w, r, true) {
		return
	}
	if s.svc.Local == nil {
		s.consoleRefused(w, r, outlast.Errorf(outlast.ENOTFOUND, "this server has no local control plane"))
		return
	}
	on := r.PostForm.Get("on") == "1"
	actor := "console: " + adminActor(r)
	_, err := s.svc.Local.SetLocal(on, r.PostForm.Get("message"), actor)
	if outlast.ErrorCode(err) == outlast.EVALIDATION {
		s.consoleRefused(w, r, err)
		return
	}
	if err != nil {
		// In force, not saved to the state file: a restart would undo it.
		s.log.Error("break-glass switch not saved", "err", err)
	}
	s.log.Warn("break-glass maintenance switched", "on", on, "by", actor)
	done := "local-off"
	if on {
		done = "local-on"
	}
	nethttp.Redirect(w, r, "/admin/?done="+done, nethttp.StatusSeeOther)
}
