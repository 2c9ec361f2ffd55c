package main

import (
	"bytes"
	"context"
	"encoding/json"
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
