package fhir

import (
	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
)

var narrativeGenerated = cpb.NarrativeStatusCode_GENERATED

// Code-system URIs, copied from ../shared/domain/codes.md §0.1 (all
// VERIFIED there).
const (
	SystemLOINC               = "http://loinc.org"
	SystemUCUM                = "http://unitsofmeasure.org"
	SystemSNOMED              = "http://snomed.info/sct"
	SystemRxNorm              = "http://www.nlm.nih.gov/research/umls/rxnorm"
	SystemNDC                 = "http://hl7.org/fhir/sid/ndc"
	SystemCPT                 = "http://www.ama-assn.org/go/cpt"
	SystemHCPCS               = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
	SystemICD10CM             = "http://hl7.org/fhir/sid/icd-10-cm"
	SystemObservationCategory = "http://terminology.hl7.org/CodeSystem/observation-category"
	SystemCarePlanCategory    = "http://hl7.org/fhir/us/core/CodeSystem/careplan-category"
	SystemConditionCategory   = "http://terminology.hl7.org/CodeSystem/condition-category"
	SystemActCode             = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
	SystemConsentScope        = "http://terminology.hl7.org/CodeSystem/consentscope"
	SystemProvenanceAgentType = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
	SystemAESeriousness       = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
	SystemAESeverity          = "http://terminology.hl7.org/CodeSystem/adverse-event-severity"
	SystemAEOutcome           = "http://terminology.hl7.org/CodeSystem/adverse-event-outcome"
	// SystemNPI is the US National Provider Identifier system, as used by
	// the US Core practitioner examples in shared/corpora/us-core-examples.
	SystemNPI = "http://hl7.org/fhir/sid/us-npi"
	// SystemContactRelationship is v2 table 0131; code C (Emergency Contact)
	// appears in the R4 spec examples in shared/corpora.
	SystemContactRelationship = "http://terminology.hl7.org/CodeSystem/v2-0131"
	// SystemConditionClinical is the R4 condition-clinical code system
	// (active, inactive, resolved, ...), required by us-core-condition.
	SystemConditionClinical = "http://terminology.hl7.org/CodeSystem/condition-clinical"
	// SystemConditionVerification is the R4 condition-ver-status system.
	SystemConditionVerification = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
)

// KAP Bridge's own canonical base. Everything without a standard code lives
// in one local CodeSystem, defined in conformance/profiles.
const (
	CanonicalBase = "https://fhir.kapbridge.org"
	// SystemKAP is the local CodeSystem for concepts with no verified
	// standard code (codes.md marks MADRS, CADSS and MOAA/S as having no
	// LOINC code, and dissociation as having no verified SNOMED concept).
	SystemKAP = CanonicalBase + "/CodeSystem/kap"
	// ExtDosePerKg carries a dose in mg/kg on MedicationAdministration.dosage
	// and MedicationRequest.dosageInstruction (codes.md §3 note 4).
	ExtDosePerKg = CanonicalBase + "/StructureDefinition/dose-per-kg"
	// ExtMinutes carries the psychotherapy minutes on a Procedure.
	ExtMinutes = CanonicalBase + "/StructureDefinition/psychotherapy-minutes"
)

// KAP profiles (StructureDefinitions in conformance/profiles).
const (
	ProfileKAPDosingAdministration = CanonicalBase + "/StructureDefinition/kap-dosing-administration"
	ProfileKAPSessionScore         = CanonicalBase + "/StructureDefinition/kap-session-score"
	ProfileKAPDosingEncounter      = CanonicalBase + "/StructureDefinition/kap-dosing-encounter"
)

// US Core 3.1.1 and R4 profile canonical URLs (codes.md §1a, §8e).
const (
	ProfileUSCorePatient           = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
	ProfileUSCorePractitioner      = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-practitioner"
	ProfileUSCorePractitionerRole  = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-practitionerrole"
	ProfileUSCoreEncounter         = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-encounter"
	ProfileUSCoreCondition         = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-condition"
	ProfileUSCoreProcedure         = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-procedure"
	ProfileUSCoreCarePlan          = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-careplan"
	ProfileUSCoreGoal              = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-goal"
	ProfileUSCoreProvenance        = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-provenance"
	ProfileUSCoreMedicationRequest = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-medicationrequest"
	ProfileUSCoreMedication        = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-medication"
	ProfileUSCorePulseOximetry     = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-pulse-oximetry"
	ProfileVitalSigns              = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
	ProfileBP                      = "http://hl7.org/fhir/StructureDefinition/bp"
	// ProfileUSCoreBloodPressure (US Core 4+, codes.md §1a) is what our BP
	// Observations declare instead of the R4 bp profile: Medplum's
	// validator cannot evaluate bp's nested component slices (it rejects
	// the HL7 spec's own Observation-blood-pressure example), while it does
	// check us-core-blood-pressure, whose constraints our BP meets.
	ProfileUSCoreBloodPressure = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-blood-pressure"
	ProfileHeartRate           = "http://hl7.org/fhir/StructureDefinition/heartrate"
	ProfileRespRate            = "http://hl7.org/fhir/StructureDefinition/resprate"
	ProfileOxygenSat           = "http://hl7.org/fhir/StructureDefinition/oxygensat"
	ProfileBodyTemp            = "http://hl7.org/fhir/StructureDefinition/bodytemp"
	ProfileBodyWeight          = "http://hl7.org/fhir/StructureDefinition/bodyweight"
)

