package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

const client = `{"kind":"Client","id":"c-test-1","name":{"family":"Testperson","given":["Alex"]},
 "birthDate":"1985-04-12","gender":"female","phone":"555-0100",
 "contacts":[{"name":{"family":"Testescort"},"relationship":"spouse","roles":["escort","emergency"],"phone":"555-0101"}]}`

func TestMapClient(t *testing.T) {
	code, out, errs := run(t, client, "map", "--tenant", "demo", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var b struct {
		ResourceType string `json:"resourceType"`
		Type         string `json:"type"`
		Entry        []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		t.Fatalf("output is not JSON: %v", err)
	}
	if b.ResourceType != "Bundle" || b.Type != "transaction" || len(b.Entry) != 2 ||
		b.Entry[0].Resource.ResourceType != "Patient" || b.Entry[1].Resource.ResourceType != "Provenance" {
		t.Fatalf("unexpected Bundle: %+v", b)
	}
}

func TestMapInvalidRecordNamesField(t *testing.T) {
	bad := strings.Replace(client, `"gender":"female"`, `"gender":"f"`, 1)
	code, _, errs := run(t, bad, "map", "-")
	if code != 1 || !strings.Contains(errs, "gender: must be one of male, female, other, unknown") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
}

// outcome runs validate and returns the exit code and the OperationOutcome
// issues as (severity, expression, diagnostics).
func outcome(t *testing.T, input string) (int, []map[string]any) {
	t.Helper()
	code, out, errs := run(t, input, "validate", "-")
	var oo struct {
		ResourceType string           `json:"resourceType"`
		Issue        []map[string]any `json:"issue"`
	}
	if err := json.Unmarshal([]byte(out), &oo); err != nil || oo.ResourceType != "OperationOutcome" {
		t.Fatalf("validate printed no OperationOutcome (exit %d): %q %q", code, out, errs)
	}
	return code, oo.Issue
}

func hasIssue(issues []map[string]any, expr, diag string) bool {
	for _, is := range issues {
		e, _ := is["expression"].([]any)
		d, _ := is["diagnostics"].(string)
		if (expr == "" || (len(e) > 0 && e[0] == expr)) && strings.Contains(d, diag) {
			return true
		}
	}
	return false
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name, input string
		code        int
		expr, diag  string
	}{
		{"valid record", client, 0, "", "no errors"},
		{"domain error", strings.Replace(client, `"birthDate":"1985-04-12"`, `"birthDate":"1985-13-40"`, 1), 1, "birthDate", "must be a date"},
		{"unknown field", strings.Replace(client, `"gender"`, `"sex":"x","gender"`, 1), 1, "sex", "unknown field"},
		{"wrong type", strings.Replace(client, `"phone":"555-0100"`, `"phone":5550100`, 1), 1, "phone", "must be a string"},
		{"malformed", `{"kind":"Client",`, 1, "", "malformed JSON"},
		{"neither", `{"a":1}`, 1, "", "neither"},
		{"fhir ok", `{"resourceType":"Patient","id":"p1","gender":"male"}`, 0, "", "no errors"},
		{"fhir missing status", `{"resourceType":"Observation","code":{"text":"x"}}`, 1, "", "status"},
		{"fhir duplicate key", `{"resourceType":"Patient","gender":"male","gender":"female"}`, 1, "gender", "duplicate key"},
		{"fhir case variant", `{"resourceType":"Patient","Gender":"male"}`, 1, "", ""},
		{"fhir empty object", `{"resourceType":"Patient","text":{}}`, 1, "text", "empty object"},
		{"empty input", ``, 1, "", "malformed"},
		// conformance rules on the inbound path
		{"vital sign unit", `{"resourceType":"Observation","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2026-01-01T10:00:00Z","valueQuantity":{"value":70,"unit":"bpm","system":"http://unitsofmeasure.org","code":"bpm"}}`, 1, "Observation.valueQuantity.code", "must be one of /min"},
		{"duplicate fullUrl", `{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}]}`, 1, "", "bdl-7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, issues := outcome(t, tc.input)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; issues %v", code, tc.code, issues)
			}
			if !hasIssue(issues, tc.expr, tc.diag) {
				t.Fatalf("no issue with expression %q and diagnostics %q in %v", tc.expr, tc.diag, issues)
			}
		})
	}
}

// TestValidateNeverPanics feeds every prefix of a record and of a FHIR
// resource to validate.
func TestValidateNeverPanics(t *testing.T) {
	inputs := []string{client, `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1}}`}
	for _, in := range inputs {
		for i := 0; i < len(in); i++ {
			code, _, _ := run(t, in[:i], "validate", "-")
			if code != 1 {
				t.Fatalf("prefix %d of %q: exit %d, want 1", i, in, code)
			}
		}
	}
}

func TestValidateSpecExamples(t *testing.T) {
	files, _ := filepath.Glob("../../../shared/corpora/r4-spec-examples/Patient-*.json")
	if len(files) == 0 {
		t.Skip("shared/corpora not beside the checkout")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if code, issues := outcome(t, string(data)); code != 0 {
			t.Errorf("%s: exit %d: %v", filepath.Base(f), code, issues)
		}
	}
}

func TestUsage(t *testing.T) {
	if code, _, _ := run(t, "", "nope"); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
	if code, _, _ := run(t, "", "map"); code != 2 {
		t.Fatalf("map without file: exit %d", code)
	}
	if code, _, errs := run(t, "", "map", "/nonexistent.json"); code != 2 || !strings.Contains(errs, "no such file") {
		t.Fatalf("missing file: exit %d %q", code, errs)
	}
}

func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	code, _, errs := run(t, "", "generate", "--clients", "3", "--seed", "7", "--out", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) < 3 {
		t.Fatalf("only %d files", len(files))
	}
	for _, f := range files {
		if code, _, errs := run(t, "", "validate", f); code != 0 {
			t.Errorf("%s does not validate: %s", filepath.Base(f), errs)
		}
	}
	if code, _, _ := run(t, "", "generate", "--clients", "3"); code != 2 {
		t.Errorf("generate without --out: exit %d", code)
	}
}

func TestCapability(t *testing.T) {
	code, out, errs := run(t, "", "capability")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var cs struct {
		ResourceType string `json:"resourceType"`
		FHIRVersion  string `json:"fhirVersion"`
		Rest         []struct {
			Mode     string `json:"mode"`
			Resource []struct {
				Type             string   `json:"type"`
				SupportedProfile []string `json:"supportedProfile"`
			} `json:"resource"`
		} `json:"rest"`
	}
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		t.Fatal(err)
	}
	if cs.ResourceType != "CapabilityStatement" || cs.FHIRVersion != "4.0.1" || len(cs.Rest) == 0 {
		t.Fatalf("unexpected statement: %+v", cs)
	}
	profiles := map[string][]string{}
	for _, r := range cs.Rest[0].Resource {
		profiles[r.Type] = r.SupportedProfile
	}
	// Generated, not hand-written: what the mapping emits must be there.
	for typ, want := range map[string]string{
		"MedicationAdministration": "https://fhir.kapbridge.org/StructureDefinition/kap-dosing-administration",
		"Patient":                  "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient",
		"Observation":              "http://hl7.org/fhir/us/core/StructureDefinition/us-core-pulse-oximetry",
		"CarePlan":                 "http://hl7.org/fhir/us/core/StructureDefinition/us-core-careplan",
	} {
		found := false
		for _, p := range profiles[typ] {
			found = found || p == want
		}
		if !found {
			t.Errorf("%s: supportedProfile %v lacks %s", typ, profiles[typ], want)
		}
	}
}
