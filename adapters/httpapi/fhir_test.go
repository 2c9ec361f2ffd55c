package httpapi_test

// Tests of the FHIR R4 facade over real HTTP, on the bbolt store and on a
// real Redis.

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/httpapi"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
	"github.com/kapbridge/kap/fhir"
)

const fxMRN = "http://ehr.example.org/fhir/sid/mrn"

// fxServer starts the API over store with tenants clinic-a (key-a) and
// clinic-b (key-b).
func fxServer(t testing.TB, store kap.Store) *httptest.Server {
	t.Helper()
	return fxServerLog(t, store, io.Discard)
}

// fxServerLog is fxServer logging to w.
func fxServerLog(t testing.TB, store kap.Store, w io.Writer) *httptest.Server {
	t.Helper()
	h, err := httpapi.New(httpapi.Config{
		Store: store,
		Codec: fhir.MustCodec(),
		Keys: map[string]string{
			httpapi.HashKey("key-a"): "clinic-a",
			httpapi.HashKey("key-b"): "clinic-b",
		},
		Logger:               slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
		InboundPatientSystem: fxMRN,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func fxRedis(t *testing.T) kap.Store {
	if testing.Short() {
		t.Skip("needs redis-server")
	}
	srv := redistest.Start(t, redistest.Options{})
	c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { c.Close() })
	return kapredis.New(c, kapredis.Options{})
}

type fxResp struct {
	status int
	header http.Header
	body   []byte
}

func (r fxResp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("status %d, body not JSON: %v: %s", r.status, err, r.body)
	}
	return m
}

func fxDo(t testing.TB, method, u, key string, body []byte, hdr ...string) fxResp {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fxResp{resp.StatusCode, resp.Header, b}
}

// fxLoad posts the testdata records of the providers and of client c001
// to tenant clinic-a and returns the Bundles the API answered with.
func fxLoad(t testing.TB, srv *httptest.Server) []map[string]any {
	t.Helper()
	files, _ := filepath.Glob("../../testdata/kap/*.json")
	var bundles []map[string]any
	for _, f := range files {
		base := filepath.Base(f)
		if !strings.Contains(base, "provider") && !strings.Contains(base, "c001") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var head struct{ Kind kap.Kind }
		json.Unmarshal(data, &head)
		r := fxDo(t, "POST", srv.URL+"/kap/v1/"+httpapi.CollectionOf(head.Kind), "key-a", data)
		if r.status != http.StatusCreated {
			t.Fatalf("%s: status %d: %s", base, r.status, r.body)
		}
		var env struct{ Bundle map[string]any }
		json.Unmarshal(r.body, &env)
		if strings.Contains(base, "c001") {
			bundles = append(bundles, env.Bundle)
		}
	}
	if len(bundles) < 10 {
		t.Fatalf("only %d c001 records in testdata", len(bundles))
	}
	return bundles
}

// fxEntries returns the resources of type typ in the posted Bundles, with
// the id each should have on the facade (the urn:uuid of the fullUrl).
func fxEntries(bundles []map[string]any, typ string) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, b := range bundles {
		for _, e := range b["entry"].([]any) {
			em := e.(map[string]any)
			r := em["resource"].(map[string]any)
			if r["resourceType"] == typ {
				out[strings.TrimPrefix(em["fullUrl"].(string), "urn:uuid:")] = r
			}
		}
	}
	return out
}

// fxSearchAll follows next links from u and returns the match ids in order
// and the number of pages.
func fxSearchAll(t *testing.T, u, key string) ([]string, int) {
	t.Helper()
	var ids []string
	pages := 0
	for u != "" {
		pages++
		if pages > 1000 {
			t.Fatal("more than 1000 pages")
		}
		r := fxDo(t, "GET", u, key, nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: status %d: %s", u, r.status, r.body)
		}
		b := r.json(t)
		if b["type"] != "searchset" {
			t.Fatalf("type %v", b["type"])
		}
		u = ""
		for _, l := range fxList(b["link"]) {
			if l["relation"] == "next" {
				u = l["url"].(string)
			}
		}
		for _, e := range fxList(b["entry"]) {
			if e["search"].(map[string]any)["mode"] == "match" {
				ids = append(ids, e["resource"].(map[string]any)["id"].(string))
			}
		}
	}
	return ids, pages
}

