package mapping

// Inbound reverse mapping: data that arrives FROM an EHR (not Bundles this
// mapper produced). Nothing here is trusted to be complete or coded the way
// we code: the functions read what they recognise and leave the rest, and
// they never panic on odd input. The screening facts are hints for the
// prescriber's intake screen, never a decision.

import (
	"sort"
	"strings"
	"time"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	aipb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/allergy_intolerance_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	condpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/condition_go_proto"
	medpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/medication_go_proto"
	mrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/medication_request_go_proto"
	mspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/medication_statement_go_proto"
	obspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/observation_go_proto"
	ptpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/patient_go_proto"
	prpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/practitioner_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// InboundClient maps an EHR's Patient to a Client. The id is the value of
// the Patient's identifier in idSystem (the system the clinic uses for the
// EHR's MRN, say); "" when the Patient has none there.
func InboundClient(p *ptpb.Patient, idSystem string) *kap.Client {
	c := ClientFromPatient(p)
	c.ID = fhir.IdentifierValue(p.GetIdentifier(), idSystem)
	return c
}

// InboundProvider maps an EHR's Practitioner to a Provider: name, NPI and
// the first qualification's text; the id is its identifier in idSystem
// (pass fhir.SystemNPI to key providers by NPI). Roles are left empty: an
// EHR's roles are not KAP roles.
func InboundProvider(pr *prpb.Practitioner, idSystem string) *kap.Provider {
	p := ProviderFromPractitioner(pr)
	p.ID = fhir.IdentifierValue(pr.GetIdentifier(), idSystem)
	if p.Credentials == "" {
		if q := pr.GetQualification(); len(q) > 0 {
			p.Credentials = inText(q[0].GetCode())
		}
	}
	return p
}

// ExternalCondition is a Condition from an EHR, as coded there.
type ExternalCondition struct {
	Code, System, Display string
	// ClinicalStatus is the condition-clinical code ("active", "resolved",
	// ...), "" when the EHR gave none.
	ClinicalStatus string
	Onset          kap.Time // zero when not a dateTime (or period start)
}

// Allergy is an AllergyIntolerance from an EHR.
type Allergy struct {
	Substance      string // text, else the first coding's display or code
	Code, System   string // the first coding
	Criticality    string // low, high, unable-to-assess or ""
	ClinicalStatus string // active, inactive, resolved or ""
}

// ScreeningFacts are what an EHR's records say that matters for a KAP
// intake screen.
type ScreeningFacts struct {
	// Medications from MedicationStatement and MedicationRequest, classed
	// into kap medication classes where the name makes it obvious.
	Medications []kap.CurrentMedication
	Conditions  []ExternalCondition
	Allergies   []Allergy
	// BloodPressures are readings with Systolic and/or Diastolic set (mm[Hg]),
	// from blood-pressure panels and single systolic/diastolic
	// Observations, oldest first.
	BloodPressures []kap.VitalSigns
	// HeartRates are readings with HeartRate set (/min), oldest first.
	HeartRates []kap.VitalSigns
	// ContraindicationHints are kap.Screen* items some non-resolved EHR
	// condition (or a ketamine allergy) suggests, in kap.ScreenItems order.
	ContraindicationHints []string
}

// FlaggedMedications returns the medications in a class that interacts
// with ketamine and not stopped.
func (f ScreeningFacts) FlaggedMedications() []kap.CurrentMedication {
	in := kap.Intake{Medications: f.Medications}
	return in.Flags()
}

// ScreeningFromBundle flattens a Bundle's entries (any type) and reads them
// with ScreeningFromResources.
func ScreeningFromBundle(b *bcrpb.Bundle) ScreeningFacts {
	var res []proto.Message
	for _, e := range b.GetEntry() {
		if r := fhir.Unwrap(e.GetResource()); r != nil {
			res = append(res, r)
		}
	}
	return ScreeningFromResources(res)
}

// ScreeningFromResources reads MedicationStatement, MedicationRequest,
// Condition, AllergyIntolerance and vital-sign Observation resources (others,
// and entered-in-error records, are ignored). Medication resources in res
// resolve "Medication/<id>" references. ContainedResource wrappers are
// unwrapped.
func ScreeningFromResources(res []proto.Message) ScreeningFacts {
	var f ScreeningFacts
	meds := map[string]*medpb.Medication{}
	var flat []proto.Message
	for _, r := range res {
		if cr, ok := r.(*bcrpb.ContainedResource); ok {
			r = fhir.Unwrap(cr)
		}
		if r == nil || !r.ProtoReflect().IsValid() { // nil or a typed nil pointer
			continue
		}
		if m, ok := r.(*medpb.Medication); ok && m.GetId() != nil {
			meds["Medication/"+m.GetId().GetValue()] = m
		}
		flat = append(flat, r)
	}
	medCC := func(cc *dpb.CodeableConcept, ref *dpb.Reference) *dpb.CodeableConcept {
		if cc != nil {
			return cc
		}
		if m, ok := meds[fhir.RefString(ref)]; ok {
			return m.GetCode()
		}
		if d := ref.GetDisplay().GetValue(); d != "" {
			return fhir.CC(d)
		}
		return nil
	}
	hints := map[string]bool{}
	for _, r := range flat {
		switch x := r.(type) {
		case *mspb.MedicationStatement:
			st, ok := inStatementStatus[x.GetStatus().GetValue()]
			cc := medCC(x.GetMedication().GetCodeableConcept(), x.GetMedication().GetReference())
			if ok && cc != nil {
				f.Medications = append(f.Medications, inMedication(cc, st))
			}
		case *mrpb.MedicationRequest:
			st, ok := inRequestStatus[x.GetStatus().GetValue()]
			cc := medCC(x.GetMedication().GetCodeableConcept(), x.GetMedication().GetReference())
			if ok && cc != nil {
				f.Medications = append(f.Medications, inMedication(cc, st))
			}
		case *condpb.Condition:
			if fhir.HasCoding(x.GetVerificationStatus(), "http://terminology.hl7.org/CodeSystem/condition-ver-status", "entered-in-error") ||
				fhir.HasCoding(x.GetVerificationStatus(), "http://terminology.hl7.org/CodeSystem/condition-ver-status", "refuted") {
				continue
			}
			ec := ExternalCondition{ClinicalStatus: fhir.CodeOf(x.GetClinicalStatus(), fhir.SystemConditionClinical)}
			if cs := x.GetCode().GetCoding(); len(cs) > 0 {
				ec.Code, ec.System, ec.Display = cs[0].GetCode().GetValue(), cs[0].GetSystem().GetValue(), cs[0].GetDisplay().GetValue()
			}
			if ec.Display == "" {
				ec.Display = x.GetCode().GetText().GetValue()
			}
			switch {
			case x.GetOnset().GetDateTime() != nil:
				ec.Onset = kap.At(fhir.Time(x.GetOnset().GetDateTime()))
			case x.GetOnset().GetPeriod() != nil:
				ec.Onset = kap.At(fhir.Time(x.GetOnset().GetPeriod().GetStart()))
			}
			f.Conditions = append(f.Conditions, ec)
			if inCurrent(ec.ClinicalStatus) {
				for _, h := range inConditionHints(x.GetCode()) {
					hints[h] = true
				}
			}
		case *aipb.AllergyIntolerance:
			if fhir.HasCoding(x.GetVerificationStatus(), "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "entered-in-error") {
				continue
			}
			a := Allergy{Substance: inText(x.GetCode()),
				ClinicalStatus: fhir.CodeOf(x.GetClinicalStatus(), "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical")}
			if cs := x.GetCode().GetCoding(); len(cs) > 0 {
				a.Code, a.System = cs[0].GetCode().GetValue(), cs[0].GetSystem().GetValue()
			}
			if c := x.GetCriticality(); c != nil && c.GetValue() != cpb.AllergyIntoleranceCriticalityCode_INVALID_UNINITIALIZED {
				a.Criticality = strings.ToLower(strings.ReplaceAll(c.GetValue().String(), "_", "-"))
			}
			f.Allergies = append(f.Allergies, a)
			if a.ClinicalStatus != "inactive" && a.ClinicalStatus != "resolved" && inMentions(x.GetCode(), "ketamine") {
				hints[kap.ScreenKetamineHypersensitivity] = true
			}
		case *obspb.Observation:
			inVitals(x, &f)
		}
	}
	sort.SliceStable(f.BloodPressures, func(i, j int) bool { return f.BloodPressures[i].Time.Before(f.BloodPressures[j].Time.Time) })
	sort.SliceStable(f.HeartRates, func(i, j int) bool { return f.HeartRates[i].Time.Before(f.HeartRates[j].Time.Time) })
	for _, item := range kap.ScreenItems {
		if hints[item] {
			f.ContraindicationHints = append(f.ContraindicationHints, item)
		}
	}
	return f
}

var inStatementStatus = map[cpb.MedicationStatementStatusCodes_Value]string{
	cpb.MedicationStatementStatusCodes_ACTIVE:    "active",
	cpb.MedicationStatementStatusCodes_INTENDED:  "active",
	cpb.MedicationStatementStatusCodes_UNKNOWN:   "active", // assume taken: a missed flag is worse
	cpb.MedicationStatementStatusCodes_ON_HOLD:   "paused",
	cpb.MedicationStatementStatusCodes_STOPPED:   "stopped",
	cpb.MedicationStatementStatusCodes_COMPLETED: "stopped",
	cpb.MedicationStatementStatusCodes_NOT_TAKEN: "stopped",
}

var inRequestStatus = map[cpb.MedicationrequestStatusCode_Value]string{
	cpb.MedicationrequestStatusCode_ACTIVE:    "active",
	cpb.MedicationrequestStatusCode_DRAFT:     "active",
	cpb.MedicationrequestStatusCode_UNKNOWN:   "active",
	cpb.MedicationrequestStatusCode_ON_HOLD:   "paused",
	cpb.MedicationrequestStatusCode_STOPPED:   "stopped",
	cpb.MedicationrequestStatusCode_COMPLETED: "stopped",
	cpb.MedicationrequestStatusCode_CANCELLED: "stopped",
}

func inMedication(cc *dpb.CodeableConcept, status string) kap.CurrentMedication {
	m := kap.CurrentMedication{Name: inText(cc), Status: status, Class: inClass(cc)}
	if rx := fhir.CodeOf(cc, fhir.SystemRxNorm); rx != "" && inDigits(rx) {
		m.RxNorm = rx
	}
	if m.Name == "" {
		m.Name = "unnamed medication"
	}
	return m
}

// inText is the text of cc, else its first display, else its first code.
func inText(cc *dpb.CodeableConcept) string {
	if t := cc.GetText().GetValue(); t != "" {
		return t
	}
	for _, c := range cc.GetCoding() {
		if d := c.GetDisplay().GetValue(); d != "" {
			return d
		}
	}
	for _, c := range cc.GetCoding() {
		if d := c.GetCode().GetValue(); d != "" {
			return d
		}
	}
	return ""
}

// inMentions reports whether the text or any display of cc contains word
// (case-insensitive).
func inMentions(cc *dpb.CodeableConcept, word string) bool {
	if strings.Contains(strings.ToLower(cc.GetText().GetValue()), word) {
		return true
	}
	for _, c := range cc.GetCoding() {
		if strings.Contains(strings.ToLower(c.GetDisplay().GetValue()), word) {
			return true
		}
	}
	return false
}

// inClassWords are generic and common US brand names by class. Matching is
// on lower-case substrings of the text and displays; the first class that
// matches wins, in this order (the flagged classes first).
var inClassWords = []struct {
	class string
	words []string
}{
	{kap.ClassMAOI, []string{"phenelzine", "tranylcypromine", "selegiline", "isocarboxazid", "nardil", "parnate", "emsam", "marplan"}},
	{kap.ClassBenzodiazepine, []string{"alprazolam", "lorazepam", "clonazepam", "diazepam", "temazepam", "chlordiazepoxide",
		"clobazam", "oxazepam", "triazolam", "midazolam", "xanax", "ativan", "klonopin", "valium", "restoril", "librium"}},
	{kap.ClassStimulant, []string{"amphetamine", "methylphenidate", "lisdexamfetamine", "dexmethylphenidate",
		"adderall", "ritalin", "vyvanse", "concerta", "focalin", "dexedrine"}},
	{kap.ClassOpioid, []string{"oxycodone", "hydrocodone", "morphine", "fentanyl", "tramadol", "hydromorphone", "oxymorphone",
		"methadone", "buprenorphine", "codeine", "tapentadol", "meperidine", "oxycontin", "percocet", "vicodin", "norco",
		"suboxone", "dilaudid"}},
	{kap.ClassLamotrigine, []string{"lamotrigine", "lamictal"}},
	{kap.ClassSSRI, []string{"sertraline", "fluoxetine", "escitalopram", "citalopram", "paroxetine", "fluvoxamine",
		"zoloft", "prozac", "lexapro", "celexa", "paxil"}},
	{kap.ClassSNRI, []string{"venlafaxine", "desvenlafaxine", "duloxetine", "levomilnacipran", "effexor", "pristiq", "cymbalta"}},
	{kap.ClassAntipsychotic, []string{"quetiapine", "olanzapine", "risperidone", "aripiprazole", "haloperidol", "ziprasidone",
		"lurasidone", "clozapine", "paliperidone", "cariprazine", "seroquel", "zyprexa", "risperdal", "abilify"}},
}

// inClass classes a medication by its names; ClassOther when none matches.
func inClass(cc *dpb.CodeableConcept) string {
	names := []string{strings.ToLower(cc.GetText().GetValue())}
	for _, c := range cc.GetCoding() {
		names = append(names, strings.ToLower(c.GetDisplay().GetValue()))
	}
	for _, cw := range inClassWords {
		for _, w := range cw.words {
			for _, n := range names {
				if strings.Contains(n, w) {
					return cw.class
				}
			}
		}
	}
	return kap.ClassOther
}

func inDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// inCurrent: a condition counts unless the EHR says it is over.
func inCurrent(clinical string) bool {
	return clinical != "inactive" && clinical != "resolved" && clinical != "remission"
}

// inSNOMEDHints are SNOMED CT concepts that suggest a screen item.
var inSNOMEDHints = map[string]string{
	"58214004": kap.ScreenPsychosis,                // Schizophrenia
	"69322001": kap.ScreenPsychosis,                // Psychotic disorder
	"13746004": kap.ScreenBipolarMania,             // Bipolar disorder
	"38341003": kap.ScreenUncontrolledHypertension, // Hypertensive disorder
	"77386006": kap.ScreenPregnancy,                // Pregnancy
}

// inConditionHints returns the screen items a condition's codes suggest.
func inConditionHints(cc *dpb.CodeableConcept) []string {
	var out []string
	for _, c := range cc.GetCoding() {
		code := strings.ToUpper(c.GetCode().GetValue())
		switch c.GetSystem().GetValue() {
		case fhir.SystemSNOMED:
			if h, ok := inSNOMEDHints[code]; ok {
				out = append(out, h)
			}
		case fhir.SystemICD10CM, "http://hl7.org/fhir/sid/icd-10":
			switch {
			case len(code) >= 3 && code[0] == 'F' && code[1] == '2' && code[2] >= '0' && code[2] <= '9':
				out = append(out, kap.ScreenPsychosis) // F20–F29
			case strings.HasPrefix(code, "F31"):
				out = append(out, kap.ScreenBipolarMania)
			case code == "I10" || strings.HasPrefix(code, "I16"):
				out = append(out, kap.ScreenUncontrolledHypertension)
			case code == "Z33.1" || code == "Z331":
				out = append(out, kap.ScreenPregnancy)
			case strings.HasPrefix(code, "I71") || code == "I67.1" || code == "I671":
				out = append(out, kap.ScreenAneurysmOrAVM)
			}
		}
	}
	return out
}

// LOINC codes of inbound vital signs. 55284-4 ("Blood pressure systolic
// and diastolic") is the panel code Synthea and many EHRs send instead of
// 85354-9.
const inLOINCBPLegacy = "55284-4"

// inVitals adds a blood-pressure or heart-rate reading.
func inVitals(o *obspb.Observation, f *ScreeningFacts) {
	switch o.GetStatus().GetValue() {
	case cpb.ObservationStatusCode_ENTERED_IN_ERROR, cpb.ObservationStatusCode_CANCELLED:
		return
	}
	var t time.Time
	switch e := o.GetEffective(); {
	case e.GetDateTime() != nil:
		t = fhir.Time(e.GetDateTime())
	case e.GetPeriod() != nil:
		t = fhir.Time(e.GetPeriod().GetStart())
	case e.GetInstant() != nil:
		t = time.UnixMicro(e.GetInstant().GetValueUs()).UTC()
	case o.GetIssued() != nil:
		t = time.UnixMicro(o.GetIssued().GetValueUs()).UTC()
	}
	code := o.GetCode()
	switch {
	case fhir.HasCoding(code, fhir.SystemLOINC, fhir.LOINCBloodPressure) || fhir.HasCoding(code, fhir.SystemLOINC, inLOINCBPLegacy):
		v := kap.VitalSigns{Time: kap.At(t)}
		for _, c := range o.GetComponent() {
			q := c.GetValue().GetQuantity()
			if !inMmHg(q) {
				continue
			}
			switch {
			case fhir.HasCoding(c.GetCode(), fhir.SystemLOINC, fhir.LOINCSystolic):
				v.Systolic = fhir.DecimalValue(q.GetValue())
			case fhir.HasCoding(c.GetCode(), fhir.SystemLOINC, fhir.LOINCDiastolic):
				v.Diastolic = fhir.DecimalValue(q.GetValue())
			}
		}
		if v.Systolic != 0 || v.Diastolic != 0 {
			f.BloodPressures = append(f.BloodPressures, v)
		}
	case fhir.HasCoding(code, fhir.SystemLOINC, fhir.LOINCSystolic) || fhir.HasCoding(code, fhir.SystemLOINC, fhir.LOINCDiastolic):
		q := o.GetValue().GetQuantity()
		if !inMmHg(q) {
			return
		}
		v := kap.VitalSigns{Time: kap.At(t)}
		if fhir.HasCoding(code, fhir.SystemLOINC, fhir.LOINCSystolic) {
			v.Systolic = fhir.DecimalValue(q.GetValue())
		} else {
			v.Diastolic = fhir.DecimalValue(q.GetValue())
		}
		f.BloodPressures = append(f.BloodPressures, v)
	case fhir.HasCoding(code, fhir.SystemLOINC, fhir.LOINCHeartRate):
		q := o.GetValue().GetQuantity()
		if q == nil || q.GetValue() == nil || !inPerMinute(q) {
			return
		}
		f.HeartRates = append(f.HeartRates, kap.VitalSigns{Time: kap.At(t), HeartRate: fhir.DecimalValue(q.GetValue())})
	}
}

// inMmHg: a pressure in mm[Hg] (a missing unit is taken as mm[Hg]; any
// other unit, e.g. kPa, is not read rather than misread).
func inMmHg(q *dpb.Quantity) bool {
	if q == nil || q.GetValue() == nil {
		return false
	}
	code, unit := q.GetCode().GetValue(), strings.ToLower(q.GetUnit().GetValue())
	if code != "" {
		return code == "mm[Hg]"
	}
	return unit == "" || unit == "mmhg" || unit == "mm[hg]" || unit == "mm hg"
}

func inPerMinute(q *dpb.Quantity) bool {
	code, unit := q.GetCode().GetValue(), strings.ToLower(q.GetUnit().GetValue())
	if code != "" {
		return code == "/min" || code == "{beats}/min" || code == "{Beats}/min"
	}
	return unit == "" || strings.Contains(unit, "min")
}
