package http

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	nethttp "net/http"
	"reflect"
	"strings"
	"time"

	"github.com/outlast/outlast"
)

// readBody reads the whole request body, refusing more than BodyBytesMax
// with ETOOLARGE; webhooks need the exact bytes to check their signature
// before anything parses them.
func (s *Server) readBody(w nethttp.ResponseWriter, r *nethttp.Request) ([]byte, error) {
	body, err := io.ReadAll(nethttp.MaxBytesReader(w, r.Body, s.cfg.BodyBytesMax))
	if err != nil {
		return nil, s.bodyError(err)
	}
	return body, nil
}

// decodeBody strictly decodes a JSON object from the request body into v.
func (s *Server) decodeBody(w nethttp.ResponseWriter, r *nethttp.Request, v any) error {
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	return decodeStrict(body, v)
}

func (s *Server) bodyError(err error) error {
	var tooLarge *nethttp.MaxBytesError
	if errors.As(err, &tooLarge) {
		return outlast.Errorf(outlast.ETOOLARGE, "request body exceeds %d bytes", tooLarge.Limit)
	}
	// The client went away or stalled past ReadTimeout mid-body.
	return &outlast.Error{Code: outlast.EINVALID, Message: "could not read request body", Err: err}
}

// decodeStrict decodes exactly one JSON object into v: unknown fields,
// values of the wrong type (a fractional or quoted amount) and anything
// after the object are refused with EINVALID and a message that says which.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return outlast.Errorf(outlast.EINVALID, "request body must hold a single JSON object; found data after it")
	}
	return nil
}

func jsonError(err error) error {
	var (
		syntax  *json.SyntaxError
		typ     *json.UnmarshalTypeError
		timeErr *time.ParseError
	)
	switch {
	case errors.Is(err, io.EOF):
		return outlast.Errorf(outlast.EINVALID, "request body is empty; a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return outlast.Errorf(outlast.EINVALID, "request body ends in the middle of the JSON")
	case errors.As(err, &syntax):
		return outlast.Errorf(outlast.EINVALID, "request body is not valid JSON (at byte %d)", syntax.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return outlast.Errorf(outlast.EINVALID, "request body must be a JSON object")
		}
		return outlast.Errorf(outlast.EINVALID, "%s must be %s", typ.Field, kindName(typ.Type))
	case errors.As(err, &timeErr):
		return outlast.Errorf(outlast.EINVALID, "time %q is not RFC 3339 (e.g. 2026-01-02T15:04:05Z)", timeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return outlast.Errorf(outlast.EINVALID, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return &outlast.Error{Code: outlast.EINVALID, Message: "request body is not acceptable JSON", Err: err}
}

// kindName describes a Go type the way an API user thinks of JSON values.
func kindName(t reflect.Type) string {
	if t == reflect.TypeFor[time.Time]() {
		return "an RFC 3339 time string"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean (true or false)"
	case reflect.Struct, reflect.Map:
		return "a JSON object"
	case reflect.Slice, reflect.Array:
		return "a JSON array"
	}
	return fmt.Sprintf("a %s", t.Kind())
}
