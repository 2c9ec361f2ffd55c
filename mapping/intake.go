package mapping

import (
	"fmt"
	"sort"
	"strings"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	condpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/condition_go_proto"
	encpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/encounter_go_proto"
	mspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/medication_statement_go_proto"
	obspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/observation_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// Intake → a US Core Encounter (identifier part ""; class AMB; type[0] =
// local "intake" plus one CPT/HCPCS coding per billing code), one US Core
// Condition per indication ("indication/<n>": ICD-10-CM, SNOMED where
// codes.md has one, and the local "indication-<code>" that tells trd from
// mdd), one survey Observation for the contraindication screen ("screen":
// value = local "eligibility-<outcome>", one valueBoolean component per
// answer coded local "screen-<item>"), one MedicationStatement per current
// medication ("medication/<n>": text = name, RxNorm when given, local
// "class-<class>") and one survey Observation per baseline score
// ("baseline/<instrument>": the instrument's LOINC total code, or its panel
// code for C-SSRS, with valueQuantity {score}).
func (b *builder) intake(r *kap.Intake) error {
	id, val := b.ident("Encounter", "")
	typ := fhir.CC("KAP intake", fhir.Coding(fhir.SystemKAP, "intake", "KAP intake and eligibility screening"))
	for _, c := range r.BillingCodes {
		bc, ok := kap.BillingCodes[c]
		if !ok {
			return kap.Errorf(kap.EINVALID, "billingCodes: %q is not a known billing code", c)
		}
		typ.Coding = append(typ.Coding, fhir.Coding(fhir.BillingSystem(bc.System), c, bc.Display))
	}
	enc := &encpb.Encounter{
		Meta:        fhir.Meta(fhir.ProfileUSCoreEncounter),
		Identifier:  []*dpb.Identifier{id},
		Status:      &encpb.Encounter_StatusCode{Value: cpb.EncounterStatusCode_FINISHED},
		ClassValue:  fhir.Coding(fhir.SystemActCode, "AMB", "ambulatory"),
		Type:        []*dpb.CodeableConcept{typ},
		Subject:     b.m.PatientRef(r.ClientID),
		Participant: []*encpb.Encounter_Participant{{Individual: b.m.PractitionerRef(r.PrescriberID)}},
		Period:      &dpb.Period{Start: fhir.DateTime(r.Date.Time)},
	}
	encURL := b.add(enc, val)
	encRef := func() *dpb.Reference { return fhir.Ref(encURL) }

	for i, ind := range r.Indications {
		cid, cval := b.ident("Condition", fmt.Sprintf("indication/%d", i))
		code := fhir.CC(ikIndicationText[ind.Code],
			fhir.Coding(fhir.SystemICD10CM, ind.ICD10, fhir.ICD10Display[ind.ICD10]))
		if sn := fhir.IndicationSNOMED[ind.Code]; sn.Code != "" {
			code.Coding = append(code.Coding, fhir.Coding(fhir.SystemSNOMED, sn.Code, sn.Display))
		}
		code.Coding = append(code.Coding, fhir.Coding(fhir.SystemKAP, "indication-"+ind.Code, ikIndicationText[ind.Code]))
		b.add(&condpb.Condition{
			Meta:               fhir.Meta(fhir.ProfileUSCoreCondition),
			Identifier:         []*dpb.Identifier{cid},
			ClinicalStatus:     fhir.CC("", fhir.Coding(fhir.SystemConditionClinical, "active", "Active")),
			VerificationStatus: fhir.CC("", fhir.Coding(fhir.SystemConditionVerification, "confirmed", "Confirmed")),
			Category:           []*dpb.CodeableConcept{fhir.CC("", fhir.Coding(fhir.SystemConditionCategory, "encounter-diagnosis", "Encounter Diagnosis"))},
			Code:               code,
			Subject:            b.m.PatientRef(r.ClientID),
			Encounter:          encRef(),
			RecordedDate:       fhir.DateTime(r.Date.Time),
		}, cval)
	}

	sid, sval := b.ident("Observation", "screen")
	screen := &obspb.Observation{
		Identifier: []*dpb.Identifier{sid},
		Status:     &obspb.Observation_StatusCode{Value: cpb.ObservationStatusCode_FINAL},
		Category:   []*dpb.CodeableConcept{fhir.CC("", fhir.Coding(fhir.SystemObservationCategory, "survey", "Survey"))},
		Code:       fhir.CC("Ketamine contraindication screen", fhir.Coding(fhir.SystemKAP, "contraindication-screen", "Ketamine contraindication screen")),
		Subject:    b.m.PatientRef(r.ClientID),
		Encounter:  encRef(),
		Effective:  &obspb.Observation_EffectiveX{Choice: &obspb.Observation_EffectiveX_DateTime{DateTime: fhir.DateTime(r.Date.Time)}},
		Performer:  []*dpb.Reference{b.m.PractitionerRef(r.PrescriberID)},
		Value: &obspb.Observation_ValueX{Choice: &obspb.Observation_ValueX_CodeableConcept{
			CodeableConcept: fhir.CC(r.Screen.Outcome, fhir.Coding(fhir.SystemKAP, "eligibility-"+r.Screen.Outcome, r.Screen.Outcome)),
		}},
	}
	for _, a := range r.Screen.Answers {
		screen.Component = append(screen.Component, &obspb.Observation_Component{
			Code:  fhir.CC(a.Item, fhir.Coding(fhir.SystemKAP, "screen-"+a.Item, a.Item)),
			Value: &obspb.Observation_Component_ValueX{Choice: &obspb.Observation_Component_ValueX_Boolean{Boolean: fhir.Boolean(a.Present)}},
		})
	}
	b.add(screen, sval)

	for i, med := range r.Medications {
		mid, mval := b.ident("MedicationStatement", fmt.Sprintf("medication/%d", i))
		st, ok := ikMedStatus[med.Status]
		if !ok {
			return kap.Errorf(kap.EINVALID, "medications[%d].status: %q has no MedicationStatement status", i, med.Status)
		}
		cc := fhir.CC(med.Name)
		if med.RxNorm != "" {
			cc.Coding = append(cc.Coding, fhir.Coding(fhir.SystemRxNorm, med.RxNorm, ""))
		}
		cc.Coding = append(cc.Coding, fhir.Coding(fhir.SystemKAP, "class-"+med.Class, med.Class))
		b.add(&mspb.MedicationStatement{
			Identifier: []*dpb.Identifier{mid},
			Status:     &mspb.MedicationStatement_StatusCode{Value: st},
			Medication: &mspb.MedicationStatement_MedicationX{Choice: &mspb.MedicationStatement_MedicationX_CodeableConcept{CodeableConcept: cc}},
			Subject:    b.m.PatientRef(r.ClientID),
			Context:    encRef(),
			Effective:  &mspb.MedicationStatement_EffectiveX{Choice: &mspb.MedicationStatement_EffectiveX_DateTime{DateTime: fhir.DateTime(r.Date.Time)}},
		}, mval)
	}

	for _, s := range r.Baseline {
		inst, ok := fhir.Instruments[s.Instrument]
		if !ok {
			return kap.Errorf(kap.EINVALID, "baseline: instrument %q has no FHIR coding", s.Instrument)
		}
		code, disp := inst.TotalCode, inst.TotalDisplay
		if code == "" {
			code, disp = inst.PanelCode, inst.PanelDisplay
		}
		oid, oval := b.ident("Observation", "baseline/"+s.Instrument)
		b.add(&obspb.Observation{
			Identifier: []*dpb.Identifier{oid},
			Status:     &obspb.Observation_StatusCode{Value: cpb.ObservationStatusCode_FINAL},
			Category:   []*dpb.CodeableConcept{fhir.CC("", fhir.Coding(fhir.SystemObservationCategory, "survey", "Survey"))},
			Code:       fhir.CC(s.Instrument+" total score", fhir.Coding(fhir.SystemLOINC, code, disp)),
			Subject:    b.m.PatientRef(r.ClientID),
			Encounter:  encRef(),
			Effective:  &obspb.Observation_EffectiveX{Choice: &obspb.Observation_EffectiveX_DateTime{DateTime: fhir.DateTime(r.Date.Time)}},
			Value: &obspb.Observation_ValueX{Choice: &obspb.Observation_ValueX_Quantity{
				Quantity: fhir.Quantity(float64(s.Total), "score", "{score}")}},
		}, oval)
	}
	return nil
}

var ikIndicationText = map[string]string{
	kap.IndicationTRD:          "Treatment-resistant depression",
	kap.IndicationMDD:          "Major depressive disorder",
	kap.IndicationPTSD:         "Posttraumatic stress disorder",
	kap.IndicationAnxiety:      "Generalized anxiety disorder",
	kap.IndicationSubstanceUse: "Substance use disorder",
	kap.IndicationChronicPain:  "Chronic pain",
}

var ikMedStatus = map[string]cpb.MedicationStatementStatusCodes_Value{
	"active":  cpb.MedicationStatementStatusCodes_ACTIVE,
	"paused":  cpb.MedicationStatementStatusCodes_ON_HOLD,
	"stopped": cpb.MedicationStatementStatusCodes_STOPPED,
}

// ikPartIndex parses the n of "<prefix>/<n>".
func ikPartIndex(part, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(part, prefix+"/")
	if !ok {
		return 0, false
	}
	var n int
	if _, err := fmt.Sscanf(rest, "%d", &n); err != nil || fmt.Sprint(n) != rest {
		return 0, false
	}
	return n, true
}

// ikOrdered returns the resources of a type whose identifier part is
// "<prefix>/<n>", ordered by n.
func (ix *index) ikOrdered(typ, prefix string) []ikPart {
	var out []ikPart
	for _, r := range ix.byType[typ] {
		p, ok := ix.part(r)
		if !ok {
			continue
		}
		if n, ok := ikPartIndex(p, prefix); ok {
			out = append(out, ikPart{n, r})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].n < out[j].n })
	return out
}

