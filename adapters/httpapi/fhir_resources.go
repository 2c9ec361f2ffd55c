package httpapi

// Serving the resources of stored Bundles: each record version's Bundle is
// parsed as plain JSON (it was validated when it was mapped or received),
// and the resources get their logical id, meta.versionId (the record
// version) and meta.lastUpdated (when that version was stored). References
// are rewritten so that a client can follow them on this facade:
// "urn:uuid:<x>" of an entry of the same Bundle becomes "<Type>/<x>", and a
// conditional reference to one of the tenant's identifier systems
// ("Patient?identifier=<base>/Patient|c001") becomes "<Type>/<its id>".

import (
	"bytes"
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"time"

	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/mapping"
)

// resource is one FHIR resource as a JSON object.
type fhirRes map[string]any

func (r fhirRes) typ() string { s, _ := r["resourceType"].(string); return s }
func (r fhirRes) id() string  { s, _ := r["id"].(string); return s }

// decodeJSON decodes JSON keeping numbers as written (json.Number).
func decodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}

// encodeResource writes a resource with resourceType first (clients and
// people read it first), the other members sorted.
func encodeResource(r fhirRes) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"resourceType":`)
	t, _ := json.Marshal(r.typ())
	b.Write(t)
	keys := make([]string, 0, len(r))
	for k := range r {
		if k != "resourceType" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(r[k])
		if err != nil {
			return nil, err
		}
		b.WriteByte(',')
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// mapperFor returns the tenant's mapper.
func (s *server) mapperFor(tenant string) *mapping.Mapper {
	if m := s.mappers[tenant]; m != nil {
		return m
	}
	return mapping.New(s.cfg.Codec, mapping.Options{Tenant: tenant, Now: s.cfg.Now})
}

// recordResources returns the resources of type typ of a stored record
// version, ready to serve. Entries of other types are decoded only for
// their type and id (the references to rewrite).
func (s *server) recordResources(tenant string, rec kap.StoredRecord, typ string) ([]fhirRes, error) {
	var b struct {
		Entry []struct {
			FullURL  string          `json:"fullUrl"`
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(rec.Bundle, &b); err != nil {
		return nil, &kap.Error{Code: kap.EINTERNAL, Message: "a stored Bundle cannot be read", Err: err}
	}
	local := map[string]string{} // urn:uuid fullUrl -> Type/id
	var out []fhirRes
	for _, e := range b.Entry {
		var head struct {
			ResourceType string `json:"resourceType"`
			ID           string `json:"id"`
		}
		if err := json.Unmarshal(e.Resource, &head); err != nil {
			return nil, &kap.Error{Code: kap.EINTERNAL, Message: "a stored Bundle cannot be read", Err: err}
		}
		id := head.ID
		if id == "" {
			id, _ = strings.CutPrefix(e.FullURL, "urn:uuid:")
		}
		if !validFHIRID(id) {
			continue // not addressable on the facade
		}
		if e.FullURL != "" {
			local[e.FullURL] = head.ResourceType + "/" + id
		}
		if head.ResourceType != typ {
			continue
		}
		var r fhirRes
		if err := decodeJSON(e.Resource, &r); err != nil || r == nil {
			return nil, &kap.Error{Code: kap.EINTERNAL, Message: "a stored Bundle cannot be read", Err: err}
		}
		r["id"] = id
		out = append(out, r)
	}
	for _, r := range out {
		s.finish(tenant, r, local, rec)
	}
	return out, nil
}

// rewriteRefs rewrites every Reference.reference in v (see the file
// comment).
func rewriteRefs(v any, local map[string]string, m *mapping.Mapper) {
	switch x := v.(type) {
	case map[string]any:
		for k, child := range x {
			if k == "reference" {
				if ref, ok := child.(string); ok {
					x[k] = rewriteRef(ref, local, m)
				}
				continue
			}
			rewriteRefs(child, local, m)
		}
	case fhirRes:
		rewriteRefs(map[string]any(x), local, m)
	case []any:
		for _, child := range x {
			rewriteRefs(child, local, m)
		}
	}
}

func rewriteRef(ref string, local map[string]string, m *mapping.Mapper) string {
	if to, ok := local[ref]; ok {
		return to
	}
	if typ, sys, val, ok := fhir.ParseConditionalRef(ref); ok {
		if owner, mine := m.OwnsSystem(sys); mine && owner == typ {
			return typ + "/" + m.ResourceID(sys, val)
		}
	}
	return ref
}

// findResource returns the resource typ/id of a record version. Only that
// entry is decoded in full; the others only for their type and id (the
// references to rewrite).
func (s *server) findResource(tenant string, rec kap.StoredRecord, typ, id string) (fhirRes, error) {
	var b struct {
		Entry []struct {
			FullURL  string          `json:"fullUrl"`
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(rec.Bundle, &b); err != nil {
		return nil, &kap.Error{Code: kap.EINTERNAL, Message: "a stored Bundle cannot be read", Err: err}
	}
	local := map[string]string{}
	found := -1
	for i, e := range b.Entry {
		var head struct {
			ResourceType string `json:"resourceType"`
			ID           string `json:"id"`
		}
		if json.Unmarshal(e.Resource, &head) != nil {
			continue
		}
		rid := head.ID
		if rid == "" {
			rid, _ = strings.CutPrefix(e.FullURL, "urn:uuid:")
		}
		if e.FullURL != "" && validFHIRID(rid) {
			local[e.FullURL] = head.ResourceType + "/" + rid
		}
		if head.ResourceType == typ && rid == id {
			found = i
		}
	}
	if found < 0 {
		return nil, kap.Errorf(kap.ENOTFOUND, "no %s with this id", typ)
	}
	var r fhirRes
	if err := decodeJSON(b.Entry[found].Resource, &r); err != nil || r == nil {
		return nil, &kap.Error{Code: kap.EINTERNAL, Message: "a stored Bundle cannot be read", Err: err}
	}
	r["id"] = id
	s.finish(tenant, r, local, rec)
	return r, nil
}

// finish rewrites the references of r and sets its meta from the record
// version.
func (s *server) finish(tenant string, r fhirRes, local map[string]string, rec kap.StoredRecord) {
	rewriteRefs(r, local, s.mapperFor(tenant))
	meta, _ := r["meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
	}
	meta["versionId"] = strconv.Itoa(rec.Version)
	meta["lastUpdated"] = rec.StoredAt.UTC().Format(time.RFC3339Nano)
	r["meta"] = meta
}

// resourceTypes is the set of R4 resource type names.
func resourceTypes() map[string]bool {
	out := map[string]bool{}
	fields := (&bcrpb.ContainedResource{}).ProtoReflect().Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		if md := fields.Get(i).Message(); md != nil {
			out[string(md.Name())] = true
		}
	}
	return out
}
