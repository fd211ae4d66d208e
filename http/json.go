package http

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	nethttp "net/http"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

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

// decodeStrict decodes exactly one JSON object into v with json/v2
// semantics: member names match exactly, never by case ("AMOUNT" and
// "deſtination" are not amount and destination), once each, in valid
// UTF-8; unknown members, values of the wrong type (a fractional or
// quoted amount), a top-level value that is not an object (null
// included) and anything after the object are refused. Each refusal is
// EINVALID with a message that says which.
func decodeStrict(body []byte, v any) error {
	dec := jsontext.NewDecoder(bytes.NewReader(body))
	obj, err := dec.ReadValue()
	if err != nil {
		return syntaxError(body, err)
	}
	if k := obj.Kind(); k != '{' {
		// json/v2 unmarshals null into a struct as a no-op: a body of null
		// would otherwise be an empty request (and clear every flag).
		return outlast.Errorf(outlast.EINVALID, "request body must be a JSON object, not %s", kindText(k))
	}
	obj = obj.Clone() // reading on reuses the decoder's buffer
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		return outlast.Errorf(outlast.EINVALID, "request body must hold a single JSON object; found data after it")
	}
	if err := json.Unmarshal(obj, v, json.RejectUnknownMembers(true)); err != nil {
		return semanticError(err)
	}
	return nil
}

// syntaxError describes err, from reading body as one JSON value.
func syntaxError(body []byte, err error) error {
	var syn *jsontext.SyntacticError
	switch {
	case len(bytes.Trim(body, " \t\r\n")) == 0:
		return outlast.Errorf(outlast.EINVALID, "request body is empty; a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return outlast.Errorf(outlast.EINVALID, "request body ends in the middle of the JSON")
	case !errors.As(err, &syn):
		return &outlast.Error{Code: outlast.EINVALID, Message: "request body is not valid JSON", Err: err}
	case errors.Is(syn.Err, jsontext.ErrDuplicateName):
		return outlast.Errorf(outlast.EINVALID, "duplicate field %q", fieldPath(syn.JSONPointer))
	case invalidUTF8At(body, syn.ByteOffset):
		return outlast.Errorf(outlast.EINVALID, "request body has invalid UTF-8 at byte %d", syn.ByteOffset)
	}
	return outlast.Errorf(outlast.EINVALID, "request body is not valid JSON (at byte %d): %v", syn.ByteOffset, syn.Err)
}

// invalidUTF8At reports whether the bytes of body at offset, where the
// JSON reader stopped, are not UTF-8: json/v2 refuses them but does not
// export that error.
func invalidUTF8At(body []byte, offset int64) bool {
	if offset < 0 || offset >= int64(len(body)) {
		return false
	}
	r, size := utf8.DecodeRune(body[offset:])
	return r == utf8.RuneError && size <= 1
}

// semanticError describes err, from unmarshalling a JSON object.
func semanticError(err error) error {
	var (
		sem     *json.SemanticError
		timeErr *time.ParseError
	)
	if !errors.As(err, &sem) {
		return &outlast.Error{Code: outlast.EINVALID, Message: "request body is not acceptable JSON", Err: err}
	}
	field := fieldPath(sem.JSONPointer)
	switch {
	case errors.Is(sem.Err, json.ErrUnknownName):
		parent, name := sem.JSONPointer.Parent(), sem.JSONPointer.LastToken()
		if known, ok := foldedName(sem.GoType, name); ok {
			return outlast.Errorf(outlast.EINVALID, "field names are case-sensitive: unknown field %q (did you mean %q?)",
				memberPath(parent, name), memberPath(parent, known))
		}
		return outlast.Errorf(outlast.EINVALID, "unknown field %q", memberPath(parent, name))
	case field == "":
		return outlast.Errorf(outlast.EINVALID, "request body must be a JSON object")
	case errors.As(sem.Err, &timeErr):
		return outlast.Errorf(outlast.EINVALID, "%s must be an RFC 3339 time (e.g. 2026-01-02T15:04:05Z); %q is not", field, timeErr.Value)
	case errors.Is(sem.Err, strconv.ErrRange):
		return outlast.Errorf(outlast.EINVALID, "%s must be %s; %s is out of range", field, kindName(sem.GoType), sem.JSONValue)
	}
	return outlast.Errorf(outlast.EINVALID, "%s must be %s", field, kindName(sem.GoType))
}

// fieldPath names the value at p, which unmarshalling reached through
// known fields and array elements, as the API's messages do:
// "flags.daily_limit", "ids[2]". No known field is named by digits, so
// an all-digit token is an index.
func fieldPath(p jsontext.Pointer) string {
	var b strings.Builder
	for tok := range p.Tokens() {
		switch {
		case tok != "" && strings.Trim(tok, "0123456789") == "":
			b.WriteString("[" + tok + "]")
		case b.Len() > 0:
			b.WriteString("." + tok)
		default:
			b.WriteString(tok)
		}
	}
	return b.String()
}

// memberPath names member name of the object at parent.
func memberPath(parent jsontext.Pointer, name string) string {
	if p := fieldPath(parent); p != "" {
		return p + "." + name
	}
	return name
}

// foldedName returns the JSON name of t's field that name differs from
// only by case (Unicode simple folding, so "ſ" is "s"): what encoding/json
// would have matched, and json/v2 refuses.
func foldedName(t reflect.Type, name string) (string, bool) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return "", false
	}
	for i := range t.NumField() {
		f := t.Field(i)
		known, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case !f.IsExported() || known == "-":
			continue
		case known == "":
			known = f.Name
		}
		if strings.EqualFold(known, name) {
			return known, true
		}
	}
	return "", false
}

// kindText names a JSON value's kind for a message.
func kindText(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '[':
		return "an array"
	}
	return "a " + k.String()
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
