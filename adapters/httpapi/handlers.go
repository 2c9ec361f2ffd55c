package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
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
	"coverages":            kap.KindCoverage,
}

// AllRecords is the pseudo-collection of every kind: GET
// /kap/v1/records?client= lists all of a client's records, and GET
// /kap/v1/records/{id}/deliveries finds the record by id in any collection.
const AllRecords = "records"

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
	Record   json.RawMessage `json:"record,omitempty"`
	Bundle   json.RawMessage `json:"bundle,omitempty"`
	Warnings []kap.Issue     `json:"warnings"`
	Links    Links           `json:"links"`
	// Delivery says which targets a new version was queued for (only on
	// the response that created it).
	Delivery *QueuedFor `json:"delivery,omitempty"`
}

// Links are the URLs of a record.
type Links struct {
	Self       string `json:"self"`
	Deliveries string `json:"deliveries"`
}

// QueuedFor lists the targets a new version was queued for and those it was
// not, with the reason (the client's consent).
type QueuedFor struct {
	Queued  []string     `json:"queued"`
	Skipped []SkipReason `json:"skipped,omitempty"`
}

// SkipReason is a target a version was not queued for.
type SkipReason struct {
	Target string `json:"target"`
	Reason string `json:"reason"`
}

// kapRoutes installs the /kap/v1 routes.
func (s *server) kapRoutes(api *gin.RouterGroup) {
	api.POST("/$map", s.mapOnly)
	api.POST("/:collection", s.idempotent(s.postRecord))
	api.PUT("/:collection/:id", s.idempotent(s.putRecord))
	api.GET("/:collection", s.listRecords)
	api.GET("/:collection/:id", s.getRecord)
	api.GET("/:collection/:id/deliveries", s.deliveries)
}

// putTries bounds the retries of a Put that lost a race with another writer
// of the same record.
const putTries = 3

func (s *server) collection(c *gin.Context) (kap.Kind, bool) {
	k, ok := Collections[c.Param("collection")]
	if !ok {
		s.fail(c, errUnknownCollection)
	}
	return k, ok
}

var errUnknownCollection = kap.Errorf(kap.ENOTFOUND, "unknown collection: must be one of clients, providers, intakes, consents, treatment-plans, dosing-sessions, integration-sessions, assessments, coverages")

func recordURL(kind, id string) string {
	return "/kap/v1/" + CollectionOf(kap.Kind(kind)) + "/" + url.PathEscape(id)
}

// postRecord is POST /kap/v1/{collection}: create or update the record the
// body's id names.
func (s *server) postRecord(c *gin.Context) { s.writeRecord(c, "") }

// putRecord is PUT /kap/v1/{collection}/{id}: the same with the id in the
// URL, which must equal the body's.
func (s *server) putRecord(c *gin.Context) { s.writeRecord(c, c.Param("id")) }

// preconditions are the If-Match / If-None-Match headers of a write.
type preconditions struct {
	ifMatch     int  // > 0: the version the caller expects
	ifMatchAny  bool // If-Match: * (the record must exist)
	ifNoneMatch bool // If-None-Match: * (the record must not exist)
}

func (p preconditions) any() bool { return p.ifMatch > 0 || p.ifMatchAny || p.ifNoneMatch }

// parseETag reads W/"n" or "n".
func parseETag(v string) (int, bool) {
	v = strings.TrimPrefix(strings.TrimSpace(v), "W/")
	if len(v) < 3 || v[0] != '"' || v[len(v)-1] != '"' {
		return 0, false
	}
	n, err := strconv.Atoi(v[1 : len(v)-1])
	return n, err == nil && n > 0
}

