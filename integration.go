package kap

import "time"

// IntegrationSession is a psychotherapy session after dosing, in which the
// client integrates the experience.
type IntegrationSession struct {
	Kind            Kind     `json:"kind"`
	ID              string   `json:"id"`
	ClientID        string   `json:"clientId"`
	DosingSessionID string   `json:"dosingSessionId,omitempty"`
	Start           Time     `json:"start"`
	End             Time     `json:"end"`
	Format          string   `json:"format"` // individual, group, telehealth
	TherapistID     string   `json:"therapistId"`
	Minutes         int      `json:"minutes"` // psychotherapy minutes
	BillingCodes    []string `json:"billingCodes,omitempty"`
}

// IntegrationFormats are the allowed IntegrationSession.Format values.
var IntegrationFormats = []string{"individual", "group", "telehealth"}

func (s *IntegrationSession) RecordKind() Kind       { return KindIntegrationSession }
func (s *IntegrationSession) RecordID() string       { return s.ID }
func (s *IntegrationSession) RecordClientID() string { return s.ClientID }
func (s *IntegrationSession) RecordDate() time.Time  { return s.Start.Time }

// Validate checks the session.
func (s *IntegrationSession) Validate() error {
	var v validator
	v.kind(s.Kind, KindIntegrationSession)
	v.id("id", s.ID, true)
	v.id("clientId", s.ClientID, true)
	v.id("dosingSessionId", s.DosingSessionID, false)
	v.time("start", s.Start, true)
	v.time("end", s.End, true)
	v.order("start", s.Start, "end", s.End)
	v.oneOf("format", s.Format, IntegrationFormats, true)
	v.id("therapistId", s.TherapistID, true)
	if s.Minutes < 1 || s.Minutes > 480 {
		v.add("minutes", "must be between 1 and 480")
	} else if s.Start.Valid() && s.End.Valid() && !s.Start.IsZero() && !s.End.IsZero() &&
		time.Duration(s.Minutes)*time.Minute > s.End.Sub(s.Start.Time) {
		v.add("minutes", "must not exceed the time between start and end")
	}
	v.billing("billingCodes", s.BillingCodes)
	if s.Format == "group" {
		for i, c := range s.BillingCodes {
			if c == "90832" || c == "90834" || c == "90837" {
				v.add("billingCodes["+itoa(i)+"]", "is an individual psychotherapy code; a group session bills 90853")
			}
		}
	}
	return v.err()
}
