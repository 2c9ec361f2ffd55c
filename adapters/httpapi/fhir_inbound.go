package httpapi

// Data arriving FROM EHRs: POST /fhir/r4/{type} (create), PUT
// /fhir/r4/{type}/{id} (update), POST /fhir/r4 with a transaction or batch
// Bundle. Accepted types: kap.InboundResourceTypes. Each resource is
// validated (conformance inbound validator), attached to a client and
// stored as one record of kind kap.KindEHRResource in the tenant's record
// store, without delivery targets (it came from the EHR; nothing is sent
// back). Keying:
//   - a Patient's client is the value of its identifier in
//     Config.InboundPatientSystem (when set) or in the tenant's own Patient
//     system (<identifier base>/Patient); a Patient with neither is refused
//     (422, Patient.identifier);
//   - the other types attach to the client of the Patient their subject
//     (or patient) references: "Patient/<id>" of this facade, a Patient
//     entry of the same transaction (urn:uuid or Patient/<id>), or
//     "Patient?identifier=<one of those systems>|<client id>" of a client
//     the gateway knows (any record); otherwise 422 naming the element;
//   - a created resource's id derives from its first identifier (so
//     resending a create updates the same resource) or is random; an update
//     keeps the id of its URL. The gateway's own resources (mapped from
//     clinic records) cannot be updated here (409).
// A transaction validates and resolves every entry first and stores only
// when all are good; entries are then stored one by one (the store has no
// multi-record transaction): if the store fails midway, the earlier entries
// stay stored and the answer is an error, and resending the transaction is
// safe (the puts are keyed and idempotent).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"google.golang.org/protobuf/proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/mapping"
)

// inboundPutTries bounds the retries of a put that lost a race with
// another writer of the same resource.
const inboundPutTries = 8

// inEntry is one inbound resource being processed.
type inEntry struct {
	path     string // FHIRPath prefix of the resource, e.g. "Bundle.entry[2].resource"
	fullURL  string
	typ, id  string
	res      fhirRes
	msg      proto.Message
	clientID string
	// patientRef is "Patient/<id>" of the Patient the resource is about,
	// when the facade holds one; the stored reference is set to it.
	patientRef string
	ifMatch    int
}

// inFail is a problem with an inbound entry.
type inFail struct {
	status int
	err    error
}

func (f *inFail) Error() string { return f.err.Error() }

func inInvalid(status int, path, reason string) *inFail {
	return &inFail{status: status, err: &kap.Error{Code: kap.EINVALID, Message: "invalid request", Issues: []kap.Issue{{Path: path, Reason: reason}}}}
}

// patientSystems are the identifier systems that key a client.
func (s *server) patientSystems(tenant string) []string {
	own := s.mapperFor(tenant).System("Patient")
	if sys := s.cfg.InboundPatientSystem; sys != "" && sys != own {
		return []string{sys, own}
	}
	return []string{own}
}

func isInboundType(t string) bool { return slices.Contains(kap.InboundResourceTypes, t) }

// validateResource validates one resource document; the returned failure
// names the offending elements.
func (s *server) validateResource(data []byte, pathPrefix string) (proto.Message, fhirRes, *inFail) {
	cr, err := s.validator.Validate(data)
	if err != nil {
		if kap.ErrorCode(err) != kap.EINVALID {
			return nil, nil, &inFail{status: status(err), err: err}
		}
		if pathPrefix != "" {
			issues := kap.ErrorIssues(err)
			out := make([]kap.Issue, len(issues))
			for i, is := range issues {
				is.Path = prefixPath(pathPrefix, is.Path)
				out[i] = is
			}
			err = &kap.Error{Code: kap.EINVALID, Message: "invalid FHIR resource", Issues: out}
		}
		st := http.StatusUnprocessableEntity
		if status(err) == http.StatusBadRequest {
			st = http.StatusBadRequest
		}
		return nil, nil, &inFail{status: st, err: err}
	}
	var r fhirRes
	if err := decodeJSON(data, &r); err != nil {
		return nil, nil, inInvalid(http.StatusBadRequest, pathPrefix, "malformed JSON")
	}
	return fhir.Unwrap(cr), r, nil
}

// prefixPath puts a resource's issue path ("Observation.status") under an
// entry path ("Bundle.entry[1].resource").
func prefixPath(prefix, p string) string {
	if p == "" {
		return prefix
	}
	if _, rest, ok := strings.Cut(p, "."); ok && p[0] >= 'A' && p[0] <= 'Z' {
		return prefix + "." + rest
	}
	return prefix + "." + p
}

