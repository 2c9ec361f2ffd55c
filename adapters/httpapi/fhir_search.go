package httpapi

// Search: GET /fhir/r4/{type}?... over the stored Bundles. The store
// indexes records by client and resources by business identifier, so a
// search must name the patient (all the records of that client are read),
// an identifier (one Lookup) or an _id (one index lookup); anything else is
// refused as too costly. The other parameters filter. Unknown parameters
// are refused, not ignored: a silently dropped filter would return more
// than was asked for.

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/kapbridge/kap"
)

// patientField is the element of each type that names its patient.
var patientField = map[string]string{
	"Observation": "subject", "Condition": "subject", "Procedure": "subject", "Encounter": "subject",
	"MedicationStatement": "subject", "MedicationRequest": "subject", "MedicationAdministration": "subject",
	"CarePlan": "subject", "Goal": "subject", "AdverseEvent": "subject",
	"AllergyIntolerance": "patient", "Consent": "patient",
}

// dateFields are the elements the date parameter searches, by type.
var dateFields = map[string][]string{
	"Observation":              {"effectiveDateTime", "effectivePeriod", "effectiveInstant"},
	"Procedure":                {"performedDateTime", "performedPeriod"},
	"Encounter":                {"period"},
	"MedicationAdministration": {"effectiveDateTime", "effectivePeriod"},
	"MedicationStatement":      {"effectiveDateTime", "effectivePeriod"},
	"MedicationRequest":        {"authoredOn"},
	"Condition":                {"onsetDateTime", "onsetPeriod", "recordedDate"},
	"AllergyIntolerance":       {"recordedDate"},
	"Consent":                  {"dateTime"},
	"CarePlan":                 {"period"},
	"AdverseEvent":             {"date"},
	"Goal":                     {"startDate"},
}

// codeFields are the CodeableConcepts the code parameter searches.
var codeFields = map[string][]string{
	"Observation": {"code"}, "Condition": {"code"}, "Procedure": {"code"}, "AllergyIntolerance": {"code"},
	"MedicationStatement": {"medicationCodeableConcept"}, "MedicationRequest": {"medicationCodeableConcept"},
	"MedicationAdministration": {"medicationCodeableConcept"}, "Medication": {"code"},
	"Goal": {"description"},
}

// categoryFields are the CodeableConcepts the category parameter searches.
var categoryFields = map[string]string{
	"Observation": "category", "Condition": "category", "CarePlan": "category", "Procedure": "category",
	"Consent": "category", "MedicationRequest": "category", "MedicationStatement": "category",
	"Goal": "category", "AdverseEvent": "category",
}

type searchParam struct{ name, kind, doc string }

// searchParamsOf lists the search parameters of a type.
func searchParamsOf(t string) []searchParam {
	ps := []searchParam{
		{"_id", "token", "the logical id"},
		{"identifier", "token", "system|value of a business identifier (both required)"},
	}
	if patientField[t] != "" {
		ps = append(ps, searchParam{"patient", "reference", "Patient/<id> or <id>: every resource of that client"},
			searchParam{"subject", "reference", "same as patient"})
	}
	if dateFields[t] != nil {
		ps = append(ps, searchParam{"date", "date", "eq, ne, gt, lt, ge, le prefixes on " + strings.Join(dateFields[t], ", ")})
	}
	if codeFields[t] != nil {
		ps = append(ps, searchParam{"code", "token", "system|code, code, |code or system| on " + strings.Join(codeFields[t], ", ")})
	}
	if categoryFields[t] != "" {
		ps = append(ps, searchParam{"category", "token", "system|code, code, |code or system|"})
	}
	return ps
}

const (
	defaultCount = 50
	maxCount     = 500
)

// match is one search result with the record it came from.
type match struct {
	r        fhirRes
	clientID string
}

// tooCostly answers 400 with issue code too-costly.
func tooCostly(c *gin.Context, msg string) {
	writeOutcome(c, http.StatusBadRequest, fhirRes{"resourceType": "OperationOutcome", "issue": []any{
		map[string]any{"severity": "error", "code": "too-costly", "diagnostics": msg}}})
}

func badParam(param, reason string) error {
	return &kap.Error{Code: kap.EINVALID, Message: "invalid search", Issues: []kap.Issue{{Path: param, Reason: reason}}}
}

