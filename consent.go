package kap

import (
	"fmt"
	"time"
)

// Consent is what a client signed before treatment: the KAP treatment
// consent, the escort agreement, the acknowledgement not to drive or operate
// machinery for 8 hours after a session, and consent to share records with
// named EHRs and payers.
type Consent struct {
	Kind             Kind         `json:"kind"`
	ID               string       `json:"id"`
	ClientID         string       `json:"clientId"`
	SignedAt         Time         `json:"signedAt"`
	Status           string       `json:"status"` // active or revoked
	TreatmentConsent bool         `json:"treatmentConsent"`
	EscortAgreement  bool         `json:"escortAgreement"`
	NoDrivingAck     bool         `json:"noDrivingAck"` // no driving or machinery for 8 hours
	Share            []ShareGrant `json:"share,omitempty"`
}

// ShareGrant allows the gateway to send the client's records to one
// delivery target.
type ShareGrant struct {
	Target string `json:"target"` // the target's id in the gateway configuration
	Type   string `json:"type"`   // ehr or payer
	Name   string `json:"name,omitempty"`
}

// ConsentStatuses are the allowed Consent.Status values.
var ConsentStatuses = []string{"active", "revoked"}

func (c *Consent) RecordKind() Kind       { return KindConsent }
func (c *Consent) RecordID() string       { return c.ID }
func (c *Consent) RecordClientID() string { return c.ClientID }
func (c *Consent) RecordDate() time.Time  { return c.SignedAt.Time }

// Allows reports whether the consent is active and permits sharing with the
// target.
func (c *Consent) Allows(target string) bool {
	if c.Status != "active" {
		return false
	}
	for _, s := range c.Share {
		if s.Target == target {
			return true
		}
	}
	return false
}

// Validate checks the consent.
func (c *Consent) Validate() error {
	var v validator
	v.kind(c.Kind, KindConsent)
	v.id("id", c.ID, true)
	v.id("clientId", c.ClientID, true)
	v.time("signedAt", c.SignedAt, true)
	v.oneOf("status", c.Status, ConsentStatuses, true)
	seen := map[string]bool{}
	for i, s := range c.Share {
		p := fmt.Sprintf("share[%d]", i)
		v.id(p+".target", s.Target, true)
		v.oneOf(p+".type", s.Type, []string{"ehr", "payer"}, true)
		if seen[s.Target] {
			v.add(p+".target", "appears twice")
		}
		seen[s.Target] = true
	}
	if c.TreatmentConsent && c.Status == "active" && (!c.EscortAgreement || !c.NoDrivingAck) {
		if !c.EscortAgreement {
			v.add("escortAgreement", "must be true when treatment is consented: a client is released only to an escort")
		}
		if !c.NoDrivingAck {
			v.add("noDrivingAck", "must be true when treatment is consented: no driving or machinery for 8 hours")
		}
	}
	return v.err()
}