// LOINC codes (codes.md §1b, §2; all VERIFIED).
const (
	LOINCBloodPressure = "85354-9"
	LOINCSystolic      = "8480-6"
	LOINCDiastolic     = "8462-4"
	LOINCHeartRate     = "8867-4"
	LOINCRespRate      = "9279-1"
	LOINCPulseOx       = "59408-5"
	LOINCO2Sat         = "2708-6"
	LOINCBodyTemp      = "8310-5"
	LOINCBodyWeight    = "29463-7"
	LOINCConsent       = "59284-0"
)

// Display texts of the LOINC codes above, as codes.md gives them.
var LOINCDisplay = map[string]string{
	LOINCBloodPressure: "Blood pressure panel with all children optional",
	LOINCSystolic:      "Systolic blood pressure",
	LOINCDiastolic:     "Diastolic blood pressure",
	LOINCHeartRate:     "Heart rate",
	LOINCRespRate:      "Respiratory rate",
	LOINCPulseOx:       "Oxygen saturation in Arterial blood by Pulse oximetry",
	LOINCO2Sat:         "Oxygen saturation in Arterial blood",
	LOINCBodyTemp:      "Body temperature",
	LOINCBodyWeight:    "Body weight",
}

// Instrument describes how an outcome measure is coded (codes.md §2).
type Instrument struct {
	// TotalCode is the LOINC code of the total score ("" if none: the
	// Observation then carries PanelCode and no value).
	TotalCode, TotalDisplay string
	PanelCode, PanelDisplay string
	// ItemCodes are the LOINC item codes in item order; "" where codes.md
	// has none, and the item is coded in SystemKAP as "<local>-item-<n>".
	ItemCodes []string
	Local     string // local code prefix, e.g. "pcl5"
	// AnswerCodes are the LOINC answer codes by item value (PHQ-9 and
	// GAD-7: 0–3), nil where items are numbers.
	AnswerCodes []Answer
	// YesNo marks instruments whose items are yes/no (C-SSRS).
	YesNo bool
}

// Answer is a LOINC answer code.
type Answer struct{ Code, Display string }

// Instruments by kap instrument name. Every code below is VERIFIED in
// codes.md; PCL-5 items and C-SSRS items 3–6 have no code there and are
// local.
var Instruments = map[string]Instrument{
	"PHQ-9": {
		TotalCode: "44261-6", TotalDisplay: "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]",
		PanelCode: "44249-1", PanelDisplay: "PHQ-9 quick depression assessment panel [Reported.PHQ]",
		ItemCodes: []string{"44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", "44260-8"},
		Local:     "phq9", AnswerCodes: frequencyAnswers,
	},
	"GAD-7": {
		TotalCode: "70274-6", TotalDisplay: "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]",
		PanelCode: "69737-5", PanelDisplay: "Generalized anxiety disorder 7 item (GAD-7)",
		ItemCodes: []string{"69725-0", "68509-9", "69733-4", "69734-2", "69735-9", "69689-8", "69736-7"},
		Local:     "gad7", AnswerCodes: frequencyAnswers,
	},
	"PCL-5": {
		TotalCode: "101698-9", TotalDisplay: "PTSD PCL-5 score [PCL-5]",
		PanelCode: "101697-1", PanelDisplay: "Post traumatic stress disorder checklist - civilian version DSM-5 [PCL-5]",
		ItemCodes: make([]string, 20), Local: "pcl5",
	},
	"C-SSRS": {
		PanelCode: "93373-9", PanelDisplay: "Columbia - suicide severity rating scale screener - recent [C-SSRS]",
		ItemCodes: []string{"93246-7", "93247-5", "", "", "", ""}, Local: "cssrs", YesNo: true,
	},
}

// frequencyAnswers are the PHQ-9/GAD-7 answers by item value.
var frequencyAnswers = []Answer{
	{"LA6568-5", "Not at all"}, {"LA6569-3", "Several days"},
	{"LA6570-1", "More than half the days"}, {"LA6571-9", "Nearly every day"},
}

// C-SSRS yes/no answers (codes.md §2: LA33-6 Yes, LA32-8 No).
var (
	AnswerYes = Answer{"LA33-6", "Yes"}
	AnswerNo  = Answer{"LA32-8", "No"}
)

