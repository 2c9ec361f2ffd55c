package mapping

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	aepb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/adverse_event_go_proto"
	encpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/encounter_go_proto"
	mapb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/medication_administration_go_proto"
	medpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/medication_go_proto"
	obspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/observation_go_proto"
	procpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/procedure_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// DosingSession → one Bundle:
//
//   - Encounter (US Core + kap-dosing-encounter; identifier part ""): class
//     AMB, type[0] = local "dosing-session" + one coding per billing code;
//     when the session has a sessionNumber, a second type entry with the
//     local code "plan-session-<n>" (the number of the session within its
//     plan; Encounter has no ordinal element and extensions are avoided);
//     participants = monitoredBy; hospitalization.dischargeDisposition text.
//   - per administration: Medication ("medication/<aid>") and
//     MedicationAdministration ("administration/<aid>"); request → the
//     plan's MedicationRequest ("plan/<planId>/medication-request") when the
//     session has a planId (this is where planId lives).
//   - body weight Observation ("weight"), one Observation per vital-sign
//     reading ("vitals/<UTC stamp>/bp|hr|rr|spo2|temp"), session scores
//     ("score/<n>"), fasting ("fasting"), pre-checks ("pre-checks"),
//     intention ("intention"), discharge readiness ("discharge").
//   - per adverse event: AdverseEvent ("ae/<aeid>") and one Procedure per
//     intervention ("ae/<aeid>/intervention/<n>").
//   - a monitoring Procedure ("monitoring", derived: the reverse ignores it)
//     and the psychotherapy Procedure ("psychotherapy").

// Local codes of the dosing mapping (fhir.SystemKAP; no verified standard
// codes exist for these concepts).
const (
	kapCodeDosingSession   = "dosing-session"
	kapCodePlanSession     = "plan-session-"
	kapCodeFasting         = "fasting-duration"
	kapCodePreChecks       = "pre-session-checklist"
	kapCodeCheck           = "check-"
	kapCodeIntention       = "session-intention"
	kapCodeDischarge       = "discharge-readiness"
	kapCodeCriteriaMet     = "criteria-met"
	kapCodeEscortPresent   = "escort-present"
	kapCodeReleasedTo      = "released-to"
	kapCodeAEIntervention  = "ae-intervention"
	kapCodeProductPrefix   = "product-"
	kapCodeAEPrefix        = "ae-"
	kapCodeMonitoring      = "session-monitoring"
	kapCodePsychotherapy   = "psychotherapy"
	kapDispositionEscort   = "Home with escort"
	kapDispositionNoEscort = "Home without escort"
)

var kapScoreCodes = map[string]fhir.Answer{
	kap.ScoreCADSS: {Code: "cadss", Display: "Clinician-Administered Dissociative States Scale (CADSS) score"},
	kap.ScoreMOAAS: {Code: "moaas", Display: "Modified Observer's Assessment of Alertness/Sedation (MOAA/S) score"},
}

// Category codings (codes.md §1b, §2: VERIFIED).
func kapCategory(code, display string) []*dpb.CodeableConcept {
	return []*dpb.CodeableConcept{fhir.CC("", fhir.Coding(fhir.SystemObservationCategory, code, display))}
}

func kapLocalCC(code, display string) *dpb.CodeableConcept {
	return fhir.CC(display, fhir.Coding(fhir.SystemKAP, code, display))
}

func kapObsDateTime(t time.Time) *obspb.Observation_EffectiveX {
	return &obspb.Observation_EffectiveX{Choice: &obspb.Observation_EffectiveX_DateTime{DateTime: fhir.DateTime(t)}}
}

func kapObsQuantity(q *dpb.Quantity) *obspb.Observation_ValueX {
	return &obspb.Observation_ValueX{Choice: &obspb.Observation_ValueX_Quantity{Quantity: q}}
}

func kapCompQuantity(q *dpb.Quantity) *obspb.Observation_Component_ValueX {
	return &obspb.Observation_Component_ValueX{Choice: &obspb.Observation_Component_ValueX_Quantity{Quantity: q}}
}

func kapCompBool(v bool) *obspb.Observation_Component_ValueX {
	return &obspb.Observation_Component_ValueX{Choice: &obspb.Observation_Component_ValueX_Boolean{Boolean: fhir.Boolean(v)}}
}

