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

// readyz says whether this instance can take payouts. Any failure is a 503
// with Retry-After: a load balancer should try again, not give up.
func (s *Server) readyz(w nethttp.ResponseWriter, r *nethttp.Request) {
	if s.svc.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := s.svc.Ready(ctx); err != nil {
			msg := "not ready"
			if code := outlast.ErrorCode(err); code != outlast.EINTERNAL {
				msg = "not ready: " + outlast.ErrorMessage(err)
			}
			s.writeError(w, r, outlast.Unavailable(err, outlast.ErrorRetryAfter(err), "%s", msg))
			return
		}
	}
	writeJSON(w, nethttp.StatusOK, struct {
		Status string `json:"status"`
	}{"ready"})
}

func (s *Server) metrics(w nethttp.ResponseWriter, r *nethttp.Request) {
	if s.svc.Metrics == nil {
		s.writeError(w, r, outlast.Errorf(outlast.ENOTFOUND, "metrics are not served by this instance"))
		return
	}
	s.svc.Metrics.ServeHTTP(w, r)
}
