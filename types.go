package kap

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Time is an instant with its zone, encoded as RFC 3339 (a zone is
// required). Decoding never fails: a malformed value is kept and reported by
// the record's Validate with its field path.
type Time struct {
	time.Time
	raw string // set when the JSON value was not a valid RFC 3339 date-time
}

// At returns t as a Time.
func At(t time.Time) Time { return Time{Time: t} }

// ParseTime parses an RFC 3339 date-time.
func ParseTime(s string) (Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return Time{}, err
	}
	return Time{Time: t}, nil
}

// MustTime parses s or panics; for tests and fixtures.
func MustTime(s string) Time {
	t, err := ParseTime(s)
	if err != nil {
		panic(err)
	}
	return t
}

// Valid reports whether t was decoded from a well-formed value.
func (t Time) Valid() bool { return t.raw == "" }

// Equal reports whether t and u are the same instant (and both valid).
func (t Time) Equal(u Time) bool { return t.raw == u.raw && t.Time.Equal(u.Time) }

// MarshalJSON encodes RFC 3339 with the original offset.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.raw != "" {
		return json.Marshal(t.raw)
	}
	if t.IsZero() {
		return []byte(`""`), nil
	}
	return json.Marshal(t.Time.Format(time.RFC3339Nano))
}

// UnmarshalJSON accepts an RFC 3339 string; anything else is kept for
// Validate to report.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		*t = Time{raw: "(not a string)"}
		return nil
	}
	if s == "" {
		*t = Time{}
		return nil
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		*t = Time{raw: s}
		return nil
	}
	*t = Time{Time: v}
	return nil
}

// Date is a calendar date, "YYYY-MM-DD".
type Date string

// Valid reports whether d is a real calendar date.
func (d Date) Valid() bool {
	_, err := time.Parse("2006-01-02", string(d))
	return err == nil
}

// Time returns d at midnight UTC.
func (d Date) Time() time.Time {
	t, _ := time.Parse("2006-01-02", string(d))
	return t
}

// HumanName is a person's name.
type HumanName struct {
	Family string   `json:"family"`
	Given  []string `json:"given,omitempty"`
}

// Contact is a person the clinic may call about a client: the escort who
// takes the client home after a dosing session, an emergency contact, or
// both.
type Contact struct {
	Name         HumanName `json:"name"`
	Relationship string    `json:"relationship,omitempty"` // free text: "spouse", "friend"
	Roles        []string  `json:"roles"`                  // ContactRoles
	Phone        string    `json:"phone,omitempty"`
}

// Contact roles.
const (
	ContactEscort    = "escort"
	ContactEmergency = "emergency"
)

// ContactRoles are the allowed Contact.Roles.
var ContactRoles = []string{ContactEscort, ContactEmergency}

// Address is a postal address.
type Address struct {
	Line       []string `json:"line,omitempty"`
	City       string   `json:"city,omitempty"`
	State      string   `json:"state,omitempty"`
	PostalCode string   `json:"postalCode,omitempty"`
	Country    string   `json:"country,omitempty"`
}

// Quantity is a value with a UCUM unit code.
type Quantity struct {
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// validator collects issues with their JSON paths.
type validator struct{ issues []Issue }

func (v *validator) add(path, format string, args ...any) {
	v.issues = append(v.issues, Issue{Path: path, Reason: fmt.Sprintf(format, args...)})
}

func (v *validator) err() error {
	if len(v.issues) == 0 {
		return nil
	}
	return invalid(v.issues...)
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9\-.]{0,63}$`)

// ValidID reports whether s can be a record id: 1–64 characters of letters,
// digits, '-' and '.', starting with a letter or digit (so it is also a
// valid FHIR id and identifier value).
func ValidID(s string) bool { return idPattern.MatchString(s) }

func (v *validator) id(path, s string, required bool) {
	switch {
	case s == "" && required:
		v.add(path, "is required")
	case s != "" && !ValidID(s):
		v.add(path, "must be 1-64 letters, digits, '-' or '.', starting with a letter or digit")
	}
}

func (v *validator) required(path, s string) {
	if strings.TrimSpace(s) == "" {
		v.add(path, "is required")
	}
}

func (v *validator) time(path string, t Time, required bool) {
	switch {
	case !t.Valid():
		v.add(path, "must be an RFC 3339 date-time with a zone, e.g. 2026-03-10T09:00:00-05:00")
	case t.IsZero() && required:
		v.add(path, "is required")
	}
}

func (v *validator) date(path string, d Date, required bool) {
	switch {
	case d == "" && required:
		v.add(path, "is required")
	case d != "" && !d.Valid():
		v.add(path, "must be a date YYYY-MM-DD")
	}
}

func (v *validator) oneOf(path, s string, allowed []string, required bool) {
	if s == "" {
		if required {
			v.add(path, "is required: one of %s", strings.Join(allowed, ", "))
		}
		return
	}
	for _, a := range allowed {
		if s == a {
			return
		}
	}
	v.add(path, "must be one of %s", strings.Join(allowed, ", "))
}

func (v *validator) rangeF(path string, x, lo, hi float64) {
	if x < lo || x > hi {
		v.add(path, "must be between %g and %g", lo, hi)
	}
}

func (v *validator) order(pathA string, a Time, pathB string, b Time) {
	if a.Valid() && b.Valid() && !a.IsZero() && !b.IsZero() && b.Before(a.Time) {
		v.add(pathB, "must not be before %s", pathA)
	}
}

func (v *validator) name(path string, n HumanName) {
	v.required(path+".family", n.Family)
	for i, g := range n.Given {
		v.required(fmt.Sprintf("%s.given[%d]", path, i), g)
	}
}

func (v *validator) kind(got, want Kind) {
	if got != "" && got != want {
		v.add("kind", "must be %s", want)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
