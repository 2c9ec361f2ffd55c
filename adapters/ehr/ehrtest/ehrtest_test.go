package ehrtest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
)

type answer struct {
	status int
	header http.Header
	body   map[string]any
	err    error
}

var client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func do(t *testing.T, method, u string, body any, hdr map[string]string) answer {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Accept", "application/fhir+json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{err: err}
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &a.body); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %.200s", method, u, raw)
		}
	}
	return a
}

func goldenFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "..", "testdata", "fhir", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden Bundles: %v", err)
	}
	sort.Strings(files)
	return files
}

type ident struct{ typ, system, value string }

// identifiersOf lists the business identifiers of a Bundle's entries.
func identifiersOf(t *testing.T, raw []byte) []ident {
	t.Helper()
	var b struct {
		Entry []struct {
			Resource struct {
				ResourceType string          `json:"resourceType"`
				Identifier   json.RawMessage `json:"identifier"` // a list, or one (AdverseEvent)
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	type identifier struct {
		System string `json:"system"`
		Value  string `json:"value"`
	}
	var out []ident
	for _, e := range b.Entry {
		var ids []identifier
		if len(e.Resource.Identifier) > 0 && e.Resource.Identifier[0] == '{' {
			var one identifier
			if err := json.Unmarshal(e.Resource.Identifier, &one); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, one)
		} else if len(e.Resource.Identifier) > 0 {
			if err := json.Unmarshal(e.Resource.Identifier, &ids); err != nil {
				t.Fatal(err)
			}
		}
		for _, id := range ids {
			out = append(out, ident{e.Resource.ResourceType, id.System, id.Value})
		}
	}
	return out
}

func outcomeText(a answer) string {
	js, _ := json.Marshal(a.body)
	if len(js) > 600 {
		js = append(js[:600], "..."...)
	}
	return string(js)
}

// Every golden Bundle posts as a transaction and every resource is then
// findable by its identifier, exactly once; posting all again changes
// nothing.
func TestGoldenTransactions(t *testing.T) {
	srv := ehrtest.Start(t, ehrtest.Options{})
	var all []ident
	var later [][]byte
	for _, f := range goldenFiles(t) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, identifiersOf(t, raw)...)
		a := do(t, "POST", srv.URL, raw, nil)
		switch {
		case a.err != nil:
			t.Fatalf("%s: %v", f, a.err)
		case a.status == 404:
			// A conditional reference to a record later in the folder
			// (74-assessment references the session of 75-dosing).
			later = append(later, raw)
		case a.status != 200:
			t.Fatalf("%s: HTTP %d %s", f, a.status, outcomeText(a))
		}
	}
	if len(later) > 2 {
		t.Fatalf("%d Bundles had unresolvable references", len(later))
	}
	for _, raw := range later {
		if a := do(t, "POST", srv.URL, raw, nil); a.status != 200 {
			t.Fatalf("retry: HTTP %d %s %v", a.status, outcomeText(a), a.err)
		}
	}
	st := srv.StatsWithIdentifiers()
	for _, id := range all {
		if n := st.ByIdentifier[ehrtest.IdentifierKey(id.typ, id.system, id.value)]; n != 1 {
			t.Errorf("%s %s|%s: %d resources, want 1", id.typ, id.system, id.value, n)
		}
	}
	// Spot-check the FHIR search itself for a sample.
	for i := 0; i < len(all); i += 97 {
		id := all[i]
		a := do(t, "GET", srv.URL+"/"+id.typ+"?"+url.Values{"identifier": {id.system + "|" + id.value}}.Encode(), nil, nil)
		if a.status != 200 || a.body["total"] != float64(1) {
			t.Errorf("search %s %s: HTTP %d total %v", id.typ, id.value, a.status, a.body["total"])
		}
	}
	total := st.Total
	for _, f := range goldenFiles(t) {
		raw, _ := os.ReadFile(f)
		if a := do(t, "POST", srv.URL, raw, nil); a.status != 200 {
			t.Fatalf("second post %s: HTTP %d %v", f, a.status, a.err)
		}
	}
	st = srv.Stats()
	if st.Total != total || len(st.Duplicates) != 0 {
		t.Fatalf("after posting everything twice: %d resources (was %d), duplicates %v", st.Total, total, st.Duplicates)
	}
	t.Logf("%d golden Bundles, %d resources, %d identifiers", len(goldenFiles(t)), st.Total, st.Identifiers)
}

func load(t *testing.T, name string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "fhir", name))
	if err != nil {
		t.Fatal(err)
	}
	var b map[string]any
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	return b
}

