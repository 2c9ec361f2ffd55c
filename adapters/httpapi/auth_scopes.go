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
	kap.KindCoverage:           {"Coverage", "Organization"},
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

// scopeFree are the routes that need an authenticated credential but no
// scope: they touch no stored data.
var scopeFree = map[string]bool{
	"/kap/v1/$map":       true,
	"/fhir/r4/$validate": true,
	"/fhir/r4/metadata":  true,
}

// required returns what the matched route needs; ok=false when the route
// needs no scope beyond an authenticated credential (scopeFree) or names a
// collection or type this check does not know (the handler answers 404).
// An operation ($name) not in scopeFree needs r and s on every type (and c
// and u too unless it is a GET): an operation may return anything.
func required(c *gin.Context) (need, bool) {
	route := c.FullPath()
	if scopeFree[route] {
		return need{}, false
	}
	if last := route[strings.LastIndex(route, "/")+1:]; strings.HasPrefix(last, "$") {
		perms := config.PermRead | config.PermSearch
		if c.Request.Method != http.MethodGet && c.Request.Method != http.MethodHead {
			perms |= config.PermCreate | config.PermUpdate
		}
		return need{types: []string{"*"}, perms: perms}, true
	}
	switch {
	case strings.HasPrefix(route, "/kap/v1/"):
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
		typ := c.Param("type")
		if typ == "" {
			// A transaction or batch Bundle, or a system-level route: any
			// type.
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