func parsePreconditions(c *gin.Context) (preconditions, error) {
	var p preconditions
	if v := strings.TrimSpace(c.GetHeader("If-Match")); v != "" {
		if v == "*" {
			p.ifMatchAny = true
		} else if n, ok := parseETag(v); ok {
			p.ifMatch = n
		} else {
			return p, &kap.Error{Code: kap.EINVALID, Message: "invalid precondition", Issues: []kap.Issue{{Path: "If-Match",
				Reason: `must be an ETag of this API, W/"<version>", or *`}}}
		}
	}
	if v := strings.TrimSpace(c.GetHeader("If-None-Match")); v != "" {
		if v != "*" {
			return p, &kap.Error{Code: kap.EINVALID, Message: "invalid precondition", Issues: []kap.Issue{{Path: "If-None-Match",
				Reason: "must be * on a write (create only)"}}}
		}
		p.ifNoneMatch = true
	}
	if p.ifNoneMatch && (p.ifMatch > 0 || p.ifMatchAny) {
		return p, &kap.Error{Code: kap.EINVALID, Message: "invalid precondition", Issues: []kap.Issue{{Path: "If-None-Match",
			Reason: "cannot be combined with If-Match"}}}
	}
	return p, nil
}

// writeRecord decodes, validates, maps, stores and queues a record for the
// tenant's targets its client's consent allows. 201 for a new version, 200
// when the content equals the latest version.
func (s *server) writeRecord(c *gin.Context, urlID string) {
	kind, ok := s.collection(c)
	if !ok {
		return
	}
	tenant := c.GetString(ctxTenant)
	pre, err := parsePreconditions(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	data, err := s.readBody(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	rec, err := timed(s.cfg.Metrics.ValidateDuration.WithLabelValues(string(kind)), func() (kap.Record, error) {
		return kap.DecodeRecord(data)
	})
	if err != nil {
		s.fail(c, err)
		return
	}
	if rec.RecordKind() != kind {
		s.fail(c, &kap.Error{Code: kap.EINVALID, Message: "invalid record", Issues: []kap.Issue{{Path: "kind",
			Reason: "must be " + string(kind) + " in the " + c.Param("collection") + " collection"}}})
		return
	}
	if urlID != "" && rec.RecordID() != urlID {
		s.fail(c, &kap.Error{Code: kap.EINVALID, Message: "invalid record", Issues: []kap.Issue{{Path: "id",
			Reason: "must equal the id in the URL"}}})
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
		warnings = s.dosingWarnings(c.Request.Context(), tenant, ds)
	}
	ctx := c.Request.Context()
	decisions, err := s.decideTargets(ctx, tenant, rec)
	if err != nil {
		s.fail(c, err)
		return
	}
	targets := allowed(decisions)
	recs := s.cfg.Store.Records()
	for try := 0; ; try++ {
		latest, err := recs.Get(ctx, tenant, string(kind), rec.RecordID())
		found := err == nil
		if err != nil && kap.ErrorCode(err) != kap.ENOTFOUND {
			s.fail(c, err)
			return
		}
		switch {
		case pre.ifNoneMatch && found:
			s.fail(c, kap.Errorf(kap.EPRECONDITION, "If-None-Match: the record exists (version %d)", latest.Version))
			return
		case pre.ifMatchAny && !found:
			s.fail(c, kap.Errorf(kap.EPRECONDITION, "If-Match: the record does not exist"))
			return
		case pre.ifMatch > 0 && (!found || latest.Version != pre.ifMatch):
			s.fail(c, kap.Errorf(kap.EPRECONDITION, "If-Match: the record is not at version %d (latest %d)", pre.ifMatch, latest.Version))
			return
		}
		if found && latest.ContentHash == hash {
			s.respond(c, http.StatusOK, latest, warnings, true, nil)
			return
		}
		// The Bundle carries the version in its Provenance, so it is
		// mapped for the version this Put will create; IfMatch (or
		// IfNoneMatch for a first version) makes a concurrent writer lose
		// and map again instead of mislabelling it.
		bjson, bundle, err := s.mapRecord(tenant, kind, rec, latest.Version+1)
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
		stored, created, err := recs.Put(ctx, sr, kap.PutOptions{IfMatch: latest.Version, IfNoneMatch: !found, Targets: targets})
		if kap.ErrorCode(err) == kap.EPRECONDITION {
			if pre.any() {
				s.fail(c, kap.Errorf(kap.EPRECONDITION, "the record was changed concurrently; its precondition no longer holds"))
				return
			}
			if try+1 < putTries {
				continue
			}
			s.fail(c, kap.Errorf(kap.ECONFLICT, "the record is being changed concurrently; retry"))
			return
		}
		if err != nil {
			s.fail(c, err)
			return
		}
		st := http.StatusOK
		var q *QueuedFor
		if created {
			st = http.StatusCreated
			q = &QueuedFor{Queued: targets}
			if q.Queued == nil {
				q.Queued = []string{}
			}
			for _, d := range decisions {
				if !d.Allow {
					q.Skipped = append(q.Skipped, SkipReason{Target: d.Policy.Name, Reason: d.Reason})
				}
			}
		}
		s.respond(c, st, stored, warnings, true, q)
		return
	}
}

// mapRecord maps rec for version and marshals the Bundle, timing both.
func (s *server) mapRecord(tenant string, kind kap.Kind, rec kap.Record, version int) ([]byte, *bcrpb.Bundle, error) {
	start := time.Now()
	defer func() { s.cfg.Metrics.MapDuration.WithLabelValues(string(kind)).Observe(time.Since(start).Seconds()) }()
	m := s.mappers[tenant]
	if m == nil {
		return nil, nil, kap.Errorf(kap.EFORBIDDEN, "the tenant has no mapping configuration")
	}
	bundle, err := m.Map(rec, mapping.MapInput{Version: version, Recorded: s.cfg.Now()})
	if err != nil {
		return nil, nil, err
	}
	bjson, err := s.cfg.Codec.Marshal(bundle)
	if err != nil {
		return nil, nil, err
	}
	return bjson, bundle, nil
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

func links(kind, id string) Links {
	self := recordURL(kind, id)
	return Links{Self: self, Deliveries: self + "/deliveries"}
}

func (s *server) respond(c *gin.Context, st int, sr kap.StoredRecord, warnings []kap.Issue, bundle bool, q *QueuedFor) {
	if warnings == nil {
		warnings = []kap.Issue{}
	}
	l := links(sr.Kind, sr.ID)
	c.Header("Location", l.Self)
	c.Header("ETag", etag(sr.Version))
	env := Envelope{Kind: sr.Kind, ID: sr.ID, Version: sr.Version, Warnings: warnings, Links: l, Delivery: q}
	// The record and the Bundle are stored JSON: they are spliced into the
	// envelope as they are instead of being re-encoded (and re-scanned) by
	// encoding/json, which costs a tenth of a submission.
	head, err := json.Marshal(env)
	if err != nil || len(head) < 2 || !json.Valid(sr.Record) {
		s.fail(c, kap.Errorf(kap.EINTERNAL, "cannot encode the response"))
		return
	}
	buf := make([]byte, 0, len(head)+len(sr.Record)+len(sr.Bundle)+32)
	buf = append(buf, head[:len(head)-1]...)
	buf = append(buf, `,"record":`...)
	buf = append(buf, sr.Record...)
	if bundle && len(sr.Bundle) > 0 {
		buf = append(buf, `,"bundle":`...)
		buf = append(buf, sr.Bundle...)
	}
	buf = append(buf, '}')
	c.Data(st, "application/json; charset=utf-8", buf)
}

func etag(v int) string { return `W/"` + strconv.Itoa(v) + `"` }

// getRecord is GET /kap/v1/{collection}/{id}: the latest version in the
// caller's tenant (404 for other tenants' ids), or ?version=n.
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
	tenant, ctx := c.GetString(ctxTenant), c.Request.Context()
	var sr kap.StoredRecord
	var err error
	if v := c.Query("version"); v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 1 {
			s.fail(c, &kap.Error{Code: kap.EINVALID, Message: "invalid query", Issues: []kap.Issue{{Path: "version", Reason: "must be a positive integer"}}})
			return
		}
		sr, err = s.cfg.Store.Records().GetVersion(ctx, tenant, string(kind), id, n)
	} else {
		sr, err = s.cfg.Store.Records().Get(ctx, tenant, string(kind), id)
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	warnings := s.recordWarnings(ctx, tenant, kind, sr)
	s.respond(c, http.StatusOK, sr, warnings, true, nil)
}

// ListItem is one record of a list page (without its Bundle).
type ListItem struct {
	Kind     string          `json:"kind"`
	ID       string          `json:"id"`
	ClientID string          `json:"clientId"`
	Version  int             `json:"version"`
	Date     time.Time       `json:"date"`
	Record   json.RawMessage `json:"record"`
	Links    Links           `json:"links"`
}

// ListPage is the body of a list response.
type ListPage struct {
	Items []ListItem `json:"items"`
	// Next is the URL of the next page; absent on the last page.
	Next string `json:"next,omitempty"`
}

func badQuery(field, reason string) error {
	return &kap.Error{Code: kap.EINVALID, Message: "invalid query", Issues: []kap.Issue{{Path: field, Reason: reason}}}
}

func parseDate(field, v string, end bool) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.DateOnly, v)
	if err != nil {
		return time.Time{}, badQuery(field, "must be a date (YYYY-MM-DD) or an RFC 3339 date-time")
	}
	if end {
		t = t.Add(24*time.Hour - time.Millisecond)
	}
	return t, nil
}

