package httpapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/httpapi"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
	"github.com/kapbridge/kap/adapters/storetest"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
)

// The API tests run over real HTTP against both stores: the embedded bbolt
// file and a real redis-server (redistest).

// storeFactory opens a fresh store on the clock now (nil: time.Now).
type storeFactory func(t testing.TB, now func() time.Time) kap.Store

var apiStores = map[string]storeFactory{
	"bolt": func(t testing.TB, now func() time.Time) kap.Store {
		s, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	},
	"redis": func(t testing.TB, now func() time.Time) kap.Store {
		srv := redistest.Start(t, redistest.Options{})
		c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{srv.Addr}})
		t.Cleanup(func() { c.Close() })
		return kapredis.New(c, kapredis.Options{Now: now})
	},
}

func eachStore(t *testing.T, fn func(t *testing.T, f storeFactory)) {
	for _, name := range []string{"bolt", "redis"} {
		t.Run(name, func(t *testing.T) { fn(t, apiStores[name]) })
	}
}

const apiKey = "key-a"

func apiServer(t testing.TB, store kap.Store, mod func(*httpapi.Config)) *httptest.Server {
	t.Helper()
	cfg := httpapi.Config{
		Store:  store,
		Codec:  fhir.MustCodec(),
		Keys:   map[string]string{httpapi.HashKey(apiKey): "clinic-a", httpapi.HashKey("key-b"): "clinic-b"},
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) String() string { return fmt.Sprintf("HTTP %d %s", r.status, r.body) }

func call(t testing.TB, method, url string, body []byte, hdr ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", apiKey)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, data}
}

func readRecord(t testing.TB, name string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../../testdata/kap", name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func jsonOf(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// dosing returns the testdata dosing session with id and intention changed.
func dosing(t testing.TB, id, intention string) []byte {
	m := readRecord(t, "16-dosing-c001-1.json")
	m["id"] = id
	if intention != "" {
		m["intention"] = intention
	}
	return jsonOf(t, m)
}

func envelope(t testing.TB, r reply) httpapi.Envelope {
	t.Helper()
	var env httpapi.Envelope
	if err := json.Unmarshal(r.body, &env); err != nil {
		t.Fatalf("not an envelope: %v: %s", err, r.body)
	}
	return env
}

// wantOutcome checks that r is an OperationOutcome with status st whose text
// mentions each of words.
func wantOutcome(t testing.TB, r reply, st int, words ...string) {
	t.Helper()
	if r.status != st || !strings.Contains(string(r.body), `"OperationOutcome"`) {
		t.Fatalf("got %v, want %d OperationOutcome", r, st)
	}
	for _, w := range words {
		if !strings.Contains(string(r.body), w) {
			t.Fatalf("outcome does not mention %q: %s", w, r.body)
		}
	}
}

func TestWritePreconditions(t *testing.T) {
	eachStore(t, func(t *testing.T, f storeFactory) {
		srv := apiServer(t, f(t, nil), nil)
		base := srv.URL + "/kap/v1/dosing-sessions"
		r := call(t, "POST", base, dosing(t, "ds-p1", ""))
		if r.status != http.StatusCreated || r.header.Get("ETag") != `W/"1"` || r.header.Get("Location") != "/kap/v1/dosing-sessions/ds-p1" {
			t.Fatalf("create: %v etag %q location %q", r, r.header.Get("ETag"), r.header.Get("Location"))
		}
		env := envelope(t, r)
		if env.Version != 1 || len(env.Bundle) == 0 || env.Links.Deliveries != "/kap/v1/dosing-sessions/ds-p1/deliveries" ||
			env.Delivery == nil || fmt.Sprint(env.Delivery.Queued) != "[ndjson]" {
			t.Fatalf("create envelope: version %d links %+v delivery %+v", env.Version, env.Links, env.Delivery)
		}
		// Resubmission: 200, same version.
		if r := call(t, "PUT", base+"/ds-p1", dosing(t, "ds-p1", "")); r.status != http.StatusOK || envelope(t, r).Version != 1 {
			t.Fatalf("resubmission: %v", r)
		}
		// PUT with the current version: a new version.
		r = call(t, "PUT", base+"/ds-p1", dosing(t, "ds-p1", "second"), "If-Match", `W/"1"`)
		if r.status != http.StatusCreated || r.header.Get("ETag") != `W/"2"` {
			t.Fatalf("If-Match current: %v", r)
		}
		// A stale If-Match: 412, nothing stored.
		wantOutcome(t, call(t, "PUT", base+"/ds-p1", dosing(t, "ds-p1", "third"), "If-Match", `W/"1"`), http.StatusPreconditionFailed, "version 1")
		wantOutcome(t, call(t, "POST", base, dosing(t, "ds-p1", "third"), "If-Match", `"1"`), http.StatusPreconditionFailed)
		if r := call(t, "GET", base+"/ds-p1", nil); envelope(t, r).Version != 2 {
			t.Fatalf("after 412s: %v", r)
		}
		// If-None-Match: * demands creation.
		wantOutcome(t, call(t, "POST", base, dosing(t, "ds-p1", "second"), "If-None-Match", "*"), http.StatusPreconditionFailed, "exists")
		if r := call(t, "POST", base, dosing(t, "ds-p2", ""), "If-None-Match", "*"); r.status != http.StatusCreated {
			t.Fatalf("If-None-Match on a new record: %v", r)
		}
		wantOutcome(t, call(t, "PUT", base+"/ds-new", dosing(t, "ds-new", ""), "If-Match", "*"), http.StatusPreconditionFailed)
		// Malformed headers and a URL id that is not the body's.
		wantOutcome(t, call(t, "PUT", base+"/ds-p1", dosing(t, "ds-p1", "x"), "If-Match", "v1"), http.StatusUnprocessableEntity, "If-Match")
		wantOutcome(t, call(t, "PUT", base+"/ds-other", dosing(t, "ds-p1", "x")), http.StatusUnprocessableEntity, "id", "URL")
		wantOutcome(t, call(t, "PUT", base+"/ds-p1", dosing(t, "ds-p1", "x"), "If-None-Match", `W/"1"`), http.StatusUnprocessableEntity, "If-None-Match")
		// Earlier versions stay readable.
		if r := call(t, "GET", base+"/ds-p1?version=1", nil); envelope(t, r).Version != 1 || r.header.Get("ETag") != `W/"1"` {
			t.Fatalf("GET version 1: %v", r)
		}
	})
}

func TestIdempotencyKey(t *testing.T) {
	eachStore(t, func(t *testing.T, f storeFactory) {
		srv := apiServer(t, f(t, nil), nil)
		base := srv.URL + "/kap/v1/dosing-sessions"
		first := call(t, "POST", base, dosing(t, "ds-i1", ""), "Idempotency-Key", "k-1")
		if first.status != http.StatusCreated || first.header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("first: %v", first)
		}
		// Change the record behind the key's back: the replay must still
		// be the first response, not a new one.
		if r := call(t, "PUT", base+"/ds-i1", dosing(t, "ds-i1", "changed")); r.status != http.StatusCreated {
			t.Fatalf("update: %v", r)
		}
		replay := call(t, "POST", base, dosing(t, "ds-i1", ""), "Idempotency-Key", "k-1")
		if replay.status != http.StatusCreated || replay.header.Get("Idempotent-Replayed") != "true" ||
			!bytes.Equal(replay.body, first.body) || replay.header.Get("ETag") != `W/"1"` || replay.header.Get("Location") != first.header.Get("Location") {
			t.Fatalf("replay: %v replayed=%q etag=%q", replay, replay.header.Get("Idempotent-Replayed"), replay.header.Get("ETag"))
		}
		// The same key with another body or path: refused.
		wantOutcome(t, call(t, "POST", base, dosing(t, "ds-i1", "other"), "Idempotency-Key", "k-1"), http.StatusUnprocessableEntity, "Idempotency-Key")
		wantOutcome(t, call(t, "PUT", base+"/ds-i1", dosing(t, "ds-i1", ""), "Idempotency-Key", "k-1"), http.StatusUnprocessableEntity, "Idempotency-Key")
		// A refused request's answer is replayed too (4xx is an answer).
		bad := call(t, "POST", base, []byte(`{"kind":"DosingSession"}`), "Idempotency-Key", "k-2")
		again := call(t, "POST", base, []byte(`{"kind":"DosingSession"}`), "Idempotency-Key", "k-2")
		if bad.status != http.StatusUnprocessableEntity || again.status != bad.status || again.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("4xx replay: %v then %v", bad, again)
		}
		// Another tenant's same key is independent.
		req, _ := http.NewRequest("POST", base, bytes.NewReader(dosing(t, "ds-i1", "")))
		req.Header.Set("X-API-Key", "key-b")
		req.Header.Set("Idempotency-Key", "k-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("other tenant: %d replayed=%q", resp.StatusCode, resp.Header.Get("Idempotent-Replayed"))
		}
	})
}

