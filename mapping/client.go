package mapping

import (
	"strings"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	ptpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/patient_go_proto"
	prpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/practitioner_go_proto"
	prrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/practitioner_role_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// Client → US Core Patient. Contacts go to Patient.contact: the emergency
// role as v2-0131 C, the escort role as the local code "escort", the
// free-text relationship as relationship text.
func (b *builder) client(c *kap.Client) error {
	id, val := b.ident("Patient", "")
	p := &ptpb.Patient{
		Meta:       fhir.Meta(fhir.ProfileUSCorePatient),
		Identifier: []*dpb.Identifier{id},
		Name:       []*dpb.HumanName{humanName(c.Name)},
		Gender:     &ptpb.Patient_GenderCode{Value: genderCode(c.Gender)},
		BirthDate:  fhir.Date(string(c.BirthDate)),
		Telecom:    telecom(c.Phone, c.Email),
	}
	if a := c.Address; a != nil {
		addr := &dpb.Address{City: fhir.String(a.City), State: fhir.String(a.State),
			PostalCode: fhir.String(a.PostalCode), Country: fhir.String(a.Country)}
		for _, l := range a.Line {
			addr.Line = append(addr.Line, fhir.String(l))
		}
		p.Address = []*dpb.Address{addr}
	}
	for _, ct := range c.Contacts {
		pc := &ptpb.Patient_Contact{Name: humanName(ct.Name), Telecom: telecom(ct.Phone, "")}
		rel := fhir.CC(ct.Relationship)
		for _, r := range ct.Roles {
			switch r {
			case kap.ContactEmergency:
				rel.Coding = append(rel.Coding, fhir.Coding(fhir.SystemContactRelationship, "C", "Emergency Contact"))
			case kap.ContactEscort:
				rel.Coding = append(rel.Coding, fhir.Coding(fhir.SystemKAP, "escort", "Escort home after dosing"))
			}
		}
		pc.Relationship = []*dpb.CodeableConcept{rel}
		p.Contact = append(p.Contact, pc)
	}
	b.add(p, val)
	return nil
}

func (ix *index) client() (kap.Record, error) {
	p, ok := ix.first("Patient").(*ptpb.Patient)
	if !ok {
		return nil, kap.Errorf(kap.EINVALID, "the Bundle has no Patient")
	}
	c := ClientFromPatient(p)
	c.ID = ix.id
	return c, nil
}

// ClientFromPatient maps any Patient (ours or an EHR's) to a Client. The id
// is left empty: the caller knows which identifier is the clinic's.
func ClientFromPatient(p *ptpb.Patient) *kap.Client {
	c := &kap.Client{Kind: kap.KindClient, BirthDate: kap.Date(fhir.DateString(p.GetBirthDate()))}
	if len(p.GetName()) > 0 {
		c.Name = kapName(p.GetName()[0])
	}
	c.Gender = strings.ToLower(strings.ReplaceAll(p.GetGender().GetValue().String(), "_", "-"))
	if c.Gender == "invalid-uninitialized" {
		c.Gender = ""
	}
	c.Phone, c.Email = contactPoints(p.GetTelecom())
	if len(p.GetAddress()) > 0 {
		a := p.GetAddress()[0]
		ad := &kap.Address{City: a.GetCity().GetValue(), State: a.GetState().GetValue(),
			PostalCode: a.GetPostalCode().GetValue(), Country: a.GetCountry().GetValue()}
		for _, l := range a.GetLine() {
			ad.Line = append(ad.Line, l.GetValue())
		}
		c.Address = ad
	}
	for _, pc := range p.GetContact() {
		ct := kap.Contact{Name: kapName(pc.GetName())}
		ct.Phone, _ = contactPoints(pc.GetTelecom())
		for _, rel := range pc.GetRelationship() {
			if ct.Relationship == "" {
				ct.Relationship = rel.GetText().GetValue()
			}
			if fhir.HasCoding(rel, fhir.SystemKAP, "escort") {
				ct.Roles = append(ct.Roles, kap.ContactEscort)
			}
			if fhir.HasCoding(rel, fhir.SystemContactRelationship, "C") {
				ct.Roles = append(ct.Roles, kap.ContactEmergency)
			}
		}
		c.Contacts = append(c.Contacts, ct)
	}
	return c
}

// Provider → US Core Practitioner (clinic identifier and NPI) and a US Core
// PractitionerRole per role, coded in the local code system.
func (b *builder) provider(p *kap.Provider) error {
	id, val := b.ident("Practitioner", "")
	pr := &prpb.Practitioner{
		Meta:       fhir.Meta(fhir.ProfileUSCorePractitioner),
		Identifier: []*dpb.Identifier{id},
		Name:       []*dpb.HumanName{humanName(p.Name)},
	}
	if p.NPI != "" {
		pr.Identifier = append(pr.Identifier, fhir.Identifier(fhir.SystemNPI, p.NPI))
	}
	if p.Credentials != "" {
		pr.Qualification = []*prpb.Practitioner_Qualification{{Code: fhir.CC(p.Credentials)}}
	}
	full := b.add(pr, val)
	for _, r := range p.Roles {
		rid, rval := b.ident("PractitionerRole", r)
		b.add(&prrpb.PractitionerRole{
			Meta:         fhir.Meta(fhir.ProfileUSCorePractitionerRole),
			Identifier:   []*dpb.Identifier{rid},
			Active:       fhir.Boolean(true),
			Practitioner: fhir.Ref(full),
			Code:         []*dpb.CodeableConcept{fhir.CC(roleDisplay[r], fhir.Coding(fhir.SystemKAP, "role-"+r, roleDisplay[r]))},
		}, rval)
	}
	return nil
}

var roleDisplay = map[string]string{
	kap.RolePsychotherapist: "KAP psychotherapist",
	kap.RolePrescriber:      "KAP prescriber",
	kap.RoleNurse:           "KAP nurse",
}

func (ix *index) provider() (kap.Record, error) {
	pr, ok := ix.first("Practitioner").(*prpb.Practitioner)
	if !ok {
		return nil, kap.Errorf(kap.EINVALID, "the Bundle has no Practitioner")
	}
	p := ProviderFromPractitioner(pr)
	p.ID = ix.id
	for _, r := range ix.byType["PractitionerRole"] {
		for _, cc := range r.(*prrpb.PractitionerRole).GetCode() {
			if code, ok := strings.CutPrefix(fhir.CodeOf(cc, fhir.SystemKAP), "role-"); ok {
				p.Roles = append(p.Roles, code)
			}
		}
	}
	return p, nil
}

// ProviderFromPractitioner maps any Practitioner to a Provider (no id, no
// roles: those come from the clinic's identifier and PractitionerRoles).
func ProviderFromPractitioner(pr *prpb.Practitioner) *kap.Provider {
	p := &kap.Provider{Kind: kap.KindProvider, NPI: fhir.IdentifierValue(pr.GetIdentifier(), fhir.SystemNPI)}
	if len(pr.GetName()) > 0 {
		p.Name = kapName(pr.GetName()[0])
	}
	if q := pr.GetQualification(); len(q) > 0 {
		p.Credentials = q[0].GetCode().GetText().GetValue()
	}
	return p
}

func humanName(n kap.HumanName) *dpb.HumanName {
	h := &dpb.HumanName{Family: fhir.String(n.Family)}
	for _, g := range n.Given {
		h.Given = append(h.Given, fhir.String(g))
	}
	return h
}

func kapName(h *dpb.HumanName) kap.HumanName {
	n := kap.HumanName{Family: h.GetFamily().GetValue()}
	for _, g := range h.GetGiven() {
		n.Given = append(n.Given, g.GetValue())
	}
	return n
}

func telecom(phone, email string) []*dpb.ContactPoint {
	var out []*dpb.ContactPoint
	if phone != "" {
		out = append(out, &dpb.ContactPoint{
			System: &dpb.ContactPoint_SystemCode{Value: cpb.ContactPointSystemCode_PHONE},
			Value:  fhir.String(phone),
		})
	}
	if email != "" {
		out = append(out, &dpb.ContactPoint{
			System: &dpb.ContactPoint_SystemCode{Value: cpb.ContactPointSystemCode_EMAIL},
			Value:  fhir.String(email),
		})
	}
	return out
}

func contactPoints(cps []*dpb.ContactPoint) (phone, email string) {
	for _, cp := range cps {
		switch cp.GetSystem().GetValue() {
		case cpb.ContactPointSystemCode_PHONE:
			if phone == "" {
				phone = cp.GetValue().GetValue()
			}
		case cpb.ContactPointSystemCode_EMAIL:
			if email == "" {
				email = cp.GetValue().GetValue()
			}
		}
	}
	return phone, email
}

func genderCode(g string) cpb.AdministrativeGenderCode_Value {
	if v, ok := cpb.AdministrativeGenderCode_Value_value[strings.ToUpper(g)]; ok {
		return cpb.AdministrativeGenderCode_Value(v)
	}
	return cpb.AdministrativeGenderCode_UNKNOWN // unreachable: Validate checks gender
}
