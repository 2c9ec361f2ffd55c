// Package synth generates synthetic, clinically plausible KAP courses as
// kap/v1 records: providers, and per client an intake, consent, treatment
// plan, six dosing sessions with vitals and scores, an integration session
// after each and outcome assessments. Everything is derived from a seed, so
// the same options always give the same records. Names are obviously fake
// ("Testperson") and phone numbers are in the fictional 555-01xx range: the
// output holds no PHI and may be used in tests, benchmarks and demos.
package synth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kapbridge/kap"
)

// Options controls Generate.
type Options struct {
	// Clients is the number of clients (0 gives only the providers).
	Clients int
	// Seed selects the data; the same seed gives the same records.
	Seed int64
	// Start is the first intake; its location is the clinic's zone. The
	// zero value means 2026-01-05 08:00 at UTC-07:00.
	Start time.Time
}

// MaxClients bounds Options.Clients.
const MaxClients = 100000

// DosingSessions is the number of dosing sessions in every generated course.
const DosingSessions = 6

// Provider ids of the generated clinic.
const (
	PrescriberID  = "p-md1"
	Prescriber2ID = "p-md2"
	TherapistID   = "p-th1"
	Therapist2ID  = "p-th2"
	NurseID       = "p-rn1"
)

// Generate returns the records of Options.Clients synthetic courses in a
// valid submission order: the providers first, then each client's records in
// clinical order. About one client in eight is screened out at intake and has
// only a Client and an Intake record. Client i's records depend only on the
// seed and i, so a larger Clients value extends a smaller one.
func Generate(opts Options) ([]kap.Record, error) {
	if opts.Clients < 0 || opts.Clients > MaxClients {
		return nil, fmt.Errorf("synth: Clients must be between 0 and %d", MaxClients)
	}
	start := opts.Start
	if start.IsZero() {
		start = time.Date(2026, 1, 5, 8, 0, 0, 0, time.FixedZone("", -7*3600))
	}
	recs := providers(rand.New(rand.NewPCG(uint64(opts.Seed), 0x9e3779b97f4a7c15)))
	width := max(4, len(fmt.Sprint(opts.Clients)))
	for i := 0; i < opts.Clients; i++ {
		g := &gen{
			r:     rand.New(rand.NewPCG(uint64(opts.Seed), uint64(i)+1)),
			id:    fmt.Sprintf("c%0*d", width, i+1),
			day0:  startOfDay(start).AddDate(0, 0, i%90),
			index: i,
		}
		recs = append(recs, g.course()...)
	}
	return recs, nil
}

func startOfDay(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, t.Location())
}

func providers(r *rand.Rand) []kap.Record {
	p := func(id, given, family, cred string, roles ...string) *kap.Provider {
		return &kap.Provider{ID: id, NPI: npi(r), Name: kap.HumanName{Family: family, Given: []string{given}},
			Roles: roles, Credentials: cred}
	}
	return []kap.Record{
		p(PrescriberID, "Morgan", "Testdoctor", "MD", kap.RolePrescriber),
		p(Prescriber2ID, "Jesse", "Testprescriber", "PMHNP", kap.RolePrescriber, kap.RolePsychotherapist),
		p(TherapistID, "Riley", "Testtherapist", "LCSW", kap.RolePsychotherapist),
		p(Therapist2ID, "Harper", "Testcounselor", "LPC", kap.RolePsychotherapist),
		p(NurseID, "Casey", "Testnurse", "RN", kap.RoleNurse),
	}
}

// npi returns a random valid NPI (first digit 1 or 2, Luhn check digit).
func npi(r *rand.Rand) string {
	base := fmt.Sprintf("%d%08d", 1+r.IntN(2), r.IntN(100000000))
	for d := 0; d <= 9; d++ {
		if s := base + fmt.Sprint(d); kap.ValidNPI(s) {
			return s
		}
	}
	panic("synth: no NPI check digit") // unreachable: one digit always fits
}

// gen builds one client's course.
type gen struct {
	r     *rand.Rand
	id    string
	day0  time.Time
	index int

	escort string
	recs   []kap.Record
}

func (g *gen) add(r kap.Record) { g.recs = append(g.recs, r) }

