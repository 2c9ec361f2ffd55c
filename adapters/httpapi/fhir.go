package httpapi

// The FHIR R4 facade (/fhir/r4): the CapabilityStatement, read, vread,
// history and search of the resources the gateway produced (from the
// Bundles stored with each record version) or received from EHRs, and
// create, update, transaction and batch for data arriving from EHRs. See
// docs/fhir-facade.md.

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/conformance"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/synth"
	"github.com/kapbridge/kap/mapping"
)

// fhirState is the facade's per-server state.
type fhirState struct {
	once      sync.Once
	capJSON   []byte
	capErr    error
	typesOnce sync.Once
	types     map[string]bool
}

// SoftwareVersion is the version the CapabilityStatement reports.
var SoftwareVersion = "0.1.0-dev"

// fhirPublicRoutes installs the facade routes that need no credentials:
// the CapabilityStatement, which FHIR clients read first.
func (s *server) fhirPublicRoutes(fh *gin.RouterGroup) {
	fh.GET("/metadata", s.fhirFormat, s.metadata)
}

// fhirRoutes installs the /fhir/r4 facade routes.
func (s *server) fhirRoutes(fh *gin.RouterGroup) {
	fh.POST("/$validate", s.validate)
	fh.Use(s.fhirFormat)
	fh.POST("", s.fhirBundle)
	fh.GET("/:type", s.fhirSearch)
	fh.POST("/:type", s.fhirCreate)
	fh.GET("/:type/:id", s.fhirRead)
	fh.PUT("/:type/:id", s.fhirUpdate)
	fh.GET("/:type/:id/_history", s.fhirHistory)
	fh.GET("/:type/:id/_history/:vid", s.fhirVread)
}

// fhirFormat refuses a _format or an Accept the facade cannot answer in:
// it speaks FHIR JSON only (_format: 415; Accept: 406).
func (s *server) fhirFormat(c *gin.Context) {
	if f, ok := c.GetQuery("_format"); ok {
		switch strings.ToLower(strings.TrimSpace(f)) {
		case "json", "application/json", "application/fhir+json", "application/json+fhir":
		default:
			s.failStatus(c, http.StatusUnsupportedMediaType, &kap.Error{Code: kap.EUNSUPPORTED, Message: "unsupported format",
				Issues: []kap.Issue{{Path: "_format", Reason: "only json (application/fhir+json) is supported"}}})
			c.Abort()
			return
		}
		c.Next()
		return
	}
	if acc := c.GetHeader("Accept"); strings.TrimSpace(acc) != "" && !acceptsJSON(acc) {
		s.failStatus(c, http.StatusNotAcceptable, kap.Errorf(kap.EUNSUPPORTED,
			"this server answers in application/fhir+json only; the Accept header does not allow it"))
		c.Abort()
		return
	}
	c.Next()
}

func acceptsJSON(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if q, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(q, 64); err == nil && f == 0 {
				continue
			}
		}
		switch mt {
		case "*/*", "application/*", "application/json", "application/fhir+json", "application/json+fhir":
			return true
		}
	}
	return false
}

// writeFHIR writes FHIR JSON.
func writeFHIR(c *gin.Context, st int, body []byte) {
	c.Data(st, fhirJSON+"; charset=utf-8", body)
}

// metadata is GET /fhir/r4/metadata: the CapabilityStatement, generated at
// the first request and cached.
func (s *server) metadata(c *gin.Context) {
	s.facade.once.Do(func() { s.facade.capJSON, s.facade.capErr = s.capability() })
	if s.facade.capErr != nil {
		s.fail(c, s.facade.capErr)
		return
	}
	writeFHIR(c, http.StatusOK, s.facade.capJSON)
}

