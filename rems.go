package kap

import (
	"bytes"
	"fmt"
	"html/template"
	"strings"
	"time"
)

// Spravato (esketamine) REMS: after every outpatient intranasal esketamine
// session the clinic completes the REMS Patient Monitoring Form and submits
// it within 7 days (codes.md §7). CheckREMS says what the form needs that
// the records do not hold.

// REMS timing rules (codes.md §7: blood pressure before dosing, about 40
// minutes after and before the end of the session; at least 2 hours of
// monitoring). The windows around "about 40 minutes" and "before session
// completion" are ours: codes.md gives no tolerance.
const (
	REMSMinMonitoring   = 2 * time.Hour
	REMSBP40From        = 25 * time.Minute // earliest reading that counts as the ~40-minute one
	REMSBP40To          = 60 * time.Minute // latest
	REMSBPDischargeSpan = 30 * time.Minute // the completion reading is taken at most this long before discharge
	REMSSubmitWithin    = 7                // days after the session
)

// REMS form items: the IDs of REMSItem and of the QuestionnaireResponse
// items (linkId).
const (
	REMSItemTreatmentDate = "treatment-date"
	REMSItemDose          = "dose"
	REMSItemLotNumber     = "lot-number"
	REMSItemTotalMinutes  = "total-minutes"
	REMSItemMonitoring2h  = "monitoring-2h"
	REMSItemBPBefore      = "bp-before-dose"
	REMSItemBP40          = "bp-40-min"
	REMSItemBPDischarge   = "bp-before-discharge"
	REMSItemSedation      = "sedation"
	REMSItemDissociation  = "dissociation"
	REMSItemRespiratory   = "respiratory-depression"
	REMSItemBenzo         = "conmed-benzodiazepines"
	REMSItemHypnotics     = "conmed-sedative-hypnotics"
	REMSItemStimulants    = "conmed-psychostimulants"
	REMSItemMAOI          = "conmed-maois"
	REMSItemOpioids       = "conmed-opioids"
)

// REMSQuestions are the form items in form order with their question text.
var REMSQuestions = []struct{ ID, Text string }{
	{REMSItemTreatmentDate, "Treatment date"},
	{REMSItemDose, "Dose administered (56 mg, 84 mg or other)"},
	{REMSItemLotNumber, "Lot number(s)"},
	{REMSItemTotalMinutes, "Total time in minutes from the first device to the end of monitoring"},
	{REMSItemMonitoring2h, "Patient monitored for at least 2 hours"},
	{REMSItemBPBefore, "Blood pressure prior to administration (mm[Hg])"},
	{REMSItemBP40, "Blood pressure about 40 minutes after administration (mm[Hg])"},
	{REMSItemBPDischarge, "Blood pressure prior to session completion (mm[Hg])"},
	{REMSItemSedation, "Did the patient experience sedation?"},
	{REMSItemDissociation, "Did the patient experience dissociation?"},
	{REMSItemRespiratory, "Did the patient experience respiratory depression?"},
	{REMSItemBenzo, "Concomitant benzodiazepines?"},
	{REMSItemHypnotics, "Concomitant non-benzodiazepine sedative hypnotics?"},
	{REMSItemStimulants, "Concomitant psychostimulants?"},
	{REMSItemMAOI, "Concomitant monoamine oxidase inhibitors (MAOIs)?"},
	{REMSItemOpioids, "Concomitant opioids?"},
}

// REMSAnswers are answers the clinician gives directly; each overrides
// what CheckREMS would derive from the records. nil: not answered.
type REMSAnswers struct {
	Sedation              *bool `json:"sedation,omitempty"`
	Dissociation          *bool `json:"dissociation,omitempty"`
	RespiratoryDepression *bool `json:"respiratoryDepression,omitempty"`
	Benzodiazepines       *bool `json:"benzodiazepines,omitempty"`
	SedativeHypnotics     *bool `json:"sedativeHypnotics,omitempty"` // non-benzodiazepine
	Psychostimulants      *bool `json:"psychostimulants,omitempty"`
	MAOIs                 *bool `json:"maois,omitempty"`
	Opioids               *bool `json:"opioids,omitempty"`
}

// REMSInput is what CheckREMS reads.
type REMSInput struct {
	Session *DosingSession
	// Intake gives the concomitant medications (classes benzodiazepine,
	// stimulant, maoi, opioid; active or paused counts as concomitant).
	// Non-benzodiazepine sedative hypnotics have no class in the intake
	// and need an explicit answer.
	Intake  *Intake
	Answers REMSAnswers
}

