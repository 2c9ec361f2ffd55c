package ehr_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ehr"
	"github.com/kapbridge/kap/adapters/httpclient"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "fhir", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// capabilityJSON is a CapabilityStatement for the fault handlers below.
func capabilityJSON(transaction, condUpdate, condCreate bool) []byte {
	types := []string{"Patient", "Provenance", "Encounter", "Observation", "Condition", "MedicationStatement", "DocumentReference"}
	var res []any
	for _, t := range types {
		res = append(res, map[string]any{
			"type":              t,
			"interaction":       []any{map[string]any{"code": "create"}, map[string]any{"code": "update"}, map[string]any{"code": "search-type"}},
			"conditionalUpdate": condUpdate,
			"conditionalCreate": condCreate,
		})
	}
	rest := map[string]any{"mode": "server", "resource": res}
	if transaction {
		rest["interaction"] = []any{map[string]any{"code": "transaction"}}
	}
	b, _ := json.Marshal(map[string]any{"resourceType": "CapabilityStatement", "status": "active", "kind": "instance", "fhirVersion": "4.0.1", "rest": []any{rest}})
	return b
}

func fastHTTP() httpclient.Options {
	return httpclient.Options{RetryMax: 2, BackoffBase: time.Millisecond, BackoffMax: 2 * time.Millisecond, MaxWait: 2 * time.Second}
}

func newSender(t *testing.T, base string, profile string, tr http.RoundTripper) *ehr.Sender {
	t.Helper()
	s, err := ehr.New(ehr.Options{Name: "ehr-a", BaseURL: base, ProfileName: profile, Transport: tr, HTTP: fastHTTP()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func message(bundle []byte) kap.OutboxMessage {
	return kap.OutboxMessage{ID: "Client/c001/1", Tenant: "demo", Target: "ehr-a", ClientID: "c001", Kind: "Client", RecordID: "c001", Version: 1, Bundle: bundle}
}

const outcome400 = `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"required","diagnostics":"Patient.name: Jane Doe is missing a family name","expression":["Patient.name"]}]}`

// faultServer answers /metadata with a transaction-capable statement and
// every other request with the handler.
func faultServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	var writes atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fhir/metadata" {
			w.Write(capabilityJSON(true, true, true))
			return
		}
		writes.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &writes
}

func TestSendErrorClasses(t *testing.T) {
	bundle := readTestdata(t, "10-client-c001.json")
	for _, tc := range []struct {
		name       string
		h          http.HandlerFunc
		kind       kap.SendErrorKind
		status     int
		retryAfter time.Duration
		outcome    bool
		writes     int32
	}{
		{"400 with an OperationOutcome", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(400)
			io.WriteString(w, outcome400)
		}, kap.SendPermanent, 400, 0, true, 1},
		{"422", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(422)
			io.WriteString(w, outcome400)
		}, kap.SendPermanent, 422, 0, true, 1},
		{"429 with a long Retry-After", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "7200")
			w.WriteHeader(429)
		}, kap.SendTransient, 429, time.Hour, false, 1},
		{"503 with Retry-After", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(503)
		}, kap.SendTransient, 503, 2 * time.Minute, false, 1},
		{"409 twice: one more try, then permanent", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(409)
			io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"conflict"}]}`)
		}, kap.SendPermanent, 409, 0, true, 2},
		{"403", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(403) }, kap.SendPermanent, 403, 0, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, writes := faultServer(t, tc.h)
			s := newSender(t, srv.URL+"/fhir", "generic", nil)
			_, err := s.Send(context.Background(), message(bundle))
			var se *kap.SendError
			if !errors.As(err, &se) {
				t.Fatalf("err %v, want a *kap.SendError", err)
			}
			if se.Kind != tc.kind || se.Status != tc.status || se.RetryAfter != tc.retryAfter {
				t.Errorf("got kind %s status %d retryAfter %v; want %s %d %v", se.Kind, se.Status, se.RetryAfter, tc.kind, tc.status, tc.retryAfter)
			}
			if tc.outcome != (se.OperationOutcome != nil) {
				t.Errorf("OperationOutcome %s, want present=%v", se.OperationOutcome, tc.outcome)
			}
			if got := writes.Load(); got != tc.writes {
				t.Errorf("%d transaction POSTs, want %d", got, tc.writes)
			}
			if strings.Contains(se.Error(), "Jane") || strings.Contains(se.Error(), "c001") {
				t.Errorf("error %q carries PHI", se.Error())
			}
		})
	}
}

// refresher counts refreshes; the handler accepts only the refreshed token.
type refresher struct{ n atomic.Int32 }

func (r *refresher) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+string(rune('a'+r.n.Load())))
	return http.DefaultTransport.RoundTrip(req)
}
func (r *refresher) Refresh(context.Context) error { r.n.Add(1); return nil }

func TestUnauthorizedRefreshesOnce(t *testing.T) {
	srv, _ := faultServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(401)
	})
	tr := &refresher{}
	s := newSender(t, srv.URL+"/fhir", "generic", tr)
	_, err := s.Send(context.Background(), message(readTestdata(t, "10-client-c001.json")))
	se := kap.SendErrorOf(err)
	if se.Kind != kap.SendTransient || se.Status != 401 {
		t.Fatalf("got %v, want transient 401", err)
	}
	if tr.n.Load() != 1 {
		t.Errorf("%d refreshes, want 1", tr.n.Load())
	}
}

func TestLostTransactionAnswerIsUnknown(t *testing.T) {
	srv, writes := faultServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	s := newSender(t, srv.URL+"/fhir", "generic", nil)
	_, err := s.Send(context.Background(), message(readTestdata(t, "10-client-c001.json")))
	se := kap.SendErrorOf(err)
	if se.Kind != kap.SendUnknown {
		t.Fatalf("got %v, want unknown", err)
	}
	if writes.Load() != 1 {
		t.Errorf("transaction sent %d times, want 1 (never repeated blindly)", writes.Load())
	}
	if len(se.Resources) != 2 {
		t.Fatalf("%d ledger entries, want 2 (Patient, Provenance)", len(se.Resources))
	}
	for _, le := range se.Resources {
		if le.State != kap.LedgerUnknown || le.Tenant != "demo" || le.Target != "ehr-a" || le.Identifier == "" {
			t.Errorf("ledger entry %+v, want state unknown with its key", le)
		}
	}
}

func TestBadBundleIsPermanent(t *testing.T) {
	srv, writes := faultServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	s := newSender(t, srv.URL+"/fhir", "generic", nil)
	for _, b := range []string{``, `{`, `{"resourceType":"Patient"}`, `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Observation"}}]}`} {
		_, err := s.Send(context.Background(), message([]byte(b)))
		se := kap.SendErrorOf(err)
		if se.Kind != kap.SendPermanent || se.OperationOutcome == nil {
			t.Errorf("bundle %q: got %v, want permanent with an OperationOutcome", b, err)
		}
	}
	if writes.Load() != 0 {
		t.Errorf("%d writes for unreadable bundles, want 0", writes.Load())
	}
}

