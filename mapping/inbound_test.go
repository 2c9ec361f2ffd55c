package mapping_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	aipb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/allergy_intolerance_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	condpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/condition_go_proto"
	mspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/medication_statement_go_proto"
	obspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/observation_go_proto"
	ptpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/patient_go_proto"
	prpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/practitioner_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/mapping"
)

const corpora = "/work/shared/corpora"

// parseCorpus parses a corpus file with the validating codec, falling back
// to the lenient one (some corpus files carry things google/fhir rejects).
func parseCorpus(t *testing.T, path string) (*bcrpb.ContainedResource, map[string]any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("corpus not available: %v", err)
	}
	codec := fhir.MustCodec()
	cr, err := codec.Unmarshal(data)
	if err != nil {
		t.Logf("%s: validating unmarshal failed (%v); using the lenient one", filepath.Base(path), err)
		if cr, err = codec.UnmarshalLenient(data); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	return cr, raw
}

// rawEntries returns the resources of a raw Bundle of a type.
func rawEntries(raw map[string]any, typ string) []map[string]any {
	var out []map[string]any
	entries, _ := raw["entry"].([]any)
	for _, e := range entries {
		r, _ := e.(map[string]any)["resource"].(map[string]any)
		if r["resourceType"] == typ {
			out = append(out, r)
		}
	}
	return out
}

func rawHasCode(r map[string]any, field, code string) bool {
	cc, _ := r[field].(map[string]any)
	cs, _ := cc["coding"].([]any)
	for _, c := range cs {
		if c.(map[string]any)["code"] == code {
			return true
		}
	}
	return false
}

// TestScreeningSynthea reads the Synthea patient Bundles: every
// MedicationRequest, Condition and AllergyIntolerance and every BP panel
// (Synthea codes it 55284-4) must come through, with their codes.
func TestScreeningSynthea(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(corpora, "synthea-r4", "*.json"))
	if len(files) == 0 {
		t.Skip("no Synthea corpus")
	}
	sawHTN := false
	var nMeds, nConds, nBPs, nAllergies int
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cr, raw := parseCorpus(t, f)
			facts := mapping.ScreeningFromBundle(cr.GetBundle())
			nMeds, nConds, nBPs, nAllergies = nMeds+len(facts.Medications), nConds+len(facts.Conditions), nBPs+len(facts.BloodPressures), nAllergies+len(facts.Allergies)
			mrs, conds, allergies := rawEntries(raw, "MedicationRequest"), rawEntries(raw, "Condition"), rawEntries(raw, "AllergyIntolerance")
			if len(facts.Medications) != len(mrs) || len(facts.Conditions) != len(conds) || len(facts.Allergies) != len(allergies) {
				t.Errorf("got %d meds, %d conditions, %d allergies; the Bundle has %d, %d, %d",
					len(facts.Medications), len(facts.Conditions), len(facts.Allergies), len(mrs), len(conds), len(allergies))
			}
			for i, mr := range mrs {
				if i >= len(facts.Medications) {
					break
				}
				m := facts.Medications[i]
				cc := mr["medicationCodeableConcept"].(map[string]any)
				code := cc["coding"].([]any)[0].(map[string]any)["code"]
				if m.RxNorm != code || m.Name != cc["text"] {
					t.Errorf("medication %d = %+v, want RxNorm %v name %v", i, m, code, cc["text"])
				}
				want := map[string]string{"active": "active", "stopped": "stopped", "completed": "stopped", "on-hold": "paused"}[mr["status"].(string)]
				if m.Status != want {
					t.Errorf("medication %d status %q, want %q (FHIR %v)", i, m.Status, want, mr["status"])
				}
				if !slices.Contains(kap.MedicationClasses, m.Class) {
					t.Errorf("medication %d class %q", i, m.Class)
				}
			}
			htn := false
			for i, c := range conds {
				got := facts.Conditions[i]
				coding := c["code"].(map[string]any)["coding"].([]any)[0].(map[string]any)
				if got.Code != coding["code"] || got.System != coding["system"] {
					t.Errorf("condition %d = %+v, want %v|%v", i, got, coding["system"], coding["code"])
				}
				if rawHasCode(c, "clinicalStatus", "active") != (got.ClinicalStatus == "active") {
					t.Errorf("condition %d clinical status %q", i, got.ClinicalStatus)
				}
				if got.Code == "38341003" && got.ClinicalStatus == "active" {
					htn = true
				}
			}
			if htn != slices.Contains(facts.ContraindicationHints, kap.ScreenUncontrolledHypertension) {
				t.Errorf("active hypertension %v but hints %v", htn, facts.ContraindicationHints)
			}
			sawHTN = sawHTN || htn
			nBP := 0
			for _, o := range rawEntries(raw, "Observation") {
				if rawHasCode(o, "code", "55284-4") || rawHasCode(o, "code", "85354-9") {
					nBP++
				}
			}
			if len(facts.BloodPressures) != nBP {
				t.Errorf("%d blood pressures, the Bundle has %d panels", len(facts.BloodPressures), nBP)
			}
			for i, bp := range facts.BloodPressures {
				if bp.Systolic < 60 || bp.Systolic > 250 || bp.Diastolic < 30 || bp.Diastolic > 150 || bp.Time.IsZero() {
					t.Errorf("implausible BP reading %+v", bp)
				}
				if i > 0 && bp.Time.Before(facts.BloodPressures[i-1].Time.Time) {
					t.Error("blood pressures not oldest first")
				}
			}
		})
	}
	if nMeds == 0 || nConds == 0 || nBPs == 0 || nAllergies == 0 {
		t.Errorf("over the corpus: %d medications, %d conditions, %d BPs, %d allergies; want some of each", nMeds, nConds, nBPs, nAllergies)
	}
	if !sawHTN {
		t.Error("no Synthea patient had active hypertension; the corpus changed or the conditions were lost")
	}
}