// REMSItem is one form item with its answer.
type REMSItem struct {
	ID       string `json:"id"`
	Question string `json:"question"`
	Answered bool   `json:"answered"`
	// Value is the answer as text ("yes", "no", "56 mg", "118/76"); ""
	// when not answered.
	Value string `json:"value,omitempty"`
	// Source says where the answer came from ("clinician", "derived from
	// MOAA/S scores", "intake medications", "vital signs").
	Source string `json:"source,omitempty"`
	// Missing says why an unanswered item is missing.
	Missing string `json:"missing,omitempty"`

	yes   *bool       // yes/no items
	bp    *VitalSigns // blood-pressure items
	when  time.Time   // blood-pressure items
	num   float64     // dose, total minutes
	valid bool        // monitoring-2h: the rule is met
}

// REMSReport is the REMS Patient Monitoring Form content of one session.
type REMSReport struct {
	SessionID     string     `json:"sessionId"`
	ClientID      string     `json:"clientId"`
	TreatmentDate Date       `json:"treatmentDate"`
	DueDate       Date       `json:"dueDate"` // submit by (7 days after the session)
	FirstDose     time.Time  `json:"firstDose"`
	Discharge     time.Time  `json:"discharge"`
	DoseMg        float64    `json:"doseMg"`
	Items         []REMSItem `json:"items"`
}

// Complete reports whether every item is answered.
func (r *REMSReport) Complete() bool { return len(r.Missing()) == 0 }

// Missing returns the unanswered items.
func (r *REMSReport) Missing() []REMSItem {
	var out []REMSItem
	for _, it := range r.Items {
		if !it.Answered {
			out = append(out, it)
		}
	}
	return out
}

// Item returns the item with the id (zero value if none).
func (r *REMSReport) Item(id string) REMSItem {
	for _, it := range r.Items {
		if it.ID == id {
			return it
		}
	}
	return REMSItem{}
}

// Yes returns a yes/no item's answer (nil when unanswered or not yes/no).
func (it REMSItem) Yes() *bool { return it.yes }

// BP returns a blood-pressure item's reading (nil when unanswered).
func (it REMSItem) BP() *VitalSigns { return it.bp }

// IsEsketamine reports whether the session gave intranasal esketamine.
func (s *DosingSession) IsEsketamine() bool { return s.EsketamineMg() > 0 }

// REMSDueDate returns the date the monitoring form of a session is due:
// 7 days after the session (in the session's own time zone).
func (s *DosingSession) REMSDueDate() Date {
	return Date(s.Start.AddDate(0, 0, REMSSubmitWithin).Format("2006-01-02"))
}

