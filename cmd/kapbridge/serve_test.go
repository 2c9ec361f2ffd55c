package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/httpapi"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer runs the real gateway on 127.0.0.1:0 over dir.
func startServer(t *testing.T, dir string, logs io.Writer) *serveMain {
	t.Helper()
	m := &serveMain{cfg: serveConfig{Addr: "127.0.0.1:0", DataDir: dir,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}}
	if err := m.Open(); err != nil {
		t.Fatal(err)
	}
	return m
}

type httpClient struct {
	t    *testing.T
	base string
	key  string
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (c *httpClient) do(method, path, key string, body []byte) response {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, data}
}

func (c *httpClient) post(path string, body []byte) response { return c.do("POST", path, c.key, body) }
func (c *httpClient) get(path string) response               { return c.do("GET", path, c.key, nil) }

// outcomeIssues decodes an OperationOutcome and checks its content type.
func outcomeIssues(t *testing.T, r response) []struct {
	Severity    string   `json:"severity"`
	Code        string   `json:"code"`
	Diagnostics string   `json:"diagnostics"`
	Expression  []string `json:"expression"`
} {
	t.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
		t.Fatalf("status %d: content type %q, body %s", r.status, ct, r.body)
	}
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Severity    string   `json:"severity"`
			Code        string   `json:"code"`
			Diagnostics string   `json:"diagnostics"`
			Expression  []string `json:"expression"`
		} `json:"issue"`
	}
	if err := json.Unmarshal(r.body, &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
		t.Fatalf("status %d: not an OperationOutcome (%v): %s", r.status, err, r.body)
	}
	return oo.Issue
}

func expectOutcome(t *testing.T, r response, status int, expression string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	issues := outcomeIssues(t, r)
	if expression == "" {
		return
	}
	for _, is := range issues {
		for _, e := range is.Expression {
			if e == expression {
				return
			}
		}
	}
	t.Fatalf("no issue names %q: %s", expression, r.body)
}

type testRecord struct {
	file string
	data []byte
	kind kap.Kind
	id   string
}

func loadRecords(t *testing.T) []testRecord {
	t.Helper()
	files, err := filepath.Glob("../../testdata/kap/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	var recs []testRecord
	for _, f := range files { // Glob sorts: file order
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := kap.DecodeRecord(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		recs = append(recs, testRecord{filepath.Base(f), data, rec.RecordKind(), rec.RecordID()})
	}
	return recs
}

// phiStrings returns the client names, birth dates and ids of the testdata.
func phiStrings(t *testing.T, recs []testRecord) []string {
	var out []string
	for _, r := range recs {
		if r.kind != kap.KindClient {
			continue
		}
		var c kap.Client
		if err := json.Unmarshal(r.data, &c); err != nil {
			t.Fatal(err)
		}
		out = append(out, c.ID, c.Name.Family)
		out = append(out, c.Name.Given...)
		if b, err := json.Marshal(c.BirthDate); err == nil {
			out = append(out, strings.Trim(string(b), `"`))
		}
	}
	return out
}

type envelope struct {
	Kind     string          `json:"kind"`
	ID       string          `json:"id"`
	Version  int             `json:"version"`
	Record   json.RawMessage `json:"record"`
	Bundle   json.RawMessage `json:"bundle"`
	Warnings []kap.Issue     `json:"warnings"`
}

func decodeEnvelope(t *testing.T, r response) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("status %d: %v: %s", r.status, err, r.body)
	}
	return e
}

