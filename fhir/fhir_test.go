package fhir_test

import (
	"strings"
	"testing"
	"time"

	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	ptpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/patient_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

func TestPrecheck(t *testing.T) {
	tests := []struct{ in, path, reason string }{
		{`{"a":1,"a":2}`, "a", "duplicate key"},
		{`{"gender":"x","Gender":"y"}`, "Gender", "only in case"},
		{`{"text":{}}`, "text", "empty object"},
		{`{"name":[]}`, "name", "empty array"},
		{`{"id":null}`, "id", "null"},
		{`{"id":"  "}`, "id", "blank string"},
		{`{"a":1} x`, "", "unexpected data"},
		{`{"a":`, "", "malformed"},
		{`{"a":1}{}`, "", "unexpected data"},
	}
	for _, tc := range tests {
		found := false
		for _, is := range fhir.Precheck([]byte(tc.in)) {
			found = found || (is.Path == tc.path && strings.Contains(is.Reason, tc.reason))
		}
		if !found {
			t.Errorf("%s: no issue %s: %s in %v", tc.in, tc.path, tc.reason, fhir.Precheck([]byte(tc.in)))
		}
	}
	if is := fhir.Precheck([]byte(`{"resourceType":"Patient","name":[{"family":"A"}]}`)); len(is) != 0 {
		t.Errorf("clean document: %v", is)
	}
	deep := strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100)
	if is := fhir.Precheck([]byte(deep)); len(is) == 0 {
		t.Error("nesting beyond the limit was not reported")
	}
}

func TestUnmarshalRefusesWhatJSONFormatTolerates(t *testing.T) {
	c := fhir.MustCodec()
	for _, in := range []string{
		`{"resourceType":"Patient","Gender":"male"}`,              // case-variant field name
		`{"resourceType":"Patient","gender":"male","gender":"x"}`, // duplicate key
		`{"resourceType":"Patient","text":{}}`,                    // empty object
		`{"resourceType":"Observation","code":{"text":"x"}}`,      // missing status
		`{"resourceType":"Nope"}`,                                 // unknown type
	} {
		if _, err := c.Unmarshal([]byte(in)); kap.ErrorCode(err) != kap.EINVALID || len(kap.ErrorIssues(err)) == 0 {
			t.Errorf("%s: got %v, want EINVALID with issues", in, err)
		}
	}
	cr, err := c.Unmarshal([]byte(`{"resourceType":"Patient","id":"p1","gender":"female","birthDate":"1990-02-03"}`))
	if err != nil {
		t.Fatal(err)
	}
	if fhir.ResourceType(cr) != "Patient" || fhir.DateString(cr.GetPatient().GetBirthDate()) != "1990-02-03" {
		t.Fatalf("parsed %v", cr)
	}
}

func TestRoundTripDatatypes(t *testing.T) {
	c := fhir.MustCodec()
	now := time.Date(2026, 3, 10, 14, 5, 0, 0, time.FixedZone("", -7*3600))
	p := &ptpb.Patient{
		Id:                   fhir.ID("p1"),
		Identifier:           []*dpb.Identifier{fhir.Identifier("https://x/sid/Patient", "c001")},
		BirthDate:            fhir.Date("1985-04-12"),
		ManagingOrganization: fhir.Ref(fhir.ConditionalRef("Organization", "https://x/sid/Organization", "clinic")),
	}
	data, err := c.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	cr, err := c.Unmarshal(data)
	if err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	got := cr.GetPatient()
	typ, sys, val, ok := fhir.ParseConditionalRef(fhir.RefString(got.GetManagingOrganization()))
	if !ok || typ != "Organization" || sys != "https://x/sid/Organization" || val != "clinic" {
		t.Errorf("conditional reference came back as %q", fhir.RefString(got.GetManagingOrganization()))
	}
	if fhir.IdentifierValue(got.GetIdentifier(), "https://x/sid/Patient") != "c001" {
		t.Error("identifier lost")
	}
	if !fhir.Time(fhir.DateTime(now)).Equal(now) {
		t.Error("DateTime does not keep the instant")
	}
	if fhir.Decimal(0.1).GetValue() != "0.1" || fhir.DecimalValue(fhir.Decimal(72.5)) != 72.5 {
		t.Error("decimal text")
	}
	if r := fhir.Ref("Patient/123"); fhir.RefString(r) != "Patient/123" {
		t.Errorf("RefString = %q", fhir.RefString(r))
	}
}

func TestOutcome(t *testing.T) {
	err := &kap.Error{Code: kap.EINVALID, Issues: []kap.Issue{
		{Path: "administrations[0].route", Reason: "must be one of IV, IM, SL, PO, IN"},
		{Path: "weightKg", Reason: "is required"},
		{Path: "fastingHours", Reason: "short fast", Severity: "warning"},
	}}
	oo := fhir.Outcome(err)
	if len(oo.GetIssue()) != 3 || !fhir.HasErrors(oo) {
		t.Fatalf("outcome %v", oo)
	}
	if got := oo.GetIssue()[0].GetExpression()[0].GetValue(); got != "administrations[0].route" {
		t.Errorf("expression %q", got)
	}
	if fhir.HasErrors(fhir.Outcome(nil)) {
		t.Error("nil error gives errors")
	}
	// internal errors never leak their cause
	o := fhir.Outcome(&kap.Error{Code: kap.EINTERNAL, Message: "internal error", Err: errSecret{}})
	if strings.Contains(o.String(), "secret") {
		t.Error("cause leaked into the outcome")
	}
}

type errSecret struct{}

func (errSecret) Error() string { return "secret detail" }
