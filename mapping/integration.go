package mapping

import (
	"strings"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	encpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/encounter_go_proto"
	procpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/procedure_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// IntegrationSession → US Core Encounter (identifier part "") and a US Core
// psychotherapy Procedure ("psychotherapy").
//
// The Encounter class is v3-ActCode AMB for every format: "VR" (virtual) is
// not in codes.md, so telehealth is marked only by the local type code
// "integration-telehealth". type[0] = local "integration-<format>" + one
// coding per billing code; partOf → the dosing session's Encounter when the
// session follows one. The Procedure is coded 90853 for group sessions,
// else kap.PsychotherapyCode(minutes) (text only below 16 minutes), carries
// the minutes in fhir.ExtMinutes and the therapist as performer.
func (b *builder) integration(s *kap.IntegrationSession) error {
	id, val := b.ident("Encounter", "")
	disp := "KAP integration session (" + s.Format + ")"
	typ := fhir.CC(disp, append([]*dpb.Coding{fhir.Coding(fhir.SystemKAP, "integration-"+s.Format, disp)},
		kapBillingCodings(s.BillingCodes)...)...)
	enc := &encpb.Encounter{
		Meta:        fhir.Meta(fhir.ProfileUSCoreEncounter),
		Identifier:  []*dpb.Identifier{id},
		Status:      &encpb.Encounter_StatusCode{Value: cpb.EncounterStatusCode_FINISHED},
		ClassValue:  fhir.Coding(fhir.SystemActCode, "AMB", "ambulatory"),
		Type:        []*dpb.CodeableConcept{typ},
		Subject:     b.m.PatientRef(s.ClientID),
		Period:      fhir.Period(s.Start.Time, s.End.Time),
		Participant: []*encpb.Encounter_Participant{{Individual: b.m.PractitionerRef(s.TherapistID)}},
	}
	if s.DosingSessionID != "" {
		enc.PartOf = b.m.RecordRef("Encounter", kap.KindDosingSession, s.DosingSessionID, "")
	}
	encURL := b.add(enc, val)
	code := kap.PsychotherapyCode(s.Minutes)
	if s.Format == "group" {
		code = "90853"
	}
	b.kapPsychotherapyProcedure("psychotherapy", code, s.Minutes, s.TherapistID, s.Start.Time, s.End.Time, encURL)
	return nil
}

func (ix *index) integration() (kap.Record, error) {
	enc, ok := ix.withPart("Encounter", "").(*encpb.Encounter)
	if !ok {
		return nil, kap.Errorf(kap.EINVALID, "the Bundle has no Encounter for integration session %s", ix.id)
	}
	s := &kap.IntegrationSession{Kind: kap.KindIntegrationSession, ID: ix.id}
	s.ClientID, _ = ix.m.refID(enc.GetSubject(), kap.KindClient)
	s.Start, s.End = at(enc.GetPeriod().GetStart()), at(enc.GetPeriod().GetEnd())
	if t := enc.GetType(); len(t) > 0 {
		s.Format, _ = strings.CutPrefix(fhir.CodeOf(t[0], fhir.SystemKAP), "integration-")
		s.BillingCodes = kapBillingFrom(t[0])
	}
	if p := enc.GetParticipant(); len(p) > 0 {
		s.TherapistID, _ = ix.m.refID(p[0].GetIndividual(), kap.KindProvider)
	}
	if enc.GetPartOf() != nil {
		s.DosingSessionID, _ = ix.m.refID(enc.GetPartOf(), kap.KindDosingSession)
	}
	p, ok := ix.withPart("Procedure", "psychotherapy").(*procpb.Procedure)
	if !ok {
		return nil, kap.Errorf(kap.EINVALID, "the Bundle has no psychotherapy Procedure for integration session %s", ix.id)
	}
	s.Minutes = kapMinutes(p)
	return kapReversed(s)
}

// kapReversed validates a record rebuilt from a Bundle: a Bundle altered
// after mapping (a lost component, an unknown code) gives the record's own
// validation error, naming the field, instead of a silently wrong record.
func kapReversed(r kap.Record) (kap.Record, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return r, nil
}
