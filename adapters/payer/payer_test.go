package payer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/ehr"
	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/adapters/payer"
	"github.com/kapbridge/kap/fhir"
)

// TestClaimExactlyOnceUnderFaults submits a claim through the kap/v1 API
// (outbox) and delivers it with the payer Sender to the Medplum test
// server playing the payer, with 503s, a 429 burst and lost answers: the
// Claim is at the payer exactly once (counted by identifier), the other
// clinical records are not sent, and the payer's answer (none: the server
// generates no ClaimResponse) is kept as pending with the id the payer
// assigned.
func TestClaimExactlyOnceUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("the Medplum FHIR test server is skipped under -short")
	}
	ctx := context.Background()
	srv, store, post, s := payerEnv(t)
	var ans httpapi.ClaimAnswer
	st, b := post("/kap/v1/dosing-sessions/ds-c005-1/$claim?payer=generic&submit=true", nil)
	if st != http.StatusAccepted {
		t.Fatalf("submit: %d %s", st, b)
	}
	json.Unmarshal(b, &ans)
	// A resubmission of the same claim is not queued again.
	if st, b := post("/kap/v1/dosing-sessions/ds-c005-1/$claim?payer=generic&submit=true", nil); st != http.StatusAccepted {
		t.Fatalf("resubmit: %d %s", st, b)
	}

	srv.Fail503(0, 30, 0)
	srv.Drop(2, 15)
	srv.Fail429(3, 0)
	sent, notSent, kinds := 0, 0, map[string]int{}
	var claimMsg kap.OutboxMessage
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		ls, err := store.Outbox().Lease(ctx, "payer-x", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) == 0 {
			break
		}
		for _, l := range ls {
			res, err := s.Send(ctx, l.Message)
			if err != nil {
				store.Outbox().Retry(ctx, l, time.Now(), kap.Attempt{At: time.Now(), Error: err.Error()})
				continue
			}
			kinds[l.Message.Kind]++
			if l.Message.Kind == payer.KindClaim {
				claimMsg = l.Message
			}
			sent++
			notSent += len(res.NotSent)
			store.Outbox().Ack(ctx, l)
		}
	}
	srv.ClearFaults()
	sys := fhir.CanonicalBase + "/sid/clinic-a/Claim"
	if n := srv.Count("Claim", sys, "claim/"+ans.Claim.ID); n != 1 {
		t.Fatalf("%d Claims with the identifier at the payer, want 1 (delivered %v, resources %v)", n, kinds, srv.Stats().Resources)
	}
	if kinds["Claim"] != 1 {
		t.Fatalf("claim messages delivered %d, want 1 (kinds %v)", kinds["Claim"], kinds)
	}
	st2 := srv.Stats()
	for _, typ := range []string{"MedicationAdministration", "Encounter", "Condition"} {
		if st2.Resources[typ] != 0 {
			t.Errorf("%d %s at the payer: clinical records must not be sent", st2.Resources[typ], typ)
		}
	}
	if notSent == 0 {
		t.Errorf("the intake and the session were not reported as not sent")
	}
	raw, err := store.Cache().Get(ctx, kap.ClaimAnswerKey("clinic-a", ans.Claim.ID))
	if err != nil {
		t.Fatalf("no payer answer kept: %v", err)
	}
	var a kap.PayerAnswer
	json.Unmarshal(raw, &a)
	if a.RequestType != "Claim" || a.RequestID == "" || !a.Pending {
		t.Fatalf("answer %+v", a)
	}
	t.Logf("messages delivered %d (%v), resources not sent %d, faults %v", sent, kinds, notSent, st2.Faults)

	// The payer answers with a ClaimResponse; a resubmission of the claim
	// updates the same Claim and reads the answer.
	payerCreate(t, srv.URL, map[string]any{"resourceType": "ClaimResponse", "status": "active", "type": cc("http://terminology.hl7.org/CodeSystem/claim-type", "professional"),
		"use": "claim", "patient": map[string]any{"reference": "Patient/x"}, "created": "2026-03-03T10:00:00Z",
		"insurer": map[string]any{"display": "Example Health Plan"}, "outcome": "complete", "disposition": "synthetic: paid",
		"request": map[string]any{"reference": "Claim/" + a.RequestID}})
	if _, err := s.Send(ctx, claimMsg); err != nil {
		t.Fatal(err)
	}
	raw, _ = store.Cache().Get(ctx, kap.ClaimAnswerKey("clinic-a", ans.Claim.ID))
	json.Unmarshal(raw, &a)
	if a.Pending || a.ResponseType != "ClaimResponse" || a.Outcome != "complete" {
		t.Fatalf("answer after the ClaimResponse %+v", a)
	}
	if n := srv.Count("Claim", sys, "claim/"+ans.Claim.ID); n != 1 {
		t.Fatalf("%d Claims after the resubmission, want 1", n)
	}
}

func cc(system, code string) map[string]any {
	return map[string]any{"coding": []any{map[string]any{"system": system, "code": code}}}
}

