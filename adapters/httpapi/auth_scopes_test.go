package httpapi

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

// TestRequiredScopes checks the scope table on route patterns, including
// routes the gateway does not have yet: an unknown operation needs
// wildcard scopes, never none.
func TestRequiredScopes(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	var got string
	h := func(c *gin.Context) {
		n, ok := required(c)
		if !ok {
			got = "none"
			return
		}
		parts := make([]string, len(n.types))
		for i, typ := range n.types {
			parts[i] = typ + "." + n.perms.String()
		}
		got = strings.Join(parts, " ")
	}
	for _, p := range []string{"/kap/v1/$map", "/kap/v1/:collection", "/kap/v1/:collection/:id", "/kap/v1/:collection/:id/deliveries",
		"/kap/v1/dead-letters", "/fhir/r4", "/fhir/r4/$validate", "/fhir/r4/$export", "/fhir/r4/:type", "/fhir/r4/:type/:id",
		"/fhir/r4/:type/:id/_history", "/fhir/r4/:type/:id/$everything"} {
		r.GET(p, h)
		r.POST(p, h)
		r.PUT(p, h)
	}
	for _, tc := range []struct{ method, path, want string }{
		{"POST", "/kap/v1/$map", "none"},
		{"POST", "/fhir/r4/$validate", "none"},
		{"POST", "/kap/v1/clients", "Patient.cu"},
		{"PUT", "/kap/v1/treatment-plans/p1", "CarePlan.cu Goal.cu MedicationRequest.cu"},
		{"GET", "/kap/v1/assessments/a1", "Observation.r"},
		{"GET", "/kap/v1/integration-sessions?client=c1", "Encounter.s Procedure.s"},
		{"GET", "/kap/v1/consents/x/deliveries", "Consent.r"},
		{"GET", "/kap/v1/nonsense/x", "none"}, // the handler answers 404
		{"GET", "/fhir/r4/Observation/o1", "Observation.r"},
		{"GET", "/fhir/r4/Observation/o1/_history", "Observation.r"},
		{"GET", "/fhir/r4/Observation?patient=p", "Observation.s"},
		{"GET", "/fhir/r4/Observation?_include=Observation:patient", "Observation.s Patient.s"},
		{"POST", "/fhir/r4/Patient", "Patient.cu"},
		{"POST", "/fhir/r4", "*.cu"},
		{"GET", "/fhir/r4/$export", "*.rs"},
		{"POST", "/fhir/r4/$export", "*.crus"},
		{"GET", "/fhir/r4/Patient/p1/$everything", "*.rs"},
	} {
		got = ""
		req := httptest.NewRequest(tc.method, tc.path, nil)
		r.ServeHTTP(httptest.NewRecorder(), req)
		if got != tc.want {
			t.Errorf("%s %s needs %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
}