// fhirSearch is GET /fhir/r4/{type}.
func (s *server) fhirSearch(c *gin.Context) {
	typ := c.Param("type")
	if !s.knownType(c, typ) {
		return
	}
	q := c.Request.URL.Query()
	allowed := map[string]bool{"_format": true, "_count": true, "_summary": true, "_include": true, "_page": true}
	for _, p := range searchParamsOf(typ) {
		allowed[p.name] = true
	}
	for name := range q {
		if !allowed[name] {
			s.failStatus(c, http.StatusBadRequest, badParam(name, fmt.Sprintf("not a search parameter this server supports for %s (supported: %s)",
				typ, strings.Join(sortedStrings(allowed), ", "))))
			return
		}
	}
	count := defaultCount
	if v := q.Get("_count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			s.failStatus(c, http.StatusBadRequest, badParam("_count", "must be a non-negative integer"))
			return
		}
		count = min(n, maxCount)
	}
	summary := q.Get("_summary")
	if summary != "" && summary != "count" && summary != "false" {
		s.failStatus(c, http.StatusBadRequest, badParam("_summary", "only count and false are supported"))
		return
	}
	include := false
	for _, inc := range q["_include"] {
		if inc != typ+":patient" && inc != typ+":subject" || patientField[typ] == "" {
			s.failStatus(c, http.StatusBadRequest, badParam("_include", "only "+typ+":patient and "+typ+":subject are supported"))
			return
		}
		include = true
	}
	offset := 0
	fingerprint := queryFingerprint(typ, q)
	if p := q.Get("_page"); p != "" {
		o, ok := parseCursor(p, fingerprint)
		if !ok {
			s.failStatus(c, http.StatusBadRequest, badParam("_page", "not a page cursor of this search (cursors are only valid with the query that made them)"))
			return
		}
		offset = o
	}
	filters, err := parseFilters(typ, q)
	if err != nil {
		s.failStatus(c, http.StatusBadRequest, err)
		return
	}
	if len(q["_id"]) == 0 && len(q["identifier"]) == 0 && len(q["patient"]) == 0 && len(q["subject"]) == 0 {
		tooCostly(c, "a search of "+typ+" needs patient (or subject), identifier or _id: the gateway's store indexes records by client "+
			"and resources by business identifier, so any other search would read every record of the tenant")
		return
	}
	tenant := c.GetString(ctxTenant)
	matches, err := s.candidates(c.Request.Context(), tenant, typ, q)
	if err != nil {
		if kap.ErrorCode(err) == kap.EINVALID {
			s.failStatus(c, http.StatusBadRequest, err)
		} else {
			s.fail(c, err)
		}
		return
	}
	patientClients := map[string]bool{}
	for _, ref := range append(append([]string(nil), q["patient"]...), q["subject"]...) {
		cid, err := s.patientClient(c.Request.Context(), tenant, ref)
		if kap.ErrorCode(err) == kap.EINVALID {
			s.failStatus(c, http.StatusBadRequest, err)
			return
		} else if err != nil {
			s.fail(c, err)
			return
		}
		patientClients[cid] = true
	}
	var hits []match
	seen := map[string]bool{}
	for _, m := range matches {
		if seen[m.r.id()] || !filters.keep(m.r) {
			continue
		}
		if len(patientClients) > 0 && (len(patientClients) > 1 || !patientClients[m.clientID]) {
			continue // the patient parameter filters _id and identifier searches too
		}
		seen[m.r.id()] = true
		hits = append(hits, m)
	}
	total := len(hits)
	base := baseURL(c)
	self := base + "/" + typ + "?" + c.Request.URL.RawQuery
	out := bundleOut{Type: "searchset", Total: &total, Link: []bundleLink{{"self", self}}}
	if summary == "count" || count == 0 {
		s.writeBundle(c, out)
		return
	}
	end := min(offset+count, len(hits))
	if offset > len(hits) {
		offset = len(hits)
	}
	if end < len(hits) {
		nq := url.Values{}
		for k, v := range q {
			if k != "_page" {
				nq[k] = v
			}
		}
		nq.Set("_page", makeCursor(end, fingerprint))
		out.Link = append(out.Link, bundleLink{"next", base + "/" + typ + "?" + nq.Encode()})
	}
	included := map[string]bool{}
	var incs []bundleEntry
	for _, m := range hits[offset:end] {
		out.Entry = append(out.Entry, bundleEntry{FullURL: base + "/" + typ + "/" + m.r.id(), Resource: m.r, Search: "match"})
		if !include {
			continue
		}
		ref := refOf(m.r, patientField[typ])
		pt, pid, ok := strings.Cut(ref, "/")
		if !ok || pt != "Patient" || included[pid] {
			continue
		}
		included[pid] = true
		p, err := s.readResource(c.Request.Context(), tenant, "Patient", pid)
		if err == nil {
			incs = append(incs, bundleEntry{FullURL: base + "/Patient/" + pid, Resource: p, Search: "include"})
		} else if kap.ErrorCode(err) != kap.ENOTFOUND {
			s.fail(c, err)
			return
		}
	}
	out.Entry = append(out.Entry, incs...)
	s.writeBundle(c, out)
}

