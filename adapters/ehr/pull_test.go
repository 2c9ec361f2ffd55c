package ehr_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/ehr"
	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
)

const mrnSystem = "https://ehr.example.org/mrn"

// seeder writes resources to the EHR over its FHIR API, as the EHR's own
// users would have.
type seeder struct {
	t    testing.TB
	base string
}

func (s seeder) do(method, path string, res map[string]any) map[string]any {
	s.t.Helper()
	body, _ := json.Marshal(res)
	req, _ := http.NewRequest(method, s.base+"/"+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/fhir+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode > 299 {
		s.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out)
	}
	var m map[string]any
	json.Unmarshal(out, &m)
	return m
}

func (s seeder) create(res map[string]any) string {
	return s.do(http.MethodPost, res["resourceType"].(string), res)["id"].(string)
}

func (s seeder) patient(mrn string) string {
	return s.create(map[string]any{"resourceType": "Patient",
		"identifier": []any{map[string]any{"system": mrnSystem, "value": mrn}},
		"name":       []any{map[string]any{"family": "Testperson-" + mrn, "given": []any{"Quinn"}}}, "birthDate": "1984-03-09"})
}

func cc(system, code, display string) map[string]any {
	return map[string]any{"coding": []any{map[string]any{"system": system, "code": code, "display": display}}, "text": display}
}

func ref(s string) map[string]any { return map[string]any{"reference": s} }

func (s seeder) medStatement(pid, status string, med map[string]any) {
	s.create(map[string]any{"resourceType": "MedicationStatement", "status": status, "subject": ref("Patient/" + pid),
		"medicationCodeableConcept": med})
}

