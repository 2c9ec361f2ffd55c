package fhir_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	ptpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/patient_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/synth"
	"github.com/kapbridge/kap/mapping"
)

// sameAsJSONFormat checks that Marshal, and the fast encoder when it
// applies (must says it has to), give jsonformat's bytes for res, the
// Bundle or ContainedResource and each of its entries as bare resources.
func sameAsJSONFormat(t *testing.T, c *fhir.Codec, name string, res proto.Message, must bool) (fast bool) {
	t.Helper()
	want, werr := c.MarshalJSONFormat(proto.Clone(res))
	got, gerr := c.Marshal(proto.Clone(res))
	if (werr == nil) != (gerr == nil) || !bytes.Equal(got, want) {
		t.Errorf("%s: Marshal differs from jsonformat:\n got %s (%v)\nwant %s (%v)", name, got, gerr, want, werr)
		return false
	}
	fastOut, ferr := fhir.FastMarshal(proto.Clone(res))
	switch {
	case ferr == nil && !bytes.Equal(fastOut, want):
		t.Errorf("%s: fast encoder differs from jsonformat:\n got %s\nwant %s", name, fastOut, want)
	case ferr != nil && must:
		t.Errorf("%s: fast encoder fell back (%v); the mapping's output must take the fast path", name, ferr)
	}
	if ferr != nil {
		t.Logf("%.60s: jsonformat (%v)", name, ferr)
	}
	return ferr == nil
}

