package fhir

import (
	"strconv"
	"strings"
	"sync"
	"time"

	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Builders for R4 datatypes. Each returns nil for the zero input where the
// element is optional, so callers can assign unconditionally.

// String returns a String, nil for "".
func String(s string) *dpb.String {
	if s == "" {
		return nil
	}
	return &dpb.String{Value: s}
}

// Code returns a Code, nil for "".
func Code(s string) *dpb.Code {
	if s == "" {
		return nil
	}
	return &dpb.Code{Value: s}
}

// URI returns a Uri, nil for "".
func URI(s string) *dpb.Uri {
	if s == "" {
		return nil
	}
	return &dpb.Uri{Value: s}
}

// Canonical returns a Canonical.
func Canonical(s string) *dpb.Canonical { return &dpb.Canonical{Value: s} }

// ID returns an Id, nil for "".
func ID(s string) *dpb.Id {
	if s == "" {
		return nil
	}
	return &dpb.Id{Value: s}
}

// Boolean returns a Boolean.
func Boolean(b bool) *dpb.Boolean { return &dpb.Boolean{Value: b} }

// Integer returns an Integer.
func Integer(i int) *dpb.Integer { return &dpb.Integer{Value: int32(i)} }

// PositiveInt returns a PositiveInt.
func PositiveInt(i int) *dpb.PositiveInt { return &dpb.PositiveInt{Value: uint32(i)} }

// Decimal returns a Decimal with the shortest text that round-trips.
func Decimal(f float64) *dpb.Decimal {
	return &dpb.Decimal{Value: strconv.FormatFloat(f, 'f', -1, 64)}
}

// DecimalValue parses a Decimal (0 for nil or malformed).
func DecimalValue(d *dpb.Decimal) float64 {
	if d == nil {
		return 0
	}
	f, _ := strconv.ParseFloat(d.GetValue(), 64)
	return f
}

// DateTime returns a DateTime at second (or microsecond) precision in UTC;
// nil for the zero time. UTC makes marshalling about twice as fast.
func DateTime(t time.Time) *dpb.DateTime {
	if t.IsZero() {
		return nil
	}
	p := dpb.DateTime_SECOND
	if t.Nanosecond() != 0 {
		p = dpb.DateTime_MICROSECOND
	}
	return &dpb.DateTime{ValueUs: t.UnixMicro(), Timezone: "Z", Precision: p}
}

// Instant returns an Instant in UTC.
func Instant(t time.Time) *dpb.Instant {
	p := dpb.Instant_SECOND
	if t.Nanosecond() != 0 {
		p = dpb.Instant_MICROSECOND
	}
	return &dpb.Instant{ValueUs: t.UnixMicro(), Timezone: "Z", Precision: p}
}

// Date returns a Date from "YYYY-MM-DD", nil for "" or malformed.
func Date(s string) *dpb.Date {
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		return nil
	}
	return &dpb.Date{ValueUs: t.UnixMicro(), Timezone: "UTC", Precision: dpb.Date_DAY}
}

// DateString formats a Date as "YYYY-MM-DD" (its precision ignored).
func DateString(d *dpb.Date) string {
	if d == nil {
		return ""
	}
	loc := time.UTC
	if d.Timezone != "" && d.Timezone != "UTC" && d.Timezone != "Z" {
		if l, err := time.LoadLocation(d.Timezone); err == nil {
			loc = l
		}
	}
	return time.UnixMicro(d.ValueUs).In(loc).Format("2006-01-02")
}

// Time returns a DateTime as a time.Time in UTC (zero for nil).
func Time(d *dpb.DateTime) time.Time {
	if d == nil {
		return time.Time{}
	}
	return time.UnixMicro(d.ValueUs).UTC()
}

// Period returns a Period; nil when both ends are zero.
func Period(start, end time.Time) *dpb.Period {
	if start.IsZero() && end.IsZero() {
		return nil
	}
	return &dpb.Period{Start: DateTime(start), End: DateTime(end)}
}

// Coding returns a Coding.
func Coding(system, code, display string) *dpb.Coding {
	return &dpb.Coding{System: URI(system), Code: Code(code), Display: String(display)}
}