func TestCapabilityIsCached(t *testing.T) {
	var metadata atomic.Int32
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metadata" {
			metadata.Add(1)
			w.Write(capabilityJSON(false, true, true))
			return
		}
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(503)
	}))
	defer srv.Close()
	s := newSender(t, srv.URL, "generic", nil)
	for range 3 {
		got, err := s.Strategy(context.Background(), "Observation")
		if err != nil {
			t.Fatal(err)
		}
		if got != ehr.StrategyConditionalUpdate {
			t.Errorf("strategy %s, want conditional-update", got)
		}
	}
	if metadata.Load() != 1 {
		t.Errorf("%d metadata reads, want 1 (cached)", metadata.Load())
	}
}

func TestStrategySelection(t *testing.T) {
	for _, tc := range []struct {
		tx, cu, cc bool
		profile    string
		want       string
	}{
		{true, true, true, "generic", ehr.StrategyTransaction},
		{false, true, true, "generic", ehr.StrategyConditionalUpdate},
		{false, false, true, "generic", ehr.StrategyConditionalCreate},
		{false, false, false, "generic", ehr.StrategySearch},
		{true, true, true, "epic", ehr.StrategySearch},
		{true, true, true, "oracle-health", ehr.StrategySearch},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write(capabilityJSON(tc.tx, tc.cu, tc.cc))
		}))
		s := newSender(t, srv.URL, tc.profile, nil)
		got, err := s.Strategy(context.Background(), "Observation")
		srv.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("transaction=%v condUpdate=%v condCreate=%v profile %s: strategy %s, want %s", tc.tx, tc.cu, tc.cc, tc.profile, got, tc.want)
		}
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	for _, o := range []ehr.Options{
		{Name: "", BaseURL: "http://x"},
		{Name: "a b", BaseURL: "http://x"},
		{Name: "a", BaseURL: "ftp://x"},
		{Name: "a", BaseURL: "http://x/fhir?secret=1"},
		{Name: "a", BaseURL: "http://x", ProfileName: "nosuch"},
		{Name: "a", BaseURL: "http://x", ProfileName: "../profiles/epic"},
	} {
		if _, err := ehr.New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("error %q repeats the query", err)
		}
	}
}

func TestSenderPreflightUsesCapabilities(t *testing.T) {
	var writes atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metadata" {
			w.Write(capabilityJSON(false, true, false))
			return
		}
		writes.Add(1)
		w.WriteHeader(500)
	}))
	defer srv.Close()
	s := newSender(t, srv.URL, "generic", nil)
	fs, err := s.Preflight(context.Background(), readTestdata(t, "16-dosing-c001-1.json"))
	if err != nil {
		t.Fatal(err)
	}
	var strategy string
	refused := map[string]bool{}
	for _, f := range fs {
		if strings.HasPrefix(f.Reason, "strategy: ") {
			strategy = f.Reason
		}
		if f.Action == ehr.ActionFallback || f.Action == ehr.ActionNotSent {
			refused[f.ResourceType] = true
		}
	}
	if strategy != "strategy: per resource: conditional-update" {
		t.Errorf("strategy finding %q", strategy)
	}
	// The test statement lists no MedicationAdministration, Medication or Procedure.
	for _, typ := range []string{"MedicationAdministration", "Medication", "Procedure"} {
		if !refused[typ] {
			t.Errorf("%s not refused although the CapabilityStatement lacks it: %v", typ, refused)
		}
	}
	if writes.Load() != 0 {
		t.Errorf("preflight sent %d requests besides metadata", writes.Load())
	}
}
