package conformance_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	cppb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/care_plan_go_proto"
	encpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/encounter_go_proto"
	mapb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/medication_administration_go_proto"
	obspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/observation_go_proto"
	procpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/procedure_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/conformance"
	"github.com/kapbridge/kap/fhir"
)

const usCoreGood = "testdata/uscore/good-bundle.json"

func loadBundle(t *testing.T, path string) *bcrpb.Bundle {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cr, err := fhir.MustCodec().Unmarshal(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b := cr.GetBundle()
	if b == nil {
		t.Fatalf("%s: not a Bundle", path)
	}
	return b
}

// find returns the first resource of type T in b satisfying ok.
func find[T proto.Message](t *testing.T, b *bcrpb.Bundle, ok func(T) bool) T {
	t.Helper()
	for _, e := range b.GetEntry() {
		if r, is := fhir.Unwrap(e.GetResource()).(T); is && (ok == nil || ok(r)) {
			return r
		}
	}
	var zero T
	t.Fatalf("no %T in the fixture", zero)
	return zero
}

func loinc(code string) func(*obspb.Observation) bool {
	return func(o *obspb.Observation) bool { return fhir.HasCoding(o.GetCode(), fhir.SystemLOINC, code) }
}

func dropProfile(m *dpb.Meta, url string) {
	var keep []*dpb.Canonical
	for _, p := range m.GetProfile() {
		if p.GetValue() != url {
			keep = append(keep, p)
		}
	}
	m.Profile = keep
}

func issuesString(is []kap.Issue) string {
	var s []string
	for _, i := range is {
		s = append(s, i.String())
	}
	return strings.Join(s, "\n")
}

// TestCheckUSCoreGood: the hand-built Bundle with every resource type the
// mapping emits passes the Go checks and both third-party validators with
// the KAP profiles.
func TestCheckUSCoreGood(t *testing.T) {
	t.Parallel()
	b := loadBundle(t, usCoreGood)
	if is := append(conformance.CheckUSCore(b), conformance.CheckKAPDeclarations(b)...); len(is) > 0 {
		t.Fatalf("issues on the good Bundle:\n%s", issuesString(is))
	}
	v := validators(t)
	rep, err := v.Run(ctxFor(t), []string{usCoreGood}, kapProfiles)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Failure(); err != nil {
		t.Fatal(err)
	}
	if rep.ProfilesChecked[fhir.ProfileBP] != 1 || rep.ProfilesChecked[fhir.ProfileOxygenSat] != 1 || rep.ProfilesChecked[fhir.ProfileVitalSigns] != 6 {
		t.Errorf("profilesChecked = %v", rep.ProfilesChecked)
	}
}

// TestCheckUSCoreCatchesBroken: each case breaks one requirement of the good
// Bundle; the check must report it at the expected path.
func TestCheckUSCoreCatchesBroken(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		break_ func(t *testing.T, b *bcrpb.Bundle)
		path   string // suffix after Bundle.entry[N].resource.
		reason string
	}{
		{"vital without vital-signs category", func(t *testing.T, b *bcrpb.Bundle) {
			find(t, b, loinc(fhir.LOINCHeartRate)).Category = nil
		}, "category", "vital-signs"},
		{"heart rate unit not /min", func(t *testing.T, b *bcrpb.Bundle) {
			find(t, b, loinc(fhir.LOINCHeartRate)).GetValue().GetQuantity().Code = fhir.Code("beats/min")
		}, "valueQuantity", "/min"},
		{"vital value not UCUM", func(t *testing.T, b *bcrpb.Bundle) {
			find(t, b, loinc(fhir.LOINCBodyWeight)).GetValue().GetQuantity().System = fhir.URI("http://example.org/units")
		}, "valueQuantity", "kg"},
		{"temperature in F without UCUM code", func(t *testing.T, b *bcrpb.Bundle) {
			find(t, b, loinc(fhir.LOINCBodyTemp)).GetValue().GetQuantity().Code = fhir.Code("F")
		}, "valueQuantity", "Cel or [degF]"},
		{"vital without value", func(t *testing.T, b *bcrpb.Bundle) {
			find(t, b, loinc(fhir.LOINCRespRate)).Value = nil
		}, "value", "neither"},
		{"pulse ox without 2708-6", func(t *testing.T, b *bcrpb.Bundle) {
			o := find(t, b, loinc(fhir.LOINCPulseOx))
			o.Code.Coding = o.Code.Coding[:1]
		}, "code.coding", "2708-6"},
		{"pulse ox without 59408-5", func(t *testing.T, b *bcrpb.Bundle) {
			o := find(t, b, loinc(fhir.LOINCPulseOx))
			o.Code.Coding = o.Code.Coding[1:]
		}, "code.coding", "59408-5"},
		{"pulse ox not declaring us-core-pulse-oximetry", func(t *testing.T, b *bcrpb.Bundle) {
			dropProfile(find(t, b, loinc(fhir.LOINCPulseOx)).Meta, fhir.ProfileUSCorePulseOximetry)
		}, "meta.profile", "us-core-pulse-oximetry"},
		{"vital not declaring vitalsigns", func(t *testing.T, b *bcrpb.Bundle) {
			dropProfile(find(t, b, loinc(fhir.LOINCBodyTemp)).Meta, fhir.ProfileVitalSigns)
		}, "meta.profile", "vitalsigns"},
		{"BP with a top-level value", func(t *testing.T, b *bcrpb.Bundle) {
			o := find(t, b, loinc(fhir.LOINCBloodPressure))
			o.Value = &obspb.Observation_ValueX{Choice: &obspb.Observation_ValueX_Quantity{Quantity: fhir.Quantity(128, "mmHg", "mm[Hg]")}}
		}, "value", "top-level value"},
		{"BP component mmHg", func(t *testing.T, b *bcrpb.Bundle) {
			find(t, b, loinc(fhir.LOINCBloodPressure)).Component[0].GetValue().GetQuantity().Code = fhir.Code("mmHg")
		}, "component[0].valueQuantity", "mm[Hg]"},
		{"BP without diastolic", func(t *testing.T, b *bcrpb.Bundle) {
			o := find(t, b, loinc(fhir.LOINCBloodPressure))
			o.Component = o.Component[:1]
		}, "component", "0 components coded 8462-4"},
		{"BP as a separate systolic Observation", func(t *testing.T, b *bcrpb.Bundle) {
			o := find(t, b, loinc(fhir.LOINCBloodPressure))
			o.Code = fhir.CC("", fhir.Coding(fhir.SystemLOINC, fhir.LOINCSystolic, "Systolic blood pressure"))
			o.Component = nil
			o.Value = &obspb.Observation_ValueX{Choice: &obspb.Observation_ValueX_Quantity{Quantity: fhir.Quantity(128, "mmHg", "mm[Hg]")}}
		}, "code", "must be one 85354-9"},
		{"vital without effective", func(t *testing.T, b *bcrpb.Bundle) {
			find(t, b, loinc(fhir.LOINCHeartRate)).Effective = nil
		}, "effective", "effective"},
		{"CarePlan without narrative", func(t *testing.T, b *bcrpb.Bundle) {
			find[*cppb.CarePlan](t, b, nil).Text = nil
		}, "text", "narrative"},
		{"CarePlan narrative without XHTML namespace", func(t *testing.T, b *bcrpb.Bundle) {
			find[*cppb.CarePlan](t, b, nil).Text.Div = &dpb.Xhtml{Value: "<div>plan</div>"}
		}, "text.div", "namespace"},
		{"CarePlan without assess-plan", func(t *testing.T, b *bcrpb.Bundle) {
			find[*cppb.CarePlan](t, b, nil).Category = nil
		}, "category", "assess-plan"},
		{"Procedure without performed", func(t *testing.T, b *bcrpb.Bundle) {
			find[*procpb.Procedure](t, b, nil).Performed = nil
		}, "performed", "performed[x]"},
		{"Encounter without type", func(t *testing.T, b *bcrpb.Bundle) {
			find[*encpb.Encounter](t, b, nil).Type = nil
		}, "type", "no type"},
		{"Encounter not declaring us-core-encounter", func(t *testing.T, b *bcrpb.Bundle) {
			dropProfile(find[*encpb.Encounter](t, b, nil).Meta, fhir.ProfileUSCoreEncounter)
		}, "meta.profile", "us-core-encounter"},
		{"Patient without meta.profile", func(t *testing.T, b *bcrpb.Bundle) {
			fhir.Unwrap(b.Entry[0].Resource).(interface{ GetMeta() *dpb.Meta }).GetMeta().Profile = nil
		}, "meta.profile", "us-core-patient"},
		{"MedicationAdministration context not an Encounter", func(t *testing.T, b *bcrpb.Bundle) {
			find[*mapb.MedicationAdministration](t, b, nil).Context = fhir.Ref("EpisodeOfCare/1")
		}, "context", "Encounter"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := loadBundle(t, usCoreGood)
			c.break_(t, b)
			is := conformance.CheckUSCore(b)
			found := false
			for _, i := range is {
				if strings.HasPrefix(i.Path, "Bundle.entry[") && strings.HasSuffix(i.Path, "].resource."+c.path) && strings.Contains(i.Reason, c.reason) {
					found = true
				}
			}
			if !found {
				t.Errorf("want an issue at ...resource.%s mentioning %q; got:\n%s", c.path, c.reason, issuesString(is))
			}
		})
	}
}