// at returns the time on day d (relative to day0) at minute m of the day.
func (g *gen) at(d, m int) time.Time {
	return g.day0.AddDate(0, 0, d).Add(time.Duration(m) * time.Minute)
}

func (g *gen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }

func (g *gen) between(lo, hi float64) float64 { return lo + g.r.Float64()*(hi-lo) }

func round(x float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(x*p) / p
}

var (
	givenNames  = []string{"Avery", "Jordan", "Sam", "Taylor", "Alex", "Drew", "Quinn", "Jamie", "Riley", "Casey", "Morgan", "Robin", "Sky", "Kim", "Pat", "Lee", "Ash", "Rowan", "Emery", "Finley"}
	areaCodes   = []string{"602", "480", "520", "623", "928"}
	relations   = []string{"spouse", "partner", "friend", "sibling", "parent", "adult child"}
	depression  = []string{"F33.2", "F33.1", "F32.2", "F32.1", "F33.9"}
	ptsdCodes   = []string{"F43.10", "F43.12"}
	painCodes   = []string{"G89.4", "G89.29"}
	substCodes  = []string{"F10.20", "F11.20", "F11.21"}
	contraItems = []string{kap.ScreenUncontrolledHypertension, kap.ScreenCardiovascularDisease, kap.ScreenPsychosis,
		kap.ScreenDissociativeDisorder, kap.ScreenPregnancy, kap.ScreenBipolarMania}
)

func (g *gen) phone() string {
	return fmt.Sprintf("%s-555-01%02d", g.pick(areaCodes...), g.r.IntN(100))
}

// plan of one course, decided up front.
type course struct {
	route    string
	product  string
	weight   float64
	perKg    []float64 // per session, for weight-based routes
	fixedMg  []float64 // per session, for SL and IN
	interval int       // days between dosing sessions
	maxMg    float64
}

