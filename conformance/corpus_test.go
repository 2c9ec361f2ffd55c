package conformance_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/conformance"
	"github.com/kapbridge/kap/fhir"
)

// corporaDir locates ../shared/corpora relative to the repository root
// (this file is in <root>/conformance).
func corporaDir(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "shared", "corpora")
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST.md")); err != nil {
		t.Skipf("the FHIR corpora are not at %s (../shared/corpora from the repository root): %v", dir, err)
	}
	return dir
}

var (
	validatorOnce sync.Once
	validatorInst *conformance.Validator
)

func inboundValidator(t testing.TB) *conformance.Validator {
	validatorOnce.Do(func() { validatorInst = conformance.NewValidator(fhir.MustCodec()) })
	return validatorInst
}

// corpusTypes are the resource types the gateway accepts inbound plus the
// types it emits; the corpus test parses every example of these types.
var corpusTypes = map[string]bool{
	"Patient": true, "Practitioner": true, "MedicationStatement": true, "MedicationRequest": true,
	"Condition": true, "AllergyIntolerance": true, "Observation": true, "Bundle": true,
	"Encounter": true, "Procedure": true, "CarePlan": true, "Goal": true, "Consent": true,
	"AdverseEvent": true, "MedicationAdministration": true, "Medication": true, "Provenance": true,
	"PractitionerRole": true,
}

// readSkips reads testdata/corpus-skip.txt: "path<TAB>reason" per line,
// path relative to the corpora directory; # starts a comment.
func readSkips(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "corpus-skip.txt"))
	if err != nil {
		t.Fatalf("read skip file: %v", err)
	}
	skips := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, reason, ok := strings.Cut(line, "\t")
		if !ok || strings.TrimSpace(reason) == "" {
			t.Fatalf("corpus-skip.txt line %d: want path<TAB>reason", i+1)
		}
		skips[p] = reason
	}
	return skips
}

func errorIssues(err error) []kap.Issue {
	var out []kap.Issue
	for _, is := range kap.ErrorIssues(err) {
		if is.Severity == "" || is.Severity == "error" {
			out = append(out, is)
		}
	}
	if err != nil && len(out) == 0 {
		out = append(out, kap.Issue{Reason: kap.ErrorMessage(err)})
	}
	return out
}

// TestCorpusExamples: every R4 specification example and US Core example
// of the types in corpusTypes passes the inbound validation, except the
// files listed in testdata/corpus-skip.txt, which must fail (no stale
// skips).
func TestCorpusExamples(t *testing.T) {
	root := corporaDir(t)
	skips := readSkips(t)
	v := inboundValidator(t)
	used := map[string]bool{}
	var mu sync.Mutex
	counts := map[string]int{}
	for _, corpus := range []string{"r4-spec-examples", "us-core-examples"} {
		files, err := filepath.Glob(filepath.Join(root, corpus, "*.json"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no files in %s: %v", corpus, err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var head struct {
				ResourceType string `json:"resourceType"`
			}
			if json.Unmarshal(data, &head) != nil || !corpusTypes[head.ResourceType] {
				continue
			}
			rel := corpus + "/" + filepath.Base(f)
			reason, skipped := skips[rel]
			used[rel] = true
			counts[corpus]++
			t.Run(rel, func(t *testing.T) {
				t.Parallel()
				_, err := v.Validate(data)
				errs := errorIssues(err)
				switch {
				case skipped && len(errs) == 0:
					t.Errorf("stale skip: %s passes now; remove it from corpus-skip.txt (reason was: %s)", rel, reason)
				case skipped:
					mu.Lock()
					counts[corpus+" skipped"]++
					mu.Unlock()
					t.Logf("skipped (fails as expected: %s): %v", reason, errs)
				case len(errs) > 0:
					t.Errorf("%s (%s): %d error(s):", rel, head.ResourceType, len(errs))
					for _, is := range errs {
						t.Errorf("  %s", is)
					}
				}
			})
		}
	}
	for p := range skips {
		if strings.HasPrefix(p, "r4-spec-examples/") || strings.HasPrefix(p, "us-core-examples/") {
			if !used[p] {
				t.Errorf("corpus-skip.txt lists %s, which is not an in-scope corpus file", p)
			}
		}
	}
	t.Cleanup(func() {
		t.Logf("parsed: r4-spec-examples %d (skipped %d), us-core-examples %d (skipped %d)",
			counts["r4-spec-examples"], counts["r4-spec-examples skipped"],
			counts["us-core-examples"], counts["us-core-examples skipped"])
	})
}

