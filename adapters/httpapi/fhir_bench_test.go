package httpapi_test

// Benchmarks of the facade's read and search paths on the bbolt store with
// the testdata course of client c001 (18 records, 419 Observations).

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/kapbridge/kap/adapters/bolt"
)

func fxBenchServer(b *testing.B) (base, pid, obsID string) {
	st, err := bolt.Open(filepath.Join(b.TempDir(), "kap.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	srv := fxServer(b, st)
	bundles := fxLoad(b, srv)
	for id := range fxEntries(bundles, "Patient") {
		pid = id
	}
	obsID = fxKeys(fxEntries(bundles, "Observation"))[0]
	return srv.URL + "/fhir/r4", pid, obsID
}

func fxBench(b *testing.B, u string) {
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := fxDo(b, "GET", u, "key-a", nil); r.status != http.StatusOK {
			b.Fatalf("status %d: %s", r.status, r.body)
		}
	}
}

// BenchmarkFHIRRead: GET Observation/<id> (index lookup, record read, one
// Bundle parsed).
func BenchmarkFHIRRead(b *testing.B) {
	base, _, id := fxBenchServer(b)
	fxBench(b, base+"/Observation/"+id)
}

// BenchmarkFHIRSearchPatient: the first page (50) of Observation?patient=,
// which reads and parses every record of the client.
func BenchmarkFHIRSearchPatient(b *testing.B) {
	base, pid, _ := fxBenchServer(b)
	fxBench(b, base+"/Observation?patient="+pid+"&_count=50")
}

// BenchmarkFHIRSearchPatientCode: the same with code and date filters.
func BenchmarkFHIRSearchPatientCode(b *testing.B) {
	base, pid, _ := fxBenchServer(b)
	fxBench(b, base+"/Observation?patient="+pid+"&code=http://loinc.org|8867-4&date=ge2026-03-01")
}

// BenchmarkFHIRSearchIdentifier: Observation?identifier=, one Lookup.
func BenchmarkFHIRSearchIdentifier(b *testing.B) {
	base, _, id := fxBenchServer(b)
	fxBench(b, base+"/Observation?_id="+id)
}
