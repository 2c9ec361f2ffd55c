package conformance

// The KAP CodeSystem (fhir.SystemKAP): every local code the mapping emits,
// built from the domain enumerations so a new product, check item, adverse
// event kind, role or format cannot be forgotten. The committed copy is
// conformance/profiles/CodeSystem-kap.json; TestCodeSystemKAPUpToDate
// compares it with KAPCodeSystem() (go test ./conformance -run CodeSystem -update
// rewrites it). See docs/conformance-profiles.md.

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// Concept is one code of the KAP CodeSystem.
type Concept struct {
	Code       string `json:"code"`
	Display    string `json:"display"`
	Definition string `json:"definition"`
}

// MaxPlanSessions is the largest session number a DosingSession accepts
// (kap.DosingSession validation), hence the last plan-session-N code.
const MaxPlanSessions = 200

// ValueSetKAPSessionScore is the ValueSet bound to kap-session-score's code.
const ValueSetKAPSessionScore = fhir.CanonicalBase + "/ValueSet/kap-session-score"

// KAPConcepts returns every code of the KAP CodeSystem, sorted by code.
func KAPConcepts() []Concept {
	var cs []Concept
	add := func(code, display, def string) { cs = append(cs, Concept{code, display, def}) }

	// Encounters and procedures.
	add("dosing-session", "KAP dosing session",
		"A supervised in-clinic session in which ketamine or esketamine is administered and the patient is monitored until discharge (Encounter.type of the kap-dosing-encounter profile).")
	for n := 1; n <= MaxPlanSessions; n++ {
		add(fmt.Sprintf("plan-session-%d", n), fmt.Sprintf("Session %d of the treatment plan", n),
			fmt.Sprintf("The dosing session is session number %d of the patient's KAP treatment plan (a second Encounter.type).", n))
	}
	add("session-monitoring", "KAP dosing session monitoring",
		"Clinical monitoring of the patient (vital signs, dissociation and sedation scores) during and after a dosing session (Procedure.code).")
	add("psychotherapy", "Psychotherapy",
		"Psychotherapy delivered during a KAP session; the minutes are in the psychotherapy-minutes extension (Procedure.code).")
	add("ae-intervention", "Intervention for an adverse event",
		"A clinical intervention made in response to an adverse event during a dosing session (Procedure.code; Procedure.code.text describes it).")
	for _, f := range kap.IntegrationFormats {
		add("integration-"+f, "KAP integration session ("+f+")",
			"A psychotherapy session after dosing to integrate the experience, format "+f+" (Encounter.type).")
	}

	// Session observations.
	add("cadss", "Clinician-Administered Dissociative States Scale (CADSS) score",
		"Total CADSS score (0-92) measuring dissociation, taken during a dosing session. No LOINC code exists.")
	add("moaas", "Modified Observer's Assessment of Alertness/Sedation (MOAA/S) score",
		"MOAA/S score (0-5; 5 = responds readily to name) measuring sedation, taken during a dosing session. No LOINC code exists.")
	add("fasting-duration", "Fasting duration before the session",
		"How long the patient fasted before the dosing session (Observation.code).")
	add("pre-session-checklist", "Pre-session checklist",
		"The safety checklist completed before dosing; one component per check item (Observation.code).")
	for _, it := range kap.CheckItems {
		add("check-"+it, "Pre-session check: "+strings.ReplaceAll(it, "-", " "),
			"Whether the pre-session check '"+it+"' passed (pre-session-checklist component code, valueBoolean).")
	}
	add("session-intention", "Session intention",
		"The intention the patient set for the dosing session, as text (Observation.code).")
	add("discharge-readiness", "Discharge readiness",
		"The discharge assessment at the end of a dosing session (Observation.code), with components criteria-met, escort-present and released-to.")
	add("criteria-met", "Discharge criteria met", "Whether the clinic's discharge criteria were met (discharge-readiness component, valueBoolean).")
	add("escort-present", "Escort present at discharge", "Whether an escort was present to take the patient home (discharge-readiness component, valueBoolean).")
	add("released-to", "Released to", "To whom the patient was released at discharge (discharge-readiness component, valueString).")

	// Medications and adverse events.
	for _, p := range kap.Products {
		add("product-"+p, fhir.Products[p].Text,
			"The ketamine product '"+p+"' as the clinic records it; sent next to the RxNorm code where one is verified (Medication.code).")
	}
	for _, k := range kap.AdverseEventKinds {
		d := strings.ReplaceAll(k, "-", " ")
		def := "Adverse event during a KAP dosing session: " + d + "."
		if a, ok := fhir.AdverseEventCodes[k]; ok && a.Code != "" {
			def += " Sent next to SNOMED CT " + a.Code + " (" + a.Display + ")."
		} else {
			def += " No verified SNOMED CT concept: this code is the only coding."
		}
		add("ae-"+k, d, def)
	}

	// Assessment items without a LOINC code.
	insts := make([]string, 0, len(fhir.Instruments))
	for name := range fhir.Instruments {
		insts = append(insts, name)
	}
	sort.Strings(insts)
	for _, name := range insts {
		in := fhir.Instruments[name]
		for i, c := range in.ItemCodes {
			if c == "" {
				add(fmt.Sprintf("%s-item-%d", in.Local, i+1), fmt.Sprintf("%s item %d", name, i+1),
					fmt.Sprintf("Item %d of the %s instrument, which has no LOINC item code (Observation.component.code).", i+1, name))
			}
		}
	}

	// People.
	add("escort", "Escort home after dosing", "A contact person who takes the patient home after a dosing session (Patient.contact.relationship).")
	for _, r := range kap.ProviderRoles {
		add("role-"+r, "KAP "+r, "A clinician acting as KAP "+r+" (PractitionerRole.code).")
	}

	// Intake.
	add("intake", "KAP intake", "The screening visit that decides whether a client is eligible for KAP (Encounter.type).")
	for _, c := range kap.IndicationCodes {
		add("indication-"+c, "KAP indication: "+c,
			"The condition is a KAP indication of kind '"+c+"' (Condition.code, beside ICD-10-CM; 'trd' marks treatment-resistant depression, which has no ICD-10-CM code of its own).")
	}
	add("contraindication-screen", "KAP contraindication screen",
		"The answered contraindication questions of an intake (Observation.code); one component per question, value = the prescriber's decision.")
	for _, it := range kap.ScreenItems {
		add("screen-"+it, "Contraindication: "+strings.ReplaceAll(it, "-", " "),
			"Whether the contraindication '"+it+"' is present (contraindication-screen component code, valueBoolean).")
	}
	for _, o := range kap.ScreenOutcomes {
		add("eligibility-"+o, "KAP eligibility: "+o, "The prescriber's eligibility decision '"+o+"' (contraindication-screen value).")
	}
	for _, c := range kap.MedicationClasses {
		add("class-"+c, "Medication class: "+c,
			"The medication belongs to the class '"+c+"'; benzodiazepines, stimulants, MAOIs and opioids are flagged for KAP (MedicationStatement.medicationCodeableConcept).")
	}

	// Consent.
	add("escort-agreement", "Escort agreement", "The client agreed to be taken home by an escort after each dosing session (Consent.provision.provision.code).")
	add("no-driving-8h", "No driving for 8 hours", "The client acknowledged not to drive or operate machinery for 8 hours after a session (Consent.provision.provision.code).")
	add("share-ehr", "Share with an EHR", "The client consents to records being sent to the named EHR (Consent.provision.actor.role).")
	add("share-payer", "Share with a payer", "The client consents to records being sent to the named payer (Consent.provision.actor.role).")

	// Treatment plan.
	for _, k := range []string{"preparation", "dosing", "integration", "follow-up"} {
		add("sessions-"+k, "Planned "+k+" sessions", "The planned "+k+" sessions of a KAP treatment plan (CarePlan.activity.detail.code), with count and interval in scheduledTiming.")
	}

	sort.Slice(cs, func(i, j int) bool { return cs[i].Code < cs[j].Code })
	return cs
}

