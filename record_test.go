package kap_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/kapbridge/kap"
)

// testdataFiles returns the paths of the kap/v1 example records.
func testdataFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/kap/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 14 {
		t.Fatalf("only %d records in testdata/kap", len(files))
	}
	return files
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata/kap", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// del marks a field to delete in a mutation.
type del struct{}

var segRE = regexp.MustCompile(`^([^\[\]]*)((?:\[\d+\])*)$`)

// setPath sets (or with del{} deletes) the value at a JSON path such as
// "administrations[0].route" in a generic JSON document. Setting index n
// of an array of length n appends.
func setPath(t testing.TB, doc any, path string, val any) any {
	t.Helper()
	type step struct {
		key   string
		index int // -1 for an object key
	}
	var steps []step
	for _, part := range strings.Split(path, ".") {
		m := segRE.FindStringSubmatch(part)
		if m == nil {
			t.Fatalf("bad path %q", path)
		}
		if m[1] != "" {
			steps = append(steps, step{key: m[1], index: -1})
		}
		for _, ix := range regexp.MustCompile(`\d+`).FindAllString(m[2], -1) {
			n, _ := strconv.Atoi(ix)
			steps = append(steps, step{index: n})
		}
	}
	var walk func(cur any, i int) any
	walk = func(cur any, i int) any {
		s := steps[i]
		last := i == len(steps)-1
		if s.index < 0 {
			obj, ok := cur.(map[string]any)
			if !ok {
				t.Fatalf("path %q: %q is not in an object", path, s.key)
			}
			if last {
				if _, ok := val.(del); ok {
					delete(obj, s.key)
				} else {
					obj[s.key] = val
				}
				return obj
			}
			next, ok := obj[s.key]
			if !ok {
				t.Fatalf("path %q: no field %q", path, s.key)
			}
			obj[s.key] = walk(next, i+1)
			return obj
		}
		arr, ok := cur.([]any)
		if !ok || s.index > len(arr) {
			t.Fatalf("path %q: index %d out of range", path, s.index)
		}
		if last {
			if _, ok := val.(del); ok {
				return append(arr[:s.index], arr[s.index+1:]...)
			}
			if s.index == len(arr) {
				return append(arr, val)
			}
			arr[s.index] = val
			return arr
		}
		arr[s.index] = walk(arr[s.index], i+1)
		return arr
	}
	return walk(doc, 0)
}

// getPath returns the value at a JSON path (object keys and [n] indices).
func getPath(t testing.TB, doc any, path string) any {
	t.Helper()
	cur := doc
	for _, part := range strings.Split(path, ".") {
		m := segRE.FindStringSubmatch(part)
		if m == nil {
			t.Fatalf("bad path %q", path)
		}
		if m[1] != "" {
			cur = cur.(map[string]any)[m[1]]
		}
		for _, ix := range regexp.MustCompile(`\d+`).FindAllString(m[2], -1) {
			n, _ := strconv.Atoi(ix)
			cur = cur.([]any)[n]
		}
	}
	return cur
}

func parseDoc(t testing.TB, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// deepCopy copies a generic JSON value.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = deepCopy(e)
		}
		return a
	}
	return v
}

// mutation changes a parsed record document.
type mutation func(t testing.TB, doc map[string]any)

// set returns a mutation setting path to val (del{} deletes).
func set(path string, val any) mutation {
	return func(t testing.TB, doc map[string]any) { setPath(t, doc, path, val) }
}

// copyTo copies the value at from to path to, then applies the changes
// (paths relative to the copy).
func copyTo(from, to string, changes map[string]any) mutation {
	return func(t testing.TB, doc map[string]any) {
		v := deepCopy(getPath(t, doc, from))
		for p, x := range changes {
			setPath(t, v, p, x)
		}
		setPath(t, doc, to, v)
	}
}

func all(ms ...mutation) mutation {
	return func(t testing.TB, doc map[string]any) {
		for _, m := range ms {
			m(t, doc)
		}
	}
}

type fieldCase struct {
	name   string
	file   string
	mutate mutation
	path   string // the expected Issue.Path
	reason string // a substring of the expected Issue.Reason
}

