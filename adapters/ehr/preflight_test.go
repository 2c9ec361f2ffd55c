package ehr_test

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kapbridge/kap/adapters/ehr"
)

func TestEmbeddedProfilesLoad(t *testing.T) {
	names := ehr.Profiles()
	for _, want := range []string{"generic", "epic", "oracle-health"} {
		if !slices.Contains(names, want) {
			t.Errorf("profiles %v lack %s", names, want)
		}
	}
	for _, n := range names {
		p, err := ehr.LoadProfile(n)
		if err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		if p.Name != n {
			t.Errorf("profile file %s names itself %q", n, p.Name)
		}
		for _, r := range append(p.Resources, p.Default) {
			if r.Source == "" {
				t.Errorf("%s: rule %s has no source", n, r.Type)
			}
		}
	}
}

func TestParseProfileReportsEveryProblem(t *testing.T) {
	_, err := ehr.ParseProfile([]byte(`{"name":"","default":{"interactions":["delete"],"otherwise":"drop"},"resources":[{"type":"Observation","interactions":["create"],"otherwise":"fallback"},{"type":"Observation","interactions":[],"otherwise":"not-sent","assumed":true}]}`))
	if err == nil {
		t.Fatal("a broken profile was accepted")
	}
	for _, want := range []string{"name is required", `interaction "delete"`, "otherwise must be", "a source URL is required", "duplicate rule for Observation"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := ehr.ParseProfile([]byte(`{"name":"x","unknown":1}`)); err == nil {
		t.Error("an unknown field was accepted")
	}
}

type tally struct {
	byAction map[string]map[string]int // action -> resource type -> count
	findings []ehr.Finding
}

func preflight(t *testing.T, profile, file string) tally {
	t.Helper()
	p, err := ehr.LoadProfile(profile)
	if err != nil {
		t.Fatal(err)
	}
	fs := ehr.Preflight(p, readTestdata(t, file))
	tl := tally{byAction: map[string]map[string]int{}, findings: fs}
	for _, f := range fs {
		if f.Severity == "error" {
			t.Fatalf("%s on %s: %v", profile, file, f)
		}
		if tl.byAction[f.Action] == nil {
			tl.byAction[f.Action] = map[string]int{}
		}
		tl.byAction[f.Action][f.ResourceType]++
	}
	return tl
}

// vitalSigns counts the vital-sign Observations of a Bundle.
func vitalSigns(t *testing.T, file string) (vitals, observations int) {
	var b struct {
		Entry []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
				Category     []struct {
					Coding []struct{ Code string } `json:"coding"`
				} `json:"category"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(readTestdata(t, file), &b); err != nil {
		t.Fatal(err)
	}
	for _, e := range b.Entry {
		if e.Resource.ResourceType != "Observation" {
			continue
		}
		observations++
		for _, c := range e.Resource.Category {
			for _, cd := range c.Coding {
				if cd.Code == "vital-signs" {
					vitals++
				}
			}
		}
	}
	return
}

func dosingSessions(t *testing.T) []string {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "fhir", "*dosing*.json"))
	if err != nil || len(files) < 5 {
		t.Fatalf("dosing sessions in testdata: %v %v", files, err)
	}
	for i, f := range files {
		files[i] = filepath.Base(f)
	}
	return files
}

func TestPreflightGenericSendsEverything(t *testing.T) {
	for _, f := range dosingSessions(t) {
		tl := preflight(t, "generic", f)
		if len(tl.byAction[ehr.ActionFallback])+len(tl.byAction[ehr.ActionNotSent]) != 0 {
			t.Errorf("%s: generic profile refuses %v", f, tl.findings)
		}
	}
}

func TestPreflightOracleHealth(t *testing.T) {
	for _, f := range dosingSessions(t) {
		tl := preflight(t, "oracle-health", f)
		vitals, obs := vitalSigns(t, f)
		fb := tl.byAction[ehr.ActionFallback]
		if fb["MedicationAdministration"] == 0 {
			t.Errorf("%s: MedicationAdministration (read-only at Oracle Health) not in the fallback: %v", f, fb)
		}
		if got := fb["Observation"]; got != obs-vitals {
			t.Errorf("%s: %d Observations fall back, want %d (all but the %d vital signs)", f, got, obs-vitals, vitals)
		}
		if tl.byAction[ehr.ActionNotSent]["Provenance"] != 1 {
			t.Errorf("%s: Provenance not reported as not sent: %v", f, tl.byAction[ehr.ActionNotSent])
		}
		if tl.byAction[ehr.ActionSend]["DocumentReference"] != 1 {
			t.Errorf("%s: no fallback note planned", f)
		}
	}
}

func TestPreflightEpic(t *testing.T) {
	for _, f := range dosingSessions(t) {
		tl := preflight(t, "epic", f)
		_, obs := vitalSigns(t, f)
		fb := tl.byAction[ehr.ActionFallback]
		// Epic files vital signs against an encounter, and the KAP
		// Encounter is not accepted: every Observation falls back.
		if fb["Encounter"] != 1 || fb["Observation"] != obs {
			t.Errorf("%s: fallback %v, want the Encounter and all %d Observations", f, fb, obs)
		}
		vitals, _ := vitalSigns(t, f)
		encounterBound := 0
		for _, x := range tl.findings {
			if x.ResourceType == "Observation" && x.Action == ehr.ActionFallback && strings.Contains(x.Reason, "only against an encounter") {
				encounterBound++
			}
		}
		if encounterBound != vitals {
			t.Errorf("%s: %d Observations refused for want of an encounter, want the %d vital signs", f, encounterBound, vitals)
		}
	}
	// A Condition is sent, marked provisional.
	tl := preflight(t, "epic", "11-intake-c001.json")
	if tl.byAction["modified"]["Condition"] == 0 {
		t.Errorf("intake Conditions not modified for Epic: %v", tl.findings)
	}
}

func TestPreflightUnreadable(t *testing.T) {
	p, _ := ehr.LoadProfile("generic")
	fs := ehr.Preflight(p, []byte(`{"resourceType":"Bundle","type":"collection"}`))
	if len(fs) != 1 || fs[0].Severity != "error" || !strings.Contains(fs[0].Reason, "transaction") {
		t.Errorf("findings %v, want one error naming the Bundle type", fs)
	}
}