// TestInboundUSCoreExamples reads single US Core example resources.
func TestInboundUSCoreExamples(t *testing.T) {
	dir := filepath.Join(corpora, "us-core-examples")
	load := func(name string) proto.Message {
		cr, _ := parseCorpus(t, filepath.Join(dir, name))
		return fhir.Unwrap(cr)
	}
	bp := load("blood-pressure.json")
	hr := load("heart-rate.json")
	mr := load("medicationrequest-coded-oral-axid.json")
	cond := load("condition-encounter-diagnosis-example1.json")
	al := load("allergyintolerance-example.json")
	f := mapping.ScreeningFromResources([]proto.Message{bp, hr, mr, cond, al})
	if len(f.BloodPressures) != 1 || f.BloodPressures[0].Systolic != 109 || f.BloodPressures[0].Diastolic == 0 {
		t.Errorf("blood pressure = %+v", f.BloodPressures)
	}
	if len(f.HeartRates) != 1 || f.HeartRates[0].HeartRate != 44 {
		t.Errorf("heart rate = %+v", f.HeartRates)
	}
	if len(f.Medications) != 1 || f.Medications[0].RxNorm != "476872" || f.Medications[0].Class != kap.ClassOther || f.Medications[0].Status != "active" {
		t.Errorf("medications = %+v", f.Medications)
	}
	if len(f.Conditions) != 1 || f.Conditions[0].Code != "39065001" || f.Conditions[0].System != fhir.SystemSNOMED {
		t.Errorf("conditions = %+v", f.Conditions)
	}
	if len(f.Allergies) != 1 || f.Allergies[0].Criticality != "high" || f.Allergies[0].Substance != "sulfonamide antibacterial" || f.Allergies[0].ClinicalStatus != "active" {
		t.Errorf("allergies = %+v", f.Allergies)
	}
	if len(f.ContraindicationHints) != 0 {
		t.Errorf("hints %v from a burnt ear and a sulfa allergy", f.ContraindicationHints)
	}

	// A MedicationRequest that references a Medication resolves through it.
	ref := load("medicationrequest-referenced-oral-axid.json")
	f = mapping.ScreeningFromResources([]proto.Message{ref})
	if len(f.Medications) != 1 || f.Medications[0].Name == "" || f.Medications[0].Name == "unnamed medication" {
		t.Errorf("referenced medication = %+v", f.Medications)
	}

	_, rawP := parseCorpus(t, filepath.Join(dir, "patient-example.json"))
	p := load("patient-example.json")
	c := mapping.InboundClient(p.(*ptpb.Patient), "http://example.org/patient/identifiers")
	if c.ID != "1032702" || c.Name.Family != rawP["name"].([]any)[0].(map[string]any)["family"] || c.BirthDate == "" {
		t.Errorf("client = %+v", c)
	}
	pr := mapping.InboundProvider(load("practitioner-1.json").(*prpb.Practitioner), fhir.SystemNPI)
	if pr.ID != "9941339100" || pr.NPI != "9941339100" || pr.Name.Family == "" {
		t.Errorf("provider = %+v", pr)
	}
}

