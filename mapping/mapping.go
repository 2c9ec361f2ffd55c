// Package mapping translates KAP domain records to FHIR R4 transaction
// Bundles (google/fhir/go protos) and back. It does no I/O.
//
// Every resource gets a business identifier in the clinic's namespace:
// system "<IdentifierBase>/<ResourceType>", value "<record-slug>/<record
// id>[/<part>]" (Patient: the client id; Practitioner and PractitionerRole:
// the provider id). Every Bundle entry is a conditional update
// "PUT <Type>?identifier=<system>|<value>", so sending a record twice never
// creates a second resource. References inside a Bundle use the entries'
// urn:uuid fullUrls (derived from the identifier, so they are stable);
// references to resources of other records (the Patient, Practitioners, a
// plan's MedicationRequest) are conditional references
// "<Type>?identifier=<system>|<value>", which the target resolves, and which
// the outbox makes resolvable by delivering a client's records in order.
package mapping

import (
	"fmt"
	"strings"
	"time"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	provpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/provenance_go_proto"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// Options configure a Mapper.
type Options struct {
	// Tenant is the clinic's tenant id; it names the identifier namespace.
	Tenant string
	// IdentifierBase is the clinic's identifier namespace; default
	// fhir.CanonicalBase + "/sid/" + Tenant.
	IdentifierBase string
	// ClinicName is shown as the Provenance author's display.
	ClinicName string
	// Now gives Provenance.recorded when a call does not; default time.Now.
	Now func() time.Time
}

// Mapper maps records to Bundles and back. It is safe for concurrent use.
type Mapper struct {
	opts  Options
	codec *fhir.Codec
	ns    uuid.UUID
}

// New returns a Mapper.
func New(codec *fhir.Codec, opts Options) *Mapper {
	if opts.Tenant == "" {
		opts.Tenant = "default"
	}
	if opts.IdentifierBase == "" {
		opts.IdentifierBase = fhir.CanonicalBase + "/sid/" + opts.Tenant
	}
	opts.IdentifierBase = strings.TrimRight(opts.IdentifierBase, "/")
	if opts.ClinicName == "" {
		opts.ClinicName = "KAP clinic " + opts.Tenant
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Mapper{opts: opts, codec: codec, ns: uuid.NewSHA1(uuid.NameSpaceURL, []byte(opts.IdentifierBase))}
}

// Codec returns the mapper's codec.
func (m *Mapper) Codec() *fhir.Codec { return m.codec }

// System returns the identifier system for a resource type.
func (m *Mapper) System(resourceType string) string {
	return m.opts.IdentifierBase + "/" + resourceType
}

// Slug returns the identifier prefix of a record kind.
func Slug(k kap.Kind) string {
	switch k {
	case kap.KindIntake:
		return "intake"
	case kap.KindConsent:
		return "consent"
	case kap.KindTreatmentPlan:
		return "plan"
	case kap.KindDosingSession:
		return "dosing"
	case kap.KindIntegrationSession:
		return "integration"
	case kap.KindAssessment:
		return "assessment"
	case kap.KindClient:
		return "client"
	case kap.KindProvider:
		return "provider"
	}
	return strings.ToLower(string(k))
}

// PatientRef returns the conditional reference to a client's Patient.
func (m *Mapper) PatientRef(clientID string) *dpb.Reference {
	return fhir.Ref(fhir.ConditionalRef("Patient", m.System("Patient"), clientID))
}

// PractitionerRef returns the conditional reference to a provider's
// Practitioner.
func (m *Mapper) PractitionerRef(providerID string) *dpb.Reference {
	return fhir.Ref(fhir.ConditionalRef("Practitioner", m.System("Practitioner"), providerID))
}

// RecordRef returns the conditional reference to a resource of another
// record, e.g. RecordRef("Encounter", KindDosingSession, "ds-1", "").
func (m *Mapper) RecordRef(resourceType string, k kap.Kind, id, part string) *dpb.Reference {
	return fhir.Ref(fhir.ConditionalRef(resourceType, m.System(resourceType), Value(k, id, part)))
}

// Value returns the identifier value of a record's resource.
func Value(k kap.Kind, id, part string) string {
	if k == kap.KindClient || k == kap.KindProvider {
		if part == "" {
			return id
		}
		return id + "/" + part
	}
	v := Slug(k) + "/" + id
	if part != "" {
		v += "/" + part
	}
	return v
}

// MapInput is what Map needs besides the record.
type MapInput struct {
	// Version of the record (default 1); it goes into the Provenance tag
	// so each version transmitted has its own Provenance.
	Version int
	// Recorded is Provenance.recorded; default Options.Now().
	Recorded time.Time
}

// Map maps a record to a transaction Bundle. The record must be valid; an
// invalid one returns its validation error. The Bundle is validated with
// google/fhir (fhirvalidate); a failure there is a mapping bug and returns
// EINTERNAL with the issues.
func (m *Mapper) Map(rec kap.Record, in MapInput) (*bcrpb.Bundle, error) {
	if err := rec.Validate(); err != nil {
		return nil, err
	}
	if in.Version <= 0 {
		in.Version = 1
	}
	if in.Recorded.IsZero() {
		in.Recorded = m.opts.Now()
	}
	b := &builder{m: m, rec: rec}
	var err error
	switch r := rec.(type) {
	case *kap.Client:
		err = b.client(r)
	case *kap.Provider:
		err = b.provider(r)
	case *kap.Intake:
		err = b.intake(r)
	case *kap.Consent:
		err = b.consent(r)
	case *kap.TreatmentPlan:
		err = b.plan(r)
	case *kap.DosingSession:
		err = b.dosing(r)
	case *kap.IntegrationSession:
		err = b.integration(r)
	case *kap.Assessment:
		err = b.assessment(r)
	case *kap.Coverage:
		err = b.coverage(r)
	default:
		err = kap.Errorf(kap.EINVALID, "unsupported record type %T", rec)
	}
	if err != nil {
		return nil, err
	}
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

// MapJSON maps a record and marshals the Bundle.
func (m *Mapper) MapJSON(rec kap.Record, in MapInput) ([]byte, error) {
	b, err := m.Map(rec, in)
	if err != nil {
		return nil, err
	}
	return m.codec.Marshal(b)
}

// builder accumulates the entries of one record's Bundle.
type builder struct {
	m       *Mapper
	rec     kap.Record
	entries []*bcrpb.Bundle_Entry
}

// add appends a resource with its identifier value and returns the entry's
// fullUrl (urn:uuid) for references within the Bundle. The resource's
// identifier must already be set to the same system|value.
func (b *builder) add(res proto.Message, value string) string {
	typ := fhir.ResourceType(res)
	sys := b.m.System(typ)
	full := "urn:uuid:" + uuid.NewSHA1(b.m.ns, []byte(sys+"|"+value)).String()
	b.entries = append(b.entries, &bcrpb.Bundle_Entry{
		FullUrl:  fhir.URI(full),
		Resource: fhir.Wrap(res),
		Request: &bcrpb.Bundle_Entry_Request{
			Method: &bcrpb.Bundle_Entry_Request_MethodCode{Value: cpb.HTTPVerbCode_PUT},
			Url:    fhir.URI(fhir.ConditionalRef(typ, sys, value)),
		},
	})
	return full
}

// ident returns the business identifier of a resource of this record.
func (b *builder) ident(resourceType, part string) (*dpb.Identifier, string) {
	v := Value(b.rec.RecordKind(), b.rec.RecordID(), part)
	return fhir.Identifier(b.m.System(resourceType), v), v
}

// ProvenanceTagSystem is the meta.tag system of the Provenance of a record
// version; the code is "<slug>/<id>/v<version>".
func (m *Mapper) ProvenanceTagSystem() string { return m.System("Provenance") }

// provenance adds the Provenance of the record version: the clinic is the
// author, the gateway the transmitter; it targets every entry.
func (b *builder) provenance(in MapInput) {
	code := fmt.Sprintf("%s/v%d", Value(b.rec.RecordKind(), b.rec.RecordID(), ""), in.Version)
	p := &provpb.Provenance{
		Meta: &dpb.Meta{
			Profile: []*dpb.Canonical{fhir.Canonical(fhir.ProfileUSCoreProvenance)},
			Tag:     []*dpb.Coding{fhir.Coding(b.m.ProvenanceTagSystem(), code, "")},
		},
		Recorded: fhir.Instant(in.Recorded),
		Agent: []*provpb.Provenance_Agent{{
			Type: fhir.CC("", fhir.Coding(fhir.SystemProvenanceAgentType, "author", "Author")),
			Who:  fhir.LogicalRef(b.m.opts.IdentifierBase+"/Organization", b.m.opts.Tenant, b.m.opts.ClinicName),
		}},
	}
	for _, e := range b.entries {
		p.Target = append(p.Target, fhir.Ref(e.GetFullUrl().GetValue()))
	}
	sys := b.m.ProvenanceTagSystem()
	full := "urn:uuid:" + uuid.NewSHA1(b.m.ns, []byte(sys+"|"+code)).String()
	b.entries = append(b.entries, &bcrpb.Bundle_Entry{
		FullUrl:  fhir.URI(full),
		Resource: fhir.Wrap(p),
		Request: &bcrpb.Bundle_Entry_Request{
			Method: &bcrpb.Bundle_Entry_Request_MethodCode{Value: cpb.HTTPVerbCode_PUT},
			Url:    fhir.URI("Provenance?_tag=" + sys + "|" + code),
		},
	})
}

// index gives access to a Bundle's resources for the reverse mapping.
type index struct {
	m       *Mapper
	byType  map[string][]proto.Message
	byURL   map[string]proto.Message
	kind    kap.Kind
	id      string
	version int
}

// Reverse maps a Bundle produced by Map back to its record. The record kind
// and id come from the Provenance tag.
func (m *Mapper) Reverse(bundle *bcrpb.Bundle) (kap.Record, error) {
	ix := &index{m: m, byType: map[string][]proto.Message{}, byURL: map[string]proto.Message{}}
	for _, e := range bundle.GetEntry() {
		r := fhir.Unwrap(e.GetResource())
		if r == nil {
			continue
		}
		t := fhir.ResourceType(r)
		ix.byType[t] = append(ix.byType[t], r)
		ix.byURL[e.GetFullUrl().GetValue()] = r
		if p, ok := r.(*provpb.Provenance); ok {
			for _, tag := range p.GetMeta().GetTag() {
				if tag.GetSystem().GetValue() == m.ProvenanceTagSystem() {
					ix.parseTag(tag.GetCode().GetValue())
				}
			}
		}
	}
	if ix.kind == "" {
		return nil, kap.Errorf(kap.EINVALID, "the Bundle has no KAP Bridge Provenance tag; it was not produced by this mapper")
	}
	var rec kap.Record
	var err error
	switch ix.kind {
	case kap.KindClient:
		rec, err = ix.client()
	case kap.KindProvider:
		rec, err = ix.provider()
	case kap.KindIntake:
		rec, err = ix.intake()
	case kap.KindConsent:
		rec, err = ix.consent()
	case kap.KindTreatmentPlan:
		rec, err = ix.plan()
	case kap.KindDosingSession:
		rec, err = ix.dosing()
	case kap.KindIntegrationSession:
		rec, err = ix.integration()
	case kap.KindAssessment:
		rec, err = ix.assessment()
	case kap.KindCoverage:
		rec, err = ix.coverage()
	default:
		err = kap.Errorf(kap.EINVALID, "unknown record kind %q in the Provenance tag", ix.kind)
	}
	if err != nil {
		return nil, err
	}
	return rec, nil
}

func (ix *index) parseTag(code string) {
	i := strings.LastIndex(code, "/v")
	if i < 0 {
		return
	}
	fmt.Sscanf(code[i+2:], "%d", &ix.version)
	head := code[:i]
	slug, id, ok := strings.Cut(head, "/")
	for _, k := range kap.Kinds {
		if !ok {
			break
		}
		if Slug(k) == slug {
			ix.kind, ix.id = k, id
			return
		}
	}
	// Client and Provider values carry no slug; the Provenance of those
	// records targets a Patient or a Practitioner.
	if len(ix.byType["Patient"]) > 0 {
		ix.kind, ix.id = kap.KindClient, head
	} else if len(ix.byType["Practitioner"]) > 0 {
		ix.kind, ix.id = kap.KindProvider, head
	}
}

// first returns the first resource of a type, or nil.
func (ix *index) first(t string) proto.Message {
	if l := ix.byType[t]; len(l) > 0 {
		return l[0]
	}
	return nil
}

// withPart returns the resources of a type whose identifier value (in this
// mapper's system) is the record's value with the given part.
func (ix *index) withPart(t, part string) proto.Message {
	want := Value(ix.kind, ix.id, part)
	for _, r := range ix.byType[t] {
		if identifierValue(ix.m, r) == want {
			return r
		}
	}
	return nil
}

// part returns the part of a resource's identifier value after the record's
// own prefix ("" for the record's main resource, ok=false if not ours).
func (ix *index) part(r proto.Message) (string, bool) {
	v := identifierValue(ix.m, r)
	prefix := Value(ix.kind, ix.id, "")
	if v == prefix {
		return "", true
	}
	p, ok := strings.CutPrefix(v, prefix+"/")
	return p, ok
}

// identifierValue returns the value of a resource's identifier in the
// mapper's system for its type.
func identifierValue(m *Mapper, r proto.Message) string {
	fd := r.ProtoReflect().Descriptor().Fields().ByName("identifier")
	if fd == nil {
		return ""
	}
	sys := m.System(fhir.ResourceType(r))
	v := r.ProtoReflect().Get(fd)
	if fd.IsList() {
		l := v.List()
		for i := 0; i < l.Len(); i++ {
			id := l.Get(i).Message().Interface().(*dpb.Identifier)
			if id.GetSystem().GetValue() == sys {
				return id.GetValue().GetValue()
			}
		}
		return ""
	}
	if id, ok := v.Message().Interface().(*dpb.Identifier); ok && id.GetSystem().GetValue() == sys {
		return id.GetValue().GetValue()
	}
	return ""
}

// refID returns the record-level id a conditional reference to one of this
// mapper's resources names: for "Patient?identifier=<sys>|c001" it is
// "c001"; for "Encounter?identifier=<sys>|dosing/ds-1" with kind
// KindDosingSession it is "ds-1". ok is false for other references.
func (m *Mapper) refID(ref *dpb.Reference, k kap.Kind) (string, bool) {
	typ, sys, val, ok := fhir.ParseConditionalRef(fhir.RefString(ref))
	if !ok || sys != m.System(typ) {
		return "", false
	}
	if k == kap.KindClient || k == kap.KindProvider {
		return val, true
	}
	rest, ok := strings.CutPrefix(val, Slug(k)+"/")
	if !ok {
		return "", false
	}
	id, _, _ := strings.Cut(rest, "/")
	return id, true
}

// resolve returns the resource a Bundle-internal reference points to.
func (ix *index) resolve(ref *dpb.Reference) proto.Message {
	return ix.byURL[fhir.RefString(ref)]
}

// at converts a FHIR DateTime to a kap.Time (UTC).
func at(d *dpb.DateTime) kap.Time {
	if d == nil {
		return kap.Time{}
	}
	return kap.At(fhir.Time(d))
}
