package httpapi_test

// The facade's answers through the third-party validators (Medplum's
// validateResource and ajv with the official R4 JSON schema, see
// conformance/external.go): the searchset, history, transaction-response
// and batch-response Bundles and the resources are built by hand from
// stored JSON, so an independent check matters.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap/conformance"
)

func TestFHIRResponsesThirdPartyValid(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Node (not under -short)")
	}
	v, err := conformance.FindValidators("")
	if errors.Is(err, conformance.ErrValidatorsNotInstalled) && os.Getenv("CI") != "true" {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	srv := fxServer(t, openBolt(t))
	bundles := fxLoad(t, srv)
	base := srv.URL + "/fhir/r4"
	var pid, encID, obsID string
	for id := range fxEntries(bundles, "Patient") {
		pid = id
	}
	for id := range fxEntries(bundles, "Encounter") {
		encID = id
	}
	obsID = fxKeys(fxEntries(bundles, "Observation"))[0]
	dir := t.TempDir()
	var paths []string
	save := func(name string, r fxResp) {
		t.Helper()
		if r.status >= 500 {
			t.Fatalf("%s: %d %s", name, r.status, r.body)
		}
		p := filepath.Join(dir, strconv.Itoa(len(paths))+"-"+name+".json")
		if err := os.WriteFile(p, r.body, 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	get := func(u string) fxResp { return fxDo(t, "GET", base+u, "key-a", nil) }
	save("metadata", get("/metadata"))
	save("observation", get("/Observation/"+obsID))
	save("patient", get("/Patient/"+pid))
	save("encounter-vread", get("/Encounter/"+encID+"/_history/1"))
	save("encounter-history", get("/Encounter/"+encID+"/_history"))
	save("searchset", get("/Observation?patient="+pid+"&_count=10&_include=Observation:patient"))
	save("searchset-procedures", get("/Procedure?patient="+pid))
	save("count", get("/Observation?patient="+pid+"&_summary=count"))
	save("too-costly", get("/Observation?code=8867-4"))
	pURN := "urn:uuid:6f1b7e2c-0d7a-4a38-9d53-1c1d2e3f4a5b"
	save("transaction-response", fxDo(t, "POST", base, "key-a", fxBundle("transaction",
		fxEntry(pURN, "POST", "Patient", fxPatient("c950")),
		fxEntry("", "POST", "Condition", fxCondition(pURN)),
		fxEntry("", "POST", "AllergyIntolerance", fxAllergy(pURN)))))
	bad := fxHeartRate("Patient?identifier="+fxMRN+"|c950", 70)
	bad["status"] = "bogus"
	save("batch-response", fxDo(t, "POST", base, "key-a", fxBundle("batch",
		fxEntry("", "POST", "MedicationStatement", fxMedStatement("Patient?identifier="+fxMRN+"|c950")),
		fxEntry("", "POST", "Observation", bad))))
	save("created", fxDo(t, "POST", base+"/Observation", "key-a", fxJSON(fxHeartRate("Patient?identifier="+fxMRN+"|c950", 71))))
	save("unknown-patient", fxDo(t, "POST", base+"/Observation", "key-a", fxJSON(fxHeartRate("Patient/nobody", 70))))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := v.Run(ctx, paths, "")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Files != len(paths) || rep.Resources < len(paths) {
		t.Errorf("validated %d files, %d resources (want %d files)", rep.Files, rep.Resources, len(paths))
	}
	// Known false positive: the official R4 fhir.schema.json (published
	// with 4.0.0) enumerates fhirVersion codes only up to 4.0.0, so it
	// refuses the "4.0.1" every R4 CapabilityStatement must declare.
	var errs []conformance.ValidationError
	for _, e := range rep.Errors {
		if e.Validator == "ajv" && e.Path == "CapabilityStatement.fhirVersion" {
			continue
		}
		errs = append(errs, e)
	}
	rep.Errors = errs
	if err := rep.Failure(); err != nil {
		t.Error(strings.ReplaceAll(err.Error(), dir+"/", ""))
	}
	t.Logf("%d files, %d resources, %d warnings, no errors", rep.Files, rep.Resources, rep.Warnings)
}
