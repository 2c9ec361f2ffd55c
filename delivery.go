package kap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Sender delivers outbox messages to one target (an EHR's FHIR endpoint, a
// payer, an NDJSON folder). The delivery worker leases messages, calls Send,
// and acknowledges, retries or dead-letters them by what Send returns.
//
// Send must be safe to call again for a message it already delivered (the
// outbox is at-least-once): implementations write with conditional
// operations keyed on the business identifiers of OutboxMessage.Resources,
// so a second Send finds the resource instead of creating a duplicate.
type Sender interface {
	// Target is the configured name of the target.
	Target() string
	// Send delivers the record version msg carries. A nil error means every
	// resource of the Bundle is at the target (or visibly not sent, see
	// SendResult.NotSent). Errors that are not *SendError are transient.
	Send(ctx context.Context, msg OutboxMessage) (SendResult, error)
}

// SendResult is what a target answered to one delivered record version.
type SendResult struct {
	// Resources has one entry per resource written: the id and version
	// the target assigned, state confirmed (or unknown when the write was
	// sent and no answer came).
	Resources []LedgerEntry `json:"resources,omitempty"`
	// NotSent lists the resources the target's write profile cannot take,
	// and why (no PHI).
	NotSent []NotSent `json:"notSent,omitempty"`
	// Status is the HTTP status of the last request (0 for file targets).
	Status int `json:"status,omitempty"`
}

// NotSent is a resource a target's write profile refuses, with the fallback
// taken (if any).
type NotSent struct {
	ResourceType string `json:"resourceType"`
	Identifier   string `json:"identifier,omitempty"` // "system|value"
	Reason       string `json:"reason"`
	Fallback     string `json:"fallback,omitempty"` // e.g. "DocumentReference"
}

// SendErrorKind classifies a failed delivery for the worker.
type SendErrorKind string

// The kinds of send errors.
const (
	// SendTransient: retry later with backoff (connection errors, 408,
	// 425, 429, 5xx, an open circuit).
	SendTransient SendErrorKind = "transient"
	// SendPermanent: the target refused the content (400, 422, other 4xx
	// after the one re-read a 409/412 allows): dead-letter it with the
	// target's OperationOutcome.
	SendPermanent SendErrorKind = "permanent"
	// SendUnknown: a non-idempotent write was sent and no answer came. The
	// ledger marks the resource unknown; the next attempt must resolve it
	// by reading the target (search by business identifier) before writing.
	SendUnknown SendErrorKind = "unknown"
)

// SendError is a failed delivery. Error() never carries PHI: no URLs with
// query strings, no bodies.
type SendError struct {
	Kind             SendErrorKind
	Status           int             // HTTP status; 0 when no response came
	RetryAfter       time.Duration   // the target's Retry-After, already capped; 0 if none
	OperationOutcome json.RawMessage // what the target answered, if it was an OperationOutcome
	// Resources the target had already accepted before the failure (a
	// batch or per-resource strategy), for the ledger.
	Resources []LedgerEntry
	Err       error // the cause, for logs (no PHI)
}

func (e *SendError) Error() string {
	msg := "delivery " + string(e.Kind)
	if e.Status != 0 {
		msg += fmt.Sprintf(" (HTTP %d)", e.Status)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *SendError) Unwrap() error { return e.Err }

// SendErrorOf returns err as a *SendError; an error of another type is
// transient.
func SendErrorOf(err error) *SendError {
	var se *SendError
	if errors.As(err, &se) {
		return se
	}
	return &SendError{Kind: SendTransient, Err: err}
}
