package kap

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Kind names a record type. Every record's JSON carries it in "kind".
type Kind string

// The record kinds of the kap/v1 API.
const (
	KindClient             Kind = "Client"
	KindProvider           Kind = "Provider"
	KindIntake             Kind = "Intake"
	KindConsent            Kind = "Consent"
	KindTreatmentPlan      Kind = "TreatmentPlan"
	KindDosingSession      Kind = "DosingSession"
	KindIntegrationSession Kind = "IntegrationSession"
	KindAssessment         Kind = "Assessment"
)

// Kinds lists every record kind, in the order a client's records are
// normally submitted.
var Kinds = []Kind{KindProvider, KindClient, KindIntake, KindConsent, KindCoverage, KindTreatmentPlan,
	KindAssessment, KindDosingSession, KindIntegrationSession}

// Record is implemented by every domain record.
type Record interface {
	// RecordKind returns the record's kind.
	RecordKind() Kind
	// RecordID returns the clinic's business identifier of the record.
	RecordID() string
	// RecordClientID returns the client the record belongs to ("" for
	// Provider records; the client's own id for a Client).
	RecordClientID() string
	// RecordDate returns the clinical date of the record, used for
	// listing (zero for Client and Provider).
	RecordDate() time.Time
	// Validate returns every problem at once, as an *Error with code
	// EINVALID and one Issue per field, or nil.
	Validate() error
}

// NewRecord returns a zero record of the kind, or nil for an unknown kind.
func NewRecord(k Kind) Record {
	switch k {
	case KindClient:
		return &Client{}
	case KindProvider:
		return &Provider{}
	case KindIntake:
		return &Intake{}
	case KindConsent:
		return &Consent{}
	case KindTreatmentPlan:
		return &TreatmentPlan{}
	case KindDosingSession:
		return &DosingSession{}
	case KindIntegrationSession:
		return &IntegrationSession{}
	case KindAssessment:
		return &Assessment{}
	case KindCoverage:
		return &Coverage{}
	}
	return nil
}

// MaxRecordBytes bounds the size of one record document.
const MaxRecordBytes = 4 << 20

// DecodeRecord decodes a kap/v1 record document. The "kind" field selects the
// type; unknown fields, wrong JSON types and trailing data are errors. The
// record is validated. Every error is an *Error with code EINVALID whose
// Issues name the JSON path of each problem.
func DecodeRecord(data []byte) (Record, error) {
	if len(data) > MaxRecordBytes {
		return nil, &Error{Code: ETOOLARGE, Message: fmt.Sprintf("record is larger than %d bytes", MaxRecordBytes)}
	}
	var head struct {
		Kind Kind `json:"kind"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field == "kind" {
			return nil, invalid(Issue{Path: "kind", Reason: "must be a string: one of " + kindList()})
		}
		if issues := checkShape(data, nil); len(issues) > 0 {
			return nil, invalid(issues...)
		}
		return nil, jsonError(data, err)
	}
	if head.Kind == "" {
		return nil, invalid(Issue{Path: "kind", Reason: "is required: one of " + kindList()})
	}
	rec := NewRecord(head.Kind)
	if rec == nil {
		return nil, invalid(Issue{Path: "kind", Reason: fmt.Sprintf("unknown kind %q: must be one of %s", head.Kind, kindList())})
	}
	if issues := checkShape(data, reflect.TypeOf(rec)); len(issues) > 0 {
		return nil, invalid(issues...)
	}
	if err := json.Unmarshal(data, rec); err != nil {
		return nil, jsonError(data, err)
	}
	if n, ok := rec.(interface{ normalize() }); ok {
		n.normalize()
	}
	if err := rec.Validate(); err != nil {
		return nil, err
	}
	return rec, nil
}

// EncodeRecord encodes a record as kap/v1 JSON with its kind set.
func EncodeRecord(r Record) ([]byte, error) {
	setKind(r)
	return json.Marshal(r)
}

// setKind sets the record's Kind field from RecordKind (every record type
// has one).
func setKind(r Record) {
	reflect.ValueOf(r).Elem().FieldByName("Kind").SetString(string(r.RecordKind()))
}

func kindList() string {
	s := make([]string, len(Kinds))
	for i, k := range Kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

func invalid(issues ...Issue) *Error {
	return &Error{Code: EINVALID, Message: "invalid record", Issues: issues}
}

// jsonError turns an encoding/json error into an EINVALID error with a path.
// Values are never echoed (they may be PHI).
func jsonError(data []byte, err error) error {
	switch e := err.(type) {
	case *json.SyntaxError:
		line, col := position(data, e.Offset)
		return invalid(Issue{Reason: fmt.Sprintf("malformed JSON at line %d, column %d", line, col)})
	case *json.UnmarshalTypeError:
		path := e.Field
		if path == "" {
			path = "(document)"
		}
		return invalid(Issue{Path: path, Reason: fmt.Sprintf("must be %s, not a JSON %s", jsonTypeName(e.Type.Kind().String()), e.Value)})
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return invalid(Issue{Path: strings.Trim(f, `"`), Reason: "unknown field"})
	}
	if err.Error() == "unexpected EOF" || err.Error() == "EOF" {
		return invalid(Issue{Reason: "malformed JSON: the document ends early"})
	}
	return invalid(Issue{Reason: "malformed JSON"})
}

func jsonTypeName(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "float64", "float32", "int", "int64", "int32":
		return "a number"
	case "bool":
		return "true or false"
	case "slice", "array":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	}
	return "a " + goKind
}

func position(data []byte, off int64) (line, col int) {
	// SyntaxError.Offset counts the offending byte as read.
	line, col = 1, 1
	for i := int64(0); i < off-1 && i < int64(len(data)); i++ {
		if data[i] == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}
