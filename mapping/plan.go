package mapping

import (
	"fmt"
	"strings"
	"time"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	cppb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/care_plan_go_proto"
	goalpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/goal_go_proto"
	mrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/medication_request_go_proto"
	vspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/valuesets_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// TreatmentPlan → a US Core CarePlan (identifier part ""; generated
// narrative, intent plan, category assess-plan, period start–end, author
// the prescriber; one Appointment activity per session schedule, coded
// local "sessions-<kind>" with scheduledTiming repeat{count, period
// intervalDays d}; one activity referencing the MedicationRequest), a US
// Core Goal per goal ("goal/<id>": target measure = the instrument's LOINC
// total code (C-SSRS: its panel code), detailQuantity with the comparator in
// {score}, dueDate) and the ketamine order as a US Core MedicationRequest
// ("medication-request", which dosing sessions reference): product as
// RxNorm where codes.md verifies one plus local "product-<product>" and
// text; dosageInstruction text = frequency, route SNOMED, doseQuantity in
// UCUM mg or mg/kg, maxDosePerAdministration in mg.
func (b *builder) plan(p *kap.TreatmentPlan) error {
	status, ok := plCarePlanStatus[p.Status]
	if !ok {
		return kap.Errorf(kap.EINVALID, "status: %q has no CarePlan status", p.Status)
	}
	prod, ok := fhir.Products[p.Order.Product]
	if !ok {
		return kap.Errorf(kap.EINVALID, "order.product: %q has no FHIR coding", p.Order.Product)
	}
	route, ok := fhir.Routes[p.Order.Route]
	if !ok {
		return kap.Errorf(kap.EINVALID, "order.route: %q has no FHIR coding", p.Order.Route)
	}
	id, val := b.ident("CarePlan", "")
	cp := &cppb.CarePlan{
		Meta:       fhir.Meta(fhir.ProfileUSCoreCarePlan),
		Identifier: []*dpb.Identifier{id},
		Status:     &cppb.CarePlan_StatusCode{Value: status},
		Intent:     &cppb.CarePlan_IntentCode{Value: vspb.CarePlanIntentValueSet_PLAN},
		Category:   []*dpb.CodeableConcept{fhir.CC("", fhir.Coding(fhir.SystemCarePlanCategory, "assess-plan", "Assessment and Plan of Treatment"))},
		Title:      fhir.String("Ketamine-assisted psychotherapy course"),
		Subject:    b.m.PatientRef(p.ClientID),
		Period:     &dpb.Period{Start: plDay(p.Start), End: plDay(p.End)},
		Created:    fhir.DateTime(p.Created.Time),
		Author:     b.m.PractitionerRef(p.PrescriberID),
	}
	lines := []string{fmt.Sprintf("Ketamine-assisted psychotherapy course, %s, from %s", p.Status, p.Start)}
	if p.End != "" {
		lines[0] += " to " + string(p.End)
	}
	for _, s := range plSchedules(p) {
		if s.sched.Count == 0 && s.sched.IntervalDays == 0 {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s sessions: %d, every %d days", s.display, s.sched.Count, s.sched.IntervalDays))
		rep := &dpb.Timing_Repeat{}
		if s.sched.Count > 0 {
			rep.Count = fhir.PositiveInt(s.sched.Count)
		}
		if s.sched.IntervalDays > 0 {
			rep.Period = fhir.Decimal(float64(s.sched.IntervalDays))
			rep.PeriodUnit = &dpb.Timing_Repeat_PeriodUnitCode{Value: vspb.UnitsOfTimeValueSet_D}
		}
		cp.Activity = append(cp.Activity, &cppb.CarePlan_Activity{Detail: &cppb.CarePlan_Activity_Detail{
			Kind:   &cppb.CarePlan_Activity_Detail_KindCode{Value: vspb.CarePlanActivityKindValueSet_APPOINTMENT},
			Code:   fhir.CC(s.display+" sessions", fhir.Coding(fhir.SystemKAP, "sessions-"+s.code, s.display+" sessions")),
			Status: &cppb.CarePlan_Activity_Detail_StatusCode{Value: cpb.CarePlanActivityStatusCode_NOT_STARTED},
			Scheduled: &cppb.CarePlan_Activity_Detail_ScheduledX{Choice: &cppb.CarePlan_Activity_Detail_ScheduledX_Timing{
				Timing: &dpb.Timing{Repeat: rep}}},
		}})
	}

	// Goals.
	var goalURLs []string
	for i, g := range p.Goals {
		gid, gval := b.ident("Goal", "goal/"+g.ID)
		goal := &goalpb.Goal{
			Meta:            fhir.Meta(fhir.ProfileUSCoreGoal),
			Identifier:      []*dpb.Identifier{gid},
			LifecycleStatus: &goalpb.Goal_LifecycleStatusCode{Value: cpb.GoalLifecycleStatusCode_ACTIVE},
			Description:     fhir.CC(g.Description),
			Subject:         b.m.PatientRef(p.ClientID),
		}
		t := &goalpb.Goal_Target{}
		if g.Instrument != "" {
			inst, ok := fhir.Instruments[g.Instrument]
			if !ok {
				return kap.Errorf(kap.EINVALID, "goals[%d].instrument: %q has no FHIR coding", i, g.Instrument)
			}
			cmp, ok := plComparators[g.Comparator]
			if !ok {
				return kap.Errorf(kap.EINVALID, "goals[%d].comparator: %q is not a FHIR comparator", i, g.Comparator)
			}
			code, disp := plInstrumentCode(inst)
			t.Measure = fhir.CC(g.Instrument+" total score", fhir.Coding(fhir.SystemLOINC, code, disp))
			q := fhir.Quantity(g.Target, "score", "{score}")
			q.Comparator = &dpb.Quantity_ComparatorCode{Value: cmp}
			t.Detail = &goalpb.Goal_Target_DetailX{Choice: &goalpb.Goal_Target_DetailX_Quantity{Quantity: q}}
		}
		if g.Due != "" {
			t.Due = &goalpb.Goal_Target_DueX{Choice: &goalpb.Goal_Target_DueX_Date{Date: fhir.Date(string(g.Due))}}
		}
		if t.Measure != nil || t.Due != nil {
			goal.Target = []*goalpb.Goal_Target{t}
		}
		goalURLs = append(goalURLs, b.add(goal, gval))
	}
	for _, u := range goalURLs {
		cp.Goal = append(cp.Goal, fhir.Ref(u))
	}

	// The order.
	o := p.Order
	med := fhir.CC(prod.Text)
	if prod.RxNorm != "" {
		med.Coding = append(med.Coding, fhir.Coding(fhir.SystemRxNorm, prod.RxNorm, prod.RxNormDisplay))
	}
	med.Coding = append(med.Coding, fhir.Coding(fhir.SystemKAP, "product-"+o.Product, prod.Text))
	dose := fhir.SimpleQuantity(o.Dose.Value, o.Dose.Unit, o.Dose.Unit) // UCUM mg or mg/kg (codes.md §3)
	mid, mval := b.ident("MedicationRequest", "medication-request")
	mr := &mrpb.MedicationRequest{
		Meta:       fhir.Meta(fhir.ProfileUSCoreMedicationRequest),
		Identifier: []*dpb.Identifier{mid},
		Status:     &mrpb.MedicationRequest_StatusCode{Value: plOrderStatus[p.Status]},
		Intent:     &mrpb.MedicationRequest_IntentCode{Value: cpb.MedicationRequestIntentCode_ORDER},
		Reported:   &mrpb.MedicationRequest_ReportedX{Choice: &mrpb.MedicationRequest_ReportedX_Boolean{Boolean: fhir.Boolean(false)}},
		Medication: &mrpb.MedicationRequest_MedicationX{Choice: &mrpb.MedicationRequest_MedicationX_CodeableConcept{CodeableConcept: med}},
		Subject:    b.m.PatientRef(p.ClientID),
		AuthoredOn: fhir.DateTime(p.Created.Time),
		Requester:  b.m.PractitionerRef(p.PrescriberID),
		DosageInstruction: []*dpb.Dosage{{
			Text:  fhir.String(o.Frequency),
			Route: fhir.CC(route.Display, fhir.Coding(fhir.SystemSNOMED, route.Code, route.Display)),
			DoseAndRate: []*dpb.Dosage_DoseAndRate{{Dose: &dpb.Dosage_DoseAndRate_DoseX{
				Choice: &dpb.Dosage_DoseAndRate_DoseX_Quantity{Quantity: dose}}}},
			MaxDosePerAdministration: fhir.SimpleQuantity(o.MaxDoseMg, "mg", "mg"),
		}},
	}
	mrURL := b.add(mr, mval)
	cp.Activity = append(cp.Activity, &cppb.CarePlan_Activity{Reference: fhir.Ref(mrURL)})
	lines = append(lines, fmt.Sprintf("Order: %s, %s, %s %s (max %s mg)", prod.Text, o.Route,
		fhir.Decimal(o.Dose.Value).GetValue(), o.Dose.Unit, fhir.Decimal(o.MaxDoseMg).GetValue()))
	if o.Frequency != "" {
		lines = append(lines, "Frequency: "+o.Frequency)
	}
	for _, g := range p.Goals {
		lines = append(lines, "Goal: "+g.Description)
	}
	cp.Text = fhir.Narrative(lines...)
	// The CarePlan goes first so the record's main resource leads the
	// Bundle.
	b.add(cp, val)
	n := len(b.entries)
	b.entries = append([]*bcrpb.Bundle_Entry{b.entries[n-1]}, b.entries[:n-1]...)
	return nil
}

type plSchedule struct {
	code, display string
	sched         kap.SessionSchedule
}

func plSchedules(p *kap.TreatmentPlan) []plSchedule {
	return []plSchedule{
		{"preparation", "Preparation", p.Preparation},
		{"dosing", "Dosing", p.Dosing},
		{"integration", "Integration", p.Integration},
		{"follow-up", "Follow-up", p.FollowUp},
	}
}

var plCarePlanStatus = map[string]cpb.RequestStatusCode_Value{
	"draft":     cpb.RequestStatusCode_DRAFT,
	"active":    cpb.RequestStatusCode_ACTIVE,
	"on-hold":   cpb.RequestStatusCode_ON_HOLD,
	"revoked":   cpb.RequestStatusCode_REVOKED,
	"completed": cpb.RequestStatusCode_COMPLETED,
}

// plOrderStatus: a revoked plan's order is stopped.
var plOrderStatus = map[string]cpb.MedicationrequestStatusCode_Value{
	"draft":     cpb.MedicationrequestStatusCode_DRAFT,
	"active":    cpb.MedicationrequestStatusCode_ACTIVE,
	"on-hold":   cpb.MedicationrequestStatusCode_ON_HOLD,
	"revoked":   cpb.MedicationrequestStatusCode_STOPPED,
	"completed": cpb.MedicationrequestStatusCode_COMPLETED,
}

var plComparators = map[string]cpb.QuantityComparatorCode_Value{
	"<":  cpb.QuantityComparatorCode_LESS_THAN,
	"<=": cpb.QuantityComparatorCode_LESS_THAN_OR_EQUAL_TO,
	">=": cpb.QuantityComparatorCode_GREATER_THAN_OR_EQUAL_TO,
	">":  cpb.QuantityComparatorCode_GREATER_THAN,
}

func plInstrumentCode(inst fhir.Instrument) (code, display string) {
	if inst.TotalCode != "" {
		return inst.TotalCode, inst.TotalDisplay
	}
	return inst.PanelCode, inst.PanelDisplay
}

// plDay returns a day-precision DateTime (nil for "").
func plDay(d kap.Date) *dpb.DateTime {
	if d == "" {
		return nil
	}
	return &dpb.DateTime{ValueUs: d.Time().UnixMicro(), Timezone: "Z", Precision: dpb.DateTime_DAY}
}

func plDate(d *dpb.DateTime) kap.Date {
	if d == nil {
		return ""
	}
	return kap.Date(time.UnixMicro(d.GetValueUs()).UTC().Format("2006-01-02"))
}

func (ix *index) plan() (kap.Record, error) {
	cp, ok := ix.withPart("CarePlan", "").(*cppb.CarePlan)
	if !ok {
		return nil, kap.Errorf(kap.EINVALID, "the Bundle has no CarePlan for plan %s", ix.id)
	}
	p := &kap.TreatmentPlan{Kind: kap.KindTreatmentPlan, ID: ix.id, Created: at(cp.GetCreated()),
		Start: plDate(cp.GetPeriod().GetStart()), End: plDate(cp.GetPeriod().GetEnd())}
	p.ClientID, _ = ix.m.refID(cp.GetSubject(), kap.KindClient)
	p.PrescriberID, _ = ix.m.refID(cp.GetAuthor(), kap.KindProvider)
	for k, v := range plCarePlanStatus {
		if v == cp.GetStatus().GetValue() {
			p.Status = k
		}
	}
	scheds := map[string]*kap.SessionSchedule{
		"preparation": &p.Preparation, "dosing": &p.Dosing, "integration": &p.Integration, "follow-up": &p.FollowUp,
	}
	var mr *mrpb.MedicationRequest
	for i, a := range cp.GetActivity() {
		if a.GetReference() != nil {
			if r, ok := ix.resolve(a.GetReference()).(*mrpb.MedicationRequest); ok {
				mr = r
			}
			continue
		}
		code, _ := strings.CutPrefix(fhir.CodeOf(a.GetDetail().GetCode(), fhir.SystemKAP), "sessions-")
		s, ok := scheds[code]
		if !ok {
			return nil, kap.Errorf(kap.EINVALID, "CarePlan.activity[%d] is not a KAP session schedule", i)
		}
		rep := a.GetDetail().GetScheduled().GetTiming().GetRepeat()
		s.Count = int(rep.GetCount().GetValue())
		s.IntervalDays = int(fhir.DecimalValue(rep.GetPeriod()))
	}
	for i, ref := range cp.GetGoal() {
		g, ok := ix.resolve(ref).(*goalpb.Goal)
		if !ok {
			return nil, kap.Errorf(kap.EINVALID, "CarePlan.goal[%d] resolves to no Goal in the Bundle", i)
		}
		part, _ := ix.part(g)
		kg := kap.Goal{Description: g.GetDescription().GetText().GetValue()}
		kg.ID, _ = strings.CutPrefix(part, "goal/")
		if ts := g.GetTarget(); len(ts) > 0 {
			t := ts[0]
			if t.GetMeasure() != nil {
				code := fhir.CodeOf(t.GetMeasure(), fhir.SystemLOINC)
				for name, inst := range fhir.Instruments {
					if c, _ := plInstrumentCode(inst); c == code {
						kg.Instrument = name
					}
				}
				q := t.GetDetail().GetQuantity()
				kg.Target = fhir.DecimalValue(q.GetValue())
				for k, v := range plComparators {
					if q.GetComparator() != nil && v == q.GetComparator().GetValue() {
						kg.Comparator = k
					}
				}
			}
			if d := t.GetDue().GetDate(); d != nil {
				kg.Due = kap.Date(fhir.DateString(d))
			}
		}
		p.Goals = append(p.Goals, kg)
	}
	if mr == nil {
		mr, _ = ix.withPart("MedicationRequest", "medication-request").(*mrpb.MedicationRequest)
	}
	if mr == nil {
		return nil, kap.Errorf(kap.EINVALID, "the Bundle has no MedicationRequest for plan %s", ix.id)
	}
	med := mr.GetMedication().GetCodeableConcept()
	p.Order.Product, _ = strings.CutPrefix(fhir.CodeOf(med, fhir.SystemKAP), "product-")
	if di := mr.GetDosageInstruction(); len(di) > 0 {
		d := di[0]
		p.Order.Frequency = d.GetText().GetValue()
		rc := fhir.CodeOf(d.GetRoute(), fhir.SystemSNOMED)
		for k, v := range fhir.Routes {
			if v.Code == rc {
				p.Order.Route = k
			}
		}
		if dr := d.GetDoseAndRate(); len(dr) > 0 {
			q := dr[0].GetDose().GetQuantity()
			p.Order.Dose = kap.Quantity{Value: fhir.DecimalValue(q.GetValue()), Unit: q.GetCode().GetValue()}
		}
		p.Order.MaxDoseMg = fhir.DecimalValue(d.GetMaxDosePerAdministration().GetValue())
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}
