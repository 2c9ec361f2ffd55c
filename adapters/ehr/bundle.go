package ehr

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"net/url"
	"sort"
	"strings"

	"github.com/google/uuid"
	"github.com/kapbridge/kap"
)

// entry is one resource of a mapped transaction Bundle, as generic JSON:
// delivery rewrites references and drops entries, it does not interpret
// clinical content.
type entry struct {
	FullURL  string
	Type     string
	Param    string // the search parameter of the business key: "identifier" or "_tag"
	System   string
	Value    string
	Resource map[string]any
	Decision decision
	// Index in the original Bundle.
	Index int
}

// Key is "system|value".
func (e *entry) Key() string { return e.System + "|" + e.Value }

func (e *entry) ledgerKey(tenant, target string) kap.LedgerKey {
	return kap.LedgerKey{Tenant: tenant, Target: target, ResourceType: e.Type, Identifier: e.Key()}
}

// query is the search query string of the business key.
func (e *entry) query() string {
	return url.Values{e.Param: {e.Key()}}.Encode()
}

// parseBundle reads a mapped transaction Bundle. Every entry needs a
// resource and a business key: a conditional request URL
// (Type?identifier=system|value or Type?_tag=system|code) or an identifier.
// Returns EINVALID naming the entry.
func parseBundle(b []byte) ([]*entry, error) {
	var bundle struct {
		ResourceType string `json:"resourceType"`
		Type         string `json:"type"`
		Entry        []struct {
			FullURL  string         `json:"fullUrl"`
			Resource map[string]any `json:"resource"`
			Request  struct {
				Method string `json:"method"`
				URL    string `json:"url"`
			} `json:"request"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(b, &bundle); err != nil {
		return nil, kap.Errorf(kap.EINVALID, "bundle: not a JSON FHIR Bundle: %v", err)
	}
	if bundle.ResourceType != "Bundle" {
		return nil, kap.Errorf(kap.EINVALID, "bundle: resourceType is %q, want Bundle", bundle.ResourceType)
	}
	if bundle.Type != "transaction" && bundle.Type != "batch" {
		return nil, kap.Errorf(kap.EINVALID, "bundle: type is %q, want transaction", bundle.Type)
	}
	var out []*entry
	for i, be := range bundle.Entry {
		where := fmt.Sprintf("Bundle.entry[%d]", i)
		if be.Resource == nil {
			return nil, kap.Errorf(kap.EINVALID, "%s: resource is required", where)
		}
		typ, _ := be.Resource["resourceType"].(string)
		if typ == "" {
			return nil, kap.Errorf(kap.EINVALID, "%s.resource: resourceType is required", where)
		}
		e := &entry{FullURL: be.FullURL, Type: typ, Resource: be.Resource, Index: i}
		if t, param, sys, val, ok := parseConditionalURL(be.Request.URL); ok && t == typ {
			e.Param, e.System, e.Value = param, sys, val
		} else if sys, val := firstIdentifier(be.Resource); val != "" {
			e.Param, e.System, e.Value = "identifier", sys, val
		} else {
			return nil, kap.Errorf(kap.EINVALID, "%s: %s has no business identifier (a conditional request.url or an identifier)", where, typ)
		}
		if e.FullURL == "" {
			e.FullURL = "urn:uuid:" + uuid.NewSHA1(uuid.NameSpaceURL, []byte(typ+"|"+e.Key())).String()
		}
		out = append(out, e)
	}
	return out, nil
}

// parseConditionalURL splits "Type?identifier=system|value" (or _tag).
func parseConditionalURL(u string) (typ, param, system, value string, ok bool) {
	typ, q, found := strings.Cut(u, "?")
	if !found || typ == "" || strings.Contains(typ, "/") {
		return "", "", "", "", false
	}
	vals, err := url.ParseQuery(q)
	if err != nil || len(vals) != 1 {
		return "", "", "", "", false
	}
	for _, p := range []string{"identifier", "_tag"} {
		if v := vals.Get(p); v != "" {
			sys, val, found := strings.Cut(v, "|")
			if !found || val == "" {
				return "", "", "", "", false
			}
			return typ, p, sys, val, true
		}
	}
	return "", "", "", "", false
}

func firstIdentifier(res map[string]any) (system, value string) {
	ids, _ := res["identifier"].([]any)
	for _, id := range ids {
		m, _ := id.(map[string]any)
		s, _ := m["system"].(string)
		v, _ := m["value"].(string)
		if v != "" {
			return s, v
		}
	}
	return "", ""
}

// walkRefs calls fn on every Reference object (a map with a "reference"
// string) in v. fn may change the map in place.
func walkRefs(v any, fn func(ref map[string]any)) {
	switch t := v.(type) {
	case map[string]any:
		_, isRef := t["reference"].(string)
		if isRef {
			fn(t)
		}
		for k, c := range t {
			if k == "reference" && isRef {
				continue
			}
			walkRefs(c, fn)
		}
	case []any:
		for _, c := range t {
			walkRefs(c, fn)
		}
	}
}

// refsOf returns the reference strings of a resource.
func refsOf(res map[string]any) []string {
	var out []string
	walkRefs(res, func(r map[string]any) { out = append(out, r["reference"].(string)) })
	return out
}

// orderEntries sorts entries so that an entry comes after every entry it
// references by fullUrl (a topological order, stable otherwise). A cycle
// keeps the remaining entries in their original order.
func orderEntries(es []*entry) []*entry {
	byURL := map[string]*entry{}
	for _, e := range es {
		byURL[e.FullURL] = e
	}
	deps := map[*entry][]*entry{}
	for _, e := range es {
		for _, r := range refsOf(e.Resource) {
			if d, ok := byURL[r]; ok && d != e {
				deps[e] = append(deps[e], d)
			}
		}
	}
	state := map[*entry]int{} // 0 new, 1 visiting, 2 done
	var out []*entry
	var visit func(e *entry)
	visit = func(e *entry) {
		if state[e] != 0 {
			return // done, or a cycle: leave it where it is
		}
		state[e] = 1
		for _, d := range deps[e] {
			visit(d)
		}
		state[e] = 2
		out = append(out, e)
	}
	for _, e := range es {
		visit(e)
	}
	return out
}

// logicalRef turns a reference to a resource that is not sent into a
// logical reference by business identifier, which any target accepts.
func logicalRef(ref map[string]any, typ, system, value string) {
	delete(ref, "reference")
	ref["type"] = typ
	ref["identifier"] = map[string]any{"system": system, "value": value}
}

// clone deep-copies a JSON value.
func clone(v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, c := range t {
			m[k] = clone(c)
		}
		return m
	case []any:
		s := make([]any, len(t))
		for i, c := range t {
			s[i] = clone(c)
		}
		return s
	}
	return v
}

// summaryLine describes a resource in one line from its own coded content
// (code, value, time), for the fallback note. It holds no name, birth date
// or free-text note beyond the resource's code text and dosage text.
func summaryLine(res map[string]any) string {
	typ, _ := res["resourceType"].(string)
	parts := []string{typ}
	if c := conceptText(res["code"]); c != "" {
		parts = append(parts, c)
	} else if c := conceptText(res["medicationCodeableConcept"]); c != "" {
		parts = append(parts, c)
	} else if c := conceptText(res["type"]); c != "" {
		parts = append(parts, c)
	}
	if v := valueText(res); v != "" {
		parts = append(parts, "= "+v)
	}
	var comps []string
	if cs, ok := res["component"].([]any); ok {
		for _, c := range cs {
			cm, _ := c.(map[string]any)
			if v := valueText(cm); v != "" {
				comps = append(comps, conceptText(cm["code"])+" "+v)
			}
		}
	}
	if len(comps) > 0 {
		parts = append(parts, "("+strings.Join(comps, "; ")+")")
	}
	if d, ok := res["dosage"].(map[string]any); ok {
		if t, ok := d["text"].(string); ok {
			parts = append(parts, "dose: "+t)
		}
	}
	if s, ok := res["status"].(string); ok {
		parts = append(parts, "["+s+"]")
	}
	if t := timeText(res); t != "" {
		parts = append(parts, "at "+t)
	}
	return strings.Join(parts, " ")
}

func conceptText(v any) string {
	m, _ := v.(map[string]any)
	if m == nil {
		return ""
	}
	if t, ok := m["text"].(string); ok && t != "" {
		return t
	}
	codings, _ := m["coding"].([]any)
	for _, c := range codings {
		cm, _ := c.(map[string]any)
		if d, ok := cm["display"].(string); ok && d != "" {
			return d
		}
		if d, ok := cm["code"].(string); ok && d != "" {
			return d
		}
	}
	return ""
}

func valueText(m map[string]any) string {
	if m == nil {
		return ""
	}
	if q, ok := m["valueQuantity"].(map[string]any); ok {
		unit, _ := q["unit"].(string)
		if unit == "" {
			unit, _ = q["code"].(string)
		}
		return strings.TrimSpace(fmt.Sprint(q["value"]) + " " + unit)
	}
	if c := conceptText(m["valueCodeableConcept"]); c != "" {
		return c
	}
	for _, k := range []string{"valueString", "valueInteger", "valueBoolean", "valueDateTime"} {
		if v, ok := m[k]; ok {
			return fmt.Sprint(v)
		}
	}
	return ""
}

func timeText(m map[string]any) string {
	for _, k := range []string{"effectiveDateTime", "occurrenceDateTime", "performedDateTime", "recordedDate", "authoredOn"} {
		if s, ok := m[k].(string); ok {
			return s
		}
	}
	for _, k := range []string{"effectivePeriod", "performedPeriod", "period"} {
		if p, ok := m[k].(map[string]any); ok {
			s, _ := p["start"].(string)
			if e, _ := p["end"].(string); e != "" {
				return s + " to " + e
			}
			return s
		}
	}
	return ""
}

// fallbackNote builds the DocumentReference that summarises the resources a
// target does not accept. subject is the patient reference (a copy of the
// record's), enc the encounter reference when the encounter is sent.
func fallbackNote(spec FallbackSpec, refused []*entry, subject, enc map[string]any, date string) *entry {
	first := refused[0]
	for _, e := range refused {
		if e.Type == "Encounter" {
			first = e
		}
	}
	system := first.System
	if i := strings.LastIndex(system, "/"); i > 0 {
		system = system[:i] + "/DocumentReference"
	}
	value := first.Value
	if segs := strings.SplitN(value, "/", 3); len(segs) >= 2 {
		value = segs[0] + "/" + segs[1]
	}
	value += "/summary"

	sorted := append([]*entry(nil), refused...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Index < sorted[j].Index })
	lines := []string{"KAP session summary: content this EHR does not accept as structured data."}
	for _, e := range sorted {
		lines = append(lines, "- "+summaryLine(e.Resource))
	}
	ct := spec.ContentType
	if ct == "" {
		ct = "text/plain"
	}
	var data string
	if ct == "application/xhtml+xml" {
		var b strings.Builder
		b.WriteString(`<div xmlns="http://www.w3.org/1999/xhtml">`)
		for _, l := range lines {
			b.WriteString("<p>" + html.EscapeString(l) + "</p>")
		}
		b.WriteString("</div>")
		data = b.String()
	} else {
		data = strings.Join(lines, "\n") + "\n"
	}
	res := map[string]any{
		"resourceType": "DocumentReference",
		"identifier":   []any{map[string]any{"system": system, "value": value}},
		"status":       "current",
		"docStatus":    "final",
		"type": map[string]any{"coding": []any{map[string]any{
			"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}}},
		"category": []any{map[string]any{"coding": []any{map[string]any{
			"system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "code": "clinical-note", "display": "Clinical Note"}}}},
		"description": "KAP session summary (fallback)",
		"content": []any{map[string]any{"attachment": map[string]any{
			"contentType": ct,
			"data":        base64.StdEncoding.EncodeToString([]byte(data)),
			"title":       "KAP session summary",
		}}},
	}
	if subject != nil {
		res["subject"] = clone(subject)
	}
	if enc != nil {
		res["context"] = map[string]any{"encounter": []any{clone(enc)}}
	}
	if date != "" {
		res["date"] = date
	}
	h := sha1.Sum([]byte(system + "|" + value))
	return &entry{
		FullURL:  "urn:uuid:" + uuid.NewSHA1(uuid.NameSpaceURL, h[:]).String(),
		Type:     "DocumentReference",
		Param:    "identifier",
		System:   system,
		Value:    value,
		Resource: res,
		Index:    1 << 30,
	}
}
