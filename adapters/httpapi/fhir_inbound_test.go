package httpapi_test

// Tests of the facade's inbound side: data arriving from EHRs.

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/kapbridge/kap"
)

func fxPatient(mrn string) map[string]any {
	return map[string]any{"resourceType": "Patient",
		"identifier": []any{map[string]any{"system": fxMRN, "value": mrn}},
		"name":       []any{map[string]any{"family": "Ehrperson", "given": []any{"Quinn"}}},
		"gender":     "female", "birthDate": "1980-04-02"}
}

func fxCondition(subject string) map[string]any {
	return map[string]any{"resourceType": "Condition",
		"identifier": []any{map[string]any{"system": "http://ehr.example.org/fhir/sid/condition", "value": "cond-1"}},
		"clinicalStatus": map[string]any{"coding": []any{map[string]any{
			"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}}},
		"verificationStatus": map[string]any{"coding": []any{map[string]any{
			"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}}},
		"code": map[string]any{"coding": []any{map[string]any{
			"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertensive disorder"}}},
		"subject":       map[string]any{"reference": subject},
		"onsetDateTime": "2019-05-01"}
}

func fxMedStatement(subject string) map[string]any {
	return map[string]any{"resourceType": "MedicationStatement", "status": "active",
		"medicationCodeableConcept": map[string]any{"text": "Sertraline 50 mg tablet"},
		"subject":                   map[string]any{"reference": subject},
		"effectiveDateTime":         "2025-12-01"}
}

func fxAllergy(patient string) map[string]any {
	return map[string]any{"resourceType": "AllergyIntolerance",
		"clinicalStatus": map[string]any{"coding": []any{map[string]any{
			"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}}},
		"verificationStatus": map[string]any{"coding": []any{map[string]any{
			"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}}},
		"code":    map[string]any{"text": "Penicillin"},
		"patient": map[string]any{"reference": patient}}
}

func fxHeartRate(subject string, bpm int) map[string]any {
	return map[string]any{"resourceType": "Observation", "status": "final",
		"identifier": []any{map[string]any{"system": "http://ehr.example.org/fhir/sid/obs", "value": "hr-1"}},
		"category": []any{map[string]any{"coding": []any{map[string]any{
			"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}}}},
		"code": map[string]any{"coding": []any{map[string]any{
			"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}}},
		"subject":           map[string]any{"reference": subject},
		"effectiveDateTime": "2026-01-10T10:00:00Z",
		"valueQuantity": map[string]any{"value": bpm, "unit": "beats/minute",
			"system": "http://unitsofmeasure.org", "code": "/min"}}
}

func fxBundle(typ string, entries ...map[string]any) []byte {
	doc := map[string]any{"resourceType": "Bundle", "type": typ, "entry": entries}
	b, _ := json.Marshal(doc)
	return b
}

func fxEntry(fullURL, method, u string, res map[string]any) map[string]any {
	e := map[string]any{"resource": res, "request": map[string]any{"method": method, "url": u}}
	if fullURL != "" {
		e["fullUrl"] = fullURL
	}
	return e
}

func fxJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func TestFHIRInboundBolt(t *testing.T)  { testFHIRInbound(t, openBolt(t)) }
func TestFHIRInboundRedis(t *testing.T) { testFHIRInbound(t, fxRedis(t)) }

func testFHIRInbound(t *testing.T, store kap.Store) {
	srv := fxServer(t, store)
	base := srv.URL + "/fhir/r4"
	pURN := "urn:uuid:6f1b7e2c-0d7a-4a38-9d53-1c1d2e3f4a5b"
	tx := fxBundle("transaction",
		fxEntry(pURN, "POST", "Patient", fxPatient("c900")),
		fxEntry("", "POST", "Condition", fxCondition(pURN)),
		fxEntry("", "POST", "MedicationStatement", fxMedStatement(pURN)),
		fxEntry("", "POST", "AllergyIntolerance", fxAllergy(pURN)),
	)
	r := fxDo(t, "POST", base, "key-a", tx)
	if r.status != http.StatusOK {
		t.Fatalf("transaction: %d %s", r.status, r.body)
	}
	fxCodecParses(t, r.body)
	resp := r.json(t)
	if resp["type"] != "transaction-response" {
		t.Fatalf("type %v", resp["type"])
	}
	var locs []string
	for i, e := range fxList(resp["entry"]) {
		rr := e["response"].(map[string]any)
		if rr["status"] != "201 Created" {
			t.Errorf("entry %d: %v", i, rr)
		}
		locs = append(locs, rr["location"].(string))
	}
	if len(locs) != 4 || !strings.HasPrefix(locs[0], "Patient/") {
		t.Fatalf("locations %v", locs)
	}
	pid := strings.Split(locs[0], "/")[1]

	t.Run("stored and readable", func(t *testing.T) {
		for _, loc := range locs {
			r := fxDo(t, "GET", base+"/"+loc, "key-a", nil)
			if r.status != http.StatusOK {
				t.Fatalf("%s: %d %s", loc, r.status, r.body)
			}
			fxCodecParses(t, r.body)
			res := r.json(t)
			for _, f := range []string{"subject", "patient"} {
				if ref, ok := res[f].(map[string]any); ok && ref["reference"] != "Patient/"+pid {
					t.Errorf("%s.%s = %v, want Patient/%s", loc, f, ref["reference"], pid)
				}
			}
			if r := fxDo(t, "GET", base+"/"+loc, "key-b", nil); r.status != http.StatusNotFound {
				t.Errorf("%s from another tenant: %d", loc, r.status)
			}
		}
		got, _ := fxSearchAll(t, base+"/Condition?patient=Patient/"+pid+"&code=http://snomed.info/sct|38341003", "key-a")
		if len(got) != 1 {
			t.Errorf("condition search: %v", got)
		}
		got, _ = fxSearchAll(t, base+"/Patient?identifier="+url.QueryEscape(fxMRN+"|c900"), "key-a")
		if len(got) != 1 || got[0] != pid {
			t.Errorf("patient by identifier: %v", got)
		}
		// Resending the transaction changes nothing for the resources with
		// an identifier (the Patient, the Condition); the others are
		// created again (FHIR create semantics: nothing identifies them).
		r := fxDo(t, "POST", base, "key-a", tx)
		for i, e := range fxList(r.json(t)["entry"]) {
			rr := e["response"].(map[string]any)
			same := rr["status"] == "200 OK" && rr["location"] == locs[i]
			if same != (i < 2) {
				t.Errorf("resend entry %d: %v (was %s)", i, rr, locs[i])
			}
		}
	})

	t.Run("transaction is all or nothing", func(t *testing.T) {
		bad := fxBundle("transaction",
			fxEntry("urn:uuid:0b9f0f54-2a55-4a0e-8f62-7d1b7b5e8a10", "POST", "Patient", fxPatient("c901")),
			fxEntry("", "POST", "Observation", fxHeartRate("Patient?identifier="+fxMRN+"|nobody", 70)),
		)
		r := fxDo(t, "POST", base, "key-a", bad)
		if r.status != http.StatusUnprocessableEntity {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		fxOutcome(t, r, "Bundle.entry[1].resource.subject.reference")
		got, _ := fxSearchAll(t, base+"/Patient?identifier="+url.QueryEscape(fxMRN+"|c901"), "key-a")
		if len(got) != 0 {
			t.Errorf("the failed transaction stored its Patient: %v", got)
		}
		invalid := fxHeartRate(pURN, 70)
		delete(invalid, "status")
		r = fxDo(t, "POST", base, "key-a", fxBundle("transaction", fxEntry("", "POST", "Observation", invalid)))
		if r.status != http.StatusUnprocessableEntity {
			t.Fatalf("invalid resource: %d %s", r.status, r.body)
		}
		if d := fxOutcome(t, r, ""); d == "" || !strings.Contains(string(r.body), "Bundle.entry[0]") {
			t.Errorf("no entry path: %s", r.body)
		}
	})

	t.Run("batch answers per entry", func(t *testing.T) {
		bad := fxHeartRate("Patient/"+pid, 70)
		bad["status"] = "bogus"
		r := fxDo(t, "POST", base, "key-a", fxBundle("batch",
			fxEntry("", "POST", "MedicationStatement", fxMedStatement("Patient?identifier="+fxMRN+"|c900")),
			fxEntry("", "POST", "Observation", bad),
			fxEntry("", "POST", "Observation", fxHeartRate("Patient/no-such-patient", 70)),
			fxEntry("", "DELETE", "Observation/x", fxHeartRate("Patient/"+pid, 70)),
		))
		if r.status != http.StatusOK {
			t.Fatalf("batch: %d %s", r.status, r.body)
		}
		fxCodecParses(t, r.body)
		es := fxList(r.json(t)["entry"])
		if len(es) != 4 {
			t.Fatalf("%d entries", len(es))
		}
		// The conditional reference by MRN now points at the EHR's Patient.
		loc := es[0]["response"].(map[string]any)["location"].(string)
		ms := fxDo(t, "GET", base+"/"+loc, "key-a", nil).json(t)
		if ref := ms["subject"].(map[string]any)["reference"]; ref != "Patient/"+pid {
			t.Errorf("stored subject %v, want Patient/%s", ref, pid)
		}
		want := []string{"201", "4", "422", "400"}
		for i, e := range es {
			rr := e["response"].(map[string]any)
			if st := rr["status"].(string); !strings.HasPrefix(st, want[i]) {
				t.Errorf("entry %d: status %s, want %s", i, st, want[i])
			}
			if i > 0 {
				oo, _ := rr["outcome"].(map[string]any)
				if oo == nil || !strings.Contains(string(fxJSON(oo)), "expression") {
					t.Errorf("entry %d: no outcome with an expression: %v", i, rr)
				}
			}
		}
	})

	t.Run("create and update", func(t *testing.T) {
		r := fxDo(t, "POST", base+"/Observation", "key-a", fxJSON(fxHeartRate("Patient/"+pid, 72)))
		if r.status != http.StatusCreated {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		loc := r.header.Get("Location")
		if !strings.HasPrefix(loc, base+"/Observation/") || !strings.HasSuffix(loc, "/_history/1") {
			t.Fatalf("Location %q", loc)
		}
		id := r.json(t)["id"].(string)
		if g := fxDo(t, "GET", loc, "key-a", nil); g.status != http.StatusOK {
			t.Fatalf("GET Location: %d", g.status)
		}
		// The same identifier again: the same resource, a new version.
		r = fxDo(t, "POST", base+"/Observation", "key-a", fxJSON(fxHeartRate("Patient/"+pid, 75)))
		if r.status != http.StatusOK || r.json(t)["id"] != id || r.json(t)["meta"].(map[string]any)["versionId"] != "2" {
			t.Fatalf("create again: %d %s", r.status, r.body)
		}
		// Update by id.
		upd := fxHeartRate("Patient/"+pid, 80)
		upd["id"] = id
		r = fxDo(t, "PUT", base+"/Observation/"+id, "key-a", fxJSON(upd), "If-Match", `W/"2"`)
		if r.status != http.StatusOK || r.json(t)["meta"].(map[string]any)["versionId"] != "3" {
			t.Fatalf("update: %d %s", r.status, r.body)
		}
		r = fxDo(t, "PUT", base+"/Observation/"+id, "key-a", fxJSON(upd), "If-Match", `W/"2"`)
		if r.status != http.StatusPreconditionFailed {
			t.Errorf("stale If-Match: %d %s", r.status, r.body)
		}
		v1 := fxDo(t, "GET", base+"/Observation/"+id+"/_history/1", "key-a", nil).json(t)
		if v1["valueQuantity"].(map[string]any)["value"].(float64) != 72 {
			t.Errorf("version 1 changed: %v", v1["valueQuantity"])
		}
		// Update creating a new id.
		upd["id"] = "ehr-obs-77"
		if r := fxDo(t, "PUT", base+"/Observation/ehr-obs-77", "key-a", fxJSON(upd)); r.status != http.StatusCreated {
			t.Errorf("update as create: %d %s", r.status, r.body)
		}
	})

	t.Run("concurrent creates of one identifier", func(t *testing.T) {
		obs := fxHeartRate("Patient/"+pid, 66)
		obs["identifier"] = []any{map[string]any{"system": "http://ehr.example.org/fhir/sid/obs", "value": "hr-concurrent"}}
		body := fxJSON(obs)
		const n = 6
		type res struct {
			status int
			id     string
		}
		out := make(chan res, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := fxDo(t, "POST", base+"/Observation", "key-a", body)
				var m map[string]any
				json.Unmarshal(r.body, &m)
				id, _ := m["id"].(string)
				out <- res{r.status, id}
			}()
		}
		wg.Wait()
		close(out)
		created, ids := 0, map[string]bool{}
		for r := range out {
			if r.status == http.StatusCreated {
				created++
			} else if r.status != http.StatusOK {
				t.Errorf("status %d", r.status)
			}
			ids[r.id] = true
		}
		if created != 1 || len(ids) != 1 {
			t.Errorf("%d created, ids %v", created, ids)
		}
	})

	t.Run("errors", func(t *testing.T) {
		cases := []struct {
			method, path string
			body         []byte
			status       int
			expr         string
		}{
			{"POST", "/Observation", fxJSON(fxHeartRate("Patient/unknown-id", 70)), 422, "Observation.subject.reference"},
			{"POST", "/Observation", fxJSON(fxHeartRate("Patient?identifier="+fxMRN+"|nobody", 70)), 422, "Observation.subject.reference"},
			{"POST", "/Patient", fxJSON(map[string]any{"resourceType": "Patient", "gender": "male"}), 422, "Patient.identifier"},
			{"POST", "/Condition", fxJSON(fxPatient("c902")), 400, "resourceType"},
			{"POST", "/Observation", []byte(`{"resourceType":"Observation","status":"final"`), 400, ""},
			{"POST", "/Observation", fxJSON(map[string]any{"resourceType": "Observation", "status": "final",
				"code": map[string]any{"text": "x"}, "subject": map[string]any{"reference": "Patient/" + pid}, "valueQuantity": "high"}), 0, ""},
			{"PUT", "/Observation/abc", fxJSON(fxHeartRate("Patient/"+pid, 70)), 400, "Observation.id"},
			{"POST", "/Encounter", fxJSON(map[string]any{"resourceType": "Encounter"}), 405, ""},
			{"POST", "", fxJSON(fxPatient("c903")), 400, "Bundle.type"},
		}
		for _, tc := range cases {
			r := fxDo(t, tc.method, base+tc.path, "key-a", tc.body)
			if tc.status == 0 {
				if r.status != 400 && r.status != 422 {
					t.Errorf("%s %s: %d %s", tc.method, tc.path, r.status, r.body)
				}
				fxOutcome(t, r, "")
				continue
			}
			if r.status != tc.status {
				t.Errorf("%s %s: %d, want %d: %s", tc.method, tc.path, r.status, tc.status, r.body)
				continue
			}
			fxOutcome(t, r, tc.expr)
		}
		// Another tenant cannot attach data to this tenant's patient.
		r := fxDo(t, "POST", base+"/Observation", "key-b", fxJSON(fxHeartRate("Patient/"+pid, 70)))
		if r.status != http.StatusUnprocessableEntity {
			t.Errorf("other tenant's patient: %d %s", r.status, r.body)
		}
		// XML is refused.
		req := fxDo(t, "POST", base+"/Observation?_format=xml", "key-a", fxJSON(fxHeartRate("Patient/"+pid, 70)))
		if req.status != http.StatusUnsupportedMediaType {
			t.Errorf("_format=xml: %d", req.status)
		}
	})

	t.Run("the gateway's own resources are not writable here", func(t *testing.T) {
		data, err := os.ReadFile("../../testdata/kap/10-client-c001.json")
		if err != nil {
			t.Fatal(err)
		}
		r := fxDo(t, "POST", srv.URL+"/kap/v1/clients", "key-a", data)
		var env struct{ Bundle map[string]any }
		json.Unmarshal(r.body, &env)
		var own string
		for id := range fxEntries([]map[string]any{env.Bundle}, "Patient") {
			own = id
		}
		p := fxPatient("c001")
		p["id"] = own
		r = fxDo(t, "PUT", base+"/Patient/"+own, "key-a", fxJSON(p))
		if r.status != http.StatusConflict {
			t.Fatalf("PUT onto the gateway's Patient: %d %s", r.status, r.body)
		}
		fxOutcome(t, r, "Patient.id")
		// The clinic's client is known: EHR data can attach to it.
		cond := fxCondition("Patient/" + own)
		cond["identifier"] = []any{map[string]any{"system": "http://ehr.example.org/fhir/sid/condition", "value": "cond-2"}}
		r = fxDo(t, "POST", base+"/Condition", "key-a", fxJSON(cond))
		if r.status != http.StatusCreated {
			t.Fatalf("condition for the clinic's patient: %d %s", r.status, r.body)
		}
		got, _ := fxSearchAll(t, base+"/Condition?patient="+own, "key-a")
		if len(got) != 1 {
			t.Errorf("search: %v", got)
		}
		// A conditional reference in the clinic's own system points at the
		// clinic's Patient once stored.
		r = fxDo(t, "POST", base+"/MedicationStatement", "key-a",
			fxJSON(fxMedStatement("Patient?identifier=https://fhir.kapbridge.org/sid/clinic-a/Patient|c001")))
		if r.status != http.StatusCreated {
			t.Fatalf("by the clinic's identifier: %d %s", r.status, r.body)
		}
		if ref := r.json(t)["subject"].(map[string]any)["reference"]; ref != "Patient/"+own {
			t.Errorf("subject %v, want Patient/%s", ref, own)
		}
		// The same identifier for another patient is refused, not moved.
		cond["subject"] = map[string]any{"reference": "Patient/" + pid}
		if r := fxDo(t, "POST", base+"/Condition", "key-a", fxJSON(cond)); r.status != http.StatusConflict {
			t.Errorf("moving a Condition to another patient: %d %s", r.status, r.body)
		}
	})
}

// TestFHIRNoPHIInLogs: the facade's routes, on success and on every error
// path, log no name, birth date, identifier or key.
func TestFHIRNoPHIInLogs(t *testing.T) {
	var logs bytes.Buffer
	srv := fxServerLog(t, openBolt(t), &logs)
	base := srv.URL + "/fhir/r4"
	pURN := "urn:uuid:6f1b7e2c-0d7a-4a38-9d53-1c1d2e3f4a5b"
	r := fxDo(t, "POST", base, "key-a", fxBundle("transaction",
		fxEntry(pURN, "POST", "Patient", fxPatient("mrn-778899")),
		fxEntry("", "POST", "Condition", fxCondition(pURN))))
	if r.status != http.StatusOK {
		t.Fatalf("transaction: %d %s", r.status, r.body)
	}
	pid := strings.Split(fxList(r.json(t)["entry"])[0]["response"].(map[string]any)["location"].(string), "/")[1]
	for _, u := range []string{
		"/Patient/" + pid, "/Patient/" + pid + "/_history/1", "/Patient/" + pid + "/_history",
		"/Condition?patient=" + pid + "&_include=Condition:patient",
		"/Patient?identifier=" + url.QueryEscape(fxMRN+"|mrn-778899"),
		"/Condition?code=38341003",                      // too costly
		"/Condition?patient=" + pid + "&name=Ehrperson", // unknown parameter
		"/Patient/" + pid + "?_format=xml",
	} {
		fxDo(t, "GET", base+u, "key-a", nil)
	}
	fxDo(t, "GET", base+"/Patient/"+pid, "key-wrong", nil)
	fxDo(t, "POST", base+"/Observation", "key-a", fxJSON(fxHeartRate("Patient?identifier="+fxMRN+"|mrn-000111", 70)))
	bad := fxPatient("mrn-778899")
	bad["birthDate"] = "1980-04-31"
	fxDo(t, "POST", base+"/Patient", "key-a", fxJSON(bad))
	fxDo(t, "POST", base+"/Patient", "key-a", []byte(`{"resourceType":"Patient","name":[{"family":"Ehrperson"`))
	if logs.Len() == 0 {
		t.Fatal("nothing was logged")
	}
	for _, phi := range []string{"Ehrperson", "Quinn", "1980-04", "mrn-778899", "mrn-000111", "key-a", "key-wrong", "38341003"} {
		if bytes.Contains(logs.Bytes(), []byte(phi)) {
			t.Errorf("the log holds %q", phi)
		}
	}
}