// fhirCreate is POST /fhir/r4/{type}.
func (s *server) fhirCreate(c *gin.Context) {
	typ := c.Param("type")
	if !s.inboundType(c, typ, "create") {
		return
	}
	msg, r, ok := s.inboundBody(c, typ)
	if !ok {
		return
	}
	e := &inEntry{typ: typ, res: r, msg: msg, path: typ}
	tenant := c.GetString(ctxTenant)
	e.id = s.createID(tenant, e)
	s.storeOne(c, tenant, e)
}

// fhirUpdate is PUT /fhir/r4/{type}/{id}.
func (s *server) fhirUpdate(c *gin.Context) {
	typ, id := c.Param("type"), c.Param("id")
	if !s.inboundType(c, typ, "update") {
		return
	}
	if !validFHIRID(id) {
		s.failStatus(c, http.StatusBadRequest, &kap.Error{Code: kap.EINVALID, Message: "invalid request",
			Issues: []kap.Issue{{Path: typ + ".id", Reason: "the URL's id is not a FHIR id ([A-Za-z0-9-.]{1,64})"}}})
		return
	}
	msg, r, ok := s.inboundBody(c, typ)
	if !ok {
		return
	}
	if r.id() != id {
		s.failStatus(c, http.StatusBadRequest, &kap.Error{Code: kap.EINVALID, Message: "invalid request",
			Issues: []kap.Issue{{Path: typ + ".id", Reason: "must be present and equal the id in the URL"}}})
		return
	}
	e := &inEntry{typ: typ, id: id, res: r, msg: msg, path: typ}
	if im := c.GetHeader("If-Match"); im != "" {
		v, err := strconv.Atoi(strings.Trim(strings.TrimPrefix(strings.TrimSpace(im), "W/"), `"`))
		if err != nil || v < 1 {
			s.failStatus(c, http.StatusBadRequest, &kap.Error{Code: kap.EINVALID, Message: "invalid request",
				Issues: []kap.Issue{{Path: "If-Match", Reason: `must be W/"<versionId>"`}}})
			return
		}
		e.ifMatch = v
	}
	s.storeOne(c, c.GetString(ctxTenant), e)
}

// storeOne resolves, stores and answers one resource.
func (s *server) storeOne(c *gin.Context, tenant string, e *inEntry) {
	ctx := c.Request.Context()
	if f := s.resolveClient(ctx, tenant, e, nil); f != nil {
		s.failStatus(c, f.status, f.err)
		return
	}
	if f := s.checkOwner(ctx, tenant, e); f != nil {
		s.failStatus(c, f.status, f.err)
		return
	}
	rec, created, err := s.putInbound(ctx, tenant, e, nil)
	if err != nil {
		s.fail(c, err)
		return
	}
	r, err := s.findResource(tenant, rec, e.typ, e.id)
	if err != nil {
		s.fail(c, err)
		return
	}
	st := http.StatusOK
	if created && rec.Version == 1 {
		st = http.StatusCreated
	}
	c.Header("Location", baseURL(c)+"/"+e.typ+"/"+e.id+"/_history/"+strconv.Itoa(rec.Version))
	s.writeResource(c, st, r, rec)
}

// createID is the id a created resource gets.
func (s *server) createID(tenant string, e *inEntry) string {
	sys, val := firstIdentifier(e.res)
	return s.mapperFor(tenant).InboundResourceID(e.typ, sys, val)
}

func firstIdentifier(r fhirRes) (system, value string) {
	ids, _ := r["identifier"].([]any)
	for _, x := range ids {
		id, _ := x.(map[string]any)
		sys, _ := id["system"].(string)
		val, _ := id["value"].(string)
		if val != "" {
			return sys, val
		}
	}
	return "", ""
}

