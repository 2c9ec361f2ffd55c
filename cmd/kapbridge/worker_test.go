package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/internal/config"
)

// ndjsonLines returns the Bundles the default ndjson target wrote under the
// data directory.
func ndjsonLines(t *testing.T, dir string) []map[string]any {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "ndjson", "*.ndjson"))
	var out []map[string]any
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var b map[string]any
			if err := json.Unmarshal(sc.Bytes(), &b); err != nil {
				t.Fatalf("%s: a line is not JSON: %v", f, err)
			}
			out = append(out, b)
		}
		fh.Close()
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kapbridge serve with the default configuration delivers a submitted
// record's Bundle to the NDJSON folder under the data directory.
func TestServeDeliversToNDJSON(t *testing.T) {
	dir := t.TempDir()
	logs := &syncBuffer{}
	m := startServer(t, dir, logs)
	defer m.Close()
	key, err := os.ReadFile(filepath.Join(dir, bootstrapKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	c := &httpClient{t: t, base: "http://" + m.Addr(), key: strings.TrimSpace(string(key))}
	if r := c.get("/readyz"); r.status != 200 {
		t.Fatalf("readyz %d: %s", r.status, r.body)
	}
	data, err := os.ReadFile("../../testdata/kap/10-client-c001.json")
	if err != nil {
		t.Fatal(err)
	}
	r := c.post("/kap/v1/clients", data)
	if r.status != 201 {
		t.Fatalf("POST: %d %s", r.status, r.body)
	}
	waitFor(t, "the Bundle in the ndjson folder", func() bool { return len(ndjsonLines(t, dir)) > 0 })
	lines := ndjsonLines(t, dir)
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1", len(lines))
	}
	b := lines[0]
	if b["resourceType"] != "Bundle" || b["type"] != "transaction" {
		t.Fatalf("line is not a transaction Bundle: %v", b["resourceType"])
	}
	var want struct {
		Bundle map[string]any `json:"bundle"`
	}
	if err := json.Unmarshal(r.body, &want); err != nil || want.Bundle == nil {
		t.Fatalf("response has no bundle: %v", err)
	}
	gotJSON, _ := json.Marshal(b)
	wantJSON, _ := json.Marshal(want.Bundle)
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("the delivered Bundle differs from the mapped one")
	}
	// The files are private.
	files, _ := filepath.Glob(filepath.Join(dir, "ndjson", "*.ndjson"))
	if st, err := os.Stat(files[0]); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", st.Mode(), err)
	}
	// The same record again is not a new version: nothing more is sent.
	if r := c.post("/kap/v1/clients", data); r.status != 200 {
		t.Fatalf("resubmission: %d %s", r.status, r.body)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(ndjsonLines(t, dir)); n != 1 {
		t.Fatalf("%d lines after a resubmission, want 1", n)
	}
	// The worker metrics are on /metrics.
	if r := c.get("/metrics"); r.status != 200 || !strings.Contains(string(r.body), `kapbridge_deliveries_total{outcome="delivered",target="ndjson"} 1`) {
		t.Fatalf("/metrics lacks the delivery:\n%s", r.body)
	}
	// The worker logged its start, and nothing of the record.
	out := logs.String()
	if !strings.Contains(out, "delivery worker started") {
		t.Fatalf("no worker start in the log")
	}
	for _, s := range phiStrings(t, loadRecords(t)) {
		if len(s) >= 3 && strings.Contains(out, s) {
			t.Errorf("the log holds %q", s)
		}
	}
}

