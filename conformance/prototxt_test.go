package conformance_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	oopb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/operation_outcome_go_proto"

	"github.com/kapbridge/kap/fhir"
)

// ptxTypeOverrides names the resource type of fixtures whose file name does
// not start with the snake_case resource name.
var ptxTypeOverrides = map[string]string{
	"empty_bundle": "Bundle",
}

// ptxSkips are resource fixtures on which the gateway's inbound validation
// and google/fhir disagree for a known reason (profiles, slices or
// google/fhir-specific behaviour the gateway does not implement); fixture
// base name without .prototxt → reason. A skipped fixture must still
// disagree: if it starts to agree the test fails (stale skip).
var ptxSkips = map[string]string{
	// Empty messages: google/fhir accepts an empty datatype message; its
	// JSON is {}, which FHIR JSON forbids and the gateway refuses.
	"composition_valid": "Composition.type is an empty message → {} in JSON, which FHIR JSON forbids",
	"composition_invalid_reference_with_validate_reference_id_false": "Composition.type is an empty message → {} in JSON, which FHIR JSON forbids",
	"condition_with_invalid_constraint":                              "an extension valueCodeableConcept is an empty message → {} in JSON, which FHIR JSON forbids",
	"diagnostic_report_with_unsupported_slice_category":              "DiagnosticReport.code and effectivePeriod are empty messages → {} in JSON, which FHIR JSON forbids",
	"encounter_unprofiled_valid":                                     "Encounter.class is an empty message → {} in JSON, which FHIR JSON forbids",
	"medication_administration_valid_oneof_reference":                "effectivePeriod is an empty message → {} in JSON, which FHIR JSON forbids",
	// Not representable as FHIR JSON.
	"research_definition_valid_with_contained":          "the google/fhir Marshaller cannot encode the fixture's contained resource (Any without a type URL), so it never becomes JSON",
	"encounter_invalid_period":                          "the error is a proto DateTime with an empty timezone field; the Marshaller writes it as +00:00, so the JSON is valid",
	"medication_administration_invalid_oneof_reference": "one error is a proto DateTime with an empty timezone (written as +00:00 in JSON); the other is a reference id with spaces, and the gateway does not check the id syntax inside literal references",
	"patient_with_valid_person_join_keys":               "google/fhir checks the id in a typed reference (Patient/Patient/V-30001) against the Id regex; the gateway does not check the id syntax inside literal references",
	// Profiles, slices and bindings the gateway does not apply to resources that do not claim them.
	"observation_bp_invalid_codes":                             "slices of the vital-signs blood-pressure profile (category:VSCat, code.coding:BPCode) applied without meta.profile; the gateway does not apply them",
	"observation_bp_invalid_systems":                           "slice code.coding:BPCode of the vital-signs blood-pressure profile applied without meta.profile; the gateway does not apply it",
	"condition_with_slices_of_invalid_cardinality":             "cardinality of the profile slice Condition.code.coding:icd9; the gateway does not implement slices",
	"patient_us_core_missing_required_fields":                  "US Core Patient min cardinalities (identifier, name, gender) applied without meta.profile; the gateway applies US Core only to resources that claim it",
	"patient_google_profile_with_invalid_birthsex_cardinality": "us-core-birthsex 0..1 from a Google profile not claimed in meta.profile; the gateway does not apply it",
	"patient_invalid_birthsex_extension_value":                 "value-set bindings of the us-core-birthsex and Google SoftDelete extensions; the gateway does not validate extension values against their bindings",
	"patient_missing_identifier_system":                        "Identifier.system required by google/fhir's test profile; base R4 Identifier.system is 0..1",
	"encounter_invalid_priority":                               "google/fhir converts Encounter.priority codes to its ActPriority enum; in R4 Encounter.priority has an example binding, which the gateway does not enforce",
	// Disagreement where google/fhir follows FHIRPath more closely.
	"encounter_valid_start_later_than_end_day_precision": "per-1 with end at day precision on the start's day: FHIRPath start <= end is empty (indeterminate) so google/fhir passes; the gateway's per-1 refuses it (gateway false positive, see docs/conformance-corpora.md)",
}