// capability builds the CapabilityStatement: conformance.Capability over
// the Bundles of a synthetic cohort (the types and profiles the mapping
// produces), with this facade's interactions, search parameters and
// includes declared for the server mode.
func (s *server) capability() ([]byte, error) {
	recs, err := synth.Generate(synth.Options{Clients: 8, Seed: 1})
	if err != nil {
		return nil, err
	}
	m := mapping.New(s.cfg.Codec, mapping.Options{Tenant: "capability"})
	var bundles []*bcrpb.Bundle
	types := map[string]bool{}
	for _, r := range recs {
		b, err := m.Map(r, mapping.MapInput{Recorded: time.Unix(0, 0)})
		if err != nil {
			return nil, err
		}
		bundles = append(bundles, b)
		for _, e := range b.GetEntry() {
			types[fhir.ResourceType(e.GetResource())] = true
		}
	}
	inbound := map[string]bool{}
	for _, t := range kap.InboundResourceTypes {
		types[t], inbound[t] = true, true
	}
	server := map[string][]string{}
	for t := range types {
		ia := []string{"read", "vread", "history-instance", "search-type"}
		if inbound[t] {
			ia = append(ia, "create", "update")
		}
		server[t] = ia
	}
	cr, err := conformance.Capability(s.cfg.Codec, conformance.CapabilityOptions{
		Software: "KAP Bridge", Version: SoftwareVersion, Date: s.cfg.Now(), Server: server}, bundles)
	if err != nil {
		return nil, err
	}
	data, err := s.cfg.Codec.Marshal(cr)
	if err != nil {
		return nil, err
	}
	// Declare what conformance.Capability has no options for: the search
	// parameters, includes, system interactions and the formats.
	var doc map[string]any
	if err := decodeJSON(data, &doc); err != nil {
		return nil, err
	}
	rests, _ := doc["rest"].([]any)
	for _, ri := range rests {
		rest, _ := ri.(map[string]any)
		if rest["mode"] != "server" {
			continue
		}
		rest["documentation"] = "The FHIR facade of KAP Bridge: read, vread, history and search of the resources the gateway produced " +
			"from clinic records or received from EHRs (a search needs _id, identifier or patient), and create, update, " +
			"transaction and batch for Patient, MedicationStatement, MedicationRequest, Condition, AllergyIntolerance and " +
			"Observation arriving from EHRs. Credentials: X-API-Key (or a bearer token where configured)."
		rest["interaction"] = []any{map[string]any{"code": "transaction"}, map[string]any{"code": "batch"}}
		res, _ := rest["resource"].([]any)
		for _, x := range res {
			r, _ := x.(map[string]any)
			t, _ := r["type"].(string)
			var sps []any
			for _, p := range searchParamsOf(t) {
				sps = append(sps, map[string]any{"name": p.name, "type": p.kind, "documentation": p.doc})
			}
			r["searchParam"] = sps
			if patientField[t] != "" {
				r["searchInclude"] = []any{t + ":patient", t + ":subject"}
			}
			if inbound[t] {
				r["updateCreate"] = true
			}
			r["versioning"] = "versioned"
			r["readHistory"] = true
		}
	}
	doc["format"] = []any{"json", "application/fhir+json"}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	cr, err = s.cfg.Codec.Unmarshal(out) // validated: a bad statement is a bug
	if err != nil {
		return nil, err
	}
	return s.cfg.Codec.Marshal(cr)
}

// knownType reports whether typ is an R4 resource type; otherwise it
// answers 404.
func (s *server) knownType(c *gin.Context, typ string) bool {
	s.facade.typesOnce.Do(func() { s.facade.types = resourceTypes() })
	if !s.facade.types[typ] {
		s.fail(c, &kap.Error{Code: kap.ENOTFOUND, Message: "unknown resource type",
			Issues: []kap.Issue{{Reason: "not a FHIR R4 resource type (names are case-sensitive, e.g. Observation)"}}})
		return false
	}
	return true
}

// fhirRead is GET /fhir/r4/{type}/{id}. 404 for ids unknown in the
// caller's tenant (other tenants' ids included), 410 for a resource the
// record's latest version no longer has.
func (s *server) fhirRead(c *gin.Context) {
	typ, id := c.Param("type"), c.Param("id")
	if !s.knownType(c, typ) {
		return
	}
	tenant := c.GetString(ctxTenant)
	rec, err := resolveID(c.Request.Context(), s.cfg.Store.Records(), tenant, typ, id)
	if err != nil {
		s.fail(c, err)
		return
	}
	r, err := s.findResource(tenant, rec, typ, id)
	if kap.ErrorCode(err) == kap.ENOTFOUND {
		s.failStatus(c, http.StatusGone, kap.Errorf(kap.ENOTFOUND, "the %s is not in the latest version of its record (deleted)", typ))
		return
	} else if err != nil {
		s.fail(c, err)
		return
	}
	s.writeResource(c, http.StatusOK, r, rec)
}