func TestFastMarshalMatchesJSONFormatGolden(t *testing.T) {
	c := fhir.MustCodec()
	files, err := filepath.Glob("../testdata/fhir/*.json")
	if err != nil || len(files) < 50 {
		t.Fatalf("golden files: %d, %v", len(files), err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cr, err := c.UnmarshalLenient(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := filepath.Base(f)
		sameAsJSONFormat(t, c, name, cr, true)
		sameAsJSONFormat(t, c, name+" (Bundle)", cr.GetBundle(), true)
		for i, e := range cr.GetBundle().GetEntry() {
			sameAsJSONFormat(t, c, name+" entry", e.GetResource(), true)
			sameAsJSONFormat(t, c, name+" bare entry", fhir.Unwrap(e.GetResource()), true)
			_ = i
		}
	}
}

// TestFastMarshalMatchesJSONFormatSynth maps the synthetic clinic's records
// (every kind, random values, two zones) and compares the Bundles.
func TestFastMarshalMatchesJSONFormatSynth(t *testing.T) {
	c := fhir.MustCodec()
	m := mapping.New(c, mapping.Options{Tenant: "synth"})
	n := 12
	if testing.Short() {
		n = 3
	}
	for _, start := range []time.Time{{}, time.Date(2026, 3, 2, 9, 30, 0, 0, time.FixedZone("", 5*3600+1800))} {
		recs, err := synth.Generate(synth.Options{Clients: n, Seed: 7, Start: start})
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[kap.Kind]int{}
		for _, r := range recs {
			b, err := m.Map(r, mapping.MapInput{Version: 3, Recorded: time.Date(2026, 5, 1, 10, 0, 0, 123456000, time.UTC)})
			if err != nil {
				t.Fatalf("%s %s: %v", r.RecordKind(), r.RecordID(), err)
			}
			kinds[r.RecordKind()]++
			sameAsJSONFormat(t, c, string(r.RecordKind())+"/"+r.RecordID(), b, true)
		}
		if len(kinds) < 6 {
			t.Errorf("only %d record kinds generated: %v", len(kinds), kinds)
		}
	}
}

// TestFastMarshalMatchesJSONFormatEdgeCases: what the mapping does not
// produce today: primitive extensions and ids, escapes, decimals, codes,
// choice types, contained resources, references jsonformat rewrites, dates
// in other zones and precisions. Either the fast encoder gives
// jsonformat's bytes or Marshal falls back to jsonformat.
func TestFastMarshalMatchesJSONFormatEdgeCases(t *testing.T) {
	c := fhir.MustCodec()
	fast := 0
	for i, in := range []string{
		`{"resourceType":"Patient","id":"p1","gender":"female","birthDate":"1990-02-03","_birthDate":{"id":"b1","extension":[{"url":"http://x/e","valueString":"a\"b\\c\u2028\u2029<>&é😀"}]}}`,
		`{"resourceType":"Patient","name":[{"given":["A","B","C"],"_given":[{"id":"g1"},{"extension":[{"url":"http://x/g","valueBoolean":true}]},{"id":"g3","extension":[{"url":"http://x/h","valueCode":"c"}]}],"family":"Ünïcødé"}]}`,
		`{"resourceType":"Patient","birthDate":"1990","deceasedDateTime":"2020-05","multipleBirthInteger":-2}`,
		`{"resourceType":"Patient","birthDate":"1990-02","deceasedDateTime":"2020-05-06T07:08:09.123+05:30"}`,
		`{"resourceType":"Patient","deceasedDateTime":"2020-05-06T07:08:09.123456Z"}`,
		`{"resourceType":"Patient","deceasedBoolean":false,"active":true}`,
		`{"resourceType":"Patient","deceasedDateTime":"2020-05-06T07:08:09.5Z"}`,
		`{"resourceType":"Patient","deceasedDateTime":"2020-05-06"}`,
		`{"resourceType":"Patient","managingOrganization":{"reference":"#org1"},"contained":[{"resourceType":"Organization","id":"org1","name":"X"}]}`,
		`{"resourceType":"Patient","managingOrganization":{"reference":"Organization/o1","type":"Organization","display":"O"}}`,
		`{"resourceType":"Patient","managingOrganization":{"display":"no reference"}}`,
		`{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":72.10,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"},"component":[{"code":{"text":"a"},"valueQuantity":{"value":1e2}},{"code":{"text":"b"},"valueQuantity":{"value":-0.0}},{"code":{"text":"c"},"valueString":"s"},{"code":{"text":"d"},"valueInteger":2147483647}]}`,
		`{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":12345678901234567890.123}}`,
		`{"resourceType":"Observation","status":"entered-in-error","code":{"text":"x"},"effectivePeriod":{"start":"2026-01-01T00:00:00Z"},"valueCodeableConcept":{"coding":[{"system":"http://loinc.org","code":"LA1-0","userSelected":true}]},"extension":[{"url":"http://x/a","extension":[{"url":"b","valueDecimal":0.000100},{"url":"c","valueCode":"z"}]}]}`,
		`{"resourceType":"MedicationAdministration","status":"completed","medicationCodeableConcept":{"text":"ketamine"},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2026-02-03T04:05:06Z","dosage":{"dose":{"value":0.5,"unit":"mg/kg"},"route":{"text":"IM"}}}`,
		`{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient","active":true},"request":{"method":"PUT","url":"Patient?identifier=a|b"}}]}`,
		`{"resourceType":"Binary","contentType":"text/plain","data":"aGVsbG8="}`,
		`{"resourceType":"Provenance","target":[{"reference":"urn:uuid:x"}],"recorded":"2026-01-02T03:04:05.678+01:00","agent":[{"who":{"display":"x"}}]}`,
		`{"resourceType":"Appointment","status":"booked","participant":[{"status":"accepted","actor":{"display":"a"}}],"minutesDuration":30,"start":"2026-01-02T03:04:05Z","end":"2026-01-02T03:34:05Z"}`,
		`{"resourceType":"Questionnaire","status":"active","item":[{"linkId":"1","type":"choice","text":"q","answerOption":[{"valueCoding":{"code":"a"}}],"enableWhen":[{"question":"0","operator":"=","answerBoolean":true}]}]}`,
	} {
		cr, err := c.UnmarshalLenient([]byte(in))
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if sameAsJSONFormat(t, c, in, cr, false) {
			fast++
		}
		sameAsJSONFormat(t, c, in+" (bare)", fhir.Unwrap(cr), false)
	}
	// Left to jsonformat: the +05:30 dateTime, the contained resource
	// (Any), the fragment and the relative references (parsed into typed
	// ids, which jsonformat rewrites in place), base64Binary.
	if fast != 15 {
		t.Errorf("%d edge cases took the fast path, want 15", fast)
	}
}

// TestFastMarshalMatchesJSONFormatBuilt: values the JSON parser refuses
// but a Go caller can put into a proto (control characters, invalid UTF-8,
// a "UTC" zone name on a dateTime, code enums, unsigned ints).
func TestFastMarshalMatchesJSONFormatBuilt(t *testing.T) {
	c := fhir.MustCodec()
	fast := 0
	defer func() {
		// Left to jsonformat: the dateTime without a zone name, the
		// America/Denver date, the typed reference.
		if fast != 10 {
			t.Errorf("%d built cases took the fast path, want 10", fast)
		}
	}()
	at := time.Date(2026, 1, 2, 3, 4, 5, 678900000, time.UTC).UnixMicro()
	for i, p := range []*ptpb.Patient{
		{Id: fhir.ID("p1"), Name: []*dpb.HumanName{{Text: fhir.String("a\x01\x1f\b\f\n\r\t\"\\ \xff\xfe end \u2028")}}},
		{Deceased: &ptpb.Patient_DeceasedX{Choice: &ptpb.Patient_DeceasedX_DateTime{DateTime: &dpb.DateTime{ValueUs: at, Timezone: "UTC", Precision: dpb.DateTime_SECOND}}}},
		{Deceased: &ptpb.Patient_DeceasedX{Choice: &ptpb.Patient_DeceasedX_DateTime{DateTime: &dpb.DateTime{ValueUs: at, Timezone: "UTC", Precision: dpb.DateTime_MICROSECOND}}}},
		{Deceased: &ptpb.Patient_DeceasedX{Choice: &ptpb.Patient_DeceasedX_DateTime{DateTime: &dpb.DateTime{ValueUs: -at, Timezone: "Z", Precision: dpb.DateTime_MILLISECOND}}}},
		{Deceased: &ptpb.Patient_DeceasedX{Choice: &ptpb.Patient_DeceasedX_DateTime{DateTime: &dpb.DateTime{ValueUs: at, Timezone: "", Precision: dpb.DateTime_SECOND}}}},
		{BirthDate: &dpb.Date{ValueUs: at, Timezone: "Z", Precision: dpb.Date_MONTH}},
		{BirthDate: &dpb.Date{ValueUs: at, Timezone: "America/Denver", Precision: dpb.Date_DAY}},
		{Gender: &ptpb.Patient_GenderCode{Value: cpb.AdministrativeGenderCode_OTHER}, Active: &dpb.Boolean{Value: true}},
		{Gender: &ptpb.Patient_GenderCode{}, MultipleBirth: &ptpb.Patient_MultipleBirthX{Choice: &ptpb.Patient_MultipleBirthX_Integer{Integer: &dpb.Integer{Value: -7}}}},
		{Gender: &ptpb.Patient_GenderCode{Id: fhir.String("g")}},
		{Photo: []*dpb.Attachment{{Size: &dpb.UnsignedInt{Value: 4000000000}, Title: &dpb.String{}}}},
		{ManagingOrganization: &dpb.Reference{Reference: &dpb.Reference_OrganizationId{OrganizationId: &dpb.ReferenceId{Value: "o1"}}}},
		{Text: &dpb.Narrative{Status: &dpb.Narrative_StatusCode{Value: cpb.NarrativeStatusCode_GENERATED}, Div: &dpb.Xhtml{Value: "<div xmlns=\"http://www.w3.org/1999/xhtml\">x &amp; y</div>"}}},
	} {
		if sameAsJSONFormat(t, c, fmt.Sprintf("built %d", i), p, false) {
			fast++
		}
		sameAsJSONFormat(t, c, fmt.Sprintf("built %d (contained)", i), fhir.Wrap(p), false)
	}
}

// TestFastMarshalFallsBackWhereJSONFormatRewrites: a Reference fragment and
// a dateTime with an offset take jsonformat's path (which rewrites the
// reference in place); the output is the same either way.
func TestFastMarshalFallsBackWhereJSONFormatRewrites(t *testing.T) {
	c := fhir.MustCodec()
	for _, in := range []string{
		`{"resourceType":"Patient","managingOrganization":{"reference":"#org1"},"contained":[{"resourceType":"Organization","id":"org1"}]}`,
		`{"resourceType":"Patient","deceasedDateTime":"2020-05-06T07:08:09+02:00"}`,
		`{"resourceType":"Binary","contentType":"text/plain","data":"aGVsbG8="}`,
	} {
		cr, err := c.UnmarshalLenient([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fhir.FastMarshal(cr); err == nil {
			t.Errorf("%s: the fast encoder should leave this to jsonformat", in)
		}
	}
}

// cpuTime is the process's user+system CPU time (the benchmarks report it
// per operation: wall time on a loaded machine says little).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// dosingBundle is the golden Bundle of the testdata dosing session
// (65 entries, the Bundle a POST /kap/v1/dosing-sessions maps).
func dosingBundle(tb testing.TB, c *fhir.Codec) *bcrpb.Bundle {
	tb.Helper()
	data, err := os.ReadFile("../testdata/fhir/16-dosing-c001-1.json")
	if err != nil {
		tb.Fatal(err)
	}
	cr, err := c.UnmarshalLenient(data)
	if err != nil {
		tb.Fatal(err)
	}
	return cr.GetBundle()
}

// BenchmarkMarshalDosingBundle: Codec.Marshal of the 65-entry Bundle, with
// the fast encoder (fast) and with jsonformat alone (jsonformat).
func BenchmarkMarshalDosingBundle(b *testing.B) {
	for _, v := range []struct {
		name string
		c    *fhir.Codec
	}{{"fast", fhir.MustCodec()}, {"jsonformat", fhir.SlowCodec()}} {
		b.Run(v.name, func(b *testing.B) {
			bundle := dosingBundle(b, v.c)
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				out, err := v.c.Marshal(bundle)
				if err != nil || len(out) == 0 {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(out)))
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
		})
	}
}

// BenchmarkValidateDosingBundle: Codec.Validate of every entry of the
// 65-entry Bundle, as mapping.Map does, with the fast proof (fast) and
// with fhirvalidate alone (fhirvalidate).
func BenchmarkValidateDosingBundle(b *testing.B) {
	for _, v := range []struct {
		name string
		c    *fhir.Codec
	}{{"fast", fhir.MustCodec()}, {"fhirvalidate", fhir.SlowCodec()}} {
		b.Run(v.name, func(b *testing.B) {
			bundle := dosingBundle(b, v.c)
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				for _, e := range bundle.GetEntry() {
					if err := v.c.Validate(e.GetResource()); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
		})
	}
}

// TestFastPathsConcurrent: the encoder and the validity proof share
// per-type caches and pooled state; concurrent use gives every caller
// its own jsonformat bytes and verdicts (run with -race).
func TestFastPathsConcurrent(t *testing.T) {
	c := fhir.MustCodec()
	files, _ := filepath.Glob("../testdata/fhir/*.json")
	type job struct {
		b    *bcrpb.Bundle
		want []byte
	}
	var jobs []job
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cr, err := c.UnmarshalLenient(data)
		if err != nil {
			t.Fatal(err)
		}
		want, err := c.MarshalJSONFormat(cr.GetBundle())
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, job{cr.GetBundle(), want})
	}
	fresh := fhir.MustCodec()
	done := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func(g int) {
			for i := range jobs {
				j := jobs[(i+g*7)%len(jobs)]
				got, err := fresh.Marshal(j.b)
				if err != nil || !bytes.Equal(got, j.want) {
					done <- fmt.Errorf("goroutine %d: Bundle %d differs (%v)", g, i, err)
					return
				}
				for _, e := range j.b.GetEntry() {
					if err := fresh.Validate(e.GetResource()); err != nil {
						done <- err
						return
					}
				}
			}
			done <- nil
		}(g)
	}
	for g := 0; g < 8; g++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