// checkOwner refuses to overwrite a resource the gateway mapped from a
// clinic record, and to move a received resource to another patient. Call
// it after resolveClient.
func (s *server) checkOwner(ctx context.Context, tenant string, e *inEntry) *inFail {
	rec, err := resolveID(ctx, s.cfg.Store.Records(), tenant, e.typ, e.id)
	if kap.ErrorCode(err) == kap.ENOTFOUND {
		return nil
	} else if err != nil {
		return &inFail{status: status(err), err: err}
	}
	if rec.Kind != string(kap.KindEHRResource) {
		return &inFail{status: http.StatusConflict, err: &kap.Error{Code: kap.ECONFLICT, Message: "conflict",
			Issues: []kap.Issue{{Path: e.path + ".id", Reason: "this id is a resource the gateway mapped from a clinic record; change it through the kap/v1 API"}}}}
	}
	if rec.ClientID != e.clientID {
		field := patientField[e.typ]
		if field == "" {
			field = "identifier"
		}
		return &inFail{status: http.StatusConflict, err: &kap.Error{Code: kap.ECONFLICT, Message: "conflict",
			Issues: []kap.Issue{{Path: e.path + "." + field, Reason: "this resource is stored for another patient; it cannot move to a different one"}}}}
	}
	return nil
}

// resolveClient sets e.clientID (see the file comment). local maps the
// fullUrls and "Patient/<id>" of a transaction's Patient entries to them.
func (s *server) resolveClient(ctx context.Context, tenant string, e *inEntry, local map[string]*inEntry) *inFail {
	systems := s.patientSystems(tenant)
	if e.typ == "Patient" {
		ids, _ := e.res["identifier"].([]any)
		for _, sys := range systems {
			for _, x := range ids {
				id, _ := x.(map[string]any)
				if id["system"] == sys {
					if v, _ := id["value"].(string); v != "" {
						e.clientID = v
						return nil
					}
				}
			}
		}
		return inInvalid(http.StatusUnprocessableEntity, e.path+".identifier",
			"the Patient needs an identifier in "+strings.Join(systems, " or ")+": its value is the client id the gateway keys the Patient by")
	}
	field := patientField[e.typ]
	path := e.path + "." + field
	ref := refOf(e.res, field)
	if ref == "" {
		return inInvalid(http.StatusUnprocessableEntity, path, "is required: the gateway attaches "+e.typ+" to the client of this Patient")
	}
	if le := local[ref]; le != nil {
		e.clientID, e.patientRef = le.clientID, "Patient/"+le.id
		return nil
	}
	unknown := inInvalid(http.StatusUnprocessableEntity, path+".reference",
		"the patient is unknown to the gateway: reference a Patient of this server (Patient/<id>), a Patient of the same transaction, "+
			"or Patient?identifier=<"+strings.Join(systems, " or ")+">|<client id> of a known client")
	if typ, sys, val, ok := fhir.ParseConditionalRef(ref); ok {
		if typ != "Patient" || !slices.Contains(systems, sys) {
			return unknown
		}
		for _, le := range local {
			if le.clientID == val {
				e.clientID, e.patientRef = val, "Patient/"+le.id
				return nil
			}
		}
		rs := s.cfg.Store.Records()
		recs, _, err := rs.ListByClient(ctx, tenant, val, kap.ListQuery{Limit: 1})
		if err != nil && kap.ErrorCode(err) != kap.EINVALID {
			return &inFail{status: status(err), err: err}
		}
		if len(recs) == 0 {
			return unknown
		}
		e.clientID = val
		// Point the reference at a Patient of this facade when there is
		// one with that identifier: the EHR's, else the clinic's.
		for _, sys := range systems {
			pr, err := rs.Lookup(ctx, tenant, kap.ResourceRef{Type: "Patient", System: sys, Value: val})
			if err != nil || pr.ClientID != val {
				continue
			}
			if pid, ok := strings.CutPrefix(pr.ID, "Patient/"); ok && pr.Kind == string(kap.KindEHRResource) {
				e.patientRef = "Patient/" + pid
				return nil
			}
			if pr.Kind == string(kap.KindClient) {
				m := s.mapperFor(tenant)
				e.patientRef = "Patient/" + m.ResourceID(m.System("Patient"), pr.ClientID)
				return nil
			}
		}
		return nil
	}
	if i := strings.Index(ref, "/fhir/r4/"); i >= 0 {
		ref = ref[i+len("/fhir/r4/"):]
	}
	typ, id, ok := strings.Cut(ref, "/")
	if !ok || typ != "Patient" || !validFHIRID(id) {
		return unknown
	}
	rec, err := resolveID(ctx, s.cfg.Store.Records(), tenant, "Patient", id)
	if kap.ErrorCode(err) == kap.ENOTFOUND {
		return unknown
	} else if err != nil {
		return &inFail{status: status(err), err: err}
	}
	e.clientID, e.patientRef = rec.ClientID, "Patient/"+id
	return nil
}