// CC returns a CodeableConcept with the codings and text (either may be
// empty).
func CC(text string, codings ...*dpb.Coding) *dpb.CodeableConcept {
	return &dpb.CodeableConcept{Coding: codings, Text: String(text)}
}

// CodeOf returns the code of the first coding of cc in system ("" if none).
func CodeOf(cc *dpb.CodeableConcept, system string) string {
	for _, c := range cc.GetCoding() {
		if c.GetSystem().GetValue() == system {
			return c.GetCode().GetValue()
		}
	}
	return ""
}

// HasCoding reports whether cc has the coding system|code.
func HasCoding(cc *dpb.CodeableConcept, system, code string) bool {
	for _, c := range cc.GetCoding() {
		if c.GetSystem().GetValue() == system && c.GetCode().GetValue() == code {
			return true
		}
	}
	return false
}

// Quantity returns a UCUM Quantity; unit is the human-readable unit and code
// the UCUM code.
func Quantity(value float64, unit, code string) *dpb.Quantity {
	return &dpb.Quantity{Value: Decimal(value), Unit: String(unit), System: URI(SystemUCUM), Code: Code(code)}
}

// SimpleQuantity returns a UCUM SimpleQuantity.
func SimpleQuantity(value float64, unit, code string) *dpb.SimpleQuantity {
	return &dpb.SimpleQuantity{Value: Decimal(value), Unit: String(unit), System: URI(SystemUCUM), Code: Code(code)}
}

// Identifier returns an Identifier.
func Identifier(system, value string) *dpb.Identifier {
	return &dpb.Identifier{System: URI(system), Value: String(value)}
}

// IdentifierValue returns the value of the first identifier in system.
func IdentifierValue(ids []*dpb.Identifier, system string) string {
	for _, id := range ids {
		if id.GetSystem().GetValue() == system {
			return id.GetValue().GetValue()
		}
	}
	return ""
}

// Ref returns a Reference holding a literal reference string: a relative
// "Type/id", a "urn:uuid:…" of a Bundle entry, or a conditional reference
// "Type?identifier=system|value".
func Ref(ref string) *dpb.Reference {
	return &dpb.Reference{Reference: &dpb.Reference_Uri{Uri: String(ref)}}
}

// LogicalRef returns a Reference by identifier only, for things the target
// need not hold (the clinic as an organisation, the gateway as a device).
func LogicalRef(system, value, display string) *dpb.Reference {
	return &dpb.Reference{Identifier: Identifier(system, value), Display: String(display)}
}

// RefString returns the literal reference of r as a string: "Type/id" for
// typed ids, the URI otherwise ("" when r has none).
func RefString(r *dpb.Reference) string {
	if r == nil {
		return ""
	}
	if u := r.GetUri(); u != nil {
		return u.GetValue()
	}
	if f := r.GetFragment(); f != nil {
		return "#" + f.GetValue()
	}
	m := r.ProtoReflect()
	od := m.Descriptor().Oneofs().ByName("reference")
	if od == nil {
		return ""
	}
	fd := m.WhichOneof(od)
	if fd == nil {
		return ""
	}
	id, ok := m.Get(fd).Message().Interface().(*dpb.ReferenceId)
	if !ok {
		return ""
	}
	typ := strings.TrimSuffix(snakeToCamel(string(fd.Name())), "Id")
	return typ + "/" + id.GetValue()
}

func snakeToCamel(s string) string {
	var b strings.Builder
	up := true
	for _, r := range s {
		if r == '_' {
			up = true
			continue
		}
		if up && r >= 'a' && r <= 'z' {
			r -= 'a' - 'A'
		}
		up = false
		b.WriteRune(r)
	}
	return b.String()
}

// ConditionalRef returns "Type?identifier=system|value".
func ConditionalRef(resourceType, system, value string) string {
	return resourceType + "?identifier=" + system + "|" + value
}

