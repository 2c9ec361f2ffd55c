package admin_test

import (
	"os"
	"testing"
	"time"

	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
)

// fhirPeer is the real FHIR R4 test server of adapters/ehr/ehrtest
// (Medplum fhir-router over its in-memory repository, run by Node 22) on a
// loopback port; its control port injects the outage.
type fhirPeer struct {
	Base string
	srv  *ehrtest.Server
}

// startPeer starts the server; ehrtest.Start skips the test when its
// packages are missing, or fails it with CI=true.
func startPeer(t *testing.T) *fhirPeer {
	t.Helper()
	srv := ehrtest.Start(t, ehrtest.Options{Mode: ehrtest.ModeTransaction, StartTimeout: 2 * time.Minute})
	return &fhirPeer{Base: srv.URL, srv: srv}
}

// Stop closes every FHIR connection, open and new, until Restart: to the
// gateway the EHR is down.
func (f *fhirPeer) Stop(t *testing.T) { f.srv.Outage(10 * time.Minute) }

// Restart ends the outage.
func (f *fhirPeer) Restart(t *testing.T) { f.srv.ClearFaults() }

// Count returns how many resources with the identifier system|value the
// server holds under resourceType.
func (f *fhirPeer) Count(t *testing.T, resourceType, system, value string) int {
	t.Helper()
	return f.srv.StatsWithIdentifiers().ByIdentifier[resourceType+"|"+system+"|"+value]
}

func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: browser tests must run)")
	}
	t.Skip(msg)
}
