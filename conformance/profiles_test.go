package conformance_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/kapbridge/kap/conformance"
	"github.com/kapbridge/kap/fhir"
)

var update = flag.Bool("update", false, "rewrite conformance/profiles/CodeSystem-kap.json and ValueSet-kap-session-score.json")

const kapProfiles = "profiles" // conformance/profiles, relative to the test's directory

// TestKAPProfilesUpToDate: the committed StructureDefinitions are what
// make-profiles.mjs generates from profiles/src (differential + snapshot).
func TestKAPProfilesUpToDate(t *testing.T) {
	t.Parallel()
	v := validators(t)
	args := append(append([]string{}, v.Args...), filepath.Join(v.Dir, "make-profiles.mjs"), "--check",
		filepath.Join(moduleRoot(t), "conformance", "profiles", "src"), filepath.Join(moduleRoot(t), "conformance", "profiles"))
	cmd := exec.CommandContext(ctxFor(t), v.Node, args...)
	cmd.Dir = v.Dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make-profiles.mjs --check: %v\n%s", err, out)
	}
	srcs, _ := filepath.Glob(filepath.Join(kapProfiles, "src", "*.json"))
	sds, _ := filepath.Glob(filepath.Join(kapProfiles, "StructureDefinition-*.json"))
	if len(srcs) != 5 || len(sds) != len(srcs) {
		t.Fatalf("%d sources, %d StructureDefinitions; want 5 of each", len(srcs), len(sds))
	}
}

func TestKAPProfilesCanonicalsMatchCode(t *testing.T) {
	t.Parallel()
	for _, url := range []string{fhir.ProfileKAPDosingAdministration, fhir.ProfileKAPSessionScore, fhir.ProfileKAPDosingEncounter, fhir.ExtDosePerKg, fhir.ExtMinutes} {
		id := url[strings.LastIndex(url, "/")+1:]
		var sd struct {
			URL      string `json:"url"`
			Snapshot struct {
				Element []json.RawMessage `json:"element"`
			} `json:"snapshot"`
		}
		b, err := os.ReadFile(filepath.Join(kapProfiles, "StructureDefinition-"+id+".json"))
		if err != nil {
			t.Errorf("%s: %v", url, err)
			continue
		}
		if err := json.Unmarshal(b, &sd); err != nil {
			t.Fatal(err)
		}
		if sd.URL != url || len(sd.Snapshot.Element) < 5 {
			t.Errorf("%s: url %q, %d snapshot elements", id, sd.URL, len(sd.Snapshot.Element))
		}
	}
}

// TestKAPProfilesAcceptGood: a hand-built dosing-session Bundle meeting the
// KAP profiles passes, and each KAP profile was really applied.
func TestKAPProfilesAcceptGood(t *testing.T) {
	t.Parallel()
	v := validators(t)
	rep, err := v.Run(ctxFor(t), []string{filepath.Join("testdata", "kap-good")}, kapProfiles)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Failure(); err != nil {
		t.Fatal(err)
	}
	for p, n := range map[string]int{fhir.ProfileKAPDosingAdministration: 1, fhir.ProfileKAPDosingEncounter: 1, fhir.ProfileKAPSessionScore: 2} {
		if rep.ProfilesChecked[p] != n {
			t.Errorf("profilesChecked[%s] = %d, want %d", p, rep.ProfilesChecked[p], n)
		}
	}
}