// ParseConditionalRef splits "Type?identifier=system|value".
func ParseConditionalRef(ref string) (resourceType, system, value string, ok bool) {
	typ, q, found := strings.Cut(ref, "?identifier=")
	if !found {
		return "", "", "", false
	}
	i := strings.LastIndex(q, "|")
	if i < 0 {
		return "", "", "", false
	}
	return typ, q[:i], q[i+1:], true
}

// Narrative returns a generated Narrative from plain text lines, escaped.
func Narrative(lines ...string) *dpb.Narrative {
	var b strings.Builder
	b.WriteString(`<div xmlns="http://www.w3.org/1999/xhtml">`)
	for _, l := range lines {
		b.WriteString("<p>")
		b.WriteString(escapeXML(l))
		b.WriteString("</p>")
	}
	b.WriteString("</div>")
	return &dpb.Narrative{
		Status: &dpb.Narrative_StatusCode{Value: narrativeGenerated},
		Div:    &dpb.Xhtml{Value: b.String()},
	}
}

func escapeXML(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")
	return r.Replace(s)
}

// Meta returns a Meta declaring the profiles (nil for none).
func Meta(profiles ...string) *dpb.Meta {
	if len(profiles) == 0 {
		return nil
	}
	m := &dpb.Meta{}
	for _, p := range profiles {
		m.Profile = append(m.Profile, Canonical(p))
	}
	return m
}

// Extension returns an extension with a value (use the ExtValue* helpers).
func Extension(url string, v *dpb.Extension_ValueX) *dpb.Extension {
	return &dpb.Extension{Url: URI(url), Value: v}
}

// ExtQuantity wraps a Quantity as an extension value.
func ExtQuantity(q *dpb.Quantity) *dpb.Extension_ValueX {
	return &dpb.Extension_ValueX{Choice: &dpb.Extension_ValueX_Quantity{Quantity: q}}
}

// ExtInteger wraps an integer as an extension value.
func ExtInteger(i int) *dpb.Extension_ValueX {
	return &dpb.Extension_ValueX{Choice: &dpb.Extension_ValueX_Integer{Integer: Integer(i)}}
}

// FindExtension returns the first extension with the URL, or nil.
func FindExtension(exts []*dpb.Extension, url string) *dpb.Extension {
	for _, e := range exts {
		if e.GetUrl().GetValue() == url {
			return e
		}
	}
	return nil
}

var containedFields sync.Map // protoreflect.FullName -> protoreflect.FieldDescriptor

// Wrap puts a resource into a ContainedResource (the oneof over every R4
// resource). It panics if res is not an R4 resource.
func Wrap(res proto.Message) *bcrpb.ContainedResource {
	if cr, ok := res.(*bcrpb.ContainedResource); ok {
		return cr
	}
	name := res.ProtoReflect().Descriptor().FullName()
	fdv, ok := containedFields.Load(name)
	if !ok {
		fields := (&bcrpb.ContainedResource{}).ProtoReflect().Descriptor().Fields()
		for i := 0; i < fields.Len(); i++ {
			f := fields.Get(i)
			if f.Message() != nil && f.Message().FullName() == name {
				fdv = f
				break
			}
		}
		if fdv == nil {
			panic("fhir.Wrap: not an R4 resource: " + string(name))
		}
		containedFields.Store(name, fdv)
	}
	cr := &bcrpb.ContainedResource{}
	cr.ProtoReflect().Set(fdv.(protoreflect.FieldDescriptor), protoreflect.ValueOfMessage(res.ProtoReflect()))
	return cr
}

// Unwrap returns the resource held by a ContainedResource (nil if empty).
func Unwrap(cr *bcrpb.ContainedResource) proto.Message {
	if cr == nil {
		return nil
	}
	m := cr.ProtoReflect()
	od := m.Descriptor().Oneofs().Get(0)
	fd := m.WhichOneof(od)
	if fd == nil {
		return nil
	}
	return m.Get(fd).Message().Interface()
}

// ResourceType returns the FHIR type name of a resource ("Observation").
func ResourceType(res proto.Message) string {
	if cr, ok := res.(*bcrpb.ContainedResource); ok {
		res = Unwrap(cr)
		if res == nil {
			return ""
		}
	}
	return string(res.ProtoReflect().Descriptor().Name())
}
