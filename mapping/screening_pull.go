package mapping

import "github.com/kapbridge/kap/fhir"

// ConditionScreenHints returns the kap.Screen* items one coded condition
// suggests, by the rules ScreeningFromResources applies to EHR Conditions
// (SNOMED CT and ICD-10-CM codes). It lets a caller say which condition
// raised a hint.
func ConditionScreenHints(system, code string) []string {
	return inConditionHints(fhir.CC("", fhir.Coding(system, code, "")))
}

// ConditionCurrent reports whether a condition-clinical status counts as
// current for the hints (anything but inactive, resolved or remission; a
// missing status counts).
func ConditionCurrent(clinicalStatus string) bool { return inCurrent(clinicalStatus) }