// writeResource answers one resource with its ETag and Last-Modified.
func (s *server) writeResource(c *gin.Context, st int, r fhirRes, rec kap.StoredRecord) {
	body, err := encodeResource(r)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("ETag", `W/"`+strconv.Itoa(rec.Version)+`"`)
	c.Header("Last-Modified", rec.StoredAt.UTC().Format(http.TimeFormat))
	writeFHIR(c, st, body)
}

// fhirVread is GET /fhir/r4/{type}/{id}/_history/{vid}.
func (s *server) fhirVread(c *gin.Context) {
	typ, id := c.Param("type"), c.Param("id")
	if !s.knownType(c, typ) {
		return
	}
	vid, err := strconv.Atoi(c.Param("vid"))
	if err != nil || vid < 1 {
		s.fail(c, kap.Errorf(kap.ENOTFOUND, "no such version: versionId is a positive integer"))
		return
	}
	tenant := c.GetString(ctxTenant)
	rs := s.cfg.Store.Records()
	rec, err := resolveID(c.Request.Context(), rs, tenant, typ, id)
	if err != nil {
		s.fail(c, err)
		return
	}
	ver, err := rs.GetVersion(c.Request.Context(), tenant, rec.Kind, rec.ID, vid)
	if kap.ErrorCode(err) == kap.ENOTFOUND {
		s.fail(c, kap.Errorf(kap.ENOTFOUND, "no version %d of this %s (never written or pruned)", vid, typ))
		return
	} else if err != nil {
		s.fail(c, err)
		return
	}
	r, err := s.findResource(tenant, ver, typ, id)
	if err != nil {
		if kap.ErrorCode(err) == kap.ENOTFOUND {
			err = kap.Errorf(kap.ENOTFOUND, "version %d of its record has no such %s", vid, typ)
		}
		s.fail(c, err)
		return
	}
	s.writeResource(c, http.StatusOK, r, ver)
}

// fhirHistory is GET /fhir/r4/{type}/{id}/_history: the kept versions of
// the resource, newest first.
func (s *server) fhirHistory(c *gin.Context) {
	typ, id := c.Param("type"), c.Param("id")
	if !s.knownType(c, typ) {
		return
	}
	tenant := c.GetString(ctxTenant)
	rs := s.cfg.Store.Records()
	rec, err := resolveID(c.Request.Context(), rs, tenant, typ, id)
	if err != nil {
		s.fail(c, err)
		return
	}
	vers, err := rs.History(c.Request.Context(), tenant, rec.Kind, rec.ID)
	if err != nil {
		s.fail(c, err)
		return
	}
	base := baseURL(c)
	var entries []bundleEntry
	for _, v := range vers {
		r, err := s.findResource(tenant, v, typ, id)
		if kap.ErrorCode(err) == kap.ENOTFOUND {
			continue
		} else if err != nil {
			s.fail(c, err)
			return
		}
		entries = append(entries, bundleEntry{FullURL: base + "/" + typ + "/" + id, Resource: r,
			Request: &entryRequest{Method: "PUT", URL: typ + "/" + id},
			Response: &entryResponse{Status: "200 OK", Etag: `W/"` + strconv.Itoa(v.Version) + `"`,
				LastModified: v.StoredAt.UTC().Format(time.RFC3339Nano)}})
	}
	total := len(entries)
	s.writeBundle(c, bundleOut{Type: "history", Total: &total, Link: []bundleLink{{"self", base + "/" + typ + "/" + id + "/_history"}},
		Entry: entries})
}

// Bundles the facade writes.
type bundleOut struct {
	Type  string
	Total *int
	Link  []bundleLink
	Entry []bundleEntry
	Now   time.Time
}

type bundleLink struct{ Relation, URL string }

