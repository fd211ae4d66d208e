package http

import (
	"encoding/json"
	"log/slog"
	"math"
	nethttp "net/http"
	"strconv"
	"time"

	"github.com/outlast/outlast"
)

// codeMethodNotAllowed is the one code that belongs to HTTP itself rather
// than to the domain: a known path asked with the wrong method.
const codeMethodNotAllowed = "method_not_allowed"

// retryAfterDefault is sent with a 429 or 503 whose error names no
// RetryAfter: every refusal a caller may retry says when.
const retryAfterDefault = time.Second

// statusOf maps an error code to its HTTP status. It is the only place the
// mapping lives; unknown codes are bugs and map to 500.
func statusOf(code string) int {
	switch code {
	case outlast.EINVALID:
		return nethttp.StatusBadRequest
	case outlast.EVALIDATION, outlast.EIDEMPOTENCY, outlast.EINSUFFICIENT:
		return nethttp.StatusUnprocessableEntity
	case outlast.EUNAUTHORIZED:
		return nethttp.StatusUnauthorized
	case outlast.EFORBIDDEN:
		return nethttp.StatusForbidden
	case outlast.ENOTFOUND:
		return nethttp.StatusNotFound
	case codeMethodNotAllowed:
		return nethttp.StatusMethodNotAllowed
	case outlast.ECONFLICT:
		return nethttp.StatusConflict
	case outlast.EPRECONDITION:
		return nethttp.StatusPreconditionFailed
	case outlast.ETOOLARGE:
		return nethttp.StatusRequestEntityTooLarge
	case outlast.ERATELIMITED:
		return nethttp.StatusTooManyRequests
	case outlast.EUNAVAILABLE:
		return nethttp.StatusServiceUnavailable
	}
	return nethttp.StatusInternalServerError
}

// errorBody is the JSON shape of every error answer.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeError answers err in the error shape. Internal errors are logged with
// their detail and shown only as "internal error"; unavailability is logged
// at warn so an operator sees the cause behind a 503.
func (s *Server) writeError(w nethttp.ResponseWriter, r *nethttp.Request, err error) {
	code := outlast.ErrorCode(err)
	status := statusOf(code)
	msg := outlast.ErrorMessage(err)
	if status == nethttp.StatusInternalServerError {
		code, msg = outlast.EINTERNAL, "internal error"
	}
	h := w.Header()
	switch status {
	case nethttp.StatusInternalServerError:
		s.log.Error("http request failed", requestAttrs(w, r), "err", err)
	case nethttp.StatusServiceUnavailable:
		s.log.Warn("http request refused: dependency unavailable", requestAttrs(w, r), "err", err)
	}
	if status == nethttp.StatusTooManyRequests || status == nethttp.StatusServiceUnavailable {
		h.Set("Retry-After", retryAfterSeconds(outlast.ErrorRetryAfter(err)))
	}
	if status == nethttp.StatusUnauthorized && h.Get("WWW-Authenticate") == "" {
		h.Set("WWW-Authenticate", `Bearer realm="outlast"`)
	}
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: msg}})
}

func requestAttrs(w nethttp.ResponseWriter, r *nethttp.Request) slog.Attr {
	return slog.Group("request",
		slog.String("id", w.Header().Get(headerRequestID)),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path))
}

// retryAfterSeconds renders d as whole seconds, rounded up, at least 1 (a
// Retry-After of 0 invites an immediate retry storm).
func retryAfterSeconds(d time.Duration) string {
	if d <= 0 {
		d = retryAfterDefault
	}
	return strconv.FormatInt(max(1, int64(math.Ceil(d.Seconds()))), 10)
}

// writeJSON answers v as JSON with status.
func writeJSON(w nethttp.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own response types are marshalled; failing is a bug.
		status = nethttp.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"internal error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// statusLabel renders a status for the requests metric.
func statusLabel(status int) string { return strconv.Itoa(status) }
