package kap_test

import (
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/kapbridge/kap"
)

func loadRecord[T kap.Record](t *testing.T, file string) T {
	t.Helper()
	data, err := os.ReadFile("testdata/kap/" + file)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := kap.DecodeRecord(data)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	r, ok := rec.(T)
	if !ok {
		t.Fatalf("%s is a %T", file, rec)
	}
	return r
}

func testCoverage(clientID string) *kap.Coverage {
	return &kap.Coverage{Kind: kap.KindCoverage, ID: "cov-" + clientID, ClientID: clientID, PayerID: "payer-1",
		PayerName: "Test Plan", MemberID: "M1", Relationship: "self", Start: "2026-01-01", End: "2026-12-31"}
}

// testProfile is a payer profile with every rule switched on for some code.
func testProfile() *kap.PayerProfile {
	return &kap.PayerProfile{
		ID: "test", Name: "Test payer", HourUnits: "midpoint", RequireCoverage: true,
		Covered:           []string{"0820T", "0821T", "0822T", "90832", "90834", "90837", "90853", "90785", "96365", "96366", "G2082", "G2083", "J3490", "J0013"},
		RequiredModifiers: map[string][]string{"G2082": {"KX"}, "G2083": {"KX"}},
		PriorAuth:         []string{"G2083"},
		DrugLines:         map[string]string{"IV": "J3490", "IM": "J3490"},
		Bundled:           map[string][]string{"G2082": {"J0013"}, "G2083": {"J0013"}},
		MaxUnits:          map[string]int{"0820T": 3},
		DiagnosisPrefixes: map[string][]string{"G2082": {"F32", "F33"}},
	}
}

func TestHourAndInfusionUnits(t *testing.T) {
	for _, c := range []struct {
		min, mid, whole int
	}{{0, 0, 0}, {30, 0, 0}, {31, 1, 0}, {59, 1, 0}, {60, 1, 1}, {90, 1, 1}, {91, 2, 1}, {150, 2, 2}, {151, 3, 2}, {160, 3, 2}, {210, 3, 3}, {211, 4, 3}} {
		if got := kap.HourUnits(c.min, "midpoint"); got != c.mid {
			t.Errorf("HourUnits(%d, midpoint) = %d, want %d", c.min, got, c.mid)
		}
		if got := kap.HourUnits(c.min, "whole"); got != c.whole {
			t.Errorf("HourUnits(%d, whole) = %d, want %d", c.min, got, c.whole)
		}
	}
	for _, c := range []struct{ min, ini, add int }{{10, 0, 0}, {15, 0, 0}, {16, 1, 0}, {60, 1, 0}, {90, 1, 0}, {91, 1, 1}, {150, 1, 1}, {151, 1, 2}} {
		ini, add := kap.InfusionUnits(c.min)
		if ini != c.ini || add != c.add {
			t.Errorf("InfusionUnits(%d) = %d, %d; want %d, %d", c.min, ini, add, c.ini, c.add)
		}
	}
}

// rules returns the preflight rules raised, in order.
func rules(is []kap.PreflightIssue) string {
	var s []string
	for _, i := range is {
		s = append(s, i.Rule+"@"+i.Path)
	}
	return strings.Join(s, " ")
}

