package mapping_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/mapping"
)

// Records of the session and assessment kinds, built here so these tests
// do not depend on which files testdata/kap holds.

func tm(s string) kap.Time { return kap.MustTime(s) }

func richDosing() *kap.DosingSession {
	return &kap.DosingSession{
		ID: "ds-7", ClientID: "c001", PlanID: "tp-1", SessionNumber: 3,
		Start: tm("2026-10-05T09:00:00-04:00"), End: tm("2026-10-05T12:00:00-04:00"),
		FastingHours: 6.5, WeightKg: 70,
		PreChecks: []kap.Check{{Item: "escort-confirmed", Passed: true}, {Item: "pregnancy-test-negative", Passed: false}},
		Intention: "Meet the grief with curiosity",
		Administrations: []kap.Administration{
			{Route: "IV", Product: "ketamine-10mg-ml-injection", DoseMg: 35, DoseMgPerKg: 0.5,
				Start: tm("2026-10-05T09:20:00-04:00"), Stop: tm("2026-10-05T10:00:00-04:00"),
				RateMgPerKgPerHour: 0.75, LotNumber: "L123", AdministeredBy: "p-nurse"},
			{ID: "boost", Route: "IM", Product: "ketamine-100mg-ml-injection", DoseMg: 20,
				Start: tm("2026-10-05T10:10:00-04:00"), AdministeredBy: "p-md"},
		},
		Vitals: []kap.VitalSigns{
			{Time: tm("2026-10-05T09:05:00-04:00"), Systolic: 128, Diastolic: 82, HeartRate: 72, SpO2: 98, RespRate: 14, TempC: 36.8},
			{Time: tm("2026-10-05T09:45:00-04:00"), Systolic: 148.5, Diastolic: 91, HeartRate: 80, SpO2: 97},
			{Time: tm("2026-10-05T11:30:00.5-04:00"), HeartRate: 70},
		},
		Scores: []kap.SessionScore{
			{Time: tm("2026-10-05T09:50:00-04:00"), Instrument: kap.ScoreCADSS, Value: 18},
			{Time: tm("2026-10-05T09:50:00-04:00"), Instrument: kap.ScoreMOAAS, Value: 4},
		},
		AdverseEvents: []kap.AdverseEvent{
			{Time: tm("2026-10-05T09:40:00-04:00"), Event: "nausea", Severity: "mild", Outcome: "resolved",
				Interventions: []kap.Intervention{
					{Time: tm("2026-10-05T09:42:00-04:00"), Description: "ondansetron 4 mg SL"},
					{Time: tm("2026-10-05T09:43:00-04:00"), Description: "infusion rate reduced"},
				}},
			{ID: "diss", Time: tm("2026-10-05T09:55:00-04:00"), Event: "dissociation", Severity: "moderate", Serious: true, Outcome: "recovering"},
		},
		Discharge:     kap.Discharge{Time: tm("2026-10-05T11:55:00-04:00"), CriteriaMet: true, EscortPresent: true, ReleasedTo: "Jordan Lee"},
		MonitoredBy:   []string{"p-md", "p-nurse"},
		Psychotherapy: &kap.Psychotherapy{Minutes: 60, TherapistID: "p-ther"},
		BillingCodes:  []string{"0820T", "0822T", "96365", "J3490"},
	}
}

func minimalDosing() *kap.DosingSession {
	return &kap.DosingSession{
		ID: "ds-min", ClientID: "c002",
		Start: tm("2026-10-06T13:00:00Z"), End: tm("2026-10-06T15:30:00Z"),
		WeightKg: 82.3,
		Administrations: []kap.Administration{{Route: "IN", Product: "esketamine-nasal-spray", DoseMg: 56,
			Start: tm("2026-10-06T13:10:00Z"), LotNumber: "SPR-9", AdministeredBy: "p-md"}},
		Vitals:        []kap.VitalSigns{{Time: tm("2026-10-06T13:05:00Z"), Systolic: 120, Diastolic: 80}},
		Discharge:     kap.Discharge{Time: tm("2026-10-06T15:20:00Z")},
		Psychotherapy: &kap.Psychotherapy{Minutes: 10, TherapistID: "p-ther"},
		BillingCodes:  []string{"G2082"},
	}
}

