package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
)

func newServer(t *testing.T, store kap.Store, logs *bytes.Buffer) *httptest.Server {
	t.Helper()
	h, err := httpapi.New(httpapi.Config{
		Store: store,
		Codec: fhir.MustCodec(),
		Keys: map[string]string{
			httpapi.HashKey("key-a"): "clinic-a",
			httpapi.HashKey("key-b"): "clinic-b",
		},
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func openBolt(t *testing.T) *bolt.Store {
	s, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func do(t *testing.T, method, url, key string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("X-API-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp, buf.Bytes()
}

func TestTenantIsolation(t *testing.T) {
	var logs bytes.Buffer
	srv := newServer(t, openBolt(t), &logs)
	data, err := os.ReadFile("../../testdata/kap/10-client-c001.json")
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := do(t, "POST", srv.URL+"/kap/v1/clients", "key-a", data); resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if resp, body := do(t, "GET", srv.URL+"/kap/v1/clients/c001", "key-a", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("own tenant: status %d: %s", resp.StatusCode, body)
	}
	resp, body := do(t, "GET", srv.URL+"/kap/v1/clients/c001", "key-b", nil)
	if resp.StatusCode != http.StatusNotFound || bytes.Contains(body, []byte("Testperson")) {
		t.Fatalf("other tenant: status %d: %s", resp.StatusCode, body)
	}
	// The same record in tenant b is version 1 of b's own record, and maps
	// into b's identifier namespace.
	resp, body = do(t, "POST", srv.URL+"/kap/v1/clients", "key-b", data)
	if resp.StatusCode != http.StatusCreated || !bytes.Contains(body, []byte("/sid/clinic-b/Patient")) ||
		bytes.Contains(body, []byte("/sid/clinic-a/")) {
		t.Fatalf("tenant b: status %d: %s", resp.StatusCode, body)
	}
	if !strings.Contains(logs.String(), `"tenant":"clinic-b"`) {
		t.Fatal("the access log does not name the tenant")
	}
}

// panicStore injects a fault: every record read panics with a PHI-looking
// value.
type panicStore struct{ kap.Store }
type panicRecords struct{ kap.RecordStore }

func (p panicStore) Records() kap.RecordStore { return panicRecords{p.Store.Records()} }
func (panicRecords) Get(context.Context, string, string, string) (kap.StoredRecord, error) {
	panic("Testperson 1984-06-12")
}

func TestPanicIsA500OutcomeWithoutInternals(t *testing.T) {
	var logs bytes.Buffer
	srv := newServer(t, panicStore{openBolt(t)}, &logs)
	resp, body := do(t, "GET", srv.URL+"/kap/v1/clients/c001", "key-a", nil)
	if resp.StatusCode != http.StatusInternalServerError || resp.Header.Get("Content-Type") != "application/fhir+json" {
		t.Fatalf("status %d %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	rid := resp.Header.Get("X-Request-ID")
	var oo struct {
		Issue []struct {
			Diagnostics string `json:"diagnostics"`
		} `json:"issue"`
	}
	json.Unmarshal(body, &oo)
	if len(oo.Issue) != 1 || rid == "" || !strings.Contains(oo.Issue[0].Diagnostics, rid) {
		t.Fatalf("request id %q, outcome %s", rid, body)
	}
	for _, leak := range []string{"Testperson", "1984-06-12", "panic", "goroutine"} {
		if bytes.Contains(body, []byte(leak)) || strings.Contains(logs.String(), "Testperson") {
			t.Fatalf("%q leaked: body %s logs %s", leak, body, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "panic in handler") || !strings.Contains(logs.String(), `"status":500`) {
		t.Fatalf("logs: %s", logs.String())
	}
	// The server keeps serving.
	if resp, _ := do(t, "GET", srv.URL+"/healthz", "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz %d after a panic", resp.StatusCode)
	}
}

func TestReadyzFailsWhenTheStoreIsClosed(t *testing.T) {
	var logs bytes.Buffer
	s := openBolt(t)
	srv := newServer(t, s, &logs)
	if resp, _ := do(t, "GET", srv.URL+"/readyz", "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz %d", resp.StatusCode)
	}
	s.Close()
	if resp, body := do(t, "GET", srv.URL+"/readyz", "", nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz %d after close: %s", resp.StatusCode, body)
	}
}

func TestRequestIDIsSanitised(t *testing.T) {
	var logs bytes.Buffer
	srv := newServer(t, openBolt(t), &logs)
	req, _ := http.NewRequest("GET", srv.URL+"/healthz", nil)
	req.Header.Set("X-Request-ID", "Testperson 1984-06-12")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-ID"); got == "" || strings.Contains(got, "Testperson") {
		t.Fatalf("X-Request-ID %q", got)
	}
	if strings.Contains(logs.String(), "Testperson") {
		t.Fatalf("logs: %s", logs.String())
	}
}

// TestNoPHIInOperationalLog sends records with recognisable names, birth
// dates and identifiers through every route, success and error paths
// (401/403/404/413/415/422/429), with API keys and bearer tokens whose
// values are themselves recognisable, and checks that none of it reaches
// the operational log (which is at debug level). The audit trail is a
// separate sink and may hold record ids.
func TestNoPHIInOperationalLog(t *testing.T) {
	testKeys(t)
	j := newJWKS(t)
	j.add("rsa-1", "RS256", &rsaKey.PublicKey)
	const (
		key       = "kap_Avery_Testperson_key_0143"
		readerKey = "kap_reader_Zebulon_key"
		limitKey  = "kap_limited_Quixote_key"
	)
	logs, audit := &secBuffer{}, &secBuffer{}
	s := newSecured(t, openBolt(t), httpapi.Config{
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Audit:  audit,
		Tenants: []config.Tenant{
			{Name: "clinic-a", APIKeys: []config.APIKey{
				{Name: "writer", SHA256: httpapi.HashKey(key)},
				{Name: "reader", SHA256: httpapi.HashKey(readerKey), Scopes: []string{"system/Observation.rs"}},
			}},
			{Name: "clinic-rl", APIKeys: []config.APIKey{{Name: "limited", SHA256: httpapi.HashKey(limitKey)}},
				RateLimit: &config.RateLimit{PerSecond: 0.01, Burst: 1}},
		},
		Issuers:      []config.Issuer{{Issuer: testIssuer, JWKSURL: j.srv.URL, Audience: testAudience, Tenant: "clinic-a"}},
		MaxBodyBytes: 1 << 20,
	})

	// The records: the testdata, plus a client whose every value is unique.
	files, err := filepath.Glob("../../testdata/kap/*.json")
	if err != nil || len(files) == 0 {
		t.Fatal("no testdata")
	}
	type rec struct {
		coll, id, client string
		data             []byte
	}
	var recs []rec
	phi := []string{key, readerKey, limitKey}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r, err := kap.DecodeRecord(data)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec{httpapi.CollectionOf(r.RecordKind()), r.RecordID(), r.RecordClientID(), data})
		if len(r.RecordID()) >= 4 {
			phi = append(phi, r.RecordID())
		}
		if c, ok := r.(*kap.Client); ok {
			phi = append(phi, c.Name.Family, c.Email, c.Phone)
			phi = append(phi, c.Name.Given...)
			if b, err := json.Marshal(c.BirthDate); err == nil {
				phi = append(phi, strings.Trim(string(b), `"`))
			}
		}
	}
	zq := []byte(`{"kind":"Client","id":"client-ZQM-4471","name":{"family":"Quixote-Marchetti","given":["Zebulon"]},
		"birthDate":"1961-07-23","gender":"male","phone":"480-555-0199","email":"zebulon.qm@example.com"}`)
	recs = append(recs, rec{"clients", "client-ZQM-4471", "client-ZQM-4471", zq})
	phi = append(phi, "client-ZQM-4471", "Quixote-Marchetti", "Zebulon", "1961-07-23", "480-555-0199", "zebulon.qm@example.com")

	h := []string{"X-API-Key", key}
	tok := sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, claims("system/*.cruds",
		map[string]any{"sub": "Avery Testperson 1984-06-12", "client_id": "Avery Testperson"}))
	phi = append(phi, tok, "Avery Testperson")
	statuses := map[int]int{}
	do := func(method, path string, body []byte, hdr ...string) secReply {
		r := secCall(t, method, s.url+path, body, hdr...)
		statuses[r.status]++
		return r
	}
	var bundles [][]byte
	for _, r := range recs {
		resp := do("POST", "/kap/v1/"+r.coll, r.data, h...)
		if resp.status != 201 && resp.status != 200 {
			t.Fatalf("POST %s: %d %s", r.coll, resp.status, resp.body)
		}
		var env httpapi.Envelope
		json.Unmarshal(resp.body, &env)
		bundles = append(bundles, env.Bundle)
		do("PUT", "/kap/v1/"+r.coll+"/"+r.id, r.data, append(h, "If-Match", `W/"1"`)...)
		do("GET", "/kap/v1/"+r.coll+"/"+r.id, nil, h...)
		do("GET", "/kap/v1/"+r.coll+"/"+r.id, nil, secBearer(tok)...)
		do("GET", "/kap/v1/"+r.coll+"/"+r.id+"/deliveries", nil, h...)
		if r.client != "" {
			do("GET", "/kap/v1/"+r.coll+"?client="+r.client+"&from=1900-01-01", nil, h...)
		}
		do("POST", "/kap/v1/$map", r.data, h...)
	}
	for _, b := range bundles[:min(len(bundles), 12)] {
		do("POST", "/fhir/r4/$validate", b, h...)
		// The Bundle's resources through the facade: search by business
		// identifier, read, history, and written back.
		var bundle struct {
			Entry []struct {
				Resource json.RawMessage      `json:"resource"`
				Request  struct{ URL string } `json:"request"`
			} `json:"entry"`
		}
		json.Unmarshal(b, &bundle)
		for _, e := range bundle.Entry {
			typ, q, _ := strings.Cut(e.Request.URL, "?")
			var res struct{ ID string }
			json.Unmarshal(e.Resource, &res)
			do("GET", "/fhir/r4/"+typ+"?"+q, nil, h...)
			if res.ID != "" {
				do("GET", "/fhir/r4/"+typ+"/"+res.ID, nil, h...)
				do("GET", "/fhir/r4/"+typ+"/"+res.ID+"/_history", nil, h...)
				do("GET", "/fhir/r4/"+typ+"/"+res.ID+"/_history/1", nil, h...)
				do("PUT", "/fhir/r4/"+typ+"/"+res.ID, e.Resource, h...)
			}
			do("POST", "/fhir/r4/"+typ, e.Resource, h...)
		}
		do("POST", "/fhir/r4", b, h...)
	}

	// Error paths, each carrying PHI in the request.
	patient := `{"resourceType":"Patient","name":[{"family":"Quixote-Marchetti","given":["Zebulon"]}],"birthDate":"1961-07-23"}`
	for _, e := range []struct {
		method, path string
		body         []byte
		hdr          []string
		want         int
	}{
		{"GET", "/kap/v1/clients/client-ZQM-4471", nil, []string{"X-API-Key", "kap_Quixote-Marchetti_1961-07-23"}, 401},
		{"GET", "/kap/v1/clients/client-ZQM-4471", nil, []string{"Authorization", "Bearer Zebulon.Quixote-Marchetti.1961-07-23"}, 401},
		{"GET", "/kap/v1/clients/client-ZQM-4471", nil, secBearer(tok[:len(tok)-4] + "AAAA"), 401},
		{"GET", "/kap/v1/clients/client-ZQM-4471", nil, []string{"X-API-Key", readerKey}, 403},
		{"GET", "/fhir/r4/Patient?identifier=urn:x|client-ZQM-4471", nil, []string{"X-API-Key", readerKey}, 403},
		{"GET", "/kap/v1/clients/Quixote-Marchetti-1961-07-23", nil, h, 404},
		{"GET", "/fhir/r4/Patient/Zebulon-1961-07-23", nil, h, 404},
		{"GET", "/kap/v1/nowhere/client-ZQM-4471?name=Zebulon", nil, h, 404},
		{"POST", "/kap/v1/clients", []byte(`{"kind":"Client","id":"client-ZQM-4471","note":"Zebulon ` + strings.Repeat("Quixote-Marchetti ", 70000) + `"}`), h, 413},
		{"POST", "/kap/v1/clients", []byte(strings.Repeat(`{"Zebulon":`, 80) + `"1961-07-23"` + strings.Repeat("}", 80)), h, 413},
		{"POST", "/kap/v1/clients", []byte(`<Client name="Zebulon Quixote-Marchetti"/>`), append(h, "Content-Type", "application/xml"), 415},
		{"POST", "/kap/v1/clients", []byte(`{"kind":"Client","id":"client-ZQM-4471","name":{"family":"Quixote-Marchetti","given":["Zebulon"]},"birthDate":"1961-13-23","gender":"Zebulon"}`), h, 422},
		{"POST", "/kap/v1/clients", []byte(`{"kind":"Client","id":"client-ZQM-4471","name":"Zebulon Quixote-Marchetti 1961-07-23`), h, 400},
		{"POST", "/fhir/r4/$validate", []byte(`{"resourceType":"Patient","name":[{"family":"Quixote-Marchetti"}],"birthDate":"1961-07-32","gender":"Zebulon"}`), h, 422},
		{"POST", "/fhir/r4/Patient", []byte(patient[:40]), h, 400},
		{"GET", "/kap/v1/clients/client-ZQM-4471", nil, []string{"X-API-Key", limitKey}, 404},
		{"GET", "/kap/v1/clients/client-ZQM-4471", nil, []string{"X-API-Key", limitKey}, 429},
	} {
		if r := do(e.method, e.path, e.body, e.hdr...); r.status != e.want {
			t.Errorf("%s %s: status %d, want %d: %.300s", e.method, e.path, r.status, e.want, r.body)
		}
	}

	out := logs.String()
	if !strings.Contains(out, `"msg":"http request"`) {
		t.Fatal("no access log at all")
	}
	for _, v := range phi {
		if v != "" && strings.Contains(out, v) {
			i := strings.Index(out, v)
			t.Errorf("the operational log holds %q: …%s…", v, out[max(0, i-200):min(len(out), i+100)])
		}
	}
	for _, st := range []int{200, 201, 400, 401, 403, 404, 413, 415, 422, 429} {
		if statuses[st] == 0 {
			t.Errorf("no request answered %d (statuses %v)", st, statuses)
		}
	}
	t.Logf("%d requests, statuses %v, %d log bytes, %d audit bytes", func() int {
		n := 0
		for _, c := range statuses {
			n += c
		}
		return n
	}(), statuses, len(out), len(audit.String()))
	if !strings.Contains(audit.String(), "client-ZQM-4471") {
		t.Error("the audit trail does not name the records touched")
	}
}