// TestFieldErrors mutates valid testdata records and checks that the
// decoder reports the exact field path and the reason.
func TestFieldErrors(t *testing.T) {
	const (
		prescriber = "00-provider-prescriber.json"
		therapist  = "01-provider-therapist.json"
		client     = "10-client-c001.json"
		intake     = "11-intake-c001.json"
		consent    = "12-consent-c001.json"
		plan       = "13-plan-c001.json"
		planIN     = "63-plan-c005.json"
		phq9       = "14-assessment-c001-phq9-baseline.json"
		pcl5       = "34-assessment-c002-pcl5-baseline.json"
		cssrs      = "15-assessment-c001-cssrs-baseline.json"
		iv         = "16-dosing-c001-1.json"
		ivAE       = "18-dosing-c001-2.json"
		im         = "35-dosing-c002-1.json"
		sl         = "45-dosing-c003-1-troche.json"
		in56       = "65-dosing-c005-1-esketamine56.json"
		integ      = "17-integration-c001-1.json"
		group      = "36-integration-c002-1-group.json"
	)
	cases := []fieldCase{
		// Provider
		{"npi check digit", prescriber, set("npi", "1234567890"), "npi", "valid check digit"},
		{"npi not digits", therapist, set("npi", "12345abcde"), "npi", "10-digit NPI"},
		{"prescriber without npi", prescriber, set("npi", del{}), "npi", "is required for a prescriber"},
		{"no roles", prescriber, set("roles", []any{}), "roles", "is required"},
		{"unknown role", prescriber, set("roles[0]", "surgeon"), "roles[0]", "must be one of psychotherapist, prescriber, nurse"},
		{"no family name", therapist, set("name.family", " "), "name.family", "is required"},
		{"empty given name", therapist, set("name.given[1]", ""), "name.given[1]", "is required"},
		{"bad id", prescriber, set("id", "p md/01"), "id", "must be 1-64 letters"},
		{"id too long", prescriber, set("id", strings.Repeat("p", 65)), "id", "must be 1-64 letters"},

		// Client
		{"impossible birth date", client, set("birthDate", "1984-02-30"), "birthDate", "must be a date YYYY-MM-DD"},
		{"birth date in the future", client, set("birthDate", "2999-01-01"), "birthDate", "must not be in the future"},
		{"no birth date", client, set("birthDate", del{}), "birthDate", "is required"},
		{"gender", client, set("gender", "f"), "gender", "must be one of male, female, other, unknown"},
		{"email", client, set("email", "avery at example.com"), "email", "must be an e-mail address"},
		{"contact role", client, set("contacts[0].roles[1]", "driver"), "contacts[0].roles[1]", "must be one of escort, emergency"},
		{"contact without roles", client, set("contacts[0].roles", []any{}), "contacts[0].roles", "is required"},
		{"contact without phone", client, set("contacts[0].phone", del{}), "contacts[0].phone", "is required"},
		{"contact without name", client, set("contacts[0].name.family", ""), "contacts[0].name.family", "is required"},

		// Intake
		{"eligible with a contraindication", intake, set("contraindicationScreen.answers[4].present", true),
			"contraindicationScreen.outcome", "cannot be eligible while a contraindication is present"},
		{"unknown outcome", intake, set("contraindicationScreen.outcome", "maybe"), "contraindicationScreen.outcome", "must be one of eligible, ineligible, needs-review"},
		{"screen item twice", intake, set("contraindicationScreen.answers[1].item", "uncontrolled-hypertension"),
			"contraindicationScreen.answers[1].item", "is answered twice"},
		{"unknown screen item", intake, set("contraindicationScreen.answers[8].item", "asthma"), "contraindicationScreen.answers[8].item", "must be one of"},
		{"no screen answers", intake, set("contraindicationScreen.answers", []any{}), "contraindicationScreen.answers", "is required"},
		{"no indications", intake, set("indications", []any{}), "indications", "at least one indication"},
		{"unknown indication", intake, set("indications[0].code", "depression"), "indications[0].code", "must be one of trd, mdd, ptsd"},
		{"trd with an anxiety code", intake, set("indications[0].icd10", "F41.1"), "indications[0].icd10", "must be a depressive episode code (F32.x or F33.x) for trd"},
		{"not an icd-10 code", intake, set("indications[1].icd10", "41.1"), "indications[1].icd10", "must be an ICD-10-CM code"},
		{"rxnorm not digits", intake, set("medications[0].rxnorm", "RX36437"), "medications[0].rxnorm", "digits"},
		{"medication class", intake, set("medications[1].class", "benzo"), "medications[1].class", "must be one of benzodiazepine"},
		{"medication status", intake, set("medications[1].status", "held"), "medications[1].status", "must be one of active, paused, stopped"},
		{"baseline total above range", intake, set("baseline[0].total", 28), "baseline[0].total", "must be between 0 and 27 for PHQ-9"},
		{"baseline instrument twice", intake, set("baseline[1].instrument", "PHQ-9"), "baseline[1].instrument", "appears twice"},
		{"unknown billing code", intake, set("billingCodes[0]", "J3000"), "billingCodes[0]", "is not a known KAP billing code"},
		{"date without zone", intake, set("date", "2026-02-16T10:00:00"), "date", "must be an RFC 3339 date-time with a zone"},
		{"no prescriber", intake, set("prescriberId", del{}), "prescriberId", "is required"},

		// Consent
		{"no escort agreement", consent, set("escortAgreement", false), "escortAgreement", "released only to an escort"},
		{"no driving acknowledgement", consent, set("noDrivingAck", false), "noDrivingAck", "no driving or machinery for 8 hours"},
		{"consent status", consent, set("status", "pending"), "status", "must be one of active, revoked"},
		{"share target twice", consent, set("share[1].target", "ehr-main"), "share[1].target", "appears twice"},
		{"share type", consent, set("share[0].type", "bank"), "share[0].type", "must be one of ehr, payer"},
		{"not signed", consent, set("signedAt", del{}), "signedAt", "is required"},

		// TreatmentPlan
		{"no dosing sessions", plan, set("dosing.count", 0), "dosing.count", "must be between 1 and 52"},
		{"dosing without interval", plan, set("dosing.intervalDays", del{}), "dosing.intervalDays", "is required when more than one session is planned"},
		{"interval too long", plan, set("integration.intervalDays", 120), "integration.intervalDays", "must be between 0 and 90"},
		{"too many preparation sessions", plan, set("preparation.count", 11), "preparation.count", "must be between 0 and 10"},
		{"end before start", plan, set("end", "2026-01-01"), "end", "must not be before start"},
		{"goal target above range", plan, set("goals[0].target", 30), "goals[0].target", "must be between 0 and 27 for PHQ-9"},
		{"goal id twice", plan, set("goals[1].id", "g1"), "goals[1].id", "appears twice"},
		{"goal comparator", plan, set("goals[0].comparator", "=="), "goals[0].comparator", "must be one of <, <=, >=, >"},
		{"goal target without instrument", plan, set("goals[2].target", 5), "goals[2].instrument", "is required when a comparator or target is given"},
		{"order product for route", plan, set("order.product", "ketamine-troche-compounded"), "order.product", "cannot be given by route IV"},
		{"order dose unit", plan, set("order.dose.unit", "mL"), "order.dose.unit", "must be one of mg, mg/kg"},
		{"order dose per kg too high", plan, set("order.dose.value", 12), "order.dose.value", "must be between 0.05 and 10"},
		{"order route", plan, set("order.route", "PR"), "order.route", "must be one of IV, IM, SL, PO, IN"},
		{"esketamine order dose", planIN, set("order.dose.value", 70), "order.dose.value", "must be 28, 56 or 84 mg"},
		{"order dose above max", planIN, set("order.maxDoseMg", 28), "order.dose.value", "is above maxDoseMg"},
		{"plan status", plan, set("status", "open"), "status", "must be one of draft, active"},

		// DosingSession
		{"route", iv, set("administrations[0].route", "IO"), "administrations[0].route", "must be one of IV, IM, SL, PO, IN"},
		{"no route", iv, set("administrations[0].route", del{}), "administrations[0].route", "is required: one of IV, IM, SL, PO, IN"},
		{"product", iv, set("administrations[0].product", "ketamine"), "administrations[0].product", "must be one of"},
		{"product for route", iv, set("administrations[0].product", "esketamine-nasal-spray"), "administrations[0].product", "cannot be given by route IV"},
		{"dose per kg mismatch", iv, set("administrations[0].doseMgPerKg", 0.8), "administrations[0].doseMgPerKg", "does not match doseMg for the session weight"},
		{"second administration dose per kg mismatch", im, copyTo("administrations[0]", "administrations[1]", map[string]any{
			"id": "a2", "doseMg": 30, "doseMgPerKg": 0.5, "start": "2026-02-25T10:50:00-07:00"}),
			"administrations[1].doseMgPerKg", "does not match doseMg"},
		{"administration id twice", im, copyTo("administrations[0]", "administrations[1]", map[string]any{"id": "a1"}),
			"administrations[1].id", "appears twice"},
		{"dose too high", iv, all(set("administrations[0].doseMg", 900), set("administrations[0].doseMgPerKg", del{})),
			"administrations[0].doseMg", "must be between 1 and 800"},
		{"IV without stop", iv, set("administrations[0].stop", del{}), "administrations[0].stop", "is required"},
		{"stop before start", iv, set("administrations[0].stop", "2026-02-23T09:10:00-07:00"), "administrations[0].stop", "must not be before administrations[0].start"},
		{"administration after the session", iv, set("administrations[0].stop", "2026-02-23T12:30:00-07:00"), "administrations[0].stop", "must be within the session"},
		{"rate on an IM injection", im, set("administrations[0].rateMgPerKgPerHour", 0.5), "administrations[0].rateMgPerKgPerHour", "is only for IV infusions"},
		{"infusion rate too high", iv, set("administrations[0].rateMgPerKgPerHour", 11), "administrations[0].rateMgPerKgPerHour", "must be between 0.01 and 10"},
		{"esketamine dose", in56, set("administrations[0].doseMg", 70), "administrations[0].doseMg", "must be 28, 56 or 84 mg"},
		{"esketamine without lot", in56, set("administrations[0].lotNumber", del{}), "administrations[0].lotNumber", "REMS"},
		{"no administrations", sl, set("administrations", []any{}), "administrations", "at least one administration"},
		{"no administeredBy", sl, set("administrations[0].administeredBy", ""), "administrations[0].administeredBy", "is required"},
		{"diastolic above systolic", iv, set("vitals[3].diastolic", 190), "vitals[3].diastolic", "must be below systolic"},
		{"systolic without diastolic", iv, set("vitals[2].diastolic", del{}), "vitals[2]", "blood pressure needs both systolic and diastolic"},
		{"vital set with no reading", iv, set("vitals[5]", map[string]any{"time": "2026-02-23T10:20:00-07:00"}), "vitals[5]", "holds no reading"},
		{"spo2 above 100", iv, set("vitals[4].spo2", 101), "vitals[4].spo2", "must be between 50 and 100"},
		{"heart rate", iv, set("vitals[6].heartRate", 300), "vitals[6].heartRate", "must be between 20 and 250"},
		{"respiratory rate", iv, set("vitals[6].respRate", 1), "vitals[6].respRate", "must be between 2 and 60"},
		{"temperature", iv, set("vitals[0].tempC", 98.6), "vitals[0].tempC", "must be between 30 and 43"},
		{"two vital sets at one time", iv, set("vitals[1].time", "2026-02-23T09:05:00-07:00"), "vitals[1].time", "merge them"},
		{"vitals before the session", iv, set("vitals[0].time", "2026-02-23T08:40:00-07:00"), "vitals[0].time", "must be within the session"},
		{"no vitals", im, set("vitals", []any{}), "vitals", "is required"},
		{"MOAA/S above 5", iv, set("scores[0].value", 6), "scores[0].value", "must be between 0 and 5"},
		{"CADSS above 92", iv, set("scores[2].value", 93), "scores[2].value", "must be between 0 and 92"},
		{"score instrument", iv, set("scores[2].instrument", "BPRS"), "scores[2].instrument", "must be one of CADSS, MOAA/S"},
		{"score after the session", iv, set("scores[4].time", "2026-02-23T13:00:00-07:00"), "scores[4].time", "must be within the session"},
		{"adverse event kind", ivAE, set("adverseEvents[0].event", "stroke-like"), "adverseEvents[0].event", "must be one of"},
		{"adverse event severity", ivAE, set("adverseEvents[1].severity", "bad"), "adverseEvents[1].severity", "must be one of mild, moderate, severe"},
		{"adverse event outcome", ivAE, set("adverseEvents[1].outcome", "fine"), "adverseEvents[1].outcome", "must be one of resolved"},
		{"intervention after the session", ivAE, set("adverseEvents[0].interventions[1].time", "2026-02-26T12:30:00-07:00"),
			"adverseEvents[0].interventions[1].time", "must be within the session"},
		{"intervention without description", ivAE, set("adverseEvents[0].interventions[2].description", ""),
			"adverseEvents[0].interventions[2].description", "is required"},
		{"adverse event id twice", ivAE, all(set("adverseEvents[0].id", "ae2")), "adverseEvents[1].id", "appears twice"},
		{"discharge during infusion", iv, set("discharge.time", "2026-02-23T09:45:00-07:00"), "discharge.time", "must be after the end of administrations[0]"},
		{"no discharge time", iv, set("discharge.time", del{}), "discharge.time", "is required"},
		{"end before start", iv, set("end", "2026-02-23T08:00:00-07:00"), "end", "must not be before start"},
		{"session longer than 12 hours", iv, set("end", "2026-02-24T09:00:00-07:00"), "end", "must be within 12 hours of start"},
		{"start not RFC 3339", iv, set("start", "23/02/2026 09:00"), "start", "must be an RFC 3339 date-time"},
		{"start not a string", iv, set("start", 5), "start", "must be a date-time string, not a JSON number"},
		{"weight", iv, set("weightKg", 5), "weightKg", "must be between 20 and 350"},
		{"fasting", iv, set("fastingHours", -1), "fastingHours", "must be between 0 and 48"},
		{"pre-check item", iv, set("preChecks[0].item", "vibes-checked"), "preChecks[0].item", "must be one of"},
		{"session number", iv, set("sessionNumber", 201), "sessionNumber", "must be between 1 and 200"},
		{"add-on code alone", iv, set("billingCodes", []any{"96366"}), "billingCodes[0]", "is an add-on code and needs its primary code"},
		{"billing code twice", iv, set("billingCodes[1]", "96365"), "billingCodes[1]", "appears twice"},
		{"psychotherapy without therapist", iv, set("psychotherapy.therapistId", del{}), "psychotherapy.therapistId", "is required"},
		{"psychotherapy minutes", iv, set("psychotherapy.minutes", 0), "psychotherapy.minutes", "must be between 1 and 600"},
		{"monitoredBy id", iv, set("monitoredBy[1]", ""), "monitoredBy[1]", "is required"},
		{"planId", iv, set("planId", "plan c001"), "planId", "must be 1-64 letters"},

		// IntegrationSession
		{"format", integ, set("format", "phone"), "format", "must be one of individual, group, telehealth"},
		{"minutes longer than the session", integ, set("minutes", 90), "minutes", "must not exceed the time between start and end"},
		{"no minutes", integ, set("minutes", del{}), "minutes", "must be between 1 and 480"},
		{"group billed as individual", group, set("billingCodes[0]", "90837"), "billingCodes[0]", "a group session bills 90853"},
		{"integration end before start", integ, set("end", "2026-02-24T13:00:00-07:00"), "end", "must not be before start"},
		{"no therapist", integ, set("therapistId", del{}), "therapistId", "is required"},

		// Assessment
		{"total not the sum", phq9, set("total", 20), "total", "must be the sum of the items (19)"},
		{"item above range", phq9, set("items[2]", 4), "items[2]", "must be between 0 and 3"},
		{"negative item", phq9, set("items[0]", -1), "items[0]", "must be between 0 and 3"},
		{"missing item", phq9, set("items[8]", del{}), "items", "PHQ-9 has 9 items, got 8"},
		{"PCL-5 item range", pcl5, set("items[19]", 5), "items[19]", "must be between 0 and 4"},
		{"PCL-5 total", pcl5, set("total", 0), "total", "must be the sum of the items (52)"},
		{"C-SSRS yes/no", cssrs, set("items[1]", 2), "items[1]", "must be between 0 and 1"},
		{"instrument", phq9, set("instrument", "BDI-II"), "instrument", "must be one of PHQ-9, GAD-7, PCL-5, C-SSRS"},
		{"both session links", phq9, all(set("dosingSessionId", "ds-c001-1"), set("integrationSessionId", "is-c001-1")),
			"integrationSessionId", "not both"},
		{"no date", phq9, set("date", ""), "date", "is required"},

		// Decoding
		{"unknown top-level field", client, set("nickname", "Ave"), "nickname", "unknown field"},
		{"wrong type, top level", iv, set("weightKg", "72.4"), "weightKg", "must be a number, not a JSON string"},
		{"wrong type, object", iv, set("discharge.criteriaMet", "yes"), "discharge.criteriaMet", "must be true or false, not a JSON string"},
		{"wrong type, array", client, set("contacts", map[string]any{}), "contacts", "must be an array, not a JSON object"},
		{"wrong type, string", client, set("gender", 1), "gender", "must be a string, not a JSON number"},
		{"kind not a string", client, set("kind", 1), "kind", "must be a string"},
		{"missing kind", client, set("kind", del{}), "kind", "is required: one of Provider, Client"},
		{"unknown kind", client, set("kind", "Patient"), "kind", `unknown kind "Patient"`},
		{"empty kind", client, set("kind", ""), "kind", "is required"},
	}
	for _, c := range cases {
		t.Run(c.name+"/"+strings.TrimSuffix(c.file, ".json"), func(t *testing.T) {
			doc := parseDoc(t, readFile(t, c.file))
			c.mutate(t, doc)
			b, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := kap.DecodeRecord(b)
			if err == nil {
				t.Fatalf("decoded without error (%T)", rec)
			}
			if rec != nil {
				t.Errorf("DecodeRecord returned a record with an error")
			}
			if code := kap.ErrorCode(err); code != kap.EINVALID {
				t.Errorf("error code %q, want %q", code, kap.EINVALID)
			}
			issues := kap.ErrorIssues(err)
			for _, is := range issues {
				if is.Path == c.path && strings.Contains(is.Reason, c.reason) {
					return
				}
			}
			t.Errorf("no issue {%s: ...%s...}; got %v", c.path, c.reason, issues)
		})
	}
}

