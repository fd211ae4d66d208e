package outlast

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Application error codes. The http package maps each to a status in exactly
// one place; everything else speaks in codes.
const (
	EINVALID      = "invalid_request"        // malformed input: bad JSON, unknown fields, missing header (400)
	EVALIDATION   = "validation_failed"      // well-formed but unacceptable values (422)
	EIDEMPOTENCY  = "idempotency_key_reused" // same Idempotency-Key, different request (422)
	EINSUFFICIENT = "insufficient_funds"     // available balance too low (422)
	EUNAUTHORIZED = "unauthorized"           // missing or bad credentials or signature (401)
	EFORBIDDEN    = "forbidden"              // authenticated but not allowed (403)
	ENOTFOUND     = "not_found"              // no such thing, or not yours (404)
	ECONFLICT     = "conflict"               // already exists, or changed underneath (409)
	EPRECONDITION = "precondition_failed"    // a stale If-Match version: re-read and retry (412)
	ETOOLARGE     = "body_too_large"         // request body over its limit (413)
	ERATELIMITED  = "rate_limited"           // too many requests; see RetryAfter (429)
	EUNAVAILABLE  = "unavailable"            // a dependency is down; see RetryAfter (503)
	EINTERNAL     = "internal"               // a bug or an unexpected failure (500)
)

// Error is the application error. Message is safe to show to a caller;
// internal details stay in the wrapped error, which is never shown.
type Error struct {
	Code    string
	Message string
	// RetryAfter, if > 0, tells the caller when to come back (429, 503).
	RetryAfter time.Duration
	// Err is the underlying cause, for logs only.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Unavailable returns an EUNAVAILABLE error that asks the caller to retry
// after retryAfter, wrapping cause for the logs.
func Unavailable(cause error, retryAfter time.Duration, format string, args ...any) *Error {
	return &Error{Code: EUNAVAILABLE, Message: fmt.Sprintf(format, args...), RetryAfter: retryAfter, Err: cause}
}

// ErrorCode returns the code of err: its *Error's code, EINTERNAL for any
// other non-nil error, "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// Transient reports whether err says "not now" rather than "not this":
// EUNAVAILABLE, or a deadline or cancellation that cut the call short. A
// notification whose apply failed so is retried without limit and never
// dead-lettered, whichever path brought it.
func Transient(err error) bool {
	return ErrorCode(err) == EUNAVAILABLE ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// ErrorMessage returns the caller-safe message of err; "internal error" for
// anything that is not an *Error, so SQL and stack details never leak.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ErrorRetryAfter returns the RetryAfter of err's *Error, or 0.
func ErrorRetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}
