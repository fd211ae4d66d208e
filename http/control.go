package http

import (
	"net"
	nethttp "net/http"
	"strconv"
	"strings"
	"time"

	"github.com/outlast/outlast"
)

// headerChangeReason carries why an operator changes the config; it is
// kept with the change in its audit row.
const headerChangeReason = "Outlast-Change-Reason"

// configHistoryLimitDefault is the page of GET /admin/v1/config/history
// without ?limit=.
const configHistoryLimitDefault = 50

// getConfig answers the config document with its version as the ETag,
// which a PUT sends back in If-Match.
func (s *Server) getConfig(w nethttp.ResponseWriter, r *nethttp.Request) {
	if err := s.requireControl(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	c, err := s.svc.Control.ControlConfig(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("ETag", etag(c.Version))
	writeJSON(w, nethttp.StatusOK, c)
}

// putConfig replaces the whole config document, only if it is still at
// the version If-Match names (412 otherwise: another operator changed it
// since it was read). A document that does not validate is refused whole
// (422). Its version and updated_* fields are the store's to set; what the
// body says of them is ignored.
func (s *Server) putConfig(w nethttp.ResponseWriter, r *nethttp.Request) {
	if err := s.requireControl(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	ifVersion, err := ifMatchVersion(r.Header.Get("If-Match"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var c outlast.ControlConfig
	if err := s.decodeBody(w, r, &c); err != nil {
		s.writeError(w, r, err)
		return
	}
	next, err := s.svc.Control.PutControlConfig(r.Context(), &c, ifVersion, adminActor(r), r.Header.Get(headerChangeReason))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("config changed", "version", next.Version, "by", next.UpdatedBy, "reason", r.Header.Get(headerChangeReason))
	w.Header().Set("ETag", etag(next.Version))
	writeJSON(w, nethttp.StatusOK, next)
}

// configChangeJSON is one change in GET /admin/v1/config/history.
type configChangeJSON struct {
	Version int64                  `json:"version"`
	At      time.Time              `json:"at"`
	Actor   string                 `json:"actor"`
	Reason  string                 `json:"reason"`
	Before  *outlast.ControlConfig `json:"before"`
	After   *outlast.ControlConfig `json:"after"`
}

// configHistory lists config changes, newest first.
func (s *Server) configHistory(w nethttp.ResponseWriter, r *nethttp.Request) {
	if err := s.requireControl(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	limit, err := queryLimit(r.URL.Query(), outlast.ControlHistoryMax)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if limit == 0 {
		limit = configHistoryLimitDefault
	}
	changes, err := s.svc.Control.ControlHistory(r.Context(), limit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := struct {
		Changes []configChangeJSON `json:"changes"`
	}{Changes: make([]configChangeJSON, 0, len(changes))}
	for _, c := range changes {
		out.Changes = append(out.Changes, configChangeJSON{Version: c.Version, At: c.At.UTC(),
			Actor: c.Actor, Reason: c.Reason, Before: c.Before, After: c.After})
	}
	writeJSON(w, nethttp.StatusOK, out)
}

// requireControl checks the admin token and that this server has a
// control store.
func (s *Server) requireControl(r *nethttp.Request) error {
	if err := s.requireAdmin(r); err != nil {
		return err
	}
	if s.svc.Control == nil {
		return outlast.Errorf(outlast.ENOTFOUND, "this server keeps no config document")
	}
	return nil
}

// etag is a config version as an entity tag.
func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// ifMatchVersion reads the version an If-Match header names: "7" as
// GET's ETag sends it, or a bare 7.
func ifMatchVersion(h string) (int64, error) {
	if h == "" {
		return 0, outlast.Errorf(outlast.EINVALID,
			"the If-Match header is required: the ETag of the config you read (GET /admin/v1/config), so a change made since is not overwritten")
	}
	v, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(h), `"`), 10, 64)
	if err != nil || v < 0 {
		return 0, outlast.Errorf(outlast.EINVALID, "If-Match must be a config version such as \"7\", as GET /admin/v1/config's ETag gives it")
	}
	return v, nil
}

// adminActor names who made a change with the admin token, for the audit.
func adminActor(r *nethttp.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "admin token from " + host
}
