package ehr

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
