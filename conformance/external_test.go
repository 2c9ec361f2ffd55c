package conformance_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kapbridge/kap/conformance"
)

// validators returns the installed third-party validators. Missing
// node_modules fails the test (run scripts/test-deps.sh) unless -short.
func validators(t testing.TB) *conformance.Validators {
	t.Helper()
	v, err := conformance.FindValidators("")
	if errors.Is(err, conformance.ErrValidatorsNotInstalled) && testing.Short() {
		t.Skipf("-short: %v", err)
	}
	if err != nil {
		t.Fatalf("%v", err)
	}
	return v
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// moduleRoot is the directory holding go.mod (tests run in conformance/).
func moduleRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", root, err)
	}
	return root
}

// profilesDir is conformance/profiles (KAP's own StructureDefinitions) when
// it holds any .json file, else "".
func profilesDir(t testing.TB) string {
	d := filepath.Join(moduleRoot(t), "conformance", "profiles")
	if m, _ := filepath.Glob(filepath.Join(d, "*.json")); len(m) > 0 {
		return d
	}
	return ""
}

// TestExternalValidatorsGolden runs both third-party validators over every
// golden FHIR file in testdata/fhir; any error fails the test.
func TestExternalValidatorsGolden(t *testing.T) {
	t.Parallel()
	v := validators(t)
	dir := filepath.Join(moduleRoot(t), "testdata", "fhir")
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) == 0 {
		t.Skipf("no golden FHIR output yet (%s/*.json)", dir)
	}
	rep, err := v.Run(ctxFor(t), files, profilesDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Files != len(files) || rep.Resources < len(files) {
		t.Fatalf("validators saw %d files / %d resources, want %d files", rep.Files, rep.Resources, len(files))
	}
	t.Logf("%d files, %d resources, %d warnings; profiles checked: %v; unavailable offline: %v",
		rep.Files, rep.Resources, rep.Warnings, conformance.SortedCounts(rep.ProfilesChecked), conformance.SortedCounts(rep.ProfilesUnavailable))
	if err := rep.Failure(); err != nil {
		t.Fatal(err)
	}
}

type wantErr struct {
	file, validator, path string
	entry                 int // -1: top-level resource
	profile               string
}