func postAll(t *testing.T, srv *ehrtest.Server, names ...string) {
	t.Helper()
	for _, n := range names {
		if a := do(t, "POST", srv.URL, load(t, n), nil); a.status != 200 {
			t.Fatalf("%s: HTTP %d %s %v", n, a.status, outcomeText(a), a.err)
		}
	}
}

var base = []string{"00-provider-prescriber.json", "01-provider-therapist.json", "02-provider-nurse.json", "10-client-c001.json", "13-plan-c001.json"}

// A transaction failing at its last entry (after ~65 writes) leaves nothing;
// an invalid resource is refused with an OperationOutcome naming the entry.
func TestFailingTransactionLeavesNothing(t *testing.T) {
	srv := ehrtest.Start(t, ehrtest.Options{})
	postAll(t, srv, base...)
	before := srv.Stats().Total
	a := do(t, "GET", srv.URL+"/Patient?identifier="+url.QueryEscape("https://fhir.kapbridge.org/sid/demo/Patient|c001"), nil, nil)
	entries := a.body["entry"].([]any)
	pid := entries[0].(map[string]any)["resource"].(map[string]any)["id"].(string)

	// Last entry: an update with a stale If-Match -> 412 after the others ran.
	b := load(t, "16-dosing-c001-1.json")
	es := b["entry"].([]any)
	es = append(es, map[string]any{
		"resource": map[string]any{"resourceType": "Patient", "id": pid, "active": true},
		"request":  map[string]any{"method": "PUT", "url": "Patient/" + pid, "ifMatch": `W/"stale"`},
	})
	b["entry"] = es
	a = do(t, "POST", srv.URL, b, nil)
	if a.status < 400 || a.body["resourceType"] != "OperationOutcome" {
		t.Fatalf("stale If-Match in a transaction: HTTP %d %s", a.status, outcomeText(a))
	}
	st := srv.Stats()
	if st.Total != before {
		t.Fatalf("failed transaction left %d resources behind", st.Total-before)
	}

	// Invalid content in entry 3 (a string where a Quantity goes; Medplum's
	// validator checks structure and cardinality, not code bindings):
	// refused before anything is written.
	b = load(t, "16-dosing-c001-1.json")
	es = b["entry"].([]any)
	es[3].(map[string]any)["resource"].(map[string]any)["valueQuantity"] = "heavy"
	a = do(t, "POST", srv.URL, b, nil)
	if a.status != 400 || !strings.Contains(outcomeText(a), "Bundle.entry[3]") {
		t.Fatalf("invalid entry: HTTP %d %s", a.status, outcomeText(a))
	}
	if st := srv.Stats(); st.Total != before {
		t.Fatalf("invalid transaction left %d resources", st.Total-before)
	}
	// And the untouched Bundle still goes through.
	postAll(t, srv, "16-dosing-c001-1.json")
	if st := srv.Stats(); st.Total <= before {
		t.Fatal("valid transaction wrote nothing")
	}
}

func patient(value string) map[string]any {
	return map[string]any{
		"resourceType": "Patient",
		"identifier":   []any{map[string]any{"system": "urn:test", "value": value}},
		"name":         []any{map[string]any{"family": "Test"}},
		"gender":       "unknown",
	}
}

