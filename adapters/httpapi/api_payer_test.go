package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/httpapi"
)

// payerFixture posts the providers and client c005's records (intake,
// coverage, the 56 mg esketamine session) and returns the server and its
// store.
func payerFixture(t *testing.T, f storeFactory) (string, kap.Store) {
	t.Helper()
	store := f(t, nil)
	srv := apiServer(t, store, func(c *httpapi.Config) {
		c.PayerTargets = map[string][]string{"clinic-a": {"payer-x"}}
	})
	for _, name := range []string{"00-provider-prescriber.json", "01-provider-therapist.json", "02-provider-nurse.json",
		"60-client-c005.json", "61-intake-c005.json", "62-consent-c005.json", "67-coverage-c005.json",
		"65-dosing-c005-1-esketamine56.json", "10-client-c001.json", "16-dosing-c001-1.json"} {
		m := readRecord(t, name)
		r := call(t, "POST", srv.URL+"/kap/v1/"+httpapi.CollectionOf(kap.Kind(m["kind"].(string))), jsonOf(t, m))
		if r.status != http.StatusCreated {
			t.Fatalf("%s: %v", name, r)
		}
	}
	return srv.URL, store
}

func TestCoverageCollection(t *testing.T) {
	eachStore(t, func(t *testing.T, f storeFactory) {
		base, _ := payerFixture(t, f)
		r := call(t, "GET", base+"/kap/v1/coverages/cov-c005", nil)
		env := envelope(t, r)
		if r.status != 200 || env.Kind != "Coverage" || !strings.Contains(string(env.Bundle), `"resourceType":"Coverage"`) {
			t.Fatalf("GET coverage: %v", r)
		}
		r = call(t, "GET", base+"/kap/v1/coverages?client=c005", nil)
		if r.status != 200 || !strings.Contains(string(r.body), "cov-c005") {
			t.Fatalf("list coverages: %v", r)
		}
	})
}