func kapCompString(s string) *obspb.Observation_Component_ValueX {
	return &obspb.Observation_Component_ValueX{Choice: &obspb.Observation_Component_ValueX_StringValue{StringValue: fhir.String(s)}}
}

func kapFinal() *obspb.Observation_StatusCode {
	return &obspb.Observation_StatusCode{Value: cpb.ObservationStatusCode_FINAL}
}

// kapBillingCodings returns one Coding per billing code.
func kapBillingCodings(codes []string) []*dpb.Coding {
	var out []*dpb.Coding
	for _, c := range codes {
		bc := kap.BillingCodes[c]
		out = append(out, fhir.Coding(fhir.BillingSystem(bc.System), c, bc.Display))
	}
	return out
}

// kapBillingFrom returns the CPT and HCPCS codes of a concept, in order.
func kapBillingFrom(cc *dpb.CodeableConcept) []string {
	var out []string
	for _, c := range cc.GetCoding() {
		s := c.GetSystem().GetValue()
		if s == fhir.SystemCPT || s == fhir.SystemHCPCS {
			out = append(out, c.GetCode().GetValue())
		}
	}
	return out
}

// kapPsychotherapyProcedure builds the psychotherapy Procedure of a session.
func (b *builder) kapPsychotherapyProcedure(part, code string, minutes int, therapist string, start, end time.Time, enc string) {
	id, val := b.ident("Procedure", part)
	cc := fhir.CC("Psychotherapy", fhir.Coding(fhir.SystemKAP, kapCodePsychotherapy, "Psychotherapy"))
	if code != "" {
		bc := kap.BillingCodes[code]
		cc.Coding = append([]*dpb.Coding{fhir.Coding(fhir.BillingSystem(bc.System), code, bc.Display)}, cc.Coding...)
	}
	b.add(&procpb.Procedure{
		Meta:       fhir.Meta(fhir.ProfileUSCoreProcedure),
		Extension:  []*dpb.Extension{fhir.Extension(fhir.ExtMinutes, fhir.ExtInteger(minutes))},
		Identifier: []*dpb.Identifier{id},
		Status:     &procpb.Procedure_StatusCode{Value: cpb.EventStatusCode_COMPLETED},
		Code:       cc,
		Subject:    b.m.PatientRef(b.rec.RecordClientID()),
		Encounter:  fhir.Ref(enc),
		Performed:  &procpb.Procedure_PerformedX{Choice: &procpb.Procedure_PerformedX_Period{Period: fhir.Period(start, end)}},
		Performer:  []*procpb.Procedure_Performer{{Actor: b.m.PractitionerRef(therapist)}},
	}, val)
}

// kapMinutes returns the psychotherapy minutes of a Procedure.
func kapMinutes(p *procpb.Procedure) int {
	e := fhir.FindExtension(p.GetExtension(), fhir.ExtMinutes)
	return int(e.GetValue().GetInteger().GetValue())
}

// kapVitalStamp is the time part of a vital-sign identifier.
func kapVitalStamp(t time.Time) string {
	return t.UTC().Format("20060102T150405.999999999Z")
}