func TestFaults(t *testing.T) {
	srv := ehrtest.Start(t, ehrtest.Options{})
	pt := srv.URL + "/Patient?identifier=" + url.QueryEscape("urn:test|p1")

	srv.Fail429(2, 3*time.Second)
	for i := 0; i < 2; i++ {
		a := do(t, "PUT", pt, patient("p1"), nil)
		if a.status != 429 || a.header.Get("Retry-After") != "3" {
			t.Fatalf("429 #%d: HTTP %d Retry-After %q", i, a.status, a.header.Get("Retry-After"))
		}
	}
	if a := do(t, "PUT", pt, patient("p1"), nil); a.status != 201 || a.header.Get("ETag") == "" || a.header.Get("Location") == "" {
		t.Fatalf("after the 429s: HTTP %d ETag %q Location %q", a.status, a.header.Get("ETag"), a.header.Get("Location"))
	}
	if a := do(t, "GET", srv.URL+"/metadata", nil, nil); a.status != 200 {
		t.Fatalf("metadata: %d", a.status)
	}

	srv.Fail503(0, 100, time.Second)
	if a := do(t, "GET", pt, nil, nil); a.status != 503 || a.header.Get("Retry-After") != "1" {
		t.Fatalf("503: HTTP %d", a.status)
	}
	if a := do(t, "GET", srv.URL+"/metadata", nil, nil); a.status != 200 {
		t.Fatalf("metadata is not faulted by default: %d", a.status)
	}
	srv.Fail503(0, 30, time.Second)
	n503 := 0
	for i := 0; i < 100; i++ {
		if a := do(t, "GET", pt, nil, nil); a.status == 503 {
			n503++
		}
	}
	if n503 < 10 || n503 > 55 {
		t.Fatalf("30%% 503: %d of 100", n503)
	}
	srv.ClearFaults()

	srv.Reject("reject-", 0)
	a := do(t, "PUT", srv.URL+"/Patient?identifier="+url.QueryEscape("urn:test|reject-1"), patient("reject-1"), nil)
	if a.status != 400 || !strings.Contains(outcomeText(a), "business-rule") {
		t.Fatalf("reject: HTTP %d %s", a.status, outcomeText(a))
	}
	if n := srv.Count("Patient", "urn:test", "reject-1"); n != 0 {
		t.Fatalf("rejected resource stored %d times", n)
	}
	srv.Reject("", 0)

	srv.Drop(1, 0)
	a = do(t, "PUT", srv.URL+"/Patient?identifier="+url.QueryEscape("urn:test|p2"), patient("p2"), nil)
	if a.err == nil {
		t.Fatalf("drop: got HTTP %d, want a connection error", a.status)
	}
	if n := srv.Count("Patient", "urn:test", "p2"); n != 1 {
		t.Fatalf("dropped request was not processed: %d", n)
	}

	srv.Outage(2 * time.Second)
	if a := do(t, "GET", pt, nil, nil); a.err == nil {
		t.Fatalf("outage: got HTTP %d", a.status)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		a := do(t, "GET", pt, nil, nil)
		if a.err == nil && a.status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not come back after the outage: %v", a.err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	st := srv.Stats()
	for _, k := range []string{"429", "503", "reject", "drop", "outage"} {
		if st.Faults[k] == 0 {
			t.Errorf("fault %s not counted: %v", k, st.Faults)
		}
	}
}

func TestModes(t *testing.T) {
	srv := ehrtest.Start(t, ehrtest.Options{Mode: ehrtest.ModeConditionalUpdate})
	cap := do(t, "GET", srv.URL+"/metadata", nil, nil)
	rest := cap.body["rest"].([]any)[0].(map[string]any)
	if _, ok := rest["interaction"]; ok {
		t.Fatalf("conditional-update mode declares system interactions: %v", rest["interaction"])
	}
	if a := do(t, "POST", srv.URL, load(t, "00-provider-prescriber.json"), nil); a.status != 405 {
		t.Fatalf("transaction in conditional-update mode: HTTP %d", a.status)
	}
	pt := srv.URL + "/Patient?identifier=" + url.QueryEscape("urn:test|m1")
	if a := do(t, "PUT", pt, patient("m1"), nil); a.status != 201 {
		t.Fatalf("conditional update: HTTP %d %s", a.status, outcomeText(a))
	}
	if a := do(t, "PUT", pt, patient("m1"), nil); a.status != 200 {
		t.Fatalf("conditional update again: HTTP %d", a.status)
	}

	srv.SetMode(ehrtest.ModeConditionalCreate)
	if a := do(t, "PUT", pt, patient("m1"), nil); a.status != 405 {
		t.Fatalf("conditional update in conditional-create mode: HTTP %d", a.status)
	}
	hdr := map[string]string{"If-None-Exist": "identifier=urn:test|m2"}
	if a := do(t, "POST", srv.URL+"/Patient", patient("m2"), hdr); a.status != 201 {
		t.Fatalf("conditional create: HTTP %d %s", a.status, outcomeText(a))
	}
	if a := do(t, "POST", srv.URL+"/Patient", patient("m2"), hdr); a.status != 200 {
		t.Fatalf("conditional create again: HTTP %d", a.status)
	}
	if n := srv.Count("Patient", "urn:test", "m2"); n != 1 {
		t.Fatalf("conditional create made %d", n)
	}

	srv.SetMode(ehrtest.ModePlain)
	if a := do(t, "POST", srv.URL+"/Patient", patient("m3"), map[string]string{"If-None-Exist": "identifier=urn:test|m3"}); a.status != 405 {
		t.Fatalf("conditional create in plain mode: HTTP %d", a.status)
	}
	a := do(t, "POST", srv.URL+"/Patient", patient("m3"), nil)
	if a.status != 201 {
		t.Fatalf("create: HTTP %d", a.status)
	}
	id, etag := a.body["id"].(string), a.header.Get("ETag")
	upd := patient("m3")
	upd["id"] = id
	upd["active"] = true
	if a := do(t, "PUT", srv.URL+"/Patient/"+id, upd, map[string]string{"If-Match": `W/"stale"`}); a.status != 412 {
		t.Fatalf("stale If-Match: HTTP %d", a.status)
	}
	a = do(t, "PUT", srv.URL+"/Patient/"+id, upd, map[string]string{"If-Match": etag})
	if a.status != 200 || a.header.Get("ETag") == etag || a.header.Get("ETag") == "" {
		t.Fatalf("If-Match update: HTTP %d ETag %q -> %q", a.status, etag, a.header.Get("ETag"))
	}
	// A conditional reference resolves outside a transaction too; an
	// unresolvable one is a 404.
	obs := map[string]any{
		"resourceType": "Observation", "status": "final",
		"code":    map[string]any{"text": "x"},
		"subject": map[string]any{"reference": "Patient?identifier=urn:test|m3"},
	}
	a = do(t, "POST", srv.URL+"/Observation", obs, nil)
	if a.status != 201 || a.body["subject"].(map[string]any)["reference"] != "Patient/"+id {
		t.Fatalf("conditional reference: HTTP %d %s", a.status, outcomeText(a))
	}
	obs["subject"] = map[string]any{"reference": "Patient?identifier=urn:test|nobody"}
	if a := do(t, "POST", srv.URL+"/Observation", obs, nil); a.status != 404 {
		t.Fatalf("unresolvable conditional reference: HTTP %d", a.status)
	}
	// Validation on write.
	bad := patient("m4")
	bad["birthDate"] = "yesterday"
	if a := do(t, "POST", srv.URL+"/Patient", bad, nil); a.status != 400 || a.body["resourceType"] != "OperationOutcome" {
		t.Fatalf("invalid Patient: HTTP %d", a.status)
	}

	// Paging.
	for i := 0; i < 5; i++ {
		if a := do(t, "POST", srv.URL+"/Patient", patient("page"), nil); a.status != 201 {
			t.Fatalf("create: %d", a.status)
		}
	}
	next := srv.URL + "/Patient?identifier=" + url.QueryEscape("urn:test|page") + "&_count=2"
	seen := 0
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		a := do(t, "GET", next, nil, nil)
		if a.status != 200 {
			t.Fatalf("page: HTTP %d", a.status)
		}
		if es, ok := a.body["entry"].([]any); ok {
			seen += len(es)
		}
		next = ""
		for _, l := range a.body["link"].([]any) {
			if m := l.(map[string]any); m["relation"] == "next" {
				next = m["url"].(string)
			}
		}
	}
	if seen != 5 {
		t.Fatalf("paged %d of 5", seen)
	}

	srv.SetMode(ehrtest.ModeNone)
	if a := do(t, "GET", srv.URL+"/metadata", nil, nil); a.status != 404 {
		t.Fatalf("metadata in mode none: HTTP %d", a.status)
	}
}