// putInbound stores one resource; local maps a transaction's fullUrls to
// their entries (urn:uuid references to them become <Type>/<id>).
func (s *server) putInbound(ctx context.Context, tenant string, e *inEntry, local map[string]*inEntry) (kap.StoredRecord, bool, error) {
	r := fhirRes{}
	for k, v := range e.res {
		r[k] = v
	}
	r["id"] = e.id
	if meta, ok := r["meta"].(map[string]any); ok {
		delete(meta, "versionId")
		delete(meta, "lastUpdated")
		if len(meta) == 0 {
			delete(r, "meta")
		}
	}
	refs := map[string]string{}
	for u, le := range local {
		refs[u] = le.typ + "/" + le.id
	}
	rewriteRefs(r, refs, s.mapperFor(tenant))
	if f := patientField[e.typ]; f != "" && e.patientRef != "" {
		if ref, ok := r[f].(map[string]any); ok {
			ref["reference"] = e.patientRef
		}
	}
	body, err := encodeResource(r)
	if err != nil {
		return kap.StoredRecord{}, false, err
	}
	bundle := []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":` + string(body) + `}]}`)
	sum := sha256.Sum256(bundle)
	now := s.cfg.Now()
	ir := mapping.NewInboundRecord(e.msg, e.typ, e.id, e.clientID, s.patientSystems(tenant)[0], now)
	recJSON, err := json.Marshal(ir)
	if err != nil {
		return kap.StoredRecord{}, false, err
	}
	date := now
	if lo, _, ok := resourceRange(r, dateFields[e.typ]); ok && !lo.IsZero() {
		date = lo
	}
	var idents []kap.ResourceRef
	ids, _ := r["identifier"].([]any)
	for _, x := range ids {
		id, _ := x.(map[string]any)
		sys, _ := id["system"].(string)
		val, _ := id["value"].(string)
		ref := kap.ResourceRef{Type: e.typ, System: sys, Value: val}
		if sys != "" && kap.ValidateID("value", val) == nil && kap.ValidateID("system", sys) == nil {
			idents = append(idents, ref)
		}
	}
	sr := kap.StoredRecord{
		Tenant: tenant, Kind: string(kap.KindEHRResource), ID: e.typ + "/" + e.id, ClientID: e.clientID,
		ContentHash: hex.EncodeToString(sum[:]), Date: date, Record: recJSON, Bundle: bundle, Resources: idents,
	}
	rs := s.cfg.Store.Records()
	for try := 0; ; try++ {
		opt := kap.PutOptions{IfMatch: e.ifMatch}
		if e.ifMatch == 0 {
			cur, err := rs.Get(ctx, tenant, sr.Kind, sr.ID)
			if err != nil && kap.ErrorCode(err) != kap.ENOTFOUND {
				return kap.StoredRecord{}, false, err
			}
			if err == nil && cur.ClientID != sr.ClientID {
				return kap.StoredRecord{}, false, &kap.Error{Code: kap.ECONFLICT, Message: "conflict",
					Issues: []kap.Issue{{Path: e.path, Reason: "this resource is stored for another patient; it cannot move to a different one"}}}
			}
			opt.IfMatch, opt.IfNoneMatch = cur.Version, cur.Version == 0
		}
		stored, created, err := rs.Put(ctx, sr, opt)
		if kap.ErrorCode(err) == kap.EPRECONDITION && e.ifMatch == 0 {
			if try+1 < inboundPutTries {
				continue
			}
			err = kap.Errorf(kap.ECONFLICT, "the resource is being changed concurrently; retry")
		}
		return stored, created, err
	}
}

