package httpapi

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// compactDosingBundle is the testdata dosing Bundle as the handler stores
// it (Codec.Marshal: compact, keys sorted).
func compactDosingBundle(tb testing.TB) []byte {
	tb.Helper()
	data, err := os.ReadFile("../../testdata/fhir/16-dosing-c001-1.json")
	if err != nil {
		tb.Fatal(err)
	}
	c := fhir.MustCodec()
	cr, err := c.UnmarshalLenient(data)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := c.Marshal(cr)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// BenchmarkBundleIDs: the logical ids of the 65-entry dosing Bundle, which
// every indexed Put extracts.
func BenchmarkBundleIDs(b *testing.B) {
	bundle := compactDosingBundle(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(bundle)))
	for b.Loop() {
		if ids := bundleIDs(bundle); len(ids) != 65 {
			b.Fatalf("%d ids", len(ids))
		}
	}
}

func TestBundleIDsOfStoredBundle(t *testing.T) {
	ids := bundleIDs(compactDosingBundle(t))
	if len(ids) != 65 {
		t.Fatalf("%d ids, want 65", len(ids))
	}
	types := map[string]int{}
	for _, r := range ids {
		types[r.Type]++
		if r.System != fhirIDSystem || !validFHIRID(r.Value) || len(r.Value) != 36 {
			t.Errorf("id %+v", r)
		}
	}
	if types["Encounter"] != 1 || types["Provenance"] != 1 || types["Observation"] < 50 {
		t.Errorf("types %v", types)
	}
	if !slices.ContainsFunc(ids, func(r kap.ResourceRef) bool {
		return r.Type == "Encounter" && r.Value == "85aa42b9-e30d-593a-b7c5-6387722ba0ec"
	}) {
		t.Errorf("the Encounter's id is missing: %v", ids[:3])
	}
}

// TestBundleIDsMatchEncodingJSON: the goccy decode gives encoding/json's
// ids on every golden Bundle (indented as stored there, and compact), on
// Bundles whose resources carry ids, and nothing on malformed JSON.
func TestBundleIDsMatchEncodingJSON(t *testing.T) {
	ref := func(data []byte) []kap.ResourceRef {
		var b struct {
			Entry []struct {
				FullURL  string `json:"fullUrl"`
				Resource struct {
					ResourceType string `json:"resourceType"`
					ID           string `json:"id"`
				} `json:"resource"`
			} `json:"entry"`
		}
		if json.Unmarshal(data, &b) != nil {
			return nil
		}
		var out []kap.ResourceRef
		for _, e := range b.Entry {
			id := e.Resource.ID
			if id == "" {
				id, _ = strings.CutPrefix(e.FullURL, "urn:uuid:")
			}
			if e.Resource.ResourceType != "" && validFHIRID(id) {
				out = append(out, kap.ResourceRef{Type: e.Resource.ResourceType, System: fhirIDSystem, Value: id})
			}
		}
		return out
	}
	files, _ := filepath.Glob("../../testdata/fhir/*.json")
	if len(files) < 50 {
		t.Fatalf("%d golden files", len(files))
	}
	inputs := [][]byte{
		[]byte(`{"entry":[{"fullUrl":"urn:uuid:a-1","resource":{"resourceType":"Patient","id":"ehr-9","name":[{"text":"x\"}"}]}},{"fullUrl":"http://x/y","resource":{"resourceType":"Observation"}},{"resource":{"id":"bad id","resourceType":"Observation"}}]}`),
		[]byte(`{"entry":[{"fullUrl":"urn:uuid:a-1","resource":{"resourceType":"Patient"}}`),
		[]byte(`not json`),
		[]byte(`{"entry":{}}`),
	}
	c := fhir.MustCodec()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cr, err := c.UnmarshalLenient(data)
		if err != nil {
			t.Fatal(err)
		}
		compact, err := c.Marshal(cr)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, data, compact)
	}
	for i, in := range inputs {
		got, want := bundleIDs(in), ref(in)
		if !slices.Equal(got, want) {
			t.Errorf("input %d (%.80s): got %v, want %v", i, in, got, want)
		}
	}
	if got := bundleIDs(inputs[0]); len(got) != 1 || got[0].Value != "ehr-9" {
		t.Errorf("resource ids: %v", got)
	}
}
