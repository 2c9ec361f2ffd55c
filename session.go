package kap

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// DosingSession is one supervised ketamine session of about 3 hours.
type DosingSession struct {
	Kind            Kind             `json:"kind"`
	ID              string           `json:"id"`
	ClientID        string           `json:"clientId"`
	PlanID          string           `json:"planId,omitempty"`
	SessionNumber   int              `json:"sessionNumber,omitempty"` // 1-based within the plan
	Start           Time             `json:"start"`
	End             Time             `json:"end"`
	FastingHours    float64          `json:"fastingHours"`
	PreChecks       []Check          `json:"preChecks,omitempty"`
	WeightKg        float64          `json:"weightKg"`
	Intention       string           `json:"intention,omitempty"`
	Administrations []Administration `json:"administrations"`
	Vitals          []VitalSigns     `json:"vitals"`
	Scores          []SessionScore   `json:"scores,omitempty"`
	AdverseEvents   []AdverseEvent   `json:"adverseEvents,omitempty"`
	Discharge       Discharge        `json:"discharge"`
	MonitoredBy     []string         `json:"monitoredBy,omitempty"` // provider ids
	Psychotherapy   *Psychotherapy   `json:"psychotherapy,omitempty"`
	BillingCodes    []string         `json:"billingCodes,omitempty"`
}

// Pre-session check items.
var CheckItems = []string{"escort-confirmed", "consent-reviewed", "medications-paused",
	"pregnancy-test-negative", "blood-pressure-acceptable", "no-driving-reminded"}

// Check is one pre-session check.
type Check struct {
	Item   string `json:"item"` // CheckItems
	Passed bool   `json:"passed"`
}

// Administration is one dose of ketamine or esketamine.
type Administration struct {
	ID                 string  `json:"id,omitempty"` // defaults to "a<n>" (1-based)
	Route              string  `json:"route"`        // Routes: IV, IM, SL, PO, IN
	Product            string  `json:"product"`      // Products
	DoseMg             float64 `json:"doseMg"`
	DoseMgPerKg        float64 `json:"doseMgPerKg,omitempty"`
	Start              Time    `json:"start"`
	Stop               Time    `json:"stop,omitzero"`                // required for IV infusions
	RateMgPerKgPerHour float64 `json:"rateMgPerKgPerHour,omitempty"` // IV infusion rate
	LotNumber          string  `json:"lotNumber,omitempty"`
	AdministeredBy     string  `json:"administeredBy"` // provider id (for esketamine: the supervising provider)
}

// VitalSigns is one set of readings taken at one time. A zero value means
// "not measured".
type VitalSigns struct {
	Time      Time    `json:"time"`
	Systolic  float64 `json:"systolic,omitempty"`  // mm[Hg]
	Diastolic float64 `json:"diastolic,omitempty"` // mm[Hg]
	HeartRate float64 `json:"heartRate,omitempty"` // /min
	SpO2      float64 `json:"spo2,omitempty"`      // %
	RespRate  float64 `json:"respRate,omitempty"`  // /min
	TempC     float64 `json:"tempC,omitempty"`     // Cel
}

// Session score instruments (no LOINC code exists for either: see
// ../shared/domain/codes.md section 2).
const (
	ScoreCADSS = "CADSS"  // Clinician-Administered Dissociative States Scale, 0–92
	ScoreMOAAS = "MOAA/S" // Modified Observer's Assessment of Alertness/Sedation, 0–5
)

// SessionScore is a dissociation or sedation score taken during a session.
type SessionScore struct {
	Time       Time    `json:"time"`
	Instrument string  `json:"instrument"` // CADSS or MOAA/S
	Value      float64 `json:"value"`
}

// Adverse event kinds (SNOMED CT codes in fhir/codes.go).
var AdverseEventKinds = []string{"nausea", "vomiting", "dizziness", "elevated-blood-pressure", "hypertension",
	"anxiety", "panic", "agitation", "hallucinations", "confusion", "delirium", "sedation", "headache",
	"hypotension", "hypoxia", "dissociation"}

