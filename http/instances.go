package http

import (
	nethttp "net/http"
	"time"

	"github.com/outlast/outlast"
)

// InstanceStaleAfter is how long after its last heartbeat an instance is
// listed as not seen recently: a few missed heartbeats.
const InstanceStaleAfter = 10 * time.Second

// instanceJSON is one instance in GET /admin/v1/instances.
type instanceJSON struct {
	*outlast.InstanceStatus
	// Stale: no heartbeat for InstanceStaleAfter; what it says may be
	// old, and the instance may be gone.
	Stale bool `json:"stale"`
	// Applied: it runs the current config version.
	Applied bool `json:"applied"`
	// SeenAgoSeconds is how long ago its last heartbeat was written.
	SeenAgoSeconds float64 `json:"seen_ago_seconds"`
}

// instancesJSON is GET /admin/v1/instances.
type instancesJSON struct {
	// ConfigVersion is the current version of the config document.
	ConfigVersion int64          `json:"config_version"`
	Instances     []instanceJSON `json:"instances"`
}

// listInstances lists every instance's last heartbeat with whether it
// applied the current config version and whether it was seen recently.
func (s *Server) listInstances(w nethttp.ResponseWriter, r *nethttp.Request) {
	if err := s.requireControl(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.svc.Instances == nil {
		s.writeError(w, r, outlast.Errorf(outlast.ENOTFOUND, "this server keeps no heartbeats"))
		return
	}
	version, err := s.svc.Control.ControlVersion(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	list, err := s.svc.Instances.Instances(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	now := s.now()
	out := instancesJSON{ConfigVersion: version, Instances: make([]instanceJSON, 0, len(list))}
	for _, is := range list {
		ago := now.Sub(is.SeenAt)
		out.Instances = append(out.Instances, instanceJSON{InstanceStatus: is, Stale: ago > InstanceStaleAfter,
			Applied: is.AppliedVersion == version, SeenAgoSeconds: max(0, ago.Seconds())})
	}
	writeJSON(w, nethttp.StatusOK, out)
}

// localStatusJSON is GET /admin/v1/local/status: this instance alone, as
// it sees itself, whatever is down.
type localStatusJSON struct {
	Control   outlast.ControlStatus   `json:"control"`
	Heartbeat *outlast.InstanceStatus `json:"instance"`
}

// localStatus answers this instance's control status and dependency
// health from memory; it needs neither the database nor anything else.
func (s *Server) localStatus(w nethttp.ResponseWriter, r *nethttp.Request) {
	if err := s.requireLocal(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, nethttp.StatusOK, localStatusJSON{Control: s.svc.Local.Status(), Heartbeat: s.svc.Local.Heartbeat(r.Context())})
}

// localMaintenance is the break-glass switch of this instance: body
// {"on": true, "message": "…"} holds it in maintenance whatever the
// config document says, {"on": false} clears it. It needs nothing but
// the instance: not the database, the log or Redis.
func (s *Server) localMaintenance(w nethttp.ResponseWriter, r *nethttp.Request) {
	if err := s.requireLocal(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	var in struct {
		On      *bool  `json:"on"`
		Message string `json:"message"`
	}
	if err := s.decodeBody(w, r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	if in.On == nil {
		s.writeError(w, r, outlast.Errorf(outlast.EVALIDATION, `"on" is required: true holds this instance in maintenance, false clears it`))
		return
	}
	actor := adminActor(r)
	st, err := s.svc.Local.SetLocal(*in.On, in.Message, actor)
	if outlast.ErrorCode(err) == outlast.EVALIDATION {
		s.writeError(w, r, err)
		return
	}
	if err != nil {
		// In force, not saved: say so, but the switch worked.
		s.log.Error("break-glass switch not saved", "err", err)
		w.Header().Set("Warning", `199 - "`+outlast.ErrorMessage(err)+`"`)
	}
	s.log.Warn("break-glass maintenance switched", "on", *in.On, "by", actor, "message", in.Message)
	writeJSON(w, nethttp.StatusOK, st)
}

// requireLocal checks the admin token and that this server has a
// control plane.
func (s *Server) requireLocal(r *nethttp.Request) error {
	if err := s.requireAdmin(r); err != nil {
		return err
	}
	if s.svc.Local == nil {
		return outlast.Errorf(outlast.ENOTFOUND, "this server has no local control plane")
	}
	return nil
}
