package httpapi

// The cost of the FHIR id index on a record put (bbolt, fsync per
// transaction): the index adds one Get and, for a record whose ids are not
// indexed yet, one Put.

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/fhir"
)

func benchPut(b *testing.B, index bool) {
	st, err := bolt.Open(filepath.Join(b.TempDir(), "kap.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	bundle, err := os.ReadFile("../../testdata/fhir/16-dosing-c001-1.json")
	if err != nil {
		b.Fatal(err)
	}
	var s kap.Store = st
	if index {
		s = withFHIRIndex(st)
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := "ds-" + strconv.Itoa(i)
		_, _, err := s.Records().Put(ctx, kap.StoredRecord{Tenant: "t", Kind: "DosingSession", ID: id, ClientID: "c001",
			ContentHash: id, Bundle: bundle}, kap.PutOptions{})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPutWithoutFHIRIndex(b *testing.B) { benchPut(b, false) }
func BenchmarkPutWithFHIRIndex(b *testing.B)    { benchPut(b, true) }

// TestFHIRIndexResolves: every id of a put record resolves to it, also
// after a version that drops a resource (vread of old versions needs it).
func TestFHIRIndexResolves(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := withFHIRIndex(st)
	ctx := context.Background()
	v1 := []byte(`{"resourceType":"Bundle","type":"transaction","entry":[
		{"fullUrl":"urn:uuid:11111111-1111-5111-8111-111111111111","resource":{"resourceType":"Observation"}},
		{"fullUrl":"urn:uuid:22222222-2222-5222-8222-222222222222","resource":{"resourceType":"Encounter"}}]}`)
	v2 := []byte(`{"resourceType":"Bundle","type":"transaction","entry":[
		{"fullUrl":"urn:uuid:22222222-2222-5222-8222-222222222222","resource":{"resourceType":"Encounter"}}]}`)
	for i, b := range [][]byte{v1, v2} {
		if _, _, err := s.Records().Put(ctx, kap.StoredRecord{Tenant: "t", Kind: "DosingSession", ID: "ds-1", ClientID: "c1",
			ContentHash: strconv.Itoa(i), Bundle: b}, kap.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ typ, id string }{{"Observation", "11111111-1111-5111-8111-111111111111"}, {"Encounter", "22222222-2222-5222-8222-222222222222"}} {
		rec, err := resolveID(ctx, s.Records(), "t", c.typ, c.id)
		if err != nil || rec.ID != "ds-1" || rec.Version != 2 {
			t.Errorf("%s/%s: %v %+v", c.typ, c.id, err, rec)
		}
	}
	if _, err := resolveID(ctx, s.Records(), "t", "Encounter", "11111111-1111-5111-8111-111111111111"); kap.ErrorCode(err) != kap.ENOTFOUND {
		t.Errorf("an id under another type: %v", err)
	}
	if _, err := resolveID(ctx, s.Records(), "other", "Encounter", "22222222-2222-5222-8222-222222222222"); kap.ErrorCode(err) != kap.ENOTFOUND {
		t.Errorf("another tenant: %v", err)
	}
	// The index records stay out of the client's listing.
	recs, _, err := s.Records().ListByClient(ctx, "t", "c1", kap.ListQuery{})
	if err != nil || len(recs) != 1 {
		t.Errorf("listing: %v, %d records", err, len(recs))
	}
}

// BenchmarkFHIRCapability: generating the CapabilityStatement (done once
// per process, at the first GET /metadata).
func BenchmarkFHIRCapability(b *testing.B) {
	s := &server{cfg: Config{Codec: fhir.MustCodec(), Now: time.Now}}
	for i := 0; i < b.N; i++ {
		if _, err := s.capability(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFHIRIndexRepair: a record stored without the index becomes readable
// by id once a search by patient has read it.
func TestFHIRIndexRepair(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	bundle := []byte(`{"resourceType":"Bundle","type":"transaction","entry":[
		{"fullUrl":"urn:uuid:33333333-3333-5333-8333-333333333333","resource":{"resourceType":"Observation"}}]}`)
	rec, _, err := st.Records().Put(ctx, kap.StoredRecord{Tenant: "t", Kind: "Assessment", ID: "a-1", ClientID: "c1",
		ContentHash: "h", Bundle: bundle}, kap.PutOptions{}) // the raw store: no index
	if err != nil {
		t.Fatal(err)
	}
	rs := withFHIRIndex(st).Records()
	if _, err := resolveID(ctx, rs, "t", "Observation", "33333333-3333-5333-8333-333333333333"); kap.ErrorCode(err) != kap.ENOTFOUND {
		t.Fatalf("before the repair: %v", err)
	}
	if err := ensureIndexed(ctx, rs, rec); err != nil {
		t.Fatal(err)
	}
	if got, err := resolveID(ctx, rs, "t", "Observation", "33333333-3333-5333-8333-333333333333"); err != nil || got.ID != "a-1" {
		t.Fatalf("after the repair: %v %+v", err, got)
	}
}
