package mapping

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	claimpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/claim_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// FHIR R4 terminology of the financial resources (FHIR R4 core code
// systems, not in codes.md, which covers clinical codes only; the claim-type
// system is as in the R4 claim-example-professional).
const (
	SystemClaimType              = "http://terminology.hl7.org/CodeSystem/claim-type"
	SystemProcessPriority        = "http://terminology.hl7.org/CodeSystem/processpriority"
	SystemSubscriberRelationship = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
	SystemCoverageClass          = "http://terminology.hl7.org/CodeSystem/coverage-class"
	SystemOrganizationType       = "http://terminology.hl7.org/CodeSystem/organization-type"
)

//go:embed payers/*.json
var payerFiles embed.FS

// PayerProfiles returns the payer profiles embedded from mapping/payers,
// by id. Each file is decoded strictly (unknown fields are errors) and
// validated; the file name must be "<id>.json".
func PayerProfiles() (map[string]*kap.PayerProfile, error) {
	entries, err := payerFiles.ReadDir("payers")
	if err != nil {
		return nil, kap.Errorf(kap.EINTERNAL, "payer profiles: %v", err)
	}
	out := map[string]*kap.PayerProfile{}
	for _, e := range entries {
		data, err := payerFiles.ReadFile(path.Join("payers", e.Name()))
		if err != nil {
			return nil, kap.Errorf(kap.EINTERNAL, "payer profile %s: %v", e.Name(), err)
		}
		p, err := ParsePayerProfile(data)
		if err != nil {
			return nil, fmt.Errorf("payer profile %s: %w", e.Name(), err)
		}
		if p.ID+".json" != e.Name() {
			return nil, kap.Errorf(kap.EINVALID, "payer profile %s: id %q does not match the file name", e.Name(), p.ID)
		}
		out[p.ID] = p
	}
	return out, nil
}

// PayerProfile returns one embedded payer profile; ENOTFOUND names the
// known ones.
func PayerProfile(id string) (*kap.PayerProfile, error) {
	all, err := PayerProfiles()
	if err != nil {
		return nil, err
	}
	if p, ok := all[id]; ok {
		return p, nil
	}
	var ids []string
	for k := range all {
		ids = append(ids, k)
	}
	sort.Strings(ids)
	return nil, kap.Errorf(kap.ENOTFOUND, "no payer profile %q (known: %s)", id, strings.Join(ids, ", "))
}

