package httpapi_test

// A real third-party FHIR client against the running facade: fhir-kit-client
// (pinned in testdata/fhirkit/package.json and package-lock.json, installed
// by scripts/test-deps.sh) under Node reads the CapabilityStatement, runs a
// search and follows its next links, reads a resource and sees a refusal.

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fxNode finds a Node.js for testdata/fhirkit: the Node 22 the conformance
// packages install (conformance/node/node_modules/.bin/node), else node on
// PATH. It skips (fails when CI=true) when Node or the npm packages are
// missing.
func fxNode(t *testing.T) (node, dir string) {
	t.Helper()
	missing := func(what string) {
		msg := what + "; run scripts/test-deps.sh (npm ci in adapters/httpapi/testdata/fhirkit)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir, _ = filepath.Abs(filepath.Join("testdata", "fhirkit"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "fhir-kit-client", "package.json")); err != nil {
		missing("fhir-kit-client is not installed")
	}
	bundled, _ := filepath.Abs(filepath.Join("..", "..", "conformance", "node", "node_modules", ".bin", "node"))
	if _, err := os.Stat(bundled); err == nil {
		return bundled, dir
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("no node executable")
	}
	out, err := exec.Command(node, "-p", "process.versions.node").Output()
	if major, _ := strconv.Atoi(strings.SplitN(strings.TrimSpace(string(out)), ".", 2)[0]); err != nil || major < 20 {
		missing("fhir-kit-client needs Node 20 or later")
	}
	return node, dir
}

func TestFHIRKitClient(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Node (not under -short)")
	}
	node, dir := fxNode(t)
	srv := fxServer(t, openBolt(t))
	bundles := fxLoad(t, srv)
	obs := fxEntries(bundles, "Observation")
	var pid string
	for id := range fxEntries(bundles, "Patient") {
		pid = id
	}
	const count = 9
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "fhirkit.mjs"), srv.URL+"/fhir/r4", "key-a", pid, strconv.Itoa(count))
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("fhir-kit-client run: %v\n%s\n%s", err, out, stderr)
	}
	var got struct {
		Capability struct {
			ResourceType, FhirVersion string
			ObservationInteractions   []string
			ObservationSearchParams   []string
		}
		Total   int
		Pages   int
		IDs     []string
		Read    struct{ ID, VersionID string }
		Created struct{ ID, VersionID, ReadBack, Subject string }
		// Refused is the status and issue code of a search without patient.
		Refused struct {
			Status int
			Code   string
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("output: %v: %s", err, out)
	}
	if got.Capability.ResourceType != "CapabilityStatement" || got.Capability.FhirVersion != "4.0.1" ||
		!slices.Contains(got.Capability.ObservationInteractions, "search-type") ||
		!slices.Contains(got.Capability.ObservationSearchParams, "patient") {
		t.Errorf("capability as the client read it: %+v", got.Capability)
	}
	if !slices.Equal(fxSorted(got.IDs), fxKeys(obs)) || got.Total != len(obs) {
		t.Errorf("paged search through the client: %d ids (total %d), want %d", len(got.IDs), got.Total, len(obs))
	}
	if want := (len(obs) + count - 1) / count; got.Pages != want {
		t.Errorf("%d pages, want %d", got.Pages, want)
	}
	if len(got.IDs) > 0 && (got.Read.ID != got.IDs[0] || got.Read.VersionID != "1") {
		t.Errorf("read: %+v", got.Read)
	}
	if got.Created.ID == "" || got.Created.VersionID != "1" || got.Created.ReadBack != got.Created.ID || got.Created.Subject != "Patient/"+pid {
		t.Errorf("create through the client: %+v", got.Created)
	}
	if got.Refused.Status != 400 || got.Refused.Code != "too-costly" {
		t.Errorf("refused search: %+v", got.Refused)
	}
}