// CheckREMS builds the REMS Patient Monitoring Form content of an
// intranasal esketamine session and names every item the records do not
// answer. It returns EINVALID for an invalid session and for a session
// without intranasal esketamine.
func CheckREMS(in REMSInput) (*REMSReport, error) {
	s := in.Session
	if s == nil {
		return nil, Errorf(EINVALID, "no session")
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if !s.IsEsketamine() {
		return nil, Errorf(EINVALID, "session %s has no intranasal esketamine administration: the Spravato REMS form does not apply", s.ID)
	}
	first := s.FirstDose()
	r := &REMSReport{
		SessionID:     s.ID,
		ClientID:      s.ClientID,
		TreatmentDate: Date(s.Start.Format("2006-01-02")),
		DueDate:       s.REMSDueDate(),
		FirstDose:     first,
		Discharge:     s.Discharge.Time.Time,
		DoseMg:        s.EsketamineMg(),
		// capacity for every item: item() hands out pointers into Items
		Items: make([]REMSItem, 0, len(REMSQuestions)),
	}
	q := map[string]string{}
	for _, x := range REMSQuestions {
		q[x.ID] = x.Text
	}
	item := func(id string) *REMSItem {
		r.Items = append(r.Items, REMSItem{ID: id, Question: q[id]})
		return &r.Items[len(r.Items)-1]
	}
	answer := func(it *REMSItem, value, source string) {
		it.Answered, it.Value, it.Source = true, value, source
	}

	it := item(REMSItemTreatmentDate)
	answer(it, string(r.TreatmentDate), "session")

	it = item(REMSItemDose)
	it.num = r.DoseMg
	switch r.DoseMg {
	case 56, 84:
		answer(it, fmt.Sprintf("%g mg", r.DoseMg), "administrations")
	default:
		// The form has an "other" box; the record is valid (28 mg is one
		// device) but the dose must be explained on the form.
		answer(it, fmt.Sprintf("other (%g mg)", r.DoseMg), "administrations")
	}

	it = item(REMSItemLotNumber)
	var lots []string
	lotMissing := false
	for _, a := range s.Administrations {
		if a.Route != RouteIN {
			continue
		}
		if a.LotNumber == "" {
			lotMissing = true
		} else if !contains(lots, a.LotNumber) {
			lots = append(lots, a.LotNumber)
		}
	}
	if lotMissing || len(lots) == 0 {
		it.Missing = "an esketamine administration has no lot number"
	} else {
		answer(it, strings.Join(lots, ", "), "administrations")
	}

	monitored := s.Discharge.Time.Sub(first)
	it = item(REMSItemTotalMinutes)
	if s.Discharge.Time.IsZero() || monitored <= 0 {
		it.Missing = "the discharge time is missing"
	} else {
		it.num = float64(int(monitored / time.Minute))
		answer(it, fmt.Sprintf("%d", int(monitored/time.Minute)), "first administration to discharge")
	}

	it = item(REMSItemMonitoring2h)
	if monitored >= REMSMinMonitoring {
		it.valid = true
		answer(it, "yes", "first administration to discharge")
	} else {
		it.Missing = fmt.Sprintf("the client was monitored %d minutes after the first device; the REMS requires at least 120", int(monitored/time.Minute))
	}

	bpItem := func(id string, ok func(t time.Time) bool, missing string) {
		it := item(id)
		for i := range s.Vitals {
			vs := &s.Vitals[i]
			if vs.Systolic == 0 || !ok(vs.Time.Time) {
				continue
			}
			it.bp, it.when = vs, vs.Time.Time
			answer(it, fmt.Sprintf("%g/%g", vs.Systolic, vs.Diastolic), "vital signs at "+vs.Time.Format("15:04"))
			if id != REMSItemBPDischarge { // the first matching reading; for discharge the last
				return
			}
		}
		if !it.Answered {
			it.Missing = missing
		}
	}
	bpItem(REMSItemBPBefore, func(t time.Time) bool { return !t.After(first) },
		"no blood pressure was taken before the first esketamine device")
	bpItem(REMSItemBP40, func(t time.Time) bool {
		d := t.Sub(first)
		return d >= REMSBP40From && d <= REMSBP40To
	}, "no blood pressure was taken about 40 minutes after administration (25 to 60 minutes after the first device)")
	bpItem(REMSItemBPDischarge, func(t time.Time) bool {
		d := t.Sub(first)
		return d > REMSBP40To && !t.After(s.Discharge.Time.Time) && s.Discharge.Time.Sub(t) <= REMSBPDischargeSpan
	}, "no blood pressure was taken in the 30 minutes before discharge (after the 40-minute reading)")

	after := func(t Time) bool { return !t.Before(first) }
	hasAE := func(kind string) bool {
		for _, ae := range s.AdverseEvents {
			if ae.Event == kind {
				return true
			}
		}
		return false
	}
	yesNo := func(id string, given *bool, derive func() (*bool, string), missing string) {
		it := item(id)
		if given != nil {
			it.yes = given
			answer(it, yn(*given), "clinician")
			return
		}
		if derive != nil {
			if v, src := derive(); v != nil {
				it.yes = v
				answer(it, yn(*v), src)
				return
			}
		}
		it.Missing = missing
	}
	// Sedation: a sedation adverse event, or any MOAA/S below 5 (not fully
	// alert) after dosing; all MOAA/S scores at 5 answer "no".
	yesNo(REMSItemSedation, in.Answers.Sedation, func() (*bool, string) {
		if hasAE("sedation") {
			return ptr(true), "adverse events"
		}
		var n int
		for _, sc := range s.Scores {
			if sc.Instrument == ScoreMOAAS && after(sc.Time) {
				n++
				if sc.Value < 5 {
					return ptr(true), "derived from MOAA/S scores (below 5 after dosing)"
				}
			}
		}
		if n > 0 {
			return ptr(false), "derived from MOAA/S scores (5 after dosing)"
		}
		return nil, ""
	}, "no sedation answer: record MOAA/S scores after dosing or answer the question")
	// Dissociation: a dissociation adverse event, or any CADSS above 0.
	yesNo(REMSItemDissociation, in.Answers.Dissociation, func() (*bool, string) {
		if hasAE("dissociation") {
			return ptr(true), "adverse events"
		}
		var n int
		for _, sc := range s.Scores {
			if sc.Instrument == ScoreCADSS && after(sc.Time) {
				n++
				if sc.Value > 0 {
					return ptr(true), "derived from CADSS scores (above 0 after dosing)"
				}
			}
		}
		if n > 0 {
			return ptr(false), "derived from CADSS scores (0 after dosing)"
		}
		return nil, ""
	}, "no dissociation answer: record CADSS scores after dosing or answer the question")
	// Respiratory depression: a hypoxia adverse event or SpO2 below 90%
	// after dosing; pulse oximetry after dosing without either answers "no".
	yesNo(REMSItemRespiratory, in.Answers.RespiratoryDepression, func() (*bool, string) {
		if hasAE("hypoxia") {
			return ptr(true), "adverse events"
		}
		var n int
		for _, vs := range s.Vitals {
			if vs.SpO2 != 0 && vs.Time.After(first) {
				n++
				if vs.SpO2 < 90 {
					return ptr(true), "derived from pulse oximetry (SpO2 below 90%)"
				}
			}
		}
		if n > 0 {
			return ptr(false), "derived from pulse oximetry after dosing"
		}
		return nil, ""
	}, "no respiratory-depression answer: no pulse oximetry after dosing")

	conmed := func(id string, given *bool, class, name string) {
		var derive func() (*bool, string)
		if in.Intake != nil && class != "" {
			derive = func() (*bool, string) {
				for _, m := range in.Intake.Medications {
					if m.Class == class && m.Status != "stopped" {
						return ptr(true), "intake medications"
					}
				}
				return ptr(false), "intake medications"
			}
		}
		missing := "no answer: no intake medication list for this client"
		if class == "" {
			missing = "no answer: the intake has no class for " + name + "; answer the question"
		}
		yesNo(id, given, derive, missing)
	}
	conmed(REMSItemBenzo, in.Answers.Benzodiazepines, ClassBenzodiazepine, "benzodiazepines")
	conmed(REMSItemHypnotics, in.Answers.SedativeHypnotics, "", "non-benzodiazepine sedative hypnotics")
	conmed(REMSItemStimulants, in.Answers.Psychostimulants, ClassStimulant, "psychostimulants")
	conmed(REMSItemMAOI, in.Answers.MAOIs, ClassMAOI, "MAOIs")
	conmed(REMSItemOpioids, in.Answers.Opioids, ClassOpioid, "opioids")
	return r, nil
}

func ptr[T any](v T) *T { return &v }

func yn(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// REMSWarnings returns a warning for each REMS form item the records leave
// unanswered (nil for a session without intranasal esketamine or an
// invalid one). The paths are "rems.<item id>".
func (s *DosingSession) REMSWarnings(intake *Intake, answers REMSAnswers) []Issue {
	if !s.IsEsketamine() {
		return nil
	}
	r, err := CheckREMS(REMSInput{Session: s, Intake: intake, Answers: answers})
	if err != nil {
		return nil
	}
	var w []Issue
	for _, it := range r.Missing() {
		w = append(w, Issue{Path: "rems." + it.ID, Reason: "Spravato REMS monitoring form: " + it.Missing, Severity: "warning"})
	}
	return w
}

// Warnings returns SafetyWarnings and, for an esketamine session, the REMS
// warnings: what a clinic is shown with the record.
func (s *DosingSession) Warnings(intake *Intake, answers REMSAnswers) []Issue {
	return append(s.SafetyWarnings(), s.REMSWarnings(intake, answers)...)
}

// Text renders the report as plain text for printing or faxing.
func (r *REMSReport) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "SPRAVATO REMS PATIENT MONITORING FORM (content)\n")
	fmt.Fprintf(&b, "Session %s, client %s\n", r.SessionID, r.ClientID)
	fmt.Fprintf(&b, "Submit by: %s (7 days after the session)\n", r.DueDate)
	status := "COMPLETE"
	if !r.Complete() {
		status = fmt.Sprintf("INCOMPLETE: %d item(s) missing", len(r.Missing()))
	}
	fmt.Fprintf(&b, "Status: %s\n\n", status)
	for _, it := range r.Items {
		v := it.Value
		if !it.Answered {
			v = "MISSING: " + it.Missing
		}
		fmt.Fprintf(&b, "%-72s %s\n", it.Question, v)
	}
	return b.String()
}