func (b *builder) dosing(s *kap.DosingSession) error {
	subject := b.m.PatientRef(s.ClientID)
	encID, encVal := b.ident("Encounter", "")
	typ := fhir.CC("KAP dosing session", append([]*dpb.Coding{fhir.Coding(fhir.SystemKAP, kapCodeDosingSession, "KAP dosing session")},
		kapBillingCodings(s.BillingCodes)...)...)
	enc := &encpb.Encounter{
		Meta:       fhir.Meta(fhir.ProfileUSCoreEncounter, fhir.ProfileKAPDosingEncounter),
		Identifier: []*dpb.Identifier{encID},
		Status:     &encpb.Encounter_StatusCode{Value: cpb.EncounterStatusCode_FINISHED},
		ClassValue: fhir.Coding(fhir.SystemActCode, "AMB", "ambulatory"),
		Type:       []*dpb.CodeableConcept{typ},
		Subject:    subject,
		Period:     fhir.Period(s.Start.Time, s.End.Time),
	}
	if s.SessionNumber > 0 {
		d := fmt.Sprintf("Session %d of the treatment plan", s.SessionNumber)
		enc.Type = append(enc.Type, kapLocalCC(kapCodePlanSession+strconv.Itoa(s.SessionNumber), d))
	}
	for _, p := range s.MonitoredBy {
		enc.Participant = append(enc.Participant, &encpb.Encounter_Participant{Individual: b.m.PractitionerRef(p)})
	}
	disp := kapDispositionNoEscort
	if s.Discharge.EscortPresent {
		disp = kapDispositionEscort
	}
	enc.Hospitalization = &encpb.Encounter_Hospitalization{DischargeDisposition: fhir.CC(disp)}
	encURL := b.add(enc, encVal)
	encRef := func() *dpb.Reference { return fhir.Ref(encURL) }

	// Administrations.
	var firstMA string
	for i, a := range s.Administrations {
		aid := s.AdministrationID(i)
		prod := fhir.Products[a.Product]
		code := fhir.CC(prod.Text)
		if prod.RxNorm != "" {
			code.Coding = append(code.Coding, fhir.Coding(fhir.SystemRxNorm, prod.RxNorm, prod.RxNormDisplay))
		}
		code.Coding = append(code.Coding, fhir.Coding(fhir.SystemKAP, kapCodeProductPrefix+a.Product, prod.Text))
		mid, mval := b.ident("Medication", "medication/"+aid)
		med := &medpb.Medication{
			Meta:       fhir.Meta(fhir.ProfileUSCoreMedication),
			Identifier: []*dpb.Identifier{mid},
			Code:       code,
			Form:       fhir.CC(prod.Form),
		}
		if a.LotNumber != "" {
			med.Batch = &medpb.Medication_Batch{LotNumber: fhir.String(a.LotNumber)}
		}
		medURL := b.add(med, mval)

		route := fhir.Routes[a.Route]
		dosage := &mapb.MedicationAdministration_Dosage{
			Route: fhir.CC("", fhir.Coding(fhir.SystemSNOMED, route.Code, route.Display)),
			Dose:  fhir.SimpleQuantity(a.DoseMg, "mg", "mg"),
			Text:  fhir.String(kapDoseText(a)),
		}
		if a.DoseMgPerKg != 0 {
			dosage.Extension = append(dosage.Extension, fhir.Extension(fhir.ExtDosePerKg, fhir.ExtQuantity(fhir.Quantity(a.DoseMgPerKg, "mg/kg", "mg/kg"))))
		}
		if a.RateMgPerKgPerHour != 0 {
			dosage.Rate = &mapb.MedicationAdministration_Dosage_RateX{Choice: &mapb.MedicationAdministration_Dosage_RateX_Quantity{
				Quantity: fhir.SimpleQuantity(a.RateMgPerKgPerHour, "mg/kg/h", "mg/kg/h")}}
		}
		aID, aVal := b.ident("MedicationAdministration", "administration/"+aid)
		ma := &mapb.MedicationAdministration{
			Meta:       fhir.Meta(fhir.ProfileKAPDosingAdministration),
			Identifier: []*dpb.Identifier{aID},
			Status:     &mapb.MedicationAdministration_StatusCode{Value: cpb.MedicationAdministrationStatusCode_COMPLETED},
			Medication: &mapb.MedicationAdministration_MedicationX{Choice: &mapb.MedicationAdministration_MedicationX_Reference{Reference: fhir.Ref(medURL)}},
			Subject:    subject,
			Context:    encRef(),
			Performer:  []*mapb.MedicationAdministration_Performer{{Actor: b.m.PractitionerRef(a.AdministeredBy)}},
			Dosage:     dosage,
		}
		if a.Stop.IsZero() {
			ma.Effective = &mapb.MedicationAdministration_EffectiveX{Choice: &mapb.MedicationAdministration_EffectiveX_DateTime{DateTime: fhir.DateTime(a.Start.Time)}}
		} else {
			ma.Effective = &mapb.MedicationAdministration_EffectiveX{Choice: &mapb.MedicationAdministration_EffectiveX_Period{Period: fhir.Period(a.Start.Time, a.Stop.Time)}}
		}
		if s.PlanID != "" {
			ma.Request = b.m.RecordRef("MedicationRequest", kap.KindTreatmentPlan, s.PlanID, "medication-request")
		}
		u := b.add(ma, aVal)
		if firstMA == "" {
			firstMA = u
		}
	}

	// Body weight.
	b.kapObservation(&obspb.Observation{
		Meta:      fhir.Meta(fhir.ProfileVitalSigns, fhir.ProfileBodyWeight),
		Category:  kapCategory("vital-signs", "Vital Signs"),
		Code:      kapLOINC(fhir.LOINCBodyWeight),
		Effective: kapObsDateTime(s.Start.Time),
		Value:     kapObsQuantity(fhir.Quantity(s.WeightKg, "kg", "kg")),
	}, "weight", encURL)

	// Vital signs: one Observation per reading.
	for _, v := range s.Vitals {
		stamp := "vitals/" + kapVitalStamp(v.Time.Time) + "/"
		vital := func(part string, profiles []string, code *dpb.CodeableConcept, q *dpb.Quantity) *obspb.Observation {
			o := &obspb.Observation{
				Meta:      fhir.Meta(append([]string{fhir.ProfileVitalSigns}, profiles...)...),
				Category:  kapCategory("vital-signs", "Vital Signs"),
				Code:      code,
				Effective: kapObsDateTime(v.Time.Time),
			}
			if q != nil {
				o.Value = kapObsQuantity(q)
			}
			return o
		}
		if v.Systolic != 0 {
			o := vital("bp", []string{fhir.ProfileUSCoreBloodPressure}, kapLOINC(fhir.LOINCBloodPressure), nil)
			o.Component = []*obspb.Observation_Component{
				{Code: kapLOINC(fhir.LOINCSystolic), Value: kapCompQuantity(fhir.Quantity(v.Systolic, "mmHg", "mm[Hg]"))},
				{Code: kapLOINC(fhir.LOINCDiastolic), Value: kapCompQuantity(fhir.Quantity(v.Diastolic, "mmHg", "mm[Hg]"))},
			}
			b.kapObservation(o, stamp+"bp", encURL)
		}
		if v.HeartRate != 0 {
			b.kapObservation(vital("hr", []string{fhir.ProfileHeartRate}, kapLOINC(fhir.LOINCHeartRate),
				fhir.Quantity(v.HeartRate, "beats/minute", "/min")), stamp+"hr", encURL)
		}
		if v.RespRate != 0 {
			b.kapObservation(vital("rr", []string{fhir.ProfileRespRate}, kapLOINC(fhir.LOINCRespRate),
				fhir.Quantity(v.RespRate, "breaths/minute", "/min")), stamp+"rr", encURL)
		}
		if v.SpO2 != 0 {
			code := kapLOINC(fhir.LOINCPulseOx)
			code.Coding = append(code.Coding, fhir.Coding(fhir.SystemLOINC, fhir.LOINCO2Sat, fhir.LOINCDisplay[fhir.LOINCO2Sat]))
			b.kapObservation(vital("spo2", []string{fhir.ProfileUSCorePulseOximetry, fhir.ProfileOxygenSat}, code,
				fhir.Quantity(v.SpO2, "%", "%")), stamp+"spo2", encURL)
		}
		if v.TempC != 0 {
			b.kapObservation(vital("temp", []string{fhir.ProfileBodyTemp}, kapLOINC(fhir.LOINCBodyTemp),
				fhir.Quantity(v.TempC, "C", "Cel")), stamp+"temp", encURL)
		}
	}

	// Session scores.
	for i, sc := range s.Scores {
		c := kapScoreCodes[sc.Instrument]
		b.kapObservation(&obspb.Observation{
			Meta:      fhir.Meta(fhir.ProfileKAPSessionScore),
			Category:  kapCategory("survey", "Survey"),
			Code:      kapLocalCC(c.Code, c.Display),
			Effective: kapObsDateTime(sc.Time.Time),
			Value:     kapObsQuantity(fhir.Quantity(sc.Value, "score", "{score}")),
		}, "score/"+strconv.Itoa(i+1), encURL)
	}

	// Fasting, pre-checks, intention, discharge readiness.
	b.kapObservation(&obspb.Observation{
		Code:      kapLocalCC(kapCodeFasting, "Fasting duration before the session"),
		Effective: kapObsDateTime(s.Start.Time),
		Value:     kapObsQuantity(fhir.Quantity(s.FastingHours, "h", "h")),
	}, "fasting", encURL)
	if len(s.PreChecks) > 0 {
		o := &obspb.Observation{
			Code:      kapLocalCC(kapCodePreChecks, "Pre-session checklist"),
			Effective: kapObsDateTime(s.Start.Time),
		}
		for _, c := range s.PreChecks {
			o.Component = append(o.Component, &obspb.Observation_Component{
				Code: kapLocalCC(kapCodeCheck+c.Item, c.Item), Value: kapCompBool(c.Passed)})
		}
		b.kapObservation(o, "pre-checks", encURL)
	}
	if s.Intention != "" {
		b.kapObservation(&obspb.Observation{
			Code:      kapLocalCC(kapCodeIntention, "Session intention"),
			Effective: kapObsDateTime(s.Start.Time),
			Value:     &obspb.Observation_ValueX{Choice: &obspb.Observation_ValueX_StringValue{StringValue: fhir.String(s.Intention)}},
		}, "intention", encURL)
	}
	dis := &obspb.Observation{
		Code:      kapLocalCC(kapCodeDischarge, "Discharge readiness"),
		Effective: kapObsDateTime(s.Discharge.Time.Time),
		Component: []*obspb.Observation_Component{
			{Code: kapLocalCC(kapCodeCriteriaMet, "Discharge criteria met"), Value: kapCompBool(s.Discharge.CriteriaMet)},
			{Code: kapLocalCC(kapCodeEscortPresent, "Escort present at discharge"), Value: kapCompBool(s.Discharge.EscortPresent)},
		},
	}
	if s.Discharge.ReleasedTo != "" {
		dis.Component = append(dis.Component, &obspb.Observation_Component{
			Code: kapLocalCC(kapCodeReleasedTo, "Released to"), Value: kapCompString(s.Discharge.ReleasedTo)})
	}
	b.kapObservation(dis, "discharge", encURL)

	// Adverse events and their interventions.
	for i, ae := range s.AdverseEvents {
		aeid := s.AdverseEventID(i)
		event := kapAEConcept(ae.Event)
		id, val := b.ident("AdverseEvent", "ae/"+aeid)
		ser := fhir.Coding(fhir.SystemAESeriousness, "Non-serious", "Non-serious")
		if ae.Serious {
			ser = fhir.Coding(fhir.SystemAESeriousness, "Serious", "Serious")
		}
		a := &aepb.AdverseEvent{
			Identifier:  id,
			Actuality:   &aepb.AdverseEvent_ActualityCode{Value: cpb.AdverseEventActualityCode_ACTUAL},
			Event:       event,
			Subject:     subject,
			Encounter:   encRef(),
			Date:        fhir.DateTime(ae.Time.Time),
			Seriousness: fhir.CC("", ser),
			Severity:    fhir.CC("", fhir.Coding(fhir.SystemAESeverity, ae.Severity, kapTitle(ae.Severity))),
			Outcome:     fhir.CC("", fhir.Coding(fhir.SystemAEOutcome, ae.Outcome, kapTitle(ae.Outcome))),
		}
		if firstMA != "" {
			a.SuspectEntity = []*aepb.AdverseEvent_SuspectEntity{{Instance: fhir.Ref(firstMA)}}
		}
		b.add(a, val)
		for j, in := range ae.Interventions {
			pid, pval := b.ident("Procedure", fmt.Sprintf("ae/%s/intervention/%d", aeid, j+1))
			b.add(&procpb.Procedure{
				Meta:       fhir.Meta(fhir.ProfileUSCoreProcedure),
				Identifier: []*dpb.Identifier{pid},
				Status:     &procpb.Procedure_StatusCode{Value: cpb.EventStatusCode_COMPLETED},
				Code:       fhir.CC(in.Description, fhir.Coding(fhir.SystemKAP, kapCodeAEIntervention, "Intervention for an adverse event")),
				Subject:    subject,
				Encounter:  encRef(),
				Performed:  &procpb.Procedure_PerformedX{Choice: &procpb.Procedure_PerformedX_DateTime{DateTime: fhir.DateTime(in.Time.Time)}},
				ReasonCode: []*dpb.CodeableConcept{kapAEConcept(ae.Event)},
			}, pval)
		}
	}

	// Monitoring (derived from billing codes; the reverse ignores it).
	mon := fhir.CC("KAP dosing session monitoring", fhir.Coding(fhir.SystemKAP, kapCodeMonitoring, "KAP dosing session monitoring"))
	for _, c := range s.BillingCodes {
		if c == "0820T" || c == "G2082" || c == "G2083" {
			bc := kap.BillingCodes[c]
			mon.Coding = append([]*dpb.Coding{fhir.Coding(fhir.BillingSystem(bc.System), c, bc.Display)}, mon.Coding...)
			break
		}
	}
	mid, mval := b.ident("Procedure", "monitoring")
	mp := &procpb.Procedure{
		Meta:       fhir.Meta(fhir.ProfileUSCoreProcedure),
		Identifier: []*dpb.Identifier{mid},
		Status:     &procpb.Procedure_StatusCode{Value: cpb.EventStatusCode_COMPLETED},
		Code:       mon,
		Subject:    subject,
		Encounter:  encRef(),
		Performed:  &procpb.Procedure_PerformedX{Choice: &procpb.Procedure_PerformedX_Period{Period: fhir.Period(s.Start.Time, s.End.Time)}},
	}
	for _, p := range s.MonitoredBy {
		mp.Performer = append(mp.Performer, &procpb.Procedure_Performer{Actor: b.m.PractitionerRef(p)})
	}
	b.add(mp, mval)

	if pt := s.Psychotherapy; pt != nil {
		b.kapPsychotherapyProcedure("psychotherapy", kap.PsychotherapyCode(pt.Minutes), pt.Minutes, pt.TherapistID, s.Start.Time, s.End.Time, encURL)
	}
	return nil
}