// TestCorpusSynthea: the Synthea transaction Bundles pass the inbound
// validation with zero errors.
func TestCorpusSynthea(t *testing.T) {
	root := corporaDir(t)
	v := inboundValidator(t)
	files, _ := filepath.Glob(filepath.Join(root, "synthea-r4", "*.json"))
	if len(files) == 0 {
		t.Fatal("no Synthea bundles")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Validate(data)
			for _, is := range errorIssues(err) {
				t.Errorf("%s", is)
			}
		})
	}
}

// primitiveHolders embeds one JSON value of a FHIR primitive type into a
// resource: most types as an extension value[x] of a Patient, the rest in
// a field of that type.
func primitiveHolder(typ string, raw json.RawMessage) []byte {
	camel := ""
	for _, part := range strings.Split(typ, "_") {
		camel += strings.ToUpper(part[:1]) + part[1:]
	}
	switch typ {
	case "xhtml":
		return []byte(`{"resourceType":"Patient","text":{"status":"generated","div":` + string(raw) + `}}`)
	case "id":
		return []byte(`{"resourceType":"Patient","id":` + string(raw) + `}`)
	}
	return []byte(`{"resourceType":"Patient","extension":[{"url":"http://example.org/fhir/StructureDefinition/x","value` + camel + `":` + string(raw) + `}]}`)
}

// fixtureExceptions are google/fhir fixture values where FHIR R4 JSON and
// google/fhir disagree and the gateway follows FHIR; "file:line" → reason.
var fixtureExceptions = map[string]string{
	"xhtml.valid.ndjson:2": `google/fhir accepts "" as xhtml; FHIR JSON forbids empty strings and Narrative.div must be a <div> element`,
}

// TestCorpusGooglePrimitives: the google/fhir R4 primitive fixtures — each
// valid value is accepted and each invalid value refused when embedded in
// a resource. A null line in a .valid file is skipped: google/fhir treats
// null as an absent primitive, while FHIR JSON forbids null properties and
// the gateway refuses them.
func TestCorpusGooglePrimitives(t *testing.T) {
	root := corporaDir(t)
	v := inboundValidator(t)
	files, _ := filepath.Glob(filepath.Join(root, "google-fhir-r4-validation", "*.ndjson"))
	if len(files) == 0 {
		t.Fatal("no google/fhir fixtures")
	}
	var mu sync.Mutex
	n := map[string]int{}
	t.Cleanup(func() {
		t.Logf("google/fhir primitive fixtures: %d valid values accepted of %d, %d invalid values refused of %d, %d not asserted",
			n["valid ok"], n["valid"], n["invalid ok"], n["invalid"], n["excepted"])
	})
	for _, f := range files {
		base := filepath.Base(f)
		typ, kind, _ := strings.Cut(strings.TrimSuffix(base, ".ndjson"), ".")
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		line := 0
		for sc.Scan() {
			line++
			raw := bytes.TrimSpace(sc.Bytes())
			if len(raw) == 0 {
				continue
			}
			why, excepted := fixtureExceptions[fmt.Sprintf("%s:%d", base, line)]
			if kind == "valid" && string(raw) == "null" {
				why, excepted = "null: google/fhir reads a null primitive as absent; FHIR JSON forbids null properties and the gateway refuses them", true
			}
			if excepted {
				mu.Lock()
				n["excepted"]++
				mu.Unlock()
				t.Logf("%s:%d not asserted: %s", base, line, why)
				continue
			}
			mu.Lock()
			n[kind]++
			mu.Unlock()
			doc := primitiveHolder(typ, append(json.RawMessage(nil), raw...))
			t.Run(fmt.Sprintf("%s:%d", base, line), func(t *testing.T) {
				t.Parallel()
				_, err := v.Validate(doc)
				errs := errorIssues(err)
				ok := (kind == "valid") == (len(errs) == 0)
				if ok {
					mu.Lock()
					n[kind+" ok"]++
					mu.Unlock()
				}
				if kind == "valid" && len(errs) > 0 {
					t.Errorf("valid %s value %s refused: %v", typ, raw, errs)
				}
				if kind == "invalid" && len(errs) == 0 {
					t.Errorf("invalid %s value %s accepted", typ, raw)
				}
			})
		}
	}
}

