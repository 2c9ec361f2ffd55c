package kap

import (
	"errors"
	"fmt"
)

// Error codes shared by every layer. The HTTP layer maps each to a status and
// an OperationOutcome issue type in one table.
const (
	ECONFLICT       = "conflict"        // a version or state conflict (409)
	EINTERNAL       = "internal"        // anything unexpected (500)
	EINVALID        = "invalid"         // the input is invalid (400/422)
	ENOTFOUND       = "not_found"       // no such entity in this tenant (404)
	EPRECONDITION   = "precondition"    // If-Match failed (412)
	EUNAUTHORIZED   = "unauthorized"    // no or bad credentials (401)
	EFORBIDDEN      = "forbidden"       // credentials lack the scope (403)
	ETOOLARGE       = "too_large"       // body too large (413)
	EUNSUPPORTED    = "unsupported"     // media type not supported (415)
	ERATELIMIT      = "rate_limited"    // too many requests (429)
	EUNAVAILABLE    = "unavailable"     // a dependency is down (503)
	ENOTIMPLEMENTED = "not_implemented" // a valid request we do not serve (405/501)
)

// Error is the application error. Message is safe to show to the caller that
// made the request: it never holds PHI of another tenant. Issues lists
// field-level problems (each with a JSON/FHIRPath location). Err is the
// underlying cause, for logs of internal errors only.
type Error struct {
	Code    string
	Message string
	Issues  []Issue
	Err     error
}

// Issue is one problem with one field of an input.
type Issue struct {
	// Path is the JSON path of the offending field in the submitted
	// document, for example "administrations[0].route", or a FHIRPath
	// expression for FHIR input, for example "Observation.status".
	Path string `json:"path"`
	// Reason says what is wrong, in a sentence that names no PHI value.
	Reason string `json:"reason"`
	// Severity is "error" (default) or "warning".
	Severity string `json:"severity,omitempty"`
}

// String renders "path: reason".
func (i Issue) String() string {
	if i.Path == "" {
		return i.Reason
	}
	return i.Path + ": " + i.Reason
}

// Error implements error. It includes the issues, not the cause.
func (e *Error) Error() string {
	msg := e.Message
	for i, is := range e.Issues {
		if i == 0 && msg != "" {
			msg += ": "
		} else if i > 0 {
			msg += "; "
		}
		msg += is.String()
	}
	if msg == "" {
		msg = e.Code
	}
	return msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err, EINTERNAL for errors that are not *Error
// and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the caller-safe message of err; internal errors give a
// generic text.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Error()
	}
	return "internal error"
}

// ErrorIssues returns the field issues of err, if any.
func ErrorIssues(err error) []Issue {
	var e *Error
	if errors.As(err, &e) {
		return e.Issues
	}
	return nil
}