func fxList(v any) []map[string]any {
	var out []map[string]any
	l, _ := v.([]any)
	for _, x := range l {
		out = append(out, x.(map[string]any))
	}
	return out
}

func fxSorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

func fxKeys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// fxCodecParses checks a response body is valid FHIR for the codec.
func fxCodecParses(t *testing.T, body []byte) {
	t.Helper()
	if _, err := fhir.MustCodec().Unmarshal(body); err != nil {
		t.Fatalf("the codec refuses the response: %v\n%s", err, body)
	}
}

func TestFHIRMetadata(t *testing.T) {
	srv := fxServer(t, openBolt(t))
	r := fxDo(t, "GET", srv.URL+"/fhir/r4/metadata", "", nil) // no credentials needed
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "application/fhir+json") {
		t.Fatalf("status %d, content type %q: %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	fxCodecParses(t, r.body)
	cs := r.json(t)
	var server map[string]any
	for _, rest := range fxList(cs["rest"]) {
		if rest["mode"] == "server" {
			server = rest
		}
	}
	if server == nil {
		t.Fatal("no server rest")
	}
	var sys []string
	for _, i := range fxList(server["interaction"]) {
		sys = append(sys, i["code"].(string))
	}
	if !slices.Contains(sys, "transaction") || !slices.Contains(sys, "batch") {
		t.Errorf("system interactions %v", sys)
	}
	found := map[string][]string{}
	params := map[string][]string{}
	for _, res := range fxList(server["resource"]) {
		typ := res["type"].(string)
		for _, i := range fxList(res["interaction"]) {
			found[typ] = append(found[typ], i["code"].(string))
		}
		for _, p := range fxList(res["searchParam"]) {
			params[typ] = append(params[typ], p["name"].(string))
		}
	}
	for _, want := range []string{"read", "vread", "search-type", "create", "update"} {
		if !slices.Contains(found["Observation"], want) {
			t.Errorf("Observation lacks %s: %v", want, found["Observation"])
		}
	}
	if slices.Contains(found["Encounter"], "create") {
		t.Errorf("Encounter declares create, which the facade refuses")
	}
	for _, want := range []string{"patient", "identifier", "date", "code", "category", "_id"} {
		if !slices.Contains(params["Observation"], want) {
			t.Errorf("Observation lacks search parameter %s: %v", want, params["Observation"])
		}
	}
	// Cached: the second answer is the same document.
	if r2 := fxDo(t, "GET", srv.URL+"/fhir/r4/metadata", "", nil); !bytes.Equal(r2.body, r.body) {
		t.Error("the CapabilityStatement changed between two requests")
	}
	// Formats.
	if r := fxDo(t, "GET", srv.URL+"/fhir/r4/metadata?_format=json", "", nil); r.status != http.StatusOK {
		t.Errorf("_format=json: %d", r.status)
	}
	if r := fxDo(t, "GET", srv.URL+"/fhir/r4/metadata?_format=xml", "", nil); r.status != http.StatusUnsupportedMediaType {
		t.Errorf("_format=xml: %d", r.status)
	} else {
		fxOutcome(t, r, "_format")
	}
	if r := fxDo(t, "GET", srv.URL+"/fhir/r4/metadata", "", nil, "Accept", "application/fhir+xml"); r.status != http.StatusNotAcceptable {
		t.Errorf("Accept xml: %d", r.status)
	}
	if r := fxDo(t, "GET", srv.URL+"/fhir/r4/metadata", "", nil, "Accept", "application/fhir+xml;q=0.9, application/fhir+json"); r.status != http.StatusOK {
		t.Errorf("Accept xml, json: %d", r.status)
	}
	// Everything else needs credentials.
	if r := fxDo(t, "GET", srv.URL+"/fhir/r4/Observation?patient=x", "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("search without a key: %d", r.status)
	}
}

// fxOutcome checks r is an OperationOutcome with an error issue whose
// expression is want ("" for any) and returns its diagnostics.
func fxOutcome(t *testing.T, r fxResp, want string) string {
	t.Helper()
	oo := r.json(t)
	if oo["resourceType"] != "OperationOutcome" {
		t.Fatalf("not an OperationOutcome: %s", r.body)
	}
	fxCodecParses(t, r.body)
	var diags []string
	for _, is := range fxList(oo["issue"]) {
		if is["severity"] != "error" || is["code"] == nil || is["diagnostics"] == nil {
			continue
		}
		diags = append(diags, is["diagnostics"].(string))
		if want == "" {
			return is["diagnostics"].(string)
		}
		ex, _ := is["expression"].([]any)
		for _, e := range ex {
			if e == want {
				return is["diagnostics"].(string)
			}
		}
	}
	t.Fatalf("no error issue with expression %q: %s", want, r.body)
	return strings.Join(diags, "; ")
}

func TestFHIRReadAndSearchBolt(t *testing.T)  { testFHIRReadAndSearch(t, openBolt(t)) }
func TestFHIRReadAndSearchRedis(t *testing.T) { testFHIRReadAndSearch(t, fxRedis(t)) }

func testFHIRReadAndSearch(t *testing.T, store kap.Store) {
	srv := fxServer(t, store)
	bundles := fxLoad(t, srv)
	base := srv.URL + "/fhir/r4"
	obs := fxEntries(bundles, "Observation")
	patients := fxEntries(bundles, "Patient")
	if len(patients) != 1 || len(obs) < 20 {
		t.Fatalf("%d patients, %d observations", len(patients), len(obs))
	}
	pid := fxKeys(patients)[0]

	t.Run("read", func(t *testing.T) {
		for _, id := range fxKeys(obs)[:5] {
			r := fxDo(t, "GET", base+"/Observation/"+id, "key-a", nil)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			fxCodecParses(t, r.body)
			o := r.json(t)
			if o["id"] != id || o["meta"].(map[string]any)["versionId"] != "1" || r.header.Get("ETag") != `W/"1"` {
				t.Errorf("id %v meta %v etag %q", o["id"], o["meta"], r.header.Get("ETag"))
			}
			if _, err := time.Parse(time.RFC3339Nano, o["meta"].(map[string]any)["lastUpdated"].(string)); err != nil {
				t.Errorf("lastUpdated: %v", err)
			}
			if got := o["subject"].(map[string]any)["reference"]; got != "Patient/"+pid {
				t.Errorf("subject %v, want Patient/%s", got, pid)
			}
			if fxList(o["identifier"])[0]["value"] != obs[id]["identifier"].([]any)[0].(map[string]any)["value"] {
				t.Errorf("identifier differs from the mapped one")
			}
		}
		// References resolve on the facade.
		if r := fxDo(t, "GET", base+"/Patient/"+pid, "key-a", nil); r.status != http.StatusOK {
			t.Fatalf("patient: %d %s", r.status, r.body)
		}
		// Unknown ids, malformed ids, ids of another type, other tenants: 404.
		id := fxKeys(obs)[0]
		for _, u := range []string{base + "/Observation/00000000-0000-0000-0000-000000000000", base + "/Observation/no_such!id",
			base + "/Encounter/" + id} {
			r := fxDo(t, "GET", u, "key-a", nil)
			if r.status != http.StatusNotFound {
				t.Errorf("%s: %d", u, r.status)
			}
			fxOutcome(t, r, "")
		}
		r := fxDo(t, "GET", base+"/Observation/"+id, "key-b", nil)
		if r.status != http.StatusNotFound || bytes.Contains(r.body, []byte("c001")) {
			t.Errorf("other tenant: %d %s", r.status, r.body)
		}
		if r := fxDo(t, "GET", base+"/NoSuchType/"+id, "key-a", nil); r.status != http.StatusNotFound {
			t.Errorf("unknown type: %d", r.status)
		}
	})

	t.Run("vread", func(t *testing.T) {
		// A second version of the first dosing session: new notes.
		data, err := os.ReadFile("../../testdata/kap/16-dosing-c001-1.json")
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		json.Unmarshal(data, &doc)
		doc["intention"] = "A second version of the intention"
		data, _ = json.Marshal(doc)
		r := fxDo(t, "POST", srv.URL+"/kap/v1/dosing-sessions", "key-a", data)
		if r.status != http.StatusCreated && r.status != http.StatusOK {
			t.Fatalf("second version: %d %s", r.status, r.body)
		}
		var env struct {
			Version int
			Bundle  map[string]any
		}
		json.Unmarshal(r.body, &env)
		if env.Version != 2 {
			t.Fatalf("version %d", env.Version)
		}
		var encID string
		for id := range fxEntries([]map[string]any{env.Bundle}, "Encounter") {
			encID = id
		}
		cur := fxDo(t, "GET", base+"/Encounter/"+encID, "key-a", nil).json(t)
		if v := cur["meta"].(map[string]any)["versionId"]; v != "2" {
			t.Errorf("read after the new version: versionId %v", v)
		}
		for _, v := range []string{"1", "2"} {
			r := fxDo(t, "GET", base+"/Encounter/"+encID+"/_history/"+v, "key-a", nil)
			if r.status != http.StatusOK {
				t.Fatalf("vread %s: %d %s", v, r.status, r.body)
			}
			fxCodecParses(t, r.body)
			if got := r.json(t)["meta"].(map[string]any)["versionId"]; got != v {
				t.Errorf("vread %s: versionId %v", v, got)
			}
		}
		for _, v := range []string{"3", "0", "x"} {
			if r := fxDo(t, "GET", base+"/Encounter/"+encID+"/_history/"+v, "key-a", nil); r.status != http.StatusNotFound {
				t.Errorf("vread %s: %d", v, r.status)
			}
		}
		h := fxDo(t, "GET", base+"/Encounter/"+encID+"/_history", "key-a", nil)
		fxCodecParses(t, h.body)
		if n := len(fxList(h.json(t)["entry"])); n != 2 {
			t.Errorf("history has %d entries", n)
		}
		if r := fxDo(t, "GET", base+"/Encounter/"+encID+"/_history/1", "key-b", nil); r.status != http.StatusNotFound {
			t.Errorf("vread from another tenant: %d", r.status)
		}
		// Version 3 drops the last vital-signs time point: its Observations
		// are gone (410) from the latest version but still in version 2.
		vitals := doc["vitals"].([]any)
		doc["vitals"] = vitals[:len(vitals)-1]
		data, _ = json.Marshal(doc)
		r = fxDo(t, "POST", srv.URL+"/kap/v1/dosing-sessions", "key-a", data)
		var env3 struct {
			Version int
			Bundle  map[string]any
		}
		json.Unmarshal(r.body, &env3)
		if env3.Version != 3 {
			t.Fatalf("third version: %d %s", r.status, r.body)
		}
		now := fxEntries([]map[string]any{env3.Bundle}, "Observation")
		var gone []string
		for id := range fxEntries([]map[string]any{env.Bundle}, "Observation") {
			if now[id] == nil {
				gone = append(gone, id)
			}
		}
		if len(gone) == 0 {
			t.Fatal("dropping a time point removed no Observation")
		}
		for _, id := range gone {
			if r := fxDo(t, "GET", base+"/Observation/"+id, "key-a", nil); r.status != http.StatusGone {
				t.Errorf("dropped Observation: %d", r.status)
			}
			if r := fxDo(t, "GET", base+"/Observation/"+id+"/_history/2", "key-a", nil); r.status != http.StatusOK {
				t.Errorf("dropped Observation, vread 2: %d", r.status)
			}
		}
		// Version 4 puts the time point back (the searches below expect
		// the full course).
		doc["vitals"] = vitals
		data, _ = json.Marshal(doc)
		if r := fxDo(t, "POST", srv.URL+"/kap/v1/dosing-sessions", "key-a", data); r.status != http.StatusCreated {
			t.Fatalf("fourth version: %d %s", r.status, r.body)
		}
		if r := fxDo(t, "GET", base+"/Observation/"+gone[0], "key-a", nil); r.status != http.StatusOK {
			t.Errorf("restored Observation: %d", r.status)
		}
	})

	t.Run("search by patient with paging", func(t *testing.T) {
		all, pages := fxSearchAll(t, base+"/Observation?patient=Patient/"+pid+"&_count=7", "key-a")
		if !slices.Equal(fxSorted(all), fxKeys(obs)) {
			t.Fatalf("paged search: %d ids, want %d", len(all), len(obs))
		}
		if want := (len(obs) + 6) / 7; pages != want {
			t.Errorf("%d pages, want %d", pages, want)
		}
		one, _ := fxSearchAll(t, base+"/Observation?patient="+pid+"&_count=500", "key-a")
		if !slices.Equal(one, all) {
			t.Error("one page and many pages differ in order or content")
		}
		sub, _ := fxSearchAll(t, base+"/Observation?subject=Patient/"+pid+"&_count=500", "key-a")
		if !slices.Equal(sub, all) {
			t.Error("subject= and patient= differ")
		}
		full, _ := fxSearchAll(t, base+"/Observation?patient="+url.QueryEscape(base+"/Patient/"+pid)+"&_count=500", "key-a")
		if !slices.Equal(full, all) {
			t.Error("patient=<full URL> and patient=<id> differ")
		}
		r := fxDo(t, "GET", base+"/Observation?patient="+pid+"&_count=7", "key-a", nil)
		fxCodecParses(t, r.body)
		b := r.json(t)
		if int(b["total"].(float64)) != len(obs) {
			t.Errorf("total %v, want %d", b["total"], len(obs))
		}
		for _, l := range fxList(b["link"]) {
			if l["relation"] == "next" {
				nu, _ := url.Parse(l["url"].(string))
				if cur := nu.Query().Get("_page"); strings.Contains(cur, "c001") || strings.Contains(cur, pid) {
					t.Errorf("cursor holds the patient: %s", cur)
				}
				// A cursor is tied to its query.
				q := nu.Query()
				q.Set("code", "8867-4")
				nu.RawQuery = q.Encode()
				if r := fxDo(t, "GET", nu.String(), "key-a", nil); r.status != http.StatusBadRequest {
					t.Errorf("cursor with another query: %d", r.status)
				}
			}
		}
		// _summary=count
		r = fxDo(t, "GET", base+"/Observation?patient="+pid+"&_summary=count", "key-a", nil)
		b = r.json(t)
		if int(b["total"].(float64)) != len(obs) || b["entry"] != nil {
			t.Errorf("_summary=count: total %v, entries %v", b["total"], b["entry"] != nil)
		}
		// Other tenant: nothing.
		r = fxDo(t, "GET", base+"/Observation?patient="+pid, "key-b", nil)
		if b := r.json(t); r.status != http.StatusOK || b["total"].(float64) != 0 {
			t.Errorf("other tenant search: %d %s", r.status, r.body)
		}
	})

	t.Run("search parameters", func(t *testing.T) {
		want := func(pred func(r map[string]any) bool) []string {
			var out []string
			for id, r := range obs {
				if pred(r) {
					out = append(out, id)
				}
			}
			sort.Strings(out)
			return out
		}
		hasCode := func(r map[string]any, field, sys, code string) bool {
			var ccs []any
			switch v := r[field].(type) {
			case []any:
				ccs = v
			case map[string]any:
				ccs = []any{v}
			}
			for _, cc := range ccs {
				for _, c := range fxList(cc.(map[string]any)["coding"]) {
					if (sys == "" || c["system"] == sys) && c["code"] == code {
						return true
					}
				}
			}
			return false
		}
		eff := func(r map[string]any) time.Time {
			s, _ := r["effectiveDateTime"].(string)
			t, _ := time.Parse(time.RFC3339, s)
			return t
		}
		cases := []struct {
			query string
			want  []string
		}{
			{"code=http://loinc.org|8867-4", want(func(r map[string]any) bool { return hasCode(r, "code", "http://loinc.org", "8867-4") })},
			{"code=8867-4,9279-1", want(func(r map[string]any) bool {
				return hasCode(r, "code", "", "8867-4") || hasCode(r, "code", "", "9279-1")
			})},
			{"category=http://terminology.hl7.org/CodeSystem/observation-category|survey", want(func(r map[string]any) bool {
				return hasCode(r, "category", "http://terminology.hl7.org/CodeSystem/observation-category", "survey")
			})},
			{"category=vital-signs&code=http://loinc.org|85354-9", want(func(r map[string]any) bool {
				return hasCode(r, "category", "", "vital-signs") && hasCode(r, "code", "http://loinc.org", "85354-9")
			})},
			{"date=ge2026-03-01", want(func(r map[string]any) bool {
				return !eff(r).IsZero() && !eff(r).Before(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
			})},
			{"date=lt2026-03-01", want(func(r map[string]any) bool {
				return !eff(r).IsZero() && eff(r).Before(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
			})},
			{"date=2026-02-23", want(func(r map[string]any) bool { return eff(r).Format("2006-01-02") == "2026-02-23" })},
			{"date=ge2026-02-23T16:10:00Z&date=le2026-02-23T16:40:00Z", want(func(r map[string]any) bool {
				e := eff(r)
				return !e.Before(time.Date(2026, 2, 23, 16, 10, 0, 0, time.UTC)) && !e.After(time.Date(2026, 2, 23, 16, 40, 0, 0, time.UTC))
			})},
		}
		for _, tc := range cases {
			if len(tc.want) == 0 || len(tc.want) == len(obs) {
				t.Errorf("%s: the expectation selects %d of %d: not a useful case", tc.query, len(tc.want), len(obs))
			}
			got, _ := fxSearchAll(t, base+"/Observation?patient="+pid+"&"+tc.query, "key-a")
			if !slices.Equal(fxSorted(got), tc.want) {
				t.Errorf("%s: got %d ids, want %d", tc.query, len(got), len(tc.want))
			}
		}
		// identifier and _id, without patient.
		id := fxKeys(obs)[3]
		ident := obs[id]["identifier"].([]any)[0].(map[string]any)
		got, _ := fxSearchAll(t, base+"/Observation?identifier="+url.QueryEscape(ident["system"].(string)+"|"+ident["value"].(string)), "key-a")
		if !slices.Equal(got, []string{id}) {
			t.Errorf("identifier: %v, want [%s]", got, id)
		}
		got, _ = fxSearchAll(t, base+"/Observation?_id="+id, "key-a")
		if !slices.Equal(got, []string{id}) {
			t.Errorf("_id: %v", got)
		}
		got, _ = fxSearchAll(t, base+"/Observation?identifier="+url.QueryEscape(ident["system"].(string)+"|"+ident["value"].(string)), "key-b")
		if len(got) != 0 {
			t.Errorf("identifier from another tenant: %v", got)
		}
	})

	t.Run("include", func(t *testing.T) {
		r := fxDo(t, "GET", base+"/Observation?patient="+pid+"&_count=5&_include=Observation:patient", "key-a", nil)
		fxCodecParses(t, r.body)
		var matches, incs int
		for _, e := range fxList(r.json(t)["entry"]) {
			switch e["search"].(map[string]any)["mode"] {
			case "match":
				matches++
			case "include":
				incs++
				if res := e["resource"].(map[string]any); res["resourceType"] != "Patient" || res["id"] != pid {
					t.Errorf("included %v/%v", res["resourceType"], res["id"])
				}
			}
		}
		if matches != 5 || incs != 1 {
			t.Errorf("%d matches, %d includes", matches, incs)
		}
	})

	t.Run("errors", func(t *testing.T) {
		r := fxDo(t, "GET", base+"/Observation?code=8867-4", "key-a", nil)
		if r.status != http.StatusBadRequest {
			t.Fatalf("search without patient: %d", r.status)
		}
		if oo := r.json(t); fxList(oo["issue"])[0]["code"] != "too-costly" {
			t.Errorf("issue code: %s", r.body)
		}
		for q, expr := range map[string]string{
			"patient=" + pid + "&name=x":                         "name",
			"patient=" + pid + "&date=2026-13-01":                "date",
			"patient=" + pid + "&date=ap2026":                    "date",
			"patient=" + pid + "&_count=-1":                      "_count",
			"patient=" + pid + "&_include=Observation:performer": "_include",
			"identifier=novalue":                                 "identifier",
			"patient=" + pid + "&_page=bm90IGEgY3Vyc29y":         "_page",
		} {
			r := fxDo(t, "GET", base+"/Observation?"+q, "key-a", nil)
			if r.status != http.StatusBadRequest {
				t.Errorf("%s: %d %s", q, r.status, r.body)
				continue
			}
			fxOutcome(t, r, expr)
		}
		if r := fxDo(t, "DELETE", base+"/Observation/x", "key-a", nil); r.status != http.StatusMethodNotAllowed {
			t.Errorf("DELETE: %d", r.status)
		}
	})
}