// ParsePayerProfile decodes and validates a payer profile document.
func ParsePayerProfile(data []byte) (*kap.PayerProfile, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p kap.PayerProfile
	if err := dec.Decode(&p); err != nil {
		return nil, kap.Errorf(kap.EINVALID, "payer profile: %v", err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// ClaimInput is what MapClaim needs besides the claim.
type ClaimInput struct {
	// Coverage the claim bills (its payer is Claim.insurer). Required by
	// FHIR (Claim.insurance 1..*): a claim without coverage is refused.
	Coverage *kap.Coverage
	// Created is Claim.created; default Options.Now().
	Created time.Time
}

// PayerRef returns the conditional reference to a payer's Organization
// (identifier value "payer/<payerId>", created by MapCoverage).
func (m *Mapper) PayerRef(payerID, name string) *dpb.Reference {
	r := fhir.Ref(fhir.ConditionalRef("Organization", m.System("Organization"), "payer/"+payerID))
	if name != "" {
		r.Display = fhir.String(name)
	}
	return r
}

// billingCoding returns the CPT/HCPCS Coding of a KAP billing code.
func billingCoding(code string) *dpb.Coding {
	bc := kap.BillingCodes[code]
	return fhir.Coding(fhir.BillingSystem(bc.System), code, bc.Display)
}

// MapClaim maps a claim to a FHIR R4 professional Claim (status active, use
// claim, priority normal): identifier "<system>/Claim|claim/<id>", patient
// and provider as conditional references, insurer → the payer
// Organization, insurance → the Coverage (with the prior-authorization
// reference), diagnosis → ICD-10-CM codes with their sequence, one item per
// line with the CPT/HCPCS productOrService, modifiers (HCPCS Level II
// system, as codes.md lists KX), quantity = units, servicedDate,
// diagnosisSequence and the session's Encounter. The resource is validated
// with the codec.
func (m *Mapper) MapClaim(c *kap.Claim, in ClaimInput) (*claimpb.Claim, error) {
	if c == nil {
		return nil, kap.Errorf(kap.EINVALID, "no claim")
	}
	if in.Coverage == nil {
		return nil, kap.Errorf(kap.EINVALID, "claim %s has no coverage: FHIR Claim.insurance is required", c.ID)
	}
	if err := in.Coverage.Validate(); err != nil {
		return nil, err
	}
	if !kap.ValidID(c.ID) || !kap.ValidID(c.ClientID) || !kap.ValidID(c.ProviderID) {
		return nil, kap.Errorf(kap.EINVALID, "claim id, clientId and providerId must be record ids")
	}
	if !c.ServiceDate.Valid() {
		return nil, kap.Errorf(kap.EINVALID, "claim %s: serviceDate must be a date YYYY-MM-DD", c.ID)
	}
	if in.Created.IsZero() {
		in.Created = m.opts.Now()
	}
	val := Value(kap.Kind("Claim"), c.ID, "")
	cl := &claimpb.Claim{
		Identifier: []*dpb.Identifier{fhir.Identifier(m.System("Claim"), val)},
		Status:     &claimpb.Claim_StatusCode{Value: cpb.FinancialResourceStatusCode_ACTIVE},
		Type:       fhir.CC("Professional", fhir.Coding(SystemClaimType, "professional", "Professional")),
		Use:        &claimpb.Claim_UseCode{Value: cpb.UseCode_CLAIM},
		Patient:    m.PatientRef(c.ClientID),
		Created:    fhir.DateTime(in.Created),
		Insurer:    m.PayerRef(in.Coverage.PayerID, in.Coverage.PayerName),
		Provider:   m.PractitionerRef(c.ProviderID),
		Priority:   fhir.CC("Normal", fhir.Coding(SystemProcessPriority, "normal", "Normal")),
		Insurance: []*claimpb.Claim_Insurance{{
			Sequence: fhir.PositiveInt(1),
			Focal:    fhir.Boolean(true),
			Coverage: m.RecordRef("Coverage", kap.KindCoverage, in.Coverage.ID, ""),
		}},
	}
	if c.PreAuthRef != "" {
		cl.Insurance[0].PreAuthRef = []*dpb.String{fhir.String(c.PreAuthRef)}
	}
	lines := []string{fmt.Sprintf("Professional claim for %s session %s on %s.", c.SessionKind, c.SessionID, c.ServiceDate)}
	for _, d := range c.Diagnoses {
		if d.Sequence < 1 {
			return nil, kap.Errorf(kap.EINVALID, "claim %s: diagnosis sequences start at 1", c.ID)
		}
		cl.Diagnosis = append(cl.Diagnosis, &claimpb.Claim_Diagnosis{
			Sequence: fhir.PositiveInt(d.Sequence),
			Diagnosis: &claimpb.Claim_Diagnosis_DiagnosisX{Choice: &claimpb.Claim_Diagnosis_DiagnosisX_CodeableConcept{
				CodeableConcept: fhir.CC("", fhir.Coding(fhir.SystemICD10CM, d.ICD10, fhir.ICD10Display[d.ICD10])),
			}},
		})
		lines = append(lines, fmt.Sprintf("Diagnosis %d: ICD-10-CM %s", d.Sequence, d.ICD10))
	}
	enc := m.RecordRef("Encounter", c.SessionKind, c.SessionID, "")
	date := fhir.Date(string(c.ServiceDate))
	for _, l := range c.Lines {
		if _, ok := kap.BillingCodes[l.Code]; !ok {
			return nil, kap.Errorf(kap.EINVALID, "claim %s line %d: %q is not a KAP billing code", c.ID, l.Sequence, l.Code)
		}
		if l.Sequence < 1 || l.Units < 0 {
			return nil, kap.Errorf(kap.EINVALID, "claim %s line %d: sequence must be 1 or more and units not negative", c.ID, l.Sequence)
		}
		it := &claimpb.Claim_Item{
			Sequence:         fhir.PositiveInt(l.Sequence),
			ProductOrService: fhir.CC("", billingCoding(l.Code)),
			Quantity:         &dpb.SimpleQuantity{Value: fhir.Decimal(float64(l.Units))},
			Serviced:         &claimpb.Claim_Item_ServicedX{Choice: &claimpb.Claim_Item_ServicedX_Date{Date: date}},
			Encounter:        []*dpb.Reference{enc},
		}
		for _, mod := range l.Modifiers {
			it.Modifier = append(it.Modifier, fhir.CC("", fhir.Coding(fhir.SystemHCPCS, mod, "")))
		}
		for _, p := range l.DiagnosisPointers {
			if p < 1 {
				return nil, kap.Errorf(kap.EINVALID, "claim %s line %d: diagnosis pointers start at 1", c.ID, l.Sequence)
			}
			it.DiagnosisSequence = append(it.DiagnosisSequence, fhir.PositiveInt(p))
		}
		cl.Item = append(cl.Item, it)
		mods := ""
		if len(l.Modifiers) > 0 {
			mods = "-" + strings.Join(l.Modifiers, "-")
		}
		lines = append(lines, fmt.Sprintf("Line %d: %s%s × %d", l.Sequence, l.Code, mods, l.Units))
	}
	cl.Text = fhir.Narrative(lines...)
	if err := m.codec.Validate(cl); err != nil {
		return nil, err
	}
	return cl, nil
}

// ClaimFrom reads the lines of a FHIR Claim made by MapClaim back into a
// kap.Claim (id, client, provider, coverage, diagnoses, lines). It is used
// to preflight a Claim that comes back edited.
func (m *Mapper) ClaimFrom(cl *claimpb.Claim) (*kap.Claim, error) {
	if cl == nil {
		return nil, kap.Errorf(kap.EINVALID, "no Claim")
	}
	c := &kap.Claim{}
	v := fhir.IdentifierValue(cl.GetIdentifier(), m.System("Claim"))
	id, ok := strings.CutPrefix(v, "claim/")
	if !ok {
		return nil, kap.Errorf(kap.EINVALID, "the Claim has no identifier in this clinic's system")
	}
	c.ID = id
	c.ClientID, _ = m.refID(cl.GetPatient(), kap.KindClient)
	c.ProviderID, _ = m.refID(cl.GetProvider(), kap.KindProvider)
	for _, ins := range cl.GetInsurance() {
		if ins.GetFocal().GetValue() {
			c.CoverageID, _ = m.refID(ins.GetCoverage(), kap.KindCoverage)
			if p := ins.GetPreAuthRef(); len(p) > 0 {
				c.PreAuthRef = p[0].GetValue()
			}
		}
	}
	for _, d := range cl.GetDiagnosis() {
		c.Diagnoses = append(c.Diagnoses, kap.ClaimDiagnosis{
			Sequence: int(d.GetSequence().GetValue()),
			ICD10:    fhir.CodeOf(d.GetDiagnosis().GetCodeableConcept(), fhir.SystemICD10CM),
		})
	}
	for _, it := range cl.GetItem() {
		l := kap.ClaimLine{Sequence: int(it.GetSequence().GetValue()), Units: int(fhir.DecimalValue(it.GetQuantity().GetValue()))}
		for _, cd := range it.GetProductOrService().GetCoding() {
			if s := cd.GetSystem().GetValue(); s == fhir.SystemCPT || s == fhir.SystemHCPCS {
				l.Code = cd.GetCode().GetValue()
			}
		}
		for _, mod := range it.GetModifier() {
			if len(mod.GetCoding()) > 0 {
				l.Modifiers = append(l.Modifiers, mod.GetCoding()[0].GetCode().GetValue())
			}
		}
		for _, p := range it.GetDiagnosisSequence() {
			l.DiagnosisPointers = append(l.DiagnosisPointers, int(p.GetValue()))
		}
		if d := it.GetServiced().GetDate(); d != nil && c.ServiceDate == "" {
			c.ServiceDate = kap.Date(fhir.DateString(d))
		}
		for _, e := range it.GetEncounter() {
			if id, ok := m.refID(e, kap.KindDosingSession); ok {
				c.SessionKind, c.SessionID = kap.KindDosingSession, id
			} else if id, ok := m.refID(e, kap.KindIntegrationSession); ok {
				c.SessionKind, c.SessionID = kap.KindIntegrationSession, id
			}
		}
		c.Lines = append(c.Lines, l)
	}
	return c, nil
}