func sessionRecords() map[string]kap.Record {
	return map[string]kap.Record{
		"dosing-rich": richDosing(),
		"dosing-min":  minimalDosing(),
		"integration-group": &kap.IntegrationSession{ID: "is-1", ClientID: "c001", DosingSessionID: "ds-7",
			Start: tm("2026-10-06T17:00:00Z"), End: tm("2026-10-06T18:30:00Z"), Format: "group",
			TherapistID: "p-ther", Minutes: 90, BillingCodes: []string{"90853", "90785"}},
		"integration-tele": &kap.IntegrationSession{ID: "is-2", ClientID: "c001",
			Start: tm("2026-10-08T17:00:00+02:00"), End: tm("2026-10-08T17:50:00+02:00"), Format: "telehealth",
			TherapistID: "p-ther", Minutes: 45},
		"assessment-phq9": &kap.Assessment{ID: "as-1", ClientID: "c001", Instrument: "PHQ-9", Date: tm("2026-10-05T08:30:00-04:00"),
			Items: []int{3, 2, 1, 0, 3, 2, 1, 0, 1}, Total: 13, DosingSessionID: "ds-7"},
		"assessment-gad7": &kap.Assessment{ID: "as-2", ClientID: "c001", Instrument: "GAD-7", Date: tm("2026-10-06T18:35:00Z"),
			Items: []int{0, 1, 2, 3, 0, 1, 2}, Total: 9, IntegrationSessionID: "is-1"},
		"assessment-pcl5": &kap.Assessment{ID: "as-3", ClientID: "c001", Instrument: "PCL-5", Date: tm("2026-10-01T10:00:00Z"),
			Items: []int{4, 3, 2, 1, 0, 4, 3, 2, 1, 0, 4, 3, 2, 1, 0, 4, 3, 2, 1, 0}, Total: 40},
		"assessment-cssrs": &kap.Assessment{ID: "as-4", ClientID: "c001", Instrument: "C-SSRS", Date: tm("2026-10-01T10:00:00Z"),
			Items: []int{1, 0, 1, 0, 0, 1}, Total: 3},
	}
}

