package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ehr"
	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/fhir"
)

// ehrCreate writes a resource to the test EHR as its own users would.
func ehrCreate(t *testing.T, base string, res map[string]any) string {
	t.Helper()
	body, _ := json.Marshal(res)
	resp, err := http.Post(base+"/"+res["resourceType"].(string), "application/fhir+json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode > 299 {
		t.Fatalf("create %s: %d %s", res["resourceType"], resp.StatusCode, out)
	}
	var m map[string]any
	json.Unmarshal(out, &m)
	return m["id"].(string)
}

// TestScreeningPullRoute seeds the Medplum test EHR with client c005's
// Patient (the gateway's identifier) taking lorazepam: the pull flags the
// benzodiazepine, GET of the client's latest intake shows it as a warning;
// an EHR outage answers 502 and leaves the stored hints alone.
func TestScreeningPullRoute(t *testing.T) {
	if testing.Short() {
		t.Skip("the Medplum FHIR test server is skipped under -short")
	}
	ehrSrv := ehrtest.Start(t, ehrtest.Options{})
	store := apiStores["bolt"](t, nil)
	codec := fhir.MustCodec()
	pull := func(ctx context.Context, tenant, target, ident string) (*kap.ScreeningHints, error) {
		if tenant != "clinic-a" || target != "ehr-a" {
			return nil, kap.Errorf(kap.ENOTFOUND, "the tenant has no EHR target of that name")
		}
		p, err := ehr.NewPuller(ehr.PullOptions{Codec: codec, Cache: store.Cache(), Tenant: tenant, Target: target, MaxRetryWait: time.Millisecond})
		if err != nil {
			return nil, err
		}
		s, err := p.Pull(ctx, &http.Client{Timeout: 20 * time.Second}, ehrSrv.URL, ident)
		if s == nil {
			return nil, err
		}
		h := &kap.ScreeningHints{Incomplete: s.Incomplete, Read: s.Read, PulledAt: s.PulledAt}
		for _, f := range s.Flags {
			h.Flags = append(h.Flags, kap.ScreeningHint{Item: f.Item, Source: f.Source, Detail: f.Detail})
		}
		return h, err
	}
	srv := apiServer(t, store, func(c *httpapi.Config) { c.ScreeningPull = pull })
	for _, name := range []string{"60-client-c005.json", "61-intake-c005.json"} {
		m := readRecord(t, name)
		if r := call(t, "POST", srv.URL+"/kap/v1/"+httpapi.CollectionOf(kap.Kind(m["kind"].(string))), jsonOf(t, m)); r.status != http.StatusCreated {
			t.Fatalf("%s: %v", name, r)
		}
	}
	pid := ehrCreate(t, ehrSrv.URL, map[string]any{"resourceType": "Patient",
		"identifier": []any{map[string]any{"system": fhir.CanonicalBase + "/sid/clinic-a/Patient", "value": "c005"}}})
	ehrCreate(t, ehrSrv.URL, map[string]any{"resourceType": "MedicationStatement", "status": "active",
		"subject": map[string]any{"reference": "Patient/" + pid},
		"medicationCodeableConcept": map[string]any{"coding": []any{map[string]any{"system": fhir.SystemRxNorm, "code": "197900",
			"display": "lorazepam 1 MG Oral Tablet"}}, "text": "lorazepam 1 MG Oral Tablet"}})

	intakeURL := srv.URL + "/kap/v1/intakes/" + readRecord(t, "61-intake-c005.json")["id"].(string)
	before := envelope(t, call(t, "GET", intakeURL, nil))
	for _, w := range before.Warnings {
		if strings.HasPrefix(w.Path, "screening") {
			t.Fatalf("a screening warning before any pull: %+v", w)
		}
	}
	url := srv.URL + "/kap/v1/clients/c005/$screening-pull?target=ehr-a"
	r := call(t, "POST", url, nil)
	if r.status != 200 {
		t.Fatalf("pull: %v", r)
	}
	var ans httpapi.ScreeningAnswer
	json.Unmarshal(r.body, &ans)
	if !ans.Complete || len(ans.Hints.Flags) != 1 || ans.Hints.Flags[0].Item != kap.ClassBenzodiazepine {
		t.Fatalf("pull answer %s", r.body)
	}
	env := envelope(t, call(t, "GET", intakeURL, nil))
	found := false
	for _, w := range env.Warnings {
		if w.Path == "screening."+kap.ClassBenzodiazepine && strings.Contains(w.Reason, "lorazepam") && strings.Contains(w.Reason, "not a decision") {
			found = true
		}
	}
	if !found {
		t.Fatalf("the intake does not show the benzodiazepine: %+v", env.Warnings)
	}

	// Failures: unknown target, EHR outage (502, hints kept).
	wantOutcome(t, call(t, "POST", srv.URL+"/kap/v1/clients/c005/$screening-pull?target=other", nil), http.StatusNotFound)
	wantOutcome(t, call(t, "POST", srv.URL+"/kap/v1/clients/c005/$screening-pull", nil), http.StatusUnprocessableEntity, "target")
	ehrSrv.Outage(time.Minute)
	r = call(t, "POST", url, nil)
	if r.status != http.StatusBadGateway && r.status != http.StatusGatewayTimeout {
		t.Fatalf("pull during an outage: %v", r)
	}
	if strings.Contains(string(r.body), "c005") || strings.Contains(string(r.body), "lorazepam") {
		t.Fatalf("the error shows PHI: %s", r.body)
	}
	ehrSrv.ClearFaults()
	if env := envelope(t, call(t, "GET", intakeURL, nil)); len(env.Warnings) == 0 {
		t.Fatalf("the hints were lost after the failed pull")
	}
}
