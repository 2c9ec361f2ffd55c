package conformance

// Inbound FHIR validation: the gateway's codec (JSON precheck, google/fhir
// validating unmarshal, case check) plus the FHIR R4 invariants and Bundle
// rules that matter for data we receive. See docs/conformance-corpora.md for
// the list of rules and the corpora they are measured against.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// Validator validates inbound FHIR R4 JSON. It is safe for concurrent use.
type Validator struct {
	codec *fhir.Codec
	rules []inRule
}

// inRule is one rule over one resource of the document (the root, a Bundle
// entry's resource, or a contained resource). It reports issues through
// the inCtx.
type inRule struct {
	id    string // the FHIR invariant id or a short name
	check func(c *inCtx, r inRes)
}

// inRes is one resource in the document with its FHIRPath-ish path.
type inRes struct {
	path      string
	obj       map[string]any
	typ       string
	contained bool // a contained resource
}

type inCtx struct {
	issues []kap.Issue
}

func (c *inCtx) errf(path, id, format string, a ...any) {
	c.issues = append(c.issues, kap.Issue{Path: path, Reason: id + ": " + fmt.Sprintf(format, a...)})
}

func (c *inCtx) warnf(path, id, format string, a ...any) {
	c.issues = append(c.issues, kap.Issue{Path: path, Reason: id + ": " + fmt.Sprintf(format, a...), Severity: "warning"})
}

// NewValidator builds a Validator over the codec.
func NewValidator(codec *fhir.Codec) *Validator {
	return &Validator{codec: codec, rules: []inRule{
		{"id", ruleID},
		{"ele-1/ext-1", ruleExtensions},
		{"txt-1", ruleNarrative},
		{"security", ruleStringHTML},
		{"per-1", rulePeriods},
		{"dom-2..5", ruleContained},
		{"obs-6/obs-7", ruleObservation},
		{"vs-profile", ruleVitalProfiles},
		{"ucum", ruleVitalUnits},
		{"con-3/4/5", ruleCondition},
		{"ait-1/2", ruleAllergy},
		{"bdl", ruleBundle},
		{"pat-1", rulePatient},
		{"obs-3", ruleReferenceRange},
		{"cpl-3", ruleCarePlan},
		{"qty-3", ruleQuantityCode},
		{"ppc-1", ruleConsent},
		{"ext-def", ruleKnownExtensions},
	}}
}

// Validate parses and validates FHIR JSON: the codec's checks first, then
// the rules. It returns the parsed resource (nil when the JSON could not be
// parsed) and an *kap.Error (EINVALID) listing every issue, or nil.
// Warnings alone do not make the document invalid; they are in the error
// only when there are errors as well (see ValidateWithWarnings).
func (v *Validator) Validate(data []byte) (*bcrpb.ContainedResource, error) {
	cr, _, err := v.ValidateWithWarnings(data)
	return cr, err
}

// ValidateWithWarnings is Validate that also returns the warnings (of the
// codec and of the rules) when the document is valid.
func (v *Validator) ValidateWithWarnings(data []byte) (*bcrpb.ContainedResource, []kap.Issue, error) {
	cr, err := v.codec.Unmarshal(data)
	if cr == nil {
		return nil, nil, err
	}
	var issues []kap.Issue
	if err != nil {
		issues = append(issues, kap.ErrorIssues(err)...)
	}
	rest, _ := v.Check(data)
	seen := map[string]bool{}
	for _, is := range issues {
		if is.Severity == "" || is.Severity == "error" {
			seen[is.Path] = true
		}
	}
	for _, is := range rest {
		if !seen[is.Path] { // the codec already reported a problem there
			issues = append(issues, is)
		}
	}
	var warnings []kap.Issue
	for _, is := range issues {
		if is.Severity == "" || is.Severity == "error" {
			return cr, nil, &kap.Error{Code: kap.EINVALID, Message: "invalid FHIR resource", Issues: issues}
		}
		warnings = append(warnings, is)
	}
	return cr, warnings, nil
}

// Warnings runs the rules and returns only their warnings.
func (v *Validator) Warnings(data []byte) []kap.Issue {
	issues, _ := v.Check(data)
	var out []kap.Issue
	for _, is := range issues {
		if is.Severity == "warning" {
			out = append(out, is)
		}
	}
	return out
}