func TestIdempotencyKeyInFlight(t *testing.T) {
	store := apiStores["bolt"](t, nil)
	// Reserve the key as a request in flight would, then send one with it.
	// The fingerprint is SHA-256 of "<method> <path>\n" and the body (docs/api.md).
	body := dosing(t, "ds-b1", "")
	sum := sha256.Sum256(append([]byte("POST /kap/v1/dosing-sessions\n"), body...))
	if _, err := store.Idempotency().Reserve(context.Background(), "clinic-a", "k-busy", hex.EncodeToString(sum[:])); err != nil {
		t.Fatal(err)
	}
	srv := apiServer(t, store, nil)
	r := call(t, "POST", srv.URL+"/kap/v1/dosing-sessions", body, "Idempotency-Key", "k-busy")
	wantOutcome(t, r, http.StatusConflict, "in progress")
}

func TestConcurrentFirstPosts(t *testing.T) {
	eachStore(t, func(t *testing.T, f storeFactory) {
		srv := apiServer(t, f(t, nil), nil)
		base := srv.URL + "/kap/v1/dosing-sessions"
		run := func(n int, body func(i int) []byte, hdr ...string) map[int]int {
			var wg sync.WaitGroup
			var mu sync.Mutex
			count := map[int]int{}
			start := make(chan struct{})
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					r := call(t, "POST", base, body(i), hdr...)
					mu.Lock()
					count[r.status]++
					mu.Unlock()
				}()
			}
			close(start)
			wg.Wait()
			return count
		}
		// The same record from several clinic-system retries: one 201.
		same := run(8, func(int) []byte { return dosing(t, "ds-c1", "") })
		if same[http.StatusCreated] != 1 || same[http.StatusOK] != 7 {
			t.Fatalf("same content: statuses %v, want one 201 and seven 200", same)
		}
		// Different content with If-None-Match: one 201, the rest 412.
		diff := run(8, func(i int) []byte { return dosing(t, "ds-c2", fmt.Sprint("writer ", i)) }, "If-None-Match", "*")
		if diff[http.StatusCreated] != 1 || diff[http.StatusPreconditionFailed] != 7 {
			t.Fatalf("If-None-Match: statuses %v, want one 201 and seven 412", diff)
		}
		// Different content without preconditions: every write is a version
		// of its own, and every Bundle is labelled with its own version.
		plain := run(6, func(i int) []byte { return dosing(t, "ds-c3", fmt.Sprint("writer ", i)) })
		if plain[http.StatusCreated]+plain[http.StatusConflict] != 6 || plain[http.StatusCreated] == 0 {
			t.Fatalf("plain: statuses %v", plain)
		}
		env := envelope(t, call(t, "GET", base+"/ds-c3", nil))
		if env.Version != plain[http.StatusCreated] {
			t.Fatalf("latest version %d after %d creates", env.Version, plain[http.StatusCreated])
		}
		// The Provenance of the latest Bundle names its own version (the
		// mapping labels it "<kind id>/v<version>"), never an earlier one.
		if !bytes.Contains(env.Bundle, []byte(fmt.Sprintf(`/v%d"`, env.Version))) {
			t.Fatalf("the Bundle of version %d does not carry its version", env.Version)
		}
		for v := 1; v < env.Version; v++ {
			if bytes.Contains(env.Bundle, []byte(fmt.Sprintf(`/v%d"`, v))) {
				t.Fatalf("the Bundle of version %d is labelled version %d", env.Version, v)
			}
		}
	})
}