// payerCreate writes a resource to the test server as the payer would.
func payerCreate(t *testing.T, base string, res map[string]any) string {
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

// payerEnv starts the Medplum payer, a bolt store, the kap/v1 API of tenant
// clinic-a (its payer target payer-x) with the providers and client c005's
// records posted, and the payer Sender.
func payerEnv(t *testing.T) (*ehrtest.Server, kap.Store, func(string, []byte) (int, []byte), *payer.Sender) {
	t.Helper()
	srv := ehrtest.Start(t, ehrtest.Options{})
	store, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	codec := fhir.MustCodec()
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	h, err := httpapi.New(httpapi.Config{Store: store, Codec: codec, Logger: quiet,
		Keys:         map[string]string{httpapi.HashKey("k"): "clinic-a"},
		PayerTargets: map[string][]string{"clinic-a": {"payer-x"}}, Targets: []string{"payer-x"}})
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(h)
	t.Cleanup(api.Close)
	post := func(path string, body []byte) (int, []byte) {
		req, _ := http.NewRequest("POST", api.URL+path, bytes.NewReader(body))
		req.Header.Set("X-API-Key", "k")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for _, name := range []string{"00-provider-prescriber.json", "01-provider-therapist.json", "02-provider-nurse.json",
		"60-client-c005.json", "61-intake-c005.json", "67-coverage-c005.json", "65-dosing-c005-1-esketamine56.json"} {
		data, err := os.ReadFile("../../testdata/kap/" + name)
		if err != nil {
			t.Fatal(err)
		}
		var head struct{ Kind kap.Kind }
		json.Unmarshal(data, &head)
		if st, b := post("/kap/v1/"+httpapi.CollectionOf(head.Kind), data); st != http.StatusCreated {
			t.Fatalf("%s: %d %s", name, st, b)
		}
	}
	w, err := ehr.New(ehr.Options{Name: "payer-x", BaseURL: srv.URL, Codec: codec, Ledger: store.Ledger(), Cache: store.Cache(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	s, err := payer.New(payer.Options{Name: "payer-x", Writer: w, BaseURL: srv.URL, Client: &http.Client{Timeout: 20 * time.Second},
		Cache: store.Cache(), Codec: codec, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return srv, store, post, s
}

// deliverAll leases and sends every due message of payer-x until the queue
// is empty (a worker without backoff), returning the messages delivered.
func deliverAll(t *testing.T, store kap.Store, s *payer.Sender) []kap.OutboxMessage {
	t.Helper()
	ctx := context.Background()
	var out []kap.OutboxMessage
	var last error
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		ls, err := store.Outbox().Lease(ctx, "payer-x", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) == 0 {
			return out
		}
		for _, l := range ls {
			if _, err := s.Send(ctx, l.Message); err != nil {
				last = err
				if se := kap.SendErrorOf(err); se.Kind == kap.SendPermanent {
					t.Fatalf("%s refused: %v %s", l.Message.Kind, err, se.OperationOutcome)
				}
				store.Outbox().Retry(ctx, l, time.Now(), kap.Attempt{At: time.Now(), Error: err.Error()})
				continue
			}
			out = append(out, l.Message)
			store.Outbox().Ack(ctx, l)
		}
	}
	t.Fatalf("the payer queue did not drain; last error %v", last)
	return nil
}

// TestEligibilityAnswerShownOnCoverage: a CoverageEligibilityRequest goes
// to the payer once; until the payer answers, the coverage shows it as
// pending; after the payer's CoverageEligibilityResponse, a new check
// reads it and GET of the coverage shows it in force.
func TestEligibilityAnswerShownOnCoverage(t *testing.T) {
	if testing.Short() {
		t.Skip("the Medplum FHIR test server is skipped under -short")
	}
	srv, store, post, s := payerEnv(t)
	body := []byte(`{"providerId":"p-md01","date":"2026-03-02"}`)
	if st, b := post("/kap/v1/coverages/cov-c005/$eligibility", body); st != http.StatusAccepted {
		t.Fatalf("eligibility: %d %s", st, b)
	}
	srv.Drop(0, 30)
	deliverAll(t, store, s)
	srv.ClearFaults()
	sys := fhir.CanonicalBase + "/sid/clinic-a/CoverageEligibilityRequest"
	if n := srv.Count("CoverageEligibilityRequest", sys, "eligibility/cov-c005/2026-03-02"); n != 1 {
		t.Fatalf("%d eligibility requests at the payer, want 1", n)
	}
	raw, err := store.Cache().Get(context.Background(), kap.EligibilityKey("clinic-a", "cov-c005"))
	if err != nil {
		t.Fatal(err)
	}
	var a kap.PayerAnswer
	json.Unmarshal(raw, &a)
	if !a.Pending || a.RequestID == "" {
		t.Fatalf("answer before the payer's %+v", a)
	}
	payerCreate(t, srv.URL, map[string]any{"resourceType": "CoverageEligibilityResponse", "status": "active",
		"purpose": []any{"benefits"}, "patient": map[string]any{"reference": "Patient/x"}, "created": "2026-03-02T12:00:00Z",
		"request": map[string]any{"reference": "CoverageEligibilityRequest/" + a.RequestID}, "outcome": "complete",
		"insurer": map[string]any{"display": "Example Health Plan"}, "disposition": "synthetic: active coverage",
		"insurance": []any{map[string]any{"coverage": map[string]any{"reference": "Coverage/x"}, "inforce": true}}})
	if st, b := post("/kap/v1/coverages/cov-c005/$eligibility", body); st != http.StatusAccepted {
		t.Fatalf("eligibility again: %d %s", st, b)
	}
	deliverAll(t, store, s)
	if n := srv.Count("CoverageEligibilityRequest", sys, "eligibility/cov-c005/2026-03-02"); n != 1 {
		t.Fatalf("%d eligibility requests at the payer after the second check, want 1", n)
	}
	raw, _ = store.Cache().Get(context.Background(), kap.EligibilityKey("clinic-a", "cov-c005"))
	json.Unmarshal(raw, &a)
	if a.Pending || a.Eligibility == nil || a.Eligibility.InForce == nil || !*a.Eligibility.InForce {
		t.Fatalf("answer after the payer's %+v", a)
	}
}

// TestPriorAuthorisationThroughPAS: under a payer profile that wants prior
// authorisation for esketamine, the claim is refused by the preflight; the
// Da Vinci PAS request goes to Claim/$submit once (lost answers are
// resolved by searching the Claim's identifier, not by sending again), the
// payer's preAuthRef is kept and the claim then carries it and passes.
func TestPriorAuthorisationThroughPAS(t *testing.T) {
	if testing.Short() {
		t.Skip("the Medplum FHIR test server is skipped under -short")
	}
	srv, store, post, s := payerEnv(t)
	claimURL := "/kap/v1/dosing-sessions/ds-c005-1/$claim?payer=example-commercial"
	st, b := post(claimURL+"&submit=true", nil)
	if st != http.StatusUnprocessableEntity || !bytes.Contains(b, []byte(kap.RulePriorAuthRequired)) {
		t.Fatalf("claim without prior authorisation: %d %s", st, b)
	}
	if st, b := post(claimURL+"&use=preauthorization&submit=true", nil); st != http.StatusAccepted {
		t.Fatalf("PAS request: %d %s", st, b)
	}
	srv.Drop(2, 40)
	msgs := deliverAll(t, store, s)
	srv.ClearFaults()
	pas := 0
	var pasMsg kap.OutboxMessage
	for _, m := range msgs {
		if m.Kind == payer.KindPreAuth {
			pas++
			pasMsg = m
		}
	}
	// The outbox is at least once: a redelivery (as after an answer lost
	// on the way back) finds the Claim and reads the answer instead of
	// posting again.
	submits := srv.Stats().Interactions["pas-submit"]
	if _, err := s.Send(context.Background(), pasMsg); err != nil {
		t.Fatal(err)
	}
	if got := srv.Stats().Interactions["pas-submit"]; got != submits {
		t.Fatalf("a redelivery posted $submit again (%d -> %d)", submits, got)
	}
	sys := fhir.CanonicalBase + "/sid/clinic-a/Claim"
	if n := srv.Count("Claim", sys, "preauth/ds-c005-1"); pas != 1 || n != 1 {
		t.Fatalf("PAS messages delivered %d, Claims at the payer %d; want 1 and 1", pas, n)
	}
	if n, _ := srv.Search("ClaimResponse", nil); n != http.StatusOK {
		t.Fatalf("search ClaimResponse: %d", n)
	}
	stats := srv.Stats()
	if stats.Resources["ClaimResponse"] != 1 {
		t.Fatalf("%d ClaimResponses at the payer, want 1 (interactions %v)", stats.Resources["ClaimResponse"], stats.Interactions)
	}
	raw, err := store.Cache().Get(context.Background(), kap.PreAuthAnswerKey("clinic-a", "ds-c005-1"))
	if err != nil {
		t.Fatal(err)
	}
	var a kap.PayerAnswer
	json.Unmarshal(raw, &a)
	if a.Pending || a.PreAuthRef == "" || a.Outcome != "queued" || a.RequestID == "" {
		t.Fatalf("PAS answer %+v", a)
	}
	st, b = post(claimURL, nil)
	var ans httpapi.ClaimAnswer
	json.Unmarshal(b, &ans)
	if st != 200 || ans.Claim.PreAuthRef != a.PreAuthRef || ans.PreAuth == nil {
		t.Fatalf("claim after the PAS answer: %d %s", st, b)
	}
	for _, p := range ans.Preflight {
		if p.Rule == kap.RulePriorAuthRequired {
			t.Fatalf("still %+v", p)
		}
	}
	t.Logf("PAS: interactions %v, faults %v", stats.Interactions, stats.Faults)
}