func cond(system, code, clinical string) *condpb.Condition {
	c := &condpb.Condition{Code: fhir.CC("", fhir.Coding(system, code, ""))}
	if clinical != "" {
		c.ClinicalStatus = fhir.CC("", fhir.Coding(fhir.SystemConditionClinical, clinical, ""))
	}
	return c
}

func stmt(name string, st cpb.MedicationStatementStatusCodes_Value) *mspb.MedicationStatement {
	return &mspb.MedicationStatement{
		Status:     &mspb.MedicationStatement_StatusCode{Value: st},
		Medication: &mspb.MedicationStatement_MedicationX{Choice: &mspb.MedicationStatement_MedicationX_CodeableConcept{CodeableConcept: fhir.CC(name)}},
	}
}

func bpObs(sys, dia float64, unit string, st cpb.ObservationStatusCode_Value) *obspb.Observation {
	comp := func(code string, v float64) *obspb.Observation_Component {
		return &obspb.Observation_Component{Code: fhir.CC("", fhir.Coding(fhir.SystemLOINC, code, "")),
			Value: &obspb.Observation_Component_ValueX{Choice: &obspb.Observation_Component_ValueX_Quantity{Quantity: fhir.Quantity(v, unit, unit)}}}
	}
	return &obspb.Observation{
		Status:    &obspb.Observation_StatusCode{Value: st},
		Code:      fhir.CC("", fhir.Coding(fhir.SystemLOINC, fhir.LOINCBloodPressure, "")),
		Effective: &obspb.Observation_EffectiveX{Choice: &obspb.Observation_EffectiveX_DateTime{DateTime: fhir.DateTime(kap.MustTime("2026-01-02T03:04:05Z").Time)}},
		Component: []*obspb.Observation_Component{comp(fhir.LOINCSystolic, sys), comp(fhir.LOINCDiastolic, dia)},
	}
}