func (g *gen) course() []kap.Record {
	r := g.r
	given := givenNames[r.IntN(len(givenNames))]
	gender := g.pick("female", "female", "male", "male", "other")
	birth := time.Date(1950+r.IntN(52), time.Month(1+r.IntN(12)), 1+r.IntN(28), 0, 0, 0, 0, time.UTC)
	escortGiven := givenNames[r.IntN(len(givenNames))]
	g.escort = escortGiven + " Testescort"
	client := &kap.Client{ID: g.id, Name: kap.HumanName{Family: "Testperson", Given: []string{given}},
		BirthDate: kap.Date(birth.Format("2006-01-02")), Gender: gender, Phone: g.phone(),
		Email: strings.ToLower(given) + "." + g.id + "@example.com",
		Contacts: []kap.Contact{{Name: kap.HumanName{Family: "Testescort", Given: []string{escortGiven}},
			Relationship: g.pick(relations...), Roles: []string{kap.ContactEscort, kap.ContactEmergency}, Phone: g.phone()}}}
	g.add(client)

	// Intake and baseline scores.
	intakeAt := g.at(0, 8*60+30*r.IntN(16))
	var ind []kap.Indication
	primary := g.pick(kap.IndicationTRD, kap.IndicationTRD, kap.IndicationMDD, kap.IndicationPTSD, kap.IndicationAnxiety,
		kap.IndicationSubstanceUse, kap.IndicationChronicPain)
	addInd := func(code string) {
		for _, x := range ind {
			if x.Code == code {
				return
			}
		}
		var icd string
		switch code {
		case kap.IndicationTRD, kap.IndicationMDD:
			icd = g.pick(depression...)
		case kap.IndicationPTSD:
			icd = g.pick(ptsdCodes...)
		case kap.IndicationAnxiety:
			icd = "F41.1"
		case kap.IndicationSubstanceUse:
			icd = g.pick(substCodes...)
		case kap.IndicationChronicPain:
			icd = g.pick(painCodes...)
		}
		ind = append(ind, kap.Indication{Code: code, ICD10: icd})
	}
	addInd(primary)
	if r.IntN(3) == 0 {
		addInd(g.pick(kap.IndicationAnxiety, kap.IndicationMDD, kap.IndicationPTSD))
	}
	if primary != kap.IndicationMDD && primary != kap.IndicationTRD && r.IntN(2) == 0 {
		addInd(kap.IndicationMDD)
	}
	has := func(code string) bool {
		for _, x := range ind {
			if x.Code == code {
				return true
			}
		}
		return false
	}
	ineligible := r.IntN(8) == 0
	var present []string
	if ineligible {
		present = append(present, g.pick(contraItems...))
		if gender == "male" && present[0] == kap.ScreenPregnancy {
			present[0] = kap.ScreenUncontrolledHypertension
		}
	}
	var screen kap.ContraindicationScreen
	for _, it := range kap.ScreenItems {
		p := false
		for _, x := range present {
			p = p || x == it
		}
		screen.Answers = append(screen.Answers, kap.ScreenAnswer{Item: it, Present: p})
	}
	screen.Outcome = kap.OutcomeEligible
	if ineligible {
		screen.Outcome = kap.OutcomeIneligible
	}
	meds := g.medications(has(kap.IndicationChronicPain))
	phq0 := 14 + r.IntN(10)
	gad0 := 8 + r.IntN(11)
	pcl0 := 38 + r.IntN(30)
	baseline := []kap.ScoreSummary{{Instrument: kap.InstrumentPHQ9, Total: phq0}}
	if has(kap.IndicationAnxiety) {
		baseline = append(baseline, kap.ScoreSummary{Instrument: kap.InstrumentGAD7, Total: gad0})
	}
	if has(kap.IndicationPTSD) {
		baseline = append(baseline, kap.ScoreSummary{Instrument: kap.InstrumentPCL5, Total: pcl0})
	}
	prescriber := g.pick(PrescriberID, Prescriber2ID)
	g.add(&kap.Intake{ID: "in-" + g.id, ClientID: g.id, Date: kap.At(intakeAt), PrescriberID: prescriber,
		Indications: ind, Screen: screen, Medications: meds, Baseline: baseline, BillingCodes: []string{"90791"}})
	if ineligible {
		return g.recs
	}
	g.assessment("as-"+g.id+"-phq9-0", kap.InstrumentPHQ9, intakeAt.Add(20*time.Minute), phq0, "")
	if has(kap.IndicationAnxiety) {
		g.assessment("as-"+g.id+"-gad7-0", kap.InstrumentGAD7, intakeAt.Add(25*time.Minute), gad0, "")
	}
	if has(kap.IndicationPTSD) {
		g.assessment("as-"+g.id+"-pcl5-0", kap.InstrumentPCL5, intakeAt.Add(30*time.Minute), pcl0, "")
	}
	g.add(&kap.Consent{ID: "cons-" + g.id, ClientID: g.id, SignedAt: kap.At(intakeAt.Add(70 * time.Minute)), Status: "active",
		TreatmentConsent: true, EscortAgreement: true, NoDrivingAck: true,
		Share: []kap.ShareGrant{{Target: "ehr-main", Type: "ehr", Name: "Example Community Health EHR"},
			{Target: "payer-acme", Type: "payer", Name: "Acme Test Health Plan"}}})

	c := g.plan()
	therapist := g.pick(TherapistID, Therapist2ID)
	// Two or three preparation sessions (not records) come first: dosing
	// starts 1–3 weeks after the intake.
	firstDay := 7 * (1 + r.IntN(3))
	planStart := g.at(firstDay, 0)
	end := planStart.AddDate(0, 0, c.interval*DosingSessions+30)
	order := kap.MedicationOrder{Product: c.product, Route: c.route, MaxDoseMg: c.maxMg}
	switch c.route {
	case kap.RouteSL, kap.RouteIN:
		order.Dose = kap.Quantity{Value: c.fixedMg[0], Unit: "mg"}
	default:
		order.Dose = kap.Quantity{Value: c.perKg[0], Unit: "mg/kg"}
	}
	order.Frequency = fmt.Sprintf("%d sessions, every %d days", DosingSessions, c.interval)
	goalTarget := float64(phq0 / 2)
	g.add(&kap.TreatmentPlan{ID: "plan-" + g.id, ClientID: g.id, Created: kap.At(intakeAt.AddDate(0, 0, 1)), Status: "active",
		PrescriberID: prescriber, Start: kap.Date(planStart.Format("2006-01-02")), End: kap.Date(end.Format("2006-01-02")),
		Preparation: kap.SessionSchedule{Count: 2 + r.IntN(2), IntervalDays: 7},
		Dosing:      kap.SessionSchedule{Count: DosingSessions, IntervalDays: c.interval},
		Integration: kap.SessionSchedule{Count: DosingSessions, IntervalDays: c.interval},
		FollowUp:    kap.SessionSchedule{Count: 2, IntervalDays: 30},
		Goals: []kap.Goal{{ID: "g1", Description: fmt.Sprintf("PHQ-9 total at or below %g (half of the baseline)", goalTarget),
			Instrument: kap.InstrumentPHQ9, Comparator: "<=", Target: goalTarget, Due: kap.Date(end.Format("2006-01-02"))}},
		Order: order})

	phq := phq0
	for k := 0; k < DosingSessions; k++ {
		day := firstDay + k*c.interval
		ds := g.dosing(c, k, day)
		g.add(ds)
		is := g.integration(ds, day+1+r.IntN(2), therapist)
		g.add(is)
		if k == 2 || k == 5 {
			phq = max(0, phq-2-r.IntN(5))
			g.assessment(fmt.Sprintf("as-%s-phq9-%d", g.id, k+1), kap.InstrumentPHQ9, is.End.Add(-5*time.Minute), phq, is.ID)
		}
	}
	return g.recs
}

