// Package fhir wraps google/fhir/go for KAP Bridge: one R4 Marshaller and
// Unmarshaller, builders for FHIR datatypes, the code systems and codes the
// mapping uses (copied from ../shared/domain/codes.md), Bundle helpers and
// OperationOutcome construction.
package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
	"github.com/google/fhir/go/jsonformat/fhirvalidate"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/kapbridge/kap"
)

// MaxNestingDepth bounds the JSON nesting of an inbound resource.
const MaxNestingDepth = 64

// Codec marshals and unmarshals R4 resources. It is safe for concurrent use;
// build one with NewCodec and share it.
type Codec struct {
	m       *jsonformat.Marshaller
	pretty  *jsonformat.Marshaller
	u       *jsonformat.Unmarshaller
	lenient *jsonformat.Unmarshaller
	// slowMarshal disables the fast encoder (tests and benchmarks).
	slowMarshal bool
	// slowValidate disables the fast validity proof (tests, benchmarks).
	slowValidate bool
}

// NewCodec builds the R4 codec. Date-only values are read in UTC.
func NewCodec() (*Codec, error) {
	m, err := jsonformat.NewMarshaller(false, "", "", fhirversion.R4)
	if err != nil {
		return nil, err
	}
	p, err := jsonformat.NewPrettyMarshaller(fhirversion.R4)
	if err != nil {
		return nil, err
	}
	u, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		return nil, err
	}
	u.MaxNestingDepth = MaxNestingDepth
	l, err := jsonformat.NewUnmarshallerWithoutValidation("UTC", fhirversion.R4)
	if err != nil {
		return nil, err
	}
	l.MaxNestingDepth = MaxNestingDepth
	return &Codec{m: m, pretty: p, u: u, lenient: l}, nil
}

// MustCodec is NewCodec that panics; for tests and main.
func MustCodec() *Codec {
	c, err := NewCodec()
	if err != nil {
		panic(err)
	}
	return c
}

// Marshal encodes a resource (bare or ContainedResource) as compact JSON.
// It does not validate: call Validate first. The output is jsonformat's,
// byte for byte; a cached-descriptor encoder (codec_perf.go) produces it
// when it can, jsonformat itself otherwise.
func (c *Codec) Marshal(res proto.Message) ([]byte, error) {
	if !c.slowMarshal {
		if out, err := fastMarshal(res); err == nil {
			return out, nil
		}
	}
	return c.marshalJSONFormat(res)
}

// marshalJSONFormat is Marshal with jsonformat alone.
func (c *Codec) marshalJSONFormat(res proto.Message) ([]byte, error) {
	if cr, ok := res.(*bcrpb.ContainedResource); ok {
		return c.m.Marshal(cr)
	}
	return c.m.MarshalResource(res)
}

// MarshalIndent encodes a resource as indented JSON.
func (c *Codec) MarshalIndent(res proto.Message) ([]byte, error) {
	if cr, ok := res.(*bcrpb.ContainedResource); ok {
		return c.pretty.Marshal(cr)
	}
	return c.pretty.MarshalResource(res)
}

// Validate checks a resource with fhirvalidate (cardinality, required
// fields, primitive formats, reference types) and returns an *kap.Error
// with one issue per problem.
func (c *Codec) Validate(res proto.Message) error {
	if cr, ok := res.(*bcrpb.ContainedResource); ok {
		if r := Unwrap(cr); r != nil {
			res = r
		}
	}
	if !c.slowValidate && validFast(res) {
		return nil // fhirvalidate would report nothing (validate_perf.go)
	}
	var rep outcomeReporter
	if err := fhirvalidate.ValidateWithErrorReporter(res, &rep); err != nil {
		rep.add("", err.Error(), "structure")
	}
	if len(rep.issues) > 0 {
		return &kap.Error{Code: kap.EINVALID, Message: "invalid FHIR resource", Issues: rep.issues}
	}
	return nil
}

// Unmarshal parses and validates FHIR JSON of any R4 resource type. Before
// parsing, the document is checked for what google/fhir tolerates and FHIR
// forbids (duplicate keys, field names in the wrong case, empty objects,
// empty strings, null). Parse and validation problems are returned as an
// *kap.Error (EINVALID) with a FHIRPath expression per issue; when only
// validation failed, the partially valid resource is returned as well.
func (c *Codec) Unmarshal(data []byte) (*bcrpb.ContainedResource, error) {
	if issues := Precheck(data); len(issues) > 0 {
		return nil, &kap.Error{Code: kap.EINVALID, Message: "invalid FHIR JSON", Issues: issues}
	}
	var rep outcomeReporter
	msg, err := c.u.UnmarshalWithErrorReporter(data, &rep)
	if err != nil {
		return nil, &kap.Error{Code: kap.EINVALID, Message: "invalid FHIR JSON", Issues: parseIssues(err)}
	}
	cr, ok := msg.(*bcrpb.ContainedResource)
	if !ok {
		return nil, &kap.Error{Code: kap.EINTERNAL, Message: "unexpected message type"}
	}
	if issues := c.caseCheck(data, cr); len(issues) > 0 {
		return nil, &kap.Error{Code: kap.EINVALID, Message: "invalid FHIR JSON", Issues: issues}
	}
	if len(rep.issues) > 0 {
		return cr, &kap.Error{Code: kap.EINVALID, Message: "invalid FHIR resource", Issues: rep.issues}
	}
	return cr, nil
}

// UnmarshalLenient parses FHIR JSON without validation (for data we produced
// ourselves and already validated).
func (c *Codec) UnmarshalLenient(data []byte) (*bcrpb.ContainedResource, error) {
	msg, err := c.lenient.Unmarshal(data)
	if err != nil {
		return nil, &kap.Error{Code: kap.EINVALID, Message: "invalid FHIR JSON", Issues: parseIssues(err)}
	}
	return msg.(*bcrpb.ContainedResource), nil
}

