package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/internal/synth"
)

// step is one POST of a record version.
type step struct {
	Collection string // clients, dosing-sessions
	ID         string
	Seq        int // position in its client's sequence (the Idempotency-Key)
	Body       []byte
}

// sequence is one client's records in submission order: the Client, its
// dosing sessions, then a second version of the Client (another email),
// which must be what the EHR holds at the end if per-client order held.
type sequence struct {
	Tenant   int
	ClientID string
	Email2   string // the email of the Client's last version
	Steps    []step
}

// tenantName is the name of tenant i.
func tenantName(i int) string { return fmt.Sprintf("t%02d", i+1) }

// workload returns the sequences of `tenants` tenants holding `sessions`
// dosing sessions in all (as evenly as possible), from synthetic courses
// (internal/synth: the same clients in every tenant, which are different
// patients: each tenant has its own identifier systems).
func workload(t testing.TB, tenants, sessions int) []sequence {
	t.Helper()
	per := (sessions + tenants - 1) / tenants
	recs, err := synth.Generate(synth.Options{Clients: per/2 + 8, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	type client struct {
		id       string
		body     map[string]any
		sessions [][]byte
	}
	var clients []*client
	byID := map[string]*client{}
	for _, r := range recs {
		b, err := kap.EncodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		switch r.RecordKind() {
		case kap.KindClient:
			c := &client{id: m["id"].(string), body: m}
			clients = append(clients, c)
			byID[c.id] = c
		case kap.KindDosingSession:
			c := byID[m["clientId"].(string)]
			c.sessions = append(c.sessions, b)
		}
	}
	var out []sequence
	left := sessions
	for ti := range tenants {
		quota := min(per, left)
		for _, c := range clients {
			if quota == 0 {
				break
			}
			if len(c.sessions) == 0 {
				continue
			}
			n := min(quota, len(c.sessions))
			quota -= n
			left -= n
			v1, _ := json.Marshal(c.body)
			v2m := maps(c.body)
			v2m["email"] = "v2." + fmt.Sprint(c.body["email"])
			v2, _ := json.Marshal(v2m)
			sq := sequence{Tenant: ti, ClientID: c.id, Email2: v2m["email"].(string)}
			sq.Steps = append(sq.Steps, step{Collection: "clients", ID: c.id, Body: v1})
			for _, s := range c.sessions[:n] {
				var m map[string]any
				json.Unmarshal(s, &m)
				sq.Steps = append(sq.Steps, step{Collection: "dosing-sessions", ID: m["id"].(string), Body: s})
			}
			sq.Steps = append(sq.Steps, step{Collection: "clients", ID: c.id, Body: v2})
			for i := range sq.Steps {
				sq.Steps[i].Seq = i
			}
			out = append(out, sq)
		}
		if quota > 0 {
			t.Fatalf("synth gave too few sessions for tenant %d", ti)
		}
	}
	return out
}

func maps[V any](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// writeConfig writes the gateway configuration: `tenants` tenants with one
// API key each (returned), one fhir target "ehr" at base without consent
// requirement, rate limits out of the way.
func writeConfig(t testing.TB, tenants int, base string) (path string, keys []string) {
	t.Helper()
	var ts []map[string]any
	for i := range tenants {
		key := fmt.Sprintf("cluster-test-key-%02d-%d", i, time.Now().UnixNano())
		keys = append(keys, key)
		ts = append(ts, map[string]any{
			"name":      tenantName(i),
			"apiKeys":   []map[string]any{{"name": "load", "sha256": httpapi.HashKey(key)}},
			"targets":   []string{"ehr"},
			"rateLimit": map[string]any{"perSecond": 100000, "burst": 100000},
		})
	}
	cfg := map[string]any{
		"tenants": ts,
		"targets": []map[string]any{{
			"name": "ehr", "type": "fhir", "baseUrl": base, "requireConsent": false,
			"maxAttempts": 100, "concurrency": 4, "attemptTimeout": "30s", "totalTimeout": "50s",
		}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "kapbridge.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, keys
}

// submitter posts sequences through the API replicas, round robin, and
// retries a POST with the same Idempotency-Key on a connection error, 409
// (in progress), 429 and 5xx, as a well-behaved clinic system does.
type submitter struct {
	apis   []*proc
	keys   []string
	client *http.Client
	next   atomic.Uint64

	retries  atomic.Int64
	replayed atomic.Int64
	posts    atomic.Int64
	mu       sync.Mutex
	lat      []time.Duration   // of the successful attempts
	expected map[string]bool   // identifier keys of every acknowledged version
	reasons  map[string]int    // retried attempts by reason
	patients map[string]string // "<tenant>|<client id>" -> the Patient's identifier system|value
	failures []string
}

func newSubmitter(apis []*proc, keys []string) *submitter {
	return &submitter{apis: apis, keys: keys, expected: map[string]bool{}, patients: map[string]string{}, reasons: map[string]int{},
		client: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
}

// run submits every sequence with `workers` concurrent clients; each
// sequence is posted in order by one of them. onProgress is called after
// each acknowledged POST with the count so far.
func (s *submitter) run(ctx context.Context, seqs []sequence, workers int, onProgress func(int64)) {
	ch := make(chan sequence)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sq := range ch {
				for _, st := range sq.Steps {
					if err := s.post(ctx, sq.Tenant, st); err != nil {
						s.fail("%s %s/%s: %v", tenantName(sq.Tenant), st.Collection, st.ID, err)
						break
					}
					if onProgress != nil {
						onProgress(s.posts.Add(1))
					}
				}
			}
		}()
	}
	for _, sq := range seqs {
		select {
		case ch <- sq:
		case <-ctx.Done():
		}
	}
	close(ch)
	wg.Wait()
}

func (s *submitter) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, fmt.Sprintf(format, args...))
}

// post sends one record version until it is acknowledged (2xx), then adds
// the identifier keys of its Bundle to expected.
func (s *submitter) post(ctx context.Context, tenant int, st step) error {
	idem := fmt.Sprintf("%s-%s-%s-%d", tenantName(tenant), st.Collection, st.ID, st.Seq)
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return fmt.Errorf("gave up after %d attempts: %w", attempt, ctx.Err())
		}
		api := s.apis[int(s.next.Add(1))%len(s.apis)]
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, api.URL+"/kap/v1/"+st.Collection, bytes.NewReader(st.Body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", s.keys[tenant])
		req.Header.Set("Idempotency-Key", idem)
		start := time.Now()
		resp, err := s.client.Do(req)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case rerr != nil:
				err = rerr
			case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusCreated:
				s.mu.Lock()
				s.lat = append(s.lat, time.Since(start))
				s.mu.Unlock()
				if resp.Header.Get("Idempotent-Replayed") == "true" {
					s.replayed.Add(1)
				}
				return s.acknowledged(tenant, body)
			case resp.StatusCode == http.StatusConflict || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
				err = fmt.Errorf("HTTP %d", resp.StatusCode)
			default:
				return fmt.Errorf("HTTP %d: %.300s", resp.StatusCode, body)
			}
		}
		s.retries.Add(1)
		s.mu.Lock()
		s.reasons[retryReason(err)]++
		s.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// acknowledged records the identifier keys of the answer's Bundle.
func (s *submitter) acknowledged(tenant int, body []byte) error {
	var out struct {
		Bundle struct {
			Entry []struct {
				Resource map[string]any `json:"resource"`
			} `json:"entry"`
		} `json:"bundle"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return fmt.Errorf("answer: %v", err)
	}
	if len(out.Bundle.Entry) == 0 {
		return fmt.Errorf("the answer has no bundle")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range out.Bundle.Entry {
		for _, k := range identifierKeys(e.Resource) {
			s.expected[k] = true
			if typ, rest, ok := strings.Cut(k, "|"); ok && typ == "Patient" {
				sys, val, _ := strings.Cut(rest, "|")
				s.patients[tenantName(tenant)+"|"+val] = sys + "|" + val
			}
		}
	}
	return nil
}

// identifierKeys returns the ehrtest ByIdentifier keys of a resource: one
// per identifier, and its meta.tag keys when it has no identifier or is a
// Provenance.
func identifierKeys(r map[string]any) []string {
	typ, _ := r["resourceType"].(string)
	var out []string
	ids, _ := r["identifier"].([]any)
	if one, ok := r["identifier"].(map[string]any); ok { // 0..1 in some types (AdverseEvent)
		ids = []any{one}
	}
	for _, x := range ids {
		id, _ := x.(map[string]any)
		sys, _ := id["system"].(string)
		val, _ := id["value"].(string)
		out = append(out, typ+"|"+sys+"|"+val)
	}
	if typ == "Provenance" || len(ids) == 0 {
		meta, _ := r["meta"].(map[string]any)
		tags, _ := meta["tag"].([]any)
		for _, x := range tags {
			tg, _ := x.(map[string]any)
			sys, _ := tg["system"].(string)
			code, _ := tg["code"].(string)
			out = append(out, typ+"|_tag|"+sys+"|"+code)
		}
	}
	return out
}

// latency returns the p50, p95 and p99 of the successful POST attempts.
func (s *submitter) latency() (p50, p95, p99 time.Duration) {
	s.mu.Lock()
	l := slices.Clone(s.lat)
	s.mu.Unlock()
	if len(l) == 0 {
		return
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	at := func(q float64) time.Duration { return l[min(len(l)-1, int(q*float64(len(l))))] }
	return at(.50), at(.95), at(.99)
}

func (s *submitter) expectedKeys() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expected
}

func (s *submitter) failed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.failures)
}

// fmtMiB renders RSS maxima sorted by process name.
func fmtMiB(m map[string]float64) string {
	var names []string
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s %.0f MiB; ", n, m[n])
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// patient returns the Patient identifier (system|value) of a client, from
// the acknowledged Bundles.
func (s *submitter) patient(tenant int, clientID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.patients[tenantName(tenant)+"|"+clientID]
}

// retryReason names a retried attempt's cause without addresses.
func retryReason(err error) string {
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "HTTP "):
		return msg
	case strings.Contains(msg, "connection refused"):
		return "connection refused"
	case strings.Contains(msg, "EOF") || strings.Contains(msg, "connection reset"):
		return "connection lost"
	}
	return "other"
}

// retryReasons returns the retried attempts by reason.
func (s *submitter) retryReasons() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps(s.reasons)
}