func (g *gen) medications(pain bool) []kap.CurrentMedication {
	var out []kap.CurrentMedication
	all := []kap.CurrentMedication{
		{Name: "sertraline 100 mg daily", RxNorm: "36437", Class: kap.ClassSSRI, Status: "active"},
		{Name: "escitalopram 10 mg daily", RxNorm: "321988", Class: kap.ClassSSRI, Status: "active"},
		{Name: "venlafaxine ER 150 mg daily", RxNorm: "39786", Class: kap.ClassSNRI, Status: "active"},
		{Name: "bupropion XL 300 mg daily", RxNorm: "42347", Class: kap.ClassOther, Status: "active"},
		{Name: "lorazepam 0.5 mg as needed", RxNorm: "6470", Class: kap.ClassBenzodiazepine, Status: "paused"},
		{Name: "clonazepam 0.5 mg at night", RxNorm: "2598", Class: kap.ClassBenzodiazepine, Status: "paused"},
		{Name: "methylphenidate ER 36 mg", RxNorm: "6901", Class: kap.ClassStimulant, Status: "paused"},
		{Name: "lamotrigine 100 mg", RxNorm: "28439", Class: kap.ClassLamotrigine, Status: "active"},
	}
	for i, n := 0, g.r.IntN(3); i < n; i++ {
		m := all[g.r.IntN(len(all))]
		dup := false
		for _, x := range out {
			dup = dup || x.Name == m.Name
		}
		if !dup {
			out = append(out, m)
		}
	}
	if pain {
		out = append(out, kap.CurrentMedication{Name: "oxycodone 5 mg as needed", RxNorm: "7804", Class: kap.ClassOpioid, Status: "active"})
	}
	return out
}

func (g *gen) plan() course {
	r := g.r
	c := course{weight: round(g.between(50, 120), 1)}
	switch x := r.IntN(20); {
	case x < 8:
		c.route, c.interval = kap.RouteIV, 3+r.IntN(2)
		c.product = g.pick(kap.ProductKetamine10, kap.ProductKetamine50, kap.ProductKetamine100)
		step := 0.05 * float64(r.IntN(3)) // titration every second session
		for k := 0; k < DosingSessions; k++ {
			c.perKg = append(c.perKg, round(0.5+step*float64(k/2), 2))
		}
	case x < 11:
		c.route, c.interval = kap.RouteIM, 7
		c.product = g.pick(kap.ProductKetamine50, kap.ProductKetamine100)
		for k := 0; k < DosingSessions; k++ {
			c.perKg = append(c.perKg, round(0.5+0.1*float64(min(k, 4)), 2))
		}
	case x < 14:
		c.route, c.interval = kap.RouteSL, 7*(1+r.IntN(2))
		c.product = kap.ProductKetamineTroche
		mg := float64(100 + 50*r.IntN(3))
		for k := 0; k < DosingSessions; k++ {
			c.fixedMg = append(c.fixedMg, math.Min(300, mg+50*float64(k/2)))
		}
	case x < 16:
		c.route, c.interval = kap.RoutePO, 7*(1+r.IntN(2))
		c.product = kap.ProductKetamineOral
		for k := 0; k < DosingSessions; k++ {
			c.perKg = append(c.perKg, round(1.0+0.25*float64(k/2), 2))
		}
	default:
		c.route, c.interval = kap.RouteIN, 3+r.IntN(2)
		c.product = kap.ProductEsketamine
		escalate := 1 + r.IntN(DosingSessions) // session from which 84 mg is given
		for k := 0; k < DosingSessions; k++ {
			mg := 56.0
			if k >= escalate {
				mg = 84
			}
			c.fixedMg = append(c.fixedMg, mg)
		}
	}
	for k := range c.perKg {
		c.maxMg = math.Max(c.maxMg, c.perKg[k]*(c.weight+2))
	}
	for _, mg := range c.fixedMg {
		c.maxMg = math.Max(c.maxMg, mg)
	}
	c.maxMg = math.Ceil(c.maxMg/10) * 10
	return c
}