// AdverseEvent is something that went wrong during a session and what was
// done about it.
type AdverseEvent struct {
	ID            string         `json:"id,omitempty"` // defaults to "ae<n>"
	Time          Time           `json:"time"`
	Event         string         `json:"event"`    // AdverseEventKinds
	Severity      string         `json:"severity"` // mild, moderate, severe
	Serious       bool           `json:"serious"`
	Outcome       string         `json:"outcome"` // resolved, recovering, ongoing, resolvedWithSequelae, fatal, unknown
	Interventions []Intervention `json:"interventions,omitempty"`
}

// Intervention is an action taken for an adverse event.
type Intervention struct {
	Time        Time   `json:"time"`
	Description string `json:"description"` // e.g. "ondansetron 4 mg SL", "infusion paused"
}

// Discharge is how the session ended.
type Discharge struct {
	Time          Time   `json:"time"`
	CriteriaMet   bool   `json:"criteriaMet"`
	EscortPresent bool   `json:"escortPresent"`
	ReleasedTo    string `json:"releasedTo,omitempty"` // the person's name
}

// Psychotherapy is the therapy delivered during the session.
type Psychotherapy struct {
	Minutes     int    `json:"minutes"`
	TherapistID string `json:"therapistId"`
}

// AdministrationID returns the id of administration i.
func (s *DosingSession) AdministrationID(i int) string {
	if id := s.Administrations[i].ID; id != "" {
		return id
	}
	return fmt.Sprintf("a%d", i+1)
}

// AdverseEventID returns the id of adverse event i.
func (s *DosingSession) AdverseEventID(i int) string {
	if id := s.AdverseEvents[i].ID; id != "" {
		return id
	}
	return fmt.Sprintf("ae%d", i+1)
}

// normalize clears ids equal to their positional default ("a1", "ae2"), so
// a record that spells out the default and one that leaves it out are the
// same record.
func (s *DosingSession) normalize() {
	for i := range s.Administrations {
		if s.Administrations[i].ID == fmt.Sprintf("a%d", i+1) {
			s.Administrations[i].ID = ""
		}
	}
	for i := range s.AdverseEvents {
		if s.AdverseEvents[i].ID == fmt.Sprintf("ae%d", i+1) {
			s.AdverseEvents[i].ID = ""
		}
	}
}

func (s *DosingSession) RecordKind() Kind       { return KindDosingSession }
func (s *DosingSession) RecordID() string       { return s.ID }
func (s *DosingSession) RecordClientID() string { return s.ClientID }
func (s *DosingSession) RecordDate() time.Time  { return s.Start.Time }

// FirstDose returns the start of the first administration (zero if none).
func (s *DosingSession) FirstDose() time.Time {
	var t time.Time
	for _, a := range s.Administrations {
		if t.IsZero() || a.Start.Before(t) {
			t = a.Start.Time
		}
	}
	return t
}

// TotalDoseMg returns the sum of all administered doses.
func (s *DosingSession) TotalDoseMg() float64 {
	var sum float64
	for _, a := range s.Administrations {
		sum += a.DoseMg
	}
	return sum
}

var (
	severities = []string{"mild", "moderate", "severe"}
	aeOutcomes = []string{"resolved", "recovering", "ongoing", "resolvedWithSequelae", "fatal", "unknown"}
)

