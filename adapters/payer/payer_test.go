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
	defer api.Close()
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

	w, err := ehr.New(ehr.Options{Name: "payer-x", BaseURL: srv.URL, Codec: codec, Ledger: store.Ledger(), Cache: store.Cache(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	s, err := payer.New(payer.Options{Name: "payer-x", Writer: w, BaseURL: srv.URL, Client: &http.Client{Timeout: 20 * time.Second},
		Cache: store.Cache(), Codec: codec, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	srv.Fail503(0, 30, 0)
	srv.Drop(0, 15)
	srv.Fail429(3, 0)
	sent, notSent, kinds := 0, 0, map[string]int{}
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
}