// listRecords is GET /kap/v1/{collection}?client=<id>: the latest versions
// of a client's records of that collection (or of every kind for
// /kap/v1/records), by clinical date, a page at a time (limit, cursor,
// from, to).
func (s *server) listRecords(c *gin.Context) {
	coll := c.Param("collection")
	var kind kap.Kind
	if coll == AllRecords && !s.allowsTypes(c, allKindTypes(), config.PermSearch) {
		return
	}
	if coll != AllRecords {
		k, ok := s.collection(c)
		if !ok {
			return
		}
		kind = k
	}
	client := c.Query("client")
	if err := kap.ValidateID("client", client); err != nil {
		s.fail(c, badQuery("client", "is required: the id of the client whose records to list"))
		return
	}
	limit := 100
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			s.fail(c, badQuery("limit", "must be an integer from 1 to 1000"))
			return
		}
		limit = n
	}
	from, err := parseDate("from", c.Query("from"), false)
	if err != nil {
		s.fail(c, err)
		return
	}
	to, err := parseDate("to", c.Query("to"), true)
	if err != nil {
		s.fail(c, err)
		return
	}
	tenant, ctx := c.GetString(ctxTenant), c.Request.Context()
	q := kap.ListQuery{From: from, To: to, Cursor: c.Query("cursor"), Limit: limit}
	if kind != "" {
		q.Kinds = []string{string(kind)}
	}
	recs, next, err := s.cfg.Store.Records().ListByClient(ctx, tenant, client, q)
	if err != nil {
		if kap.ErrorCode(err) == kap.EINVALID {
			err = badQuery("cursor", "is not a cursor of this list; start again without it")
		}
		s.fail(c, err)
		return
	}
	page := ListPage{Items: make([]ListItem, 0, len(recs))}
	for _, sr := range recs {
		page.Items = append(page.Items, ListItem{Kind: sr.Kind, ID: sr.ID, ClientID: sr.ClientID,
			Version: sr.Version, Date: sr.Date, Record: sr.Record, Links: links(sr.Kind, sr.ID)})
	}
	if next != "" {
		v := url.Values{}
		v.Set("client", client)
		v.Set("cursor", next)
		v.Set("limit", strconv.Itoa(limit))
		if f := c.Query("from"); f != "" {
			v.Set("from", f)
		}
		if t := c.Query("to"); t != "" {
			v.Set("to", t)
		}
		page.Next = "/kap/v1/" + coll + "?" + v.Encode()
		c.Header("Link", "<"+page.Next+`>; rel="next"`)
	}
	c.JSON(http.StatusOK, page)
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
	if s.cfg.Circuits == nil {
		c.String(http.StatusOK, "ready")
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready", "circuits": s.cfg.Circuits()})
}