var intentions = []string{
	"Meet what comes up with curiosity",
	"Stay with the breath when it feels unfamiliar",
	"Be kind to the part of me that is afraid",
	"Let go of needing to control the experience",
	"Notice the connection to the people I love",
	"Carry what I learn into daily life",
}

// dosing builds session k (0-based) on the given day.
func (g *gen) dosing(c course, k, day int) *kap.DosingSession {
	r := g.r
	start := g.at(day, 8*60+15*r.IntN(24)) // 08:00 to 13:45
	m := func(min int) time.Time { return start.Add(time.Duration(min) * time.Minute) }
	weight := round(c.weight+g.between(-0.8, 0.8), 1)
	doseAt := m(20)
	length := 180 // minutes
	if c.route == kap.RouteIN {
		length = 150
	}
	dischargeAt := m(length - 5)
	s := &kap.DosingSession{
		ID: fmt.Sprintf("ds-%s-%d", g.id, k+1), ClientID: g.id, PlanID: "plan-" + g.id, SessionNumber: k + 1,
		Start: kap.At(start), End: kap.At(m(length)), FastingHours: float64(3 + r.IntN(4)), WeightKg: weight,
		Intention: intentions[r.IntN(len(intentions))],
		PreChecks: []kap.Check{{Item: "escort-confirmed", Passed: true}, {Item: "consent-reviewed", Passed: true},
			{Item: "blood-pressure-acceptable", Passed: true}, {Item: "no-driving-reminded", Passed: true}},
		Discharge:   kap.Discharge{Time: kap.At(dischargeAt), CriteriaMet: true, EscortPresent: true, ReleasedTo: g.escort},
		MonitoredBy: []string{NurseID},
	}
	a := kap.Administration{Route: c.route, Product: c.product, Start: kap.At(doseAt),
		LotNumber: fmt.Sprintf("L%02d%04d", k+1, r.IntN(10000)), AdministeredBy: NurseID}
	switch c.route {
	case kap.RouteIV:
		a.DoseMgPerKg = c.perKg[k]
		a.DoseMg = round(a.DoseMgPerKg*weight, 1)
		a.Stop = kap.At(m(60))
		a.RateMgPerKgPerHour = round(a.DoseMgPerKg*60/40, 3)
		s.BillingCodes = []string{"96365", "J3490"}
	case kap.RouteIM:
		a.DoseMgPerKg = c.perKg[k]
		a.DoseMg = round(a.DoseMgPerKg*weight, 1)
		a.AdministeredBy = PrescriberID
		s.BillingCodes = []string{"0820T", "J3490"}
	case kap.RoutePO:
		a.DoseMgPerKg = c.perKg[k]
		a.DoseMg = round(a.DoseMgPerKg*weight, 1)
		s.BillingCodes = []string{"0820T"}
	case kap.RouteSL:
		a.DoseMg = c.fixedMg[k]
		a.Stop = kap.At(m(35)) // held 15 minutes, then spat out
		s.BillingCodes = []string{"0820T"}
	case kap.RouteIN:
		a.DoseMg = c.fixedMg[k]
		devices := int(a.DoseMg / 28)
		a.Stop = kap.At(doseAt.Add(time.Duration(5*(devices-1)) * time.Minute)) // one device every 5 minutes
		s.BillingCodes = []string{"G2082"}
		if a.DoseMg > 56 {
			s.BillingCodes = []string{"G2083"}
		}
		s.MonitoredBy = append(s.MonitoredBy, PrescriberID) // REMS: prescriber on site
	}
	if c.route != kap.RouteIN {
		s.Psychotherapy = &kap.Psychotherapy{Minutes: 60 + 15*r.IntN(5), TherapistID: TherapistID}
	}
	if k == 0 {
		s.PreChecks = append(s.PreChecks, kap.Check{Item: "medications-paused", Passed: true})
	}

	// Vitals: two before dosing, then every 15 minutes (±2) until just
	// before discharge.
	sys0, dia0, hr0 := g.between(108, 138), g.between(66, 86), g.between(58, 84)
	rise := g.between(8, 24)
	var times []time.Time
	times = append(times, m(5), m(15))
	for t := 30; t <= length-10; t += 15 {
		times = append(times, m(t+r.IntN(5)-2))
	}
	for i, t := range times {
		after := t.Sub(doseAt).Minutes()
		bump := 0.0
		if after > 0 {
			x := after / 35
			bump = x * math.Exp(1-x) // peaks 35 minutes after dosing
		}
		vs := kap.VitalSigns{Time: kap.At(t),
			Systolic:  math.Round(sys0 + rise*bump + g.between(-3, 3)),
			Diastolic: math.Round(dia0 + 0.55*rise*bump + g.between(-2, 2)),
			HeartRate: math.Round(hr0 + 8*bump + g.between(-3, 3)),
			SpO2:      math.Round(math.Min(100, 98-bump+g.between(-1, 1.4))),
			RespRate:  math.Round(15 - bump + g.between(-2, 2)),
		}
		if i == 0 {
			vs.TempC = round(g.between(36.3, 37.1), 1)
		}
		s.Vitals = append(s.Vitals, vs)
	}

	peak := doseAt.Add(40 * time.Minute)
	cadss := 5 + 35*r.Float64()
	if c.route == kap.RouteIV || c.route == kap.RouteIM {
		cadss += 10
	}
	s.Scores = []kap.SessionScore{
		{Time: kap.At(m(15)), Instrument: kap.ScoreMOAAS, Value: 5},
		{Time: kap.At(peak), Instrument: kap.ScoreMOAAS, Value: float64(3 + r.IntN(3))},
		{Time: kap.At(peak), Instrument: kap.ScoreCADSS, Value: math.Round(cadss)},
		{Time: kap.At(dischargeAt.Add(-20 * time.Minute)), Instrument: kap.ScoreCADSS, Value: float64(r.IntN(5))},
		{Time: kap.At(dischargeAt.Add(-10 * time.Minute)), Instrument: kap.ScoreMOAAS, Value: 5},
	}

	// Occasional adverse events.
	if r.IntN(6) == 0 {
		switch r.IntN(4) {
		case 0: // raised blood pressure at the reading nearest the peak
			j := 2
			for i, vs := range s.Vitals {
				if vs.Time.After(doseAt.Add(25*time.Minute)) && i > 1 {
					j = i
					break
				}
			}
			t := s.Vitals[j].Time.Time
			s.Vitals[j].Systolic = math.Round(g.between(172, 190))
			s.Vitals[j].Diastolic = math.Round(g.between(100, 112))
			ae := kap.AdverseEvent{Time: kap.At(t), Event: "elevated-blood-pressure", Severity: "moderate", Outcome: "resolved"}
			if c.route == kap.RouteIV && t.Before(a.Stop.Time) {
				ae.Interventions = append(ae.Interventions,
					kap.Intervention{Time: kap.At(t.Add(time.Minute)), Description: "infusion paused"},
					kap.Intervention{Time: kap.At(t.Add(3 * time.Minute)), Description: "labetalol 10 mg IV push"},
					kap.Intervention{Time: kap.At(t.Add(12 * time.Minute)), Description: "infusion resumed after blood pressure recheck"})
				a.Stop = kap.At(a.Stop.Add(11 * time.Minute))
			} else {
				ae.Interventions = append(ae.Interventions,
					kap.Intervention{Time: kap.At(t.Add(2 * time.Minute)), Description: "repositioned, dimmed lights, blood pressure rechecked every 5 minutes"},
					kap.Intervention{Time: kap.At(t.Add(6 * time.Minute)), Description: "clonidine 0.1 mg PO"})
			}
			s.AdverseEvents = append(s.AdverseEvents, ae)
		case 1:
			t := doseAt.Add(time.Duration(30+r.IntN(40)) * time.Minute)
			s.AdverseEvents = append(s.AdverseEvents, kap.AdverseEvent{Time: kap.At(t), Event: "nausea", Severity: "mild", Outcome: "resolved",
				Interventions: []kap.Intervention{{Time: kap.At(t.Add(2 * time.Minute)), Description: "ondansetron 4 mg ODT"}}})
		case 2:
			t := doseAt.Add(time.Duration(15+r.IntN(30)) * time.Minute)
			s.AdverseEvents = append(s.AdverseEvents, kap.AdverseEvent{Time: kap.At(t), Event: g.pick("anxiety", "panic"), Severity: "moderate", Outcome: "resolved",
				Interventions: []kap.Intervention{{Time: kap.At(t.Add(time.Minute)), Description: "therapist grounding and reassurance"}}})
		default:
			t := doseAt.Add(time.Duration(60+r.IntN(40)) * time.Minute)
			s.AdverseEvents = append(s.AdverseEvents, kap.AdverseEvent{Time: kap.At(t), Event: "dizziness", Severity: "mild", Outcome: "resolved",
				Interventions: []kap.Intervention{{Time: kap.At(t.Add(time.Minute)), Description: "fall precautions; remained reclined"}}})
		}
	}
	s.Administrations = []kap.Administration{a}
	return s
}