func TestCheckKAPDeclarationsCatchesBroken(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		break_ func(t *testing.T, b *bcrpb.Bundle)
		reason string
	}{
		{"administration", func(t *testing.T, b *bcrpb.Bundle) {
			find[*mapb.MedicationAdministration](t, b, nil).Meta = nil
		}, fhir.ProfileKAPDosingAdministration},
		{"score", func(t *testing.T, b *bcrpb.Bundle) {
			find(t, b, func(o *obspb.Observation) bool { return fhir.HasCoding(o.GetCode(), fhir.SystemKAP, "moaas") }).Meta = nil
		}, fhir.ProfileKAPSessionScore},
		{"encounter", func(t *testing.T, b *bcrpb.Bundle) {
			dropProfile(find[*encpb.Encounter](t, b, nil).Meta, fhir.ProfileKAPDosingEncounter)
		}, fhir.ProfileKAPDosingEncounter},
		{"negative minutes", func(t *testing.T, b *bcrpb.Bundle) {
			p := find(t, b, func(p *procpb.Procedure) bool { return len(p.GetExtension()) > 0 })
			p.Extension[0].Value = fhir.ExtInteger(-5)
		}, fhir.ExtMinutes},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := loadBundle(t, usCoreGood)
			c.break_(t, b)
			is := conformance.CheckKAPDeclarations(b)
			if len(is) != 1 || !strings.Contains(is[0].Reason, c.reason) {
				t.Errorf("want one issue naming %s; got:\n%s", c.reason, issuesString(is))
			}
		})
	}
}

