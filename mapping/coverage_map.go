package mapping

import (
	"strings"

	covpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/coverage_go_proto"
	orgpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/organization_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// coverage adds a Coverage record's resources to the builder: the payer
// Organization and the Coverage (MapCoverage, coverage.go, builds the same
// entries; Map uses this so a Coverage travels the normal record path).
func (b *builder) coverage(c *kap.Coverage) error {
	bundle, err := b.m.MapCoverage(c, MapInput{Version: 1, Recorded: b.m.opts.Now()})
	if err != nil {
		return err
	}
	// MapCoverage ends with its own Provenance; Map adds the version's.
	for _, e := range bundle.GetEntry() {
		if fhir.ResourceType(fhir.Unwrap(e.GetResource())) == "Provenance" {
			continue
		}
		b.entries = append(b.entries, e)
	}
	return nil
}

// coverage reads a Coverage record back from its Bundle. The payer
// profile is the gateway's own setting and has no FHIR element: it comes
// back empty (the default, generic) and the eligibility answer is not part
// of the Bundle.
func (ix *index) coverage() (kap.Record, error) {
	cov, ok := ix.withPart("Coverage", "").(*covpb.Coverage)
	if !ok {
		return nil, kap.Errorf(kap.EINVALID, "the Bundle has no Coverage for coverage %s", ix.id)
	}
	c := &kap.Coverage{Kind: kap.KindCoverage, ID: ix.id}
	c.ClientID, _ = ix.m.refID(cov.GetBeneficiary(), kap.KindClient)
	c.MemberID = cov.GetSubscriberId().GetValue()
	if dep := cov.GetDependent().GetValue(); dep != "" {
		c.SubscriberID, c.MemberID = c.MemberID, dep
	}
	c.Relationship = fhir.CodeOf(cov.GetRelationship(), SystemSubscriberRelationship)
	if p := cov.GetPeriod(); p != nil {
		if p.GetStart() != nil {
			c.Start = kap.Date(fhir.Time(p.GetStart()).UTC().Format("2006-01-02"))
		}
		if p.GetEnd() != nil {
			c.End = kap.Date(fhir.Time(p.GetEnd()).UTC().Format("2006-01-02"))
		}
	}
	for _, cl := range cov.GetClassValue() {
		switch fhir.CodeOf(cl.GetType(), SystemCoverageClass) {
		case "group":
			c.GroupNumber = cl.GetValue().GetValue()
		case "plan":
			c.PlanName = cl.GetValue().GetValue()
		}
	}
	c.Order = int(cov.GetOrder().GetValue())
	for _, r := range ix.byType["Organization"] {
		org := r.(*orgpb.Organization)
		for _, id := range org.GetIdentifier() {
			if id.GetSystem().GetValue() != ix.m.System("Organization") {
				continue
			}
			if payer, ok := strings.CutPrefix(id.GetValue().GetValue(), "payer/"); ok {
				c.PayerID, c.PayerName = payer, org.GetName().GetValue()
			}
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}
