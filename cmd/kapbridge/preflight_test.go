package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPreflightCommand(t *testing.T) {
	var out, errb bytes.Buffer
	code := Run(context.Background(), []string{"preflight", "--profile", "oracle-health", "--json", "../../testdata/fhir/16-dosing-c001-1.json"}, nil, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var got struct {
		Profile  string `json:"profile"`
		Findings []struct {
			ResourceType, Action string
		} `json:"findings"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range got.Findings {
		if f.ResourceType == "MedicationAdministration" && f.Action == "fallback" {
			n++
		}
	}
	if got.Profile != "oracle-health" || n != 1 {
		t.Errorf("profile %q, %d MedicationAdministration fallbacks; want oracle-health, 1", got.Profile, n)
	}

	// A kap/v1 record is mapped first; --strict fails when something is refused.
	out.Reset()
	if code := Run(context.Background(), []string{"preflight", "--profile", "epic", "--strict", "../../testdata/kap/16-dosing-c001-1.json"}, nil, &out, &errb); code != 1 {
		t.Errorf("--strict on an Epic dosing session: exit %d, want 1", code)
	}
	if !strings.Contains(out.String(), "summary:") {
		t.Errorf("no summary line:\n%s", out.String())
	}
	if code := Run(context.Background(), []string{"preflight", "--profile", "nosuch", "x.json"}, nil, &out, &errb); code != 2 {
		t.Errorf("unknown profile: exit %d, want 2", code)
	}
}

func TestPreflightProfileFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "readonly.json")
	os.WriteFile(f, []byte(`{"name":"readonly","writes":{},"provenance":{},"fallback":{"enabled":false},"default":{"interactions":[],"otherwise":"not-sent","assumed":true},"resources":[]}`), 0o600)
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"preflight", "--profile", f, "../../testdata/fhir/10-client-c001.json"}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "summary: 0 fallback, 2 not sent") {
		t.Errorf("a read-only profile file should refuse both resources:\n%s", out.String())
	}
	os.WriteFile(f, []byte(`{"name":"bad"}`), 0o600)
	if code := Run(context.Background(), []string{"preflight", "--profile", f, "../../testdata/fhir/10-client-c001.json"}, nil, &out, &errb); code != 2 {
		t.Errorf("invalid profile file: exit %d, want 2", code)
	}
}
