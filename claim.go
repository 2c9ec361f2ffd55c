package kap

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Claim is a professional claim for the KAP services of one session: the
// lines (CPT/HCPCS with modifiers and units), the ICD-10-CM diagnoses they
// point to and the coverage billed. BuildClaim derives it from a dosing or
// integration session; Preflight explains why a payer would refuse it.
type Claim struct {
	ID          string           `json:"id"`
	ClientID    string           `json:"clientId"`
	SessionKind Kind             `json:"sessionKind"` // DosingSession or IntegrationSession
	SessionID   string           `json:"sessionId"`
	ServiceDate Date             `json:"serviceDate"`
	ProviderID  string           `json:"providerId"` // the rendering provider
	CoverageID  string           `json:"coverageId,omitempty"`
	PreAuthRef  string           `json:"preAuthRef,omitempty"`
	Diagnoses   []ClaimDiagnosis `json:"diagnoses"`
	Lines       []ClaimLine      `json:"lines"`
	// Notes say how the lines were derived (which drug has no code of its
	// own, which rule gave the units); no PHI.
	Notes []string `json:"notes,omitempty"`
}

// ClaimDiagnosis is one ICD-10-CM code of a claim; lines point to it by
// Sequence (1-based).
type ClaimDiagnosis struct {
	Sequence int    `json:"sequence"`
	ICD10    string `json:"icd10"`
}

// ClaimLine is one billed service.
type ClaimLine struct {
	Sequence  int      `json:"sequence"`
	Code      string   `json:"code"` // a BillingCodes key
	Modifiers []string `json:"modifiers,omitempty"`
	Units     int      `json:"units"`
	// Minutes is the time the units were counted from (0 for untimed
	// codes).
	Minutes int `json:"minutes,omitempty"`
	// DiagnosisPointers are ClaimDiagnosis sequences, most relevant first.
	DiagnosisPointers []int `json:"diagnosisPointers"`
}

// PayerProfile is one payer's rules for KAP claims, as data (one JSON file
// per payer in mapping/payers). A code missing from Covered is refused.
type PayerProfile struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	// Basis says where the rules come from and what is assumed.
	Basis []string `json:"basis"`
	// Covered are the CPT/HCPCS codes the payer pays for.
	Covered []string `json:"covered"`
	// RequiredModifiers lists, per code, modifiers every line of that code
	// must carry (e.g. KX on G2082/G2083 for REMS enrollment).
	RequiredModifiers map[string][]string `json:"requiredModifiers,omitempty"`
	// PriorAuth are the codes that need a prior-authorization reference.
	PriorAuth []string `json:"priorAuth,omitempty"`
	// DrugLines gives, per route (IV, IM, SL, PO, IN), the drug code billed
	// as its own line ("" or absent: the drug is not billed separately).
	DrugLines map[string]string `json:"drugLines,omitempty"`
	// Bundled lists, per code, the codes that may not be billed with it
	// because it already includes them (G2082 includes the esketamine).
	Bundled map[string][]string `json:"bundled,omitempty"`
	// HourUnits is how per-hour codes (0820T–0822T, 96366) count units:
	// "midpoint" (an hour is billed once more than half of it has passed,
	// the CPT time rule) or "whole" (only completed hours).
	HourUnits string `json:"hourUnits"`
	// MaxUnits caps the units of a code on one claim.
	MaxUnits map[string]int `json:"maxUnits,omitempty"`
	// DiagnosisPrefixes lists, per code, the ICD-10-CM prefixes the payer
	// accepts as the first pointed diagnosis of that code (e.g. F32/F33
	// for esketamine).
	DiagnosisPrefixes map[string][]string `json:"diagnosisPrefixes,omitempty"`
	// RequireCoverage refuses a claim without an active coverage.
	RequireCoverage bool `json:"requireCoverage"`
}