// TestScreeningClassesAndHints: medication classes by name, contraindication
// hints by ICD-10-CM and SNOMED, resolved conditions and foreign units not
// taken.
func TestScreeningClassesAndHints(t *testing.T) {
	res := []proto.Message{
		stmt("ALPRAZolam 0.5 MG Oral Tablet", cpb.MedicationStatementStatusCodes_ACTIVE),
		stmt("Adderall XR 20 mg", cpb.MedicationStatementStatusCodes_ON_HOLD),
		stmt("phenelzine 15 mg", cpb.MedicationStatementStatusCodes_COMPLETED),
		stmt("tramadol 50 mg", cpb.MedicationStatementStatusCodes_ACTIVE),
		stmt("sertraline 50 mg", cpb.MedicationStatementStatusCodes_ACTIVE),
		stmt("vitamin D", cpb.MedicationStatementStatusCodes_ACTIVE),
		stmt("clonazepam", cpb.MedicationStatementStatusCodes_ENTERED_IN_ERROR),
		cond(fhir.SystemICD10CM, "F20.9", "active"),
		cond(fhir.SystemICD10CM, "F31.2", ""),
		cond(fhir.SystemICD10CM, "I16.0", "active"),
		cond(fhir.SystemSNOMED, "77386006", "active"),
		cond(fhir.SystemICD10CM, "I71.2", "recurrence"),
		cond(fhir.SystemSNOMED, "13746004", "resolved"),
		&aipb.AllergyIntolerance{Code: fhir.CC("Ketamine hydrochloride")},
		bpObs(150, 95, "mm[Hg]", cpb.ObservationStatusCode_FINAL),
		bpObs(20, 12, "kPa", cpb.ObservationStatusCode_FINAL),
		bpObs(300, 200, "mm[Hg]", cpb.ObservationStatusCode_ENTERED_IN_ERROR),
	}
	f := mapping.ScreeningFromResources(res)
	var classes, statuses []string
	for _, m := range f.Medications {
		classes = append(classes, m.Class)
		statuses = append(statuses, m.Status)
	}
	wantC := []string{kap.ClassBenzodiazepine, kap.ClassStimulant, kap.ClassMAOI, kap.ClassOpioid, kap.ClassSSRI, kap.ClassOther}
	if !slices.Equal(classes, wantC) {
		t.Errorf("classes %v, want %v", classes, wantC)
	}
	if wantS := []string{"active", "paused", "stopped", "active", "active", "active"}; !slices.Equal(statuses, wantS) {
		t.Errorf("statuses %v, want %v", statuses, wantS)
	}
	if n := len(f.FlaggedMedications()); n != 3 {
		t.Errorf("%d flagged medications, want 3 (the MAOI is stopped)", n)
	}
	wantH := []string{kap.ScreenUncontrolledHypertension, kap.ScreenAneurysmOrAVM, kap.ScreenPsychosis, kap.ScreenBipolarMania,
		kap.ScreenPregnancy, kap.ScreenKetamineHypersensitivity}
	if !slices.Equal(f.ContraindicationHints, wantH) {
		t.Errorf("hints %v, want %v", f.ContraindicationHints, wantH)
	}
	if len(f.BloodPressures) != 1 || f.BloodPressures[0].Systolic != 150 || f.BloodPressures[0].Diastolic != 95 {
		t.Errorf("blood pressures %+v, want only the mm[Hg] final reading", f.BloodPressures)
	}

	// Only the resolved bipolar condition: no hint.
	f = mapping.ScreeningFromResources([]proto.Message{cond(fhir.SystemSNOMED, "13746004", "resolved"), &dpb.Coding{}})
	if len(f.ContraindicationHints) != 0 || len(f.Conditions) != 1 {
		t.Errorf("resolved condition: hints %v conditions %d", f.ContraindicationHints, len(f.Conditions))
	}
}

// TestScreeningEmptyResources: empty and nil resources give empty facts, no
// panic.
func TestScreeningEmptyResources(t *testing.T) {
	var nilCond *condpb.Condition
	f := mapping.ScreeningFromResources([]proto.Message{nil, nilCond, &condpb.Condition{}, &mspb.MedicationStatement{},
		&obspb.Observation{}, &aipb.AllergyIntolerance{}, &bcrpb.ContainedResource{}, bpObs(0, 0, "", cpb.ObservationStatusCode_FINAL)})
	if len(f.Medications) != 0 || len(f.BloodPressures) != 0 || len(f.ContraindicationHints) != 0 {
		t.Errorf("facts from empty resources: %+v", f)
	}
	if len(f.Conditions) != 1 || len(f.Allergies) != 1 {
		t.Errorf("got %d conditions and %d allergies, want the empty Condition and AllergyIntolerance listed (not the nil one)", len(f.Conditions), len(f.Allergies))
	}
}

func BenchmarkScreeningFromBundle(b *testing.B) {
	files, _ := filepath.Glob(filepath.Join(corpora, "synthea-r4", "Kermit*.json"))
	if len(files) == 0 {
		b.Skip("no Synthea corpus")
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		b.Fatal(err)
	}
	cr, err := fhir.MustCodec().UnmarshalLenient(data)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mapping.ScreeningFromBundle(cr.GetBundle())
	}
}
