package fhir

// A quick pass over a resource that proves fhirvalidate would find nothing.
//
// fhirvalidate (ValidateWithErrorReporter) walks every message and, per
// message, looks its type name up in string sets, its required fields up in
// a map, its descriptor options up with proto.GetExtension, and builds a
// JSON path string for every field it visits, whether or not anything is
// wrong: about a quarter of a submission's CPU. validFast makes the same
// checks with the per-type work cached and no paths:
//
//   - required fields (validation_requirement REQUIRED_BY_FHIR) are set;
//   - String values are at most 1 MB and have no control characters other
//     than tab, newline and carriage return (jsonpbhelper.ValidateString);
//   - UnsignedInt and PositiveInt values are at most 2,147,483,647;
//   - Oid, Id, Uuid and Code values match their value_regex;
//   - Uri, Url and Canonical values pass url.Parse;
//   - a Reference holding a typed id (whose type fhirvalidate checks
//     against the field's allowed types) is not judged here.
//
// It answers only "certainly valid": on anything else Codec.Validate runs
// fhirvalidate itself, which produces the issues (with their paths) as
// before. So a resource passes Validate exactly when it passed before;
// TestValidFastNeverPassesWhatFHIRValidateRejects mutates every golden
// resource in every checked way to hold this.

import (
	"math"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"

	apb "github.com/google/fhir/go/proto/google/fhir/proto/annotations_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

type valueCheck uint8

const (
	checkNone valueCheck = iota
	checkString
	checkUint
	checkRegex
	checkURL
)

// vInfo is the cached per-type work of validFast.
type vInfo struct {
	required []protoreflect.FieldDescriptor
	check    valueCheck
	value    protoreflect.FieldDescriptor
	re       *regexp.Regexp
	ref      bool // a Reference
	children []atomic.Pointer[vInfo]
}

var vCache sync.Map // protoreflect.FullName -> *vInfo

func vInfoOf(d protoreflect.MessageDescriptor) *vInfo {
	if v, ok := vCache.Load(d.FullName()); ok {
		return v.(*vInfo)
	}
	v, _ := vCache.LoadOrStore(d.FullName(), buildVInfo(d))
	return v.(*vInfo)
}

var (
	nameString      = (&dpb.String{}).ProtoReflect().Descriptor().FullName()
	nameUnsigned    = (&dpb.UnsignedInt{}).ProtoReflect().Descriptor().FullName()
	namePositive    = (&dpb.PositiveInt{}).ProtoReflect().Descriptor().FullName()
	regexTypes      = []protoreflect.FullName{(&dpb.Oid{}).ProtoReflect().Descriptor().FullName(), (&dpb.Id{}).ProtoReflect().Descriptor().FullName(), (&dpb.Uuid{}).ProtoReflect().Descriptor().FullName(), (&dpb.Code{}).ProtoReflect().Descriptor().FullName()}
	urlTypes        = []protoreflect.FullName{(&dpb.Uri{}).ProtoReflect().Descriptor().FullName(), (&dpb.Url{}).ProtoReflect().Descriptor().FullName(), (&dpb.Canonical{}).ProtoReflect().Descriptor().FullName()}
	nameReferenceR4 = (&dpb.Reference{}).ProtoReflect().Descriptor().FullName()
)

func buildVInfo(d protoreflect.MessageDescriptor) *vInfo {
	in := &vInfo{}
	fs := d.Fields()
	in.children = make([]atomic.Pointer[vInfo], fs.Len())
	for i := 0; i < fs.Len(); i++ {
		f := fs.Get(i)
		if r, _ := proto.GetExtension(f.Options(), apb.E_ValidationRequirement).(apb.Requirement); r == apb.Requirement_REQUIRED_BY_FHIR {
			in.required = append(in.required, f)
		}
	}
	in.value = fs.ByName("value")
	n := d.FullName()
	switch {
	case n == nameString:
		in.check = checkString
	case n == nameUnsigned || n == namePositive:
		in.check = checkUint
	case contains(regexTypes, n):
		in.check = checkRegex
		if s, _ := proto.GetExtension(d.Options(), apb.E_ValueRegex).(string); s != "" {
			in.re = regexp.MustCompile("^" + s + "$")
		}
	case contains(urlTypes, n):
		in.check = checkURL
	}
	in.ref = proto.HasExtension(d.Options(), apb.E_FhirReferenceType)
	return in
}

func contains(l []protoreflect.FullName, n protoreflect.FullName) bool {
	for _, x := range l {
		if x == n {
			return true
		}
	}
	return false
}

// validator holds the Range callback bound once (a closure per message
// would be an allocation per message) and its state: the type of the
// message being ranged over and the verdict.
type validator struct {
	visit func(protoreflect.FieldDescriptor, protoreflect.Value) bool
	cur   *vInfo
	ok    bool
}

var validatorPool = sync.Pool{New: func() any {
	v := &validator{}
	v.visit = v.field
	return v
}}

// validFast reports whether fhirvalidate certainly finds nothing in res.
func validFast(res proto.Message) bool {
	v := validatorPool.Get().(*validator)
	defer validatorPool.Put(v)
	pb := res.ProtoReflect()
	if !strings.HasPrefix(string(pb.Descriptor().FullName()), r4Package) {
		return false // the type names above are R4's
	}
	v.ok = true
	return v.msg(pb, vInfoOf(pb.Descriptor()))
}

func (v *validator) field(f protoreflect.FieldDescriptor, val protoreflect.Value) bool {
	if f.Message() == nil {
		return true
	}
	ci := &v.cur.children[f.Index()]
	c := ci.Load()
	if c == nil {
		c = vInfoOf(f.Message())
		ci.Store(c)
	}
	if f.IsList() {
		l := val.List()
		for i := 0; i < l.Len(); i++ {
			if !v.msg(l.Get(i).Message(), c) {
				return false
			}
		}
		return true
	}
	return v.msg(val.Message(), c)
}

func (v *validator) msg(pb protoreflect.Message, in *vInfo) bool {
	if !validMsg(pb, in) {
		v.ok = false
		return false
	}
	parent := v.cur
	v.cur = in
	pb.Range(v.visit)
	v.cur = parent
	return v.ok
}

// validMsg checks one message without its children.
func validMsg(pb protoreflect.Message, in *vInfo) bool {
	for _, f := range in.required {
		if !pb.Has(f) {
			return false
		}
	}
	if in.check != checkNone {
		if in.value == nil {
			return false
		}
		v := pb.Get(in.value)
		switch in.check {
		case checkString:
			if !validString(v.String()) {
				return false
			}
		case checkUint:
			if in.value.Kind() != protoreflect.Uint32Kind || v.Uint() > math.MaxInt32 {
				return false
			}
		case checkRegex:
			if in.re == nil || !in.re.MatchString(v.String()) {
				return false
			}
		case checkURL:
			if _, err := url.Parse(v.String()); err != nil {
				return false
			}
		}
	}
	if in.ref {
		// Typed ids (patient_id, ...) are checked against the field's
		// allowed types by fhirvalidate; uri and fragment are not.
		r, ok := pb.Interface().(*dpb.Reference)
		if !ok || pb.Descriptor().FullName() != nameReferenceR4 {
			return false
		}
		if r.GetReference() != nil && r.GetUri() == nil && r.GetFragment() == nil {
			return false
		}
	}
	return true
}

// validString is jsonpbhelper.ValidateString: at most 1 MB, none of
// [\x00-\x08\x0B\x0C\x0E-\x1F] (bytes below 0x80 are whole characters in
// UTF-8, so a byte scan finds what the regexp finds).
func validString(s string) bool {
	if len(s) > 1024*1024 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 && b != '\t' && b != '\n' && b != '\r' {
			return false
		}
	}
	return true
}