// /readyz is 503 while a process whose role runs workers has them stopped;
// an api-only process runs none and is ready.
func TestReadyzFollowsTheWorkers(t *testing.T) {
	dir := t.TempDir()
	m := startServer(t, dir, io.Discard)
	defer m.Close()
	c := &httpClient{t: t, base: "http://" + m.Addr()}
	ready := c.get("/readyz")
	if ready.status != 200 {
		t.Fatalf("readyz %d: %s", ready.status, ready.body)
	}
	// The body reports each target's circuit, as the worker sees it.
	var body struct {
		Status   string            `json:"status"`
		Circuits map[string]string `json:"circuits"`
	}
	if err := json.Unmarshal(ready.body, &body); err != nil {
		t.Fatalf("readyz body %s: %v", ready.body, err)
	}
	want := map[string]string{}
	for _, th := range m.dlv.worker.Health().Targets {
		want[th.Name] = th.Circuit
	}
	if body.Status != "ready" || len(body.Circuits) == 0 || !reflect.DeepEqual(body.Circuits, want) {
		t.Fatalf("readyz body %s, want status ready and circuits %v", ready.body, want)
	}
	if err := m.dlv.worker.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := c.get("/readyz")
	expectOutcome(t, r, 503, "")
	if !strings.Contains(string(r.body), "delivery workers are not running") {
		t.Fatalf("readyz body: %s", r.body)
	}

	api := &serveMain{cfg: serveConfig{Config: config.Config{Role: config.RoleAPI}, Addr: "127.0.0.1:0",
		DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}}
	if err := api.Open(); err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	if api.dlv != nil {
		t.Fatal("an api-only process started a worker")
	}
	c = &httpClient{t: t, base: "http://" + api.Addr()}
	if r := c.get("/readyz"); r.status != 200 {
		t.Fatalf("api readyz %d: %s", r.status, r.body)
	}
}

func TestBuildSenderRefusesBadTargets(t *testing.T) {
	dir := t.TempDir()
	m := startServer(t, dir, io.Discard)
	defer m.Close()
	d := deliveryDeps{Store: m.store, Logger: slog.New(slog.DiscardHandler), Getenv: func(string) string { return "" }}
	for _, c := range []struct {
		t    config.Target
		want string
	}{
		{config.Target{Name: "x", Type: "sftp"}, "targets x: type must be fhir or ndjson"},
		{config.Target{Name: "ehr", Type: "fhir", BaseURL: "ftp://ehr.example"}, "base URL"},
		{config.Target{Name: "ehr", Type: "fhir", BaseURL: "https://ehr.example/fhir", Auth: config.TargetAuth{Type: "bearer", TokenEnv: "EHR_TOKEN"}}, "EHR_TOKEN"},
		{config.Target{Name: "ehr", Type: "fhir", BaseURL: "https://ehr.example/fhir", Profile: "nope"}, "no write profile"},
		{config.Target{Name: "ehr", Type: "fhir", BaseURL: "https://ehr.example/fhir", Profile: filepath.Join(dir, "missing.json")}, "profile"},
		{config.Target{Name: "files", Type: "ndjson"}, "dir is required"},
	} {
		_, _, err := buildSender(d, c.t)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.t, err, c.want)
		}
	}
	s, closeFn, err := buildSender(d, config.Target{Name: "ehr", Type: "fhir", BaseURL: "https://ehr.example/fhir", Profile: "epic"})
	if err != nil || s.Target() != "ehr" {
		t.Fatalf("fhir target: %v", err)
	}
	closeFn()
}