// kapObservation completes an Observation (identifier, status, subject,
// encounter) and adds it.
func (b *builder) kapObservation(o *obspb.Observation, part, encURL string) {
	id, val := b.ident("Observation", part)
	o.Identifier = []*dpb.Identifier{id}
	o.Status = kapFinal()
	o.Subject = b.m.PatientRef(b.rec.RecordClientID())
	if encURL != "" {
		o.Encounter = fhir.Ref(encURL)
	}
	b.add(o, val)
}

func kapLOINC(code string) *dpb.CodeableConcept {
	return fhir.CC("", fhir.Coding(fhir.SystemLOINC, code, fhir.LOINCDisplay[code]))
}

// kapAEConcept codes an adverse-event kind: SNOMED when codes.md has a
// verified concept, always the local "ae-<kind>" (which the reverse reads).
func kapAEConcept(kind string) *dpb.CodeableConcept {
	cc := fhir.CC(kind)
	if a, ok := fhir.AdverseEventCodes[kind]; ok && a.Code != "" {
		cc.Text = fhir.String(a.Display)
		cc.Coding = append(cc.Coding, fhir.Coding(fhir.SystemSNOMED, a.Code, a.Display))
	}
	cc.Coding = append(cc.Coding, fhir.Coding(fhir.SystemKAP, kapCodeAEPrefix+kind, kind))
	return cc
}

