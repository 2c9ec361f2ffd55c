package kap_test

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap"
)

func missingIDs(r *kap.REMSReport) string {
	var s []string
	for _, it := range r.Missing() {
		if it.Missing == "" {
			s = append(s, it.ID+"(no reason)")
			continue
		}
		s = append(s, it.ID)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

func no() *bool  { b := false; return &b }
func yes() *bool { b := true; return &b }

// TestREMSComplete: the two testdata esketamine sessions answer every item
// from the records once the one question the intake cannot answer
// (non-benzodiazepine sedative hypnotics) is answered.
func TestREMSComplete(t *testing.T) {
	for _, c := range []struct {
		session, intake string
		dose            float64
		sedation, dis   bool
		benzo           bool
		due             kap.Date
	}{
		{"65-dosing-c005-1-esketamine56.json", "61-intake-c005.json", 56, true, true, true, "2026-03-03"},
		{"75-dosing-c006-7-esketamine84.json", "71-intake-c006.json", 84, true, true, false, "2026-03-02"},
	} {
		t.Run(c.session, func(t *testing.T) {
			s := loadRecord[*kap.DosingSession](t, c.session)
			in := loadRecord[*kap.Intake](t, c.intake)
			r, err := kap.CheckREMS(kap.REMSInput{Session: s, Intake: in, Answers: kap.REMSAnswers{SedativeHypnotics: no()}})
			if err != nil {
				t.Fatal(err)
			}
			if !r.Complete() {
				t.Fatalf("missing: %s", missingIDs(r))
			}
			if r.DueDate != c.due || r.DoseMg != c.dose {
				t.Errorf("due %s dose %g; want %s %g", r.DueDate, r.DoseMg, c.due, c.dose)
			}
			if y := r.Item(kap.REMSItemSedation).Yes(); y == nil || *y != c.sedation {
				t.Errorf("sedation answer %v", y)
			}
			if y := r.Item(kap.REMSItemDissociation).Yes(); y == nil || *y != c.dis {
				t.Errorf("dissociation answer %v", y)
			}
			if y := r.Item(kap.REMSItemRespiratory).Yes(); y == nil || *y {
				t.Errorf("respiratory depression answer %v (SpO2 stayed at or above 97%%)", y)
			}
			if y := r.Item(kap.REMSItemBenzo).Yes(); y == nil || *y != c.benzo {
				t.Errorf("benzodiazepine answer %v", y)
			}
			bp40 := r.Item(kap.REMSItemBP40).BP()
			if bp40 == nil || bp40.Time.Sub(r.FirstDose) != 40*time.Minute {
				t.Errorf("the 40-minute reading: %+v", bp40)
			}
			if got := s.REMSWarnings(in, kap.REMSAnswers{SedativeHypnotics: no()}); len(got) != 0 {
				t.Errorf("warnings on a complete session: %v", got)
			}
			text := r.Text()
			html, err := r.HTML()
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{string(c.due), "COMPLETE", "Lot number"} {
				if !strings.Contains(text, want) {
					t.Errorf("text lacks %q", want)
				}
			}
			if !strings.Contains(html, "Submit by "+string(c.due)) || strings.Contains(html, "Missing:") {
				t.Errorf("html: %s", html)
			}
		})
	}
}

// TestREMSIncomplete removes one thing at a time from a complete session;
// each removal must name exactly the item that became missing.
func TestREMSIncomplete(t *testing.T) {
	base := func() (*kap.DosingSession, *kap.Intake) {
		return loadRecord[*kap.DosingSession](t, "65-dosing-c005-1-esketamine56.json"), loadRecord[*kap.Intake](t, "61-intake-c005.json")
	}
	// first dose 13:15; vitals at 13:10, 13:30, 13:55 (40 min), …, 15:25; discharge 15:30.
	dropVitals := func(s *kap.DosingSession, hhmm ...string) {
		var keep []kap.VitalSigns
		for _, v := range s.Vitals {
			drop := false
			for _, h := range hhmm {
				drop = drop || v.Time.Format("15:04") == h
			}
			if !drop {
				keep = append(keep, v)
			}
		}
		s.Vitals = keep
	}
	cases := []struct {
		name, want string
		mutate     func(s *kap.DosingSession, in **kap.Intake, a *kap.REMSAnswers)
	}{
		{"sedative hypnotics unanswered", "conmed-sedative-hypnotics", func(s *kap.DosingSession, in **kap.Intake, a *kap.REMSAnswers) {
			a.SedativeHypnotics = nil
		}},
		{"no intake", "conmed-benzodiazepines conmed-maois conmed-opioids conmed-psychostimulants", func(s *kap.DosingSession, in **kap.Intake, a *kap.REMSAnswers) {
			*in = nil
		}},
		{"no BP before dosing", "bp-before-dose", func(s *kap.DosingSession, in **kap.Intake, a *kap.REMSAnswers) {
			dropVitals(s, "13:10")
		}},
		{"no BP at 40 minutes", "bp-40-min", func(s *kap.DosingSession, in **kap.Intake, a *kap.REMSAnswers) {
			dropVitals(s, "13:55", "14:10") // 14:10 is 55 min, still inside the window
		}},
		{"no BP before discharge", "bp-before-discharge", func(s *kap.DosingSession, in **kap.Intake, a *kap.REMSAnswers) {
			dropVitals(s, "15:25", "15:10")
		}},
		{"monitored under 2 hours", "monitoring-2h", func(s *kap.DosingSession, in **kap.Intake, a *kap.REMSAnswers) {
			// 105 min; the 14:55 reading still counts as the one before discharge
			s.Discharge.Time = kap.MustTime("2026-02-24T15:00:00-07:00")
			dropVitals(s, "15:10", "15:25")
		}},
		{"no sedation scores", "sedation", func(s *kap.DosingSession, in **kap.Intake, a *kap.REMSAnswers) {
			var keep []kap.SessionScore
			for _, sc := range s.Scores {
				if sc.Instrument != kap.ScoreMOAAS {
					keep = append(keep, sc)
				}
			}
			s.Scores = keep
		}},
		{"no dissociation scores", "dissociation", func(s *kap.DosingSession, in **kap.Intake, a *kap.REMSAnswers) {
			var keep []kap.SessionScore
			for _, sc := range s.Scores {
				if sc.Instrument != kap.ScoreCADSS {
					keep = append(keep, sc)
				}
			}
			s.Scores = keep
		}},
		{"no pulse oximetry after dosing", "respiratory-depression", func(s *kap.DosingSession, in **kap.Intake, a *kap.REMSAnswers) {
			for i := range s.Vitals {
				if s.Vitals[i].Time.After(s.FirstDose()) {
					s.Vitals[i].SpO2 = 0
				}
			}
		}},
		{"clinician answers override", "", func(s *kap.DosingSession, in **kap.Intake, a *kap.REMSAnswers) {
			s.Scores = nil
			a.Sedation, a.Dissociation = no(), yes()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, in := base()
			a := kap.REMSAnswers{SedativeHypnotics: no()}
			tc.mutate(s, &in, &a)
			r, err := kap.CheckREMS(kap.REMSInput{Session: s, Intake: in, Answers: a})
			if err != nil {
				t.Fatal(err)
			}
			if got := missingIDs(r); got != tc.want {
				t.Errorf("missing %q, want %q", got, tc.want)
			}
			w := s.REMSWarnings(in, a)
			if len(w) != len(r.Missing()) {
				t.Errorf("%d warnings for %d missing items", len(w), len(r.Missing()))
			}
			for _, is := range w {
				if is.Severity != "warning" || !strings.HasPrefix(is.Path, "rems.") {
					t.Errorf("warning %+v", is)
				}
			}
			if tc.want != "" {
				if !strings.Contains(r.Text(), "MISSING") {
					t.Error("the text summary does not show the missing item")
				}
				all := s.Warnings(in, a)
				if len(all) < len(w) {
					t.Errorf("Warnings drops REMS warnings: %v", all)
				}
			}
		})
	}

	// The lot number is also required by record validation: a session
	// without it is refused with the field named.
	s, in := base()
	s.Administrations[0].LotNumber = ""
	if _, err := kap.CheckREMS(kap.REMSInput{Session: s, Intake: in}); err == nil || !strings.Contains(issuePaths(err), "lotNumber") {
		t.Errorf("session without lot number: %v", err)
	}
	// Not an esketamine session.
	iv := loadRecord[*kap.DosingSession](t, "16-dosing-c001-1.json")
	if _, err := kap.CheckREMS(kap.REMSInput{Session: iv}); kap.ErrorCode(err) != kap.EINVALID {
		t.Errorf("IV session: %v", err)
	}
	if w := iv.REMSWarnings(nil, kap.REMSAnswers{}); w != nil {
		t.Errorf("REMS warnings on an IV session: %v", w)
	}
}
