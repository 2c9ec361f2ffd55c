package bolt

// BenchmarkSubmitAtSize submits dosing sessions through the HTTP API
// (adapters/httpapi, one target that requires consent, so every submission
// runs the consent check, the FHIR id index and the queueing) on a bolt
// store that already holds about 0, 2,000 or 6,000 records, stored through
// the same API. Two shapes: "many" spreads the records over synthetic
// clients (internal/synth, ~20 records each) and submits for those clients
// in turn; "one" gives a single client all of them. Reported: ms/op, and
// commits/op (bbolt write transactions, each fsynced).
//
//	go test ./adapters/bolt -run '^$' -bench SubmitAtSize -benchtime 200x

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	kap "github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/synth"
)

const growthKey = "growth-key"

type growthFixture struct {
	store   *Store
	h       http.Handler
	dosing  []*kap.DosingSession // templates, one per client
	counter int
}

func growthCollection(k kap.Kind) string {
	for name, kind := range httpapi.Collections {
		if kind == k {
			return name
		}
	}
	return ""
}

func growthSubmit(tb testing.TB, h http.Handler, rec kap.Record) {
	body, err := kap.EncodeRecord(rec)
	if err != nil {
		tb.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/kap/v1/"+growthCollection(rec.RecordKind()), bytes.NewReader(body))
	req.Header.Set("X-API-Key", growthKey)
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusCreated && w.Code != http.StatusOK {
		tb.Fatalf("%s %s: status %d: %.300s", rec.RecordKind(), rec.RecordID(), w.Code, w.Body.Bytes())
	}
}

// growthStore returns the store of shape and size, filled once per process.
func growthStore(b, parent *testing.B, fixtures map[string]*growthFixture, shape string, size int) *growthFixture {
	name := fmt.Sprintf("%s/%d", shape, size)
	if f := fixtures[name]; f != nil {
		return f
	}
	dir := parent.TempDir()
	s, err := Open(filepath.Join(dir, "kap.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	parent.Cleanup(func() { s.Close() })
	h, err := httpapi.New(httpapi.Config{
		Store:         s,
		Codec:         fhir.MustCodec(),
		Keys:          map[string]string{httpapi.HashKey(growthKey): "clinic-a"},
		Logger:        slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Targets:       []string{"ehr-main"},
		TenantTargets: map[string][]httpapi.TargetPolicy{"clinic-a": {{Name: "ehr-main", RequireConsent: true}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	clients := 3 // one of them has dosing sessions (some are screened out)
	if shape == "many" {
		clients = max(3, size/20)
	}
	var recs []kap.Record
	for {
		recs, err = synth.Generate(synth.Options{Clients: clients, Seed: 7})
		if err != nil {
			b.Fatal(err)
		}
		if shape == "one" || len(recs) >= size || size == 0 {
			break
		}
		clients += max(1, (size-len(recs))/20)
	}
	f := &growthFixture{store: s, h: h}
	if shape == "one" {
		var client string
		for _, r := range recs {
			if ds, ok := r.(*kap.DosingSession); ok && client == "" {
				client = ds.ClientID
			}
		}
		var keep []kap.Record
		for _, r := range recs {
			if id := r.RecordClientID(); id == "" || id == client {
				keep = append(keep, r)
			}
		}
		recs = keep
	}
	for _, r := range recs {
		if ds, ok := r.(*kap.DosingSession); ok && (len(f.dosing) == 0 || f.dosing[len(f.dosing)-1].ClientID != ds.ClientID) {
			c := *ds
			f.dosing = append(f.dosing, &c)
		}
	}
	if len(f.dosing) == 0 {
		b.Fatal("no dosing session in the synthetic records")
	}
	start := time.Now()
	n := 0
	for _, r := range recs {
		if n >= size && size > 0 && shape == "many" {
			break
		}
		growthSubmit(b, h, r)
		n++
	}
	// "one": the single client's further records are dosing sessions.
	for i := 0; n < size; i++ {
		c := *f.dosing[0]
		c.ID = fmt.Sprintf("ds-fill-%d", i)
		growthSubmit(b, h, &c)
		n++
	}
	b.Logf("%s: %d records stored in %v", name, n, time.Since(start).Round(time.Millisecond))
	// Deliver what was queued, as the workers of a running server do: the
	// outbox empties and the pages of its (Bundle-sized) messages are freed.
	ctx := context.Background()
	acked, dstart := 0, time.Now()
	for {
		ls, err := s.Outbox().Lease(ctx, "ehr-main", 100)
		if err != nil {
			b.Fatal(err)
		}
		if len(ls) == 0 {
			break
		}
		for _, l := range ls {
			if err := s.Outbox().Ack(ctx, l); err != nil {
				b.Fatal(err)
			}
			acked++
		}
	}
	st := s.db.Stats()
	b.Logf("%s: %d messages delivered in %v; %d free pages, freelist %d bytes", name, acked, time.Since(dstart).Round(time.Millisecond), st.FreePageN+st.PendingPageN, st.FreelistInuse)
	fixtures[name] = f
	return f
}

func BenchmarkSubmitAtSize(parent *testing.B) {
	fixtures := map[string]*growthFixture{}
	b := parent
	for _, shape := range []string{"many", "one"} {
		for _, size := range []int{0, 2000, 6000} {
			b.Run(fmt.Sprintf("%s/%d", shape, size), func(b *testing.B) {
				f := growthStore(b, parent, fixtures, shape, size)
				c0 := f.store.commits.Load()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					t := f.dosing[f.counter%len(f.dosing)]
					c := *t
					c.ID = fmt.Sprintf("ds-growth-%d", f.counter)
					f.counter++
					growthSubmit(b, f.h, &c)
				}
				b.StopTimer()
				b.ReportMetric(float64(f.store.commits.Load()-c0)/float64(b.N), "commits/op")
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
				st := f.store.db.Stats()
				b.ReportMetric(float64(st.FreelistInuse), "freelist-bytes")
			})
		}
	}
}