// Validate checks a payer profile: every code it names must be a known KAP
// billing code.
func (p *PayerProfile) Validate() error {
	var v validator
	v.id("id", p.ID, true)
	v.required("name", p.Name)
	v.oneOf("hourUnits", p.HourUnits, []string{"midpoint", "whole"}, true)
	code := func(path, c string) {
		if _, ok := BillingCodes[c]; !ok {
			v.add(path, "is not a known KAP billing code")
		}
	}
	for i, c := range p.Covered {
		code(fmt.Sprintf("covered[%d]", i), c)
	}
	for _, c := range sortedKeys(p.RequiredModifiers) {
		code("requiredModifiers."+c, c)
	}
	for i, c := range p.PriorAuth {
		code(fmt.Sprintf("priorAuth[%d]", i), c)
	}
	for _, r := range sortedKeys(p.DrugLines) {
		v.oneOf("drugLines."+r, r, Routes, true)
		if c := p.DrugLines[r]; c != "" {
			code("drugLines."+r, c)
		}
	}
	for _, c := range sortedKeys(p.Bundled) {
		code("bundled."+c, c)
		for i, b := range p.Bundled[c] {
			code(fmt.Sprintf("bundled.%s[%d]", c, i), b)
		}
	}
	for _, c := range sortedKeys(p.MaxUnits) {
		code("maxUnits."+c, c)
	}
	for _, c := range sortedKeys(p.DiagnosisPrefixes) {
		code("diagnosisPrefixes."+c, c)
	}
	return v.err()
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// HourUnits returns the units of a per-hour code for the minutes under a
// rule: "midpoint" counts an hour once more than 30 minutes of it have
// passed (31–90 min = 1, 91–150 = 2, …); "whole" counts completed hours.
func HourUnits(minutes int, rule string) int {
	if minutes <= 0 {
		return 0
	}
	if rule == "whole" {
		return minutes / 60
	}
	if minutes <= 30 {
		return 0
	}
	return (minutes-31)/60 + 1
}

// InfusionUnits returns the units of 96365 and 96366 for an IV infusion
// of the minutes (codes.md §4 notes): 96365 needs more than 15 minutes and
// covers the first hour; 96366 is billed for each additional hour once
// more than 30 minutes of it have passed (91–150 min = 1, 151–210 = 2).
func InfusionUnits(minutes int) (initial, additional int) {
	if minutes <= 15 {
		return 0, 0
	}
	if minutes > 90 {
		additional = (minutes-91)/60 + 1
	}
	return 1, additional
}

// MonitoringMinutes returns the minutes of psychedelic-medication
// monitoring of a dosing session: from the first administration to the
// discharge (0 when either is missing).
func (s *DosingSession) MonitoringMinutes() int {
	first := s.FirstDose()
	if first.IsZero() || s.Discharge.Time.IsZero() || !s.Discharge.Time.After(first) {
		return 0
	}
	return int(s.Discharge.Time.Sub(first) / time.Minute)
}

// InfusionMinutes returns the minutes of IV infusion of a dosing session
// (the sum over IV administrations with start and stop).
func (s *DosingSession) InfusionMinutes() int {
	var d time.Duration
	for _, a := range s.Administrations {
		if a.Route == RouteIV && !a.Stop.IsZero() && a.Stop.After(a.Start.Time) {
			d += a.Stop.Sub(a.Start.Time)
		}
	}
	return int(d / time.Minute)
}

// EsketamineMg returns the intranasal esketamine given in the session.
func (s *DosingSession) EsketamineMg() float64 {
	var mg float64
	for _, a := range s.Administrations {
		if a.Route == RouteIN {
			mg += a.DoseMg
		}
	}
	return mg
}

// ClaimInput is what BuildClaim needs: one session (dosing or
// integration), the diagnoses and the coverage.
type ClaimInput struct {
	ID          string // claim id; default "<session id>"
	Dosing      *DosingSession
	Integration *IntegrationSession
	// Diagnoses are ICD-10-CM codes, primary first. When empty they are
	// taken from Intake's indications.
	Diagnoses []string
	Intake    *Intake
	Coverage  *Coverage // nil: the claim has no coverage (Preflight refuses it)
	// PreAuthRef is the prior-authorization reference, if any; default
	// the coverage's eligibility answer's.
	PreAuthRef string
	// Providers by id (optional): the rendering provider of a dosing
	// session is then its first monitoring prescriber (a physician or
	// other qualified health care professional), not a nurse.
	Providers map[string]*Provider
}

// BuildClaim derives the claim of one session under a payer profile.
//
// The services are the session's billing codes (the clinic's coding
// decision); when a session has none, they are derived from the session:
// intranasal esketamine → G2082 (up to 56 mg) or G2083 (more); an IV
// infusion → 96365 (+96366); other ketamine routes → 0820T; an
// integration session → 90853 for a group, else the psychotherapy code of
// its minutes. Units come from the session's minutes (per-hour codes from
// the monitoring minutes, infusion codes from the infusion minutes), the
// profile's drug line is added for the route when the session does not
// bill it, required modifiers are appended, and every line points to
// every diagnosis (primary first).
func BuildClaim(in ClaimInput, p *PayerProfile) (*Claim, error) {
	if p == nil {
		return nil, Errorf(EINVALID, "a claim needs a payer profile")
	}
	if (in.Dosing == nil) == (in.Integration == nil) {
		return nil, Errorf(EINVALID, "a claim is built from exactly one dosing or integration session")
	}
	var rec Record = in.Dosing
	if in.Integration != nil {
		rec = in.Integration
	}
	if err := rec.Validate(); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	c := &Claim{
		ID:          in.ID,
		ClientID:    rec.RecordClientID(),
		SessionKind: rec.RecordKind(),
		SessionID:   rec.RecordID(),
		ServiceDate: Date(rec.RecordDate().Format("2006-01-02")),
		PreAuthRef:  in.PreAuthRef,
	}
	if c.ID == "" {
		c.ID = rec.RecordID()
	}
	if in.Coverage != nil {
		c.CoverageID = in.Coverage.ID
		if c.PreAuthRef == "" && in.Coverage.Eligibility != nil {
			c.PreAuthRef = in.Coverage.Eligibility.PreAuthRef
		}
	}
	dx := in.Diagnoses
	if len(dx) == 0 && in.Intake != nil {
		for _, ind := range in.Intake.Indications {
			dx = append(dx, ind.ICD10)
		}
	}
	seen := map[string]bool{}
	for _, d := range dx {
		if d == "" || seen[d] {
			continue
		}
		seen[d] = true
		c.Diagnoses = append(c.Diagnoses, ClaimDiagnosis{Sequence: len(c.Diagnoses) + 1, ICD10: d})
	}
	var codes []string
	route := ""
	if s := in.Dosing; s != nil {
		c.ProviderID = dosingProvider(s, in.Providers)
		codes = append(codes, s.BillingCodes...)
		if len(s.Administrations) > 0 {
			route = s.Administrations[0].Route
		}
		if len(codes) == 0 {
			codes = suggestDosingCodes(s)
		}
	} else {
		s := in.Integration
		c.ProviderID = s.TherapistID
		codes = append(codes, s.BillingCodes...)
		if len(codes) == 0 {
			if s.Format == "group" {
				codes = []string{"90853"}
			} else if pc := PsychotherapyCode(s.Minutes); pc != "" {
				codes = []string{pc}
			}
		}
	}
	if dl := p.DrugLines[route]; dl != "" && !contains(codes, dl) && in.Dosing != nil {
		codes = append(codes, dl)
		c.Notes = append(c.Notes, fmt.Sprintf("%s added: the %s payer bills the %s drug as its own line", dl, p.ID, route))
	}
	if contains(codes, "J3490") {
		c.Notes = append(c.Notes, "J3490 (unclassified drugs): ketamine has no dedicated J-code (codes.md §4); payers ask for the drug name, NDC and dose with it")
	}
	for _, code := range codes {
		l := ClaimLine{Sequence: len(c.Lines) + 1, Code: code, Units: 1}
		if in.Dosing != nil {
			l.Units, l.Minutes = dosingUnits(in.Dosing, code, p.HourUnits)
		} else if isPsychotherapyTimed(code) {
			l.Minutes = in.Integration.Minutes
		}
		l.Modifiers = append(l.Modifiers, p.RequiredModifiers[code]...)
		for _, d := range c.Diagnoses {
			l.DiagnosisPointers = append(l.DiagnosisPointers, d.Sequence)
		}
		c.Lines = append(c.Lines, l)
	}
	return c, nil
}

// dosingProvider is the rendering provider of a dosing session: the first
// monitoring prescriber when the providers are known, else the first
// monitoring provider, else the first administering one.
func dosingProvider(s *DosingSession, providers map[string]*Provider) string {
	for _, id := range s.MonitoredBy {
		if p := providers[id]; p != nil && contains(p.Roles, RolePrescriber) {
			return id
		}
	}
	if len(s.MonitoredBy) > 0 {
		return s.MonitoredBy[0]
	}
	if len(s.Administrations) > 0 {
		return s.Administrations[0].AdministeredBy
	}
	return ""
}

func suggestDosingCodes(s *DosingSession) []string {
	if mg := s.EsketamineMg(); mg > 0 {
		if mg <= 56 {
			return []string{"G2082"}
		}
		return []string{"G2083"}
	}
	var codes []string
	if ini, add := InfusionUnits(s.InfusionMinutes()); ini > 0 {
		codes = append(codes, "96365")
		if add > 0 {
			codes = append(codes, "96366")
		}
	} else {
		codes = append(codes, "0820T")
	}
	return codes
}

func isPsychotherapyTimed(code string) bool {
	return code == "90832" || code == "90834" || code == "90837"
}

// dosingUnits returns the units and the minutes they were counted from of
// a code billed for a dosing session.
func dosingUnits(s *DosingSession, code, rule string) (units, minutes int) {
	switch code {
	case "0820T", "0821T", "0822T":
		m := s.MonitoringMinutes()
		return HourUnits(m, rule), m
	case "96365":
		m := s.InfusionMinutes()
		ini, _ := InfusionUnits(m)
		return ini, m
	case "96366":
		m := s.InfusionMinutes()
		_, add := InfusionUnits(m)
		return add, m
	case "90832", "90834", "90837":
		if s.Psychotherapy != nil {
			return 1, s.Psychotherapy.Minutes
		}
	}
	return 1, 0
}

// Preflight reasons: the Rule of a PreflightIssue.
const (
	RuleMissingCoverage    = "missing-coverage"
	RuleMissingDiagnosis   = "missing-diagnosis"
	RuleUnitsMismatch      = "units-mismatch"
	RuleAddOnWithoutPrim   = "add-on-without-primary"
	RuleNotCovered         = "not-covered"
	RuleModifierRequired   = "modifier-required"
	RulePriorAuthRequired  = "prior-auth-required"
	RuleBundled            = "bundled"
	RuleDiagnosisNotAccept = "diagnosis-not-accepted"
	RuleUnknownCode        = "unknown-code"
	RuleMaxUnits           = "max-units"
)

// PreflightIssue explains one reason a payer would refuse a claim. Message
// names codes and numbers only, never PHI.
type PreflightIssue struct {
	Rule    string `json:"rule"`
	Path    string `json:"path"` // JSON path in the Claim, e.g. "lines[1].units"
	Message string `json:"message"`
}

// PreflightInput is the context a claim is checked against.
type PreflightInput struct {
	Claim    *Claim
	Profile  *PayerProfile
	Coverage *Coverage // nil: no coverage on file
	// The session the claim bills, to check units against its minutes
	// (optional: without it, units are not checked).
	Dosing      *DosingSession
	Integration *IntegrationSession
}

// Preflight checks a claim against the payer profile and the session and
// returns every reason it would be refused (nil: none found).
func Preflight(in PreflightInput) []PreflightIssue {
	c, p := in.Claim, in.Profile
	var out []PreflightIssue
	add := func(rule, path, format string, args ...any) {
		out = append(out, PreflightIssue{Rule: rule, Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if c == nil {
		add(RuleUnknownCode, "", "there is no claim to check")
		return out
	}
	if p == nil {
		p = &PayerProfile{ID: "(none)"} // covers nothing: every line is refused as not covered
	}
	// Coverage.
	switch cov := in.Coverage; {
	case cov == nil || c.CoverageID == "":
		if p.RequireCoverage || cov == nil {
			add(RuleMissingCoverage, "coverageId", "the claim has no coverage: record the client's insurance (a Coverage) before billing")
		}
	case cov.ID != c.CoverageID:
		add(RuleMissingCoverage, "coverageId", "the claim names coverage %s but the coverage on file is %s", c.CoverageID, cov.ID)
	case !cov.ActiveOn(c.ServiceDate):
		add(RuleMissingCoverage, "coverageId", "coverage %s is not in force on the service date (period %s to %s)", cov.ID, cov.Start, orOpen(cov.End))
	default:
		if inForce, ok := cov.InForce(); ok && !inForce {
			add(RuleMissingCoverage, "coverageId", "the payer's last eligibility answer says coverage %s is not in force", cov.ID)
		}
	}
	// Diagnoses.
	dxBySeq := map[int]string{}
	if len(c.Diagnoses) == 0 {
		add(RuleMissingDiagnosis, "diagnoses", "the claim has no diagnosis: add the ICD-10-CM code(s) of the condition treated (treatment-resistant depression is coded F32.x/F33.x)")
	}
	for i, d := range c.Diagnoses {
		if !icd10Pattern.MatchString(d.ICD10) {
			add(RuleMissingDiagnosis, fmt.Sprintf("diagnoses[%d].icd10", i), "must be an ICD-10-CM code such as F33.2")
		}
		dxBySeq[d.Sequence] = d.ICD10
	}
	codes := map[string]bool{}
	for _, l := range c.Lines {
		codes[l.Code] = true
	}
	if len(c.Lines) == 0 {
		add(RuleUnknownCode, "lines", "the claim has no service lines")
	}
	for i, l := range c.Lines {
		path := fmt.Sprintf("lines[%d]", i)
		bc, known := BillingCodes[l.Code]
		if !known {
			add(RuleUnknownCode, path+".code", "%q is not a KAP billing code", l.Code)
			continue
		}
		if !contains(p.Covered, l.Code) {
			add(RuleNotCovered, path+".code", "%s is not covered by the %s payer profile", l.Code, p.ID)
		}
		if len(l.DiagnosisPointers) == 0 {
			add(RuleMissingDiagnosis, path+".diagnosisPointers", "line %d (%s) points to no diagnosis", l.Sequence, l.Code)
		}
		for j, ptr := range l.DiagnosisPointers {
			if _, ok := dxBySeq[ptr]; !ok {
				add(RuleMissingDiagnosis, fmt.Sprintf("%s.diagnosisPointers[%d]", path, j), "line %d (%s) points to diagnosis %d, which the claim does not have", l.Sequence, l.Code, ptr)
			}
		}
		if pre := p.DiagnosisPrefixes[l.Code]; len(pre) > 0 && len(l.DiagnosisPointers) > 0 {
			if dx, ok := dxBySeq[l.DiagnosisPointers[0]]; ok && !hasPrefix(dx, pre) {
				add(RuleDiagnosisNotAccept, path+".diagnosisPointers[0]", "the %s payer accepts %s only with a primary diagnosis %s (the line's first diagnosis is %s)", p.ID, l.Code, strings.Join(pre, "/"), dx)
			}
		}
		if len(bc.AddOnTo) > 0 {
			ok := false
			for _, prim := range bc.AddOnTo {
				ok = ok || codes[prim]
			}
			if !ok {
				add(RuleAddOnWithoutPrim, path+".code", "%s is an add-on code and needs its primary code (%s) on the same claim", l.Code, strings.Join(bc.AddOnTo, " or "))
			}
		}
		for _, m := range p.RequiredModifiers[l.Code] {
			if !contains(l.Modifiers, m) {
				add(RuleModifierRequired, path+".modifiers", "the %s payer requires modifier %s on %s", p.ID, m, l.Code)
			}
		}
		if contains(p.PriorAuth, l.Code) && c.PreAuthRef == "" {
			add(RulePriorAuthRequired, "preAuthRef", "the %s payer requires prior authorization for %s: add the authorization reference", p.ID, l.Code)
		}
		for _, b := range p.Bundled[l.Code] {
			if codes[b] {
				add(RuleBundled, path+".code", "%s includes %s: do not bill %s on the same claim", l.Code, b, b)
			}
		}
		if max, ok := p.MaxUnits[l.Code]; ok && l.Units > max {
			add(RuleMaxUnits, path+".units", "the %s payer pays at most %d unit(s) of %s (claim: %d)", p.ID, max, l.Code, l.Units)
		}
		if l.Units < 1 {
			add(RuleUnitsMismatch, path+".units", "%s has %d units; a billed line needs at least 1 (the session's minutes do not reach a billable unit)", l.Code, l.Units)
		}
		checkUnits(in, p, l, path, add)
	}
	return out
}

// checkUnits compares a line's units with the session's minutes.
func checkUnits(in PreflightInput, p *PayerProfile, l ClaimLine, path string, add func(rule, path, format string, args ...any)) {
	if s := in.Dosing; s != nil {
		switch l.Code {
		case "0820T", "0821T", "0822T", "96365", "96366":
			want, m := dosingUnits(s, l.Code, p.HourUnits)
			if want != l.Units {
				what := "monitoring"
				if l.Code == "96365" || l.Code == "96366" {
					what = "infusion"
				}
				add(RuleUnitsMismatch, path+".units", "%s has %d unit(s) but the session's %d %s minutes give %d", l.Code, l.Units, m, what, want)
			}
		case "G2082", "G2083":
			mg := s.EsketamineMg()
			if want := map[bool]string{true: "G2082", false: "G2083"}[mg <= 56]; mg == 0 || want != l.Code {
				add(RuleUnitsMismatch, path+".code", "%s does not match the session's %g mg of esketamine (G2082: up to 56 mg, G2083: more)", l.Code, mg)
			}
			if l.Units != 1 {
				add(RuleUnitsMismatch, path+".units", "%s is billed once per session (claim: %d units)", l.Code, l.Units)
			}
		case "90832", "90834", "90837":
			if s.Psychotherapy == nil {
				add(RuleUnitsMismatch, path+".code", "%s bills psychotherapy but the session records none", l.Code)
			} else if want := PsychotherapyCode(s.Psychotherapy.Minutes); want != l.Code {
				add(RuleUnitsMismatch, path+".code", "%s does not match the session's %d psychotherapy minutes (%s)", l.Code, s.Psychotherapy.Minutes, orNone(want))
			}
		}
	}
	if s := in.Integration; s != nil && isPsychotherapyTimed(l.Code) {
		if want := PsychotherapyCode(s.Minutes); want != l.Code {
			add(RuleUnitsMismatch, path+".code", "%s does not match the session's %d psychotherapy minutes (%s)", l.Code, s.Minutes, orNone(want))
		}
		if l.Units != 1 {
			add(RuleUnitsMismatch, path+".units", "%s is billed once per session (claim: %d units)", l.Code, l.Units)
		}
	}
}

func orNone(code string) string {
	if code == "" {
		return "fewer than 16 minutes: not billable as psychotherapy"
	}
	return "that is " + code
}

func orOpen(d Date) string {
	if d == "" {
		return "open"
	}
	return string(d)
}

func hasPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