// TestPreflightReasons starts from a claim that passes and breaks it once
// per refusal reason; each break must raise that reason, naming the field.
func TestPreflightReasons(t *testing.T) {
	ds := loadRecord[*kap.DosingSession](t, "35-dosing-c002-1.json") // IM, 0820T + 0822T + J3490, 145 min
	esk := loadRecord[*kap.DosingSession](t, "75-dosing-c006-7-esketamine84.json")
	is := loadRecord[*kap.IntegrationSession](t, "55-integration-c004-1.json") // 30 min: 90832
	p := testProfile()
	build := func(in kap.ClaimInput) (*kap.Claim, kap.PreflightInput) {
		t.Helper()
		if in.Coverage == nil {
			in.Coverage = testCoverage(ds.ClientID)
		}
		if len(in.Diagnoses) == 0 {
			in.Diagnoses = []string{"F43.12", "F33.1"}
		}
		c, err := kap.BuildClaim(in, p)
		if err != nil {
			t.Fatal(err)
		}
		return c, kap.PreflightInput{Claim: c, Profile: p, Coverage: in.Coverage, Dosing: in.Dosing, Integration: in.Integration}
	}
	c, pin := build(kap.ClaimInput{Dosing: ds})
	if got := rules(kap.Preflight(pin)); got != "" {
		t.Fatalf("the base claim is refused: %s", got)
	}
	if len(c.Lines) != 3 || c.Lines[0].Units != 2 || c.Lines[1].Units != 2 {
		t.Fatalf("base claim lines: %+v", c.Lines)
	}

	cases := []struct {
		name, want string
		mutate     func(c *kap.Claim, pin *kap.PreflightInput)
	}{
		{"no coverage", "missing-coverage@coverageId", func(c *kap.Claim, pin *kap.PreflightInput) { pin.Coverage = nil; c.CoverageID = "" }},
		{"coverage ended", "missing-coverage@coverageId", func(c *kap.Claim, pin *kap.PreflightInput) {
			cov := *pin.Coverage
			cov.End = "2026-01-31"
			pin.Coverage = &cov
		}},
		{"not in force", "missing-coverage@coverageId", func(c *kap.Claim, pin *kap.PreflightInput) {
			cov := *pin.Coverage
			no := false
			cov.Eligibility = &kap.EligibilityResult{Checked: kap.MustTime("2026-02-01T10:00:00Z"), Outcome: "complete", InForce: &no}
			pin.Coverage = &cov
		}},
		{"no diagnosis", "missing-diagnosis@diagnoses missing-diagnosis@lines[0].diagnosisPointers missing-diagnosis@lines[1].diagnosisPointers missing-diagnosis@lines[2].diagnosisPointers", func(c *kap.Claim, pin *kap.PreflightInput) {
			c.Diagnoses = nil
			for i := range c.Lines {
				c.Lines[i].DiagnosisPointers = nil
			}
		}},
		{"line without pointer", "missing-diagnosis@lines[1].diagnosisPointers", func(c *kap.Claim, pin *kap.PreflightInput) { c.Lines[1].DiagnosisPointers = nil }},
		{"dangling pointer", "missing-diagnosis@lines[0].diagnosisPointers[1]", func(c *kap.Claim, pin *kap.PreflightInput) { c.Lines[0].DiagnosisPointers = []int{1, 7} }},
		{"units not matching minutes", "units-mismatch@lines[0].units", func(c *kap.Claim, pin *kap.PreflightInput) { c.Lines[0].Units = 3 }},
		{"add-on without primary", "add-on-without-primary@lines[0].code", func(c *kap.Claim, pin *kap.PreflightInput) { c.Lines = c.Lines[1:] }},
		{"code not covered", "not-covered@lines[2].code", func(c *kap.Claim, pin *kap.PreflightInput) {
			q := *pin.Profile
			q.Covered = []string{"0820T", "0822T"}
			pin.Profile = &q
		}},
		{"unknown code", "unknown-code@lines[2].code", func(c *kap.Claim, pin *kap.PreflightInput) { c.Lines[2].Code = "J3000" }},
		{"max units", "max-units@lines[0].units units-mismatch@lines[0].units", func(c *kap.Claim, pin *kap.PreflightInput) { c.Lines[0].Units = 4 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, pin := build(kap.ClaimInput{Dosing: ds})
			tc.mutate(c, &pin)
			got := kap.Preflight(pin)
			if rules(got) != tc.want {
				t.Errorf("got %q, want %q", rules(got), tc.want)
			}
			for _, i := range got {
				if i.Message == "" || strings.Contains(i.Message, "M1") {
					t.Errorf("message %q is empty or holds the member id", i.Message)
				}
			}
		})
	}

	// Esketamine: KX, prior auth, bundled drug line, diagnosis rule, dose.
	t.Run("esketamine", func(t *testing.T) {
		c, pin := build(kap.ClaimInput{Dosing: esk, Diagnoses: []string{"F33.1"}, PreAuthRef: "PA-1"})
		if got := rules(kap.Preflight(pin)); got != "" {
			t.Fatalf("the esketamine claim is refused: %s", got)
		}
		if c.Lines[0].Code != "G2083" || strings.Join(c.Lines[0].Modifiers, ",") != "KX" {
			t.Fatalf("line: %+v", c.Lines[0])
		}
		c.Lines[0].Modifiers = nil
		c.PreAuthRef = ""
		c.Lines = append(c.Lines, kap.ClaimLine{Sequence: 2, Code: "J0013", Units: 84, DiagnosisPointers: []int{1}})
		want := "modifier-required@lines[0].modifiers prior-auth-required@preAuthRef bundled@lines[0].code"
		if got := rules(kap.Preflight(pin)); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
		c.Lines = c.Lines[:1]
		c.Lines[0].Modifiers, c.PreAuthRef = []string{"KX"}, "PA-1"
		c.Lines[0].Code = "G2082" // 84 mg is G2083
		c.Diagnoses[0].ICD10 = "F41.1"
		want = "diagnosis-not-accepted@lines[0].diagnosisPointers[0] units-mismatch@lines[0].code"
		if got := rules(kap.Preflight(pin)); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})

	// Psychotherapy: the code must match the minutes.
	t.Run("psychotherapy minutes", func(t *testing.T) {
		c, pin := build(kap.ClaimInput{Integration: is, Coverage: testCoverage(is.ClientID)})
		if got := rules(kap.Preflight(pin)); got != "" || c.Lines[0].Code != "90832" {
			t.Fatalf("base: %s %+v", got, c.Lines)
		}
		c.Lines[0].Code = "90837"
		if got := rules(kap.Preflight(pin)); got != "units-mismatch@lines[0].code" {
			t.Errorf("90837 for 30 minutes: %q", got)
		}
	})

	// An IV session without billing codes gets derived lines.
	t.Run("derived lines", func(t *testing.T) {
		iv := loadRecord[*kap.DosingSession](t, "16-dosing-c001-1.json")
		iv.BillingCodes = nil
		iv.Administrations[0].Stop = kap.MustTime("2026-02-23T11:00:00-07:00") // 100 minutes
		c, pin := build(kap.ClaimInput{Dosing: iv, Coverage: testCoverage(iv.ClientID)})
		var got []string
		for _, l := range c.Lines {
			got = append(got, l.Code+"x"+string(rune('0'+l.Units)))
		}
		if strings.Join(got, " ") != "96365x1 96366x1 J3490x1" {
			t.Errorf("derived lines: %v", got)
		}
		if r := rules(kap.Preflight(pin)); r != "" {
			t.Errorf("derived claim refused: %s", r)
		}
	})

	if _, err := kap.BuildClaim(kap.ClaimInput{}, p); kap.ErrorCode(err) != kap.EINVALID {
		t.Errorf("BuildClaim without a session: %v", err)
	}
	bad := *p
	bad.Covered = []string{"J3000"}
	if _, err := kap.BuildClaim(kap.ClaimInput{Dosing: ds}, &bad); kap.ErrorCode(err) != kap.EINVALID {
		t.Errorf("BuildClaim with an invalid profile: %v", err)
	}
}