// Check runs only the extra rules over well-formed JSON (no codec checks).
func (v *Validator) Check(data []byte) ([]kap.Issue, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var root map[string]any
	if err := dec.Decode(&root); err != nil {
		return nil, err
	}
	rt, _ := root["resourceType"].(string)
	c := &inCtx{}
	var visit func(r inRes)
	visit = func(r inRes) {
		for _, rule := range v.rules {
			rule.check(c, r)
		}
		for i, x := range inArr(r.obj["contained"]) {
			if m, ok := x.(map[string]any); ok {
				t, _ := m["resourceType"].(string)
				visit(inRes{path: fmt.Sprintf("%s.contained[%d]", r.path, i), obj: m, typ: t, contained: true})
			}
		}
		if r.typ == "Bundle" {
			for i, e := range inArr(r.obj["entry"]) {
				em, _ := e.(map[string]any)
				if m, ok := em["resource"].(map[string]any); ok {
					t, _ := m["resourceType"].(string)
					visit(inRes{path: fmt.Sprintf("%s.entry[%d].resource", r.path, i), obj: m, typ: t})
				}
			}
		}
	}
	visit(inRes{path: rt, obj: root, typ: rt})
	return c.issues, nil
}

// --- JSON helpers ---

func inArr(v any) []any {
	a, _ := v.([]any)
	return a
}

