package ehr_test

import (
	"testing"

	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
)

// startEHR starts the Medplum FHIR test server (ehrtest) for the pull tests
// and returns its FHIR base URL. It is skipped under -short.
func startEHR(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("the Medplum FHIR test server is skipped under -short")
	}
	return ehrtest.Start(t, ehrtest.Options{}).URL
}
