package httpapi_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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

func benchSubmit(b *testing.B, store kap.Store) {
	h, err := httpapi.New(httpapi.Config{
		Store:  store,
		Codec:  fhir.MustCodec(),
		Keys:   map[string]string{httpapi.HashKey(apiKey): "clinic-a"},
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	m := readRecord(b, "16-dosing-c001-1.json")
	bodies := make([][]byte, b.N)
	for i := range bodies {
		m["id"] = fmt.Sprintf("ds-bench-%d", i)
		bodies[i] = jsonOf(b, m)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest("POST", "/kap/v1/dosing-sessions", bytes.NewReader(bodies[i]))
		req.Header.Set("X-API-Key", apiKey)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusCreated {
			b.Fatalf("status %d: %s", w.Code, w.Body.Bytes())
		}
	}
}