func (g *gen) integration(ds *kap.DosingSession, day int, therapist string) *kap.IntegrationSession {
	r := g.r
	start := g.at(day, 9*60+30*r.IntN(18))
	s := &kap.IntegrationSession{ID: strings.Replace(ds.ID, "ds-", "is-", 1), ClientID: g.id, DosingSessionID: ds.ID,
		Start: kap.At(start), TherapistID: therapist}
	switch x := r.IntN(10); {
	case x < 1:
		s.Format, s.Minutes, s.BillingCodes = "group", 90, []string{"90853"}
	case x < 3:
		s.Format = "telehealth"
	default:
		s.Format = "individual"
	}
	if s.Minutes == 0 {
		s.Minutes = 40 + r.IntN(21)
		s.BillingCodes = []string{kap.PsychotherapyCode(s.Minutes)}
	}
	s.End = kap.At(start.Add(time.Duration(s.Minutes+5) * time.Minute))
	return s
}

// assessment adds an assessment whose items sum to total.
func (g *gen) assessment(id, instrument string, at time.Time, total int, integrationID string) {
	n := kap.ItemCount(instrument)
	_, hi, _ := kap.TotalRange(instrument)
	total = min(max(total, 0), hi)
	per := hi / n
	items := make([]int, n)
	for sum := 0; sum < total; {
		i := g.r.IntN(n)
		if items[i] < per {
			items[i]++
			sum++
		}
	}
	g.add(&kap.Assessment{ID: id, ClientID: g.id, Instrument: instrument, Date: kap.At(at), Items: items, Total: total,
		IntegrationSessionID: integrationID})
}

// WriteDir writes one indented JSON file per record into dir (created if
// needed) and returns the paths. File names start with the record's
// zero-padded position, so sorting them lexically gives the order of recs
// (Generate's order is a valid submission order).
func WriteDir(dir string, recs []kap.Record) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	width := max(4, len(fmt.Sprint(len(recs))))
	paths := make([]string, 0, len(recs))
	for i, rec := range recs {
		if rec == nil {
			return paths, errors.New("synth: nil record")
		}
		b, err := kap.EncodeRecord(rec)
		if err != nil {
			return paths, fmt.Errorf("synth: encode record %d: %w", i, err)
		}
		var buf bytes.Buffer
		if err := json.Indent(&buf, b, "", "  "); err != nil {
			return paths, err
		}
		buf.WriteByte('\n')
		name := fmt.Sprintf("%0*d-%s-%s.json", width, i, strings.ToLower(string(rec.RecordKind())), rec.RecordID())
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			return paths, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}
