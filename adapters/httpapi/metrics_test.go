package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/internal/metrics"
)

func TestMetricsEndpoint(t *testing.T) {
	m := metrics.New()
	srv := apiServer(t, apiStores["bolt"](t, nil), func(c *httpapi.Config) { c.Metrics = m })
	if r := call(t, "POST", srv.URL+"/kap/v1/dosing-sessions", dosing(t, "ds-m1", "")); r.status != http.StatusCreated {
		t.Fatalf("post: %v", r)
	}
	call(t, "GET", srv.URL+"/kap/v1/dosing-sessions/ds-m1", nil)
	call(t, "GET", srv.URL+"/kap/v1/records?client=c001", nil)
	call(t, "GET", srv.URL+"/no/such/path/c001", nil)
	r := call(t, "GET", srv.URL+"/metrics", nil)
	if r.status != http.StatusOK {
		t.Fatalf("metrics: %v", r)
	}
	text := string(r.body)
	for _, want := range []string{
		`kapbridge_http_request_duration_seconds_count{method="POST",route="/kap/v1/:collection",status="201"} 1`,
		`kapbridge_http_request_duration_seconds_count{method="GET",route="/kap/v1/:collection/:id",status="200"} 1`,
		`kapbridge_http_request_duration_seconds_count{method="GET",route="/kap/v1/:collection",status="200"} 1`,
		`kapbridge_http_request_duration_seconds_count{method="GET",route="unmatched",status="404"} 1`,
		`kapbridge_mapping_duration_seconds_count{kind="DosingSession"} 1`,
		`kapbridge_validation_duration_seconds_count{kind="DosingSession"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// No PHI: no record or client id, no name, no query string.
	for _, phi := range []string{"ds-m1", "c001", "Testperson", "Jordan", "client=", "/no/such"} {
		if strings.Contains(text, phi) {
			t.Errorf("metrics contain %q", phi)
		}
	}
}

func TestMetricsToken(t *testing.T) {
	srv := apiServer(t, apiStores["bolt"](t, nil), func(c *httpapi.Config) { c.MetricsToken = "s3cret" })
	if r := call(t, "GET", srv.URL+"/metrics", nil); r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("without the token: %v", r)
	}
	if r := call(t, "GET", srv.URL+"/metrics", nil, "Authorization", "Bearer wrong"); r.status != http.StatusUnauthorized {
		t.Fatalf("wrong token: %v", r)
	}
	r := call(t, "GET", srv.URL+"/metrics", nil, "Authorization", "Bearer s3cret")
	if r.status != http.StatusOK || !strings.Contains(string(r.body), "kapbridge_http_request_duration_seconds") {
		t.Fatalf("with the token: %v", r)
	}
}
