package httpapi_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/internal/config"
)

func auditEvents(t *testing.T, data string) []httpapi.AuditEvent {
	t.Helper()
	var evs []httpapi.AuditEvent
	sc := bufio.NewScanner(strings.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev httpapi.AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("not an AuditEvent line: %v: %s", err, sc.Text())
		}
		evs = append(evs, ev)
	}
	return evs
}

func entityValues(ev httpapi.AuditEvent) []string {
	var out []string
	for _, e := range ev.Entity {
		if e.What != nil && e.What.Reference != "" {
			out = append(out, e.What.Reference)
		} else if e.What != nil && e.What.Identifier != nil {
			out = append(out, e.What.Identifier.System+"|"+e.What.Identifier.Value)
		}
		if e.Query != "" {
			q, _ := base64.StdEncoding.DecodeString(e.Query)
			out = append(out, "query:"+string(q))
		}
	}
	return out
}

func TestAuditTrail(t *testing.T) {
	key := "kap_audit_key"
	s := newSecured(t, openBolt(t), httpapi.Config{
		Tenants: []config.Tenant{{Name: "clinic-a", APIKeys: []config.APIKey{{Name: "writer", SHA256: httpapi.HashKey(key)}}}},
	})
	client := readTestdata(t, "10-client-c001.json")
	secExpect(t, "POST", secCall(t, "POST", s.url+"/kap/v1/clients", client, "X-API-Key", key), 201, "")
	secExpect(t, "GET", secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, "X-API-Key", key), 200, "")
	secExpect(t, "401", secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, "X-API-Key", "kap_wrong"), 401, "")
	secCall(t, "GET", s.url+"/fhir/r4/Patient?identifier=MRN-77", nil, "X-API-Key", key)
	secCall(t, "GET", s.url+"/fhir/r4/Patient/abc", nil, "X-API-Key", key)
	secCall(t, "GET", s.url+"/healthz", nil)

	evs := auditEvents(t, s.audit.String())
	if len(evs) != 5 {
		t.Fatalf("%d audit events, want 5 (healthz is not audited):\n%s", len(evs), s.audit.String())
	}
	for i, ev := range evs {
		if ev.ResourceType != "AuditEvent" || ev.Type.Code != "rest" || ev.Recorded == "" || len(ev.Agent) != 1 {
			t.Errorf("event %d: %+v", i, ev)
		}
		if _, err := time.Parse(time.RFC3339Nano, ev.Recorded); err != nil {
			t.Errorf("event %d recorded %q", i, ev.Recorded)
		}
	}
	post, get, denied, search, read := evs[0], evs[1], evs[2], evs[3], evs[4]
	if post.Action != "C" || post.Subtype[0].Code != "create" || post.Outcome != "0" || post.Source.Site != "clinic-a" ||
		post.Agent[0].Who.Identifier == nil || post.Agent[0].Who.Identifier.Value != "key:writer" {
		t.Errorf("POST event: %+v", post)
	}
	if !strings.Contains(strings.Join(entityValues(post), " "), "urn:kapbridge:record:clinic-a|Client/c001") {
		t.Errorf("POST entities %v", entityValues(post))
	}
	if get.Action != "R" || get.Subtype[0].Code != "read" || !strings.Contains(strings.Join(entityValues(get), " "), "|Client/c001") {
		t.Errorf("GET event: %+v %v", get, entityValues(get))
	}
	if denied.Outcome != "4" || denied.Agent[0].Who.Identifier != nil || denied.Agent[0].Who.Display != "unauthenticated" {
		t.Errorf("401 event: %+v", denied)
	}
	if search.Subtype[0].Code != "search-type" || !strings.Contains(strings.Join(entityValues(search), " "), "query:identifier=MRN-77") {
		t.Errorf("search event: %+v %v", search, entityValues(search))
	}
	if !strings.Contains(strings.Join(entityValues(read), " "), "Patient/abc") {
		t.Errorf("read event entities %v", entityValues(read))
	}
	// The operational log holds none of it.
	for _, leak := range []string{"MRN-77", "Client/c001", "Patient/abc"} {
		if strings.Contains(s.logs.String(), leak) {
			t.Errorf("the operational log holds %q", leak)
		}
	}
}

func TestAuditFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	now := time.Date(2026, 3, 1, 23, 59, 59, 0, time.UTC)
	af, err := httpapi.NewAuditFile(dir, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	af.Write([]byte(`{"n":1}` + "\n"))
	now = now.Add(2 * time.Second)
	af.Write([]byte(`{"n":2}` + "\n"))
	if err := af.Close(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"audit-2026-03-01.ndjson": `{"n":1}` + "\n", "audit-2026-03-02.ndjson": `{"n":2}` + "\n"} {
		p := filepath.Join(dir, name)
		data, err := os.ReadFile(p)
		if err != nil || string(data) != want {
			t.Errorf("%s: %q, %v", name, data, err)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", name, fi.Mode())
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("audit dir mode %v", fi.Mode())
	}
}

// slowStore injects a fault: record reads wait for the request's deadline.
type slowStore struct{ kap.Store }
type slowRecords struct{ kap.RecordStore }

func (s slowStore) Records() kap.RecordStore { return slowRecords{s.Store.Records()} }
func (slowRecords) Get(ctx context.Context, _, _, _ string) (kap.StoredRecord, error) {
	<-ctx.Done()
	return kap.StoredRecord{}, ctx.Err()
}

func TestLimits(t *testing.T) {
	key := "kap_limits_key"
	tenants := []config.Tenant{{Name: "clinic-a", APIKeys: []config.APIKey{{Name: "k", SHA256: httpapi.HashKey(key)}}}}
	s := newSecured(t, slowStore{openBolt(t)}, httpapi.Config{Tenants: tenants, RequestTimeout: 300 * time.Millisecond, MaxBodyBytes: 1 << 16})
	r := secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, "X-API-Key", key)
	secExpect(t, "slow store", r, 503, "did not complete within 300ms")
	if !strings.Contains(string(r.body), `"code":"transient"`) {
		t.Errorf("timeout issue code: %s", r.body)
	}
	if evs := auditEvents(t, s.audit.String()); len(evs) != 1 || evs[0].Outcome != "8" || !strings.HasPrefix(evs[0].OutcomeDesc, "HTTP 503") {
		t.Errorf("the timed-out request's audit event: %+v", evs)
	}
	if !strings.Contains(s.logs.String(), `"status":503`) {
		t.Errorf("the access log does not show the 503: %s", s.logs.String())
	}

	deep := strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100)
	secExpect(t, "deep JSON", secCall(t, "POST", s.url+"/kap/v1/clients", []byte(deep), "X-API-Key", key), 413, "nested deeper than 64")
	deepArr := `{"kind":"Client","x":` + strings.Repeat("[", 65) + strings.Repeat("]", 65) + "}"
	secExpect(t, "deep array", secCall(t, "POST", s.url+"/kap/v1/$map", []byte(deepArr), "X-API-Key", key), 413, "nested")
	// Brackets inside strings do not count.
	inString := `{"kind":"Client","note":"` + strings.Repeat("[{", 200) + `"}`
	if r := secCall(t, "POST", s.url+"/kap/v1/$map", []byte(inString), "X-API-Key", key); r.status == 413 {
		t.Errorf("brackets in a string counted as nesting: %s", r.body)
	}
	big := `{"kind":"Client","note":"` + strings.Repeat("x", 1<<17) + `"}`
	secExpect(t, "large body", secCall(t, "POST", s.url+"/kap/v1/clients", []byte(big), "X-API-Key", key), 413, "larger than")
	secExpect(t, "media type", secCall(t, "POST", s.url+"/kap/v1/clients", []byte("<x/>"), "X-API-Key", key, "Content-Type", "application/xml"), 415, "")
}