// TestExternalValidatorsCatchBrokenFixtures proves the harness reports what
// each validator must catch, with file, entry and path.
func TestExternalValidatorsCatchBrokenFixtures(t *testing.T) {
	t.Parallel()
	v := validators(t)
	broken := filepath.Join("testdata", "broken")
	rep, err := v.Run(ctxFor(t), []string{broken}, filepath.Join("testdata", "profiles"))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failure() == nil {
		t.Fatal("no errors reported for the broken fixtures")
	}
	const usBP = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-blood-pressure"
	want := []wantErr{
		// Cardinality 1..1 (the JSON schema does not require status: Medplum's job).
		{file: "observation-missing-status.json", validator: "medplum", path: "Observation.status", entry: -1},
		// Required code binding: the JSON schema's enum.
		{file: "observation-bad-status-code.json", validator: "ajv", path: "Observation.status", entry: -1},
		// Primitive formats and types, unknown elements, FHIRPath invariant pat-1.
		{file: "patient-bad-primitives.json", validator: "ajv", path: "Patient.birthDate", entry: -1},
		{file: "patient-bad-primitives.json", validator: "medplum", path: "Patient.birthDate", entry: -1},
		{file: "patient-bad-primitives.json", validator: "ajv", path: "Patient.active", entry: -1},
		{file: "patient-bad-primitives.json", validator: "medplum", path: "Patient.active", entry: -1},
		{file: "patient-bad-primitives.json", validator: "ajv", path: "Patient.nickname", entry: -1},
		{file: "patient-bad-primitives.json", validator: "medplum", path: "Patient.nickname", entry: -1},
		{file: "patient-bad-primitives.json", validator: "medplum", path: "Patient.contact[0]", entry: -1},
		// US Core profile (offline StructureDefinition with snapshot): the
		// required LOINC 85354-9 coding is missing.
		{file: "uscore-bp-missing-loinc.json", validator: "medplum-profile", path: "Observation.code", entry: -1, profile: usBP},
		// FHIR core vital-signs profile: the required LOINC 2708-6 slice.
		{file: "uscore-pulse-ox-missing-coding.json", validator: "medplum-profile", path: "Observation.code.coding", entry: -1, profile: "http://hl7.org/fhir/StructureDefinition/oxygensat"},
		// FHIR core bp profile (slicing rewritten by validate.mjs, which
		// Medplum otherwise fails on every correct blood pressure).
		{file: "r4-bp-missing-systolic.json", validator: "medplum-profile", path: "Observation.component", entry: -1, profile: "http://hl7.org/fhir/StructureDefinition/bp"},
		// A Bundle: the entry's own error carries the entry index; the
		// Bundle's invariant bdl-3 (request mandatory in a transaction).
		{file: "transaction-bundle-broken-entry.json", validator: "medplum", path: "Observation.status", entry: 1},
		{file: "transaction-bundle-broken-entry.json", validator: "medplum", path: "Bundle", entry: -1},
		// An extra profile loaded with --profiles.
		{file: "basic-kap-profile-missing-subject.json", validator: "medplum-profile", path: "Basic.subject", entry: -1, profile: "https://kapbridge.example/fhir/StructureDefinition/kap-test-basic"},
	}
	for _, w := range want {
		if !hasError(rep, w) {
			t.Errorf("missing error %+v; got:\n%v", w, rep.Failure())
		}
	}
	// Every broken fixture is reported at least once, and the Bundle's own
	// run does not repeat entry errors.
	files, _ := filepath.Glob(filepath.Join(broken, "*.json"))
	for _, f := range files {
		n := 0
		for _, e := range rep.Errors {
			if filepath.Base(e.File) == filepath.Base(f) {
				n++
			}
			if e.ResourceType == "Bundle" && strings.HasPrefix(e.Path, "Bundle.entry[") && strings.Contains(e.Path, "].resource") {
				t.Errorf("entry error repeated at Bundle level: %v", e)
			}
		}
		if n == 0 {
			t.Errorf("%s: no error reported", f)
		}
	}
	if rep.ProfilesChecked[usBP] != 1 {
		t.Errorf("profilesChecked[%s] = %d, want 1", usBP, rep.ProfilesChecked[usBP])
	}
	// US Core pulse oximetry has no offline StructureDefinition: reported, not checked.
	const pulseOx = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-pulse-oximetry"
	if rep.ProfilesUnavailable[pulseOx] != 1 {
		t.Errorf("profilesUnavailable[%s] = %d, want 1", pulseOx, rep.ProfilesUnavailable[pulseOx])
	}
}

func hasError(rep conformance.Report, w wantErr) bool {
	for _, e := range rep.Errors {
		entry := -1
		if e.Entry != nil {
			entry = *e.Entry
		}
		if filepath.Base(e.File) == w.file && e.Validator == w.validator && e.Path == w.path && entry == w.entry && e.Profile == w.profile && e.Message != "" {
			return true
		}
	}
	return false
}

// TestExternalValidatorsAcceptValid guards against false positives: a
// valid transaction Bundle declaring US Core and FHIR vital-signs profiles.
func TestExternalValidatorsAcceptValid(t *testing.T) {
	t.Parallel()
	v := validators(t)
	rep, err := v.Run(ctxFor(t), []string{filepath.Join("testdata", "good")}, filepath.Join("testdata", "profiles"))
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Failure(); err != nil {
		t.Fatal(err)
	}
	if rep.Resources != 4 { // 3 entries + the Bundle
		t.Errorf("resources = %d, want 4", rep.Resources)
	}
	for _, p := range []string{
		"http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient",
		"http://hl7.org/fhir/us/core/StructureDefinition/us-core-blood-pressure",
		"http://hl7.org/fhir/StructureDefinition/heartrate",
	} {
		if rep.ProfilesChecked[p] != 1 {
			t.Errorf("profilesChecked[%s] = %d, want 1 (%v)", p, rep.ProfilesChecked[p], rep.ProfilesChecked)
		}
	}
}

// TestExternalValidatorsProfileWithoutSnapshot: an extra profile Medplum
// cannot use is an error, not silently ignored.
func TestExternalValidatorsProfileWithoutSnapshot(t *testing.T) {
	t.Parallel()
	v := validators(t)
	rep, err := v.Run(ctxFor(t), []string{filepath.Join("testdata", "good")}, filepath.Join("testdata", "profiles-bad"))
	if err != nil {
		t.Fatal(err)
	}
	if !hasError(rep, wantErr{file: "kap-test-nosnapshot.json", validator: "profiles", path: "https://kapbridge.example/fhir/StructureDefinition/kap-test-nosnapshot", entry: -1}) {
		t.Fatalf("profile without snapshot not reported: %v", rep.Errors)
	}
}