// ptxUnencodable are fixtures the google/fhir Marshaller cannot encode for
// a reason unrelated to the outcome google/fhir expects, so the inbound
// validation never sees them; they must still fail to marshal (else the
// entry is stale) and count as skipped.
var ptxUnencodable = map[string]string{
	"research_definition_valid_with_contained":                        "its contained resource is an Any without a type URL, which the Marshaller cannot decode",
	"research_definition_with_missing_name":                           "its contained resource is an Any without a type URL (the expected error is the name regex)",
	"coverage_eligibility_request_missing_required_matches_classical": "its contained resource is raw bytes that are no ContainedResource (the expected errors are missing required fields)",
}

// ptxResourceTypes maps each R4 resource message name to its Go type, from
// the ContainedResource oneof.
func ptxResourceTypes() map[string]protoreflect.MessageType {
	out := map[string]protoreflect.MessageType{}
	fields := (&bcrpb.ContainedResource{}).ProtoReflect().Descriptor().Oneofs().ByName("oneof_resource").Fields()
	cr := (&bcrpb.ContainedResource{}).ProtoReflect()
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		out[string(f.Message().Name())] = cr.NewField(f).Message().Type()
	}
	return out
}

// ptxCamel turns snake_case into CamelCase.
func ptxCamel(s string) string {
	var b strings.Builder
	for _, p := range strings.Split(s, "_") {
		if p != "" {
			b.WriteString(strings.ToUpper(p[:1]) + p[1:])
		}
	}
	return b.String()
}

// ptxResourceType finds the longest file-name prefix that names an R4
// resource ("medication_administration_fails_…" → MedicationAdministration).
func ptxResourceType(name string, types map[string]protoreflect.MessageType) (string, protoreflect.MessageType) {
	if t, ok := ptxTypeOverrides[name]; ok {
		return t, types[t]
	}
	parts := strings.Split(name, "_")
	for n := len(parts); n > 0; n-- {
		c := ptxCamel(strings.Join(parts[:n], "_"))
		if mt, ok := types[c]; ok {
			return c, mt
		}
	}
	return "", nil
}

// ptxExpectation is google/fhir's expected outcome for a fixture: the
// number of ERROR-severity issues of its .outcome.prototxt when there is
// one; otherwise the lines of its .result.txt; otherwise the file name
// (invalid/fails/missing → invalid, except "…_ignored…", whose violation
// google/fhir ignores on purpose).
func ptxExpectation(t *testing.T, dir, name string) (valid bool, source string) {
	t.Helper()
	if data, err := os.ReadFile(filepath.Join(dir, name+".outcome.prototxt")); err == nil {
		var oo oopb.OperationOutcome
		if err := prototext.Unmarshal(data, &oo); err != nil {
			t.Fatalf("%s.outcome.prototxt: %v", name, err)
		}
		errs := 0
		for _, is := range oo.GetIssue() {
			if s := is.GetSeverity().GetValue(); s == cpb.IssueSeverityCode_ERROR || s == cpb.IssueSeverityCode_FATAL {
				errs++
			}
		}
		return errs == 0, "outcome"
	}
	if data, err := os.ReadFile(filepath.Join(dir, name+".result.txt")); err == nil {
		return strings.TrimSpace(string(data)) == "", "result"
	}
	if strings.Contains(name, "_ignored") {
		return true, "name"
	}
	for _, w := range []string{"invalid", "fails", "missing"} {
		if strings.Contains(name, w) {
			return false, "name"
		}
	}
	return true, "name"
}

