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

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/fhir"
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
