package main

import (
	"encoding/json"
	"strings"
	"testing"
)

const td = "../../testdata/"

func TestClaimCommand(t *testing.T) {
	code, out, errs := run(t, "", "claim", "--coverage", td+"payer/coverage/cov-c005.json", "--intake", td+"kap/61-intake-c005.json",
		"--provider", td+"kap/00-provider-prescriber.json", td+"kap/65-dosing-c005-1-esketamine56.json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var doc struct {
		Payer string         `json:"payer"`
		Claim map[string]any `json:"claim"`
		Lines struct {
			ProviderID string `json:"providerId"`
			Lines      []struct {
				Code      string   `json:"code"`
				Modifiers []string `json:"modifiers"`
				Units     int      `json:"units"`
			} `json:"lines"`
		} `json:"lines"`
		Accepted bool `json:"accepted"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// The coverage names the Medicare J15 profile: G2082 with KX, the
	// prescriber renders.
	if doc.Payer != "medicare-j15" || !doc.Accepted || doc.Claim["resourceType"] != "Claim" || doc.Lines.ProviderID != "p-md01" {
		t.Errorf("payer %s accepted %v provider %s claim %v", doc.Payer, doc.Accepted, doc.Lines.ProviderID, doc.Claim["resourceType"])
	}
	if len(doc.Lines.Lines) != 1 || doc.Lines.Lines[0].Code != "G2082" || strings.Join(doc.Lines.Lines[0].Modifiers, ",") != "KX" {
		t.Errorf("lines %+v", doc.Lines.Lines)
	}

	// No coverage, no diagnosis: refused with both reasons, exit 1.
	code, out, errs = run(t, "", "claim", "--payer", "generic", td+"kap/18-dosing-c001-2.json")
	if code != 1 || !strings.Contains(errs, "missing-coverage") || !strings.Contains(errs, "missing-diagnosis") || !strings.Contains(out, `"claim": null`) {
		t.Errorf("exit %d\n%s\n%s", code, out, errs)
	}
	// Unknown payer, wrong record kind, usage.
	if code, _, errs := run(t, "", "claim", "--payer", "nope", td+"kap/18-dosing-c001-2.json"); code != 2 || !strings.Contains(errs, "generic") {
		t.Errorf("unknown payer: exit %d %s", code, errs)
	}
	if code, _, errs := run(t, "", "claim", td+"kap/10-client-c001.json"); code != 1 || !strings.Contains(errs, "DosingSession") {
		t.Errorf("client as session: exit %d %s", code, errs)
	}
	if code, _, _ := run(t, "", "claim"); code != 2 {
		t.Errorf("no file: exit %d", code)
	}
	if code, _, errs := run(t, "{", "claim", "-"); code != 1 || !strings.Contains(errs, "malformed JSON") {
		t.Errorf("bad JSON: exit %d %s", code, errs)
	}
}

func TestREMSCommand(t *testing.T) {
	session := td + "kap/75-dosing-c006-7-esketamine84.json"
	code, out, errs := run(t, "", "rems", "--intake", td+"kap/71-intake-c006.json", session)
	if code != 1 || !strings.Contains(out, "INCOMPLETE: 1 item") || !strings.Contains(errs, "conmed-sedative-hypnotics") {
		t.Errorf("exit %d\n%s\n%s", code, out, errs)
	}
	code, out, errs = run(t, `{"sedativeHypnotics": false}`, "rems", "--intake", td+"kap/71-intake-c006.json", "--answers", "-", "--format", "fhir", session)
	if code != 0 || !strings.Contains(out, `"resourceType": "QuestionnaireResponse"`) || !strings.Contains(out, `"status": "completed"`) {
		t.Errorf("exit %d\n%s\n%s", code, out, errs)
	}
	code, out, _ = run(t, `{"sedativeHypnotics": false}`, "rems", "--intake", td+"kap/71-intake-c006.json", "--answers", "-", "--format", "html", session)
	if code != 0 || !strings.Contains(out, "Submit by 2026-03-02") {
		t.Errorf("html: exit %d\n%s", code, out)
	}
	if code, _, errs := run(t, `{"bogus": true}`, "rems", "--answers", "-", session); code != 1 || !strings.Contains(errs, "sedativeHypnotics") {
		t.Errorf("bad answers: exit %d %s", code, errs)
	}
	if code, _, errs := run(t, "", "rems", td+"kap/16-dosing-c001-1.json"); code != 1 || !strings.Contains(errs, "esketamine") {
		t.Errorf("IV session: exit %d %s", code, errs)
	}
}
