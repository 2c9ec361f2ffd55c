package httpapi_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/fhir"
)

// BenchmarkSubmitDosingSession is the handler path of POST
// /kap/v1/dosing-sessions without the network: decode and validate the
// record, map it to a Bundle, store it and queue it in one store
// transaction, answer 201. Each iteration submits a new session id.
func BenchmarkSubmitDosingSession(b *testing.B) {
	for _, name := range []string{"bolt", "redis"} {
		b.Run(name, func(b *testing.B) {
			benchSubmit(b, apiStores[name](b, nil))
		})
	}
}

// BenchmarkSubmitDosingSessionParallel is the same with 8 concurrent
// submitters per GOMAXPROCS (store round trips and fsyncs overlap).
func BenchmarkSubmitDosingSessionParallel(b *testing.B) {
	for _, name := range []string{"bolt", "redis"} {
		b.Run(name, func(b *testing.B) {
			h := benchHandler(b, apiStores[name](b, nil))
			body := readRecord(b, "16-dosing-c001-1.json")
			var n atomic.Int64
			b.SetParallelism(8)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				m := maps.Clone(body)
				for pb.Next() {
					m["id"] = fmt.Sprintf("ds-pbench-%d", n.Add(1))
					submit(b, h, jsonOf(b, m))
				}
			})
		})
	}
}

func benchHandler(b *testing.B, store kap.Store) http.Handler {
	h, err := httpapi.New(httpapi.Config{
		Store:  store,
		Codec:  fhir.MustCodec(),
		Keys:   map[string]string{httpapi.HashKey(apiKey): "clinic-a"},
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	return h
}

func submit(b *testing.B, h http.Handler, body []byte) {
	req := httptest.NewRequest("POST", "/kap/v1/dosing-sessions", bytes.NewReader(body))
	req.Header.Set("X-API-Key", apiKey)
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusCreated {
		b.Errorf("status %d: %s", w.Code, w.Body.Bytes())
	}
}

func benchSubmit(b *testing.B, store kap.Store) {
	h := benchHandler(b, store)
	m := readRecord(b, "16-dosing-c001-1.json")
	bodies := make([][]byte, b.N)
	for i := range bodies {
		m["id"] = fmt.Sprintf("ds-bench-%d", i)
		bodies[i] = jsonOf(b, m)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		submit(b, h, bodies[i])
	}
}
