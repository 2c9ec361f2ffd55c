package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ehr"
	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/adapters/payer"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
)

// A fhir target of kind payer gets the payer sender; one of kind ehr the
// plain FHIR writer. The tenants' payer targets and inbound patient system
// come from the config.
func TestPayerWiring(t *testing.T) {
	dir := t.TempDir()
	m := startServer(t, dir, io.Discard)
	defer m.Close()
	d := deliveryDeps{Store: m.store, Codec: fhir.MustCodec(), Logger: slog.New(slog.DiscardHandler), Getenv: func(string) string { return "" }}
	s, _, err := buildSender(d, config.Target{Name: "payer-a", Type: "fhir", Kind: "payer", BaseURL: "https://payer.example/fhir"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*payer.Sender); !ok || s.Target() != "payer-a" {
		t.Fatalf("a payer target got %T", s)
	}
	s, _, err = buildSender(d, config.Target{Name: "ehr-a", Type: "fhir", Kind: "ehr", BaseURL: "https://ehr.example/fhir"})
	if _, ok := s.(*ehr.Sender); err != nil || !ok {
		t.Fatalf("an ehr target got %T (%v)", s, err)
	}
	cfg := config.Config{
		Targets: []config.Target{{Name: "payer-a", Type: "fhir", Kind: "payer"}, {Name: "ehr-a", Type: "fhir", Kind: "ehr"}},
		Tenants: []config.Tenant{{Name: "t1", Targets: []string{"ehr-a", "payer-a"}}, {Name: "t2", Targets: []string{"ehr-a"},
			InboundPatientSystem: "urn:oid:1.2.3"}},
	}
	pt := payerTargets(cfg)
	if len(pt["t1"]) != 1 || pt["t1"][0] != "payer-a" || len(pt["t2"]) != 0 {
		t.Fatalf("payer targets %v", pt)
	}
	if got := inboundPatientSystem(cfg); got != "urn:oid:1.2.3" {
		t.Fatalf("inbound system %q", got)
	}
	// The screening puller refuses a payer target and another tenant's.
	p := &screeningPuller{cfg: cfg, store: m.store, codec: d.Codec, log: d.Logger, getenv: d.Getenv}
	for _, c := range [][2]string{{"t1", "payer-a"}, {"t2", "payer-a"}, {"t1", "nope"}} {
		if _, err := p.Pull(context.Background(), c[0], c[1], "https://x|c1"); kap.ErrorCode(err) != kap.ENOTFOUND {
			t.Errorf("%v: %v", c, err)
		}
	}
}

// kapbridge serve with a target of kind payer: a claim submitted through
// kap/v1 reaches the payer (the Medplum test server) through the outbox,
// the delivery worker and the payer sender, once, and POST $claim then
// shows the payer's answer (pending: the server generates none).
func TestServeSubmitsAClaimToAPayer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a FHIR server")
	}
	srv := ehrtest.Start(t, ehrtest.Options{Mode: ehrtest.ModeTransaction})
	no := false
	conf := config.Config{
		Targets: []config.Target{{Name: "payer", Type: "fhir", Kind: "payer", BaseURL: srv.URL, RequireConsent: &no}},
		Tenants: []config.Tenant{{Name: config.DefaultTenant, Bootstrap: true, Targets: []string{"payer"}}},
	}
	dir := t.TempDir()
	m := &serveMain{cfg: serveConfig{Config: conf, Addr: "127.0.0.1:0", DataDir: dir, Logger: slog.New(slog.DiscardHandler)}}
	if err := m.Open(); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	key, err := os.ReadFile(filepath.Join(dir, bootstrapKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	c := &httpClient{t: t, base: "http://" + m.Addr(), key: strings.TrimSpace(string(key))}
	for _, name := range []string{"00-provider-prescriber.json", "01-provider-therapist.json", "02-provider-nurse.json",
		"60-client-c005.json", "61-intake-c005.json", "67-coverage-c005.json", "65-dosing-c005-1-esketamine56.json"} {
		data, err := os.ReadFile("../../testdata/kap/" + name)
		if err != nil {
			t.Fatal(err)
		}
		var head struct{ Kind kap.Kind }
		json.Unmarshal(data, &head)
		if r := c.post("/kap/v1/"+httpapi.CollectionOf(head.Kind), data); r.status != 201 {
			t.Fatalf("%s: %d %s", name, r.status, r.body)
		}
	}
	if r := c.post("/kap/v1/dosing-sessions/ds-c005-1/$claim?payer=generic&submit=true", nil); r.status != 202 {
		t.Fatalf("submit: %d %s", r.status, r.body)
	}
	sys := fhir.CanonicalBase + "/sid/" + config.DefaultTenant + "/Claim"
	waitFor(t, "the Claim at the payer", func() bool { return srv.Count("Claim", sys, "claim/ds-c005-1") == 1 })
	waitFor(t, "the payer queue to drain", func() bool {
		st, err := m.store.Outbox().Stats(context.Background(), "payer")
		return err == nil && st.Depth == 0
	})
	r := c.post("/kap/v1/dosing-sessions/ds-c005-1/$claim?payer=generic", nil)
	var ans httpapi.ClaimAnswer
	if err := json.Unmarshal(r.body, &ans); err != nil || r.status != 200 || ans.Answer == nil || ans.Answer.RequestID == "" || !ans.Answer.Pending {
		t.Fatalf("claim after delivery: %d %s", r.status, r.body)
	}
	st := srv.Stats()
	if st.Resources["Encounter"] != 0 || st.Resources["MedicationAdministration"] != 0 || st.Resources["Claim"] != 1 {
		t.Fatalf("resources at the payer %v", st.Resources)
	}
}

// kapbridge serve runs a screening pull against its EHR target (through the
// target's auth transport): a benzodiazepine the EHR lists shows on the
// client's intake.
func TestServeScreeningPull(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a FHIR server")
	}
	srv := ehrtest.Start(t, ehrtest.Options{})
	no := false
	conf := config.Config{
		Targets: []config.Target{{Name: "ehr", Type: "fhir", Kind: "ehr", BaseURL: srv.URL, RequireConsent: &no}},
		Tenants: []config.Tenant{{Name: config.DefaultTenant, Bootstrap: true, Targets: []string{"ehr"}}},
	}
	dir := t.TempDir()
	m := &serveMain{cfg: serveConfig{Config: conf, Addr: "127.0.0.1:0", DataDir: dir, Logger: slog.New(slog.DiscardHandler)}}
	if err := m.Open(); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	key, err := os.ReadFile(filepath.Join(dir, bootstrapKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	c := &httpClient{t: t, base: "http://" + m.Addr(), key: strings.TrimSpace(string(key))}
	for _, name := range []string{"60-client-c005.json", "61-intake-c005.json"} {
		data, _ := os.ReadFile("../../testdata/kap/" + name)
		var head struct{ Kind kap.Kind }
		json.Unmarshal(data, &head)
		if r := c.post("/kap/v1/"+httpapi.CollectionOf(head.Kind), data); r.status != 201 {
			t.Fatalf("%s: %d %s", name, r.status, r.body)
		}
	}
	// The worker delivers the Patient (with the gateway's identifier); the
	// EHR's own users record a benzodiazepine for it.
	var pid string
	waitFor(t, "the Patient at the EHR", func() bool {
		st, b := srv.Search("Patient", url.Values{"identifier": {fhir.CanonicalBase + "/sid/" + config.DefaultTenant + "/Patient|c005"}})
		if entries, _ := b["entry"].([]any); st == 200 && len(entries) == 1 {
			pid = entries[0].(map[string]any)["resource"].(map[string]any)["id"].(string)
			return true
		}
		return false
	})
	med, _ := json.Marshal(map[string]any{"resourceType": "MedicationStatement", "status": "active",
		"subject": map[string]any{"reference": "Patient/" + pid},
		"medicationCodeableConcept": map[string]any{"coding": []any{map[string]any{"system": fhir.SystemRxNorm, "code": "197900",
			"display": "lorazepam 1 MG Oral Tablet"}}}})
	resp, err := http.Post(srv.URL+"/MedicationStatement", "application/fhir+json", bytes.NewReader(med))
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("seed: %v %v", err, resp)
	}
	resp.Body.Close()
	r := c.post("/kap/v1/clients/c005/$screening-pull?target=ehr", nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"item":"benzodiazepine"`) {
		t.Fatalf("pull: %d %s", r.status, r.body)
	}
	g := c.do("GET", "/kap/v1/intakes/in-c005", c.key, nil)
	if g.status != 200 || !strings.Contains(string(g.body), "screening.benzodiazepine") {
		t.Fatalf("intake: %d %s", g.status, g.body)
	}
}