func TestSessionRecordsRoundTrip(t *testing.T) {
	m := newMapper(t)
	for name, rec := range sessionRecords() {
		t.Run(name, func(t *testing.T) {
			if err := rec.Validate(); err != nil {
				t.Fatalf("fixture invalid: %v", err)
			}
			data, err := m.MapJSON(rec, mapping.MapInput{Version: 2})
			if err != nil {
				t.Fatalf("map: %v", err)
			}
			cr, err := m.Codec().Unmarshal(data)
			if err != nil {
				t.Fatalf("validating unmarshal: %v", err)
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

// bundleResources returns the resources of a mapped Bundle as generic JSON.
func bundleResources(t *testing.T, m *mapping.Mapper, rec kap.Record) []map[string]any {
	t.Helper()
	data, err := m.MapJSON(rec, mapping.MapInput{})
	if err != nil {
		t.Fatal(err)
	}
	var b struct {
		Entry []struct {
			Resource map[string]any `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, e := range b.Entry {
		out = append(out, e.Resource)
	}
	return out
}

func js(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestVitalSignShapes checks codes.md §1 on the rich session: BP is one
// Observation with two mm[Hg] components and no value, SpO2 carries both
// codings, every vital has the vital-signs category and the fixed UCUM
// code, and one Observation per reading.
func TestVitalSignShapes(t *testing.T) {
	m := newMapper(t)
	s := richDosing()
	var bp, spo2, hr, rr, temp, weight int
	for _, r := range bundleResources(t, m, s) {
		if r["resourceType"] != "Observation" {
			continue
		}
		code, cat := js(r["code"]), js(r["category"])
		isVital := strings.Contains(cat, `"vital-signs"`)
		switch {
		case strings.Contains(code, `"85354-9"`):
			bp++
			if r["valueQuantity"] != nil || len(r["component"].([]any)) != 2 {
				t.Errorf("BP shape: %s", js(r))
			}
			c := js(r["component"])
			if !strings.Contains(c, `"8480-6"`) || !strings.Contains(c, `"8462-4"`) || strings.Count(c, `"code":"mm[Hg]"`) != 2 {
				t.Errorf("BP components: %s", c)
			}
		case strings.Contains(code, `"59408-5"`):
			spo2++
			if !strings.Contains(code, `"2708-6"`) || !strings.Contains(js(r["valueQuantity"]), `"code":"%"`) {
				t.Errorf("SpO2 shape: %s", js(r))
			}
		case strings.Contains(code, `"8867-4"`):
			hr++
			if !strings.Contains(js(r["valueQuantity"]), `"code":"/min"`) {
				t.Errorf("HR unit: %s", js(r))
			}
		case strings.Contains(code, `"9279-1"`):
			rr++
		case strings.Contains(code, `"8310-5"`):
			temp++
			if !strings.Contains(js(r["valueQuantity"]), `"code":"Cel"`) {
				t.Errorf("temp unit: %s", js(r))
			}
		case strings.Contains(code, `"29463-7"`):
			weight++
			if !strings.Contains(js(r["valueQuantity"]), `"code":"kg"`) {
				t.Errorf("weight unit: %s", js(r))
			}
		default:
			continue
		}
		if !isVital || !strings.Contains(js(r["meta"]), "StructureDefinition/vitalsigns") || r["encounter"] == nil || r["effectiveDateTime"] == nil {
			t.Errorf("vital sign without category/profile/encounter/effective: %s", js(r))
		}
	}
	if bp != 2 || spo2 != 2 || hr != 3 || rr != 1 || temp != 1 || weight != 1 {
		t.Errorf("counts bp=%d spo2=%d hr=%d rr=%d temp=%d weight=%d, want 2 2 3 1 1 1", bp, spo2, hr, rr, temp, weight)
	}
}

// TestDosingShapes checks the administration, adverse-event and encounter
// codings that payers and EHRs read.
func TestDosingShapes(t *testing.T) {
	m := newMapper(t)
	counts := map[string]int{}
	for _, r := range bundleResources(t, m, richDosing()) {
		rt := r["resourceType"].(string)
		counts[rt]++
		switch rt {
		case "MedicationAdministration":
			d := js(r["dosage"])
			if r["context"] == nil || !strings.Contains(d, `"code":"mg"`) || !strings.Contains(js(r["request"]), "plan/tp-1/medication-request") {
				t.Errorf("MedicationAdministration: %s", js(r))
			}
			if strings.Contains(d, "47625008") { // IV
				if r["effectivePeriod"] == nil || !strings.Contains(d, `"mg/kg/h"`) || !strings.Contains(d, "dose-per-kg") {
					t.Errorf("IV administration: %s", js(r))
				}
			} else if r["effectiveDateTime"] == nil {
				t.Errorf("IM administration without effectiveDateTime: %s", js(r))
			}
		case "AdverseEvent":
			s := js(r)
			if r["actuality"] != "actual" || len(r["suspectEntity"].([]any)) != 1 {
				t.Errorf("AdverseEvent: %s", s)
			}
			if strings.Contains(s, "ae-nausea") && (!strings.Contains(s, `"422587007"`) || !strings.Contains(s, `"Non-serious"`)) {
				t.Errorf("nausea AE: %s", s)
			}
			if strings.Contains(s, "ae-dissociation") && (strings.Contains(s, "snomed") || !strings.Contains(s, `"code":"Serious"`)) {
				t.Errorf("dissociation AE: %s", s)
			}
		case "Encounter":
			s := js(r)
			for _, want := range []string{`"AMB"`, `"0820T"`, `"J3490"`, "HCPCSReleaseCodeSets", "Home with escort", "plan-session-3"} {
				if !strings.Contains(s, want) {
					t.Errorf("Encounter lacks %s: %s", want, s)
				}
			}
		case "Procedure":
			s := js(r)
			if strings.Contains(s, "psychotherapy-minutes") && !strings.Contains(s, `"90837"`) {
				t.Errorf("60-minute psychotherapy not coded 90837: %s", s)
			}
		}
	}
	// 1 Encounter, 2 Medications, 2 administrations, 2 AEs, 2 intervention
	// + monitoring + psychotherapy Procedures, 1 Provenance.
	want := map[string]int{"Encounter": 1, "Medication": 2, "MedicationAdministration": 2, "AdverseEvent": 2, "Procedure": 4, "Provenance": 1}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("%d %s, want %d", counts[k], k, v)
		}
	}
}

// TestAssessmentShapes: totals are valueQuantity {score}; items are LOINC
// answers for PHQ-9, yes/no for C-SSRS (no total value).
func TestAssessmentShapes(t *testing.T) {
	m := newMapper(t)
	recs := sessionRecords()
	phq := js(bundleResources(t, m, recs["assessment-phq9"])[0])
	for _, want := range []string{`"44261-6"`, `"{score}"`, `"LA6571-9"`, `"44260-8"`, `"survey"`, "dosing/ds-7"} {
		if !strings.Contains(phq, want) {
			t.Errorf("PHQ-9 Observation lacks %s: %s", want, phq)
		}
	}
	cs := bundleResources(t, m, recs["assessment-cssrs"])[0]
	if cs["valueQuantity"] != nil || !strings.Contains(js(cs["code"]), `"93373-9"`) || !strings.Contains(js(cs), `"LA33-6"`) || !strings.Contains(js(cs), `"valueBoolean":true`) {
		t.Errorf("C-SSRS Observation: %s", js(cs))
	}
}

func TestIntegrationShapes(t *testing.T) {
	m := newMapper(t)
	res := bundleResources(t, m, sessionRecords()["integration-group"])
	enc, proc := js(res[0]), js(res[1])
	if !strings.Contains(enc, "Encounter?identifier=") || !strings.Contains(enc, "dosing/ds-7") || !strings.Contains(enc, "integration-group") {
		t.Errorf("integration Encounter: %s", enc)
	}
	if !strings.Contains(proc, `"90853"`) || !strings.Contains(proc, `"valueInteger":90`) {
		t.Errorf("group psychotherapy Procedure: %s", proc)
	}
}

// TestSessionBundlesShape: the invariants of TestBundleShape and
// TestSameRecordSameBundle for the records above (independent of
// testdata/kap): deterministic, unique fullUrls, every internal reference
// resolves, every entry a conditional PUT on its own identifier.
func TestSessionBundlesShape(t *testing.T) {
	m := newMapper(t)
	for name, rec := range sessionRecords() {
		t.Run(name, func(t *testing.T) {
			a, err := m.MapJSON(rec, mapping.MapInput{Version: 2})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := m.MapJSON(rec, mapping.MapInput{Version: 2})
			if string(a) != string(b) {
				t.Fatal("two mappings of the same record differ")
			}
			var bundle struct {
				Entry []struct {
					FullURL  string         `json:"fullUrl"`
					Resource map[string]any `json:"resource"`
					Request  struct{ Method, URL string }
				} `json:"entry"`
			}
			if err := json.Unmarshal(a, &bundle); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for i, e := range bundle.Entry {
				if seen[e.FullURL] {
					t.Errorf("entry %d: duplicate fullUrl", i)
				}
				seen[e.FullURL] = true
				rt := e.Resource["resourceType"].(string)
				if rt == "Provenance" {
					continue
				}
				ids := js(e.Resource["identifier"])
				_, val, _ := strings.Cut(e.Request.URL, "|")
				if e.Request.Method != "PUT" || !strings.HasPrefix(e.Request.URL, rt+"?identifier=") || !strings.Contains(ids, `"`+val+`"`) {
					t.Errorf("entry %d: %s %s does not match identifier %s", i, e.Request.Method, e.Request.URL, ids)
				}
			}
			for _, ref := range urnRefs(a) {
				if !seen[ref] {
					t.Errorf("reference %s resolves to no entry", ref)
				}
			}
		})
	}
}

// TestReverseRefusesTamperedBundle: a Bundle whose BP Observation lost its
// diastolic component no longer reverses to a valid record; the error names
// the field.
func TestReverseRefusesTamperedBundle(t *testing.T) {
	m := newMapper(t)
	data, err := m.MapJSON(minimalDosing(), mapping.MapInput{})
	if err != nil {
		t.Fatal(err)
	}
	cr, err := m.Codec().Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	tampered := 0
	for _, e := range cr.GetBundle().GetEntry() {
		o := e.GetResource().GetObservation()
		if o != nil && len(o.GetComponent()) == 2 && strings.Contains(js(o.GetCode().GetCoding()[0].GetCode().GetValue()), "85354-9") {
			o.Component = o.Component[:1]
			tampered++
		}
	}
	if tampered != 1 {
		t.Fatalf("tampered %d BP Observations, want 1", tampered)
	}
	_, err = m.Reverse(cr.GetBundle())
	if kap.ErrorCode(err) != kap.EINVALID || !strings.Contains(js(kap.ErrorIssues(err)), "vitals[0]") {
		t.Fatalf("got %v, want EINVALID naming vitals[0]", err)
	}
}
