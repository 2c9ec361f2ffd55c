package main

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ehr"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
)

// payerTargets returns, per tenant, its targets of kind payer (where the
// kap/v1 API queues claims and eligibility requests).
func payerTargets(cfg config.Config) map[string][]string {
	kind := map[string]string{}
	for _, t := range cfg.Targets {
		kind[t.Name] = t.Kind
	}
	out := map[string][]string{}
	for _, ten := range cfg.Tenants {
		for _, name := range ten.Targets {
			if kind[name] == "payer" {
				out[ten.Name] = append(out[ten.Name], name)
			}
		}
	}
	return out
}

// inboundPatientSystem returns the EHR patient identifier system the FHIR
// facade accepts on inbound writes: the one the tenants configure (the
// facade takes one system; the first tenant that sets it gives it).
func inboundPatientSystem(cfg config.Config) string {
	for _, ten := range cfg.Tenants {
		if ten.InboundPatientSystem != "" {
			return ten.InboundPatientSystem
		}
	}
	return ""
}

// screeningPuller runs screening pulls (adapters/ehr Puller) against the
// tenants' FHIR targets of kind ehr, with each target's auth transport
// (targetauth, built once per target like the worker's).
type screeningPuller struct {
	cfg    config.Config
	store  kap.Store
	codec  *fhir.Codec
	log    *slog.Logger
	getenv func(string) string

	mu      sync.Mutex
	clients map[string]*http.Client
}

// Pull is an httpapi.ScreeningPullFunc.
func (p *screeningPuller) Pull(ctx context.Context, tenant, target, patientIdentifier string) (*kap.ScreeningHints, error) {
	var t *config.Target
	for i := range p.cfg.Targets {
		if p.cfg.Targets[i].Name == target {
			t = &p.cfg.Targets[i]
		}
	}
	owned := false
	for _, ten := range p.cfg.Tenants {
		if ten.Name == tenant && slices.Contains(ten.Targets, target) {
			owned = true
		}
	}
	if t == nil || !owned || t.Type != "fhir" || t.Kind == "payer" {
		return nil, kap.Errorf(kap.ENOTFOUND, "the tenant has no EHR target of that name")
	}
	client, err := p.client(*t)
	if err != nil {
		return nil, err
	}
	puller, err := ehr.NewPuller(ehr.PullOptions{Codec: p.codec, Cache: p.store.Cache(), Tenant: tenant, Target: target, Logger: p.log})
	if err != nil {
		return nil, err
	}
	s, err := puller.Pull(ctx, client, t.BaseURL, patientIdentifier)
	if s == nil {
		return nil, err
	}
	h := &kap.ScreeningHints{Target: target, Incomplete: s.Incomplete, Read: s.Read, PulledAt: s.PulledAt}
	for _, f := range s.Flags {
		h.Flags = append(h.Flags, kap.ScreeningHint{Item: f.Item, Source: f.Source, Detail: f.Detail})
	}
	if err != nil && len(h.Incomplete) == 0 {
		h.Incomplete = []string{"the pull failed part way: " + kap.ErrorCode(err)}
	}
	return h, err
}

func (p *screeningPuller) client(t config.Target) (*http.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.clients[t.Name]; c != nil {
		return c, nil
	}
	tr, err := targetauth.New(t.Auth, targetauth.Options{Cache: p.store.Cache(), Target: t.Name, Logger: p.log, Getenv: p.getenv})
	if err != nil {
		return nil, kap.Errorf(kap.EUNAVAILABLE, "the target's auth is not usable")
	}
	timeout := time.Duration(t.TotalTimeout)
	if timeout <= 0 {
		timeout = 25 * time.Second
	}
	c := &http.Client{Transport: tr, Timeout: timeout}
	if p.clients == nil {
		p.clients = map[string]*http.Client{}
	}
	p.clients[t.Name] = c
	return c, nil
}

var _ httpapi.ScreeningPullFunc = (&screeningPuller{}).Pull
