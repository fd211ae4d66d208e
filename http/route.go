package http

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	nethttp "net/http"
	"time"

	"github.com/outlast/outlast"
)

// Request id header: echoed when the caller sends a usable one, generated
// otherwise, so a log line can be found from a client's report.
const headerRequestID = "X-Request-Id"

// routeOther labels requests that matched no route, so metric label values
// stay bounded whatever paths clients send.
const routeOther = "other"

func (s *Server) registerRoutes() {
	s.handle("POST /admin/v1/clients", s.createClient)
	s.handle("GET /admin/v1/config", s.getConfig)
	s.handle("PUT /admin/v1/config", s.putConfig)
	s.handle("GET /admin/v1/config/history", s.configHistory)
	s.handle("GET /admin/v1/instances", s.listInstances)
	s.handle("GET /admin/v1/local/status", s.localStatus)
	s.handle("POST /admin/v1/local/maintenance", s.localMaintenance)
	s.handle("GET /admin/v1/deadletters", s.listDeadLetters)
	s.handle("POST /admin/v1/deadletters/replay", s.replayDeadLetters)
	s.handle("GET /admin/v1/exceptions", s.listExceptions)
	s.handle("GET /admin/v1/exceptions/{id}", s.getException)
	s.handle("POST /admin/v1/exceptions/{id}/resolve", s.resolveException)
	s.handle("POST /v1/accounts", s.createAccount)
	s.handle("GET /v1/accounts/{id}", s.getAccount)
	s.handle("POST /v1/accounts/{id}/funds", s.fundAccount)
	s.handle("PUT /v1/accounts/{id}/flags", s.setAccountFlags)
	s.handle("POST /v1/payouts", s.createPayout)
	s.handle("GET /v1/payouts", s.listPayouts)
	s.handle("GET /v1/payouts/{id}", s.getPayout)
	s.handle("POST /v1/partners/{channel}/notifications", s.notify)
	s.handle("GET /healthz", s.healthz)
	s.handle("GET /readyz", s.readyz)
	s.handle("GET /metrics", s.metrics)
	s.registerConsole()
}

func (s *Server) handle(pattern string, h nethttp.HandlerFunc) {
	s.routes[pattern] = true
	s.mux.Handle(pattern, h)
}

// route dispatches to the mux, but answers unknown routes (404) and wrong
// methods (405, with Allow) in the JSON error shape instead of the mux's
// plain text.
func (s *Server) route(w nethttp.ResponseWriter, r *nethttp.Request) {
	h, pattern := s.mux.Handler(r)
	if s.routes[pattern] {
		routeFrom(r).name = pattern
		s.mux.ServeHTTP(w, r)
		return
	}
	// The mux's own handler sets Allow for a 405 and the Location of a
	// redirect; only its status and body are replaced.
	iw := &interceptWriter{header: w.Header()}
	h.ServeHTTP(iw, r)
	switch iw.status {
	case nethttp.StatusMethodNotAllowed:
		s.writeError(w, r, outlast.Errorf(codeMethodNotAllowed, "method %s is not allowed on %s", r.Method, r.URL.Path))
	case nethttp.StatusMovedPermanently, nethttp.StatusPermanentRedirect, nethttp.StatusTemporaryRedirect, nethttp.StatusFound:
		w.WriteHeader(iw.status)
	default:
		s.writeError(w, r, outlast.Errorf(outlast.ENOTFOUND, "no route for %s %s", r.Method, r.URL.Path))
	}
}

// interceptWriter records the status the mux's fallback handler chose and
// drops its plain-text body.
type interceptWriter struct {
	header nethttp.Header
	status int
}

func (w *interceptWriter) Header() nethttp.Header      { return w.header }
func (w *interceptWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *interceptWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

// routeInfo carries the matched route, and whether the answer is a
// maintenance refusal, from the handler back out to middleware; both are
// written and read on the request's goroutine.
type routeInfo struct {
	name        string
	maintenance bool // createPayout refused the payout for maintenance
}

type routeKey struct{}

func withRoute(ctx context.Context, ri *routeInfo) context.Context {
	return context.WithValue(ctx, routeKey{}, ri)
}

func routeFrom(r *nethttp.Request) *routeInfo {
	if ri, ok := r.Context().Value(routeKey{}).(*routeInfo); ok {
		return ri
	}
	return &routeInfo{}
}

// middleware adds, outermost first: a request id, response headers every
// answer needs, metrics and a debug log line, and recovery from panics.
func (s *Server) middleware(next nethttp.Handler) nethttp.Handler {
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		start := time.Now()
		id := r.Header.Get(headerRequestID)
		if !outlast.ValidID(id) {
			id = newRequestID()
		}
		h := w.Header()
		h.Set(headerRequestID, id)
		h.Set("Cache-Control", "no-store") // responses may carry API keys and balances
		h.Set("X-Content-Type-Options", "nosniff")
		ri := &routeInfo{name: routeOther}
		r = r.WithContext(withRoute(r.Context(), ri))
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == nethttp.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("http handler panicked", "request_id", id, "route", ri.name, "panic", v)
				if sw.status == 0 {
					s.writeError(sw, r, outlast.Errorf(outlast.EINTERNAL, "internal error"))
				}
			}
			s.observe(r, sw, ri, id, time.Since(start))
		}()
		next.ServeHTTP(sw, r)
	})
}

func (s *Server) observe(r *nethttp.Request, sw *statusWriter, ri *routeInfo, id string, elapsed time.Duration) {
	route := ri.name
	status := sw.status
	if status == 0 {
		status = nethttp.StatusOK
	}
	requestsTotal.WithLabelValues(route, statusLabel(status)).Inc()
	requestSeconds.WithLabelValues(route).Observe(elapsed.Seconds())
	s.count(ri, status)
	s.log.LogAttrs(r.Context(), slog.LevelDebug, "http request",
		slog.String("request_id", id), slog.String("method", r.Method),
		slog.String("path", r.URL.Path), slog.String("route", route),
		slog.Int("status", status), slog.Int64("bytes", sw.bytes),
		slog.Duration("elapsed", elapsed))
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// statusWriter remembers the status and size of a response.
type statusWriter struct {
	nethttp.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = nethttp.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (deadlines,
// flushing) through the wrapper.
func (w *statusWriter) Unwrap() nethttp.ResponseWriter { return w.ResponseWriter }
