package mapping_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/conformance"
	"github.com/kapbridge/kap/mapping"
)

// payerCase is one entry of testdata/payer/claims.json (written by hand
// from the sessions and codes.md).
type payerCase struct {
	Session   string   `json:"session"`
	Profile   string   `json:"profile"`
	Why       string   `json:"why"`
	Diagnoses []string `json:"diagnoses"`
	Lines     []struct {
		Code      string   `json:"code"`
		Modifiers []string `json:"modifiers"`
		Units     int      `json:"units"`
	} `json:"lines"`
	Preflight []string `json:"preflight"`
}

func loadPayerCases(t *testing.T) []payerCase {
	t.Helper()
	data, err := os.ReadFile("../testdata/payer/claims.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cases []payerCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Cases) == 0 {
		t.Fatal("no cases in testdata/payer/claims.json")
	}
	return doc.Cases
}

// payerWorld holds the testdata records by client: intakes and coverages.
type payerWorld struct {
	recs      map[string]kap.Record
	providers map[string]*kap.Provider
	intakes   map[string]*kap.Intake
	coverages map[string]*kap.Coverage
}

func loadPayerWorld(t testing.TB) *payerWorld {
	t.Helper()
	w := &payerWorld{recs: testdataRecords(t), providers: map[string]*kap.Provider{}, intakes: map[string]*kap.Intake{}, coverages: map[string]*kap.Coverage{}}
	for _, r := range w.recs {
		if in, ok := r.(*kap.Intake); ok {
			w.intakes[in.ClientID] = in
		}
		if p, ok := r.(*kap.Provider); ok {
			w.providers[p.ID] = p
		}
	}
	files, _ := filepath.Glob("../testdata/payer/coverage/*.json")
	if len(files) == 0 {
		t.Fatal("no coverages in testdata/payer/coverage")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := kap.DecodeRecord(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		c := rec.(*kap.Coverage)
		w.coverages[c.ClientID] = c
	}
	return w
}

// claimFor builds the claim of a testdata session under a profile.
func (w *payerWorld) claimFor(t *testing.T, session, profile string) (*kap.Claim, kap.PreflightInput) {
	t.Helper()
	rec, ok := w.recs[strings.TrimSuffix(session, ".json")]
	if !ok {
		t.Fatalf("no testdata record %s", session)
	}
	p, err := mapping.PayerProfile(profile)
	if err != nil {
		t.Fatal(err)
	}
	in := kap.ClaimInput{Intake: w.intakes[rec.RecordClientID()], Coverage: w.coverages[rec.RecordClientID()], Providers: w.providers}
	pin := kap.PreflightInput{Profile: p, Coverage: in.Coverage}
	switch s := rec.(type) {
	case *kap.DosingSession:
		in.Dosing, pin.Dosing = s, s
	case *kap.IntegrationSession:
		in.Integration, pin.Integration = s, s
	default:
		t.Fatalf("%s is a %s, not a session", session, rec.RecordKind())
	}
	c, err := kap.BuildClaim(in, p)
	if err != nil {
		t.Fatalf("BuildClaim: %v", err)
	}
	pin.Claim = c
	return c, pin
}

// TestClaimsMatchExpected builds the claim of every testdata session listed
// in testdata/payer/claims.json and compares codes, modifiers, units,
// diagnoses and the preflight verdict with the hand-written expectation.
// Every resulting FHIR Claim must pass the codec and the conformance
// validator.
func TestClaimsMatchExpected(t *testing.T) {
	w := loadPayerWorld(t)
	m := newMapper(t)
	v := conformance.NewValidator(m.Codec())
	sessions := map[string]bool{}
	for _, tc := range loadPayerCases(t) {
		sessions[tc.Session] = true
		t.Run(strings.TrimSuffix(tc.Session, ".json")+"/"+tc.Profile, func(t *testing.T) {
			c, pin := w.claimFor(t, tc.Session, tc.Profile)
			type line struct {
				Code      string
				Modifiers []string
				Units     int
			}
			var want, got []line
			for _, l := range tc.Lines {
				want = append(want, line{l.Code, l.Modifiers, l.Units})
			}
			for _, l := range c.Lines {
				got = append(got, line{l.Code, l.Modifiers, l.Units})
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("lines (%s) -want +got:\n%s", tc.Why, d)
			}
			var dx []string
			for i, d := range c.Diagnoses {
				if d.Sequence != i+1 {
					t.Errorf("diagnosis %d has sequence %d", i, d.Sequence)
				}
				dx = append(dx, d.ICD10)
			}
			if d := cmp.Diff(tc.Diagnoses, dx); d != "" {
				t.Errorf("diagnoses -want +got:\n%s", d)
			}
			for _, l := range c.Lines {
				if len(l.DiagnosisPointers) == 0 || l.DiagnosisPointers[0] != 1 {
					t.Errorf("line %d (%s) does not point to the primary diagnosis first: %v", l.Sequence, l.Code, l.DiagnosisPointers)
				}
			}
			var rules []string
			for _, is := range kap.Preflight(pin) {
				rules = append(rules, is.Rule)
			}
			sort.Strings(rules)
			wantRules := append([]string(nil), tc.Preflight...)
			sort.Strings(wantRules)
			if d := cmp.Diff(wantRules, rules, cmp.Comparer(func(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") })); d != "" {
				t.Errorf("preflight rules -want +got:\n%s\n%+v", d, kap.Preflight(pin))
			}
			cl, err := m.MapClaim(c, mapping.ClaimInput{Coverage: pin.Coverage})
			if err != nil {
				t.Fatalf("MapClaim: %v", err)
			}
			data, err := m.Codec().Marshal(cl)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Validate(data); err != nil {
				t.Errorf("conformance validator: %v", err)
			}
			back, err := m.ClaimFrom(cl)
			if err != nil {
				t.Fatal(err)
			}
			back.Notes = c.Notes
			// Minutes (how the units were counted) has no slot in a FHIR Claim.
			if d := cmp.Diff(c, back, cmpopts.IgnoreFields(kap.ClaimLine{}, "Minutes")); d != "" {
				t.Errorf("ClaimFrom(MapClaim(c)) -want +got:\n%s", d)
			}
		})
	}
	// Every dosing and integration session of testdata/kap has a case.
	for name, rec := range w.recs {
		k := rec.RecordKind()
		if (k == kap.KindDosingSession || k == kap.KindIntegrationSession) && !sessions[name+".json"] {
			t.Errorf("testdata/payer/claims.json has no case for %s", name)
		}
	}
}

// TestPayerProfiles loads every embedded profile and checks the generic
// one and at least one other differ in their rules.
func TestPayerProfiles(t *testing.T) {
	all, err := mapping.PayerProfiles()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"generic", "medicare-j15", "example-commercial"} {
		if all[id] == nil {
			t.Errorf("no payer profile %s", id)
		}
	}
	if len(all["generic"].RequiredModifiers) != 0 || len(all["medicare-j15"].RequiredModifiers["G2082"]) == 0 {
		t.Error("the Medicare profile should require KX on G2082 and the generic one nothing")
	}
	if _, err := mapping.PayerProfile("nope"); kap.ErrorCode(err) != kap.ENOTFOUND || !strings.Contains(err.Error(), "generic") {
		t.Errorf("unknown profile: %v", err)
	}
	for _, bad := range []string{
		`{"id":"x","name":"X","hourUnits":"midpoint","covered":["J3000"]}`,       // not a KAP code (streptomycin)
		`{"id":"x","name":"X","hourUnits":"quarter","covered":["0820T"]}`,        // unknown unit rule
		`{"id":"x","name":"X","hourUnits":"midpoint","covered":[],"extra":true}`, // unknown field
		`{"id":"x","name":"X","hourUnits":"midpoint","drugLines":{"XX":"J3490"}}`,
	} {
		if _, err := mapping.ParsePayerProfile([]byte(bad)); err == nil {
			t.Errorf("accepted bad profile %s", bad)
		}
	}
}

// TestCoverageAndEligibility maps every testdata coverage, builds an
// eligibility request and reads a payer's eligibility response back into
// the record.
func TestCoverageAndEligibility(t *testing.T) {
	w := loadPayerWorld(t)
	m := newMapper(t)
	v := conformance.NewValidator(m.Codec())
	for client, c := range w.coverages {
		b, err := m.MapCoverage(c, mapping.MapInput{Version: 1})
		if err != nil {
			t.Fatalf("%s: %v", client, err)
		}
		data, err := m.Codec().Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Validate(data); err != nil {
			t.Errorf("%s: coverage bundle: %v", client, err)
		}
		for _, want := range []string{`"resourceType":"Coverage"`, `"beneficiary":{"reference":"Patient?identifier=`, `"subscriberId":"`, `subscriber-relationship`, `"resourceType":"Organization"`} {
			if !strings.Contains(string(data), want) {
				t.Errorf("%s: coverage bundle lacks %s", client, want)
			}
		}
		req, err := m.EligibilityRequest(mapping.EligibilityInput{Coverage: c, ProviderID: "p-md01", Date: "2026-03-01"})
		if err != nil {
			t.Fatalf("%s: %v", client, err)
		}
		data, _ = m.Codec().Marshal(req)
		if _, err := v.Validate(data); err != nil {
			t.Errorf("%s: eligibility request: %v", client, err)
		}
		for _, want := range []string{`"purpose":["benefits","validation"]`, `"servicedDate":"2026-03-01"`, `"code":"G2082"`, `Coverage?identifier=`} {
			if !strings.Contains(string(data), want) {
				t.Errorf("%s: eligibility request lacks %s: %s", client, want, data)
			}
		}
	}
	if _, err := m.EligibilityRequest(mapping.EligibilityInput{Coverage: w.coverages["c001"], ProviderID: "p-md01", Date: "2026-03-01", Services: []string{"J3000"}}); err == nil {
		t.Error("accepted J3000 (streptomycin) as a KAP service")
	}

	resp := []byte(`{"resourceType":"CoverageEligibilityResponse","status":"active","purpose":["benefits"],
	  "patient":{"reference":"Patient/1"},"created":"2026-02-20T10:00:00-07:00","request":{"reference":"CoverageEligibilityRequest/1"},
	  "outcome":"complete","disposition":"Policy is currently in force.","insurer":{"reference":"Organization/2"},"preAuthRef":"PA-77",
	  "insurance":[{"coverage":{"reference":"Coverage/9"},"inforce":true,"item":[
	    {"productOrService":{"coding":[{"system":"https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets","code":"G2083"}]},"authorizationRequired":true},
	    {"productOrService":{"coding":[{"system":"http://www.ama-assn.org/go/cpt","code":"0820T"}]},"excluded":true},
	    {"productOrService":{"coding":[{"system":"http://www.ama-assn.org/go/cpt","code":"99999"}]},"excluded":true}]}],
	  "error":[{"code":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/adjudication-error","code":"a001"}]}}]}`)
	res, err := m.ReadEligibilityResponseJSON(resp)
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	want := &kap.EligibilityResult{
		Checked: kap.At(time.Date(2026, 2, 20, 17, 0, 0, 0, time.UTC)), Outcome: "complete", InForce: &yes,
		Disposition: "Policy is currently in force.", PreAuthRef: "PA-77",
		Benefits: []kap.BenefitResult{{Code: "G2083", AuthorizationRequired: true}, {Code: "0820T", Excluded: true}},
		Errors:   []string{"a001"},
	}
	if d := cmp.Diff(want, res, cmp.Comparer(func(a, b kap.Time) bool { return a.Equal(b) })); d != "" {
		t.Errorf("eligibility result -want +got:\n%s", d)
	}
	// The result is stored on the record and the record stays valid.
	c := *w.coverages["c001"]
	c.Eligibility = res
	if err := c.Validate(); err != nil {
		t.Errorf("coverage with eligibility: %v", err)
	}
	notInForce := bytes.Replace(resp, []byte(`"inforce":true`), []byte(`"inforce":false`), 1)
	res, err = m.ReadEligibilityResponseJSON(notInForce)
	if err != nil {
		t.Fatal(err)
	}
	c.Eligibility = res
	if in, ok := c.InForce(); !ok || in {
		t.Errorf("InForce = %v, %v; want false, true", in, ok)
	}
	// No outcome, or another resource type: a clear error, no panic.
	if _, err := m.ReadEligibilityResponseJSON(bytes.Replace(resp, []byte(`"outcome":"complete",`), nil, 1)); err == nil {
		t.Error("accepted a response without outcome")
	}
	if _, err := m.ReadEligibilityResponseJSON([]byte(`{"resourceType":"Patient"}`)); err == nil || !strings.Contains(err.Error(), "CoverageEligibilityResponse") {
		t.Errorf("a Patient read as an eligibility response: %v", err)
	}
}

// TestPayerGolden compares the payer resources of a few sessions with
// golden files in testdata/fhir/payer (run with -update to rewrite) and
// runs the external validators (Medplum, ajv) over them when installed.
func TestPayerGolden(t *testing.T) {
	w := loadPayerWorld(t)
	m := newMapper(t)
	out := map[string]proto.Message{}
	for _, g := range []struct{ name, session, profile string }{
		{"claim-ds-c001-2-generic", "18-dosing-c001-2.json", "generic"},
		{"claim-ds-c005-1-medicare-j15", "65-dosing-c005-1-esketamine56.json", "medicare-j15"},
		{"claim-is-c002-1-generic", "36-integration-c002-1-group.json", "generic"},
	} {
		c, pin := w.claimFor(t, g.session, g.profile)
		cl, err := m.MapClaim(c, mapping.ClaimInput{Coverage: pin.Coverage})
		if err != nil {
			t.Fatal(err)
		}
		out[g.name] = cl
	}
	b, err := m.MapCoverage(w.coverages["c006"], mapping.MapInput{Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	out["coverage-c006"] = b
	req, err := m.EligibilityRequest(mapping.EligibilityInput{Coverage: w.coverages["c006"], ProviderID: "p-md01", Date: "2026-02-23"})
	if err != nil {
		t.Fatal(err)
	}
	out["eligibility-request-c006"] = req
	s := w.recs["65-dosing-c005-1-esketamine56"].(*kap.DosingSession)
	r, err := kap.CheckREMS(kap.REMSInput{Session: s, Intake: w.intakes["c005"], Answers: kap.REMSAnswers{SedativeHypnotics: ptrBool(false)}})
	if err != nil {
		t.Fatal(err)
	}
	qr, err := m.MapREMS(r, mapping.REMSInput{})
	if err != nil {
		t.Fatal(err)
	}
	out["rems-ds-c005-1"] = qr
	out["questionnaire-spravato-rems"] = mapping.REMSQuestionnaire()

	dir := filepath.Join("..", "testdata", "fhir", "payer")
	var paths []string
	v := conformance.NewValidator(m.Codec())
	for name, res := range out {
		got, err := m.Codec().MarshalIndent(res)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Validate(got); err != nil {
			t.Errorf("%s: conformance validator: %v", name, err)
		}
		golden := filepath.Join(dir, name+".json")
		paths = append(paths, golden)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run go test ./mapping -run TestPayerGolden -update)", err)
		}
		if d := cmp.Diff(normJSON(t, want), normJSON(t, got)); d != "" {
			t.Errorf("%s -golden +got:\n%s", name, d)
		}
	}
	if testing.Short() {
		return
	}
	sort.Strings(paths)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := conformance.RunExternalValidators(ctx, paths, filepath.Join("..", "conformance", "profiles"))
	if errors.Is(err, conformance.ErrValidatorsNotInstalled) {
		t.Skipf("external validators: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Failure(); err != nil {
		t.Errorf("external validators: %v", err)
	}
	t.Logf("external validators: %d files, %d resources, %d warnings", rep.Files, rep.Resources, rep.Warnings)
}

func normJSON(t *testing.T, data []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func ptrBool(b bool) *bool { return &b }

// BenchmarkClaim measures building, preflighting and mapping the claim of
// one dosing session (ds-c001-2: three lines, two diagnoses).
func BenchmarkClaim(b *testing.B) {
	w := loadPayerWorld(b)
	m := newMapper(b)
	s := w.recs["18-dosing-c001-2"].(*kap.DosingSession)
	p, err := mapping.PayerProfile("generic")
	if err != nil {
		b.Fatal(err)
	}
	cov := w.coverages["c001"]
	b.ReportAllocs()
	for b.Loop() {
		c, err := kap.BuildClaim(kap.ClaimInput{Dosing: s, Intake: w.intakes["c001"], Coverage: cov, Providers: w.providers}, p)
		if err != nil {
			b.Fatal(err)
		}
		if is := kap.Preflight(kap.PreflightInput{Claim: c, Profile: p, Coverage: cov, Dosing: s}); len(is) != 0 {
			b.Fatal(is)
		}
		if _, err := m.MapClaim(c, mapping.ClaimInput{Coverage: cov}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkREMS measures the REMS check of an esketamine session and its
// QuestionnaireResponse.
func BenchmarkREMS(b *testing.B) {
	w := loadPayerWorld(b)
	m := newMapper(b)
	s := w.recs["65-dosing-c005-1-esketamine56"].(*kap.DosingSession)
	b.ReportAllocs()
	for b.Loop() {
		r, err := kap.CheckREMS(kap.REMSInput{Session: s, Intake: w.intakes["c005"], Answers: kap.REMSAnswers{SedativeHypnotics: ptrBool(false)}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.MapREMS(r, mapping.REMSInput{}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestREMSResponseMatchesQuestionnaire checks every QuestionnaireResponse
// item (complete and incomplete reports) against REMSQuestionnaire: the
// linkId exists, the answer's type is the item's type, group items carry
// child items and no answer; an incomplete report gives status in-progress
// and leaves the missing items out.
func TestREMSResponseMatchesQuestionnaire(t *testing.T) {
	w := loadPayerWorld(t)
	m := newMapper(t)
	v := conformance.NewValidator(m.Codec())
	qdata, err := m.Codec().Marshal(mapping.REMSQuestionnaire())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Validate(qdata); err != nil {
		t.Fatalf("questionnaire: %v", err)
	}
	var q struct {
		URL, Version string
		Item         []struct {
			LinkID string `json:"linkId"`
			Type   string `json:"type"`
			Item   []struct {
				LinkID string `json:"linkId"`
				Type   string `json:"type"`
			} `json:"item"`
		} `json:"item"`
	}
	if err := json.Unmarshal(qdata, &q); err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, it := range q.Item {
		types[it.LinkID] = it.Type
		for _, c := range it.Item {
			types[c.LinkID] = c.Type
		}
	}
	valueKey := map[string]string{"date": "valueDate", "quantity": "valueQuantity", "string": "valueString",
		"integer": "valueInteger", "boolean": "valueBoolean", "dateTime": "valueDateTime"}
	type qrItem struct {
		LinkID string           `json:"linkId"`
		Answer []map[string]any `json:"answer"`
		Item   []qrItem         `json:"item"`
	}
	var check func(t *testing.T, it qrItem)
	check = func(t *testing.T, it qrItem) {
		typ, ok := types[it.LinkID]
		if !ok {
			t.Errorf("linkId %s is not in the Questionnaire", it.LinkID)
			return
		}
		if typ == "group" {
			if len(it.Answer) != 0 || len(it.Item) == 0 {
				t.Errorf("group %s: %d answers, %d items", it.LinkID, len(it.Answer), len(it.Item))
			}
			for _, c := range it.Item {
				check(t, c)
			}
			return
		}
		if len(it.Answer) != 1 || it.Answer[0][valueKey[typ]] == nil {
			t.Errorf("%s (%s): answer %v", it.LinkID, typ, it.Answer)
		}
	}
	s := w.recs["75-dosing-c006-7-esketamine84"].(*kap.DosingSession)
	for _, answers := range []kap.REMSAnswers{{SedativeHypnotics: ptrBool(true)}, {}} {
		r, err := kap.CheckREMS(kap.REMSInput{Session: s, Intake: w.intakes["c006"], Answers: answers})
		if err != nil {
			t.Fatal(err)
		}
		qr, err := m.MapREMS(r, mapping.REMSInput{})
		if err != nil {
			t.Fatal(err)
		}
		data, _ := m.Codec().Marshal(qr)
		if _, err := v.Validate(data); err != nil {
			t.Errorf("questionnaire response: %v", err)
		}
		var doc struct {
			Questionnaire string   `json:"questionnaire"`
			Status        string   `json:"status"`
			Item          []qrItem `json:"item"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Questionnaire != mapping.REMSQuestionnaireURL+"|"+mapping.REMSQuestionnaireVersion {
			t.Errorf("questionnaire %s", doc.Questionnaire)
		}
		wantStatus, wantItems := "completed", len(kap.REMSQuestions)
		if !r.Complete() {
			wantStatus, wantItems = "in-progress", len(kap.REMSQuestions)-len(r.Missing())
		}
		if doc.Status != wantStatus || len(doc.Item) != wantItems {
			t.Errorf("status %s with %d items; want %s with %d", doc.Status, len(doc.Item), wantStatus, wantItems)
		}
		for _, it := range doc.Item {
			check(t, it)
			if it.LinkID == kap.REMSItemHypnotics && answers.SedativeHypnotics == nil {
				t.Error("an unanswered item is in the response")
			}
		}
	}
}
