package http

import (
	"context"
	nethttp "net/http"
	"time"

	"github.com/outlast/outlast"
)

// readyTimeout bounds a readiness check, so a hung dependency answers 503
// rather than hanging the load balancer's probe.
const readyTimeout = 5 * time.Second

// healthz says only that the process serves HTTP.
func (s *Server) healthz(w nethttp.ResponseWriter, r *nethttp.Request) {
	writeJSON(w, nethttp.StatusOK, struct {
		Status string `json:"status"`
	}{"ok"})
}

// readyz says whether this instance can serve: a failure is a 503 with
// Retry-After (a load balancer should try again, not give up), whose
// message also gives the control plane's state. Maintenance is not a
// failure: reads and partner notifications must keep flowing to the
// instance, so it stays ready and says "payouts": "paused", with its
// config version, its age and any break-glass override.
func (s *Server) readyz(w nethttp.ResponseWriter, r *nethttp.Request) {
	var control *outlast.ControlStatus
	if s.svc.Local != nil {
		st := s.svc.Local.Status()
		control = &st
	}
	if s.svc.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := s.svc.Ready(ctx); err != nil {
			msg := "not ready"
			if code := outlast.ErrorCode(err); code != outlast.EINTERNAL {
				msg = "not ready: " + outlast.ErrorMessage(err)
			}
			if control != nil {
				msg += "; " + control.String()
			}
			s.writeError(w, r, outlast.Unavailable(err, outlast.ErrorRetryAfter(err), "%s", msg))
			return
		}
	}
	out := struct {
		Status  string                 `json:"status"`
		Payouts string                 `json:"payouts"`
		Control *outlast.ControlStatus `json:"control,omitempty"`
	}{Status: "ready", Payouts: "accepted", Control: control}
	if control != nil && control.Maintenance {
		out.Payouts = "paused"
	}
	writeJSON(w, nethttp.StatusOK, out)
}

func (s *Server) metrics(w nethttp.ResponseWriter, r *nethttp.Request) {
	if s.svc.Metrics == nil {
		s.writeError(w, r, outlast.Errorf(outlast.ENOTFOUND, "metrics are not served by this instance"))
		return
	}
	s.svc.Metrics.ServeHTTP(w, r)
}
