package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/mapping"
)

// Collections maps the kap/v1 collection names of the URL to record kinds.
var Collections = map[string]kap.Kind{
	"clients":              kap.KindClient,
	"providers":            kap.KindProvider,
	"intakes":              kap.KindIntake,
	"consents":             kap.KindConsent,
	"treatment-plans":      kap.KindTreatmentPlan,
	"dosing-sessions":      kap.KindDosingSession,
	"integration-sessions": kap.KindIntegrationSession,
	"assessments":          kap.KindAssessment,
}

// CollectionOf returns the collection name of a kind.
func CollectionOf(k kap.Kind) string {
	for c, kk := range Collections {
		if kk == k {
			return c
		}
	}
	return ""
}

// Envelope is the body of a record response.
type Envelope struct {
	Kind     string          `json:"kind"`
	ID       string          `json:"id"`
	Version  int             `json:"version"`
	Record   json.RawMessage `json:"record"`
	Bundle   json.RawMessage `json:"bundle"`
	Warnings []kap.Issue     `json:"warnings"`
}

// kapRoutes installs the /kap/v1 routes.
func (s *server) kapRoutes(api *gin.RouterGroup) {
	api.POST("/$map", s.mapOnly)
	api.POST("/:collection", s.putRecord)
	api.GET("/:collection/:id", s.getRecord)
}

// putTries bounds the retries of a Put that lost a race with another writer
// of the same record.
const putTries = 3

func (s *server) collection(c *gin.Context) (kap.Kind, bool) {
	k, ok := Collections[c.Param("collection")]
	if !ok {
		s.fail(c, kap.Errorf(kap.ENOTFOUND, "unknown collection: must be one of clients, providers, intakes, consents, treatment-plans, dosing-sessions, integration-sessions, assessments"))
	}
	return k, ok
}

