package mapping

import (
	"strings"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	conspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/consent_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// Consent → a treatment Consent (identifier part ""; scope treatment,
// category LOINC 59284-0, policy uri = the KAP treatment-consent policy,
// provision permit when treatment is consented else deny, nested permit
// provisions coded local "escort-agreement" and "no-driving-8h" when
// signed) and, when the client grants sharing, a privacy Consent ("share":
// scope patient-privacy, policyRule v3-ActCode OPTIN, one provision actor
// per grant with role v3-ParticipationType PRCP plus local "share-<type>"
// and a logical Organization reference to the target, identifier system
// ShareTargetSystem).
// Revoked consents are status inactive.
func (b *builder) consent(c *kap.Consent) error {
	id, val := b.ident("Consent", "")
	status := cpb.ConsentStateCode_ACTIVE
	if c.Status == "revoked" {
		status = cpb.ConsentStateCode_INACTIVE
	}
	cat := []*dpb.CodeableConcept{fhir.CC("", fhir.Coding(fhir.SystemLOINC, fhir.LOINCConsent, "Patient Consent"))}
	prov := &conspb.Consent_Provision{Type: &conspb.Consent_Provision_TypeCode{Value: cpb.ConsentProvisionTypeCode_DENY}}
	if c.TreatmentConsent {
		prov.Type.Value = cpb.ConsentProvisionTypeCode_PERMIT
	}
	permit := func(code, display string) *conspb.Consent_Provision {
		return &conspb.Consent_Provision{
			Type: &conspb.Consent_Provision_TypeCode{Value: cpb.ConsentProvisionTypeCode_PERMIT},
			Code: []*dpb.CodeableConcept{fhir.CC(display, fhir.Coding(fhir.SystemKAP, code, display))},
		}
	}
	if c.EscortAgreement {
		prov.Provision = append(prov.Provision, permit("escort-agreement", "Released after dosing only to an escort"))
	}
	if c.NoDrivingAck {
		prov.Provision = append(prov.Provision, permit("no-driving-8h", "No driving or operating machinery for 8 hours after dosing"))
	}
	b.add(&conspb.Consent{
		Identifier: []*dpb.Identifier{id},
		Status:     &conspb.Consent_StatusCode{Value: status},
		Scope:      fhir.CC("Treatment", fhir.Coding(fhir.SystemConsentScope, "treatment", "Treatment")),
		Category:   cat,
		Patient:    b.m.PatientRef(c.ClientID),
		DateTime:   fhir.DateTime(c.SignedAt.Time),
		Policy:     []*conspb.Consent_Policy{{Uri: fhir.URI(fhir.CanonicalBase + "/policy/kap-treatment-consent")}},
		Provision:  prov,
	}, val)

	if len(c.Share) == 0 {
		return nil
	}
	sid, sval := b.ident("Consent", "share")
	sp := &conspb.Consent_Provision{Type: &conspb.Consent_Provision_TypeCode{Value: cpb.ConsentProvisionTypeCode_PERMIT}}
	for _, g := range c.Share {
		ref := fhir.LogicalRef(b.m.ShareTargetSystem(), g.Target, g.Name)
		ref.Type = fhir.URI("Organization")
		sp.Actor = append(sp.Actor, &conspb.Consent_Provision_ProvisionActor{
			// PRCP (primary information recipient) as in the R4 spec's
			// Consent examples; the local code tells EHR from payer.
			Role: fhir.CC("", fhir.Coding(csParticipationType, "PRCP", "primary information recipient"),
				fhir.Coding(fhir.SystemKAP, "share-"+g.Type, "Share with "+g.Type)),
			Reference: ref,
		})
	}
	b.add(&conspb.Consent{
		Identifier: []*dpb.Identifier{sid},
		Status:     &conspb.Consent_StatusCode{Value: status},
		Scope:      fhir.CC("Privacy Consent", fhir.Coding(fhir.SystemConsentScope, "patient-privacy", "Privacy Consent")),
		Category:   cat,
		Patient:    b.m.PatientRef(c.ClientID),
		DateTime:   fhir.DateTime(c.SignedAt.Time),
		// OPTIN as in the R4 spec's privacy Consent examples.
		PolicyRule: fhir.CC("", fhir.Coding(fhir.SystemActCode, "OPTIN", "opt-in")),
		Provision:  sp,
	}, sval)
	return nil
}

// ShareTargetSystem is the identifier system of delivery targets (the
// gateway configuration's target ids) in share Consents: a logical
// Organization reference "<IdentifierBase>/delivery-target|<target id>".
func (m *Mapper) ShareTargetSystem() string { return m.opts.IdentifierBase + "/delivery-target" }

// csParticipationType is v3-ParticipationType (seen in the R4 spec's
// Consent examples); not yet in fhir/codes.go.
const csParticipationType = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

func (ix *index) consent() (kap.Record, error) {
	main, ok := ix.withPart("Consent", "").(*conspb.Consent)
	if !ok {
		return nil, kap.Errorf(kap.EINVALID, "the Bundle has no Consent for consent %s", ix.id)
	}
	c := &kap.Consent{Kind: kap.KindConsent, ID: ix.id, SignedAt: at(main.GetDateTime()), Status: "active"}
	c.ClientID, _ = ix.m.refID(main.GetPatient(), kap.KindClient)
	if main.GetStatus().GetValue() != cpb.ConsentStateCode_ACTIVE {
		c.Status = "revoked"
	}
	p := main.GetProvision()
	c.TreatmentConsent = p.GetType().GetValue() == cpb.ConsentProvisionTypeCode_PERMIT
	for _, sub := range p.GetProvision() {
		for _, cc := range sub.GetCode() {
			switch fhir.CodeOf(cc, fhir.SystemKAP) {
			case "escort-agreement":
				c.EscortAgreement = true
			case "no-driving-8h":
				c.NoDrivingAck = true
			}
		}
	}
	if share, ok := ix.withPart("Consent", "share").(*conspb.Consent); ok {
		sys := ix.m.ShareTargetSystem()
		for i, a := range share.GetProvision().GetActor() {
			typ, ok := strings.CutPrefix(fhir.CodeOf(a.GetRole(), fhir.SystemKAP), "share-")
			ref := a.GetReference()
			if !ok || ref.GetIdentifier().GetSystem().GetValue() != sys {
				return nil, kap.Errorf(kap.EINVALID, "share Consent actor %d is not a KAP share grant", i)
			}
			c.Share = append(c.Share, kap.ShareGrant{Target: ref.GetIdentifier().GetValue().GetValue(), Type: typ, Name: ref.GetDisplay().GetValue()})
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}