// TestCheckUSCoreGolden: the mapping's golden Bundles (testdata/fhir, or
// $KAPBRIDGE_FHIR_DIR) meet the US Core requirements and declare the KAP
// profiles.
func TestCheckUSCoreGolden(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob(filepath.Join(goldenDir(t), "*.json"))
	if len(files) == 0 {
		t.Skip("no golden FHIR output yet (testdata/fhir/*.json)")
	}
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cr, err := fhir.MustCodec().Unmarshal(data)
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
			continue
		}
		b := cr.GetBundle()
		if b == nil {
			continue // a single resource: nothing Bundle-level to check
		}
		n += len(b.GetEntry())
		if is := append(conformance.CheckUSCore(b), conformance.CheckKAPDeclarations(b)...); len(is) > 0 {
			t.Errorf("%s:\n%s", filepath.Base(f), issuesString(is))
		}
	}
	t.Logf("%d golden files, %d Bundle entries checked", len(files), n)
}

// BenchmarkCheckUSCore runs both Go checks over the 20-entry good Bundle.
func BenchmarkCheckUSCore(b *testing.B) {
	data, err := os.ReadFile(usCoreGood)
	if err != nil {
		b.Fatal(err)
	}
	cr, err := fhir.MustCodec().Unmarshal(data)
	if err != nil {
		b.Fatal(err)
	}
	bundle := cr.GetBundle()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if is := append(conformance.CheckUSCore(bundle), conformance.CheckKAPDeclarations(bundle)...); len(is) != 0 {
			b.Fatal(is)
		}
	}
	b.ReportMetric(float64(b.N*len(bundle.GetEntry()))/b.Elapsed().Seconds(), "entries/s")
}