func kapTitle(s string) string {
	if s == "" {
		return ""
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// kapDoseText is a human sentence for Dosage.text.
func kapDoseText(a kap.Administration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s mg %s", strconv.FormatFloat(a.DoseMg, 'f', -1, 64), a.Route)
	if a.DoseMgPerKg != 0 {
		fmt.Fprintf(&b, " (%s mg/kg)", strconv.FormatFloat(a.DoseMgPerKg, 'f', -1, 64))
	}
	if a.RateMgPerKgPerHour != 0 {
		fmt.Fprintf(&b, " at %s mg/kg/h", strconv.FormatFloat(a.RateMgPerKgPerHour, 'f', -1, 64))
	}
	if !a.Stop.IsZero() {
		fmt.Fprintf(&b, " over %s", a.Stop.Sub(a.Start.Time).Round(time.Second))
	}
	return b.String()
}

func (ix *index) dosing() (kap.Record, error) {
	enc, ok := ix.withPart("Encounter", "").(*encpb.Encounter)
	if !ok {
		return nil, kap.Errorf(kap.EINVALID, "the Bundle has no Encounter for dosing session %s", ix.id)
	}
	s := &kap.DosingSession{Kind: kap.KindDosingSession, ID: ix.id}
	s.ClientID, _ = ix.m.refID(enc.GetSubject(), kap.KindClient)
	s.Start, s.End = at(enc.GetPeriod().GetStart()), at(enc.GetPeriod().GetEnd())
	for i, t := range enc.GetType() {
		if i == 0 {
			s.BillingCodes = kapBillingFrom(t)
			continue
		}
		if n, ok := strings.CutPrefix(fhir.CodeOf(t, fhir.SystemKAP), kapCodePlanSession); ok {
			s.SessionNumber, _ = strconv.Atoi(n)
		}
	}
	for _, p := range enc.GetParticipant() {
		if id, ok := ix.m.refID(p.GetIndividual(), kap.KindProvider); ok {
			s.MonitoredBy = append(s.MonitoredBy, id)
		}
	}

	// Medications and administrations, in Bundle order.
	for _, r := range ix.byType["MedicationAdministration"] {
		ma := r.(*mapb.MedicationAdministration)
		part, ok := ix.part(ma)
		aid, ok2 := strings.CutPrefix(part, "administration/")
		if !ok || !ok2 {
			continue
		}
		a := kap.Administration{ID: aid}
		if n := len(s.Administrations); aid == fmt.Sprintf("a%d", n+1) {
			a.ID = "" // the default id: the record did not name it
		}
		if s.PlanID == "" {
			s.PlanID, _ = ix.m.refID(ma.GetRequest(), kap.KindTreatmentPlan)
		}
		if p := ma.GetEffective().GetPeriod(); p != nil {
			a.Start, a.Stop = at(p.GetStart()), at(p.GetEnd())
		} else {
			a.Start = at(ma.GetEffective().GetDateTime())
		}
		if pf := ma.GetPerformer(); len(pf) > 0 {
			a.AdministeredBy, _ = ix.m.refID(pf[0].GetActor(), kap.KindProvider)
		}
		d := ma.GetDosage()
		sn := fhir.CodeOf(d.GetRoute(), fhir.SystemSNOMED)
		for r, c := range fhir.Routes {
			if c.Code == sn {
				a.Route = r
			}
		}
		a.DoseMg = fhir.DecimalValue(d.GetDose().GetValue())
		a.RateMgPerKgPerHour = fhir.DecimalValue(d.GetRate().GetQuantity().GetValue())
		if e := fhir.FindExtension(d.GetExtension(), fhir.ExtDosePerKg); e != nil {
			a.DoseMgPerKg = fhir.DecimalValue(e.GetValue().GetQuantity().GetValue())
		}
		med, _ := ix.resolve(ma.GetMedication().GetReference()).(*medpb.Medication)
		if med == nil {
			return nil, kap.Errorf(kap.EINVALID, "MedicationAdministration %s: its Medication is not in the Bundle", part)
		}
		a.Product, _ = strings.CutPrefix(fhir.CodeOf(med.GetCode(), fhir.SystemKAP), kapCodeProductPrefix)
		a.LotNumber = med.GetBatch().GetLotNumber().GetValue()
		s.Administrations = append(s.Administrations, a)
	}

	// Observations.
	vitalsAt := map[int64]int{}
	for _, r := range ix.byType["Observation"] {
		o := r.(*obspb.Observation)
		part, ok := ix.part(o)
		if !ok {
			continue
		}
		t := at(o.GetEffective().GetDateTime())
		q := fhir.DecimalValue(o.GetValue().GetQuantity().GetValue())
		switch {
		case part == "weight":
			s.WeightKg = q
		case strings.HasPrefix(part, "vitals/"):
			k := t.UnixNano()
			i, seen := vitalsAt[k]
			if !seen {
				i = len(s.Vitals)
				vitalsAt[k] = i
				s.Vitals = append(s.Vitals, kap.VitalSigns{Time: t})
			}
			v := &s.Vitals[i]
			switch part[strings.LastIndexByte(part, '/')+1:] {
			case "bp":
				for _, c := range o.GetComponent() {
					x := fhir.DecimalValue(c.GetValue().GetQuantity().GetValue())
					switch fhir.CodeOf(c.GetCode(), fhir.SystemLOINC) {
					case fhir.LOINCSystolic:
						v.Systolic = x
					case fhir.LOINCDiastolic:
						v.Diastolic = x
					}
				}
			case "hr":
				v.HeartRate = q
			case "rr":
				v.RespRate = q
			case "spo2":
				v.SpO2 = q
			case "temp":
				v.TempC = q
			}
		case strings.HasPrefix(part, "score/"):
			code := fhir.CodeOf(o.GetCode(), fhir.SystemKAP)
			for inst, c := range kapScoreCodes {
				if c.Code == code {
					s.Scores = append(s.Scores, kap.SessionScore{Time: t, Instrument: inst, Value: q})
				}
			}
		case part == "fasting":
			s.FastingHours = q
		case part == "pre-checks":
			for _, c := range o.GetComponent() {
				item, _ := strings.CutPrefix(fhir.CodeOf(c.GetCode(), fhir.SystemKAP), kapCodeCheck)
				s.PreChecks = append(s.PreChecks, kap.Check{Item: item, Passed: c.GetValue().GetBoolean().GetValue()})
			}
		case part == "intention":
			s.Intention = o.GetValue().GetStringValue().GetValue()
		case part == "discharge":
			s.Discharge.Time = t
			for _, c := range o.GetComponent() {
				switch fhir.CodeOf(c.GetCode(), fhir.SystemKAP) {
				case kapCodeCriteriaMet:
					s.Discharge.CriteriaMet = c.GetValue().GetBoolean().GetValue()
				case kapCodeEscortPresent:
					s.Discharge.EscortPresent = c.GetValue().GetBoolean().GetValue()
				case kapCodeReleasedTo:
					s.Discharge.ReleasedTo = c.GetValue().GetStringValue().GetValue()
				}
			}
		}
	}

	// Adverse events and interventions.
	interventions := map[string][]kapNumbered{}
	for _, r := range ix.byType["Procedure"] {
		p := r.(*procpb.Procedure)
		part, ok := ix.part(p)
		if !ok {
			continue
		}
		if part == "psychotherapy" {
			s.Psychotherapy = &kap.Psychotherapy{Minutes: kapMinutes(p)}
			if pf := p.GetPerformer(); len(pf) > 0 {
				s.Psychotherapy.TherapistID, _ = ix.m.refID(pf[0].GetActor(), kap.KindProvider)
			}
			continue
		}
		rest, ok := strings.CutPrefix(part, "ae/")
		if !ok {
			continue
		}
		aeid, n, ok := strings.Cut(rest, "/intervention/")
		if !ok {
			continue
		}
		num, err := strconv.Atoi(n)
		if err != nil {
			return nil, kap.Errorf(kap.EINVALID, "Procedure %s: bad intervention number", part)
		}
		interventions[aeid] = append(interventions[aeid], kapNumbered{num, kap.Intervention{
			Time: at(p.GetPerformed().GetDateTime()), Description: p.GetCode().GetText().GetValue()}})
	}
	for _, r := range ix.byType["AdverseEvent"] {
		a := r.(*aepb.AdverseEvent)
		part, ok := ix.part(a)
		aeid, ok2 := strings.CutPrefix(part, "ae/")
		if !ok || !ok2 {
			continue
		}
		ae := kap.AdverseEvent{ID: aeid, Time: at(a.GetDate())}
		if aeid == fmt.Sprintf("ae%d", len(s.AdverseEvents)+1) {
			ae.ID = ""
		}
		ae.Event, _ = strings.CutPrefix(fhir.CodeOf(a.GetEvent(), fhir.SystemKAP), kapCodeAEPrefix)
		ae.Severity = fhir.CodeOf(a.GetSeverity(), fhir.SystemAESeverity)
		ae.Outcome = fhir.CodeOf(a.GetOutcome(), fhir.SystemAEOutcome)
		ae.Serious = fhir.CodeOf(a.GetSeriousness(), fhir.SystemAESeriousness) == "Serious"
		ins := interventions[aeid]
		sort.Slice(ins, func(i, j int) bool { return ins[i].n < ins[j].n })
		for _, in := range ins {
			ae.Interventions = append(ae.Interventions, in.v)
		}
		s.AdverseEvents = append(s.AdverseEvents, ae)
	}
	return kapReversed(s)
}

type kapNumbered struct {
	n int
	v kap.Intervention
}