// readResource returns the latest typ/id of the tenant.
func (s *server) readResource(ctx context.Context, tenant, typ, id string) (fhirRes, error) {
	rec, err := resolveID(ctx, s.cfg.Store.Records(), tenant, typ, id)
	if err != nil {
		return nil, err
	}
	return s.findResource(tenant, rec, typ, id)
}

// refOf returns the reference string of field (a Reference) of r.
func refOf(r fhirRes, field string) string {
	m, _ := r[field].(map[string]any)
	s, _ := m["reference"].(string)
	return s
}

// candidates returns the resources of typ named by _id, identifier or
// patient (the first present, in that order; the others filter).
func (s *server) candidates(ctx context.Context, tenant, typ string, q url.Values) ([]match, error) {
	rs := s.cfg.Store.Records()
	fromRecord := func(rec kap.StoredRecord) ([]match, error) {
		all, err := s.recordResources(tenant, rec, typ)
		if err != nil {
			return nil, err
		}
		out := make([]match, len(all))
		for i, r := range all {
			out[i] = match{r: r, clientID: rec.ClientID}
		}
		return out, nil
	}
	switch {
	case len(q["_id"]) > 0:
		var out []match
		want := map[string]bool{}
		for _, id := range strings.Split(q["_id"][0], ",") {
			if want[id] {
				continue
			}
			want[id] = true
			rec, err := resolveID(ctx, rs, tenant, typ, id)
			if kap.ErrorCode(err) == kap.ENOTFOUND {
				continue
			} else if err != nil {
				return nil, err
			}
			r, err := s.findResource(tenant, rec, typ, id)
			if kap.ErrorCode(err) == kap.ENOTFOUND {
				continue // no longer in the latest version
			} else if err != nil {
				return nil, err
			}
			out = append(out, match{r: r, clientID: rec.ClientID})
		}
		return out, nil
	case len(q["identifier"]) > 0:
		var out []match
		for _, tok := range strings.Split(q["identifier"][0], ",") {
			sys, val, ok := strings.Cut(tok, "|")
			if !ok || sys == "" || val == "" {
				return nil, badParam("identifier", "must be system|value (the store finds resources by both)")
			}
			rec, err := rs.Lookup(ctx, tenant, kap.ResourceRef{Type: typ, System: sys, Value: val})
			if kap.ErrorCode(err) == kap.ENOTFOUND {
				continue
			} else if err != nil {
				return nil, err
			}
			ms, err := fromRecord(rec)
			if err != nil {
				return nil, err
			}
			out = append(out, ms...)
		}
		return out, nil
	default:
		refs := append(append([]string(nil), q["patient"]...), q["subject"]...)
		var clientID string
		for i, ref := range refs {
			cid, err := s.patientClient(ctx, tenant, ref)
			if err != nil {
				return nil, err
			}
			if i > 0 && cid != clientID {
				return nil, nil // two different patients: nothing is about both
			}
			clientID = cid
		}
		if clientID == "" {
			return nil, nil
		}
		var out []match
		cursor := ""
		for {
			recs, next, err := rs.ListByClient(ctx, tenant, clientID, kap.ListQuery{Limit: 1000, Cursor: cursor})
			if err != nil {
				return nil, err
			}
			for _, rec := range recs {
				if err := ensureIndexed(ctx, rs, rec); err != nil {
					return nil, err
				}
				ms, err := fromRecord(rec)
				if err != nil {
					return nil, err
				}
				out = append(out, ms...)
			}
			if next == "" {
				return out, nil
			}
			cursor = next
		}
	}
}

