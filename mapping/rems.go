package mapping

import (
	"time"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	qpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/questionnaire_go_proto"
	qrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/questionnaire_response_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// The Spravato REMS monitoring Questionnaire is ours (the REMS publishes a
// form, not a FHIR Questionnaire): its canonical lives under the KAP
// canonical base. Items follow kap.REMSQuestions; the blood-pressure items
// are groups of systolic, diastolic (mm[Hg]) and the time of the reading.
const (
	REMSQuestionnaireURL     = fhir.CanonicalBase + "/Questionnaire/spravato-rems-monitoring"
	REMSQuestionnaireVersion = "1.0.0"
)

// remsItemType gives the Questionnaire item type of each REMS item.
func remsItemType(id string) cpb.QuestionnaireItemTypeCode_Value {
	switch id {
	case kap.REMSItemTreatmentDate:
		return cpb.QuestionnaireItemTypeCode_DATE
	case kap.REMSItemDose:
		return cpb.QuestionnaireItemTypeCode_QUANTITY
	case kap.REMSItemLotNumber:
		return cpb.QuestionnaireItemTypeCode_STRING
	case kap.REMSItemTotalMinutes:
		return cpb.QuestionnaireItemTypeCode_INTEGER
	case kap.REMSItemBPBefore, kap.REMSItemBP40, kap.REMSItemBPDischarge:
		return cpb.QuestionnaireItemTypeCode_GROUP
	}
	return cpb.QuestionnaireItemTypeCode_BOOLEAN
}

func isBPItem(id string) bool {
	return id == kap.REMSItemBPBefore || id == kap.REMSItemBP40 || id == kap.REMSItemBPDischarge
}

// REMSQuestionnaire returns our Questionnaire for the Spravato REMS
// Patient Monitoring Form content.
func REMSQuestionnaire() *qpb.Questionnaire {
	q := &qpb.Questionnaire{
		Url:         fhir.URI(REMSQuestionnaireURL),
		Version:     fhir.String(REMSQuestionnaireVersion),
		Name:        fhir.String("SpravatoREMSMonitoring"),
		Title:       fhir.String("Spravato REMS patient monitoring (content of the REMS Patient Monitoring Form)"),
		Status:      &qpb.Questionnaire_StatusCode{Value: cpb.PublicationStatusCode_ACTIVE},
		SubjectType: []*qpb.Questionnaire_SubjectTypeCode{{Value: cpb.ResourceTypeCode_PATIENT}},
		Publisher:   fhir.String("KAP Bridge"),
		Text:        fhir.Narrative("Spravato REMS patient monitoring: the items of the REMS Patient Monitoring Form that KAP Bridge fills from session records."),
	}
	for _, x := range kap.REMSQuestions {
		it := &qpb.Questionnaire_Item{
			LinkId:   fhir.String(x.ID),
			Text:     fhir.String(x.Text),
			Type:     &qpb.Questionnaire_Item_TypeCode{Value: remsItemType(x.ID)},
			Required: fhir.Boolean(true),
		}
		if isBPItem(x.ID) {
			it.Item = []*qpb.Questionnaire_Item{
				{LinkId: fhir.String(x.ID + ".systolic"), Text: fhir.String("Systolic (mm[Hg])"), Type: &qpb.Questionnaire_Item_TypeCode{Value: cpb.QuestionnaireItemTypeCode_QUANTITY}, Required: fhir.Boolean(true)},
				{LinkId: fhir.String(x.ID + ".diastolic"), Text: fhir.String("Diastolic (mm[Hg])"), Type: &qpb.Questionnaire_Item_TypeCode{Value: cpb.QuestionnaireItemTypeCode_QUANTITY}, Required: fhir.Boolean(true)},
				{LinkId: fhir.String(x.ID + ".time"), Text: fhir.String("Time of the reading"), Type: &qpb.Questionnaire_Item_TypeCode{Value: cpb.QuestionnaireItemTypeCode_DATE_TIME}, Required: fhir.Boolean(true)},
			}
		}
		q.Item = append(q.Item, it)
	}
	return q
}

// REMSInput is what MapREMS needs besides the report.
type REMSInput struct {
	Authored time.Time // default Options.Now()
}

// MapREMS exports a REMS report as a QuestionnaireResponse answering
// REMSQuestionnaire: status completed when every item is answered, else
// in-progress with the unanswered items left out; subject → the Patient,
// encounter → the dosing session's Encounter; identifier value
// "dosing/<session id>/rems". The resource is validated with the codec.
func (m *Mapper) MapREMS(r *kap.REMSReport, in REMSInput) (*qrpb.QuestionnaireResponse, error) {
	if r == nil || !kap.ValidID(r.SessionID) || !kap.ValidID(r.ClientID) {
		return nil, kap.Errorf(kap.EINVALID, "a REMS report needs its session and client ids")
	}
	if in.Authored.IsZero() {
		in.Authored = m.opts.Now()
	}
	status := cpb.QuestionnaireResponseStatusCode_COMPLETED
	if !r.Complete() {
		status = cpb.QuestionnaireResponseStatusCode_IN_PROGRESS
	}
	qr := &qrpb.QuestionnaireResponse{
		Identifier:    fhir.Identifier(m.System("QuestionnaireResponse"), Value(kap.KindDosingSession, r.SessionID, "rems")),
		Questionnaire: fhir.Canonical(REMSQuestionnaireURL + "|" + REMSQuestionnaireVersion),
		Status:        &qrpb.QuestionnaireResponse_StatusCode{Value: status},
		Subject:       m.PatientRef(r.ClientID),
		Encounter:     m.RecordRef("Encounter", kap.KindDosingSession, r.SessionID, ""),
		Authored:      fhir.DateTime(in.Authored),
	}
	var text []string
	text = append(text, "Spravato REMS monitoring for session "+r.SessionID+"; submit by "+string(r.DueDate)+".")
	for _, it := range r.Items {
		if !it.Answered {
			text = append(text, it.Question+": MISSING ("+it.Missing+")")
			continue
		}
		text = append(text, it.Question+": "+it.Value)
		qi := &qrpb.QuestionnaireResponse_Item{LinkId: fhir.String(it.ID), Text: fhir.String(it.Question)}
		switch remsItemType(it.ID) {
		case cpb.QuestionnaireItemTypeCode_DATE:
			qi.Answer = remsAnswer(&qrpb.QuestionnaireResponse_Item_Answer_ValueX{Choice: &qrpb.QuestionnaireResponse_Item_Answer_ValueX_Date{Date: fhir.Date(it.Value)}})
		case cpb.QuestionnaireItemTypeCode_QUANTITY:
			qi.Answer = remsAnswer(&qrpb.QuestionnaireResponse_Item_Answer_ValueX{Choice: &qrpb.QuestionnaireResponse_Item_Answer_ValueX_Quantity{Quantity: fhir.Quantity(r.DoseMg, "mg", "mg")}})
		case cpb.QuestionnaireItemTypeCode_STRING:
			qi.Answer = remsAnswer(&qrpb.QuestionnaireResponse_Item_Answer_ValueX{Choice: &qrpb.QuestionnaireResponse_Item_Answer_ValueX_StringValue{StringValue: fhir.String(it.Value)}})
		case cpb.QuestionnaireItemTypeCode_INTEGER:
			minutes := int(r.Discharge.Sub(r.FirstDose) / time.Minute)
			qi.Answer = remsAnswer(&qrpb.QuestionnaireResponse_Item_Answer_ValueX{Choice: &qrpb.QuestionnaireResponse_Item_Answer_ValueX_Integer{Integer: fhir.Integer(minutes)}})
		case cpb.QuestionnaireItemTypeCode_GROUP:
			bp := it.BP()
			qi.Item = []*qrpb.QuestionnaireResponse_Item{
				{LinkId: fhir.String(it.ID + ".systolic"), Answer: remsAnswer(remsQuantity(bp.Systolic))},
				{LinkId: fhir.String(it.ID + ".diastolic"), Answer: remsAnswer(remsQuantity(bp.Diastolic))},
				{LinkId: fhir.String(it.ID + ".time"), Answer: remsAnswer(&qrpb.QuestionnaireResponse_Item_Answer_ValueX{Choice: &qrpb.QuestionnaireResponse_Item_Answer_ValueX_DateTime{DateTime: fhir.DateTime(bp.Time.Time)}})},
			}
		default:
			yes := it.Value == "yes"
			if y := it.Yes(); y != nil {
				yes = *y
			}
			qi.Answer = remsAnswer(&qrpb.QuestionnaireResponse_Item_Answer_ValueX{Choice: &qrpb.QuestionnaireResponse_Item_Answer_ValueX_Boolean{Boolean: fhir.Boolean(yes)}})
		}
		qr.Item = append(qr.Item, qi)
	}
	qr.Text = fhir.Narrative(text...)
	if err := m.codec.Validate(qr); err != nil {
		return nil, err
	}
	return qr, nil
}

func remsAnswer(v *qrpb.QuestionnaireResponse_Item_Answer_ValueX) []*qrpb.QuestionnaireResponse_Item_Answer {
	return []*qrpb.QuestionnaireResponse_Item_Answer{{Value: v}}
}

func remsQuantity(v float64) *qrpb.QuestionnaireResponse_Item_Answer_ValueX {
	return &qrpb.QuestionnaireResponse_Item_Answer_ValueX{Choice: &qrpb.QuestionnaireResponse_Item_Answer_ValueX_Quantity{Quantity: fhir.Quantity(v, "mm[Hg]", "mm[Hg]")}}
}

// remsMissingLinkIDs returns the linkIds a QuestionnaireResponse does not
// answer, in Questionnaire order (for tests and the CLI).
func remsMissingLinkIDs(qr *qrpb.QuestionnaireResponse) []string {
	have := map[string]bool{}
	for _, it := range qr.GetItem() {
		have[it.GetLinkId().GetValue()] = true
	}
	var out []string
	for _, x := range kap.REMSQuestions {
		if !have[x.ID] {
			out = append(out, x.ID)
		}
	}
	return out
}
