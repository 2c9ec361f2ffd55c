package kap

import (
	"fmt"
	"time"
)

// Intake is the screening visit that decides whether a client is eligible
// for KAP. Eligibility is decided by a prescriber.
type Intake struct {
	Kind         Kind                   `json:"kind"`
	ID           string                 `json:"id"`
	ClientID     string                 `json:"clientId"`
	Date         Time                   `json:"date"`
	PrescriberID string                 `json:"prescriberId"` // the deciding prescriber
	Indications  []Indication           `json:"indications"`
	Screen       ContraindicationScreen `json:"contraindicationScreen"`
	Medications  []CurrentMedication    `json:"medications,omitempty"`
	Baseline     []ScoreSummary         `json:"baseline,omitempty"`
	BillingCodes []string               `json:"billingCodes,omitempty"` // e.g. 90791
}

// Indications for KAP.
const (
	IndicationTRD          = "trd" // treatment-resistant depression
	IndicationMDD          = "mdd"
	IndicationPTSD         = "ptsd"
	IndicationAnxiety      = "anxiety"
	IndicationSubstanceUse = "substance-use"
	IndicationChronicPain  = "chronic-pain"
)

// IndicationCodes are the allowed Indication.Code values.
var IndicationCodes = []string{IndicationTRD, IndicationMDD, IndicationPTSD, IndicationAnxiety,
	IndicationSubstanceUse, IndicationChronicPain}

// Indication is a condition KAP is meant to treat, with its ICD-10-CM code.
// Treatment-resistant depression has no ICD-10-CM code of its own: code the
// depressive episode (F32.x or F33.x) and set Code to "trd".
type Indication struct {
	Code  string `json:"code"`  // IndicationCodes
	ICD10 string `json:"icd10"` // ICD-10-CM, e.g. F33.2
}

// Contraindication screen items.
const (
	ScreenUncontrolledHypertension = "uncontrolled-hypertension"
	ScreenCardiovascularDisease    = "cardiovascular-disease"
	ScreenAneurysmOrAVM            = "aneurysm-or-avm"
	ScreenIntracerebralHemorrhage  = "intracerebral-hemorrhage"
	ScreenPsychosis                = "psychosis"
	ScreenBipolarMania             = "bipolar-mania"
	ScreenDissociativeDisorder     = "dissociative-disorder"
	ScreenPregnancy                = "pregnancy"
	ScreenKetamineHypersensitivity = "ketamine-hypersensitivity"
)

// ScreenItems are the allowed ScreenAnswer.Item values.
var ScreenItems = []string{ScreenUncontrolledHypertension, ScreenCardiovascularDisease, ScreenAneurysmOrAVM,
	ScreenIntracerebralHemorrhage, ScreenPsychosis, ScreenBipolarMania, ScreenDissociativeDisorder,
	ScreenPregnancy, ScreenKetamineHypersensitivity}

// Screen outcomes.
const (
	OutcomeEligible    = "eligible"
	OutcomeIneligible  = "ineligible"
	OutcomeNeedsReview = "needs-review"
)

// ScreenOutcomes are the allowed ContraindicationScreen.Outcome values.
var ScreenOutcomes = []string{OutcomeEligible, OutcomeIneligible, OutcomeNeedsReview}

// ContraindicationScreen holds the answers to the contraindication questions
// and the prescriber's decision.
type ContraindicationScreen struct {
	Answers []ScreenAnswer `json:"answers"`
	Outcome string         `json:"outcome"` // ScreenOutcomes
}

// ScreenAnswer is one answered contraindication question.
type ScreenAnswer struct {
	Item    string `json:"item"` // ScreenItems
	Present bool   `json:"present"`
}

// Medication classes that matter for KAP.
const (
	ClassBenzodiazepine = "benzodiazepine"
	ClassStimulant      = "stimulant"
	ClassMAOI           = "maoi"
	ClassOpioid         = "opioid"
	ClassSSRI           = "ssri"
	ClassSNRI           = "snri"
	ClassAntipsychotic  = "antipsychotic"
	ClassLamotrigine    = "lamotrigine"
	ClassOther          = "other"
)

// MedicationClasses are the allowed CurrentMedication.Class values.
var MedicationClasses = []string{ClassBenzodiazepine, ClassStimulant, ClassMAOI, ClassOpioid, ClassSSRI,
	ClassSNRI, ClassAntipsychotic, ClassLamotrigine, ClassOther}

// FlaggedClasses interact with ketamine and are shown as flags on an intake.
var FlaggedClasses = []string{ClassBenzodiazepine, ClassStimulant, ClassMAOI, ClassOpioid}

// Medication statuses.
var MedicationStatuses = []string{"active", "paused", "stopped"}