// Route codes (SNOMED CT, codes.md §3; all VERIFIED).
var Routes = map[string]Answer{
	"IV": {"47625008", "Intravenous route"},
	"IM": {"78421000", "Intramuscular route"},
	"SL": {"37839007", "Sublingual route"},
	"PO": {"26643006", "Oral route"},
	"IN": {"46713006", "Nasal route"},
}

// Product is how a ketamine product is coded. RxNorm codes are given only
// where codes.md marks them VERIFIED; otherwise the product is text plus the
// local code (codes.md §3 notes: compounded troches are text-only).
type Product struct {
	RxNorm, RxNormDisplay string
	Text                  string
	Form                  string // text of Medication.form
}

// Products by kap product value.
var Products = map[string]Product{
	"ketamine-100mg-ml-injection": {RxNorm: "238083", RxNormDisplay: "ketamine 100 MG/ML Injectable Solution", Text: "Ketamine 100 mg/mL injectable solution", Form: "Injectable solution"},
	"ketamine-10mg-ml-injection":  {RxNorm: "238082", RxNormDisplay: "ketamine 10 MG/ML Injectable Solution", Text: "Ketamine 10 mg/mL injectable solution", Form: "Injectable solution"},
	// 238084 is UNVERIFIED in codes.md (inferred only): text and local code.
	"ketamine-50mg-ml-injection": {Text: "Ketamine 50 mg/mL injectable solution", Form: "Injectable solution"},
	"ketamine-troche-compounded": {Text: "Ketamine HCl sublingual troche (compounded)", Form: "Troche/lozenge"},
	"ketamine-oral-compounded":   {Text: "Ketamine HCl oral solution (compounded)", Form: "Oral solution"},
	// 2201625 = esketamine Nasal Spray [Spravato] (SBDF), VERIFIED.
	"esketamine-nasal-spray": {RxNorm: "2201625", RxNormDisplay: "esketamine Nasal Spray [Spravato]", Text: "Spravato (esketamine) nasal spray, 28 mg per device", Form: "Nasal spray"},
}

// AdverseEventCodes maps kap adverse-event kinds to SNOMED CT (codes.md §6,
// VERIFIED). "dissociation" has no verified SNOMED concept: local code.
var AdverseEventCodes = map[string]Answer{
	"nausea":                  {"422587007", "Nausea"},
	"vomiting":                {"422400008", "Vomiting"},
	"dizziness":               {"404640003", "Dizziness"},
	"elevated-blood-pressure": {"24184005", "Finding of increased blood pressure"},
	"hypertension":            {"38341003", "Hypertensive disorder"},
	"anxiety":                 {"48694002", "Anxiety"},
	"panic":                   {"225624000", "Panic attack"},
	"agitation":               {"24199005", "Feeling agitated"},
	"hallucinations":          {"7011001", "Hallucinations"},
	"confusion":               {"40917007", "Clouded consciousness"},
	"delirium":                {"2776000", "Delirium"},
	"sedation":                {"443371007", "Decreased level of consciousness"},
	"headache":                {"25064002", "Headache"},
	"hypotension":             {"45007003", "Low blood pressure"},
	"hypoxia":                 {"389086002", "Hypoxia"},
}

// IndicationSNOMED maps kap indications to SNOMED CT (codes.md §5). TRD has
// no verified concept and uses the MDD concept; the local code says TRD.
var IndicationSNOMED = map[string]Answer{
	"trd":           {"370143000", "Major depressive disorder"},
	"mdd":           {"370143000", "Major depressive disorder"},
	"ptsd":          {"47505003", "Posttraumatic stress disorder"},
	"anxiety":       {"21897009", "Generalized anxiety disorder"},
	"substance-use": {"", ""},
	"chronic-pain":  {"82423001", "Chronic pain"},
}

// ICD10Display are displays of the ICD-10-CM codes in codes.md §5.
var ICD10Display = map[string]string{
	"F32.1":  "Major depressive disorder, single episode, moderate",
	"F32.2":  "Major depressive disorder, single episode, severe without psychotic features",
	"F32.9":  "Major depressive disorder, single episode, unspecified",
	"F32.A":  "Depression, unspecified",
	"F33.1":  "Major depressive disorder, recurrent, moderate",
	"F33.2":  "Major depressive disorder, recurrent severe without psychotic features",
	"F33.9":  "Major depressive disorder, recurrent, unspecified",
	"F43.10": "Post-traumatic stress disorder, unspecified",
	"F43.11": "Post-traumatic stress disorder, acute",
	"F43.12": "Post-traumatic stress disorder, chronic",
	"F41.1":  "Generalized anxiety disorder",
	"F10.20": "Alcohol dependence, uncomplicated",
	"F11.20": "Opioid dependence, uncomplicated",
	"F11.21": "Opioid dependence, in remission",
	"G89.29": "Other chronic pain",
	"G89.4":  "Chronic pain syndrome",
}

// BillingSystem returns the code-system URI of a kap billing system name.
func BillingSystem(system string) string {
	if system == "HCPCS" {
		return SystemHCPCS
	}
	return SystemCPT
}
