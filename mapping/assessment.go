package mapping

import (
	"fmt"

	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	obspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/observation_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// Assessment → ONE Observation (identifier part ""), category survey:
// code = the instrument's LOINC total-score code with valueQuantity {score}
// (C-SSRS has no total code: its panel code, and no value; the total is the
// number of "yes" answers and is recomputed by the reverse). One component
// per item, in order: code = the LOINC item code or local
// "<local>-item-<n>"; value = the LOINC answer (PHQ-9, GAD-7), LA33-6/LA32-8
// (C-SSRS items with a LOINC code), valueBoolean (other C-SSRS items) or
// valueInteger (PCL-5). encounter → the linked session's Encounter.
func (b *builder) assessment(a *kap.Assessment) error {
	inst, ok := fhir.Instruments[a.Instrument]
	if !ok {
		return kap.Errorf(kap.EINVALID, "instrument %q has no FHIR coding", a.Instrument)
	}
	id, val := b.ident("Observation", "")
	o := &obspb.Observation{
		Identifier: []*dpb.Identifier{id},
		Status:     kapFinal(),
		Category:   kapCategory("survey", "Survey"),
		Subject:    b.m.PatientRef(a.ClientID),
		Effective:  kapObsDateTime(a.Date.Time),
	}
	if inst.TotalCode != "" {
		o.Code = fhir.CC(a.Instrument+" total score", fhir.Coding(fhir.SystemLOINC, inst.TotalCode, inst.TotalDisplay))
		o.Value = kapObsQuantity(fhir.Quantity(float64(a.Total), "score", "{score}"))
	} else {
		o.Code = fhir.CC(a.Instrument, fhir.Coding(fhir.SystemLOINC, inst.PanelCode, inst.PanelDisplay))
	}
	switch {
	case a.DosingSessionID != "":
		o.Encounter = b.m.RecordRef("Encounter", kap.KindDosingSession, a.DosingSessionID, "")
	case a.IntegrationSessionID != "":
		o.Encounter = b.m.RecordRef("Encounter", kap.KindIntegrationSession, a.IntegrationSessionID, "")
	}
	for i, x := range a.Items {
		c := &obspb.Observation_Component{Code: kapItemCode(inst, i)}
		switch {
		case inst.AnswerCodes != nil:
			if x < 0 || x >= len(inst.AnswerCodes) {
				return kap.Errorf(kap.EINVALID, "items[%d]: %d has no answer code", i, x)
			}
			ans := inst.AnswerCodes[x]
			c.Value = kapCompCC(fhir.CC(ans.Display, fhir.Coding(fhir.SystemLOINC, ans.Code, ans.Display)))
		case inst.YesNo && i < len(inst.ItemCodes) && inst.ItemCodes[i] != "":
			ans := fhir.AnswerNo
			if x != 0 {
				ans = fhir.AnswerYes
			}
			c.Value = kapCompCC(fhir.CC(ans.Display, fhir.Coding(fhir.SystemLOINC, ans.Code, ans.Display)))
		case inst.YesNo:
			c.Value = kapCompBool(x != 0)
		default:
			c.Value = &obspb.Observation_Component_ValueX{Choice: &obspb.Observation_Component_ValueX_Integer{Integer: fhir.Integer(x)}}
		}
		o.Component = append(o.Component, c)
	}
	b.add(o, val)
	return nil
}

func kapItemCode(inst fhir.Instrument, i int) *dpb.CodeableConcept {
	if i < len(inst.ItemCodes) && inst.ItemCodes[i] != "" {
		return fhir.CC("", fhir.Coding(fhir.SystemLOINC, inst.ItemCodes[i], ""))
	}
	code := fmt.Sprintf("%s-item-%d", inst.Local, i+1)
	return fhir.CC("", fhir.Coding(fhir.SystemKAP, code, ""))
}

func kapCompCC(cc *dpb.CodeableConcept) *obspb.Observation_Component_ValueX {
	return &obspb.Observation_Component_ValueX{Choice: &obspb.Observation_Component_ValueX_CodeableConcept{CodeableConcept: cc}}
}

func (ix *index) assessment() (kap.Record, error) {
	o, ok := ix.withPart("Observation", "").(*obspb.Observation)
	if !ok {
		return nil, kap.Errorf(kap.EINVALID, "the Bundle has no Observation for assessment %s", ix.id)
	}
	a := &kap.Assessment{Kind: kap.KindAssessment, ID: ix.id, Date: at(o.GetEffective().GetDateTime())}
	a.ClientID, _ = ix.m.refID(o.GetSubject(), kap.KindClient)
	code := fhir.CodeOf(o.GetCode(), fhir.SystemLOINC)
	var inst fhir.Instrument
	for name, in := range fhir.Instruments {
		if (in.TotalCode != "" && in.TotalCode == code) || (in.TotalCode == "" && in.PanelCode == code) {
			a.Instrument, inst = name, in
		}
	}
	if a.Instrument == "" {
		return nil, kap.Errorf(kap.EINVALID, "Observation.code: %q is not the code of a known instrument", code)
	}
	if id, ok := ix.m.refID(o.GetEncounter(), kap.KindDosingSession); ok {
		a.DosingSessionID = id
	} else if id, ok := ix.m.refID(o.GetEncounter(), kap.KindIntegrationSession); ok {
		a.IntegrationSessionID = id
	}
	a.Items = []int{}
	for i, c := range o.GetComponent() {
		v := c.GetValue()
		x := -1
		switch {
		case v.GetCodeableConcept() != nil:
			ans := fhir.CodeOf(v.GetCodeableConcept(), fhir.SystemLOINC)
			for n, ac := range inst.AnswerCodes {
				if ac.Code == ans {
					x = n
				}
			}
			switch ans {
			case fhir.AnswerYes.Code:
				x = 1
			case fhir.AnswerNo.Code:
				x = 0
			}
		case v.GetBoolean() != nil:
			x = 0
			if v.GetBoolean().GetValue() {
				x = 1
			}
		case v.GetInteger() != nil:
			x = int(v.GetInteger().GetValue())
		}
		if x < 0 {
			return nil, kap.Errorf(kap.EINVALID, "Observation.component[%d]: no recognised item value", i)
		}
		a.Items = append(a.Items, x)
		a.Total += x
	}
	if q := o.GetValue().GetQuantity(); q != nil {
		a.Total = int(fhir.DecimalValue(q.GetValue()))
	}
	return kapReversed(a)
}
