package main

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ehr"
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