func inObj(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func inStr(v any) string {
	s, _ := v.(string)
	return s
}

// inHasValue reports whether the object has a value[x] (a key starting
// with prefix followed by an upper-case letter).
func inValueKey(m map[string]any, prefix string) string {
	for k := range m {
		if len(k) > len(prefix) && strings.HasPrefix(k, prefix) && k[len(prefix)] >= 'A' && k[len(prefix)] <= 'Z' {
			return k
		}
	}
	return ""
}

// inCodings returns system|code of each coding of a CodeableConcept.
func inCodings(cc any) []string {
	var out []string
	for _, c := range inArr(inObj(cc)["coding"]) {
		m := inObj(c)
		out = append(out, inStr(m["system"])+"|"+inStr(m["code"]))
	}
	return out
}

func inHasCode(cc any, system, code string) bool {
	for _, s := range inCodings(cc) {
		if s == system+"|"+code {
			return true
		}
	}
	return false
}

// inWalk calls fn for every object in the tree below v (not descending into
// contained resources or Bundle entry resources: those are visited as
// resources of their own).
func inWalk(path string, v any, fn func(path, key string, m map[string]any)) {
	inWalkKey(path, "", v, fn)
}

func inWalkKey(path, key string, v any, fn func(path, key string, m map[string]any)) {
	switch t := v.(type) {
	case map[string]any:
		fn(path, key, t)
		for k, x := range t {
			if k == "contained" || (k == "resource" && key == "entry") {
				continue
			}
			inWalkKey(path+"."+k, k, x, fn)
		}
	case []any:
		for i, x := range t {
			inWalkKey(fmt.Sprintf("%s[%d]", path, i), key, x, fn)
		}
	}
}

// inWalkStrings calls fn for every string value below v, with its key.
func inWalkStrings(path, key string, v any, fn func(path, key, s string)) {
	switch t := v.(type) {
	case string:
		fn(path, key, t)
	case map[string]any:
		for k, x := range t {
			if k == "contained" || (k == "resource" && key == "entry") {
				continue
			}
			inWalkStrings(path+"."+k, k, x, fn)
		}
	case []any:
		for i, x := range t {
			inWalkStrings(fmt.Sprintf("%s[%d]", path, i), key, x, fn)
		}
	}
}

// --- rules ---

var inIDRe = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

// ruleID: a resource id is 1-64 of [A-Za-z0-9-.] (FHIR id datatype).
func ruleID(c *inCtx, r inRes) {
	if v, ok := r.obj["id"]; ok {
		s, isStr := v.(string)
		if !isStr || !inIDRe.MatchString(s) {
			c.errf(r.path+".id", "id", "a resource id is 1 to 64 characters of A-Z, a-z, 0-9, '-' and '.'")
		}
	}
}

// ruleExtensions: ext-1 (an extension has a value or nested extensions,
// not both) and ele-1 (an extension has a value or children); the url is
// required (google/fhir checks it too).
func ruleExtensions(c *inCtx, r inRes) {
	inWalk(r.path, r.obj, func(path, key string, m map[string]any) {
		if key != "extension" && key != "modifierExtension" {
			return
		}
		vk := inValueKey(m, "value")
		_, nested := m["extension"]
		switch {
		case vk != "" && nested:
			c.errf(path, "ext-1", "an extension must have either extensions or value[x], not both")
		case vk == "" && !nested:
			c.errf(path, "ele-1", "an extension must have a value[x] or nested extensions")
		}
	})
}

var (
	inBadTagRe  = regexp.MustCompile(`(?i)<\s*/?\s*(script|iframe|object|embed|applet|form|input|button|frame|frameset|link|meta|style|base|svg|math)\b`)
	inEventRe   = regexp.MustCompile(`(?i)<[^>]*\s(on[a-z]+)\s*=`)
	inJSHrefRe  = regexp.MustCompile(`(?i)(href|src)\s*=\s*["']?\s*javascript:`)
	inAnyTagRe  = regexp.MustCompile(`<\s*/?\s*(script|iframe|object|embed|img|a|style|svg|link|meta|form|input|div|span|p|b|i)\b[^<>]*>`)
	inEventAttr = regexp.MustCompile(`(?i)\son[a-z]+\s*=`)
)

// ruleNarrative: txt-1 / txt-2 — the narrative div holds only the basic
// HTML formatting elements: no scripts, forms, frames, objects, event
// handler attributes or javascript: links.
func ruleNarrative(c *inCtx, r inRes) {
	inWalk(r.path, r.obj, func(path, key string, m map[string]any) {
		div, ok := m["div"].(string)
		if !ok || (key != "text" && key != "") {
			return
		}
		p := path + ".div"
		if inBadTagRe.MatchString(div) {
			c.errf(p, "txt-1", "the narrative contains an element that is not basic HTML formatting (script, form, frame, object, style, ...)")
		}
		if inEventRe.MatchString(div) || inJSHrefRe.MatchString(div) {
			c.errf(p, "txt-1", "the narrative contains an event handler attribute or a javascript: link")
		}
	})
}

// ruleStringHTML: plain string values must not carry embedded active HTML
// (script, iframe, event handlers) — what the HL7 validator's security
// check refuses. The narrative div and attachment data are exempt.
func ruleStringHTML(c *inCtx, r inRes) {
	inWalkStrings(r.path, "", r.obj, func(path, key, s string) {
		if key == "div" || key == "data" || !strings.Contains(s, "<") {
			return
		}
		if inBadTagRe.MatchString(s) || (inAnyTagRe.MatchString(s) && inEventAttr.MatchString(s)) {
			c.errf(path, "security", "the string contains embedded active HTML (script, frame, object or an event handler), which is not allowed")
		}
	})
}

// rulePeriods: per-1 — a Period's start is not after its end (compared at
// the precision both values have).
func rulePeriods(c *inCtx, r inRes) {
	inWalk(r.path, r.obj, func(path, key string, m map[string]any) {
		if !strings.HasSuffix(strings.ToLower(key), "period") {
			return
		}
		s, e := inStr(m["start"]), inStr(m["end"])
		if s == "" || e == "" {
			return
		}
		if inDateAfter(s, e) {
			c.errf(path, "per-1", "the period's start is after its end")
		}
	})
}

// inDateAfter reports whether start a is not before-or-equal end b, as
// FHIRPath compares them: as instants when both carry a time; otherwise at
// the precision both have, where equal common parts with different
// precisions (2023-06-21 vs 2023-06-21T06:20:00Z) are indeterminate, and
// the HL7 validator fails per-1 on an indeterminate comparison.
func inDateAfter(a, b string) bool {
	if len(a) > 10 && len(b) > 10 {
		ta, ea := time.Parse(time.RFC3339Nano, a)
		tb, eb := time.Parse(time.RFC3339Nano, b)
		if ea == nil && eb == nil {
			return ta.After(tb)
		}
		return false
	}
	n := min(len(a), len(b), 10)
	if a[:n] != b[:n] {
		return a[:n] > b[:n]
	}
	return len(a) != len(b)
}

// --- Observation ---

func ruleObservation(c *inCtx, r inRes) {
	if r.typ != "Observation" {
		return
	}
	vk := inValueKey(r.obj, "value")
	if vk != "" && r.obj["dataAbsentReason"] != nil {
		c.errf(r.path+".dataAbsentReason", "obs-6", "dataAbsentReason SHALL only be present if Observation.value[x] is not present")
	}
	codes := map[string]bool{}
	for _, s := range inCodings(r.obj["code"]) {
		codes[s] = true
	}
	for i, comp := range inArr(r.obj["component"]) {
		cm := inObj(comp)
		p := fmt.Sprintf("%s.component[%d]", r.path, i)
		cvk := inValueKey(cm, "value")
		if cvk != "" && cm["dataAbsentReason"] != nil {
			c.errf(p+".dataAbsentReason", "obs-6", "a component's dataAbsentReason SHALL only be present if its value[x] is not present")
		}
		if vk != "" {
			for _, s := range inCodings(cm["code"]) {
				if codes[s] {
					c.errf(p+".code", "obs-7", "when Observation.value[x] is present, no component may have the same code as the Observation")
					break
				}
			}
		}
	}
}

// inVitalProfiles maps the FHIR R4 vital-signs profiles to the LOINC code
// their Observation.code must carry.
var inVitalProfiles = map[string]string{
	"http://hl7.org/fhir/StructureDefinition/vitalspanel": "85353-1",
	"http://hl7.org/fhir/StructureDefinition/resprate":    "9279-1",
	"http://hl7.org/fhir/StructureDefinition/heartrate":   "8867-4",
	"http://hl7.org/fhir/StructureDefinition/oxygensat":   "2708-6",
	"http://hl7.org/fhir/StructureDefinition/bodytemp":    "8310-5",
	"http://hl7.org/fhir/StructureDefinition/bodyheight":  "8302-2",
	"http://hl7.org/fhir/StructureDefinition/headcircum":  "9843-4",
	"http://hl7.org/fhir/StructureDefinition/bodyweight":  "29463-7",
	"http://hl7.org/fhir/StructureDefinition/bmi":         "39156-5",
	"http://hl7.org/fhir/StructureDefinition/bp":          "85354-9",
}

// inVitalTriggers maps codes that make an Observation a vital sign in the
// sense of the R4 vital signs profiles (observation-vitalsigns.html: SNOMED
// CT equivalents of the vital signs, and the non-invasive systolic BP code)
// to the LOINC "magic" code the profile then requires.
var inVitalTriggers = map[string]string{
	"http://snomed.info/sct|276885007": "8310-5",  // core body temperature
	"http://snomed.info/sct|50373000":  "8302-2",  // body height
	"http://snomed.info/sct|27113001":  "29463-7", // body weight
	"http://snomed.info/sct|363811000": "9843-4",  // head circumference
	"http://snomed.info/sct|86290005":  "9279-1",  // respiratory rate
	"http://snomed.info/sct|364075005": "8867-4",  // heart rate
	"http://snomed.info/sct|60621009":  "39156-5", // body mass index
	"http://snomed.info/sct|75367002":  "85354-9", // blood pressure
	"http://loinc.org|76534-7":         "85354-9", // systolic BP by non-invasive
}

// ruleVitalProfiles: an Observation that declares an R4 vital-signs
// profile carries the profile's LOINC code and the vital-signs category
// (vs-2 style "magic code" rule of the R4 vital signs profiles).
func ruleVitalProfiles(c *inCtx, r inRes) {
	if r.typ != "Observation" {
		return
	}
	for _, p := range inArr(inObj(r.obj["meta"])["profile"]) {
		ps := strings.SplitN(inStr(p), "|", 2)[0]
		code, ok := inVitalProfiles[ps]
		if !ok {
			continue
		}
		if !inHasCode(r.obj["code"], "http://loinc.org", code) {
			c.errf(r.path+".code", "vs-profile", "the profile %s requires the LOINC code %s in Observation.code", ps, code)
		}
	}
	for _, s := range inCodings(r.obj["code"]) {
		if code, ok := inVitalTriggers[s]; ok && !inHasCode(r.obj["code"], "http://loinc.org", code) {
			c.errf(r.path+".code", "vs-2", "a vital sign coded %s must also carry the LOINC code %s the R4 vital signs profile requires", s, code)
			return
		}
	}
}

// inVitalUnits: LOINC vital sign → allowed UCUM codes (shared/domain/codes.md §1b).
var inVitalUnits = map[string][]string{
	"8867-4":  {"/min"},
	"9279-1":  {"/min"},
	"59408-5": {"%"},
	"2708-6":  {"%"},
	"8310-5":  {"Cel", "[degF]"},
	"29463-7": {"kg", "g", "[lb_av]"},
	"8302-2":  {"cm", "[in_i]"},
	"39156-5": {"kg/m2"},
	"8480-6":  {"mm[Hg]"},
	"8462-4":  {"mm[Hg]"},
	"3151-8":  {"L/min"},
	"3150-0":  {"%"},
}

// ruleVitalUnits: a vital-sign quantity we store (heart rate, respiratory
// rate, SpO2, temperature, weight, height, BMI, BP components) is coded in
// UCUM with the unit code the vital-signs profiles fix or bind.
func ruleVitalUnits(c *inCtx, r inRes) {
	if r.typ != "Observation" {
		return
	}
	check := func(path string, code any, q map[string]any) {
		if q == nil {
			return
		}
		for _, s := range inCodings(code) {
			sys, cd, _ := strings.Cut(s, "|")
			units, ok := inVitalUnits[cd]
			if sys != "http://loinc.org" || !ok {
				continue
			}
			if inStr(q["system"]) != "http://unitsofmeasure.org" {
				c.errf(path+".system", "ucum", "a vital-sign quantity (LOINC %s) must be coded in UCUM (system http://unitsofmeasure.org)", cd)
				return
			}
			u := inStr(q["code"])
			for _, a := range units {
				if u == a {
					return
				}
			}
			c.errf(path+".code", "ucum", "the UCUM unit of LOINC %s must be one of %s", cd, strings.Join(units, ", "))
			return
		}
	}
	check(r.path+".valueQuantity", r.obj["code"], inObj(r.obj["valueQuantity"]))
	for i, comp := range inArr(r.obj["component"]) {
		cm := inObj(comp)
		check(fmt.Sprintf("%s.component[%d].valueQuantity", r.path, i), cm["code"], inObj(cm["valueQuantity"]))
	}
}

// --- Condition, AllergyIntolerance ---

const (
	inCondClinical = "http://terminology.hl7.org/CodeSystem/condition-clinical"
	inCondVerif    = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
	inAICClinical  = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
	inAIVerif      = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
)

func ruleCondition(c *inCtx, r inRes) {
	if r.typ != "Condition" {
		return
	}
	eie := inHasCode(r.obj["verificationStatus"], inCondVerif, "entered-in-error")
	_, hasClin := r.obj["clinicalStatus"]
	if eie && hasClin {
		c.errf(r.path+".clinicalStatus", "con-5", "clinicalStatus SHALL NOT be present if verificationStatus is entered-in-error")
	}
	if !eie && !hasClin {
		for _, cat := range inArr(r.obj["category"]) {
			if inHasCode(cat, "http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item") {
				c.warnf(r.path, "con-3", "clinicalStatus SHALL be present for a problem-list-item unless verificationStatus is entered-in-error")
				break
			}
		}
	}
	if inValueKey(r.obj, "abatement") != "" {
		ok := false
		for _, st := range []string{"inactive", "resolved", "remission"} {
			ok = ok || inHasCode(r.obj["clinicalStatus"], inCondClinical, st)
		}
		if !ok {
			c.errf(r.path+".clinicalStatus", "con-4", "an abated Condition's clinicalStatus must be inactive, resolved or remission")
		}
	}
}

func ruleAllergy(c *inCtx, r inRes) {
	if r.typ != "AllergyIntolerance" {
		return
	}
	eie := inHasCode(r.obj["verificationStatus"], inAIVerif, "entered-in-error")
	_, hasClin := r.obj["clinicalStatus"]
	if eie && hasClin {
		c.errf(r.path+".clinicalStatus", "ait-2", "clinicalStatus SHALL NOT be present if verificationStatus is entered-in-error")
	}
	if !eie && !hasClin {
		c.errf(r.path, "ait-1", "clinicalStatus SHALL be present if verificationStatus is not entered-in-error")
	}
}

// --- contained resources (dom-2..dom-5) ---

func ruleContained(c *inCtx, r inRes) {
	if !r.contained {
		cont := inArr(r.obj["contained"])
		if len(cont) == 0 {
			return
		}
		// dom-3: every contained resource is referenced from the rest of
		// the resource (or from another contained one), or references the
		// container ("#").
		refs := map[string]bool{}
		var collect func(v any, inContained bool)
		collect = func(v any, inContained bool) {
			switch t := v.(type) {
			case map[string]any:
				for k, x := range t {
					if s, ok := x.(string); ok && (k == "reference" || strings.HasPrefix(s, "#")) {
						refs[s] = true
					}
					if k == "div" {
						if s, ok := x.(string); ok {
							for _, m := range inHrefRe.FindAllStringSubmatch(s, -1) {
								refs[m[1]] = true
							}
						}
					}
					collect(x, inContained)
				}
			case []any:
				for _, x := range t {
					collect(x, inContained)
				}
			}
		}
		collect(r.obj, false)
		for i, x := range cont {
			m := inObj(x)
			id := inStr(m["id"])
			if id == "" {
				continue
			}
			if !refs["#"+id] && !inRefersTo(m, "#") {
				c.errf(fmt.Sprintf("%s.contained[%d]", r.path, i), "dom-3", "the contained resource is not referenced from elsewhere in the containing resource, nor does it reference the container")
			}
		}
		return
	}
	if _, ok := r.obj["contained"]; ok {
		c.errf(r.path+".contained", "dom-2", "a contained resource SHALL NOT contain further contained resources")
	}
	meta := inObj(r.obj["meta"])
	if meta["versionId"] != nil || meta["lastUpdated"] != nil {
		c.errf(r.path+".meta", "dom-4", "a contained resource SHALL NOT have meta.versionId or meta.lastUpdated")
	}
	if meta["security"] != nil {
		c.errf(r.path+".meta.security", "dom-5", "a contained resource SHALL NOT have a security label")
	}
	if r.obj["text"] != nil {
		c.errf(r.path+".text", "dom-6", "a contained resource SHOULD NOT have a narrative") // downgraded below
		c.issues[len(c.issues)-1].Severity = "warning"
	}
}

// inRefersTo reports whether a reference or canonical string equal to ref
// occurs anywhere in v.
func inRefersTo(v any, ref string) bool {
	switch t := v.(type) {
	case string:
		return t == ref
	case map[string]any:
		for _, x := range t {
			if inRefersTo(x, ref) {
				return true
			}
		}
	case []any:
		for _, x := range t {
			if inRefersTo(x, ref) {
				return true
			}
		}
	}
	return false
}

var inHrefRe = regexp.MustCompile(`(?:href|src)\s*=\s*["'](#[^"']*)["']`)

// --- Bundle ---

var inAbsURLRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.\-]*:`)
var inRestURLRe = regexp.MustCompile(`^(https?://.*/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$`)

func ruleBundle(c *inCtx, r inRes) {
	if r.typ != "Bundle" {
		return
	}
	bt := inStr(r.obj["type"])
	if r.obj["total"] != nil && bt != "searchset" && bt != "history" {
		c.errf(r.path+".total", "bdl-1", "total only when a search or history")
	}
	seenRel := map[string]bool{}
	for i, l := range inArr(r.obj["link"]) {
		rel := inStr(inObj(l)["relation"])
		if seenRel[rel] && rel != "" {
			c.errf(fmt.Sprintf("%s.link[%d]", r.path, i), "bdl-link", "the link relation %q can only occur once", rel)
		}
		seenRel[rel] = true
	}
	if bt == "document" {
		id := inObj(r.obj["identifier"])
		if id["system"] == nil || id["value"] == nil {
			c.errf(r.path+".identifier", "bdl-9", "a document must have an identifier with a system and a value")
		}
		if r.obj["timestamp"] == nil {
			c.errf(r.path+".timestamp", "bdl-10", "a document must have a date (timestamp)")
		}
	}
	entries := inArr(r.obj["entry"])
	first := func(want, id string) {
		if len(entries) == 0 || inStr(inObj(inObj(entries[0])["resource"])["resourceType"]) != want {
			c.errf(r.path+".entry[0]", id, "the first resource of a %s Bundle must be a %s", bt, want)
		}
	}
	switch bt {
	case "document":
		first("Composition", "bdl-11")
	case "message":
		first("MessageHeader", "bdl-12")
	}
	type key struct{ full, ver string }
	seen := map[key]int{}
	fulls := map[string]bool{}     // every fullUrl
	byTypeID := map[string][]int{} // Type/id -> entries (resolution of relative references)
	for i, e := range entries {
		em := inObj(e)
		p := fmt.Sprintf("%s.entry[%d]", r.path, i)
		res := inObj(em["resource"])
		full := inStr(em["fullUrl"])
		if res == nil && em["request"] == nil && em["response"] == nil {
			c.errf(p, "bdl-5", "an entry must have a resource or a request or a response")
		}
		if em["search"] != nil && bt != "searchset" {
			c.errf(p+".search", "bdl-2", "entry.search only when a search")
		}
		if em["request"] != nil && bt != "batch" && bt != "transaction" && bt != "history" {
			c.errf(p+".request", "bdl-3", "entry.request only for some types of bundles")
		}
		if em["request"] == nil && (bt == "batch" || bt == "transaction" || bt == "history") {
			c.errf(p, "bdl-3", "entry.request mandatory for batch/transaction/history")
		}
		if em["response"] != nil && bt != "batch-response" && bt != "transaction-response" && bt != "history" {
			c.errf(p+".response", "bdl-4", "entry.response only for some types of bundles")
		}
		if em["response"] == nil && (bt == "batch-response" || bt == "transaction-response" || bt == "history") {
			c.errf(p, "bdl-4", "entry.response mandatory for batch-response/transaction-response/history")
		}
		if full != "" {
			if !inAbsURLRe.MatchString(full) {
				c.errf(p+".fullUrl", "bdl-fullUrl", "the fullUrl must be an absolute URL")
			} else if strings.Contains(full, "/_history/") {
				c.errf(p+".fullUrl", "bdl-8", "fullUrl cannot be a version specific reference")
			} else if m := inRestURLRe.FindStringSubmatch(full); m != nil && res != nil && inRestfulType(m[2]) {
				if m[2] != inStr(res["resourceType"]) || (res["id"] != nil && m[3] != inStr(res["id"])) {
					c.errf(p+".fullUrl", "bdl-fullUrl", "the fullUrl looks like a RESTful server URL, so it must end with the resource's type and id")
				}
			}
			if bt != "history" {
				k := key{full, inStr(inObj(res["meta"])["versionId"])}
				if j, dup := seen[k]; dup {
					c.errf(p+".fullUrl", "bdl-7", "fullUrl must be unique in a bundle, or else entries with the same fullUrl must have different meta.versionId (same as entry[%d])", j)
				}
				seen[k] = i
			}
			fulls[full] = true
		}
		if res != nil {
			if id := inStr(res["id"]); id != "" {
				k := inStr(res["resourceType"]) + "/" + id
				byTypeID[k] = append(byTypeID[k], i)
			}
			if bt == "searchset" && inStr(inObj(em["search"])["mode"]) == "match" && res["id"] == nil {
				c.errf(p+".resource", "bdl-search", "search results must have ids")
			}
		}
	}
	// Reference resolution inside transaction, batch, document and message
	// Bundles: a urn:uuid / urn:oid reference must match an entry's
	// fullUrl, and a relative reference must not be ambiguous.
	if bt != "transaction" && bt != "document" && bt != "message" && bt != "batch" && bt != "collection" {
		return
	}
	for i, e := range entries {
		em := inObj(e)
		res := inObj(em["resource"])
		if res == nil {
			continue
		}
		p := fmt.Sprintf("%s.entry[%d].resource", r.path, i)
		inWalk(p, res, func(path, key string, m map[string]any) {
			ref, ok := m["reference"].(string)
			if !ok {
				return
			}
			switch {
			case strings.HasPrefix(ref, "urn:uuid:") || strings.HasPrefix(ref, "urn:oid:"):
				if !fulls[ref] && bt != "collection" {
					c.errf(path+".reference", "bdl-ref", "the reference does not resolve to any entry's fullUrl in the bundle")
				}
			case bt == "document" && !strings.HasPrefix(ref, "#") && !inAbsURLRe.MatchString(ref):
				typeID, ver, versioned := strings.Cut(ref, "/_history/")
				matches := byTypeID[typeID]
				if versioned {
					n := 0
					for _, j := range matches {
						if inStr(inObj(inObj(inObj(entries[j])["resource"])["meta"])["versionId"]) == ver {
							n++
						}
					}
					if n == 0 && len(matches) > 0 {
						c.errf(path+".reference", "bdl-ref", "the versioned reference matches no entry with that version in the bundle")
					} else if n > 1 {
						c.errf(path+".reference", "bdl-ref", "the reference matches %d entries in the bundle", n)
					}
				} else if n := len(matches); n > 1 {
					c.errf(path+".reference", "bdl-ref", "the reference matches %d entries in the bundle", n)
				}
			}
		})
	}
}

// inRestfulType: a plausible resource type name segment.
func inRestfulType(s string) bool {
	_, err := url.PathUnescape(s)
	return err == nil && len(s) > 2
}

// rulePatient: pat-1 — a Patient.contact has contact details or an
// organization.
func rulePatient(c *inCtx, r inRes) {
	if r.typ != "Patient" {
		return
	}
	for i, x := range inArr(r.obj["contact"]) {
		m := inObj(x)
		if m["name"] == nil && m["telecom"] == nil && m["address"] == nil && m["organization"] == nil {
			c.errf(fmt.Sprintf("%s.contact[%d]", r.path, i), "pat-1", "a contact SHALL contain a name, telecom, address or a reference to an organization")
		}
	}
}

// ruleReferenceRange: obs-3 — a reference range has a low, a high or a
// text.
func ruleReferenceRange(c *inCtx, r inRes) {
	if r.typ != "Observation" {
		return
	}
	check := func(p string, rr any) {
		for i, x := range inArr(rr) {
			m := inObj(x)
			if m["low"] == nil && m["high"] == nil && m["text"] == nil {
				c.errf(fmt.Sprintf("%s.referenceRange[%d]", p, i), "obs-3", "a reference range must have at least a low or a high or text")
			}
		}
	}
	check(r.path, r.obj["referenceRange"])
	for i, comp := range inArr(r.obj["component"]) {
		check(fmt.Sprintf("%s.component[%d]", r.path, i), inObj(comp)["referenceRange"])
	}
}

// ruleCarePlan: cpl-3 — an activity has a reference or a detail, not both.
func ruleCarePlan(c *inCtx, r inRes) {
	if r.typ != "CarePlan" {
		return
	}
	for i, x := range inArr(r.obj["activity"]) {
		m := inObj(x)
		if m["reference"] != nil && m["detail"] != nil {
			c.errf(fmt.Sprintf("%s.activity[%d]", r.path, i), "cpl-3", "provide a reference or detail, not both")
		}
	}
}

// ruleQuantityCode: qty-3 — a Quantity with a unit code has a system.
func ruleQuantityCode(c *inCtx, r inRes) {
	inWalk(r.path, r.obj, func(path, key string, m map[string]any) {
		if !(strings.HasSuffix(key, "Quantity") || key == "quantity" || key == "low" || key == "high") {
			return
		}
		if m["code"] != nil && m["system"] == nil {
			c.errf(path, "qty-3", "if a code for the unit is present, the system SHALL also be present")
		}
	})
}

// ruleConsent: ppc-1 — a Consent has a policy or a policyRule.
func ruleConsent(c *inCtx, r inRes) {
	if r.typ != "Consent" {
		return
	}
	if r.obj["policy"] == nil && r.obj["policyRule"] == nil {
		c.errf(r.path, "ppc-1", "either a policy or a policyRule SHALL be present")
	}
}

// inExtDef is what we know of a core or US Core extension definition: the
// value[x] key it takes ("" for a complex extension with nested
// extensions) and, when set, where it may be used: a resource type (on the
// resource itself) or "_name" (on the primitive element name).
type inExtDef struct {
	value    string
	contexts []string
}

// inKnownExtensions lists the extensions of FHIR R4 core and US Core that
// inbound data carries (patient demographics, narrative links, data
// absent reasons) with their type and context from their definitions.
var inKnownExtensions = map[string]inExtDef{
	"http://hl7.org/fhir/us/core/StructureDefinition/us-core-race":      {value: ""},
	"http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity": {value: ""},
	"http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex":  {value: "valueCode"},
	"http://hl7.org/fhir/StructureDefinition/patient-birthTime":         {value: "valueDateTime", contexts: []string{"_birthDate"}},
	"http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName": {value: "valueString", contexts: []string{"Patient"}},
	"http://hl7.org/fhir/StructureDefinition/patient-birthPlace":        {value: "valueAddress", contexts: []string{"Patient"}},
	"http://hl7.org/fhir/StructureDefinition/humanname-mothers-family":  {value: "valueString", contexts: []string{"_family"}},
	"http://hl7.org/fhir/StructureDefinition/humanname-fathers-family":  {value: "valueString", contexts: []string{"_family"}},
	"http://hl7.org/fhir/StructureDefinition/humanname-own-prefix":      {value: "valueString", contexts: []string{"_family"}},
	"http://hl7.org/fhir/StructureDefinition/humanname-own-name":        {value: "valueString", contexts: []string{"_family"}},
	"http://hl7.org/fhir/StructureDefinition/humanname-partner-name":    {value: "valueString", contexts: []string{"_family"}},
	"http://hl7.org/fhir/StructureDefinition/humanname-partner-prefix":  {value: "valueString", contexts: []string{"_family"}},
	"http://hl7.org/fhir/StructureDefinition/narrativeLink":             {value: "valueUrl"},
	"http://hl7.org/fhir/StructureDefinition/data-absent-reason":        {value: "valueCode"},
	"http://hl7.org/fhir/StructureDefinition/condition-assertedDate":    {value: "valueDateTime", contexts: []string{"Condition"}},
	"http://hl7.org/fhir/StructureDefinition/ordinalValue":              {value: "valueDecimal"},
}

// ruleKnownExtensions: an extension whose definition we know has the
// value type and is used in a context that definition allows (the HL7
// validator refuses both).
func ruleKnownExtensions(c *inCtx, r inRes) {
	var walk func(path, key string, v any, root bool)
	walk = func(path, key string, v any, root bool) {
		switch t := v.(type) {
		case map[string]any:
			for i, x := range inArr(t["extension"]) {
				m := inObj(x)
				def, ok := inKnownExtensions[inStr(m["url"])]
				if !ok {
					continue
				}
				p := fmt.Sprintf("%s.extension[%d]", path, i)
				vk := inValueKey(m, "value")
				if vk != def.value {
					want := def.value
					if want == "" {
						want = "nested extensions (no value[x])"
					}
					c.errf(p, "ext-def", "the extension %s takes %s", inStr(m["url"]), want)
				}
				if len(def.contexts) > 0 {
					here := key
					if root {
						here = r.typ
					}
					allowed := false
					for _, ctx := range def.contexts {
						allowed = allowed || ctx == here
					}
					if !allowed {
						c.errf(p, "ext-def", "the extension %s is not allowed here (its context is %s)", inStr(m["url"]), strings.Join(def.contexts, ", "))
					}
				}
			}
			for k, x := range t {
				if k == "contained" || (k == "resource" && key == "entry") {
					continue
				}
				walk(path+"."+k, k, x, false)
			}
		case []any:
			for i, x := range t {
				walk(fmt.Sprintf("%s[%d]", path, i), key, x, false)
			}
		}
	}
	walk(r.path, "", r.obj, true)
}