func TestClaimRoute(t *testing.T) {
	eachStore(t, func(t *testing.T, f storeFactory) {
		base, store := payerFixture(t, f)
		url := base + "/kap/v1/dosing-sessions/ds-c005-1/$claim"
		r := call(t, "POST", url+"?payer=generic", nil)
		if r.status != 200 {
			t.Fatalf("claim: %v", r)
		}
		var ans httpapi.ClaimAnswer
		if err := json.Unmarshal(r.body, &ans); err != nil {
			t.Fatal(err)
		}
		codes := map[string]bool{}
		for _, l := range ans.Claim.Lines {
			codes[l.Code] = true
		}
		if !codes["G2082"] || ans.Claim.CoverageID != "cov-c005" || ans.Claim.Diagnoses[0].ICD10 != "F33.2" {
			t.Fatalf("claim lines %+v diagnoses %+v coverage %q", ans.Claim.Lines, ans.Claim.Diagnoses, ans.Claim.CoverageID)
		}
		if !strings.Contains(string(ans.Resource), `"resourceType":"Claim"`) {
			t.Fatalf("no FHIR Claim: %s", ans.Resource)
		}

		// Submit twice: one outbox message.
		r = call(t, "POST", url+"?payer=generic&submit=true", nil)
		if len(ans.Preflight) > 0 {
			wantOutcome(t, r, http.StatusUnprocessableEntity, ans.Preflight[0].Rule)
			return
		}
		if r.status != http.StatusAccepted {
			t.Fatalf("submit: %v", r)
		}
		if r2 := call(t, "POST", url+"?payer=generic&submit=true", nil); r2.status != http.StatusAccepted {
			t.Fatalf("resubmit: %v", r2)
		}
		ctx := context.Background()
		var claims int
		for i := 0; i < 20; i++ {
			ls, err := store.Outbox().Lease(ctx, "payer-x", 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(ls) == 0 {
				break
			}
			for _, l := range ls {
				if l.Message.Kind == "Claim" {
					claims++
					for _, want := range []string{`"resourceType":"Claim"`, `"resourceType":"Patient"`, `"resourceType":"Coverage"`, `"Claim?identifier=`} {
						if !strings.Contains(string(l.Message.Bundle), want) {
							t.Errorf("claim Bundle lacks %s", want)
						}
					}
				}
				if err := store.Outbox().Ack(ctx, l); err != nil {
					t.Fatal(err)
				}
			}
		}
		if claims != 1 {
			t.Fatalf("%d claim messages queued for two identical submissions, want 1", claims)
		}
	})
}

func TestClaimRefusedByPreflight(t *testing.T) {
	eachStore(t, func(t *testing.T, f storeFactory) {
		base, _ := payerFixture(t, f)
		// c001 has no coverage: the claim would be refused.
		r := call(t, "POST", base+"/kap/v1/dosing-sessions/ds-c001-1/$claim?submit=true", nil)
		wantOutcome(t, r, http.StatusUnprocessableEntity, kap.RuleMissingCoverage)
		r = call(t, "POST", base+"/kap/v1/dosing-sessions/ds-c001-1/$claim?payer=nope", nil)
		wantOutcome(t, r, http.StatusUnprocessableEntity, "payer")
		r = call(t, "POST", base+"/kap/v1/clients/c001/$claim", nil)
		wantOutcome(t, r, http.StatusNotFound)
		// Prior authorisation: the generic profile asks none; a bad use.
		r = call(t, "POST", base+"/kap/v1/dosing-sessions/ds-c005-1/$claim?payer=generic&use=preauthorization&submit=true", nil)
		wantOutcome(t, r, http.StatusUnprocessableEntity, "asks no prior authorisation")
		wantOutcome(t, call(t, "POST", base+"/kap/v1/dosing-sessions/ds-c005-1/$claim?use=x", nil), http.StatusUnprocessableEntity, "use")
	})
}

func TestREMSRoute(t *testing.T) {
	eachStore(t, func(t *testing.T, f storeFactory) {
		base, _ := payerFixture(t, f)
		r := call(t, "GET", base+"/kap/v1/dosing-sessions/ds-c005-1/$rems", nil)
		if r.status != 200 {
			t.Fatalf("rems: %v", r)
		}
		var ans httpapi.REMSAnswer
		if err := json.Unmarshal(r.body, &ans); err != nil {
			t.Fatal(err)
		}
		if ans.DueDate == "" || !strings.Contains(string(ans.QuestionnaireResponse), `"resourceType":"QuestionnaireResponse"`) {
			t.Fatalf("rems answer %s", r.body)
		}
		if ans.Complete != (len(ans.Missing) == 0) {
			t.Fatalf("complete %v with %d missing", ans.Complete, len(ans.Missing))
		}
		// The session GET shows the REMS warnings for what is missing.
		env := envelope(t, call(t, "GET", base+"/kap/v1/dosing-sessions/ds-c005-1", nil))
		rems := 0
		for _, w := range env.Warnings {
			if strings.HasPrefix(w.Path, "rems.") {
				rems++
			}
		}
		if rems != len(ans.Missing) {
			t.Fatalf("%d REMS warnings on GET, %d items missing", rems, len(ans.Missing))
		}
		h := call(t, "GET", base+"/kap/v1/dosing-sessions/ds-c005-1/$rems?format=html", nil)
		if h.status != 200 || !strings.Contains(h.header.Get("Content-Type"), "text/html") || !strings.Contains(string(h.body), "REMS") {
			t.Fatalf("html: %v", h)
		}
		// Not an esketamine session.
		wantOutcome(t, call(t, "GET", base+"/kap/v1/dosing-sessions/ds-c001-1/$rems", nil), http.StatusUnprocessableEntity, "esketamine")
	})
}

func TestEligibilityRoute(t *testing.T) {
	eachStore(t, func(t *testing.T, f storeFactory) {
		base, store := payerFixture(t, f)
		url := base + "/kap/v1/coverages/cov-c005/$eligibility"
		wantOutcome(t, call(t, "GET", url, nil), http.StatusNotFound)
		wantOutcome(t, call(t, "POST", url, []byte(`{"providerId":""}`)), http.StatusUnprocessableEntity, "providerId")
		r := call(t, "POST", url, []byte(`{"providerId":"p-md01","date":"2026-03-02"}`))
		if r.status != http.StatusAccepted || !strings.Contains(string(r.body), "CoverageEligibilityRequest") {
			t.Fatalf("eligibility: %v", r)
		}
		// What adapters/payer keeps once the payer answered shows on GET.
		in := true
		a := kap.PayerAnswer{Target: "payer-x", RequestType: "CoverageEligibilityRequest", RequestID: "1", SubmittedAt: time.Now(),
			Eligibility: &kap.EligibilityResult{Outcome: "complete", InForce: &in}}
		b, _ := json.Marshal(a)
		if err := store.Cache().Set(context.Background(), kap.EligibilityKey("clinic-a", "cov-c005"), b, time.Hour); err != nil {
			t.Fatal(err)
		}
		if r := call(t, "GET", url, nil); r.status != 200 || !strings.Contains(string(r.body), `"outcome":"complete"`) {
			t.Fatalf("GET eligibility: %v", r)
		}
		env := envelope(t, call(t, "GET", base+"/kap/v1/coverages/cov-c005", nil))
		if len(env.Warnings) != 1 || !strings.Contains(env.Warnings[0].Reason, "in force") {
			t.Fatalf("coverage warnings %+v", env.Warnings)
		}
	})
}