// TestNestedDecodeErrors covers JSON-level errors inside arrays and nested
// objects: the path names the field (see the report on missing indices).
func TestNestedDecodeErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		mutate mutation
		suffix string // the reported path ends with this
		reason string
	}{
		{"unknown nested field", set("administrations[0].dose", 1), "dose", "unknown field"},
		{"wrong type in an array element", set("administrations[0].doseMg", "36.2"), "doseMg", "must be a number, not a JSON string"},
		{"wrong type in vitals", set("vitals[2].systolic", true), "vitals[2].systolic", "must be a number, not true or false"},
	} {
		t.Run(c.name, func(t *testing.T) {
			doc := parseDoc(t, readFile(t, "16-dosing-c001-1.json"))
			c.mutate(t, doc)
			b, _ := json.Marshal(doc)
			_, err := kap.DecodeRecord(b)
			issues := kap.ErrorIssues(err)
			if len(issues) != 1 || !strings.HasSuffix(issues[0].Path, c.suffix) || !strings.Contains(issues[0].Reason, c.reason) {
				t.Errorf("got %v, want one issue ending %q: %q", issues, c.suffix, c.reason)
			}
		})
	}
}

func TestMalformedJSON(t *testing.T) {
	b := readFile(t, "10-client-c001.json")
	// Break line 3: remove the comma after the id.
	lines := strings.Split(string(b), "\n")
	if !strings.Contains(lines[2], `"id": "c001",`) {
		t.Fatalf("line 3 of the client is %q", lines[2])
	}
	lines[2] = strings.TrimSuffix(lines[2], ",")
	cases := map[string]struct {
		doc    string
		reason string
	}{
		"missing comma":  {strings.Join(lines, "\n"), "malformed JSON at line 4, column"},
		"empty":          {"", "malformed JSON"},
		"not JSON":       {"kind: Client", "malformed JSON at line 1, column"},
		"trailing data":  {`{"kind":"Client"} {"kind":"Client"}`, "unexpected data after"},
		"unclosed":       {`{"kind": "Client", "id": "c1"`, "malformed JSON"},
		"array document": {`[{"kind":"Client"}]`, "must be an object"},
		"bad escape":     {`{"kind": "Cli\ent"}`, "malformed JSON at line 1, column"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := kap.DecodeRecord([]byte(c.doc))
			if kap.ErrorCode(err) != kap.EINVALID {
				t.Fatalf("got %v, want an invalid error", err)
			}
			if msg := kap.ErrorMessage(err); !strings.Contains(msg, c.reason) {
				t.Errorf("message %q does not contain %q", msg, c.reason)
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	b := make([]byte, kap.MaxRecordBytes+1)
	if _, err := kap.DecodeRecord(b); kap.ErrorCode(err) != kap.ETOOLARGE {
		t.Errorf("got %v, want %s", err, kap.ETOOLARGE)
	}
}

// TestTestdataDecodes checks every example record decodes, is valid, and
// survives EncodeRecord/DecodeRecord unchanged.
func TestTestdataDecodes(t *testing.T) {
	kinds := map[kap.Kind]int{}
	for _, f := range testdataFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := kap.DecodeRecord(b)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		kinds[rec.RecordKind()]++
		enc, err := kap.EncodeRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		again, err := kap.DecodeRecord(enc)
		if err != nil {
			t.Errorf("%s: re-encoded record does not decode: %v", f, err)
			continue
		}
		enc2, _ := kap.EncodeRecord(again)
		if !bytes.Equal(enc, enc2) {
			t.Errorf("%s: encoding is not stable:\n%s\n%s", f, enc, enc2)
		}
		var canon bytes.Buffer
		if err := json.Compact(&canon, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(canon.Bytes(), enc) {
			t.Errorf("%s: the file is not in canonical form (EncodeRecord output, indented)", f)
		}
	}
	for _, k := range kap.Kinds {
		if kinds[k] == 0 {
			t.Errorf("no %s in testdata/kap", k)
		}
	}
}

// TestTestdataCoverage checks the example records cover what they claim:
// every route, both esketamine doses, an ineligible intake, AEs with
// interventions, group and telehealth integration, every instrument and a
// full six-session course.
func TestTestdataCoverage(t *testing.T) {
	routes := map[string]bool{}
	esk := map[float64]bool{}
	formats := map[string]bool{}
	instruments := map[string]bool{}
	sessionsPerPlan := map[string]int{}
	integrations := map[string]string{} // dosing session -> integration
	var ineligible, aeWithIntervention bool
	var prev string
	for _, f := range testdataFiles(t) {
		if prev != "" && f <= prev {
			t.Errorf("file names do not sort: %s after %s", f, prev)
		}
		prev = f
		b, _ := os.ReadFile(f)
		rec, err := kap.DecodeRecord(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		switch r := rec.(type) {
		case *kap.Intake:
			ineligible = ineligible || r.Screen.Outcome == kap.OutcomeIneligible
		case *kap.DosingSession:
			sessionsPerPlan[r.PlanID]++
			for _, a := range r.Administrations {
				routes[a.Route] = true
				if a.Route == kap.RouteIN {
					esk[a.DoseMg] = true
				}
				if a.Route == kap.RouteIV && (a.Stop.IsZero() || a.RateMgPerKgPerHour == 0) {
					t.Errorf("%s: IV infusion without stop or rate", f)
				}
			}
			for _, ae := range r.AdverseEvents {
				aeWithIntervention = aeWithIntervention || len(ae.Interventions) > 0
			}
			if n := len(r.Vitals); n < 9 {
				t.Errorf("%s: only %d vital sets", f, n)
			}
		case *kap.IntegrationSession:
			formats[r.Format] = true
			integrations[r.DosingSessionID] = r.ID
			if r.Format == "group" && (len(r.BillingCodes) != 1 || r.BillingCodes[0] != "90853") {
				t.Errorf("%s: group session not billed 90853", f)
			}
		case *kap.Assessment:
			instruments[r.Instrument] = true
		}
	}
	for _, r := range kap.Routes {
		if !routes[r] {
			t.Errorf("no administration by route %s", r)
		}
	}
	if !esk[56] || !esk[84] {
		t.Errorf("esketamine doses %v, want 56 and 84", esk)
	}
	for _, f := range kap.IntegrationFormats {
		if !formats[f] {
			t.Errorf("no %s integration session", f)
		}
	}
	for _, in := range kap.Instruments {
		if !instruments[in] {
			t.Errorf("no %s assessment", in)
		}
	}
	if !ineligible {
		t.Error("no ineligible intake")
	}
	if !aeWithIntervention {
		t.Error("no adverse event with interventions")
	}
	if sessionsPerPlan["plan-c001"] != 6 {
		t.Errorf("plan-c001 has %d dosing sessions, want 6", sessionsPerPlan["plan-c001"])
	}
	for i := 1; i <= 6; i++ {
		if integrations[fmt.Sprintf("ds-c001-%d", i)] == "" {
			t.Errorf("ds-c001-%d has no integration session", i)
		}
	}
}

// TestDecodeTruncated decodes every prefix of every example record: each
// must give an *Error (never a panic, never a record).
func TestDecodeTruncated(t *testing.T) {
	for _, f := range testdataFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.TrimRight(b, "\n ")
		step := 1
		if testing.Short() {
			step = 7
		}
		for n := 0; n < len(b); n += step {
			rec, err := kap.DecodeRecord(b[:n])
			if err == nil {
				t.Fatalf("%s: prefix of %d bytes decoded to a %s", f, n, rec.RecordKind())
			}
			var e *kap.Error
			if !errors.As(err, &e) || e.Code != kap.EINVALID {
				t.Fatalf("%s: prefix of %d bytes: %v is not an invalid-input *kap.Error", f, n, err)
			}
		}
	}
}

// TestValidateReportsAllProblems checks Validate does not stop at the first
// problem.
func TestValidateReportsAllProblems(t *testing.T) {
	doc := parseDoc(t, readFile(t, "16-dosing-c001-1.json"))
	for p, v := range map[string]any{
		"administrations[0].route": "IO",
		"vitals[3].diastolic":      190,
		"weightKg":                 5,
		"scores[0].value":          6,
		"discharge.time":           del{},
		"billingCodes[0]":          "J3000",
	} {
		setPath(t, doc, p, v)
	}
	b, _ := json.Marshal(doc)
	_, err := kap.DecodeRecord(b)
	got := map[string]bool{}
	for _, is := range kap.ErrorIssues(err) {
		got[is.Path] = true
	}
	for _, p := range []string{"administrations[0].route", "vitals[3].diastolic", "weightKg", "scores[0].value", "discharge.time", "billingCodes[0]"} {
		if !got[p] {
			t.Errorf("no issue at %s; got %v", p, kap.ErrorIssues(err))
		}
	}
	// weightKg 5 also breaks the mg/kg check: still one problem per field
	// reported, none twice.
	seen := map[kap.Issue]bool{}
	for _, is := range kap.ErrorIssues(err) {
		if seen[is] {
			t.Errorf("issue reported twice: %v", is)
		}
		seen[is] = true
	}
	// A zero record: every required field at once.
	err = (&kap.DosingSession{}).Validate()
	if n := len(kap.ErrorIssues(err)); n < 7 {
		t.Errorf("empty session: %d issues, want at least 7: %v", n, err)
	}
}

func TestValidateKindMismatch(t *testing.T) {
	c := &kap.Client{Kind: kap.KindProvider}
	found := false
	for _, is := range kap.ErrorIssues(c.Validate()) {
		found = found || (is.Path == "kind" && strings.Contains(is.Reason, "must be Client"))
	}
	if !found {
		t.Errorf("no kind issue: %v", c.Validate())
	}
}

// TestErrorsNameNoValues checks that issues do not echo submitted values
// (which may be PHI).
func TestErrorsNameNoValues(t *testing.T) {
	const secret = "Zyxwvut-Secret"
	doc := parseDoc(t, readFile(t, "10-client-c001.json"))
	setPath(t, doc, "gender", secret)
	setPath(t, doc, "email", secret)
	setPath(t, doc, "birthDate", secret)
	setPath(t, doc, "contacts[0].roles[0]", secret)
	b, _ := json.Marshal(doc)
	_, err := kap.DecodeRecord(b)
	if err == nil {
		t.Fatal("no error")
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error echoes the submitted value: %v", err)
	}
	if n := len(kap.ErrorIssues(err)); n != 4 {
		t.Errorf("%d issues, want 4: %v", n, err)
	}
	_, err = kap.DecodeRecord([]byte(`{"kind":"Client","` + secret + `":1}`))
	if err == nil {
		t.Fatal("unknown field accepted")
	}
	// An unknown field's name is reported: it is a field name, not a value.
	if kap.ErrorIssues(err)[0].Path != secret {
		t.Errorf("unknown field path %q", kap.ErrorIssues(err)[0].Path)
	}
}

func TestSafetyWarnings(t *testing.T) {
	load := func(name string) *kap.DosingSession {
		rec, err := kap.DecodeRecord(readFile(t, name))
		if err != nil {
			t.Fatal(err)
		}
		return rec.(*kap.DosingSession)
	}
	has := func(w []kap.Issue, path, reason string) bool {
		for _, is := range w {
			if is.Path == path && strings.Contains(is.Reason, reason) && is.Severity == "warning" {
				return true
			}
		}
		return false
	}
	s := load("16-dosing-c001-1.json")
	if w := s.SafetyWarnings(); len(w) != 0 {
		t.Errorf("uneventful session has warnings: %v", w)
	}
	s.Discharge.EscortPresent = false
	s.Discharge.ReleasedTo = ""
	if w := s.SafetyWarnings(); !has(w, "discharge.escortPresent", "without an escort") {
		t.Errorf("no escort warning: %v", w)
	}
	if err := s.Validate(); err != nil {
		t.Errorf("a discharge without escort is a warning, not an invalid record: %v", err)
	}
	s = load("16-dosing-c001-1.json")
	s.FastingHours = 1
	s.Discharge.CriteriaMet = false
	w := s.SafetyWarnings()
	if !has(w, "fastingHours", "shorter than 3 hours") || !has(w, "discharge.criteriaMet", "before discharge criteria were met") {
		t.Errorf("warnings %v", w)
	}
	// The raised blood pressure of session 2 (184/108) is flagged.
	if w := load("18-dosing-c001-2.json").SafetyWarnings(); !has(w, "vitals", "180/110") {
		t.Errorf("no blood-pressure warning: %v", w)
	}
	s = load("16-dosing-c001-1.json")
	s.Vitals[7].SpO2 = 88
	if w := s.SafetyWarnings(); !has(w, "vitals", "SpO2 fell below 90%") {
		t.Errorf("no SpO2 warning: %v", w)
	}
	s = load("16-dosing-c001-1.json")
	s.Vitals = s.Vitals[2:] // drop the pre-dose readings
	if w := s.SafetyWarnings(); !has(w, "vitals", "before the first dose") {
		t.Errorf("no pre-dose warning: %v", w)
	}
	// Esketamine: 2 hours of monitoring required.
	s = load("65-dosing-c005-1-esketamine56.json")
	if w := s.SafetyWarnings(); len(w) != 0 {
		t.Errorf("esketamine session has warnings: %v", w)
	}
	s.Discharge.Time = kap.At(s.FirstDose().Add(90 * 60e9))
	if w := s.SafetyWarnings(); !has(w, "discharge.time", "at least 2 hours") {
		t.Errorf("no monitoring warning: %v", w)
	}
}

func TestValidNPI(t *testing.T) {
	for _, c := range []struct {
		npi  string
		want bool
	}{
		{"1234567893", true}, // the CMS example
		{"1234567890", false},
		{"1234567894", false},
		{"1245319599", true},
		{"1245319598", false},
		{"123456789", false},
		{"12345678933", false},
		{"123456789a", false},
		{"", false},
		{" 234567893", false},
		{"１２３４５６７８９３", false}, // full-width digits
	} {
		if got := kap.ValidNPI(c.npi); got != c.want {
			t.Errorf("ValidNPI(%q) = %v, want %v", c.npi, got, c.want)
		}
	}
	// Exactly one check digit is valid for any 9-digit base.
	for _, base := range []string{"123456789", "164958302", "188765432", "100000000", "299999999"} {
		n := 0
		for d := '0'; d <= '9'; d++ {
			if kap.ValidNPI(base + string(d)) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d valid check digits", base, n)
		}
	}
}

// FuzzDecodeRecord: DecodeRecord never panics; whatever it accepts is valid
// and re-encodes to a record that decodes again.
func FuzzDecodeRecord(f *testing.F) {
	files, _ := filepath.Glob("testdata/kap/*.json")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"kind":"Client"}`))
	f.Add([]byte(`{"kind":"DosingSession","start":5}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := kap.DecodeRecord(data)
		if err != nil {
			var e *kap.Error
			if !errors.As(err, &e) {
				t.Fatalf("error is not a *kap.Error: %v", err)
			}
			if rec != nil {
				t.Fatal("record and error")
			}
			return
		}
		if err := rec.Validate(); err != nil {
			t.Fatalf("accepted record is invalid: %v", err)
		}
		b, err := kap.EncodeRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kap.DecodeRecord(b); err != nil {
			t.Fatalf("re-encoded record does not decode: %v\n%s", err, b)
		}
	})
}