func TestListPaging(t *testing.T) {
	eachStore(t, func(t *testing.T, f storeFactory) {
		srv := apiServer(t, f(t, nil), nil)
		files, err := filepath.Glob("../../testdata/kap/*.json")
		if err != nil {
			t.Fatal(err)
		}
		byClient := map[string]int{}
		dosingC001 := 0
		for _, fn := range files {
			m := readRecord(t, filepath.Base(fn))
			coll := httpapi.CollectionOf(kap.Kind(m["kind"].(string)))
			r := call(t, "POST", srv.URL+"/kap/v1/"+coll, jsonOf(t, m))
			if r.status != http.StatusCreated {
				t.Fatalf("%s: %v", fn, r)
			}
			c, ok := m["clientId"].(string)
			if m["kind"] == "Client" {
				c, ok = m["id"].(string), true // a client's own record is one of its records
			}
			if ok {
				byClient[c]++
				if c == "c001" && m["kind"] == "DosingSession" {
					dosingC001++
				}
			}
		}
		walk := func(first string, limit int) (ids []string, pages int) {
			next := first
			for next != "" {
				r := call(t, "GET", srv.URL+next, nil)
				if r.status != http.StatusOK {
					t.Fatalf("GET %s: %v", next, r)
				}
				var page httpapi.ListPage
				if err := json.Unmarshal(r.body, &page); err != nil {
					t.Fatal(err)
				}
				if page.Next != "" && len(page.Items) != limit {
					t.Fatalf("a page with a next link holds %d items, want %d", len(page.Items), limit)
				}
				if page.Next != "" && r.header.Get("Link") != "<"+page.Next+`>; rel="next"` {
					t.Fatalf("Link header %q for next %q", r.header.Get("Link"), page.Next)
				}
				for _, it := range page.Items {
					ids = append(ids, it.Kind+"/"+it.ID)
					if it.ClientID != "c001" || it.Links.Self == "" || len(it.Record) == 0 {
						t.Fatalf("item %+v", it)
					}
				}
				pages++
				if pages > 100 {
					t.Fatal("paging does not end")
				}
				next = page.Next
			}
			return ids, pages
		}
		all, pages := walk("/kap/v1/records?client=c001&limit=4", 4)
		if len(all) != byClient["c001"] || pages < byClient["c001"]/4 {
			t.Fatalf("all kinds: %d records in %d pages, want %d", len(all), pages, byClient["c001"])
		}
		seen := map[string]bool{}
		for _, id := range all {
			if seen[id] {
				t.Fatalf("%s listed twice", id)
			}
			seen[id] = true
		}
		ds, _ := walk("/kap/v1/dosing-sessions?client=c001&limit=2", 2)
		if len(ds) != dosingC001 || dosingC001 < 2 {
			t.Fatalf("dosing sessions: %v, want %d", ds, dosingC001)
		}
		for _, id := range ds {
			if !strings.HasPrefix(id, "DosingSession/") {
				t.Fatalf("%s in the dosing-sessions list", id)
			}
		}
		// Date bounds: only the sessions on that day.
		if got, _ := walk("/kap/v1/dosing-sessions?client=c001&from=2026-02-23&to=2026-02-23", 100); len(got) != 1 {
			t.Fatalf("one day: %v", got)
		}
		wantOutcome(t, call(t, "GET", srv.URL+"/kap/v1/records", nil), http.StatusUnprocessableEntity, "client")
		wantOutcome(t, call(t, "GET", srv.URL+"/kap/v1/records?client=c001&limit=0", nil), http.StatusUnprocessableEntity, "limit")
		wantOutcome(t, call(t, "GET", srv.URL+"/kap/v1/records?client=c001&cursor=garbage!", nil), http.StatusUnprocessableEntity, "cursor")
		wantOutcome(t, call(t, "GET", srv.URL+"/kap/v1/records?client=c001&from=yesterday", nil), http.StatusUnprocessableEntity, "from")
		// Another tenant sees nothing.
		req, _ := http.NewRequest("GET", srv.URL+"/kap/v1/records?client=c001", nil)
		req.Header.Set("X-API-Key", "key-b")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page httpapi.ListPage
		json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if len(page.Items) != 0 {
			t.Fatalf("other tenant lists %d records", len(page.Items))
		}
	})
}

