package conformance_test

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kapbridge/kap"
)

const (
	inLoinc  = `"system":"http://loinc.org"`
	inUcum   = `"system":"http://unitsofmeasure.org"`
	vsCat    = `"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}]`
	subj     = `"subject":{"reference":"Patient/p1"}`
	clinical = `"http://terminology.hl7.org/CodeSystem/condition-clinical"`
	verif    = `"http://terminology.hl7.org/CodeSystem/condition-ver-status"`
	aiClin   = `"http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"`
	aiVerif  = `"http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"`
)

func obs(fields string) string {
	return `{"resourceType":"Observation","status":"final",` + vsCat + `,` + subj + `,` + fields + `}`
}

func hr(value string) string {
	return obs(`"code":{"coding":[{` + inLoinc + `,"code":"8867-4"}]},` + value)
}

// TestValidatorRules: each rule refuses the document that breaks it and
// names the rule and the path; the fixed document passes.
func TestValidatorRules(t *testing.T) {
	v := inboundValidator(t)
	cases := []struct {
		name, rule, path, bad, good string
	}{
		{"ext-1 value and nested", "ext-1", "Patient.extension[0]",
			`{"resourceType":"Patient","extension":[{"url":"http://example.org/x","valueString":"a","extension":[{"url":"y","valueString":"b"}]}]}`,
			`{"resourceType":"Patient","extension":[{"url":"http://example.org/x","extension":[{"url":"y","valueString":"b"}]}]}`},
		{"ele-1 extension without value", "ele-1", "Patient.extension[0]",
			`{"resourceType":"Patient","extension":[{"url":"http://example.org/x"}]}`,
			`{"resourceType":"Patient","extension":[{"url":"http://example.org/x","valueBoolean":true}]}`},
		{"txt-1 script in narrative", "txt-1", "Patient.text.div",
			`{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">a<script>x()</script></div>"}}`,
			`{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">a <b>b</b></div>"}}`},
		{"txt-1 event handler", "txt-1", "Patient.text.div",
			`{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p onclick=\"x()\">a</p></div>"}}`,
			`{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>a</p></div>"}}`},
		{"security html in string", "security", "Patient.name[0].text",
			`{"resourceType":"Patient","name":[{"text":"A <script>x()</script>"}]}`,
			`{"resourceType":"Patient","name":[{"text":"A < B"}]}`},
		{"per-1 start after end", "per-1", "Encounter.period",
			`{"resourceType":"Encounter","status":"finished","class":{"code":"AMB"},"period":{"start":"2024-01-02T10:00:00Z","end":"2024-01-02T09:00:00Z"}}`,
			`{"resourceType":"Encounter","status":"finished","class":{"code":"AMB"},"period":{"start":"2024-01-02T10:00:00+02:00","end":"2024-01-02T09:00:00Z"}}`},
		{"per-1 indeterminate precision", "per-1", "Encounter.period",
			`{"resourceType":"Encounter","status":"finished","class":{"code":"AMB"},"period":{"start":"2023-06-21","end":"2023-06-21T06:20:00Z"}}`,
			`{"resourceType":"Encounter","status":"finished","class":{"code":"AMB"},"period":{"start":"2023-06-20","end":"2023-06-21T06:20:00Z"}}`},
		{"obs-6 value and dataAbsentReason", "obs-6", "Observation.dataAbsentReason",
			hr(`"valueQuantity":{"value":70,` + inUcum + `,"code":"/min"},"dataAbsentReason":{"text":"x"}`),
			hr(`"dataAbsentReason":{"text":"x"}`)},
		{"obs-7 component code equals code", "obs-7", "Observation.component[0].code",
			obs(`"code":{"coding":[{` + inLoinc + `,"code":"1234-5"}]},"valueString":"x","component":[{"code":{"coding":[{` + inLoinc + `,"code":"1234-5"}]},"valueString":"y"}]`),
			obs(`"code":{"coding":[{` + inLoinc + `,"code":"1234-5"}]},"component":[{"code":{"coding":[{` + inLoinc + `,"code":"1234-5"}]},"valueString":"y"}]`)},
		{"ucum system", "ucum", "Observation.valueQuantity.system",
			hr(`"valueQuantity":{"value":70,"unit":"beats/min","system":"http://example.org/units","code":"/min"}`),
			hr(`"valueQuantity":{"value":70,"unit":"beats/min",` + inUcum + `,"code":"/min"}`)},
		{"ucum code", "ucum", "Observation.valueQuantity.code",
			hr(`"valueQuantity":{"value":70,` + inUcum + `,"code":"/s"}`),
			hr(`"valueQuantity":{"value":70,` + inUcum + `,"code":"/min"}`)},
		{"ucum bp component", "ucum", "Observation.component[1].valueQuantity.code",
			obs(`"code":{"coding":[{` + inLoinc + `,"code":"85354-9"}]},"component":[{"code":{"coding":[{` + inLoinc + `,"code":"8480-6"}]},"valueQuantity":{"value":120,` + inUcum + `,"code":"mm[Hg]"}},{"code":{"coding":[{` + inLoinc + `,"code":"8462-4"}]},"valueQuantity":{"value":80,` + inUcum + `,"code":"mmHg"}}]`),
			obs(`"code":{"coding":[{` + inLoinc + `,"code":"85354-9"}]},"component":[{"code":{"coding":[{` + inLoinc + `,"code":"8480-6"}]},"valueQuantity":{"value":120,` + inUcum + `,"code":"mm[Hg]"}},{"code":{"coding":[{` + inLoinc + `,"code":"8462-4"}]},"valueQuantity":{"value":80,` + inUcum + `,"code":"mm[Hg]"}}]`)},
		{"vs-profile magic code", "vs-profile", "Observation.code",
			`{"resourceType":"Observation","meta":{"profile":["http://hl7.org/fhir/StructureDefinition/bodytemp"]},"status":"final","code":{"coding":[{` + inLoinc + `,"code":"8331-1"}]}}`,
			`{"resourceType":"Observation","meta":{"profile":["http://hl7.org/fhir/StructureDefinition/bodytemp"]},"status":"final","code":{"coding":[{` + inLoinc + `,"code":"8310-5"}]}}`},
		{"vs-2 snomed temperature without LOINC", "vs-2", "Observation.code",
			obs(`"code":{"coding":[{"system":"http://snomed.info/sct","code":"276885007"}]}`),
			obs(`"code":{"coding":[{"system":"http://snomed.info/sct","code":"276885007"},{` + inLoinc + `,"code":"8310-5"}]}`)},
		{"con-5", "con-5", "Condition.clinicalStatus",
			`{"resourceType":"Condition","clinicalStatus":{"coding":[{"system":` + clinical + `,"code":"active"}]},"verificationStatus":{"coding":[{"system":` + verif + `,"code":"entered-in-error"}]},` + subj + `}`,
			`{"resourceType":"Condition","verificationStatus":{"coding":[{"system":` + verif + `,"code":"entered-in-error"}]},` + subj + `}`},
		{"con-4", "con-4", "Condition.clinicalStatus",
			`{"resourceType":"Condition","clinicalStatus":{"coding":[{"system":` + clinical + `,"code":"active"}]},"abatementDateTime":"2024-01-01",` + subj + `}`,
			`{"resourceType":"Condition","clinicalStatus":{"coding":[{"system":` + clinical + `,"code":"resolved"}]},"abatementDateTime":"2024-01-01",` + subj + `}`},
		{"ait-1", "ait-1", "AllergyIntolerance",
			`{"resourceType":"AllergyIntolerance","patient":{"reference":"Patient/p1"}}`,
			`{"resourceType":"AllergyIntolerance","clinicalStatus":{"coding":[{"system":` + aiClin + `,"code":"active"}]},"patient":{"reference":"Patient/p1"}}`},
		{"ait-2", "ait-2", "AllergyIntolerance.clinicalStatus",
			`{"resourceType":"AllergyIntolerance","clinicalStatus":{"coding":[{"system":` + aiClin + `,"code":"active"}]},"verificationStatus":{"coding":[{"system":` + aiVerif + `,"code":"entered-in-error"}]},"patient":{"reference":"Patient/p1"}}`,
			`{"resourceType":"AllergyIntolerance","verificationStatus":{"coding":[{"system":` + aiVerif + `,"code":"entered-in-error"}]},"patient":{"reference":"Patient/p1"}}`},
		{"dom-3 unreferenced contained", "dom-3", "MedicationRequest.contained[0]",
			`{"resourceType":"MedicationRequest","contained":[{"resourceType":"Medication","id":"m"}],"status":"active","intent":"order","medicationCodeableConcept":{"text":"x"},` + subj + `}`,
			`{"resourceType":"MedicationRequest","contained":[{"resourceType":"Medication","id":"m"}],"status":"active","intent":"order","medicationReference":{"reference":"#m"},` + subj + `}`},
		{"dom-4 contained meta.versionId", "dom-4", "MedicationRequest.contained[0].meta",
			`{"resourceType":"MedicationRequest","contained":[{"resourceType":"Medication","id":"m","meta":{"versionId":"1"}}],"status":"active","intent":"order","medicationReference":{"reference":"#m"},` + subj + `}`,
			`{"resourceType":"MedicationRequest","contained":[{"resourceType":"Medication","id":"m"}],"status":"active","intent":"order","medicationReference":{"reference":"#m"},` + subj + `}`},
		{"bdl-1 total in a transaction", "bdl-1", "Bundle.total",
			`{"resourceType":"Bundle","type":"collection","total":1}`,
			`{"resourceType":"Bundle","type":"searchset","total":1}`},
		{"bdl-3 transaction entry without request", "bdl-3", "Bundle.entry[0]",
			`{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e11","resource":{"resourceType":"Patient"}}]}`,
			`{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e11","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}]}`},
		{"bdl-7 duplicate fullUrl", "bdl-7", "Bundle.entry[1].fullUrl",
			`{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e11","resource":{"resourceType":"Patient"}},{"fullUrl":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e11","resource":{"resourceType":"Patient"}}]}`,
			`{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e11","resource":{"resourceType":"Patient"}},{"fullUrl":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e12","resource":{"resourceType":"Patient"}}]}`},
		{"unresolved urn:uuid in a transaction", "bdl-ref", "Bundle.entry[0].resource.subject.reference",
			`{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e11","resource":{"resourceType":"Condition","subject":{"reference":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e99"}},"request":{"method":"POST","url":"Condition"}},{"fullUrl":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e12","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}]}`,
			`{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e11","resource":{"resourceType":"Condition","subject":{"reference":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e12"}},"request":{"method":"POST","url":"Condition"}},{"fullUrl":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e12","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}]}`},
		{"relative fullUrl", "bdl-fullUrl", "Bundle.entry[0].fullUrl",
			`{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"Patient/1","resource":{"resourceType":"Patient","id":"1"}}]}`,
			`{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"http://example.org/fhir/Patient/1","resource":{"resourceType":"Patient","id":"1"}}]}`},
		{"RESTful fullUrl must match", "bdl-fullUrl", "Bundle.entry[0].fullUrl",
			`{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"http://example.org/fhir/Patient/2","resource":{"resourceType":"Patient","id":"1"}}]}`,
			`{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"http://example.org/fhir/Patient/1","resource":{"resourceType":"Patient","id":"1"}}]}`},
		{"bdl-11 document starts with Composition", "bdl-11", "Bundle.entry[0]",
			`{"resourceType":"Bundle","type":"document","identifier":{"system":"urn:ietf:rfc:3986","value":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e10"},"timestamp":"2024-01-01T00:00:00Z","entry":[{"fullUrl":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e11","resource":{"resourceType":"Patient"}}]}`,
			`{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:9a2f8a4e-7d2c-4d8a-9a57-0d6f3b1c2e11","resource":{"resourceType":"Patient"}}]}`},
		{"link relation twice", "bdl-link", "Bundle.link[1]",
			`{"resourceType":"Bundle","type":"searchset","link":[{"relation":"self","url":"http://a/x"},{"relation":"self","url":"http://a/y"}]}`,
			`{"resourceType":"Bundle","type":"searchset","link":[{"relation":"self","url":"http://a/x"},{"relation":"next","url":"http://a/y"}]}`},
		{"pat-1 empty contact", "pat-1", "Patient.contact[0]",
			`{"resourceType":"Patient","contact":[{"gender":"female"}]}`,
			`{"resourceType":"Patient","contact":[{"gender":"female","telecom":[{"system":"phone","value":"555"}]}]}`},
		{"obs-3 empty reference range", "obs-3", "Observation.referenceRange[0]",
			hr(`"valueQuantity":{"value":70,` + inUcum + `,"code":"/min"},"referenceRange":[{"age":{"low":{"value":1}}}]`),
			hr(`"valueQuantity":{"value":70,` + inUcum + `,"code":"/min"},"referenceRange":[{"text":"normal"}]`)},
		{"cpl-3 reference and detail", "cpl-3", "CarePlan.activity[0]",
			`{"resourceType":"CarePlan","status":"active","intent":"plan",` + subj + `,"activity":[{"reference":{"reference":"ServiceRequest/1"},"detail":{"status":"scheduled"}}]}`,
			`{"resourceType":"CarePlan","status":"active","intent":"plan",` + subj + `,"activity":[{"reference":{"reference":"ServiceRequest/1"}}]}`},
		{"qty-3 code without system", "qty-3", "MedicationStatement.dosage[0].doseAndRate[0].doseQuantity",
			`{"resourceType":"MedicationStatement","status":"active","medicationCodeableConcept":{"text":"x"},` + subj + `,"dosage":[{"doseAndRate":[{"doseQuantity":{"value":1,"code":"mg"}}]}]}`,
			`{"resourceType":"MedicationStatement","status":"active","medicationCodeableConcept":{"text":"x"},` + subj + `,"dosage":[{"doseAndRate":[{"doseQuantity":{"value":1,` + inUcum + `,"code":"mg"}}]}]}`},
		{"ppc-1 no policy", "ppc-1", "Consent",
			`{"resourceType":"Consent","status":"active","scope":{"text":"treatment"},"category":[{"text":"x"}]}`,
			`{"resourceType":"Consent","status":"active","scope":{"text":"treatment"},"category":[{"text":"x"}],"policyRule":{"text":"x"}}`},
		{"ext-def wrong context", "ext-def", "Patient.name[0].extension[0]",
			`{"resourceType":"Patient","name":[{"family":"F","extension":[{"url":"http://hl7.org/fhir/StructureDefinition/humanname-mothers-family","valueString":"M"}]}]}`,
			`{"resourceType":"Patient","name":[{"family":"F","_family":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/humanname-mothers-family","valueString":"M"}]}}]}`},
		{"ext-def wrong value type", "ext-def", "Patient.extension[0]",
			`{"resourceType":"Patient","extension":[{"url":"http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex","valueString":"F"}]}`,
			`{"resourceType":"Patient","extension":[{"url":"http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex","valueCode":"F"}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := v.Validate([]byte(tc.bad))
			found := false
			for _, is := range kap.ErrorIssues(err) {
				if is.Path == tc.path && strings.HasPrefix(is.Reason, tc.rule+":") {
					found = true
				}
			}
			if !found {
				t.Errorf("want a %s issue at %s; got %v", tc.rule, tc.path, kap.ErrorIssues(err))
			}
			if kap.ErrorCode(err) != kap.EINVALID {
				t.Errorf("want an EINVALID error, got %v", err)
			}
			if _, err := v.Validate([]byte(tc.good)); len(errorIssues(err)) > 0 {
				t.Errorf("the fixed document is refused: %v", errorIssues(err))
			}
		})
	}
}

// TestValidatorWarningOnly: a warning (con-3) alone does not refuse.
func TestValidatorWarningOnly(t *testing.T) {
	v := inboundValidator(t)
	doc := `{"resourceType":"Condition","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-category","code":"problem-list-item"}]}],` + subj + `}`
	if _, err := v.Validate([]byte(doc)); err != nil {
		t.Fatalf("a warning refused the document: %v", err)
	}
	w := v.Warnings([]byte(doc))
	if len(w) != 1 || !strings.HasPrefix(w[0].Reason, "con-3:") {
		t.Fatalf("want one con-3 warning, got %v", w)
	}
	cr, w2, err := v.ValidateWithWarnings([]byte(doc))
	if err != nil || cr == nil || len(w2) != 1 || w2[0] != w[0] {
		t.Fatalf("ValidateWithWarnings = %v, %v, %v; want the resource and the con-3 warning", cr, w2, err)
	}
}

// TestValidatorMalformed: bad input gives an error naming the problem,
// never a panic or a resource.
func TestValidatorMalformed(t *testing.T) {
	v := inboundValidator(t)
	for _, doc := range []string{``, `{`, `[]`, `{"resourceType":"Patient","id":null}`, `{"resourceType":"Nope"}`, `"x"`} {
		cr, err := v.Validate([]byte(doc))
		if err == nil {
			t.Errorf("%q accepted", doc)
		}
		if cr != nil && len(errorIssues(err)) == 0 {
			t.Errorf("%q: resource without error issues", doc)
		}
	}
}

// BenchmarkValidatorSynthea: the inbound validation of one Synthea
// transaction Bundle (codec + rules).
func BenchmarkValidatorSynthea(b *testing.B) {
	_, file, _, _ := runtime.Caller(0)
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(file), "..", "..", "shared", "corpora", "synthea-r4", "*.json"))
	if len(files) == 0 {
		b.Skip("the corpora are not at ../shared/corpora")
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		b.Fatal(err)
	}
	v := inboundValidator(b)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Validate(data); err != nil {
			b.Fatal(err)
		}
	}
}