// Validate checks the session. Clinical concerns that do not make the
// record wrong (a short fast, a discharge without escort) are reported by
// SafetyWarnings instead.
func (s *DosingSession) Validate() error {
	var v validator
	v.kind(s.Kind, KindDosingSession)
	v.id("id", s.ID, true)
	v.id("clientId", s.ClientID, true)
	v.id("planId", s.PlanID, false)
	if s.SessionNumber < 0 || s.SessionNumber > 200 {
		v.add("sessionNumber", "must be between 1 and 200")
	}
	v.time("start", s.Start, true)
	v.time("end", s.End, true)
	v.order("start", s.Start, "end", s.End)
	if s.Start.Valid() && s.End.Valid() && s.End.Sub(s.Start.Time) > 12*time.Hour {
		v.add("end", "must be within 12 hours of start")
	}
	v.rangeF("fastingHours", s.FastingHours, 0, 48)
	v.rangeF("weightKg", s.WeightKg, 20, 350)
	for i, c := range s.PreChecks {
		v.oneOf(fmt.Sprintf("preChecks[%d].item", i), c.Item, CheckItems, true)
	}
	within := func(path string, t Time) {
		if t.Valid() && !t.IsZero() && s.Start.Valid() && s.End.Valid() && !s.Start.IsZero() && !s.End.IsZero() &&
			(t.Before(s.Start.Time) || t.After(s.End.Time)) {
			v.add(path, "must be within the session (start to end)")
		}
	}
	if len(s.Administrations) == 0 {
		v.add("administrations", "is required: at least one administration")
	}
	ids := map[string]bool{}
	for i, a := range s.Administrations {
		p := fmt.Sprintf("administrations[%d]", i)
		id := s.AdministrationID(i)
		v.id(p+".id", a.ID, false)
		if ids[id] {
			v.add(p+".id", "appears twice")
		}
		ids[id] = true
		v.oneOf(p+".route", a.Route, Routes, true)
		v.oneOf(p+".product", a.Product, Products, true)
		if ps, ok := routeProducts[a.Route]; ok && a.Product != "" && !contains(ps, a.Product) {
			v.add(p+".product", "cannot be given by route %s (allowed: %v)", a.Route, ps)
		}
		v.rangeF(p+".doseMg", a.DoseMg, 1, 800)
		if a.DoseMgPerKg != 0 {
			v.rangeF(p+".doseMgPerKg", a.DoseMgPerKg, 0.05, 10)
			if s.WeightKg > 0 && math.Abs(a.DoseMgPerKg*s.WeightKg-a.DoseMg) > math.Max(1, 0.02*a.DoseMg) {
				v.add(p+".doseMgPerKg", "does not match doseMg for the session weight (%.4g mg/kg × %.4g kg ≠ %.4g mg)", a.DoseMgPerKg, s.WeightKg, a.DoseMg)
			}
		}
		v.time(p+".start", a.Start, true)
		v.time(p+".stop", a.Stop, a.Route == RouteIV)
		v.order(p+".start", a.Start, p+".stop", a.Stop)
		within(p+".start", a.Start)
		within(p+".stop", a.Stop)
		if a.RateMgPerKgPerHour != 0 {
			if a.Route != RouteIV {
				v.add(p+".rateMgPerKgPerHour", "is only for IV infusions")
			} else {
				v.rangeF(p+".rateMgPerKgPerHour", a.RateMgPerKgPerHour, 0.01, 10)
			}
		}
		if a.Route == RouteIN {
			if a.DoseMg != 28 && a.DoseMg != 56 && a.DoseMg != 84 {
				v.add(p+".doseMg", "must be 28, 56 or 84 mg for intranasal esketamine (28 mg per device)")
			}
			if a.LotNumber == "" {
				v.add(p+".lotNumber", "is required for esketamine (REMS patient monitoring form)")
			}
		}
		v.id(p+".administeredBy", a.AdministeredBy, true)
	}
	if len(s.Vitals) == 0 {
		v.add("vitals", "is required: vital signs before, during and after dosing")
	}
	seenT := map[int64]bool{}
	for i, vs := range s.Vitals {
		p := fmt.Sprintf("vitals[%d]", i)
		v.time(p+".time", vs.Time, true)
		within(p+".time", vs.Time)
		if vs.Time.Valid() {
			if seenT[vs.Time.UnixNano()] {
				v.add(p+".time", "two vital-sign sets have the same time; merge them")
			}
			seenT[vs.Time.UnixNano()] = true
		}
		if (vs.Systolic == 0) != (vs.Diastolic == 0) {
			v.add(p, "blood pressure needs both systolic and diastolic")
		}
		if vs.Systolic != 0 {
			v.rangeF(p+".systolic", vs.Systolic, 50, 300)
			v.rangeF(p+".diastolic", vs.Diastolic, 20, 200)
			if vs.Diastolic >= vs.Systolic {
				v.add(p+".diastolic", "must be below systolic")
			}
		}
		if vs.HeartRate != 0 {
			v.rangeF(p+".heartRate", vs.HeartRate, 20, 250)
		}
		if vs.SpO2 != 0 {
			v.rangeF(p+".spo2", vs.SpO2, 50, 100)
		}
		if vs.RespRate != 0 {
			v.rangeF(p+".respRate", vs.RespRate, 2, 60)
		}
		if vs.TempC != 0 {
			v.rangeF(p+".tempC", vs.TempC, 30, 43)
		}
		if vs.Systolic == 0 && vs.HeartRate == 0 && vs.SpO2 == 0 && vs.RespRate == 0 && vs.TempC == 0 {
			v.add(p, "holds no reading")
		}
	}
	for i, sc := range s.Scores {
		p := fmt.Sprintf("scores[%d]", i)
		v.time(p+".time", sc.Time, true)
		within(p+".time", sc.Time)
		v.oneOf(p+".instrument", sc.Instrument, []string{ScoreCADSS, ScoreMOAAS}, true)
		if sc.Value != float64(int(sc.Value)) {
			v.add(p+".value", "must be a whole number")
		}
		switch sc.Instrument {
		case ScoreCADSS:
			v.rangeF(p+".value", sc.Value, 0, 92)
		case ScoreMOAAS:
			v.rangeF(p+".value", sc.Value, 0, 5)
		}
	}
	aeIDs := map[string]bool{}
	for i, ae := range s.AdverseEvents {
		p := fmt.Sprintf("adverseEvents[%d]", i)
		v.id(p+".id", ae.ID, false)
		if aeIDs[s.AdverseEventID(i)] {
			v.add(p+".id", "appears twice")
		}
		aeIDs[s.AdverseEventID(i)] = true
		v.time(p+".time", ae.Time, true)
		within(p+".time", ae.Time)
		v.oneOf(p+".event", ae.Event, AdverseEventKinds, true)
		v.oneOf(p+".severity", ae.Severity, severities, true)
		v.oneOf(p+".outcome", ae.Outcome, aeOutcomes, true)
		for j, in := range ae.Interventions {
			ip := fmt.Sprintf("%s.interventions[%d]", p, j)
			v.time(ip+".time", in.Time, true)
			within(ip+".time", in.Time)
			v.required(ip+".description", in.Description)
		}
	}
	v.time("discharge.time", s.Discharge.Time, true)
	within("discharge.time", s.Discharge.Time)
	for i, a := range s.Administrations {
		last := a.Start
		if !a.Stop.IsZero() {
			last = a.Stop
		}
		if s.Discharge.Time.Valid() && last.Valid() && !s.Discharge.Time.IsZero() && s.Discharge.Time.Before(last.Time) {
			v.add("discharge.time", "must be after the end of administrations[%d]", i)
		}
	}
	for i, id := range s.MonitoredBy {
		v.id(fmt.Sprintf("monitoredBy[%d]", i), id, true)
	}
	if s.Psychotherapy != nil {
		if s.Psychotherapy.Minutes < 1 || s.Psychotherapy.Minutes > 600 {
			v.add("psychotherapy.minutes", "must be between 1 and 600")
		}
		v.id("psychotherapy.therapistId", s.Psychotherapy.TherapistID, true)
	}
	v.billing("billingCodes", s.BillingCodes)
	s.validateEsketamineBilling(&v)
	return v.err()
}

