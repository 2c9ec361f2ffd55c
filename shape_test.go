package kap_test

import (
	"os"
	"strings"
	"testing"

	"github.com/kapbridge/kap"
)

// TestShapeErrors: problems encoding/json hides or reports without a full
// path are named with their full path.
func TestShapeErrors(t *testing.T) {
	data, err := os.ReadFile("testdata/kap/16-dosing-c001-1.json")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	tests := []struct {
		name, from, to, path, reason string
	}{
		{"nested unknown field", `"doseMg":`, `"dose":1,"doseMg":`, "administrations[0].dose", "unknown field"},
		{"case variant", `"weightKg":`, `"WEIGHTKG":1,"weightKg":`, "WEIGHTKG", `case-sensitive: "weightKg"`},
		{"duplicate key", `"weightKg":`, `"weightKg":70,"weightKg":`, "weightKg", "appears twice"},
		{"wrong type in array", `"doseMg":`, `"doseMg":"x","lotNumber":`, "administrations[0].doseMg", "must be a number, not a JSON string"},
		{"fraction for an integer", `"sessionNumber": 1`, `"sessionNumber": 1.5`, "sessionNumber", "whole number"},
		{"object for a string", `"clientId": "c001"`, `"clientId": {"a":1}`, "clientId", "must be a string, not a JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := strings.Replace(doc, tc.from, tc.to, 1)
			if in == doc {
				t.Fatalf("fixture does not contain %q", tc.from)
			}
			_, err := kap.DecodeRecord([]byte(in))
			for _, is := range kap.ErrorIssues(err) {
				if is.Path == tc.path && strings.Contains(is.Reason, tc.reason) {
					return
				}
			}
			t.Fatalf("want issue %s: %s; got %v", tc.path, tc.reason, err)
		})
	}
}
