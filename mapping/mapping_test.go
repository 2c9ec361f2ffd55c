package mapping_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/mapping"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/fhir")

// fixedNow makes Provenance.recorded stable in golden files.
var fixedNow = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func newMapper(tb testing.TB) *mapping.Mapper {
	tb.Helper()
	return mapping.New(fhir.MustCodec(), mapping.Options{Tenant: "demo", ClinicName: "Demo KAP Clinic", Now: func() time.Time { return fixedNow }})
}

// testdataRecords loads every record under testdata/kap.
func testdataRecords(tb testing.TB) map[string]kap.Record {
	tb.Helper()
	files, err := filepath.Glob("../testdata/kap/*.json")
	if err != nil {
		tb.Fatal(err)
	}
	if len(files) == 0 {
		tb.Fatal("no records in testdata/kap")
	}
	out := map[string]kap.Record{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		rec, err := kap.DecodeRecord(data)
		if err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = rec
	}
	return out
}

// TestGolden maps every testdata record and compares it with its golden
// Bundle in testdata/fhir (normalised JSON). Run with -update to rewrite.
func TestGolden(t *testing.T) {
	m := newMapper(t)
	for name, rec := range testdataRecords(t) {
		t.Run(name, func(t *testing.T) {
			got, err := m.MapJSON(rec, mapping.MapInput{Version: 1})
			if err != nil {
				t.Fatalf("map: %v", err)
			}
			golden := filepath.Join("..", "testdata", "fhir", name+".json")
			if *update {
				var buf bytes.Buffer
				if err := json.Indent(&buf, got, "", "  "); err != nil {
					t.Fatal(err)
				}
				buf.WriteByte('\n')
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./mapping -update to create it)", err)
			}
			if diff := cmp.Diff(normalize(t, want), normalize(t, got)); diff != "" {
				t.Errorf("Bundle differs from %s (-want +got):\n%s", golden, diff)
			}
		})
	}
}

func normalize(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRoundTrip maps every testdata record to FHIR, marshals it, parses it
// back with the validating unmarshaller and maps it back: the record must
// come back unchanged.
func TestRoundTrip(t *testing.T) {
	m := newMapper(t)
	codec := m.Codec()
	for name, rec := range testdataRecords(t) {
		t.Run(name, func(t *testing.T) {
			data, err := m.MapJSON(rec, mapping.MapInput{Version: 3})
			if err != nil {
				t.Fatalf("map: %v", err)
			}
			cr, err := codec.Unmarshal(data)
			if err != nil {
				t.Fatalf("our own Bundle does not pass the validating unmarshal: %v", err)
			}
			back, err := m.Reverse(cr.GetBundle())
			if err != nil {
				t.Fatalf("reverse: %v", err)
			}
			setKind(rec)
			if diff := cmp.Diff(rec, back); diff != "" {
				t.Errorf("round trip lost data (-want +got):\n%s", diff)
			}
		})
	}
}

func setKind(r kap.Record) {
	b, _ := kap.EncodeRecord(r) // EncodeRecord sets Kind on the record
	_ = b
}

// TestBundleShape checks invariants every Bundle must meet: transaction,
// every entry a conditional PUT on the resource's own identifier, unique
// fullUrls, and every internal reference resolvable.
func TestBundleShape(t *testing.T) {
	m := newMapper(t)
	for name, rec := range testdataRecords(t) {
		t.Run(name, func(t *testing.T) {
			data, err := m.MapJSON(rec, mapping.MapInput{})
			if err != nil {
				t.Fatal(err)
			}
			var b struct {
				Type  string `json:"type"`
				Entry []struct {
					FullURL  string          `json:"fullUrl"`
					Resource json.RawMessage `json:"resource"`
					Request  struct {
						Method string `json:"method"`
						URL    string `json:"url"`
					} `json:"request"`
				} `json:"entry"`
			}
			if err := json.Unmarshal(data, &b); err != nil {
				t.Fatal(err)
			}
			if b.Type != "transaction" {
				t.Errorf("type = %q", b.Type)
			}
			seen := map[string]bool{}
			for i, e := range b.Entry {
				if seen[e.FullURL] || !strings.HasPrefix(e.FullURL, "urn:uuid:") {
					t.Errorf("entry %d: fullUrl %q duplicate or not urn:uuid", i, e.FullURL)
				}
				seen[e.FullURL] = true
				if e.Request.Method != "PUT" || !strings.Contains(e.Request.URL, "?") {
					t.Errorf("entry %d: request %s %s is not a conditional update", i, e.Request.Method, e.Request.URL)
				}
				var res struct {
					ResourceType string `json:"resourceType"`
					Identifier   json.RawMessage
				}
				json.Unmarshal(e.Resource, &res)
				if res.ResourceType != "Provenance" && !strings.HasPrefix(e.Request.URL, res.ResourceType+"?identifier=") {
					t.Errorf("entry %d: %s with request url %s", i, res.ResourceType, e.Request.URL)
				}
				if res.ResourceType != "Provenance" {
					_, sys, val, _ := fhir.ParseConditionalRef(e.Request.URL)
					if !bytes.Contains(res.Identifier, []byte(`"`+sys+`"`)) || !bytes.Contains(res.Identifier, []byte(`"`+val+`"`)) {
						t.Errorf("entry %d: %s identifier %s does not match its request url", i, res.ResourceType, res.Identifier)
					}
				}
			}
			for _, ref := range urnRefs(data) {
				if !seen[ref] {
					t.Errorf("reference %s resolves to no entry", ref)
				}
			}
		})
	}
}

func urnRefs(data []byte) []string {
	var out []string
	s := string(data)
	for {
		i := strings.Index(s, `"reference":"urn:uuid:`)
		if i < 0 {
			return out
		}
		s = s[i+len(`"reference":"`):]
		j := strings.IndexByte(s, '"')
		out = append(out, s[:j])
		s = s[j:]
	}
}

// TestSameRecordSameBundle: mapping is deterministic (same identifiers,
// fullUrls and content), which is what makes resubmission idempotent.
func TestSameRecordSameBundle(t *testing.T) {
	m := newMapper(t)
	for name, rec := range testdataRecords(t) {
		a, err := m.MapJSON(rec, mapping.MapInput{Version: 2})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := m.MapJSON(rec, mapping.MapInput{Version: 2})
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two mappings of the same record differ", name)
		}
	}
}

// TestInvalidRecordRefused: Map validates its input.
func TestInvalidRecordRefused(t *testing.T) {
	m := newMapper(t)
	_, err := m.Map(&kap.Client{ID: "c1"}, mapping.MapInput{})
	if kap.ErrorCode(err) != kap.EINVALID || len(kap.ErrorIssues(err)) < 3 {
		t.Fatalf("got %v, want EINVALID with issues for name, birthDate, gender", err)
	}
}