type bundleEntry struct {
	FullURL  string
	Resource fhirRes
	Search   string // match, include, outcome
	Request  *entryRequest
	Response *entryResponse
}

type entryRequest struct{ Method, URL string }

type entryResponse struct {
	Status, Location, Etag, LastModified string
	Outcome                              fhirRes
}

func (s *server) writeBundle(c *gin.Context, b bundleOut) {
	body, err := encodeBundle(b, s.cfg.Now())
	if err != nil {
		s.fail(c, err)
		return
	}
	writeFHIR(c, http.StatusOK, body)
}

func encodeBundle(b bundleOut, now time.Time) ([]byte, error) {
	doc := fhirRes{"resourceType": "Bundle", "type": b.Type,
		"meta": map[string]any{"lastUpdated": now.UTC().Format(time.RFC3339Nano)}}
	if b.Total != nil {
		doc["total"] = *b.Total
	}
	var links []any
	for _, l := range b.Link {
		links = append(links, map[string]any{"relation": l.Relation, "url": l.URL})
	}
	if links != nil {
		doc["link"] = links
	}
	var entries []json.RawMessage
	for _, e := range b.Entry {
		em := map[string]any{}
		if e.FullURL != "" {
			em["fullUrl"] = e.FullURL
		}
		if e.Resource != nil {
			rb, err := encodeResource(e.Resource)
			if err != nil {
				return nil, err
			}
			em["resource"] = json.RawMessage(rb)
		}
		if e.Search != "" {
			em["search"] = map[string]any{"mode": e.Search}
		}
		if e.Request != nil {
			em["request"] = map[string]any{"method": e.Request.Method, "url": e.Request.URL}
		}
		if r := e.Response; r != nil {
			rm := map[string]any{"status": r.Status}
			if r.Location != "" {
				rm["location"] = r.Location
			}
			if r.Etag != "" {
				rm["etag"] = r.Etag
			}
			if r.LastModified != "" {
				rm["lastModified"] = r.LastModified
			}
			if r.Outcome != nil {
				ob, err := encodeResource(r.Outcome)
				if err != nil {
					return nil, err
				}
				rm["outcome"] = json.RawMessage(ob)
			}
			em["response"] = rm
		}
		eb, err := json.Marshal(em)
		if err != nil {
			return nil, err
		}
		entries = append(entries, eb)
	}
	if entries != nil {
		doc["entry"] = entries
	}
	return encodeResource(doc)
}

// baseURL is the facade's base URL as the client reached it.
func baseURL(c *gin.Context) string {
	scheme := "http"
	if c.Request.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + c.Request.Host + "/fhir/r4"
}

// outcomeResource renders an error as an OperationOutcome JSON object.
func (s *server) outcomeResource(err error) fhirRes {
	data, merr := s.cfg.Codec.Marshal(fhir.Outcome(err))
	var r fhirRes
	if merr != nil || decodeJSON(data, &r) != nil {
		return fhirRes{"resourceType": "OperationOutcome", "issue": []any{map[string]any{
			"severity": "error", "code": "exception", "diagnostics": "internal error"}}}
	}
	return r
}

// writeOutcome answers an OperationOutcome JSON object.
func writeOutcome(c *gin.Context, st int, oo fhirRes) {
	body, _ := encodeResource(oo)
	writeFHIR(c, st, body)
}

// sortedStrings returns the keys of a set, sorted.
func sortedStrings(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// validate is POST /fhir/r4/$validate: the conformance inbound validator
// over a FHIR resource or Bundle; 200 with the OperationOutcome when valid
// (warnings included), 422 when not.
func (s *server) validate(c *gin.Context) {
	data, err := s.readBody(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	_, warnings, verr := s.validator.ValidateWithWarnings(bytes.TrimSpace(data))
	if verr != nil && kap.ErrorCode(verr) != kap.EINVALID {
		s.fail(c, verr)
		return
	}
	oo := fhir.Outcome(verr)
	fhir.Warnings(oo, warnings)
	st := http.StatusOK
	if verr != nil {
		st = http.StatusUnprocessableEntity
	}
	s.outcome(c, st, oo)
}