// kapbridge serve with a fhir target delivers a submitted client to a real
// FHIR server (ehrtest: Medplum's fhir-router), through targetauth and
// adapters/ehr, and resubmitting a new version updates the same Patient.
func TestServeDeliversToAFHIRTarget(t *testing.T) {
	srv := ehrtest.Start(t, ehrtest.Options{Mode: ehrtest.ModeTransaction})
	no := false
	conf := config.Config{Targets: []config.Target{{Name: "ehr", Type: "fhir", BaseURL: srv.URL, RequireConsent: &no}}}
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
	data, err := os.ReadFile("../../testdata/kap/10-client-c001.json")
	if err != nil {
		t.Fatal(err)
	}
	if r := c.post("/kap/v1/clients", data); r.status != 201 {
		t.Fatalf("POST: %d %s", r.status, r.body)
	}
	waitFor(t, "the Patient at the FHIR server", func() bool { return srv.Stats().Resources["Patient"] == 1 })
	waitFor(t, "the delivery to be acknowledged", func() bool {
		st, err := m.store.Outbox().Stats(context.Background(), "ehr")
		return err == nil && st.Depth == 0
	})
	// A second version (a new phone number) updates the same Patient.
	var rec map[string]any
	json.Unmarshal(data, &rec)
	rec["phone"] = "602-555-0199"
	edited, _ := json.Marshal(rec)
	if r := c.do("PUT", "/kap/v1/clients/"+rec["id"].(string), c.key, edited); r.status != 200 && r.status != 201 {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	waitFor(t, "the second version to be acknowledged", func() bool {
		st, err := m.store.Outbox().Stats(context.Background(), "ehr")
		return err == nil && st.Depth == 0 && srv.Stats().Interactions["transaction"] >= 2
	})
	st := srv.Stats()
	if st.Resources["Patient"] != 1 || len(st.Duplicates) != 0 {
		t.Fatalf("resources %v, duplicates %v", st.Resources, st.Duplicates)
	}
	if h := m.deliveryWorker().Health(); h.Targets[0].Name != "ehr" || h.Targets[0].Delivered != 2 || h.Targets[0].Circuit != "closed" {
		t.Fatalf("health %+v", h)
	}
}

// Every testdata record delivered through faults (15% 503, 5% of answers
// lost after the write, a 429 burst): afterwards every resource is at the
// FHIR server once, nothing is dead-lettered, and the ledger holds the
// server's id of every resource as confirmed.
func TestServeDeliversThroughFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a FHIR server and waits for retries")
	}
	srv := ehrtest.Start(t, ehrtest.Options{Mode: ehrtest.ModeTransaction})
	no := false
	conf := config.Config{Targets: []config.Target{{Name: "ehr", Type: "fhir", BaseURL: srv.URL, RequireConsent: &no}}}
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
	srv.Fail429(2, time.Second)
	srv.Fail503(0, 15, 0)
	srv.Drop(0, 5)
	recs := loadRecords(t)
	for _, r := range recs {
		if resp := c.post("/kap/v1/"+httpapi.CollectionOf(r.kind), r.data); resp.status != 201 {
			t.Fatalf("%s: %d %s", r.file, resp.status, resp.body)
		}
	}
	ctx := context.Background()
	waitFor(t, "the outbox to drain", func() bool {
		st, err := m.store.Outbox().Stats(ctx, "ehr")
		return err == nil && st.Depth == 0
	})
	srv.ClearFaults()
	st := srv.Stats()
	if len(st.Duplicates) != 0 {
		t.Fatalf("duplicates at the server: %v", st.Duplicates)
	}
	if st.Faults["503"] == 0 || st.Faults["drop"] == 0 {
		t.Fatalf("the faults did not happen: %v", st.Faults)
	}
	dls, err := m.store.Outbox().DeadLetters(ctx, "default", "ehr", 100)
	if err != nil || len(dls) != 0 {
		t.Fatalf("dead letters: %d %v", len(dls), err)
	}
	var checked int
	for _, r := range recs {
		sr, err := m.store.Records().Get(ctx, "default", string(r.kind), r.id)
		if err != nil {
			t.Fatal(err)
		}
		for _, ref := range sr.Resources {
			e, err := m.store.Ledger().Get(ctx, kap.LedgerKey{Tenant: "default", Target: "ehr", ResourceType: ref.Type, Identifier: ref.System + "|" + ref.Value})
			if err != nil || e.State != kap.LedgerConfirmed || e.TargetID == "" {
				t.Fatalf("%s %s: ledger %+v %v", r.file, ref.Type, e, err)
			}
			if n := srv.Count(ref.Type, ref.System, ref.Value); n != 1 {
				t.Fatalf("%s %s: %d at the server, want 1", r.file, ref.Type, n)
			}
			checked++
		}
	}
	h := m.deliveryWorker().Health().Targets[0]
	t.Logf("%d records, %d resources checked; faults %v; worker: %d delivered, %d failed attempts", len(recs), checked, st.Faults, h.Delivered, h.Failed)
}
