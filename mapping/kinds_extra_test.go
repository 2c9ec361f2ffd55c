package mapping_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/internal/synth"
	"github.com/kapbridge/kap/mapping"
)

// TestRoundTripEdgeCases covers intake, consent and plan variants absent
// from testdata/kap: revoked and refused consents, no share grants, plans
// with mg doses, C-SSRS goals, no end date and empty schedules.
func TestRoundTripEdgeCases(t *testing.T) {
	m := newMapper(t)
	when := kap.MustTime("2026-03-01T09:30:00-05:00")
	recs := map[string]kap.Record{
		"consent-revoked-no-share": &kap.Consent{Kind: kap.KindConsent, ID: "cons-x1", ClientID: "c9", SignedAt: when,
			Status: "revoked", TreatmentConsent: true, EscortAgreement: true, NoDrivingAck: false},
		"consent-refused": &kap.Consent{Kind: kap.KindConsent, ID: "cons-x2", ClientID: "c9", SignedAt: when,
			Status: "active", Share: []kap.ShareGrant{{Target: "payer-z", Type: "payer"}}},
		"plan-mg-cssrs": &kap.TreatmentPlan{Kind: kap.KindTreatmentPlan, ID: "plan-x", ClientID: "c9", Created: when,
			Status: "revoked", PrescriberID: "p1", Start: "2026-03-02",
			Dosing: kap.SessionSchedule{Count: 1}, Integration: kap.SessionSchedule{IntervalDays: 7},
			Goals: []kap.Goal{
				{ID: "z", Description: "No suicidal ideation", Instrument: "C-SSRS", Comparator: "<=", Target: 0, Due: "2026-05-01"},
				{ID: "a", Description: "Walk daily", Due: "2026-04-01"},
				{ID: "b", Description: "GAD-7 at least halved", Instrument: "GAD-7", Comparator: "<", Target: 7.5},
			},
			Order: kap.MedicationOrder{Product: kap.ProductEsketamine, Route: kap.RouteIN, Dose: kap.Quantity{Value: 56, Unit: "mg"}, MaxDoseMg: 84}},
		"intake-cssrs-no-meds": &kap.Intake{Kind: kap.KindIntake, ID: "in-x", ClientID: "c9", Date: when, PrescriberID: "p1",
			Indications: []kap.Indication{{Code: "substance-use", ICD10: "F11.20"}, {Code: "mdd", ICD10: "F32.1"}},
			Screen: kap.ContraindicationScreen{Outcome: "needs-review", Answers: []kap.ScreenAnswer{
				{Item: kap.ScreenPsychosis, Present: true}, {Item: kap.ScreenPregnancy}}},
			Baseline: []kap.ScoreSummary{{Instrument: "PCL-5", Total: 50}, {Instrument: "C-SSRS", Total: 1}, {Instrument: "PHQ-9", Total: 3}},
		},
	}
	for name, rec := range recs {
		t.Run(name, func(t *testing.T) {
			data, err := m.MapJSON(rec, mapping.MapInput{Version: 1})
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
			if diff := cmp.Diff(rec, back); diff != "" {
				t.Errorf("round trip lost data (-want +got):\n%s", diff)
			}
		})
	}
}

// TestConsentShape checks the FHIR meaning, not just the round trip.
func TestConsentShape(t *testing.T) {
	m := newMapper(t)
	rec := &kap.Consent{Kind: kap.KindConsent, ID: "cons-y", ClientID: "c9", SignedAt: kap.MustTime("2026-03-01T09:30:00Z"),
		Status: "revoked", TreatmentConsent: false}
	data, err := m.MapJSON(rec, mapping.MapInput{})
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, want := range []string{`"status":"inactive"`, `"type":"deny"`, `"code":"59284-0"`, `/policy/kap-treatment-consent"`} {
		if !strings.Contains(s, want) {
			t.Errorf("Consent lacks %s:\n%s", want, s)
		}
	}
	if strings.Contains(s, "patient-privacy") {
		t.Error("a consent without share grants has a privacy Consent")
	}
	rec.Share = []kap.ShareGrant{{Target: "ehr-1", Type: "ehr", Name: "Main EHR"}}
	data, err = m.MapJSON(rec, mapping.MapInput{})
	if err != nil {
		t.Fatal(err)
	}
	s = string(data)
	for _, want := range []string{`"patient-privacy"`, `"OPTIN"`, `"PRCP"`, `"share-ehr"`, `"type":"Organization"`,
		`"system":"` + m.ShareTargetSystem() + `","value":"ehr-1"`} {
		if !strings.Contains(s, want) {
			t.Errorf("privacy Consent lacks %s:\n%s", want, s)
		}
	}
}

// TestReverseTampered: a Bundle whose screen Observation lost its outcome
// does not reverse into a record.
func TestReverseTampered(t *testing.T) {
	m := newMapper(t)
	rec := testdataRecords(t)["11-intake-c001"]
	if rec == nil {
		t.Skip("no intake fixture")
	}
	data, err := m.MapJSON(rec, mapping.MapInput{})
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(data), "eligibility-eligible", "eligibility-maybe", 1)
	cr, err := m.Codec().Unmarshal([]byte(bad))
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Reverse(cr.GetBundle())
	if kap.ErrorCode(err) != kap.EINVALID || !strings.Contains(err.Error(), "outcome") {
		t.Fatalf("got %v, want EINVALID naming the outcome", err)
	}
}

// TestRoundTripSynthetic round-trips the intakes, consents and plans of a
// generated cohort (variants testdata/kap does not have).
func TestRoundTripSynthetic(t *testing.T) {
	recs, err := synth.Generate(synth.Options{Clients: 40, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	m := newMapper(t)
	n := 0
	for _, rec := range recs {
		switch rec.(type) {
		case *kap.Intake, *kap.Consent, *kap.TreatmentPlan:
		default:
			continue
		}
		n++
		data, err := m.MapJSON(rec, mapping.MapInput{})
		if err != nil {
			t.Fatalf("%s %s: map: %v", rec.RecordKind(), rec.RecordID(), err)
		}
		cr, err := m.Codec().Unmarshal(data)
		if err != nil {
			t.Fatalf("%s %s: validating unmarshal: %v", rec.RecordKind(), rec.RecordID(), err)
		}
		back, err := m.Reverse(cr.GetBundle())
		if err != nil {
			t.Fatalf("%s %s: reverse: %v", rec.RecordKind(), rec.RecordID(), err)
		}
		setKind(rec)
		if diff := cmp.Diff(rec, back); diff != "" {
			t.Errorf("%s %s: round trip lost data (-want +got):\n%s", rec.RecordKind(), rec.RecordID(), diff)
		}
	}
	if n < 40 {
		t.Errorf("only %d intake/consent/plan records generated", n)
	}
}