// TestKAPProfilesCatchBrokenFixtures: Medplum, given --profiles
// conformance/profiles, rejects each broken fixture in testdata/kap-broken
// (each a resource from the good Bundle with one thing wrong) at the
// expected path, and reports nothing else for it.
func TestKAPProfilesCatchBrokenFixtures(t *testing.T) {
	t.Parallel()
	v := validators(t)
	dir := filepath.Join("testdata", "kap-broken")
	rep, err := v.Run(ctxFor(t), []string{dir}, kapProfiles)
	if err != nil {
		t.Fatal(err)
	}
	type want struct{ profile, path, msg string }
	ma, enc, score := fhir.ProfileKAPDosingAdministration, fhir.ProfileKAPDosingEncounter, fhir.ProfileKAPSessionScore
	wants := map[string][]want{
		"ma-missing-dose.json":                         {{ma, "MedicationAdministration.dosage.dose", "Missing required"}},
		"ma-missing-dosage.json":                       {{ma, "MedicationAdministration.dosage", "Missing required"}},
		"ma-missing-context.json":                      {{ma, "MedicationAdministration.context", "Missing required"}},
		"ma-missing-performer.json":                    {{ma, "MedicationAdministration.performer", "Missing required"}},
		"ma-dose-not-mg.json":                          {{ma, "MedicationAdministration.dosage.dose", "pattern"}},
		"ma-route-not-snomed.json":                     {{ma, "MedicationAdministration.dosage.route", "pattern"}},
		"ma-dose-per-kg-wrong-unit.json":               {{ma, "MedicationAdministration", "kap-ma-1"}},
		"encounter-missing-period-end.json":            {{enc, "Encounter.period.end", "Missing required"}},
		"encounter-missing-dosing-session-type.json":   {{enc, "Encounter.type", "dosingSession"}},
		"encounter-class-not-amb.json":                 {{enc, "Encounter.class", "pattern"}},
		"encounter-missing-discharge-disposition.json": {{enc, "Encounter.hospitalization", "Missing required"}},
		"score-missing-encounter.json":                 {{score, "Observation.encounter", "Missing required"}},
		"score-missing-effective.json":                 {{score, "Observation.effective[x]", "Missing required"}},
		"score-not-score-unit.json":                    {{score, "Observation.value[x]", "pattern"}},
		"score-value-integer.json":                     {{score, "Observation.value[x]", "Missing required"}, {score, "Observation.valueInteger", "additional property"}},
		"score-not-kap-code.json":                      {{score, "Observation.code", "pattern"}},
		"score-no-survey-category.json":                {{score, "Observation.category", "survey"}},
		"score-moaas-out-of-range.json":                {{score, "Observation", "kap-score-1"}},
		"score-cadss-out-of-range.json":                {{score, "Observation", "kap-score-2"}},
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) != len(wants) {
		t.Errorf("%d fixtures in %s, %d expectations", len(files), dir, len(wants))
	}
	for _, f := range files {
		name := filepath.Base(f)
		ws, ok := wants[name]
		if !ok {
			t.Errorf("%s: no expectation", name)
			continue
		}
		var got []conformance.ValidationError
		for _, e := range rep.Errors {
			if filepath.Base(e.File) == name {
				got = append(got, e)
			}
		}
		for _, w := range ws {
			found := false
			for _, e := range got {
				if e.Validator == "medplum-profile" && e.Profile == w.profile && e.Path == w.path && strings.Contains(e.Message, w.msg) {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: want %s error at %s containing %q; got %v", name, w.profile, w.path, w.msg, got)
			}
		}
		// Only the KAP profile complains (the fixtures are valid base R4),
		// apart from kap-score-1 which also fires when the value is not a Quantity.
		for _, e := range got {
			if e.Validator != "medplum-profile" {
				t.Errorf("%s: unexpected non-profile error %v", name, e)
			}
		}
	}
}

// TestCodeSystemKAPUpToDate: the committed CodeSystem and ValueSet are what
// KAPConcepts() generates from the domain enumerations.
func TestCodeSystemKAPUpToDate(t *testing.T) {
	for file, gen := range map[string]func() ([]byte, error){
		"CodeSystem-kap.json":             conformance.KAPCodeSystemJSON,
		"ValueSet-kap-session-score.json": conformance.KAPSessionScoreValueSetJSON,
	} {
		want, err := gen()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(kapProfiles, file)
		if *update {
			if err := os.WriteFile(p, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%v (go test ./conformance -run CodeSystem -update writes it)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is out of date: go test ./conformance -run CodeSystem -update", p)
		}
	}
	seen := map[string]bool{}
	for _, c := range conformance.KAPConcepts() {
		if seen[c.Code] || c.Display == "" || c.Definition == "" || strings.TrimSpace(c.Code) != c.Code || c.Code == "" {
			t.Errorf("bad or duplicate concept %+v", c)
		}
		seen[c.Code] = true
	}
}

// kapCodesIn collects every code with system fhir.SystemKAP in a JSON document.
func kapCodesIn(v any, out map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		if x["system"] == fhir.SystemKAP {
			if c, ok := x["code"].(string); ok {
				out[c] = true
			}
		}
		for _, y := range x {
			kapCodesIn(y, out)
		}
	case []any:
		for _, y := range x {
			kapCodesIn(y, out)
		}
	}
}

var (
	// fhir.Coding(fhir.SystemKAP, "literal" [+ ...]
	reCodingLiteral = regexp.MustCompile(`fhir\.Coding\(fhir\.SystemKAP,\s*"([^"]*)"\s*(\+?)`)
	// kapCodeX = "literal" (the mapping's local-code constants)
	reCodeConst = regexp.MustCompile(`(?m)^\s*kapCode\w*\s*=\s*"([^"]*)"`)
	// kapLocalCC("literal"
	reLocalCC = regexp.MustCompile(`kapLocalCC\("([^"]*)"`)
)

// TestCodeSystemKAPCoversMapping: every local code the mapping can emit is
// in the CodeSystem: string literals and local-code constants in mapping/*.go
// (a literal followed by + is a prefix: some concept must start with it),
// and every SystemKAP code in the golden Bundles and the fixtures here.
func TestCodeSystemKAPCoversMapping(t *testing.T) {
	t.Parallel()
	concepts := map[string]bool{}
	for _, c := range conformance.KAPConcepts() {
		concepts[c.Code] = true
	}
	hasPrefix := func(p string) bool {
		for c := range concepts {
			if strings.HasPrefix(c, p) {
				return true
			}
		}
		return false
	}
	srcs, _ := filepath.Glob(filepath.Join(moduleRoot(t), "mapping", "*.go"))
	var literals []string
	for _, f := range srcs {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range reCodingLiteral.FindAllStringSubmatch(string(b), -1) {
			literals = append(literals, m[1])
			if m[2] == "" && !concepts[m[1]] {
				t.Errorf("%s: local code %q is not in the KAP CodeSystem", filepath.Base(f), m[1])
			}
			if m[2] == "+" && !hasPrefix(m[1]) {
				t.Errorf("%s: no KAP concept starts with the local-code prefix %q", filepath.Base(f), m[1])
			}
		}
		for _, re := range []*regexp.Regexp{reCodeConst, reLocalCC} {
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				literals = append(literals, m[1])
				if !hasPrefix(m[1]) {
					t.Errorf("%s: local code (or prefix) %q is not in the KAP CodeSystem", filepath.Base(f), m[1])
				}
			}
		}
	}
	if len(literals) < 10 {
		t.Errorf("found only %d local-code literals in mapping/*.go; has the mapping's code style changed? (%v)", len(literals), literals)
	}
	var docs []string
	for _, g := range []string{
		filepath.Join(goldenDir(t), "*.json"),
		filepath.Join("testdata", "kap-good", "*.json"),
	} {
		m, _ := filepath.Glob(g)
		docs = append(docs, m...)
	}
	used := map[string]bool{}
	for _, f := range docs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		kapCodesIn(v, used)
	}
	var missing []string
	for c := range used {
		if !concepts[c] {
			missing = append(missing, c)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("local codes in golden output missing from the KAP CodeSystem: %v", missing)
	}
	t.Logf("%d concepts; %d literals in mapping/*.go; %d distinct local codes in %d golden/fixture files", len(concepts), len(literals), len(used), len(docs))
}