// parseIssues splits google/fhir's joined error text into issues. Its
// messages name paths and reasons, never values.
func parseIssues(err error) []kap.Issue {
	var out []kap.Issue
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		path, reason := "", line
		if rest, ok := strings.CutPrefix(line, "error at \""); ok {
			if i := strings.Index(rest, "\": "); i >= 0 {
				path, reason = rest[:i], rest[i+3:]
			}
		}
		out = append(out, kap.Issue{Path: path, Reason: reason})
	}
	if len(out) == 0 {
		out = append(out, kap.Issue{Reason: "malformed FHIR JSON"})
	}
	return out
}

// outcomeReporter is a google/fhir ErrorReporter collecting kap.Issues.
type outcomeReporter struct{ issues []kap.Issue }

func (r *outcomeReporter) add(path, msg, _ string) {
	r.issues = append(r.issues, kap.Issue{Path: path, Reason: msg})
}

func (r *outcomeReporter) ReportValidationError(path string, err error) error {
	r.add(path, err.Error(), "value")
	return nil
}

func (r *outcomeReporter) ReportValidationWarning(path string, err error) error {
	r.issues = append(r.issues, kap.Issue{Path: path, Reason: err.Error(), Severity: "warning"})
	return nil
}

// Precheck finds what FHIR JSON forbids and google/fhir accepts: duplicate
// keys, empty objects, empty strings, null values, empty arrays, and keys
// that differ only in case from another key. It returns one issue per
// problem with a JSON path.
func Precheck(data []byte) []kap.Issue {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var issues []kap.Issue
	var walk func(path string, depth int) error
	walk = func(path string, depth int) error {
		if depth > MaxNestingDepth {
			return fmt.Errorf("nesting deeper than %d levels", MaxNestingDepth)
		}
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				seen := map[string]bool{}
				lower := map[string]string{}
				n := 0
				for dec.More() {
					kt, err := dec.Token()
					if err != nil {
						return err
					}
					k := kt.(string)
					n++
					p := joinPath(path, k)
					if seen[k] {
						issues = append(issues, kap.Issue{Path: p, Reason: "duplicate key"})
					} else if o, ok := lower[strings.ToLower(k)]; ok {
						issues = append(issues, kap.Issue{Path: p, Reason: fmt.Sprintf("key differs from %q only in case", o)})
					}
					seen[k] = true
					lower[strings.ToLower(k)] = k
					if err := walk(p, depth+1); err != nil {
						return err
					}
				}
				if _, err := dec.Token(); err != nil {
					return err
				}
				if n == 0 {
					issues = append(issues, kap.Issue{Path: path, Reason: "empty object: FHIR forbids objects without content"})
				}
			case '[':
				i := 0
				for dec.More() {
					if err := walk(fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
						return err
					}
					i++
				}
				if _, err := dec.Token(); err != nil {
					return err
				}
				if i == 0 {
					issues = append(issues, kap.Issue{Path: path, Reason: "empty array: FHIR forbids arrays without content"})
				}
			}
		case nil:
			if !strings.HasSuffix(path, "]") {
				issues = append(issues, kap.Issue{Path: path, Reason: "null is not allowed"})
			}
		case string:
			if strings.TrimSpace(t) == "" && !strings.HasSuffix(path, "]") {
				issues = append(issues, kap.Issue{Path: path, Reason: "empty or blank string is not allowed"})
			}
		}
		return nil
	}
	if err := walk("", 0); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return append(issues, kap.Issue{Reason: fmt.Sprintf("malformed JSON at byte %d", se.Offset)})
		}
		return append(issues, kap.Issue{Reason: "malformed JSON: " + err.Error()})
	}
	if dec.More() {
		issues = append(issues, kap.Issue{Reason: "unexpected data after the JSON document"})
	}
	return issues
}

func joinPath(base, key string) string {
	if base == "" {
		return key
	}
	return base + "." + key
}

// caseCheck finds field names google/fhir matched case-insensitively: it
// re-marshals the parsed resource and reports every input key whose exact
// spelling is absent where a key differing only in case is present.
func (c *Codec) caseCheck(data []byte, cr *bcrpb.ContainedResource) []kap.Issue {
	// Marshal: jsonformat's bytes, through the fast encoder when it
	// applies (where jsonformat would rewrite references in cr, Marshal
	// runs jsonformat, so cr comes back as before).
	out, err := c.Marshal(cr)
	if err != nil {
		return nil
	}
	var in, canon any
	if json.Unmarshal(data, &in) != nil || json.Unmarshal(out, &canon) != nil {
		return nil
	}
	var issues []kap.Issue
	var walk func(path string, a, b any)
	walk = func(path string, a, b any) {
		switch av := a.(type) {
		case map[string]any:
			bv, ok := b.(map[string]any)
			if !ok {
				return
			}
			for k, x := range av {
				if y, ok := bv[k]; ok {
					walk(joinPath(path, k), x, y)
					continue
				}
				for bk := range bv {
					if strings.EqualFold(bk, k) {
						issues = append(issues, kap.Issue{Path: joinPath(path, k),
							Reason: fmt.Sprintf("unknown field: FHIR names are case-sensitive (did you mean %q?)", bk)})
					}
				}
			}
		case []any:
			bv, ok := b.([]any)
			if !ok || len(bv) != len(av) {
				return
			}
			for i := range av {
				walk(fmt.Sprintf("%s[%d]", path, i), av[i], bv[i])
			}
		}
	}
	walk("", in, canon)
	return issues
}