func TestExternalValidatorsNDJSON(t *testing.T) {
	t.Parallel()
	v := validators(t)
	good, err := os.ReadFile(filepath.Join("testdata", "good", "uscore-bundle.json"))
	if err != nil {
		t.Fatal(err)
	}
	var b struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(good, &b); err != nil {
		t.Fatal(err)
	}
	var in strings.Builder
	for _, e := range b.Entry {
		c, err := json.Marshal(e.Resource) // compacts to one line
		if err != nil {
			t.Fatal(err)
		}
		in.Write(c)
		in.WriteString("\n")
	}
	in.WriteString(`{"resourceType":"Observation","status":"final"}` + "\n") // line 4: no code
	rep, err := v.RunNDJSON(ctxFor(t), strings.NewReader(in.String()), "")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Resources != 4 || len(rep.Errors) == 0 {
		t.Fatalf("resources=%d errors=%v", rep.Resources, rep.Errors)
	}
	for _, e := range rep.Errors {
		if e.Line == nil || *e.Line != 4 {
			t.Errorf("error on unexpected line: %v", e)
		}
	}
	if !hasError(rep, wantErr{file: "<stdin>", validator: "ajv", path: "Observation.code", entry: -1}) ||
		!hasError(rep, wantErr{file: "<stdin>", validator: "medplum", path: "Observation.code", entry: -1}) {
		t.Errorf("missing Observation.code not reported by both validators: %v", rep.Failure())
	}
}

// TestExternalValidatorsProfileFastPath: validate.mjs parses each profile
// once and swaps it in for the base type; it must report exactly what
// Medplum's own validateResource(r, {profile}) reports.
func TestExternalValidatorsProfileFastPath(t *testing.T) {
	t.Parallel()
	v := validators(t)
	paths := []string{filepath.Join("testdata", "broken"), filepath.Join("testdata", "good")}
	fast, err := v.Run(ctxFor(t), paths, filepath.Join("testdata", "profiles"))
	if err != nil {
		t.Fatal(err)
	}
	slowV := *v
	slowV.ScriptArgs = []string{"--slow-profiles"}
	slow, err := slowV.Run(ctxFor(t), paths, filepath.Join("testdata", "profiles"))
	if err != nil {
		t.Fatal(err)
	}
	if len(fast.ProfilesChecked) < 4 {
		t.Fatalf("too few profiles exercised: %v", fast.ProfilesChecked)
	}
	if d := cmp.Diff(slow, fast); d != "" {
		t.Errorf("fast profile path differs from validateResource(r, {profile}) (-slow +fast):\n%s", d)
	}
}

func TestRunExternalValidatorsUsageError(t *testing.T) {
	t.Parallel()
	v := validators(t)
	_, err := v.Run(ctxFor(t), []string{filepath.Join(t.TempDir(), "does-not-exist.json")}, "")
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("err = %v, want usage error naming the missing file", err)
	}
}

// BenchmarkExternalValidators validates 100 transaction Bundles of 50
// entries per iteration (the validators' start-up included) and reports
// resources/s.
func BenchmarkExternalValidators(b *testing.B) {
	v := validators(b)
	dir := b.TempDir()
	good, err := os.ReadFile(filepath.Join("testdata", "good", "uscore-bundle.json"))
	if err != nil {
		b.Fatal(err)
	}
	var src map[string]any
	if err := json.Unmarshal(good, &src); err != nil {
		b.Fatal(err)
	}
	entries := src["entry"].([]any)
	for i := 0; i < 100; i++ {
		var es []any
		for j := 0; j < 50; j++ {
			raw, _ := json.Marshal(entries[j%len(entries)])
			var e map[string]any
			_ = json.Unmarshal(raw, &e)
			e["fullUrl"] = fmt.Sprintf("urn:uuid:00000000-0000-4000-8000-%012d", i*50+j)
			es = append(es, e)
		}
		out, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": es})
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("b%03d.json", i)), out, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	resources := 0
	for i := 0; i < b.N; i++ {
		rep, err := v.Run(context.Background(), []string{dir}, "")
		if err != nil {
			b.Fatal(err)
		}
		resources += rep.Resources
	}
	b.ReportMetric(float64(resources)/b.Elapsed().Seconds(), "resources/s")
}
