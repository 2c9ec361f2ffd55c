package httpapi

// Per-route SMART scope checks. A credential's scopes are SMART v2 system
// scopes (system/Observation.rs, system/*.cruds; v1 .read/.write map to rs
// and cud). A kap/v1 record touches every FHIR resource type its kind maps
// to (KindResourceTypes), so writing a record needs c and u on each of them,
// reading one needs r, listing needs s.

import (
	"net/http"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/internal/config"
)

// KindResourceTypes are the FHIR resource types each kap/v1 record kind maps
// to (mapping/, docs/mapping.md). The Provenance every Bundle carries is the
// gateway's own and needs no scope.
var KindResourceTypes = map[kap.Kind][]string{
	kap.KindClient:             {"Patient"},
	kap.KindProvider:           {"Practitioner", "PractitionerRole"},
	kap.KindIntake:             {"Encounter", "Condition", "Observation", "MedicationStatement"},
	kap.KindConsent:            {"Consent"},
	kap.KindTreatmentPlan:      {"CarePlan", "Goal", "MedicationRequest"},
	kap.KindDosingSession:      {"Encounter", "Medication", "MedicationAdministration", "Observation", "AdverseEvent", "Procedure"},
	kap.KindIntegrationSession: {"Encounter", "Procedure"},
	kap.KindAssessment:         {"Observation"},
}

// need is one scope requirement: perms on each of types.
type need struct {
	types []string
	perms config.Perm
}

// allKinds is every resource type of every record kind.
func allKindTypes() []string {
	var out []string
	for _, ts := range KindResourceTypes {
		for _, t := range ts {
			if !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	slices.Sort(out)
	return out
}

// methodPerms is what an HTTP method does to a resource: GET on one
// resource reads (r), GET on a collection searches (s), POST/PUT create or
// update (c and u: the gateway's writes are conditional updates), DELETE
// deletes (d).
func methodPerms(method string, one bool) config.Perm {
	switch method {
	case http.MethodGet, http.MethodHead:
		if one {
			return config.PermRead
		}
		return config.PermSearch
	case http.MethodDelete:
		return config.PermDelete
	}
	return config.PermCreate | config.PermUpdate
}

// required returns what the matched route needs; ok=false when the route
// needs no scope beyond an authenticated credential ($map and $validate,
// which touch no stored data) or names nothing this check knows (the
// handler answers 404).
func required(c *gin.Context) (need, bool) {
	route := c.FullPath()
	switch {
	case strings.HasPrefix(route, "/kap/v1/"):
		rest := strings.TrimPrefix(route, "/kap/v1/")
		if strings.HasPrefix(rest, "$") {
			return need{}, false
		}
		var types []string
		if coll := c.Param("collection"); coll != "" {
			kind, ok := Collections[coll]
			if !ok {
				return need{}, false
			}
			types = KindResourceTypes[kind]
		} else {
			types = allKindTypes()
		}
		return need{types: types, perms: methodPerms(c.Request.Method, c.Param("id") != "")}, true
	case strings.HasPrefix(route, "/fhir/r4"):
		rest := strings.TrimPrefix(strings.TrimPrefix(route, "/fhir/r4"), "/")
		if strings.HasPrefix(rest, "$") || rest == "metadata" {
			return need{}, false
		}
		typ := c.Param("type")
		if typ == "" {
			// A transaction or batch Bundle may hold any type.
			return need{types: []string{"*"}, perms: methodPerms(c.Request.Method, false)}, true
		}
		if typ[0] < 'A' || typ[0] > 'Z' {
			return need{}, false
		}
		n := need{types: []string{typ}, perms: methodPerms(c.Request.Method, c.Param("id") != "")}
		if c.Param("id") == "" && c.Request.Method == http.MethodGet {
			if _, inc := c.GetQuery("_include"); inc && typ != "Patient" {
				// _include=<type>:patient|subject adds Patients.
				n.types = append(n.types, "Patient")
			}
		}
		return n, true
	}
	return need{}, false
}

// authorize checks the credential's scopes against the route (403
// OperationOutcome, insufficient-scope, naming the missing scope).
func (s *server) authorize(c *gin.Context) {
	p, _ := c.Value(ctxPrincipal).(*principal)
	if p == nil {
		c.Next()
		return
	}
	n, ok := required(c)
	if !ok {
		c.Next()
		return
	}
	var missing []string
	for _, t := range n.types {
		if !p.Scopes.Allows(t, n.perms) {
			missing = append(missing, config.Scope{Context: "system", Type: t, Perms: n.perms}.String())
		}
	}
	if len(missing) == 0 {
		c.Next()
		return
	}
	if p.Method == "bearer" {
		c.Header("WWW-Authenticate", wwwAuthenticate("insufficient_scope", "")+`, scope="`+strings.Join(missing, " ")+`"`)
	}
	s.fail(c, &kap.Error{Code: kap.EFORBIDDEN, Message: "insufficient-scope: the credential lacks " + strings.Join(missing, " ")})
	c.Abort()
}