type testCase struct {
	Name           string `json:"name"`
	File           string `json:"file"`
	ResourceType   string `json:"resourceType"`
	SelfContained  bool   `json:"selfContained"`
	ExpectedErrors *int   `json:"expectedErrors"`
}

// minAgreement is the measured number of self-contained R4 fhir-test-cases
// on which the inbound validation agrees with the HL7 reference validator
// (valid vs invalid); a regression below it fails.
const minAgreement = 34

// TestCorpusFHIRTestCases compares the inbound validation with the HL7
// reference (Java) validator's expected outcome on every self-contained
// R4 case of FHIR/fhir-test-cases: valid when expectedErrors == 0.
func TestCorpusFHIRTestCases(t *testing.T) {
	root := corporaDir(t)
	v := inboundValidator(t)
	dir := filepath.Join(root, "fhir-test-cases-r4")
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []testCase
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	type row struct {
		name, rt      string
		want, got     bool // valid?
		expected, n   int
		first         string
		noExpectation bool
	}
	var rows []row
	for _, c := range cases {
		if !c.SelfContained {
			continue
		}
		if c.ExpectedErrors == nil {
			rows = append(rows, row{name: c.Name, rt: c.ResourceType, noExpectation: true})
			continue
		}
		doc, err := os.ReadFile(filepath.Join(dir, c.File))
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		_, verr := v.Validate(doc)
		errs := errorIssues(verr)
		r := row{name: c.Name, rt: c.ResourceType, want: *c.ExpectedErrors == 0, got: len(errs) == 0,
			expected: *c.ExpectedErrors, n: len(errs)}
		if len(errs) > 0 {
			r.first = errs[0].String()
			if len(r.first) > 120 {
				r.first = r.first[:120] + "…"
			}
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].name < rows[j].name })
	var b strings.Builder
	agree, total := 0, 0
	fmt.Fprintf(&b, "| case | type | HL7 errors | ours | agree | our first error |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		if r.noExpectation {
			fmt.Fprintf(&b, "| %s | %s | (no outcome) | - | n/a | |\n", r.name, r.rt)
			continue
		}
		total++
		ok := r.want == r.got
		if ok {
			agree++
		}
		mark := "yes"
		if !ok {
			mark = "**no**"
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %s | %s |\n", r.name, r.rt, r.expected, r.n, mark,
			strings.ReplaceAll(r.first, "|", "\\|"))
	}
	fmt.Fprintf(&b, "\nagreement with the HL7 reference validator: %d of %d self-contained R4 cases\n", agree, total)
	t.Log("\n" + b.String())
	if p := os.Getenv("KAPBRIDGE_CONFORMANCE_REPORT"); p != "" {
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
			t.Errorf("write report: %v", err)
		}
	}
	if total == 0 {
		t.Fatal("no self-contained R4 cases with an expected outcome")
	}
	if agree < minAgreement {
		t.Errorf("agreement %d of %d is below the measured floor %d", agree, total, minAgreement)
	}
}