type ikPart struct {
	n   int
	res any
}

func (ix *index) intake() (kap.Record, error) {
	enc, ok := ix.withPart("Encounter", "").(*encpb.Encounter)
	if !ok {
		return nil, kap.Errorf(kap.EINVALID, "the Bundle has no Encounter for intake %s", ix.id)
	}
	r := &kap.Intake{Kind: kap.KindIntake, ID: ix.id, Date: at(enc.GetPeriod().GetStart())}
	r.ClientID, _ = ix.m.refID(enc.GetSubject(), kap.KindClient)
	for _, p := range enc.GetParticipant() {
		if pid, ok := ix.m.refID(p.GetIndividual(), kap.KindProvider); ok {
			r.PrescriberID = pid
			break
		}
	}
	for _, t := range enc.GetType() {
		if !fhir.HasCoding(t, fhir.SystemKAP, "intake") {
			continue
		}
		for _, c := range t.GetCoding() {
			if s := c.GetSystem().GetValue(); s == fhir.SystemCPT || s == fhir.SystemHCPCS {
				r.BillingCodes = append(r.BillingCodes, c.GetCode().GetValue())
			}
		}
	}
	for _, p := range ix.ikOrdered("Condition", "indication") {
		c := p.res.(*condpb.Condition)
		code, _ := strings.CutPrefix(fhir.CodeOf(c.GetCode(), fhir.SystemKAP), "indication-")
		r.Indications = append(r.Indications, kap.Indication{Code: code, ICD10: fhir.CodeOf(c.GetCode(), fhir.SystemICD10CM)})
	}
	screen, ok := ix.withPart("Observation", "screen").(*obspb.Observation)
	if !ok {
		return nil, kap.Errorf(kap.EINVALID, "the Bundle has no contraindication-screen Observation for intake %s", ix.id)
	}
	r.Screen.Outcome, _ = strings.CutPrefix(fhir.CodeOf(screen.GetValue().GetCodeableConcept(), fhir.SystemKAP), "eligibility-")
	for i, c := range screen.GetComponent() {
		item, ok := strings.CutPrefix(fhir.CodeOf(c.GetCode(), fhir.SystemKAP), "screen-")
		if !ok || c.GetValue().GetBoolean() == nil {
			return nil, kap.Errorf(kap.EINVALID, "contraindication screen component %d is not a coded yes/no answer", i)
		}
		r.Screen.Answers = append(r.Screen.Answers, kap.ScreenAnswer{Item: item, Present: c.GetValue().GetBoolean().GetValue()})
	}
	for _, p := range ix.ikOrdered("MedicationStatement", "medication") {
		ms := p.res.(*mspb.MedicationStatement)
		cc := ms.GetMedication().GetCodeableConcept()
		m := kap.CurrentMedication{Name: cc.GetText().GetValue(), RxNorm: fhir.CodeOf(cc, fhir.SystemRxNorm)}
		m.Class, _ = strings.CutPrefix(fhir.CodeOf(cc, fhir.SystemKAP), "class-")
		for k, v := range ikMedStatus {
			if v == ms.GetStatus().GetValue() {
				m.Status = k
			}
		}
		r.Medications = append(r.Medications, m)
	}
	// Baselines in the order of kap.Instruments is not the record's order:
	// keep the Bundle's entry order, which is the record's.
	for _, o := range ix.byType["Observation"] {
		p, ok := ix.part(o)
		if !ok {
			continue
		}
		name, ok := strings.CutPrefix(p, "baseline/")
		if !ok {
			continue
		}
		q := o.(*obspb.Observation).GetValue().GetQuantity()
		if q == nil {
			return nil, kap.Errorf(kap.EINVALID, "baseline %s Observation has no valueQuantity", name)
		}
		r.Baseline = append(r.Baseline, kap.ScoreSummary{Instrument: name, Total: int(fhir.DecimalValue(q.GetValue()))})
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return r, nil
}