// fhirBundle is POST /fhir/r4 with a transaction or batch Bundle.
func (s *server) fhirBundle(c *gin.Context) {
	data, err := s.readBody(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	var b struct {
		ResourceType string `json:"resourceType"`
		Type         string `json:"type"`
		Entry        []struct {
			FullURL  string          `json:"fullUrl"`
			Resource json.RawMessage `json:"resource"`
			Request  struct {
				Method string `json:"method"`
				URL    string `json:"url"`
			} `json:"request"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(data, &b); err != nil {
		s.failStatus(c, http.StatusBadRequest, &kap.Error{Code: kap.EINVALID, Message: "invalid request",
			Issues: []kap.Issue{{Reason: "malformed JSON: the body must be a transaction or batch Bundle"}}})
		return
	}
	if b.ResourceType != "Bundle" || b.Type != "transaction" && b.Type != "batch" {
		s.failStatus(c, http.StatusBadRequest, &kap.Error{Code: kap.EINVALID, Message: "invalid request",
			Issues: []kap.Issue{{Path: "Bundle.type", Reason: "POST to the base needs a Bundle of type transaction or batch"}}})
		return
	}
	tenant := c.GetString(ctxTenant)
	ctx := c.Request.Context()
	batch := b.Type == "batch"
	if !batch {
		if _, f := s.validateWhole(data); f != nil {
			s.failStatus(c, f.status, f.err)
			return
		}
	}
	entries := make([]*inEntry, len(b.Entry))
	fails := make([]*inFail, len(b.Entry))
	for i, be := range b.Entry {
		path := fmt.Sprintf("Bundle.entry[%d]", i)
		if len(be.Resource) == 0 {
			fails[i] = inInvalid(http.StatusBadRequest, path+".resource", "is required")
			continue
		}
		msg, r, f := s.validateResource(be.Resource, path+".resource")
		if f != nil {
			fails[i] = f
			continue
		}
		e := &inEntry{path: path + ".resource", fullURL: be.FullURL, typ: r.typ(), res: r, msg: msg}
		if !isInboundType(e.typ) {
			fails[i] = inInvalid(http.StatusUnprocessableEntity, path+".resource.resourceType",
				"the gateway accepts "+strings.Join(kap.InboundResourceTypes, ", ")+" from EHRs")
			continue
		}
		if f := s.entryTarget(tenant, e, be.Request.Method, be.Request.URL, path+".request"); f != nil {
			fails[i] = f
			continue
		}
		entries[i] = e
	}
	// Patients first, so the other entries can reference them.
	local := map[string]*inEntry{}
	order := make([]int, 0, len(entries))
	for pass := 0; pass < 2; pass++ {
		for i, e := range entries {
			if e == nil || (e.typ == "Patient") != (pass == 0) {
				continue
			}
			order = append(order, i)
			var l map[string]*inEntry
			if !batch {
				l = local
			}
			if f := s.resolveClient(ctx, tenant, e, l); f != nil {
				fails[i], entries[i] = f, nil
				continue
			}
			if f := s.checkOwner(ctx, tenant, e); f != nil {
				fails[i], entries[i] = f, nil
				continue
			}
			if e.typ == "Patient" {
				if e.fullURL != "" {
					local[e.fullURL] = e
				}
				local["Patient/"+e.id] = e
			}
		}
	}
	if !batch {
		var issues []kap.Issue
		st := http.StatusUnprocessableEntity
		for _, f := range fails {
			if f == nil {
				continue
			}
			if f.status == http.StatusBadRequest {
				st = http.StatusBadRequest
			} else if f.status != http.StatusUnprocessableEntity {
				s.failStatus(c, f.status, f.err) // e.g. 409, or the store is down
				return
			}
			if is := kap.ErrorIssues(f.err); len(is) > 0 {
				issues = append(issues, is...)
			} else {
				issues = append(issues, kap.Issue{Reason: kap.ErrorMessage(f.err)})
			}
		}
		if len(issues) > 0 {
			s.failStatus(c, st, &kap.Error{Code: kap.EINVALID, Message: "the transaction was not applied", Issues: issues})
			return
		}
	}
	base := baseURL(c)
	out := bundleOut{Type: b.Type + "-response", Entry: make([]bundleEntry, len(b.Entry))}
	// In a transaction, every entry's fullUrl (and Type/id) resolves to the
	// entry, for rewriting references between entries.
	var l map[string]*inEntry
	if !batch {
		l = map[string]*inEntry{}
		for _, e := range entries {
			if e != nil && e.fullURL != "" {
				l[e.fullURL] = e
			}
		}
	}
	for _, i := range order {
		e := entries[i]
		if e == nil {
			continue
		}
		rec, created, err := s.putInbound(ctx, tenant, e, l)
		if err != nil {
			if !batch {
				s.fail(c, err)
				return
			}
			st := status(err)
			if _, known := statusOf[kap.ErrorCode(err)]; !known {
				st, err = http.StatusInternalServerError, kap.Errorf(kap.EINTERNAL, "internal error; request id %s", c.GetString(ctxRequestID))
			}
			fails[i] = &inFail{status: st, err: err}
			continue
		}
		st := "200 OK"
		if created && rec.Version == 1 {
			st = "201 Created"
		}
		out.Entry[i] = bundleEntry{Response: &entryResponse{Status: st,
			Location:     e.typ + "/" + e.id + "/_history/" + strconv.Itoa(rec.Version),
			Etag:         `W/"` + strconv.Itoa(rec.Version) + `"`,
			LastModified: rec.StoredAt.UTC().Format(time.RFC3339Nano)}, FullURL: base + "/" + e.typ + "/" + e.id}
	}
	for i, f := range fails {
		if f != nil {
			out.Entry[i] = bundleEntry{Response: &entryResponse{Status: strconv.Itoa(f.status) + " " + http.StatusText(f.status),
				Outcome: s.outcomeResource(f.err)}}
		}
	}
	s.writeBundle(c, out)
}

// validateWhole validates a transaction Bundle as one document.
func (s *server) validateWhole(data []byte) (proto.Message, *inFail) {
	cr, err := s.validator.Validate(data)
	if err != nil {
		st := http.StatusUnprocessableEntity
		if kap.ErrorCode(err) != kap.EINVALID {
			st = status(err)
		} else if status(err) == http.StatusBadRequest {
			st = http.StatusBadRequest
		}
		return nil, &inFail{status: st, err: err}
	}
	return fhir.Unwrap(cr), nil
}

// entryTarget reads an entry's request: POST <Type> (create), PUT
// <Type>/<id> (update) or PUT <Type>?identifier=<system>|<value>
// (conditional update, keyed like a create with that identifier).
func (s *server) entryTarget(tenant string, e *inEntry, method, u, path string) *inFail {
	u = strings.TrimPrefix(u, "/")
	switch method {
	case "POST":
		if u != e.typ {
			return inInvalid(http.StatusBadRequest, path+".url", "must be "+e.typ+" for a create of a "+e.typ)
		}
		e.id = s.createID(tenant, e)
		return nil
	case "PUT":
		if typ, sys, val, ok := fhir.ParseConditionalRef(u); ok {
			if typ != e.typ || sys == "" || val == "" {
				return inInvalid(http.StatusBadRequest, path+".url", "must be "+e.typ+"?identifier=system|value")
			}
			e.id = s.mapperFor(tenant).InboundResourceID(e.typ, sys, val)
			return nil
		}
		typ, id, ok := strings.Cut(u, "/")
		if !ok || typ != e.typ || !validFHIRID(id) {
			return inInvalid(http.StatusBadRequest, path+".url", "must be "+e.typ+"/<id> for an update of a "+e.typ)
		}
		if e.res.id() != id {
			return inInvalid(http.StatusBadRequest, e.path+".id", "must be present and equal the id in request.url")
		}
		e.id = id
		return nil
	}
	return inInvalid(http.StatusBadRequest, path+".method", "only POST (create) and PUT (update) are supported in a transaction or batch")
}

// inboundType checks that typ is a resource type EHRs may write
// (interaction names the verb for the 405); when it returns false it has
// answered the request.
func (s *server) inboundType(c *gin.Context, typ, interaction string) bool {
	if !s.knownType(c, typ) {
		return false
	}
	if !isInboundType(typ) {
		s.failStatus(c, http.StatusMethodNotAllowed, kap.Errorf(kap.ENOTIMPLEMENTED,
			"%s is supported for %s only", interaction, strings.Join(kap.InboundResourceTypes, ", ")))
		return false
	}
	return true
}

// inboundBody reads and validates the body of a single-resource write and
// checks its resourceType against the URL's typ; when it returns false it
// has answered the request.
func (s *server) inboundBody(c *gin.Context, typ string) (proto.Message, fhirRes, bool) {
	data, err := s.readBody(c)
	if err != nil {
		s.fail(c, err)
		return nil, nil, false
	}
	msg, r, f := s.validateResource(data, "")
	if f != nil {
		s.failStatus(c, f.status, f.err)
		return nil, nil, false
	}
	if r.typ() != typ {
		s.failStatus(c, http.StatusBadRequest, &kap.Error{Code: kap.EINVALID, Message: "invalid request",
			Issues: []kap.Issue{{Path: "resourceType", Reason: "must be " + typ + " on this URL"}}})
		return nil, nil, false
	}
	return msg, r, true
}