// patientClient resolves a patient parameter ("Patient/<id>", "<id>" or
// the full URL) to the client id; "" when no such Patient exists.
func (s *server) patientClient(ctx context.Context, tenant, ref string) (string, error) {
	if i := strings.Index(ref, "/fhir/r4/"); i >= 0 {
		ref = ref[i+len("/fhir/r4/"):]
	}
	if t, id, ok := strings.Cut(ref, "/"); ok {
		if t != "Patient" {
			return "", badParam("patient", "must reference a Patient")
		}
		ref = id
	}
	if !validFHIRID(ref) {
		return "", badParam("patient", "must be Patient/<id> or <id>, with a FHIR id ([A-Za-z0-9-.]{1,64})")
	}
	rec, err := resolveID(ctx, s.cfg.Store.Records(), tenant, "Patient", ref)
	if kap.ErrorCode(err) == kap.ENOTFOUND {
		return "", nil
	}
	return rec.ClientID, err
}

// filters are the conditions every match must meet.
type filters struct {
	typ        string
	identifier []string // token lists, each must match
	dates      []dateCond
	codes      [][]token
	categories [][]token
}

type token struct {
	system, code       string
	anySystem, anyCode bool
}

type dateCond struct {
	prefix string
	lo, hi time.Time // [lo, hi)
}

func parseTokens(param, v string) ([]token, error) {
	var out []token
	for _, part := range strings.Split(v, ",") {
		if part == "" {
			return nil, badParam(param, "empty token")
		}
		sys, code, hasBar := strings.Cut(part, "|")
		switch {
		case !hasBar:
			out = append(out, token{code: part, anySystem: true})
		case code == "":
			out = append(out, token{system: sys, anyCode: true})
		default:
			out = append(out, token{system: sys, code: code}) // sys "" means "no system"
		}
	}
	return out, nil
}

func parseFilters(typ string, q url.Values) (*filters, error) {
	f := &filters{typ: typ}
	f.identifier = q["identifier"]
	for _, v := range q["date"] {
		dc, err := parseDateParam(v)
		if err != nil {
			return nil, err
		}
		f.dates = append(f.dates, dc)
	}
	for _, v := range q["code"] {
		ts, err := parseTokens("code", v)
		if err != nil {
			return nil, err
		}
		f.codes = append(f.codes, ts)
	}
	for _, v := range q["category"] {
		ts, err := parseTokens("category", v)
		if err != nil {
			return nil, err
		}
		f.categories = append(f.categories, ts)
	}
	return f, nil
}

func parseDateParam(v string) (dateCond, error) {
	prefix := "eq"
	if len(v) >= 2 && v[0] >= 'a' && v[0] <= 'z' {
		prefix, v = v[:2], v[2:]
	}
	switch prefix {
	case "eq", "ne", "gt", "lt", "ge", "le":
	default:
		return dateCond{}, badParam("date", "prefix "+prefix+" is not supported (eq, ne, gt, lt, ge, le)")
	}
	lo, hi, ok := dateRange(v)
	if !ok {
		return dateCond{}, badParam("date", "must be a FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][Z|±hh:mm])")
	}
	return dateCond{prefix: prefix, lo: lo, hi: hi}, nil
}

// dateRange returns the range [lo, hi) a FHIR date or dateTime covers at
// its precision. Values without a time zone are read as UTC.
func dateRange(v string) (lo, hi time.Time, ok bool) {
	layouts := []struct {
		layout string
		step   func(time.Time) time.Time
	}{
		{"2006", func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }},
		{"2006-01", func(t time.Time) time.Time { return t.AddDate(0, 1, 0) }},
		{"2006-01-02", func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }},
		{"2006-01-02T15:04Z07:00", func(t time.Time) time.Time { return t.Add(time.Minute) }},
		{"2006-01-02T15:04:05Z07:00", func(t time.Time) time.Time { return t.Add(time.Second) }},
		{"2006-01-02T15:04:05.999999999Z07:00", func(t time.Time) time.Time { return t.Add(time.Millisecond) }},
		{"2006-01-02T15:04", func(t time.Time) time.Time { return t.Add(time.Minute) }},
		{"2006-01-02T15:04:05", func(t time.Time) time.Time { return t.Add(time.Second) }},
	}
	for _, l := range layouts {
		if t, err := time.ParseInLocation(l.layout, v, time.UTC); err == nil {
			return t, l.step(t), true
		}
	}
	return time.Time{}, time.Time{}, false
}

