package kap

import (
	"fmt"
	"strings"
	"time"
)

// KindCoverage is the record kind of a client's insurance.
const KindCoverage Kind = "Coverage"

// Coverage is a client's insurance with one payer: who pays, the member id
// on the card, the plan, how the client relates to the subscriber and the
// period it is in force. The last eligibility check answered by the payer
// is kept on the record.
type Coverage struct {
	Kind         Kind   `json:"kind"`
	ID           string `json:"id"`
	ClientID     string `json:"clientId"`
	PayerID      string `json:"payerId"`   // the payer's identifier (e.g. its clearinghouse payer id)
	PayerName    string `json:"payerName"` // shown on the Organization reference
	MemberID     string `json:"memberId"`  // the member id on the insurance card
	GroupNumber  string `json:"groupNumber,omitempty"`
	PlanName     string `json:"planName,omitempty"`
	Relationship string `json:"relationship"` // SubscriberRelationships: the client's relationship to the subscriber
	// SubscriberID is the subscriber's member id when the client is not the
	// subscriber (a dependent).
	SubscriberID string `json:"subscriberId,omitempty"`
	Start        Date   `json:"start"`
	End          Date   `json:"end,omitempty"`
	// Order is the coordination-of-benefits order (1 = primary).
	Order int `json:"order,omitempty"`
	// PayerProfile names the payer rules applied to claims on this coverage
	// (a file in mapping/payers, e.g. "generic"); default "generic".
	PayerProfile string `json:"payerProfile,omitempty"`
	// Eligibility is the payer's answer to the last eligibility check.
	Eligibility *EligibilityResult `json:"eligibility,omitempty"`
}

// SubscriberRelationships are the FHIR R4 subscriber-relationship codes the
// clinic uses (http://terminology.hl7.org/CodeSystem/subscriber-relationship).
var SubscriberRelationships = []string{"self", "spouse", "child", "parent", "common", "injured", "other"}

// Eligibility outcomes (FHIR R4 remittance-outcome codes).
var EligibilityOutcomes = []string{"queued", "complete", "error", "partial"}

// EligibilityResult is what a payer answered to a CoverageEligibilityRequest.
type EligibilityResult struct {
	Checked     Time   `json:"checked"`               // when the payer answered (CoverageEligibilityResponse.created)
	Outcome     string `json:"outcome"`               // EligibilityOutcomes
	InForce     *bool  `json:"inForce,omitempty"`     // nil: the payer did not say
	Disposition string `json:"disposition,omitempty"` // the payer's message, as sent
	// PreAuthRef is a prior-authorization reference the payer returned.
	PreAuthRef string          `json:"preAuthRef,omitempty"`
	Benefits   []BenefitResult `json:"benefits,omitempty"`
	// Errors are the payer's error codes (CoverageEligibilityResponse.error).
	Errors []string `json:"errors,omitempty"`
}

// BenefitResult is the payer's answer for one service (a CPT/HCPCS code).
type BenefitResult struct {
	Code                  string `json:"code"` // CPT/HCPCS, "" for the plan as a whole
	Excluded              bool   `json:"excluded,omitempty"`
	AuthorizationRequired bool   `json:"authorizationRequired,omitempty"`
	Description           string `json:"description,omitempty"`
}

func (c *Coverage) RecordKind() Kind       { return KindCoverage }
func (c *Coverage) RecordID() string       { return c.ID }
func (c *Coverage) RecordClientID() string { return c.ClientID }
func (c *Coverage) RecordDate() time.Time  { return c.Start.Time() }

// Profile returns the payer profile name (default "generic").
func (c *Coverage) Profile() string {
	if c.PayerProfile == "" {
		return "generic"
	}
	return c.PayerProfile
}

// ActiveOn reports whether the coverage period includes the date (a date
// "YYYY-MM-DD"; the end date is inclusive).
func (c *Coverage) ActiveOn(d Date) bool {
	if !d.Valid() || !c.Start.Valid() || d < c.Start {
		return false
	}
	return c.End == "" || d <= c.End
}

// InForce reports whether the last eligibility answer says the coverage is
// in force; ok is false when there is no answer that says either way.
func (c *Coverage) InForce() (inForce, ok bool) {
	if c.Eligibility == nil || c.Eligibility.InForce == nil {
		return false, false
	}
	return *c.Eligibility.InForce, true
}

// Validate checks the coverage.
func (c *Coverage) Validate() error {
	var v validator
	v.kind(c.Kind, KindCoverage)
	v.id("id", c.ID, true)
	v.id("clientId", c.ClientID, true)
	v.id("payerId", c.PayerID, true)
	v.required("payerName", c.PayerName)
	v.id("memberId", c.MemberID, true)
	if c.GroupNumber != "" {
		v.id("groupNumber", c.GroupNumber, false)
	}
	v.oneOf("relationship", c.Relationship, SubscriberRelationships, true)
	v.id("subscriberId", c.SubscriberID, false)
	if c.Relationship != "" && c.Relationship != "self" && c.SubscriberID == "" {
		v.add("subscriberId", "is required when the client is not the subscriber (relationship %s)", c.Relationship)
	}
	v.date("start", c.Start, true)
	v.date("end", c.End, false)
	if c.Start.Valid() && c.End.Valid() && c.End < c.Start {
		v.add("end", "must not be before start")
	}
	if c.Order < 0 || c.Order > 9 {
		v.add("order", "must be between 1 and 9")
	}
	if c.PayerProfile != "" && !ValidID(c.PayerProfile) {
		v.add("payerProfile", "must be a payer profile name such as generic")
	}
	if e := c.Eligibility; e != nil {
		v.time("eligibility.checked", e.Checked, true)
		v.oneOf("eligibility.outcome", e.Outcome, EligibilityOutcomes, true)
		for i, b := range e.Benefits {
			if _, ok := BillingCodes[b.Code]; b.Code != "" && !ok {
				v.add(fmt.Sprintf("eligibility.benefits[%d].code", i), "is not a known KAP billing code")
			}
		}
		for i, s := range e.Errors {
			if strings.TrimSpace(s) == "" {
				v.add(fmt.Sprintf("eligibility.errors[%d]", i), "is empty")
			}
		}
	}
	return v.err()
}