// TestPrototxtGoogleResources: the google/fhir R4 resource fixtures
// (protobuf text format), marshalled to FHIR JSON with fhir.Codec, are
// accepted by the inbound validation when google/fhir expects them valid
// and refused when it expects errors, except the fixtures in ptxSkips.
func TestPrototxtGoogleResources(t *testing.T) {
	dir := filepath.Join(corporaDir(t), "google-fhir-r4-validation")
	files, _ := filepath.Glob(filepath.Join(dir, "*.prototxt"))
	if len(files) == 0 {
		t.Fatal("no google/fhir prototxt fixtures")
	}
	codec := fhir.MustCodec()
	v := inboundValidator(t)
	types := ptxResourceTypes()
	seen := map[string]bool{}
	var mu sync.Mutex
	n := map[string]int{}
	var primitives []string
	t.Cleanup(func() {
		t.Logf("google/fhir resource fixtures: %d valid accepted of %d, %d invalid refused of %d (%d of them refused already by the marshaller), %d skipped; %d primitive .prototxt files not run here (their values are the .ndjson fixtures' test)",
			n["valid ok"], n["valid"], n["invalid ok"], n["invalid"], n["invalid marshal"], n["skipped"], len(primitives))
	})
	for _, f := range files {
		base := filepath.Base(f)
		if strings.HasSuffix(base, ".outcome.prototxt") {
			continue
		}
		name := strings.TrimSuffix(base, ".prototxt")
		if strings.Contains(name, ".") { // type.valid / type.invalid: primitive values
			primitives = append(primitives, base)
			continue
		}
		typ, mt := ptxResourceType(name, types)
		if mt == nil {
			t.Errorf("%s: no R4 resource type matches the file name", base)
			continue
		}
		seen[name] = true
		wantValid, source := ptxExpectation(t, dir, name)
		reason, skipped := ptxSkips[name]
		unencReason, unencodable := ptxUnencodable[name]
		if unencodable {
			skipped = true
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		if skipped {
			n["skipped"]++
		} else if wantValid {
			n["valid"]++
		} else {
			n["invalid"]++
		}
		mu.Unlock()
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			msg := mt.New().Interface()
			if err := prototext.Unmarshal(data, msg); err != nil {
				t.Fatalf("parse %s as %s: %v", base, typ, err)
			}
			if unencodable {
				if _, err := codec.Marshal(msg); err == nil {
					t.Errorf("stale ptxUnencodable entry: %s marshals now (reason was: %s)", name, unencReason)
				} else {
					t.Logf("skipped, not encodable (%s): %v", unencReason, err)
				}
				return
			}
			got, detail := ptxRun(codec, v, msg)
			agree := got == wantValid
			kind := map[bool]string{true: "valid", false: "invalid"}
			switch {
			case skipped && agree:
				t.Errorf("stale skip: %s (%s) now agrees with google/fhir (%s, from %s); remove it from ptxSkips (reason was: %s)",
					name, typ, kind[wantValid], source, reason)
			case skipped:
				t.Logf("skipped (%s): google/fhir %s, ours %s: %s", reason, kind[wantValid], kind[got], detail)
			case !agree:
				t.Errorf("%s (%s): google/fhir expects %s (from %s), ours %s: %s",
					name, typ, kind[wantValid], source, kind[got], detail)
			default:
				mu.Lock()
				n[kind[wantValid]+" ok"]++
				if strings.HasPrefix(detail, "marshal:") {
					n["invalid marshal"]++
				}
				mu.Unlock()
				t.Logf("agree (%s) %s: %s", kind[got], name, detail)
			}
		})
	}
	var stale []string
	for s := range ptxSkips {
		if !seen[s] {
			stale = append(stale, s)
		}
	}
	for s := range ptxUnencodable {
		if !seen[s] {
			stale = append(stale, s)
		}
	}
	sort.Strings(stale)
	for _, s := range stale {
		t.Errorf("ptxSkips lists %s, which is not a resource fixture", s)
	}
}

// ptxRun marshals a fixture to FHIR JSON and validates it inbound; it
// reports whether the fixture was accepted and a short description of the
// first problem. A fixture the marshaller cannot encode never reaches the
// gateway as JSON and counts as refused.
func ptxRun(codec *fhir.Codec, v interface {
	Validate([]byte) (*bcrpb.ContainedResource, error)
}, msg proto.Message) (bool, string) {
	js, err := codec.Marshal(msg)
	if err != nil {
		return false, "marshal: " + err.Error()
	}
	_, verr := v.Validate(js)
	errs := errorIssues(verr)
	if len(errs) == 0 {
		return true, string(js)
	}
	var b strings.Builder
	for i, is := range errs {
		if i == 3 {
			b.WriteString(" …")
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(is.String())
	}
	return false, b.String()
}