func deliveryReport(t testing.TB, url string) httpapi.DeliveryReport {
	t.Helper()
	r := call(t, "GET", url, nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET %s: %v", url, r)
	}
	var rep httpapi.DeliveryReport
	if err := json.Unmarshal(r.body, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

func targetOf(t testing.TB, rep httpapi.DeliveryReport, name string) httpapi.TargetDelivery {
	t.Helper()
	for _, td := range rep.Targets {
		if td.Target == name {
			return td
		}
	}
	t.Fatalf("no target %s in %+v", name, rep)
	return httpapi.TargetDelivery{}
}

func leaseOne(t testing.TB, ob kap.Outbox, target string) kap.Lease {
	t.Helper()
	var ls []kap.Lease
	deadline := time.Now().Add(20 * time.Second)
	for len(ls) == 0 {
		var err error
		if ls, err = ob.Lease(context.Background(), target, 1); err != nil {
			t.Fatal(err)
		}
		if len(ls) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("nothing to lease for %s", target)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return ls[0]
}

func TestDeliveries(t *testing.T) {
	eachStore(t, func(t *testing.T, f storeFactory) {
		ctx := context.Background()
		clock := &storetest.Clock{}
		store := f(t, clock.Now)
		srv := apiServer(t, store, func(c *httpapi.Config) {
			c.TenantTargets = map[string][]httpapi.TargetPolicy{"clinic-a": {
				{Name: "ndjson"},
				{Name: "ehr-main", RequireConsent: true},
				{Name: "ehr-other", RequireConsent: true},
			}}
		})
		base := srv.URL + "/kap/v1/"
		// Without a consent only the NDJSON target gets the session.
		r := call(t, "POST", base+"dosing-sessions", dosing(t, "ds-early", ""))
		if env := envelope(t, r); r.status != http.StatusCreated || fmt.Sprint(env.Delivery.Queued) != "[ndjson]" || len(env.Delivery.Skipped) != 2 {
			t.Fatalf("before consent: %v", r)
		}
		rep := deliveryReport(t, base+"dosing-sessions/ds-early/deliveries")
		if td := targetOf(t, rep, "ehr-main"); td.State != httpapi.DeliveryNotSent || !strings.Contains(td.Reason, "consent") {
			t.Fatalf("ehr-main before consent: %+v", td)
		}
		// The consent shares with ehr-main (and payer-acme), not ehr-other.
		if r := call(t, "POST", base+"consents", jsonOf(t, readRecord(t, "12-consent-c001.json"))); r.status != http.StatusCreated {
			t.Fatalf("consent: %v", r)
		}
		r = call(t, "POST", base+"dosing-sessions", dosing(t, "ds-d1", ""))
		env := envelope(t, r)
		if fmt.Sprint(env.Delivery.Queued) != "[ndjson ehr-main]" || len(env.Delivery.Skipped) != 1 || env.Delivery.Skipped[0].Target != "ehr-other" {
			t.Fatalf("after consent: delivery %+v", env.Delivery)
		}
		url := base + "records/ds-d1/deliveries" // the id alone finds it
		rep = deliveryReport(t, url)
		if rep.Kind != "DosingSession" || rep.Version != 1 || len(rep.Targets) != 3 {
			t.Fatalf("report %+v", rep)
		}
		for _, name := range []string{"ndjson", "ehr-main"} {
			td := targetOf(t, rep, name)
			if td.State != httpapi.DeliveryQueued || td.EnqueuedAt == nil || len(td.Resources) == 0 {
				t.Fatalf("%s: %+v", name, td)
			}
			for _, rd := range td.Resources {
				if rd.State != httpapi.DeliveryQueued || !strings.Contains(rd.Identifier, "|") {
					t.Fatalf("%s resource %+v", name, rd)
				}
			}
		}
		if td := targetOf(t, rep, "ehr-other"); td.State != httpapi.DeliveryNotSent || !strings.Contains(td.Reason, "share grant") {
			t.Fatalf("ehr-other: %+v", td)
		}
		ob := store.Outbox()
		// The queue of ehr-main holds ds-d1 only (the consent's own Bundle
		// went there too: drain it first).
		l := leaseOne(t, ob, "ehr-main")
		for l.Message.RecordID != "ds-d1" {
			if err := ob.Ack(ctx, l); err != nil {
				t.Fatal(err)
			}
			l = leaseOne(t, ob, "ehr-main")
		}
		if td := targetOf(t, deliveryReport(t, url), "ehr-main"); td.State != httpapi.DeliveryInFlight || td.LeaseDeadline == nil {
			t.Fatalf("leased: %+v", td)
		}
		retryAt := time.Now().Add(time.Hour).Truncate(time.Millisecond)
		if err := ob.Retry(ctx, l, retryAt, kap.Attempt{At: time.Now(), Status: 503, Error: "HTTP 503", RetryAfter: time.Minute}); err != nil {
			t.Fatal(err)
		}
		td := targetOf(t, deliveryReport(t, url), "ehr-main")
		if td.State != httpapi.DeliveryRetrying || td.Attempts != 1 || td.NextAttempt == nil || !td.NextAttempt.Equal(retryAt) ||
			td.LastAttempt == nil || td.LastAttempt.Status != 503 || td.LastAttempt.RetryAfter != "1m0s" {
			t.Fatalf("retrying: %+v (want next attempt %v)", td, retryAt)
		}
		// A lease given back after Retry is fenced.
		if err := ob.Release(ctx, l); kap.ErrorCode(err) != kap.ECONFLICT {
			t.Fatalf("release of a retried lease: %v", err)
		}
		// An hour later it is due: lease it and dead-letter it with the
		// target's OperationOutcome.
		clock.Advance(2 * time.Hour)
		l = leaseOne(t, ob, "ehr-main")
		if l.Message.RecordID != "ds-d1" {
			t.Fatalf("leased %s, want ds-d1", l.Message.ID)
		}
		outcome := json.RawMessage(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"Observation.code: unknown code"}]}`)
		dead := "target refused the bundle (HTTP 422)"
		if err := ob.DeadLetter(ctx, l, dead, kap.Attempt{At: clock.Now(), Status: 422, OperationOutcome: outcome}); err != nil {
			t.Fatal(err)
		}
		td = targetOf(t, deliveryReport(t, url), "ehr-main")
		if td.State != httpapi.DeliveryDeadLettered || td.Reason != dead || td.DeadAt == nil || td.Attempts != 2 ||
			td.LastAttempt == nil || !bytes.Contains(td.LastAttempt.OperationOutcome, []byte("unknown code")) {
			t.Fatalf("dead-lettered: %+v", td)
		}
		for _, rd := range td.Resources {
			if rd.State != httpapi.DeliveryDeadLettered {
				t.Fatalf("resource of a dead letter: %+v", rd)
			}
		}
		// NDJSON: delivered. The worker writes the ledger, then acks.
		l = leaseOne(t, ob, "ndjson")
		for l.Message.RecordID != "ds-d1" {
			if err := ob.Ack(ctx, l); err != nil {
				t.Fatal(err)
			}
			l = leaseOne(t, ob, "ndjson")
		}
		for i, ref := range l.Message.Resources {
			state := kap.LedgerConfirmed
			if i == 0 {
				state = kap.LedgerUnknown // the write of the first resource timed out
			}
			e := kap.LedgerEntry{LedgerKey: kap.LedgerKey{Tenant: "clinic-a", Target: "ndjson", ResourceType: ref.Type,
				Identifier: ref.System + "|" + ref.Value}, TargetID: fmt.Sprint("t", i), VersionID: "1", State: state}
			if err := store.Ledger().Put(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		if err := ob.Ack(ctx, l); err != nil {
			t.Fatal(err)
		}
		td = targetOf(t, deliveryReport(t, url), "ndjson")
		if td.State != httpapi.DeliveryDelivered || len(td.Resources) != len(l.Message.Resources) {
			t.Fatalf("delivered: %+v", td)
		}
		for i, rd := range td.Resources {
			want := httpapi.DeliveryDelivered
			if i == 0 {
				want = httpapi.DeliveryUnknown
			}
			if rd.State != want || rd.TargetID != fmt.Sprint("t", i) || rd.VersionID != "1" || rd.UpdatedAt == nil {
				t.Fatalf("resource %d: %+v, want %s", i, rd, want)
			}
		}
		// Version 2 is queued and acknowledged without any write reaching
		// the ledger (the target's profile took nothing): the ledger's
		// entries are version 1's, so version 2 is not-sent, and version
		// 1 stays delivered.
		if r := call(t, "PUT", base+"dosing-sessions/ds-d1", dosing(t, "ds-d1", "second")); r.status != http.StatusCreated {
			t.Fatalf("version 2: %v", r)
		}
		if td := targetOf(t, deliveryReport(t, url), "ndjson"); td.State != httpapi.DeliveryQueued || td.Resources[1].TargetID != "t1" {
			t.Fatalf("version 2 queued: %+v", td)
		}
		l = leaseOne(t, ob, "ndjson")
		if l.Message.Version != 2 {
			t.Fatalf("leased %s, want version 2", l.Message.ID)
		}
		if err := ob.Ack(ctx, l); err != nil {
			t.Fatal(err)
		}
		td = targetOf(t, deliveryReport(t, url), "ndjson")
		if td.State != httpapi.DeliveryNotSent || td.Resources[1].State != httpapi.DeliveryNotSent || td.Resources[1].TargetID != "t1" {
			t.Fatalf("version 2 with only version 1 in the ledger: %+v", td)
		}
		if td := targetOf(t, deliveryReport(t, url+"?version=1"), "ndjson"); td.State != httpapi.DeliveryDelivered || td.Resources[1].State != httpapi.DeliveryDelivered {
			t.Fatalf("version 1: %+v", td)
		}
		// Unknown ids, other tenants, ambiguous ids.
		wantOutcome(t, call(t, "GET", base+"records/nope/deliveries", nil), http.StatusNotFound)
		wantOutcome(t, call(t, "GET", base+"dosing-sessions/ds-d1/deliveries?version=9", nil), http.StatusNotFound)
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("X-API-Key", "key-b")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("other tenant: %d", resp.StatusCode)
		}
	})
}

func TestTargetPolicies(t *testing.T) {
	no := false
	cfg := config.Config{
		Targets: []config.Target{{Name: "ndjson", Type: "ndjson"}, {Name: "ehr", Type: "fhir"},
			{Name: "lab", Type: "fhir", RequireConsent: &no}},
		Tenants: []config.Tenant{{Name: "a", Targets: []string{"ndjson", "ehr", "lab"}}, {Name: "b", Targets: []string{"ndjson"}}},
	}
	got := fmt.Sprint(httpapi.TargetPolicies(cfg))
	if want := "map[a:[{ndjson false} {ehr true} {lab false}] b:[{ndjson false}]]"; got != want {
		t.Fatalf("policies = %s, want %s", got, want)
	}
}

// The records pseudo-collection spans every kind: a credential needs the
// scopes of every kind's resource types (or of the collection it names).
func TestRecordsPseudoCollectionScopes(t *testing.T) {
	srv := apiServer(t, apiStores["bolt"](t, nil), func(c *httpapi.Config) {
		c.Keys = nil
		c.Tenants = []config.Tenant{{Name: "clinic-a", APIKeys: []config.APIKey{
			{Name: "all", SHA256: httpapi.HashKey(apiKey), Scopes: []string{"system/*.cruds"}},
			{Name: "obs", SHA256: httpapi.HashKey("key-obs"), Scopes: []string{"system/Observation.rs"}},
		}}}
	})
	if r := call(t, "POST", srv.URL+"/kap/v1/assessments", jsonOf(t, readRecord(t, "14-assessment-c001-phq9-baseline.json"))); r.status != http.StatusCreated {
		t.Fatalf("post: %v", r)
	}
	if r := call(t, "GET", srv.URL+"/kap/v1/records?client=c001", nil); r.status != http.StatusOK {
		t.Fatalf("full scopes: %v", r)
	}
	obs := func(path string) reply {
		return call(t, "GET", srv.URL+path, nil, "X-API-Key", "key-obs")
	}
	wantOutcome(t, obs("/kap/v1/records?client=c001"), http.StatusForbidden, "system/Patient")
	wantOutcome(t, obs("/kap/v1/records/phq9-c001-baseline/deliveries"), http.StatusForbidden, "system/Patient")
	if r := obs("/kap/v1/assessments?client=c001"); r.status != http.StatusOK {
		t.Fatalf("assessments with Observation scope: %v", r)
	}
	var id string
	if m := readRecord(t, "14-assessment-c001-phq9-baseline.json"); m != nil {
		id = m["id"].(string)
	}
	if r := obs("/kap/v1/records/" + id + "/deliveries?collection=assessments"); r.status != http.StatusOK {
		t.Fatalf("deliveries of an assessment with Observation scope: %v", r)
	}
	wantOutcome(t, obs("/kap/v1/records/"+id+"/deliveries?collection=clients"), http.StatusForbidden, "system/Patient")
}
