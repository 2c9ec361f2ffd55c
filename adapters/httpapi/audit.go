package httpapi

// The audit trail: one FHIR AuditEvent-shaped JSON line per request to the
// kap/v1 and /fhir/r4 routes (every access to PHI, and every refused
// attempt), written to Config.Audit and never to the operational log. The
// audit trail holds record ids, resource references and search queries: it
// must be protected like PHI (docs/security.md).

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// ctxAuditEntities holds the entities a handler reported with AuditEntity.
const ctxAuditEntities = "kap.auditEntities"

// AuditEvent is the subset of FHIR R4 AuditEvent the gateway writes.
type AuditEvent struct {
	ResourceType string             `json:"resourceType"` // "AuditEvent"
	Type         AuditCoding        `json:"type"`
	Subtype      []AuditCoding      `json:"subtype,omitempty"`
	Action       string             `json:"action,omitempty"` // C R U D E
	Recorded     string             `json:"recorded"`         // instant, UTC
	Outcome      string             `json:"outcome"`          // 0 success, 4 minor failure, 8 serious failure
	OutcomeDesc  string             `json:"outcomeDesc,omitempty"`
	Agent        []AuditAgent       `json:"agent"`
	Source       AuditSource        `json:"source"`
	Entity       []AuditEventEntity `json:"entity,omitempty"`
}

// AuditCoding is a Coding.
type AuditCoding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code"`
	Display string `json:"display,omitempty"`
}

// AuditIdentifier is an Identifier.
type AuditIdentifier struct {
	System string `json:"system,omitempty"`
	Value  string `json:"value"`
}

// AuditReference is a Reference.
type AuditReference struct {
	Reference  string           `json:"reference,omitempty"`
	Identifier *AuditIdentifier `json:"identifier,omitempty"`
	Display    string           `json:"display,omitempty"`
}

// AuditAgent is AuditEvent.agent.
type AuditAgent struct {
	Type      *AuditConcept  `json:"type,omitempty"`
	Who       AuditReference `json:"who"`
	Requestor bool           `json:"requestor"`
	Network   *AuditNetwork  `json:"network,omitempty"`
}

// AuditConcept is a CodeableConcept.
type AuditConcept struct {
	Coding []AuditCoding `json:"coding"`
	Text   string        `json:"text,omitempty"`
}

// AuditNetwork is AuditEvent.agent.network.
type AuditNetwork struct {
	Address string `json:"address"`
	Type    string `json:"type"` // 2 = IP address
}

// AuditSource is AuditEvent.source.
type AuditSource struct {
	Site     string         `json:"site,omitempty"` // the tenant
	Observer AuditReference `json:"observer"`
	Type     []AuditCoding  `json:"type,omitempty"`
}

// AuditEventEntity is AuditEvent.entity.
type AuditEventEntity struct {
	What        *AuditReference `json:"what,omitempty"`
	Type        *AuditCoding    `json:"type,omitempty"`
	Role        *AuditCoding    `json:"role,omitempty"`
	Description string          `json:"description,omitempty"`
	Query       string          `json:"query,omitempty"` // base64 of the search query
}

// Code systems of the audit events.
const (
	auditTypeSystem    = "http://terminology.hl7.org/CodeSystem/audit-event-type"
	restfulSystem      = "http://hl7.org/fhir/restful-interaction"
	entityTypeSystem   = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
	objectRoleSystem   = "http://terminology.hl7.org/CodeSystem/object-role"
	sourceTypeSystem   = "http://terminology.hl7.org/CodeSystem/security-source-type"
	credentialSystem   = "urn:kapbridge:credential"
	requestIDSystem    = "urn:kapbridge:request-id"
	recordSystem       = "urn:kapbridge:record"
	auditObserverName  = "kapbridge"
	maxAuditEntities   = 1000
	maxAuditQueryBytes = 4096
)

// AuditEntity records, for the audit trail, a resource or record the
// request touched ("Patient/123" or "kap:DosingSession/ds-1/3"). Handlers
// that read or return more than the route names (searches, lists, Bundles)
// call it for each.
func AuditEntity(c *gin.Context, ref string) {
	v, _ := c.Get(ctxAuditEntities)
	refs, _ := v.([]string)
	if len(refs) < maxAuditEntities {
		c.Set(ctxAuditEntities, append(refs, ref))
	}
}

// auditor writes events to a sink, one JSON line each.
type auditor struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
}

// audit writes one AuditEvent for the request after it is answered.
func (s *server) audit(c *gin.Context) {
	c.Next()
	if s.auditor == nil {
		return
	}
	ev := s.auditEvent(c)
	line, err := json.Marshal(ev)
	if err != nil {
		s.log.Error("cannot encode an audit event", "request_id", c.GetString(ctxRequestID))
		return
	}
	line = append(line, '\n')
	s.auditor.mu.Lock()
	_, err = s.auditor.w.Write(line)
	s.auditor.mu.Unlock()
	if err != nil {
		// The error may name the audit file, never the event.
		s.log.Error("cannot write the audit trail", "request_id", c.GetString(ctxRequestID),
			"error_type", fmt.Sprintf("%T", err))
	}
}