func TestServeEndToEnd(t *testing.T) {
	dir := t.TempDir()
	logs := &syncBuffer{}
	m := startServer(t, dir, logs)
	closed := false
	defer func() {
		if !closed {
			m.Close()
		}
	}()

	keyPath := filepath.Join(dir, bootstrapKeyFile)
	st, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	keyData, _ := os.ReadFile(keyPath)
	key := strings.TrimSpace(string(keyData))
	if len(key) < 32 {
		t.Fatalf("key too short: %d characters", len(key))
	}
	if !strings.Contains(logs.String(), keyPath) {
		t.Fatalf("the start-up log does not name the key file: %s", logs.String())
	}
	c := &httpClient{t: t, base: "http://" + m.Addr(), key: key}

	recs := loadRecords(t)
	var warned int
	for _, r := range recs {
		coll := httpapi.CollectionOf(r.kind)
		resp := c.post("/kap/v1/"+coll, r.data)
		if resp.status != http.StatusCreated {
			t.Fatalf("%s: status %d: %s", r.file, resp.status, resp.body)
		}
		if loc := resp.header.Get("Location"); loc != "/kap/v1/"+coll+"/"+r.id {
			t.Fatalf("%s: Location %q", r.file, loc)
		}
		if et := resp.header.Get("ETag"); et != `W/"1"` {
			t.Fatalf("%s: ETag %q", r.file, et)
		}
		e := decodeEnvelope(t, resp)
		if e.Kind != string(r.kind) || e.ID != r.id || e.Version != 1 || e.Warnings == nil {
			t.Fatalf("%s: envelope %+v", r.file, e)
		}
		var b struct {
			ResourceType string            `json:"resourceType"`
			Type         string            `json:"type"`
			Entry        []json.RawMessage `json:"entry"`
		}
		if err := json.Unmarshal(e.Bundle, &b); err != nil || b.ResourceType != "Bundle" || b.Type != "transaction" || len(b.Entry) < 2 {
			t.Fatalf("%s: bundle %v %s", r.file, err, e.Bundle)
		}
		if r.kind == kap.KindDosingSession {
			rec, _ := kap.DecodeRecord(r.data)
			// The safety warnings, then the Spravato REMS gaps of an
			// esketamine session.
			want := len(rec.(*kap.DosingSession).SafetyWarnings())
			if len(e.Warnings) < want {
				t.Fatalf("%s: %d warnings, want at least %d", r.file, len(e.Warnings), want)
			}
			for _, w := range e.Warnings[want:] {
				if !strings.HasPrefix(w.Path, "rems.") || !rec.(*kap.DosingSession).IsEsketamine() {
					t.Fatalf("%s: unexpected warning %+v", r.file, w)
				}
			}
			warned += len(e.Warnings)
		} else if len(e.Warnings) != 0 {
			t.Fatalf("%s: warnings on a %s", r.file, r.kind)
		}
	}
	if warned == 0 {
		t.Fatal("no dosing session of the testdata gave a safety warning; the warnings path is untested")
	}
	t.Logf("posted %d records (%d safety warnings)", len(recs), warned)

	first := recs[0]
	var clientRec testRecord
	for _, r := range recs {
		if r.kind == kap.KindClient {
			clientRec = r
			break
		}
	}

	t.Run("resubmit same content", func(t *testing.T) {
		resp := c.post("/kap/v1/clients", clientRec.data)
		if resp.status != http.StatusOK || resp.header.Get("ETag") != `W/"1"` {
			t.Fatalf("status %d ETag %q: %s", resp.status, resp.header.Get("ETag"), resp.body)
		}
		if e := decodeEnvelope(t, resp); e.Version != 1 {
			t.Fatalf("version %d", e.Version)
		}
	})
	t.Run("changed content is a new version", func(t *testing.T) {
		changed := bytes.Replace(first.data, []byte(`"credentials": "MD"`), []byte(`"credentials": "MD, PhD"`), 1)
		if bytes.Equal(changed, first.data) {
			t.Fatal("the provider testdata changed shape")
		}
		resp := c.post("/kap/v1/providers", changed)
		if resp.status != http.StatusCreated || resp.header.Get("ETag") != `W/"2"` {
			t.Fatalf("status %d ETag %q: %s", resp.status, resp.header.Get("ETag"), resp.body)
		}
	})
	t.Run("get", func(t *testing.T) {
		resp := c.get("/kap/v1/clients/" + clientRec.id)
		if resp.status != http.StatusOK {
			t.Fatalf("status %d: %s", resp.status, resp.body)
		}
		e := decodeEnvelope(t, resp)
		var got, want any
		json.Unmarshal(e.Record, &got)
		rec, _ := kap.DecodeRecord(clientRec.data)
		enc, _ := kap.EncodeRecord(rec)
		json.Unmarshal(enc, &want)
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(want)
		if e.Version != 1 || !bytes.Equal(gb, wb) {
			t.Fatalf("version %d record %s, want %s", e.Version, gb, wb)
		}
	})
	t.Run("auth", func(t *testing.T) {
		expectOutcome(t, c.do("GET", "/kap/v1/clients/"+clientRec.id, "", nil), http.StatusUnauthorized, "")
		expectOutcome(t, c.do("GET", "/kap/v1/clients/"+clientRec.id, "kap_wrong", nil), http.StatusUnauthorized, "")
		expectOutcome(t, c.do("POST", "/kap/v1/clients", "", clientRec.data), http.StatusUnauthorized, "")
		expectOutcome(t, c.do("POST", "/fhir/r4/$validate", "", []byte(`{}`)), http.StatusUnauthorized, "")
	})
	t.Run("not found", func(t *testing.T) {
		expectOutcome(t, c.get("/kap/v1/clients/no-such-client"), http.StatusNotFound, "")
		expectOutcome(t, c.get("/kap/v1/providers/"+clientRec.id), http.StatusNotFound, "") // wrong collection
		expectOutcome(t, c.get("/kap/v1/widgets/x"), http.StatusNotFound, "")
		expectOutcome(t, c.get("/nowhere"), http.StatusNotFound, "")
		expectOutcome(t, c.do("DELETE", "/kap/v1/clients/"+clientRec.id, c.key, nil), http.StatusMethodNotAllowed, "")
	})
	t.Run("invalid record names the field", func(t *testing.T) {
		bad := bytes.Replace(clientRec.data, []byte(`"gender": "female"`), []byte(`"gender": "f"`), 1)
		if bytes.Equal(bad, clientRec.data) {
			t.Fatal("the client testdata changed shape")
		}
		expectOutcome(t, c.post("/kap/v1/clients", bad), http.StatusUnprocessableEntity, "gender")
		expectOutcome(t, c.post("/kap/v1/clients", first.data), http.StatusUnprocessableEntity, "kind")
		expectOutcome(t, c.post("/kap/v1/clients", []byte(`{"kind":"Client",`)), http.StatusBadRequest, "")
		// Nothing of the refused records was stored.
		if e := decodeEnvelope(t, c.get("/kap/v1/clients/"+clientRec.id)); e.Version != 1 {
			t.Fatalf("version %d after refused writes", e.Version)
		}
	})
	t.Run("media type", func(t *testing.T) {
		req, _ := http.NewRequest("POST", c.base+"/kap/v1/clients", bytes.NewReader(clientRec.data))
		req.Header.Set("X-API-Key", key)
		req.Header.Set("Content-Type", "text/plain")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("too large", func(t *testing.T) {
		big := append([]byte(`{"kind":"Client","id":"x","note":"`), bytes.Repeat([]byte("a"), kap.MaxRecordBytes+1)...)
		big = append(big, `"}`...)
		expectOutcome(t, c.post("/kap/v1/clients", big), http.StatusRequestEntityTooLarge, "")
	})
	t.Run("$map", func(t *testing.T) {
		resp := c.post("/kap/v1/$map", clientRec.data)
		if resp.status != http.StatusOK || !strings.HasPrefix(resp.header.Get("Content-Type"), "application/fhir+json") {
			t.Fatalf("status %d: %s", resp.status, resp.body)
		}
		var b struct {
			ResourceType string `json:"resourceType"`
			Entry        []struct {
				Resource struct {
					ResourceType string `json:"resourceType"`
				} `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(resp.body, &b); err != nil || b.ResourceType != "Bundle" || b.Entry[0].Resource.ResourceType != "Patient" {
			t.Fatalf("%v: %s", err, resp.body)
		}
		bad := bytes.Replace(clientRec.data, []byte(`"gender": "female"`), []byte(`"gender": "f"`), 1)
		expectOutcome(t, c.post("/kap/v1/$map", bad), http.StatusUnprocessableEntity, "gender")
	})
	t.Run("$validate", func(t *testing.T) {
		data, err := os.ReadFile("../../testdata/fhir/10-client-c001.json")
		if err != nil {
			t.Fatal(err)
		}
		resp := c.post("/fhir/r4/$validate", data)
		if resp.status != http.StatusOK {
			t.Fatalf("status %d: %s", resp.status, resp.body)
		}
		for _, is := range outcomeIssues(t, resp) {
			if is.Severity == "error" || is.Severity == "fatal" {
				t.Fatalf("error issue on a valid Bundle: %s", resp.body)
			}
		}
		expectOutcome(t, c.post("/fhir/r4/$validate", []byte(`{"resourceType":"Patient","gender":"f"}`)),
			http.StatusUnprocessableEntity, "")
	})
	t.Run("health", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/readyz"} {
			if r := c.do("GET", p, "", nil); r.status != http.StatusOK {
				t.Fatalf("%s: %d %s", p, r.status, r.body)
			}
		}
	})
	t.Run("request id", func(t *testing.T) {
		req, _ := http.NewRequest("GET", c.base+"/healthz", nil)
		req.Header.Set("X-Request-ID", "req-abc-123")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Request-ID"); got != "req-abc-123" {
			t.Fatalf("X-Request-ID %q", got)
		}
		if r := c.get("/healthz"); r.header.Get("X-Request-ID") == "" {
			t.Fatal("no generated X-Request-ID")
		}
	})

	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true

	t.Run("no PHI in logs", func(t *testing.T) {
		out := logs.String()
		lines := strings.Count(out, `"msg":"http request"`)
		if lines < len(recs) {
			t.Fatalf("%d access-log lines for %d+ requests", lines, len(recs))
		}
		if !strings.Contains(out, `"route":"/kap/v1/:collection"`) || !strings.Contains(out, `"tenant":"default"`) {
			t.Fatalf("the access log lacks the route pattern or the tenant")
		}
		for _, s := range append(phiStrings(t, recs), key) {
			if len(s) >= 3 && strings.Contains(out, s) {
				t.Errorf("the log holds %q", s)
			}
		}
	})

	t.Run("queued for delivery", func(t *testing.T) {
		s, err := bolt.Open(filepath.Join(dir, "kap.db"), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stats, err := s.Outbox().Stats(context.Background(), httpapi.DefaultTarget)
		if err != nil {
			t.Fatal(err)
		}
		// every record, plus the provider's version 2: delivered to the
		// ndjson folder by the worker or still queued, never both.
		delivered := len(ndjsonLines(t, dir))
		if want := len(recs) + 1; stats.Depth+delivered != want {
			t.Fatalf("outbox depth %d + delivered %d, want %d", stats.Depth, delivered, want)
		}
	})

	t.Run("restart keeps records and key", func(t *testing.T) {
		m2 := startServer(t, dir, io.Discard)
		defer m2.Close()
		c2 := &httpClient{t: t, base: "http://" + m2.Addr(), key: key}
		resp := c2.get("/kap/v1/providers/" + first.id)
		if resp.status != http.StatusOK || resp.header.Get("ETag") != `W/"2"` {
			t.Fatalf("status %d ETag %q: %s", resp.status, resp.header.Get("ETag"), resp.body)
		}
		last := recs[len(recs)-1]
		if r := c2.get("/kap/v1/" + httpapi.CollectionOf(last.kind) + "/" + last.id); r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	})
}
