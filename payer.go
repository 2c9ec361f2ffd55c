package kap

import (
	"encoding/json"
	"time"
)

// ScreeningHints are what an EHR's records said about a client at a
// screening pull (adapters/ehr Puller): contraindication and interaction
// hints for the prescriber, shown as warnings on the client's intake and
// never as a decision. They are PHI (the details name medications and
// conditions): show them to the clinic, never log them.
type ScreeningHints struct {
	Target string          `json:"target"` // the EHR target pulled from
	Flags  []ScreeningHint `json:"flags"`
	// Incomplete names the searches that failed or were cut short; when it
	// is not empty the absence of a flag means nothing.
	Incomplete []string       `json:"incomplete,omitempty"`
	Read       map[string]int `json:"read,omitempty"` // resources read, by type
	PulledAt   time.Time      `json:"pulledAt"`
}

// Complete reports whether every search was read to the end.
func (h *ScreeningHints) Complete() bool { return len(h.Incomplete) == 0 }

// ScreeningHint is one flag of a screening pull.
type ScreeningHint struct {
	Item   string `json:"item"`   // a Screen* item or a medication Class*
	Source string `json:"source"` // medication, condition, allergy, blood-pressure
	Detail string `json:"detail"` // what raised it (PHI)
}

// Warnings returns the hints as warnings (severity warning, path
// "screening.<item>"), plus one when the pull was incomplete.
func (h *ScreeningHints) Warnings() []Issue {
	if h == nil {
		return nil
	}
	var out []Issue
	for _, f := range h.Flags {
		out = append(out, Issue{Path: "screening." + f.Item, Severity: "warning",
			Reason: "EHR screening pull (" + h.Target + ", " + f.Source + "): " + f.Item + ": " + f.Detail + " — a hint for the prescriber, not a decision"})
	}
	if !h.Complete() {
		out = append(out, Issue{Path: "screening", Severity: "warning",
			Reason: "EHR screening pull (" + h.Target + ") was incomplete: the absence of a flag means nothing"})
	}
	return out
}

// Where the payer path keeps what payers and EHRs answered (in the Cache,
// per tenant): written by adapters/payer and by the screening pull, shown by
// the kap/v1 API.
const (
	// PayerAnswerTTL is how long a payer's answer is kept.
	PayerAnswerTTL = 400 * 24 * time.Hour
	// ScreeningHintsTTL is how long a screening pull's hints are kept.
	ScreeningHintsTTL = 90 * 24 * time.Hour
)

// EligibilityKey is the Cache key of the last eligibility answer of a
// coverage (a JSON PayerAnswer).
func EligibilityKey(tenant, coverageID string) string {
	return "payer/eligibility/" + tenant + "/" + coverageID
}

// ClaimAnswerKey is the Cache key of what a payer answered to a claim (a
// JSON PayerAnswer).
func ClaimAnswerKey(tenant, claimID string) string {
	return "payer/claim/" + tenant + "/" + claimID
}

// PreAuthAnswerKey is the Cache key of what a payer answered to the prior
// authorisation request (Da Vinci PAS) of a claim (a JSON PayerAnswer).
func PreAuthAnswerKey(tenant, claimID string) string {
	return "payer/preauth/" + tenant + "/" + claimID
}

// ScreeningKey is the Cache key of a client's last screening pull (JSON
// ScreeningHints).
func ScreeningKey(tenant, clientID string) string {
	return "screening/" + tenant + "/" + clientID
}

// PayerAnswer is what a payer target did with one submission (a Claim or a
// CoverageEligibilityRequest): where the request is at the payer and, when
// the payer has answered, its response.
type PayerAnswer struct {
	Target string `json:"target"`
	// RequestType is Claim or CoverageEligibilityRequest; RequestID and
	// RequestVersion are the ids the payer assigned.
	RequestType    string    `json:"requestType"`
	RequestID      string    `json:"requestId,omitempty"`
	RequestVersion string    `json:"requestVersion,omitempty"`
	SubmittedAt    time.Time `json:"submittedAt"`
	// ResponseType is ClaimResponse or CoverageEligibilityResponse when the
	// payer answered; Response is that resource as the payer sent it.
	ResponseType string          `json:"responseType,omitempty"`
	ResponseID   string          `json:"responseId,omitempty"`
	Response     json.RawMessage `json:"response,omitempty"`
	Outcome      string          `json:"outcome,omitempty"` // the response's outcome (queued, complete, error, partial)
	// PreAuthRef is the prior-authorisation reference a payer's answer to
	// a Da Vinci PAS request gave (ClaimResponse.preAuthRef).
	PreAuthRef  string             `json:"preAuthRef,omitempty"`
	Eligibility *EligibilityResult `json:"eligibility,omitempty"`
	// Pending says the payer has stored the request and not answered yet
	// (a server that generates no response, or an asynchronous payer).
	Pending bool `json:"pending"`
}

// MessagePreAuth is the outbox message kind of a Da Vinci PAS prior
// authorisation request: a collection Bundle (the Claim, use
// preauthorization, first) that a payer target POSTs to Claim/$submit.
const MessagePreAuth = "ClaimPreAuthorization"
