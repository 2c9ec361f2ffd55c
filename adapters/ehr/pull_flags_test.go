package ehr_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ehr"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/mapping"
)

var defaultBP = ehr.BPThresholds{ElevatedSystolic: 140, ElevatedDiastolic: 90, SevereSystolic: 180, SevereDiastolic: 110}

func TestScreeningFlagsBloodPressure(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	since := now.AddDate(-1, 0, 0)
	at := func(days int) kap.Time { return kap.At(now.AddDate(0, 0, -days)) }
	for _, tc := range []struct {
		name     string
		readings []kap.VitalSigns
		want     []string // details that must appear, in order
	}{
		{"none", nil, nil},
		{"latest normal after an elevated one", []kap.VitalSigns{{Time: at(30), Systolic: 150, Diastolic: 95}, {Time: at(2), Systolic: 128, Diastolic: 82}}, nil},
		{"exactly 140/90 is not above", []kap.VitalSigns{{Time: at(2), Systolic: 140, Diastolic: 90}}, nil},
		{"latest systolic above", []kap.VitalSigns{{Time: at(2), Systolic: 141, Diastolic: 80}}, []string{"latest systolic 141/80"}},
		{"latest diastolic above", []kap.VitalSigns{{Time: at(2), Systolic: 130, Diastolic: 95}}, []string{"latest diastolic 130/95"}},
		{"separate systolic and diastolic observations", []kap.VitalSigns{{Time: at(3), Diastolic: 96}, {Time: at(2), Systolic: 120}},
			[]string{"latest diastolic -/96"}},
		{"severe earlier in the window", []kap.VitalSigns{{Time: at(100), Systolic: 182, Diastolic: 100}, {Time: at(2), Systolic: 120, Diastolic: 80}},
			[]string{"reading 182/100 mm[Hg] on 2026-07-24 at or above 180/110"}},
		{"severe outside the window", []kap.VitalSigns{{Time: at(400), Systolic: 200, Diastolic: 120}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fl := ehr.ScreeningFlags(mapping.ScreeningFacts{BloodPressures: tc.readings}, since, defaultBP)
			if len(fl) != len(tc.want) {
				t.Fatalf("flags %+v, want %v", fl, tc.want)
			}
			for i, w := range tc.want {
				if fl[i].Item != kap.ScreenUncontrolledHypertension || fl[i].Source != "blood-pressure" || !strings.Contains(fl[i].Detail, w) {
					t.Errorf("flag %d = %+v, want detail %q", i, fl[i], w)
				}
			}
		})
	}
}

func TestScreeningFlagsConditionsAndMedications(t *testing.T) {
	f := mapping.ScreeningFacts{
		Medications: []kap.CurrentMedication{
			{Name: "phenelzine", Class: kap.ClassMAOI, Status: "paused"},
			{Name: "diazepam", Class: kap.ClassBenzodiazepine, Status: "stopped"},
			{Name: "escitalopram", Class: kap.ClassSSRI, Status: "active"},
		},
		Conditions: []mapping.ExternalCondition{
			{System: fhir.SystemICD10CM, Code: "F20.9", Display: "Schizophrenia", ClinicalStatus: "active"},
			{System: fhir.SystemICD10CM, Code: "F31.2", Display: "Bipolar", ClinicalStatus: "remission"},
			{System: fhir.SystemSNOMED, Code: "77386006", Display: "Pregnancy"}, // no status: counts
		},
		// A hint mapping found on a second coding the condition list does
		// not keep is still shown.
		ContraindicationHints: []string{kap.ScreenAneurysmOrAVM, kap.ScreenPsychosis, kap.ScreenPregnancy},
	}
	got := ehr.ScreeningFlags(f, time.Time{}, defaultBP)
	want := []string{"maoi/medication", "psychosis/condition", "pregnancy/condition", "aneurysm-or-avm/condition"}
	if len(got) != len(want) {
		t.Fatalf("flags %+v, want %v", got, want)
	}
	for i, w := range want {
		if got[i].Item+"/"+got[i].Source != w {
			t.Errorf("flag %d = %+v, want %s", i, got[i], w)
		}
	}
	if !strings.Contains(got[1].Detail, "F20.9") || !strings.Contains(got[0].Detail, "paused") {
		t.Errorf("details %+v", got)
	}
}