func TestProxy(t *testing.T) {
	srv := ehrtest.Start(t, ehrtest.Options{})
	px := ehrtest.StartProxy(t, srv.Addr)
	u := px.URL(srv)
	if a := do(t, "GET", u+"/metadata", nil, nil); a.status != 200 {
		t.Fatalf("through the proxy: %d %v", a.status, a.err)
	}

	name := px.Latency(150*time.Millisecond, 0)
	start := time.Now()
	if a := do(t, "GET", u+"/metadata", nil, nil); a.status != 200 {
		t.Fatalf("latency: %d %v", a.status, a.err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("latency toxic: answer after %v", d)
	}
	px.RemoveToxic(name)

	name = px.ResetPeer(100)
	a := do(t, "PUT", u+"/Patient?identifier="+url.QueryEscape("urn:test|r1"), patient("r1"), nil)
	if a.err == nil {
		t.Fatalf("reset_peer: HTTP %d", a.status)
	}
	if n := srv.Count("Patient", "urn:test", "r1"); n != 1 {
		t.Fatalf("request before the reset was not processed: %d", n)
	}
	px.RemoveToxic(name)

	px.Disable()
	if a := do(t, "GET", u+"/metadata", nil, nil); a.err == nil {
		t.Fatalf("disabled proxy answered %d", a.status)
	}
	px.Enable()
	if a := do(t, "GET", u+"/metadata", nil, nil); a.status != 200 {
		t.Fatalf("re-enabled proxy: %d %v", a.status, a.err)
	}

	px.Bandwidth(50)
	start = time.Now()
	if a := do(t, "GET", u+"/metadata", nil, nil); a.status != 200 {
		t.Fatalf("bandwidth: %d %v", a.status, a.err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Logf("bandwidth 50 KB/s: metadata in %v", d)
	}
}