// validateEsketamineBilling applies codes.md §4: G2082 covers up to 56 mg of
// esketamine and G2083 more than 56 mg; both include the drug, so no drug
// line (J0013) is billed with them.
func (s *DosingSession) validateEsketamineBilling(v *validator) {
	var inMg float64
	for _, a := range s.Administrations {
		if a.Route == RouteIN {
			inMg += a.DoseMg
		}
	}
	has := map[string]int{}
	for i, c := range s.BillingCodes {
		has[c] = i
	}
	if i, ok := has["G2082"]; ok && (inMg == 0 || inMg > 56) {
		v.add(fmt.Sprintf("billingCodes[%d]", i), "G2082 is for up to 56 mg of esketamine (this session: %g mg); use G2083 above 56 mg", inMg)
	}
	if i, ok := has["G2083"]; ok && inMg <= 56 {
		v.add(fmt.Sprintf("billingCodes[%d]", i), "G2083 is for more than 56 mg of esketamine (this session: %g mg); use G2082", inMg)
	}
	_, g82 := has["G2082"]
	_, g83 := has["G2083"]
	if i, ok := has["J0013"]; ok && (g82 || g83) {
		v.add(fmt.Sprintf("billingCodes[%d]", i), "G2082/G2083 include the esketamine: do not bill the drug line J0013 with them")
	}
}

