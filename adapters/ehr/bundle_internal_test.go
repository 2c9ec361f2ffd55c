package ehr

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kapbridge/kap/fhir"
)

// Every testdata Bundle is ordered so that a resource comes after the
// resources it references (CarePlan.activity.reference included), for the
// per-resource strategies.
func TestOrderPutsReferencedFirst(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/fhir/*.json")
	if len(files) == 0 {
		t.Fatal("no testdata Bundles")
	}
	p, err := LoadProfile("generic")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		es, err := parseBundle(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		pl := makePlan(p, es, nil)
		if len(pl.Send) != len(es) {
			t.Errorf("%s: %d of %d entries planned", filepath.Base(f), len(pl.Send), len(es))
		}
		seen := map[string]bool{}
		for _, e := range pl.Send {
			for _, r := range refsOf(e.Resource) {
				if strings.HasPrefix(r, "urn:uuid:") && !seen[r] {
					t.Errorf("%s: %s references %s before it is written", filepath.Base(f), e.Type, r)
				}
			}
			seen[e.FullURL] = true
		}
	}
}

func TestWalkRefsNested(t *testing.T) {
	res := map[string]any{"activity": []any{map[string]any{"reference": map[string]any{"reference": "urn:uuid:a"}}}, "subject": map[string]any{"reference": "Patient/1"}}
	got := refsOf(res)
	if len(got) != 2 {
		t.Errorf("refs %v, want the nested CarePlan.activity.reference and the subject", got)
	}
}

// The fallback note is valid FHIR R4 for every profile and dosing session.
func TestFallbackNoteIsValidFHIR(t *testing.T) {
	codec := fhir.MustCodec()
	files, _ := filepath.Glob("../../testdata/fhir/*dosing*.json")
	for _, name := range []string{"epic", "oracle-health"} {
		p, err := LoadProfile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, _ := os.ReadFile(f)
			es, err := parseBundle(b)
			if err != nil {
				t.Fatal(err)
			}
			pl := makePlan(p, es, nil)
			if pl.Fallback == nil {
				t.Fatalf("%s %s: no fallback note", name, filepath.Base(f))
			}
			s := &Sender{codec: codec}
			if err := s.validateNote(pl.Fallback); err != nil {
				t.Errorf("%s %s: %v", name, filepath.Base(f), err)
			}
			att := pl.Fallback.Resource["content"].([]any)[0].(map[string]any)["attachment"].(map[string]any)
			data, _ := base64.StdEncoding.DecodeString(att["data"].(string))
			if !strings.Contains(string(data), "MedicationAdministration") {
				t.Errorf("%s %s: note does not summarise the administration:\n%s", name, filepath.Base(f), data)
			}
			if name == "oracle-health" && !strings.HasPrefix(string(data), `<div xmlns="http://www.w3.org/1999/xhtml">`) {
				t.Errorf("oracle-health note is not XHTML: %.80s", data)
			}
		}
	}
}

// BenchmarkPlanDosingSession: the adapter's own work per record before any
// request (parse the Bundle, apply the profile, order, build the note).
func BenchmarkPlanDosingSession(b *testing.B) {
	data, err := os.ReadFile("../../testdata/fhir/16-dosing-c001-1.json")
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"generic", "oracle-health"} {
		p, _ := LoadProfile(name)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				es, err := parseBundle(data)
				if err != nil {
					b.Fatal(err)
				}
				makePlan(p, es, nil)
			}
		})
	}
}