// KAPCodeSystemJSON returns CodeSystem-kap.json as committed.
func KAPCodeSystemJSON() ([]byte, error) {
	concepts := KAPConcepts()
	cs := map[string]any{
		"resourceType": "CodeSystem",
		"id":           "kap",
		"url":          fhir.SystemKAP,
		"version":      "0.1.0",
		"name":         "KAPBridgeLocalCodes",
		"title":        "KAP Bridge local codes",
		"status":       "active",
		"experimental": false,
		"publisher":    "KAP Bridge",
		"description": "Concepts of ketamine-assisted psychotherapy for which no verified standard code (LOINC, SNOMED CT, RxNorm, CPT) exists, " +
			"or local equivalents sent next to the standard code so the gateway can read its own output back.",
		"caseSensitive": true,
		"content":       "complete",
		"count":         len(concepts),
		"concept":       concepts,
	}
	b, err := json.MarshalIndent(cs, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// KAPSessionScoreValueSetJSON returns ValueSet-kap-session-score.json.
func KAPSessionScoreValueSetJSON() ([]byte, error) {
	var inc []map[string]string
	for _, c := range KAPConcepts() {
		if c.Code == "cadss" || c.Code == "moaas" {
			inc = append(inc, map[string]string{"code": c.Code, "display": c.Display})
		}
	}
	vs := map[string]any{
		"resourceType": "ValueSet",
		"id":           "kap-session-score",
		"url":          ValueSetKAPSessionScore,
		"version":      "0.1.0",
		"name":         "KAPSessionScore",
		"title":        "KAP in-session scores",
		"status":       "active",
		"experimental": false,
		"publisher":    "KAP Bridge",
		"description":  "The in-session scores of the kap-session-score profile: CADSS (dissociation) and MOAA/S (sedation).",
		"compose":      map[string]any{"include": []any{map[string]any{"system": fhir.SystemKAP, "concept": inc}}},
	}
	b, err := json.MarshalIndent(vs, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