var remsHTML = template.Must(template.New("rems").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Spravato REMS monitoring form: session {{.R.SessionID}}</title>
<style>body{font-family:sans-serif}td,th{border:1px solid #999;padding:4px 8px;text-align:left}table{border-collapse:collapse}.missing{color:#a00;font-weight:bold}</style></head>
<body><h1>Spravato REMS Patient Monitoring Form (content)</h1>
<p>Session {{.R.SessionID}}, client {{.R.ClientID}}. Treatment date {{.R.TreatmentDate}}. <strong>Submit by {{.R.DueDate}}</strong>.</p>
<p>{{if .Complete}}Status: complete.{{else}}<span class="missing">Status: incomplete, {{.MissingCount}} item(s) missing.</span>{{end}}</p>
<table><tr><th>Item</th><th>Answer</th><th>Source</th></tr>
{{range .R.Items}}<tr><td>{{.Question}}</td>{{if .Answered}}<td>{{.Value}}</td><td>{{.Source}}</td>{{else}}<td class="missing" colspan="2">Missing: {{.Missing}}</td>{{end}}</tr>
{{end}}</table></body></html>
`))

// HTML renders the report as a printable HTML page (values escaped).
func (r *REMSReport) HTML() (string, error) {
	var b bytes.Buffer
	err := remsHTML.Execute(&b, struct {
		R            *REMSReport
		Complete     bool
		MissingCount int
	}{r, r.Complete(), len(r.Missing())})
	return b.String(), err
}