func (s *server) auditEvent(c *gin.Context) AuditEvent {
	st := c.Writer.Status()
	outcome := "0"
	switch {
	case st >= 500:
		outcome = "8"
	case st >= 400:
		outcome = "4"
	}
	interaction, action := restInteraction(c, st)
	tenant := c.GetString(ctxTenant)
	who := AuditReference{Display: "unauthenticated"}
	if cred := c.GetString(ctxCredential); cred != "" {
		who = AuditReference{Identifier: &AuditIdentifier{System: credentialSystem + ":" + tenant, Value: cred},
			Display: cred + " (tenant " + tenant + ")"}
	}
	ev := AuditEvent{
		ResourceType: "AuditEvent",
		Type:         AuditCoding{System: auditTypeSystem, Code: "rest", Display: "RESTful Operation"},
		Subtype:      []AuditCoding{{System: restfulSystem, Code: interaction}},
		Action:       action,
		Recorded:     s.cfg.Now().UTC().Format(time.RFC3339Nano),
		Outcome:      outcome,
		OutcomeDesc:  "HTTP " + strconv.Itoa(st) + " " + c.Request.Method + " " + routeOf(c),
		Agent: []AuditAgent{{
			Type: &AuditConcept{Coding: []AuditCoding{{System: "http://dicom.nema.org/resources/ontology/DCM",
				Code: "110153", Display: "Source Role ID"}}},
			Who:       who,
			Requestor: true,
			Network:   &AuditNetwork{Address: c.ClientIP(), Type: "2"},
		}},
		Source: AuditSource{Site: tenant, Observer: AuditReference{Display: auditObserverName},
			Type: []AuditCoding{{System: sourceTypeSystem, Code: "3", Display: "Web Server"}}},
	}
	ev.Entity = append(ev.Entity, AuditEventEntity{
		What:        &AuditReference{Identifier: &AuditIdentifier{System: requestIDSystem, Value: c.GetString(ctxRequestID)}},
		Type:        &AuditCoding{System: entityTypeSystem, Code: "2", Display: "System Object"},
		Description: "request",
	})
	for _, ref := range entitiesOf(c, st) {
		e := AuditEventEntity{Type: &AuditCoding{System: entityTypeSystem, Code: "2", Display: "System Object"}}
		if strings.HasPrefix(ref, "kap:") {
			e.What = &AuditReference{Identifier: &AuditIdentifier{System: recordSystem + ":" + tenant, Value: strings.TrimPrefix(ref, "kap:")}}
			e.Description = "kap/v1 record"
		} else {
			e.What = &AuditReference{Reference: ref}
		}
		ev.Entity = append(ev.Entity, e)
	}
	if q := c.Request.URL.RawQuery; q != "" && (interaction == "search-type" || interaction == "search-system") {
		if len(q) > maxAuditQueryBytes {
			q = q[:maxAuditQueryBytes]
		}
		ev.Entity = append(ev.Entity, AuditEventEntity{
			Type:  &AuditCoding{System: entityTypeSystem, Code: "2", Display: "System Object"},
			Role:  &AuditCoding{System: objectRoleSystem, Code: "24", Display: "Query"},
			Query: base64.StdEncoding.EncodeToString([]byte(q)),
		})
	}
	return ev
}

func routeOf(c *gin.Context) string {
	if r := c.FullPath(); r != "" {
		return r
	}
	return "(unmatched)"
}

// restInteraction names the FHIR restful interaction and the AuditEvent
// action of the request.
func restInteraction(c *gin.Context, st int) (string, string) {
	route := c.FullPath()
	last := route[strings.LastIndex(route, "/")+1:]
	switch {
	case strings.HasPrefix(last, "$"):
		return "operation", "E"
	case strings.HasSuffix(route, "/_history/:vid"):
		return "vread", "R"
	case strings.HasSuffix(route, "/_history"):
		return "history-instance", "R"
	}
	id := c.Param("id") != ""
	switch c.Request.Method {
	case http.MethodGet, http.MethodHead:
		if id || strings.HasSuffix(route, "/deliveries") {
			return "read", "R"
		}
		return "search-type", "E"
	case http.MethodPost:
		if route == "/fhir/r4" || route == "/fhir/r4/" {
			return "transaction", "E"
		}
		if st == http.StatusOK {
			return "update", "U" // the content equals an existing version
		}
		return "create", "C"
	case http.MethodPut, http.MethodPatch:
		return "update", "U"
	case http.MethodDelete:
		return "delete", "D"
	}
	return "operation", "E"
}

// entitiesOf lists what the request touched: the handler's reports, the
// record or resource the route names, and what a create's Location names.
func entitiesOf(c *gin.Context, st int) []string {
	var refs []string
	if v, ok := c.Get(ctxAuditEntities); ok {
		refs, _ = v.([]string)
	}
	add := func(r string) {
		for _, o := range refs {
			if o == r {
				return
			}
		}
		refs = append(refs, r)
	}
	route := c.FullPath()
	id := c.Param("id")
	switch {
	case strings.HasPrefix(route, "/kap/v1/"):
		kind, ok := Collections[c.Param("collection")]
		if ok && id != "" {
			add("kap:" + string(kind) + "/" + id)
		}
		if loc := c.Writer.Header().Get("Location"); ok && id == "" && st < 300 && loc != "" {
			if u, err := url.Parse(loc); err == nil {
				parts := strings.Split(strings.Trim(u.Path, "/"), "/")
				if len(parts) >= 4 && parts[0] == "kap" {
					if k, ok := Collections[parts[2]]; ok {
						add("kap:" + string(k) + "/" + parts[3])
					}
				}
			}
		}
	case strings.HasPrefix(route, "/fhir/r4/"):
		typ := c.Param("type")
		if typ != "" && id != "" {
			add(typ + "/" + id)
		}
		if loc := c.Writer.Header().Get("Location"); typ != "" && id == "" && st < 300 && loc != "" {
			if i := strings.Index(loc, "/"+typ+"/"); i >= 0 {
				rest := strings.SplitN(loc[i+1:], "/", 4)
				if len(rest) >= 2 {
					add(rest[0] + "/" + rest[1])
				}
			}
		}
	}
	return refs
}