func TestCoverageValidate(t *testing.T) {
	c := testCoverage("c001")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !c.ActiveOn("2026-06-01") || c.ActiveOn("2027-01-01") || c.ActiveOn("2025-12-31") {
		t.Error("ActiveOn is wrong")
	}
	bad := *c
	bad.Relationship, bad.End, bad.MemberID = "child", "2025-01-01", ""
	err := bad.Validate()
	for _, p := range []string{"subscriberId", "end", "memberId"} {
		if !strings.Contains(err.Error()+issuePaths(err), p) {
			t.Errorf("no issue for %s: %v", p, err)
		}
	}
	data, _ := kap.EncodeRecord(c)
	rec, err := kap.DecodeRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	if rec.(*kap.Coverage).MemberID != "M1" {
		t.Error("coverage did not round-trip")
	}
}

func issuePaths(err error) string {
	var s []string
	for _, i := range kap.ErrorIssues(err) {
		s = append(s, i.Path)
	}
	return strings.Join(s, " ")
}

// TestPreflightNeverPanics runs the preflight over many randomly damaged
// claims: it must return issues with a rule and a message, never panic.
func TestPreflightNeverPanics(t *testing.T) {
	ds := loadRecord[*kap.DosingSession](t, "35-dosing-c002-1.json")
	p := testProfile()
	rng := rand.New(rand.NewPCG(1, 2))
	codes := []string{"0820T", "0821T", "0822T", "96365", "96366", "G2082", "G2083", "J0013", "J3490", "J3000", "", "90785"}
	for i := 0; i < 2000; i++ {
		c, err := kap.BuildClaim(kap.ClaimInput{Dosing: ds, Diagnoses: []string{"F43.12"}, Coverage: testCoverage("c002")}, p)
		if err != nil {
			t.Fatal(err)
		}
		for j := range c.Lines {
			switch rng.IntN(4) {
			case 0:
				c.Lines[j].Code = codes[rng.IntN(len(codes))]
			case 1:
				c.Lines[j].Units = rng.IntN(7) - 2
			case 2:
				c.Lines[j].DiagnosisPointers = []int{rng.IntN(4) - 1}
			}
		}
		if rng.IntN(5) == 0 {
			c.Diagnoses = append(c.Diagnoses, kap.ClaimDiagnosis{Sequence: 2, ICD10: "not-a-code"})
		}
		var cov *kap.Coverage
		if rng.IntN(3) > 0 {
			cov = testCoverage("c002")
		}
		for _, is := range kap.Preflight(kap.PreflightInput{Claim: c, Profile: p, Coverage: cov, Dosing: ds}) {
			if is.Rule == "" || is.Message == "" {
				t.Fatalf("issue without rule or message: %+v", is)
			}
		}
	}
	if got := kap.Preflight(kap.PreflightInput{}); len(got) != 1 {
		t.Errorf("nil claim: %v", got)
	}
	if _, err := kap.BuildClaim(kap.ClaimInput{Dosing: ds}, nil); kap.ErrorCode(err) != kap.EINVALID {
		t.Errorf("nil profile: %v", err)
	}
}
