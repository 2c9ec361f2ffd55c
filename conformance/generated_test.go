package conformance_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kapbridge/kap/conformance"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/synth"
	"github.com/kapbridge/kap/mapping"
)

// TestGeneratedCourseConformance maps a generated course of at least 500
// records (every record kind and route) and runs both third-party
// validators, with the KAP profiles, and the Go US Core checks over every
// Bundle: zero errors is the bar.
func TestGeneratedCourseConformance(t *testing.T) {
	t.Parallel()
	clients := 36
	if testing.Short() {
		clients = 3
	}
	recs, err := synth.Generate(synth.Options{Clients: clients, Seed: 20261123})
	if err != nil {
		t.Fatal(err)
	}
	if !testing.Short() && len(recs) < 500 {
		t.Fatalf("generated only %d records; the bar is 500 Bundles", len(recs))
	}
	codec := fhir.MustCodec()
	m := mapping.New(codec, mapping.Options{Tenant: "generated"})
	dir := t.TempDir()
	var paths []string
	usIssues := 0
	for i, r := range recs {
		b, err := m.Map(r, mapping.MapInput{Version: 1, Recorded: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)})
		if err != nil {
			t.Fatalf("%s %s: %v", r.RecordKind(), r.RecordID(), err)
		}
		for _, is := range append(conformance.CheckUSCore(b), conformance.CheckKAPDeclarations(b)...) {
			usIssues++
			if usIssues <= 20 {
				t.Errorf("%s %s: US Core/KAP check: %s", r.RecordKind(), r.RecordID(), is)
			}
		}
		data, err := codec.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("%05d.json", i))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	if usIssues > 0 {
		t.Fatalf("%d US Core/KAP check issues", usIssues)
	}
	v := validators(t)
	rep, err := v.Run(ctxFor(t), []string{dir}, profilesDir(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d Bundles, %d resources validated by Medplum and the R4 JSON schema; profiles checked: %v",
		rep.Files, rep.Resources, conformance.SortedCounts(rep.ProfilesChecked))
	if rep.Files != len(paths) {
		t.Fatalf("validators saw %d files, want %d", rep.Files, len(paths))
	}
	if err := rep.Failure(); err != nil {
		t.Fatal(err)
	}
}