// putRecord is POST /kap/v1/{collection}: decode, validate, map, store and
// queue for delivery. 201 for a new version, 200 when the content equals the
// latest version.
func (s *server) putRecord(c *gin.Context) {
	kind, ok := s.collection(c)
	if !ok {
		return
	}
	tenant := c.GetString(ctxTenant)
	data, err := s.readBody(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	rec, err := kap.DecodeRecord(data)
	if err != nil {
		s.fail(c, err)
		return
	}
	if rec.RecordKind() != kind {
		s.fail(c, &kap.Error{Code: kap.EINVALID, Message: "invalid record", Issues: []kap.Issue{{Path: "kind",
			Reason: "must be " + string(kind) + " in the " + c.Param("collection") + " collection"}}})
		return
	}
	canonical, err := kap.EncodeRecord(rec)
	if err != nil {
		s.fail(c, err)
		return
	}
	sum := sha256.Sum256(canonical)
	hash := hex.EncodeToString(sum[:])
	var warnings []kap.Issue
	if ds, ok := rec.(*kap.DosingSession); ok {
		warnings = ds.SafetyWarnings()
	}
	recs := s.cfg.Store.Records()
	ctx := c.Request.Context()
	for try := 0; ; try++ {
		latest, err := recs.Get(ctx, tenant, string(kind), rec.RecordID())
		if err != nil && kap.ErrorCode(err) != kap.ENOTFOUND {
			s.fail(c, err)
			return
		}
		if err == nil && latest.ContentHash == hash {
			s.respond(c, http.StatusOK, latest, warnings)
			return
		}
		// The Bundle carries the version in its Provenance, so it is
		// mapped for the version this Put will create; IfMatch makes a
		// concurrent writer lose (and retry) instead of mislabelling it.
		bundle, err := s.mappers[tenant].Map(rec, mapping.MapInput{Version: latest.Version + 1, Recorded: s.cfg.Now()})
		if err != nil {
			s.fail(c, err)
			return
		}
		bjson, err := s.cfg.Codec.Marshal(bundle)
		if err != nil {
			s.fail(c, err)
			return
		}
		clientID := rec.RecordClientID()
		if clientID == "" {
			// Providers belong to no client; each is its own ordering key.
			clientID = "provider/" + rec.RecordID()
		}
		sr := kap.StoredRecord{
			Tenant: tenant, Kind: string(kind), ID: rec.RecordID(), ClientID: clientID,
			ContentHash: hash, Date: rec.RecordDate(), Record: canonical, Bundle: bjson,
			Resources: resources(bundle),
		}
		// A first version is created with IfNoneMatch: of concurrent first
		// writes one wins and the others map again for version 2.
		stored, created, err := recs.Put(ctx, sr, kap.PutOptions{IfMatch: latest.Version, IfNoneMatch: latest.Version == 0, Targets: s.cfg.Targets})
		if kap.ErrorCode(err) == kap.EPRECONDITION && try+1 < putTries {
			continue
		}
		if err != nil {
			if kap.ErrorCode(err) == kap.EPRECONDITION {
				err = kap.Errorf(kap.ECONFLICT, "the record is being changed concurrently; retry")
			}
			s.fail(c, err)
			return
		}
		st := http.StatusOK
		if created {
			st = http.StatusCreated
		}
		s.respond(c, st, stored, warnings)
		return
	}
}

// resources lists the business identifiers of a Bundle's entries (from their
// conditional-update URLs).
func resources(b *bcrpb.Bundle) []kap.ResourceRef {
	var refs []kap.ResourceRef
	for _, e := range b.GetEntry() {
		typ, sys, val, ok := fhir.ParseConditionalRef(e.GetRequest().GetUrl().GetValue())
		if ok {
			refs = append(refs, kap.ResourceRef{Type: typ, System: sys, Value: val})
		}
	}
	return refs
}

func (s *server) respond(c *gin.Context, st int, sr kap.StoredRecord, warnings []kap.Issue) {
	if warnings == nil {
		warnings = []kap.Issue{}
	}
	c.Header("Location", "/kap/v1/"+CollectionOf(kap.Kind(sr.Kind))+"/"+sr.ID)
	c.Header("ETag", `W/"`+strconv.Itoa(sr.Version)+`"`)
	c.JSON(st, Envelope{Kind: sr.Kind, ID: sr.ID, Version: sr.Version, Record: sr.Record, Bundle: sr.Bundle, Warnings: warnings})
}

// getRecord is GET /kap/v1/{collection}/{id}: the latest version in the
// caller's tenant (404 for other tenants' ids).
func (s *server) getRecord(c *gin.Context) {
	kind, ok := s.collection(c)
	if !ok {
		return
	}
	id := c.Param("id")
	if kap.ValidateID("id", id) != nil {
		s.fail(c, kap.Errorf(kap.ENOTFOUND, "no such record"))
		return
	}
	sr, err := s.cfg.Store.Records().Get(c.Request.Context(), c.GetString(ctxTenant), string(kind), id)
	if err != nil {
		s.fail(c, err)
		return
	}
	var warnings []kap.Issue
	if kind == kap.KindDosingSession {
		if rec, err := kap.DecodeRecord(sr.Record); err == nil {
			warnings = rec.(*kap.DosingSession).SafetyWarnings()
		}
	}
	s.respond(c, http.StatusOK, sr, warnings)
}

// mapOnly is POST /kap/v1/$map: the Bundle of a record, nothing stored.
func (s *server) mapOnly(c *gin.Context) {
	data, err := s.readBody(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	rec, err := kap.DecodeRecord(data)
	if err != nil {
		s.fail(c, err)
		return
	}
	bundle, err := s.mappers[c.GetString(ctxTenant)].Map(rec, mapping.MapInput{Version: 1, Recorded: s.cfg.Now()})
	if err != nil {
		s.fail(c, err)
		return
	}
	s.outcome(c, http.StatusOK, bundle)
}

// readyz answers 200 when the store answers a read, 503 otherwise.
func (s *server) readyz(c *gin.Context) {
	_, err := s.cfg.Store.Records().Get(c.Request.Context(), "kapbridge-readyz", string(kap.KindClient), "readyz")
	if err != nil && kap.ErrorCode(err) != kap.ENOTFOUND {
		s.fail(c, kap.Errorf(kap.EUNAVAILABLE, "the store does not answer"))
		return
	}
	c.String(http.StatusOK, "ready")
}
