package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kapbridge/kap/adapters/httpapi"
)

func TestTracingSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	srv := apiServer(t, apiStores["bolt"](t, nil), func(c *httpapi.Config) { c.TracerProvider = tp })
	if r := call(t, "POST", srv.URL+"/kap/v1/dosing-sessions", dosing(t, "ds-t1", "")); r.status != http.StatusCreated {
		t.Fatalf("post: %v", r)
	}
	call(t, "GET", srv.URL+"/kap/v1/dosing-sessions?client=c001&limit=5", nil)
	call(t, "GET", srv.URL+"/kap/v1/dosing-sessions/ds-t1/deliveries", nil)
	spans := exp.GetSpans()
	names := map[string]bool{}
	for _, s := range spans {
		names[s.Name] = true
		for _, kv := range s.Attributes {
			v := kv.Value.Emit()
			for _, phi := range []string{"ds-t1", "c001", "?", "client=", "limit="} {
				if strings.Contains(v, phi) {
					t.Errorf("span %q attribute %s = %q carries %q", s.Name, kv.Key, v, phi)
				}
			}
			if kv.Key == "url.path" || kv.Key == "url.query" || kv.Key == "url.full" {
				t.Errorf("span %q has %s", s.Name, kv.Key)
			}
		}
	}
	for _, want := range []string{"POST /kap/v1/:collection", "GET /kap/v1/:collection", "GET /kap/v1/:collection/:id/deliveries"} {
		if !names[want] {
			t.Errorf("no span %q among %v", want, names)
		}
	}
	var route bool
	for _, s := range spans {
		for _, kv := range s.Attributes {
			if kv.Key == "http.route" && kv.Value.AsString() == "/kap/v1/:collection" {
				route = true
			}
		}
	}
	if !route {
		t.Error("no span carries http.route")
	}
}

func TestNewTracerProvider(t *testing.T) {
	if _, err := httpapi.NewTracerProvider(context.Background(), "not a url"); err == nil {
		t.Fatal("a malformed endpoint was accepted")
	}
	tp, err := httpapi.NewTracerProvider(context.Background(), "http://127.0.0.1:4318")
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
