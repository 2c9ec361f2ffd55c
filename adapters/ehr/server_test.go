package ehr_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
)

// fhirServer is the real FHIR R4 test server (adapters/ehr/ehrtest: Medplum
// fhir-router, started for a test on a loopback port), with the helpers
// these tests use.
type fhirServer struct {
	Base    string // FHIR base URL
	control string // control base URL
	srv     *ehrtest.Server
}

func startFHIR(t *testing.T, mode string) *fhirServer { return startFHIRB(t, mode) }

// startFHIRB starts the server (ehrtest skips the test when Node or its
// packages are not installed; scripts/test-deps.sh installs them).
func startFHIRB(t testing.TB, mode string) *fhirServer {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no FHIR server")
	}
	srv := ehrtest.Start(t, ehrtest.Options{Mode: ehrtest.Mode(mode), StartTimeout: 90 * time.Second})
	return &fhirServer{Base: srv.URL, control: srv.ControlURL, srv: srv}
}

// Control posts a control document (mode switch, faults, reset).
func (f *fhirServer) Control(t *testing.T, c map[string]any) {
	t.Helper()
	b, _ := json.Marshal(c)
	resp, err := http.Post(f.control+"/__control", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("control %s: %d %s", b, resp.StatusCode, body)
	}
}

type serverStats struct {
	Interactions map[string]int `json:"interactions"`
	Resources    map[string]int `json:"resources"`
	Total        int            `json:"total"`
	Duplicates   []struct {
		Key   string `json:"key"`
		Count int    `json:"count"`
	} `json:"duplicates"`
	ByIdentifier map[string]int `json:"byIdentifier"`
}

// Stats returns the server's counts (resources, interactions, duplicates).
func (f *fhirServer) Stats(t *testing.T) serverStats {
	t.Helper()
	resp, err := http.Get(f.control + "/__stats?identifiers=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s serverStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// Get reads a FHIR resource or search (rel to the base) as generic JSON.
func (f *fhirServer) Get(t *testing.T, rel string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.Base+"/"+rel, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", rel, resp.StatusCode, err)
	}
	return m
}

// One returns the single resource a search finds.
func (f *fhirServer) One(t *testing.T, rel string) map[string]any {
	t.Helper()
	b := f.Get(t, rel)
	es, _ := b["entry"].([]any)
	if len(es) != 1 {
		t.Fatalf("GET %s: %d matches, want 1", rel, len(es))
	}
	return es[0].(map[string]any)["resource"].(map[string]any)
}

func refOf(res map[string]any, field string) string {
	m, _ := res[field].(map[string]any)
	s, _ := m["reference"].(string)
	return s
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprint(err))
	}
	return v
}