// CurrentMedication is a medication the client takes at intake.
type CurrentMedication struct {
	Name   string `json:"name"`             // as the client reports it
	RxNorm string `json:"rxnorm,omitempty"` // RxCUI when known
	Class  string `json:"class"`            // MedicationClasses
	Status string `json:"status"`           // active, paused (e.g. held before dosing), stopped
}

// Flagged reports whether the medication's class interacts with ketamine.
func (m CurrentMedication) Flagged() bool { return contains(FlaggedClasses, m.Class) }

// Instruments are the outcome measures.
const (
	InstrumentPHQ9  = "PHQ-9"
	InstrumentGAD7  = "GAD-7"
	InstrumentPCL5  = "PCL-5"
	InstrumentCSSRS = "C-SSRS"
)

// Instruments are the allowed instruments of an Assessment or ScoreSummary.
var Instruments = []string{InstrumentPHQ9, InstrumentGAD7, InstrumentPCL5, InstrumentCSSRS}

// ScoreSummary is a total score recorded at intake.
type ScoreSummary struct {
	Instrument string `json:"instrument"` // Instruments
	Total      int    `json:"total"`
}

func (in *Intake) RecordKind() Kind       { return KindIntake }
func (in *Intake) RecordID() string       { return in.ID }
func (in *Intake) RecordClientID() string { return in.ClientID }
func (in *Intake) RecordDate() time.Time  { return in.Date.Time }

// Flags returns the medications whose class interacts with ketamine.
func (in *Intake) Flags() []CurrentMedication {
	var out []CurrentMedication
	for _, m := range in.Medications {
		if m.Flagged() && m.Status != "stopped" {
			out = append(out, m)
		}
	}
	return out
}

// Validate checks the intake.
func (in *Intake) Validate() error {
	var v validator
	v.kind(in.Kind, KindIntake)
	v.id("id", in.ID, true)
	v.id("clientId", in.ClientID, true)
	v.time("date", in.Date, true)
	v.id("prescriberId", in.PrescriberID, true)
	if len(in.Indications) == 0 {
		v.add("indications", "is required: at least one indication")
	}
	for i, ind := range in.Indications {
		p := fmt.Sprintf("indications[%d]", i)
		v.oneOf(p+".code", ind.Code, IndicationCodes, true)
		v.icd10(p+".icd10", ind.ICD10)
		if ind.Code == IndicationTRD || ind.Code == IndicationMDD {
			if len(ind.ICD10) >= 3 && ind.ICD10[:3] != "F32" && ind.ICD10[:3] != "F33" {
				v.add(p+".icd10", "must be a depressive episode code (F32.x or F33.x) for %s", ind.Code)
			}
		}
	}
	v.oneOf("contraindicationScreen.outcome", in.Screen.Outcome, ScreenOutcomes, true)
	seen := map[string]bool{}
	anyPresent := false
	for i, a := range in.Screen.Answers {
		p := fmt.Sprintf("contraindicationScreen.answers[%d].item", i)
		v.oneOf(p, a.Item, ScreenItems, true)
		if seen[a.Item] {
			v.add(p, "is answered twice")
		}
		seen[a.Item] = true
		anyPresent = anyPresent || a.Present
	}
	if len(in.Screen.Answers) == 0 {
		v.add("contraindicationScreen.answers", "is required: the answered contraindication questions")
	}
	if anyPresent && in.Screen.Outcome == OutcomeEligible {
		v.add("contraindicationScreen.outcome", "cannot be eligible while a contraindication is present; use needs-review or ineligible")
	}
	for i, m := range in.Medications {
		p := fmt.Sprintf("medications[%d]", i)
		v.required(p+".name", m.Name)
		if m.RxNorm != "" && !digits(m.RxNorm) {
			v.add(p+".rxnorm", "must be an RxNorm concept id (digits)")
		}
		v.oneOf(p+".class", m.Class, MedicationClasses, true)
		v.oneOf(p+".status", m.Status, MedicationStatuses, true)
	}
	seenI := map[string]bool{}
	for i, s := range in.Baseline {
		p := fmt.Sprintf("baseline[%d]", i)
		v.oneOf(p+".instrument", s.Instrument, Instruments, true)
		if seenI[s.Instrument] {
			v.add(p+".instrument", "appears twice")
		}
		seenI[s.Instrument] = true
		if lo, hi, ok := TotalRange(s.Instrument); ok && (s.Total < lo || s.Total > hi) {
			v.add(p+".total", "must be between %d and %d for %s", lo, hi, s.Instrument)
		}
	}
	v.billing("billingCodes", in.BillingCodes)
	return v.err()
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