// SafetyWarnings returns the clinical concerns of a valid session: they do
// not make the record invalid (it documents what happened) but are shown to
// the clinic and kept with the record.
func (s *DosingSession) SafetyWarnings() []Issue {
	var w []Issue
	add := func(path, reason string) { w = append(w, Issue{Path: path, Reason: reason, Severity: "warning"}) }
	// Ketamine sessions ask for a 3–4 hour fast; the esketamine label asks
	// for 2 hours without food.
	minFast, what := 3.0, "3 hours"
	if len(s.Administrations) > 0 && s.Administrations[0].Route == RouteIN {
		minFast, what = 2, "2 hours (esketamine)"
	}
	if s.FastingHours < minFast {
		add("fastingHours", "fasting was shorter than "+what)
	}
	if !s.Discharge.CriteriaMet {
		add("discharge.criteriaMet", "the client was discharged before discharge criteria were met")
	}
	if !s.Discharge.EscortPresent {
		add("discharge.escortPresent", "the client was discharged without an escort present")
	}
	first := s.FirstDose()
	var pre bool
	for _, vs := range s.Vitals {
		if vs.Systolic != 0 && !vs.Time.After(first) {
			pre = true
		}
	}
	if !pre {
		add("vitals", "no blood pressure was taken before the first dose")
	}
	var after []time.Time
	for _, vs := range s.Vitals {
		if vs.Time.After(first) {
			after = append(after, vs.Time.Time)
		}
	}
	sort.Slice(after, func(i, j int) bool { return after[i].Before(after[j]) })
	if len(after) == 0 {
		add("vitals", "no vital signs were taken after the first dose")
	}
	for _, vs := range s.Vitals {
		if vs.Systolic >= 180 || vs.Diastolic >= 110 {
			add("vitals", "blood pressure reached 180/110 mm[Hg] or more")
			break
		}
	}
	for _, vs := range s.Vitals {
		if vs.SpO2 != 0 && vs.SpO2 < 90 {
			add("vitals", "SpO2 fell below 90%")
			break
		}
	}
	if !s.Discharge.Time.IsZero() && !first.IsZero() && s.Discharge.Time.Sub(first) < 2*time.Hour {
		for _, a := range s.Administrations {
			if a.Route == RouteIN {
				add("discharge.time", "esketamine requires at least 2 hours of monitoring after administration")
				break
			}
		}
	}
	return w
}