func (s seeder) condition(pid, clinical string, code map[string]any) {
	s.create(map[string]any{"resourceType": "Condition", "subject": ref("Patient/" + pid), "code": code,
		"clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical, clinical)})
}

func (s seeder) bp(pid string, at time.Time, sys, dia float64) {
	comp := func(code string, v float64) map[string]any {
		return map[string]any{"code": cc(fhir.SystemLOINC, code, ""), "valueQuantity": map[string]any{"value": v, "unit": "mmHg",
			"system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
	}
	s.create(map[string]any{"resourceType": "Observation", "status": "final",
		"category":          []any{cc("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs", "Vital Signs")},
		"code":              cc(fhir.SystemLOINC, "85354-9", "Blood pressure panel"),
		"subject":           ref("Patient/" + pid),
		"effectiveDateTime": at.UTC().Format(time.RFC3339),
		"component":         []any{comp("8480-6", sys), comp("8462-4", dia)}})
}

func newPuller(t testing.TB, opts ehr.PullOptions) *ehr.Puller {
	t.Helper()
	if opts.Codec == nil {
		opts.Codec = fhir.MustCodec()
	}
	p, err := ehr.NewPuller(opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func boltCache(t testing.TB) kap.Cache {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Cache()
}

func flagSet(fs []ehr.ScreeningFlag) map[string]bool {
	m := map[string]bool{}
	for _, f := range fs {
		m[f.Item+"/"+f.Source] = true
	}
	return m
}

func TestPullScreening(t *testing.T) {
	base := startEHR(t)
	s := seeder{t, base}
	now := time.Now().UTC()
	pid := s.patient("MRN-A1")
	other := s.patient("MRN-B2")

	// Medications: a benzodiazepine taken, one stopped, an SSRI, and an
	// MAOI ordered through a Medication resource.
	s.medStatement(pid, "active", cc(fhir.SystemRxNorm, "197900", "lorazepam 1 MG Oral Tablet"))
	s.medStatement(pid, "stopped", cc(fhir.SystemRxNorm, "308047", "alprazolam 0.25 MG Oral Tablet"))
	medID := s.create(map[string]any{"resourceType": "Medication", "code": cc(fhir.SystemRxNorm, "315213", "phenelzine 15 MG Oral Tablet")})
	s.create(map[string]any{"resourceType": "MedicationRequest", "status": "active", "intent": "order",
		"subject": ref("Patient/" + pid), "medicationReference": ref("Medication/" + medID)})
	s.create(map[string]any{"resourceType": "MedicationRequest", "status": "active", "intent": "order",
		"subject": ref("Patient/" + pid), "medicationCodeableConcept": cc(fhir.SystemRxNorm, "312938", "sertraline 50 MG Oral Tablet")})
	// Conditions: schizophrenia (current), bipolar (resolved), hypertension.
	s.condition(pid, "active", cc(fhir.SystemSNOMED, "58214004", "Schizophrenia"))
	s.condition(pid, "resolved", cc(fhir.SystemICD10CM, "F31.9", "Bipolar disorder, unspecified"))
	s.condition(pid, "active", cc(fhir.SystemICD10CM, "I10", "Essential (primary) hypertension"))
	s.create(map[string]any{"resourceType": "AllergyIntolerance", "patient": ref("Patient/" + pid),
		"clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", "Active"),
		"code":           map[string]any{"text": "Ketamine"}, "criticality": "high"})
	// Blood pressure: a severe reading two years ago (outside the window),
	// 23 normal readings this year, then an elevated latest one.
	s.bp(pid, now.AddDate(-2, 0, 0), 190, 120)
	for i := range 23 {
		s.bp(pid, now.AddDate(0, 0, -200+i), 128, 82)
	}
	s.bp(pid, now.AddDate(0, 0, -3), 152, 94)
	// Another patient's benzodiazepine and psychosis must not appear.
	s.medStatement(other, "active", cc(fhir.SystemRxNorm, "197527", "clonazepam 0.5 MG Oral Tablet"))
	s.condition(other, "active", cc(fhir.SystemICD10CM, "F29", "Unspecified psychosis"))

	var logs bytes.Buffer
	p := newPuller(t, ehr.PullOptions{Cache: boltCache(t), Tenant: "clinic-a", Target: "ehr", PageSize: 10,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	sc, err := p.Pull(context.Background(), &http.Client{Timeout: 30 * time.Second}, base, mrnSystem+"|MRN-A1")
	if err != nil {
		t.Fatal(err)
	}
	if sc.PatientID != pid || sc.XrefCached || !sc.Complete() {
		t.Fatalf("patient %s cached %v incomplete %v", sc.PatientID, sc.XrefCached, sc.Incomplete)
	}
	want := []string{"benzodiazepine/medication", "maoi/medication", "psychosis/condition",
		"uncontrolled-hypertension/condition", "ketamine-hypersensitivity/allergy", "uncontrolled-hypertension/blood-pressure"}
	got := flagSet(sc.Flags)
	for _, w := range want {
		if !got[w] {
			t.Errorf("missing flag %s", w)
		}
	}
	if len(sc.Flags) != len(want) {
		t.Errorf("flags %+v, want exactly %v", sc.Flags, want)
	}
	for _, f := range sc.Flags {
		switch f.Item {
		case kap.ClassBenzodiazepine:
			if !strings.Contains(f.Detail, "lorazepam") {
				t.Errorf("benzodiazepine flag %q", f.Detail)
			}
		case kap.ClassMAOI:
			if !strings.Contains(f.Detail, "phenelzine") {
				t.Errorf("MAOI flag %q (the Medication reference was not resolved)", f.Detail)
			}
		}
		if f.Source == "blood-pressure" && !strings.Contains(f.Detail, "152/94") {
			t.Errorf("blood-pressure flag %q, want the latest reading", f.Detail)
		}
	}
	if n := len(sc.Facts.BloodPressures); n != 24 {
		t.Errorf("%d blood pressures read, want 24 (3 pages of 10, the old one left out)", n)
	}
	if sc.Read["MedicationStatement"] != 2 || sc.Read["MedicationRequest"] != 2 || sc.Read["Medication"] != 1 ||
		sc.Read["Condition"] != 3 || sc.Read["AllergyIntolerance"] != 1 || sc.Read["Observation"] != 24 {
		t.Errorf("read %v", sc.Read)
	}
	for _, phi := range []string{"MRN-A1", pid, "lorazepam", "Testperson", "1984-03-09"} {
		if strings.Contains(logs.String(), phi) {
			t.Errorf("the log holds %q: %s", phi, logs.String())
		}
	}

	// Second pull: the cross-reference comes from the cache (re-checked).
	sc2, err := p.Pull(context.Background(), http.DefaultClient, base, mrnSystem+"|MRN-A1")
	if err != nil || !sc2.XrefCached || sc2.PatientID != pid || len(sc2.Flags) != len(sc.Flags) {
		t.Fatalf("cached pull: %v cached=%v", err, sc2 != nil && sc2.XrefCached)
	}
	// The EHR re-keys the patient: the cached id no longer carries the
	// identifier, so it is dropped and the search finds no one.
	s.do(http.MethodPut, "Patient/"+pid, map[string]any{"resourceType": "Patient", "id": pid,
		"identifier": []any{map[string]any{"system": mrnSystem, "value": "MRN-A1-NEW"}}})
	if _, err := p.Pull(context.Background(), http.DefaultClient, base, mrnSystem+"|MRN-A1"); kap.ErrorCode(err) != kap.ENOTFOUND {
		t.Fatalf("re-keyed patient: err = %v, want not_found", err)
	}
	if sc3, err := p.Pull(context.Background(), http.DefaultClient, base, mrnSystem+"|MRN-A1-NEW"); err != nil || sc3.PatientID != pid {
		t.Fatalf("new identifier: %v", err)
	}
}

func TestPullPatientResolution(t *testing.T) {
	base := startEHR(t)
	s := seeder{t, base}
	s.patient("DUP-1")
	s.patient("DUP-1")
	p := newPuller(t, ehr.PullOptions{})
	ctx := context.Background()
	_, err := p.Pull(ctx, http.DefaultClient, base, mrnSystem+"|DUP-1")
	if kap.ErrorCode(err) != kap.ECONFLICT {
		t.Fatalf("duplicate: err = %v, want conflict", err)
	}
	_, err = p.Pull(ctx, http.DefaultClient, base, mrnSystem+"|NOBODY-9")
	if kap.ErrorCode(err) != kap.ENOTFOUND || strings.Contains(err.Error(), "NOBODY") {
		t.Fatalf("unknown: err = %v, want not_found without the identifier", err)
	}
	for _, bad := range []string{"", "MRN-1", "|MRN-1", mrnSystem + "|", "a|b|c"} {
		if _, err := p.Pull(ctx, http.DefaultClient, base, bad); kap.ErrorCode(err) != kap.EINVALID {
			t.Errorf("identifier %q: err = %v", bad, err)
		}
	}
	if _, err := p.Pull(ctx, http.DefaultClient, "ftp://x/fhir", mrnSystem+"|X"); kap.ErrorCode(err) != kap.EINVALID {
		t.Errorf("bad base: err = %v", err)
	}
}

// Paging is bounded; a search cut short makes the screening incomplete.
func TestPullPageBound(t *testing.T) {
	base := startEHR(t)
	s := seeder{t, base}
	pid := s.patient("MRN-P3")
	for i := range 12 {
		s.bp(pid, time.Now().AddDate(0, 0, -i-1), 120, 80)
	}
	p := newPuller(t, ehr.PullOptions{PageSize: 5, MaxPages: 2})
	sc, err := p.Pull(context.Background(), http.DefaultClient, base, mrnSystem+"|MRN-P3")
	if err != nil {
		t.Fatal(err)
	}
	if sc.Complete() || len(sc.Facts.BloodPressures) != 10 || !strings.Contains(strings.Join(sc.Incomplete, ";"), "Observation search: stopped after 2 pages") {
		t.Fatalf("incomplete %v, %d readings", sc.Incomplete, len(sc.Facts.BloodPressures))
	}
}

// Fault injection in front of the real server: a proxy that misbehaves as
// some EHRs do.
func TestPullFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("the Medplum FHIR test server is skipped under -short")
	}
	srv := ehrtest.Start(t, ehrtest.Options{})
	base := srv.URL
	s := seeder{t, base}
	pid := s.patient("MRN-F4")
	s.patient("MRN-G5")
	other := s.patient("MRN-H6")
	s.medStatement(pid, "active", cc(fhir.SystemRxNorm, "197900", "lorazepam 1 MG Oral Tablet"))
	s.medStatement(other, "active", cc(fhir.SystemRxNorm, "197527", "clonazepam 0.5 MG Oral Tablet"))
	upstream, _ := url.Parse(base)

	proxy := func(t *testing.T, rewrite func(w http.ResponseWriter, r *http.Request) bool) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if rewrite(w, r) {
				return
			}
			u := *upstream
			u.Path = strings.Replace(r.URL.Path, "/fhir", upstream.Path, 1)
			u.RawQuery = r.URL.RawQuery
			resp, err := http.Get(u.String())
			if err != nil {
				w.WriteHeader(502)
				return
			}
			defer resp.Body.Close()
			w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
			w.WriteHeader(resp.StatusCode)
			io.Copy(w, resp.Body)
		}))
		t.Cleanup(srv.Close)
		return srv.URL + "/fhir"
	}
	ctx := context.Background()
	p := newPuller(t, ehr.PullOptions{})

	t.Run("server ignores the identifier parameter", func(t *testing.T) {
		b := proxy(t, func(w http.ResponseWriter, r *http.Request) bool {
			if strings.HasSuffix(r.URL.Path, "/Patient") {
				q := r.URL.Query()
				q.Del("identifier")
				r.URL.RawQuery = q.Encode()
			}
			return false
		})
		sc, err := p.Pull(ctx, http.DefaultClient, b, mrnSystem+"|MRN-F4")
		if err != nil || sc.PatientID != pid {
			t.Fatalf("err = %v: the patient carrying the identifier must be picked out", err)
		}
		if _, err := p.Pull(ctx, http.DefaultClient, b, mrnSystem+"|MRN-NONE"); kap.ErrorCode(err) != kap.EUNAVAILABLE {
			t.Fatalf("err = %v, want unavailable (answer does not honour the search)", err)
		}
	})
	t.Run("server ignores the patient parameter", func(t *testing.T) {
		b := proxy(t, func(w http.ResponseWriter, r *http.Request) bool {
			if strings.HasSuffix(r.URL.Path, "/MedicationStatement") {
				q := r.URL.Query()
				q.Del("patient")
				r.URL.RawQuery = q.Encode()
			}
			return false
		})
		sc, err := p.Pull(ctx, http.DefaultClient, b, mrnSystem+"|MRN-F4")
		if err != nil {
			t.Fatal(err)
		}
		if len(sc.Flags) != 1 || !strings.Contains(sc.Flags[0].Detail, "lorazepam") || sc.Complete() {
			t.Fatalf("flags %+v incomplete %v: another patient's clonazepam must be set aside, visibly", sc.Flags, sc.Incomplete)
		}
	})
	t.Run("one search fails", func(t *testing.T) {
		b := proxy(t, func(w http.ResponseWriter, r *http.Request) bool {
			if strings.HasSuffix(r.URL.Path, "/Condition") {
				w.WriteHeader(http.StatusInternalServerError)
				return true
			}
			return false
		})
		sc, err := p.Pull(ctx, http.DefaultClient, b, mrnSystem+"|MRN-F4")
		if kap.ErrorCode(err) != kap.EUNAVAILABLE || sc == nil || sc.Complete() || len(sc.Flags) != 1 {
			t.Fatalf("err = %v, screening %+v", err, sc)
		}
		if !strings.Contains(strings.Join(sc.Incomplete, ";"), "Condition search failed") || strings.Contains(err.Error(), "MRN") {
			t.Fatalf("incomplete %v, err %v", sc.Incomplete, err)
		}
	})
	t.Run("429 then recovered", func(t *testing.T) {
		srv.Fail429(1, time.Second)
		defer srv.ClearFaults()
		if _, err := p.Pull(ctx, http.DefaultClient, base, mrnSystem+"|MRN-F4"); err != nil {
			t.Fatalf("err = %v after one 429 with Retry-After: 1", err)
		}
		if n := srv.Stats().Requests["GET 429"]; n != 1 {
			t.Fatalf("%d answers 429, want 1", n)
		}
	})
	t.Run("EHR unavailable", func(t *testing.T) {
		srv.Fail503(100, 0, 30*time.Second)
		defer srv.ClearFaults()
		_, err := p.Pull(ctx, http.DefaultClient, base, mrnSystem+"|MRN-F4")
		if kap.ErrorCode(err) != kap.EUNAVAILABLE || strings.Contains(err.Error(), "MRN") || strings.Contains(err.Error(), "http://") {
			t.Fatalf("err = %v, want unavailable naming no identifier or URL", err)
		}
	})
	t.Run("token revoked: refreshed once", func(t *testing.T) {
		var mu sync.Mutex
		valid := map[string]bool{}
		var issued, refused atomic.Int32
		b := proxy(t, func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path == "/token" {
				if id, secret, ok := r.BasicAuth(); !ok || id != "kap" || secret != "pw" {
					w.WriteHeader(http.StatusUnauthorized)
					return true
				}
				tok := fmt.Sprintf("tok-%d", issued.Add(1))
				mu.Lock()
				valid = map[string]bool{tok: true} // a new token revokes the old
				mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, tok)
				return true
			}
			tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			mu.Lock()
			ok := valid[tok]
			mu.Unlock()
			if !ok {
				refused.Add(1)
				w.WriteHeader(http.StatusUnauthorized)
				return true
			}
			return false
		})
		tokenURL := strings.TrimSuffix(b, "/fhir") + "/token"
		rt, err := targetauth.New(config.TargetAuth{Type: "basic", TokenURL: tokenURL, ClientID: "kap", SecretEnv: "PW"},
			targetauth.Options{Target: "ehr", Getenv: func(string) string { return "pw" }, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		client := &http.Client{Transport: rt}
		if _, err := p.Pull(ctx, client, b, mrnSystem+"|MRN-F4"); err != nil || issued.Load() != 1 {
			t.Fatalf("err = %v, %d tokens", err, issued.Load())
		}
		mu.Lock()
		valid = map[string]bool{} // the EHR forgets its tokens
		mu.Unlock()
		sc, err := p.Pull(ctx, client, b, mrnSystem+"|MRN-F4")
		if err != nil || !sc.Complete() || issued.Load() != 2 || refused.Load() != 1 {
			t.Fatalf("err = %v, %d tokens, %d refused; want one refresh after one 401", err, issued.Load(), refused.Load())
		}
	})
	t.Run("next link to another host", func(t *testing.T) {
		b := proxy(t, func(w http.ResponseWriter, r *http.Request) bool {
			if strings.HasSuffix(r.URL.Path, "/AllergyIntolerance") {
				w.Header().Set("Content-Type", "application/fhir+json")
				fmt.Fprint(w, `{"resourceType":"Bundle","type":"searchset","link":[{"relation":"next","url":"https://elsewhere.example/fhir/AllergyIntolerance?page=2"}]}`)
				return true
			}
			return false
		})
		sc, err := p.Pull(ctx, http.DefaultClient, b, mrnSystem+"|MRN-F4")
		if err != nil || !strings.Contains(strings.Join(sc.Incomplete, ";"), "another host") {
			t.Fatalf("err = %v incomplete %v", err, sc.Incomplete)
		}
	})
}

// BenchmarkPull is one screening pull of a patient with 8 medications, 6
// conditions, 2 allergies and 40 blood pressures (3 pages of 20 for the
// Observations), with the cross-reference cached and re-checked.
func BenchmarkPull(b *testing.B) {
	base := startEHR(b)
	s := seeder{b, base}
	pid := s.patient("MRN-BENCH")
	for i := range 8 {
		s.medStatement(pid, "active", cc(fhir.SystemRxNorm, "197900", fmt.Sprintf("lorazepam %d MG Oral Tablet", i+1)))
	}
	for i := range 6 {
		s.condition(pid, "active", cc(fhir.SystemICD10CM, []string{"F29", "I10", "F33.1", "F41.1", "G89.29", "F43.12"}[i], "condition"))
	}
	for range 2 {
		s.create(map[string]any{"resourceType": "AllergyIntolerance", "patient": ref("Patient/" + pid), "code": map[string]any{"text": "Penicillin"},
			"clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", "Active")})
	}
	for i := range 40 {
		s.bp(pid, time.Now().AddDate(0, 0, -i-1), 120+float64(i%30), 80)
	}
	p := newPuller(b, ehr.PullOptions{Cache: boltCache(b), Tenant: "bench", Target: "ehr", PageSize: 20,
		Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	for b.Loop() {
		sc, err := p.Pull(ctx, http.DefaultClient, base, mrnSystem+"|MRN-BENCH")
		if err != nil || len(sc.Facts.BloodPressures) != 40 {
			b.Fatal(err)
		}
	}
}

// A medication named only in a contained Medication (as some EHRs send
// orders) is named and classed like any other.
func TestPullContainedMedication(t *testing.T) {
	base := startEHR(t)
	s := seeder{t, base}
	pid := s.patient("MRN-C7")
	s.create(map[string]any{"resourceType": "MedicationRequest", "status": "active", "intent": "order",
		"subject":             ref("Patient/" + pid),
		"contained":           []any{map[string]any{"resourceType": "Medication", "id": "m1", "code": cc(fhir.SystemRxNorm, "197527", "clonazepam 0.5 MG Oral Tablet")}},
		"medicationReference": ref("#m1")})
	p := newPuller(t, ehr.PullOptions{})
	sc, err := p.Pull(context.Background(), http.DefaultClient, base, mrnSystem+"|MRN-C7")
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Flags) != 1 || sc.Flags[0].Item != kap.ClassBenzodiazepine || !strings.Contains(sc.Flags[0].Detail, "clonazepam") {
		t.Fatalf("flags %+v, want the contained clonazepam flagged", sc.Flags)
	}
}
