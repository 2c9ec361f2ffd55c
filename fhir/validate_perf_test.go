package fhir_test

import (
	"os"
	"path/filepath"
	"testing"

	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	d3pb "github.com/google/fhir/go/proto/google/fhir/proto/stu3/datatypes_go_proto"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kapbridge/kap/fhir"
)

// goldenResources returns every entry resource of the golden Bundles.
func goldenResources(t *testing.T, c *fhir.Codec) []proto.Message {
	t.Helper()
	files, err := filepath.Glob("../testdata/fhir/*.json")
	if err != nil || len(files) < 50 {
		t.Fatalf("golden files: %d, %v", len(files), err)
	}
	var out []proto.Message
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cr, err := c.UnmarshalLenient(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range cr.GetBundle().GetEntry() {
			out = append(out, fhir.Unwrap(e.GetResource()))
		}
	}
	return out
}

// nodes lists a message's messages depth first in field order (the same
// order on a clone).
func nodes(m protoreflect.Message, out []protoreflect.Message) []protoreflect.Message {
	out = append(out, m)
	fs := m.Descriptor().Fields()
	for i := 0; i < fs.Len(); i++ {
		f := fs.Get(i)
		if f.Message() == nil || !m.Has(f) {
			continue
		}
		if f.IsList() {
			l := m.Get(f).List()
			for j := 0; j < l.Len(); j++ {
				out = nodes(l.Get(j).Message(), out)
			}
		} else {
			out = nodes(m.Get(f).Message(), out)
		}
	}
	return out
}

// mutations returns the ways to break node n that fhirvalidate checks.
func mutations(n protoreflect.Message) []func(protoreflect.Message) {
	var out []func(protoreflect.Message)
	fs := n.Descriptor().Fields()
	for i := 0; i < fs.Len(); i++ {
		f := fs.Get(i)
		if n.Has(f) {
			out = append(out, func(m protoreflect.Message) { m.Clear(m.Descriptor().Fields().Get(f.Index())) })
		}
	}
	set := func(v string) func(protoreflect.Message) {
		return func(m protoreflect.Message) {
			m.Set(m.Descriptor().Fields().ByName("value"), protoreflect.ValueOfString(v))
		}
	}
	switch n.Interface().(type) {
	case *dpb.String:
		out = append(out, set("a\x01b"), set("tab\tnewline\nfine"), set("\x1f"))
	case *dpb.Code, *dpb.Id, *dpb.Oid, *dpb.Uuid:
		out = append(out, set(" bad value "), set(""), set("a\x01"), set("urn:oid:1.2"), set("x"))
	case *dpb.Uri, *dpb.Url, *dpb.Canonical:
		out = append(out, set("http://[::1"), set("%zz"), set(""))
	case *dpb.PositiveInt, *dpb.UnsignedInt:
		out = append(out, func(m protoreflect.Message) {
			m.Set(m.Descriptor().Fields().ByName("value"), protoreflect.ValueOfUint32(3000000000))
		})
	case *dpb.Reference:
		out = append(out,
			func(m protoreflect.Message) {
				m.Interface().(*dpb.Reference).Reference = &dpb.Reference_PractitionerId{PractitionerId: &dpb.ReferenceId{Value: "x"}}
			},
			func(m protoreflect.Message) {
				m.Interface().(*dpb.Reference).Reference = &dpb.Reference_DeviceId{DeviceId: &dpb.ReferenceId{Value: "x"}}
			},
			func(m protoreflect.Message) {
				m.Interface().(*dpb.Reference).Reference = &dpb.Reference_Fragment{Fragment: &dpb.String{Value: "x"}}
			})
	}
	return out
}

// TestValidFastNeverPassesWhatFHIRValidateRejects: every golden resource
// passes the fast proof; then each resource is broken in every way
// fhirvalidate checks, one at a time (each set field cleared, each string
// given control characters, each code, id and uri given malformed values,
// each int pushed out of range, each reference retyped); whenever
// fhirvalidate reports an issue, the fast proof must fail, and Validate
// must return fhirvalidate's issues.
func TestValidFastNeverPassesWhatFHIRValidateRejects(t *testing.T) {
	c, slow := fhir.MustCodec(), fhir.SlowCodec()
	res := goldenResources(t, c)
	step := 2
	if testing.Short() {
		step = 9
	}
	rejected, tried := 0, 0
	for ri := 0; ri < len(res); ri += step {
		r := res[ri]
		if !fhir.ValidFast(r) || c.Validate(r) != nil {
			t.Fatalf("%s: a golden resource fails the fast proof or Validate", fhir.ResourceType(r))
		}
		ns := nodes(r.ProtoReflect(), nil)
		for ni, n := range ns {
			for _, mut := range mutations(n) {
				tried++
				cl := proto.Clone(r)
				mut(nodes(cl.ProtoReflect(), nil)[ni])
				want := slow.Validate(cl)
				if want == nil {
					continue
				}
				rejected++
				if fhir.ValidFast(cl) {
					t.Fatalf("%s node %d: fhirvalidate reports %v but the fast proof passes", fhir.ResourceType(r), ni, want)
				}
				if got := c.Validate(cl); got == nil || got.Error() != want.Error() {
					t.Fatalf("Validate: %v, want %v", got, want)
				}
			}
		}
	}
	t.Logf("%d resources, %d mutations, %d rejected by fhirvalidate", len(res)/step, tried, rejected)
	if rejected < 1000 {
		t.Errorf("only %d of %d mutations were invalid; the test checks too little", rejected, tried)
	}
}

// TestFastPathsR4Only: the fast paths know R4's types only; other
// versions' messages go to jsonformat and fhirvalidate.
func TestFastPathsR4Only(t *testing.T) {
	s3 := &d3pb.String{Value: "a\x01b"}
	if fhir.ValidFast(s3) {
		t.Error("the fast proof passed an STU3 message")
	}
	if fhir.MustCodec().Validate(s3) == nil {
		t.Error("Validate passed an STU3 String with a control character")
	}
	if _, err := fhir.FastMarshal(&d3pb.Boolean{Value: true}); err == nil {
		t.Error("the fast encoder took an STU3 message")
	}
}