// resourceRange returns the time range of the date fields of r; ok false
// when it has none.
func resourceRange(r fhirRes, fields []string) (lo, hi time.Time, ok bool) {
	for _, f := range fields {
		switch v := r[f].(type) {
		case string:
			l, h, ok := dateRange(v)
			if ok {
				return l, h, true
			}
		case map[string]any: // Period
			start, _ := v["start"].(string)
			end, _ := v["end"].(string)
			l, _, okS := dateRange(start)
			_, h, okE := dateRange(end)
			if !okS && !okE {
				continue
			}
			if !okS {
				l = time.Time{}
			}
			if !okE {
				h = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
			}
			return l, h, true
		}
	}
	return time.Time{}, time.Time{}, false
}

// keep reports whether r meets every filter.
func (f *filters) keep(r fhirRes) bool {
	for _, v := range f.identifier {
		if !identifierMatches(r, v) {
			return false
		}
	}
	if len(f.dates) > 0 {
		lo, hi, ok := resourceRange(r, dateFields[f.typ])
		if !ok {
			return false
		}
		for _, d := range f.dates {
			var in bool
			switch d.prefix {
			case "eq":
				in = !lo.Before(d.lo) && !hi.After(d.hi)
			case "ne":
				in = lo.Before(d.lo) || hi.After(d.hi)
			case "gt":
				in = hi.After(d.hi)
			case "lt":
				in = lo.Before(d.lo)
			case "ge":
				in = hi.After(d.lo)
			case "le":
				in = lo.Before(d.hi)
			}
			if !in {
				return false
			}
		}
	}
	for _, ts := range f.codes {
		if !anyConceptMatches(r, codeFields[f.typ], ts) {
			return false
		}
	}
	for _, ts := range f.categories {
		if !anyConceptMatches(r, []string{categoryFields[f.typ]}, ts) {
			return false
		}
	}
	return true
}

func identifierMatches(r fhirRes, v string) bool {
	ids, _ := r["identifier"].([]any)
	if m, ok := r["identifier"].(map[string]any); ok {
		ids = []any{m}
	}
	for _, tok := range strings.Split(v, ",") {
		sys, val, _ := strings.Cut(tok, "|")
		for _, x := range ids {
			id, _ := x.(map[string]any)
			if id["system"] == sys && id["value"] == val {
				return true
			}
		}
	}
	return false
}

// anyConceptMatches reports whether a coding of the CodeableConcept(s) in
// fields of r matches one of the tokens.
func anyConceptMatches(r fhirRes, fields []string, ts []token) bool {
	for _, f := range fields {
		var ccs []any
		switch v := r[f].(type) {
		case []any:
			ccs = v
		case map[string]any:
			ccs = []any{v}
		}
		for _, x := range ccs {
			cc, _ := x.(map[string]any)
			codings, _ := cc["coding"].([]any)
			for _, y := range codings {
				cd, _ := y.(map[string]any)
				sys, _ := cd["system"].(string)
				code, _ := cd["code"].(string)
				for _, t := range ts {
					if (t.anySystem || t.system == sys) && (t.anyCode || t.code == code) {
						return true
					}
				}
			}
		}
	}
	return false
}

// queryFingerprint hashes the search (type and parameters except the
// cursor and _format), so a cursor only works with its own query.
func queryFingerprint(typ string, q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		if k != "_page" && k != "_format" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	h := sha256.New()
	h.Write([]byte(typ))
	for _, k := range keys {
		for _, v := range q[k] {
			h.Write([]byte("\x00" + k + "=" + v))
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// makeCursor encodes the offset of the next page and the query's
// fingerprint; it holds nothing else.
func makeCursor(offset int, fingerprint string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("v1:" + strconv.Itoa(offset) + ":" + fingerprint))
}

func parseCursor(cur, fingerprint string) (int, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(cur)
	if err != nil {
		return 0, false
	}
	parts := strings.Split(string(raw), ":")
	if len(parts) != 3 || parts[0] != "v1" || parts[2] != fingerprint {
		return 0, false
	}
	n, err := strconv.Atoi(parts[1])
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}
