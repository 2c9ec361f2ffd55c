package mapping

import (
	"fmt"
	"time"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	cerqpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/coverage_eligibility_request_go_proto"
	cerspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/coverage_eligibility_response_go_proto"
	covpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/coverage_go_proto"
	orgpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/organization_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// Coverage → one Bundle: the payer Organization (identifier value
// "payer/<payerId>", type "pay") and the Coverage (identifier value
// "coverage/<id>"): status active, subscriberId, beneficiary → the Patient,
// relationship (subscriber-relationship), period, payor → the Organization,
// class group/plan, order; and the Provenance like every record.
//
// MapCoverage is separate from Map: mapping.go's Map and Reverse do not
// list the Coverage kind yet.
func (m *Mapper) MapCoverage(c *kap.Coverage, in MapInput) (*bcrpb.Bundle, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if in.Version <= 0 {
		in.Version = 1
	}
	if in.Recorded.IsZero() {
		in.Recorded = m.opts.Now()
	}
	b := &builder{m: m, rec: c}
	orgVal := "payer/" + c.PayerID
	org := &orgpb.Organization{
		Identifier: []*dpb.Identifier{fhir.Identifier(m.System("Organization"), orgVal)},
		Active:     fhir.Boolean(true),
		Type:       []*dpb.CodeableConcept{fhir.CC("Payer", fhir.Coding(SystemOrganizationType, "pay", "Payer"))},
		Name:       fhir.String(c.PayerName),
	}
	orgURL := b.add(org, orgVal)
	id, val := b.ident("Coverage", "")
	cov := &covpb.Coverage{
		Identifier:   []*dpb.Identifier{id},
		Status:       &covpb.Coverage_StatusCode{Value: cpb.FinancialResourceStatusCode_ACTIVE},
		SubscriberId: fhir.String(c.MemberID),
		Beneficiary:  m.PatientRef(c.ClientID),
		Relationship: fhir.CC("", fhir.Coding(SystemSubscriberRelationship, c.Relationship, "")),
		Period:       &dpb.Period{Start: dateTimeOfDate(c.Start), End: dateTimeOfDate(c.End)},
		Payor:        []*dpb.Reference{{Reference: &dpb.Reference_Uri{Uri: fhir.String(orgURL)}, Display: fhir.String(c.PayerName)}},
	}
	if c.SubscriberID != "" {
		cov.SubscriberId = fhir.String(c.SubscriberID)
		cov.Dependent = fhir.String(c.MemberID)
	}
	if c.GroupNumber != "" {
		cov.ClassValue = append(cov.ClassValue, &covpb.Coverage_Class{
			Type: fhir.CC("", fhir.Coding(SystemCoverageClass, "group", "Group")), Value: fhir.String(c.GroupNumber)})
	}
	if c.PlanName != "" {
		cov.ClassValue = append(cov.ClassValue, &covpb.Coverage_Class{
			Type: fhir.CC("", fhir.Coding(SystemCoverageClass, "plan", "Plan")), Value: fhir.String(c.PlanName), Name: fhir.String(c.PlanName)})
	}
	if c.Order > 0 {
		cov.Order = fhir.PositiveInt(c.Order)
	}
	b.add(cov, val)
	b.provenance(in)
	bundle := &bcrpb.Bundle{
		Type:  &bcrpb.Bundle_TypeCode{Value: cpb.BundleTypeCode_TRANSACTION},
		Entry: b.entries,
	}
	for i, e := range bundle.Entry {
		if err := m.codec.Validate(e.Resource); err != nil {
			ke := err.(*kap.Error)
			for j := range ke.Issues {
				ke.Issues[j].Path = fmt.Sprintf("Bundle.entry[%d].resource.%s", i, ke.Issues[j].Path)
			}
			ke.Code, ke.Message = kap.EINTERNAL, "mapping produced an invalid resource"
			return nil, ke
		}
	}
	return bundle, nil
}

// dateTimeOfDate returns a day-precision DateTime (nil for "").
func dateTimeOfDate(d kap.Date) *dpb.DateTime {
	if d == "" || !d.Valid() {
		return nil
	}
	return &dpb.DateTime{ValueUs: d.Time().UnixMicro(), Timezone: "UTC", Precision: dpb.DateTime_DAY}
}

// EligibilityInput is what an eligibility check asks.
type EligibilityInput struct {
	Coverage   *kap.Coverage
	ProviderID string   // the requesting provider
	Date       kap.Date // the planned service date
	// Services are the CPT/HCPCS codes asked about (default: the KAP
	// session services 0820T, 96365, G2082, G2083, 90837).
	Services []string
	Created  time.Time // default Options.Now()
}

// DefaultEligibilityServices are the KAP services asked about by default.
var DefaultEligibilityServices = []string{"0820T", "96365", "G2082", "G2083", "90837"}

// EligibilityRequest builds a CoverageEligibilityRequest (purpose benefits
// and validation) for a coverage: patient, servicedDate, provider, insurer
// → the payer Organization, insurance → the Coverage, one item per service.
// Its identifier value is "eligibility/<coverage id>/<date>".
func (m *Mapper) EligibilityRequest(in EligibilityInput) (*cerqpb.CoverageEligibilityRequest, error) {
	c := in.Coverage
	if c == nil {
		return nil, kap.Errorf(kap.EINVALID, "an eligibility request needs a coverage")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if !in.Date.Valid() {
		return nil, kap.Errorf(kap.EINVALID, "date must be a date YYYY-MM-DD")
	}
	if !kap.ValidID(in.ProviderID) {
		return nil, kap.Errorf(kap.EINVALID, "providerId is required")
	}
	if in.Created.IsZero() {
		in.Created = m.opts.Now()
	}
	services := in.Services
	if len(services) == 0 {
		services = DefaultEligibilityServices
	}
	r := &cerqpb.CoverageEligibilityRequest{
		Identifier: []*dpb.Identifier{fhir.Identifier(m.System("CoverageEligibilityRequest"),
			"eligibility/"+c.ID+"/"+string(in.Date))},
		Status: &cerqpb.CoverageEligibilityRequest_StatusCode{Value: cpb.FinancialResourceStatusCode_ACTIVE},
		Purpose: []*cerqpb.CoverageEligibilityRequest_PurposeCode{
			{Value: cpb.EligibilityRequestPurposeCode_BENEFITS},
			{Value: cpb.EligibilityRequestPurposeCode_VALIDATION},
		},
		Patient:  m.PatientRef(c.ClientID),
		Serviced: &cerqpb.CoverageEligibilityRequest_ServicedX{Choice: &cerqpb.CoverageEligibilityRequest_ServicedX_Date{Date: fhir.Date(string(in.Date))}},
		Created:  fhir.DateTime(in.Created),
		Provider: m.PractitionerRef(in.ProviderID),
		Insurer:  m.PayerRef(c.PayerID, c.PayerName),
		Insurance: []*cerqpb.CoverageEligibilityRequest_Insurance{{
			Focal:    fhir.Boolean(true),
			Coverage: m.RecordRef("Coverage", kap.KindCoverage, c.ID, ""),
		}},
	}
	for _, s := range services {
		if _, ok := kap.BillingCodes[s]; !ok {
			return nil, kap.Errorf(kap.EINVALID, "service %q is not a KAP billing code", s)
		}
		r.Item = append(r.Item, &cerqpb.CoverageEligibilityRequest_Details{
			ProductOrService: fhir.CC("", billingCoding(s)),
			Provider:         m.PractitionerRef(in.ProviderID),
		})
	}
	if err := m.codec.Validate(r); err != nil {
		return nil, err
	}
	return r, nil
}

// ReadEligibilityResponse reads a payer's CoverageEligibilityResponse into
// the result stored on the Coverage record: outcome, disposition, the
// focal insurance's inforce, per-service benefits (excluded, authorization
// required) and the error codes. It refuses a response that is not
// valid FHIR or lacks an outcome.
func ReadEligibilityResponse(r *cerspb.CoverageEligibilityResponse) (*kap.EligibilityResult, error) {
	if r == nil {
		return nil, kap.Errorf(kap.EINVALID, "no CoverageEligibilityResponse")
	}
	res := &kap.EligibilityResult{
		Checked:     kap.At(fhir.Time(r.GetCreated())),
		Disposition: r.GetDisposition().GetValue(),
		PreAuthRef:  r.GetPreAuthRef().GetValue(),
	}
	switch r.GetOutcome().GetValue() {
	case cpb.ClaimProcessingCode_QUEUED:
		res.Outcome = "queued"
	case cpb.ClaimProcessingCode_COMPLETE:
		res.Outcome = "complete"
	case cpb.ClaimProcessingCode_ERROR:
		res.Outcome = "error"
	case cpb.ClaimProcessingCode_PARTIAL:
		res.Outcome = "partial"
	default:
		return nil, kap.Errorf(kap.EINVALID, "CoverageEligibilityResponse.outcome is required")
	}
	if res.Checked.IsZero() {
		return nil, kap.Errorf(kap.EINVALID, "CoverageEligibilityResponse.created is required")
	}
	ins := r.GetInsurance()
	for _, in := range ins {
		if in.GetInforce() != nil && res.InForce == nil {
			v := in.GetInforce().GetValue()
			res.InForce = &v
		}
		for _, it := range in.GetItem() {
			b := kap.BenefitResult{
				Excluded:              it.GetExcluded().GetValue(),
				AuthorizationRequired: it.GetAuthorizationRequired().GetValue(),
				Description:           it.GetDescription().GetValue(),
			}
			for _, cd := range it.GetProductOrService().GetCoding() {
				if s := cd.GetSystem().GetValue(); s == fhir.SystemCPT || s == fhir.SystemHCPCS {
					b.Code = cd.GetCode().GetValue()
				}
			}
			if _, known := kap.BillingCodes[b.Code]; b.Code != "" && !known {
				continue // a service we do not bill
			}
			res.Benefits = append(res.Benefits, b)
		}
	}
	for _, e := range r.GetError() {
		code := ""
		if cs := e.GetCode().GetCoding(); len(cs) > 0 {
			code = cs[0].GetCode().GetValue()
		}
		if code == "" {
			code = e.GetCode().GetText().GetValue()
		}
		if code == "" {
			code = "unspecified"
		}
		res.Errors = append(res.Errors, code)
	}
	return res, nil
}

// ReadEligibilityResponseJSON parses (with the codec, which validates) and
// reads a CoverageEligibilityResponse document.
func (m *Mapper) ReadEligibilityResponseJSON(data []byte) (*kap.EligibilityResult, error) {
	cr, err := m.codec.Unmarshal(data)
	if err != nil {
		return nil, err
	}
	r, ok := fhir.Unwrap(cr).(*cerspb.CoverageEligibilityResponse)
	if !ok {
		return nil, kap.Errorf(kap.EINVALID, "not a CoverageEligibilityResponse (got %s)", fhir.ResourceType(cr))
	}
	return ReadEligibilityResponse(r)
}
