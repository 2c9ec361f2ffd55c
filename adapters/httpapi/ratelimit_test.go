package httpapi_test

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strconv"
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
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
)

// TestRateLimitSharedAcrossReplicas runs two gateways on one real Redis:
// a credential's bucket is shared, so its burst is spent across both, and
// another credential has its own bucket.
func TestRateLimitSharedAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("needs redis-server")
	}
	srv := redistest.Start(t, redistest.Options{AppendFsync: "no"})
	const burst = 4
	keyA, keyB := "kap_rl_key_a", "kap_rl_key_b"
	tenants := []config.Tenant{{Name: "clinic-a",
		APIKeys: []config.APIKey{
			{Name: "a", SHA256: httpapi.HashKey(keyA)},
			{Name: "b", SHA256: httpapi.HashKey(keyB)},
		},
		// One token per 100 s: nothing refills during the test.
		RateLimit: &config.RateLimit{PerSecond: 0.01, Burst: burst}}}
	var gw [2]*secured
	for i := range gw {
		c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{srv.Addr}})
		t.Cleanup(func() { c.Close() })
		gw[i] = newSecured(t, kapredis.New(c, kapredis.Options{}), httpapi.Config{Tenants: tenants})
	}
	allowed, limited := 0, [2]int{}
	for i := range 10 {
		g := gw[i%2]
		r := secCall(t, "GET", g.url+"/kap/v1/clients/c001", nil, "X-API-Key", keyA)
		switch r.status {
		case 404: // allowed: no such record
			allowed++
		case 429:
			limited[i%2]++
			secExpect(t, "429", r, 429, "too many requests")
			ra, err := strconv.Atoi(r.header.Get("Retry-After"))
			if err != nil || ra < 1 || ra > 100 {
				t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
			}
			if !strings.Contains(string(r.body), `"code":"throttled"`) {
				t.Errorf("issue code: %s", r.body)
			}
		default:
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	if allowed != burst || limited[0] == 0 || limited[1] == 0 {
		t.Fatalf("allowed %d (want %d), limited by gateway %v", allowed, burst, limited)
	}
	// Another credential of the same tenant has its own bucket.
	if r := secCall(t, "GET", gw[1].url+"/kap/v1/clients/c001", nil, "X-API-Key", keyB); r.status != 404 {
		t.Fatalf("key b: %d %s", r.status, r.body)
	}
	// Refused requests are audited too.
	if !strings.Contains(gw[0].audit.String(), `"outcomeDesc":"HTTP 429`) {
		t.Errorf("no audit event for a 429: %s", gw[0].audit.String())
	}
}

// BenchmarkGuardedRequest is one authenticated, rate-limited, scope-checked
// and audited GET (answered 404) through the handler, on Redis and on the
// embedded store.
func BenchmarkGuardedRequest(b *testing.B) {
	for _, name := range []string{"bolt", "redis"} {
		b.Run(name, func(b *testing.B) {
			var store kap.Store
			if name == "redis" {
				if testing.Short() {
					b.Skip("needs redis-server")
				}
				srv := redistest.Start(b, redistest.Options{AppendFsync: "no"})
				c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{srv.Addr}})
				b.Cleanup(func() { c.Close() })
				store = kapredis.New(c, kapredis.Options{})
			} else {
				s, err := bolt.Open(filepath.Join(b.TempDir(), "kap.db"), bolt.Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { s.Close() })
				store = s
			}
			h, err := httpapi.New(httpapi.Config{Store: store, Codec: fhir.MustCodec(), Audit: io.Discard,
				Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
				Tenants: []config.Tenant{{Name: "clinic-a", APIKeys: []config.APIKey{{Name: "k", SHA256: httpapi.HashKey("kap_bench")}},
					RateLimit: &config.RateLimit{PerSecond: 1e9, Burst: 1 << 30}}}})
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				req := httptest.NewRequest("GET", "/kap/v1/clients/c001", nil)
				req.Header.Set("X-API-Key", "kap_bench")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != 404 {
					b.Fatalf("status %d", w.Code)
				}
			}
		})
	}
}

// TestRetryAfterRoundsUp: with 0.4 tokens a second, an empty bucket refills
// in 2.5 s, which Retry-After gives as 3; after 2.5 s the request passes.
func TestRetryAfterRoundsUp(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	store, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	key := "kap_retry_key"
	s := newSecured(t, store, httpapi.Config{Tenants: []config.Tenant{{Name: "clinic-a",
		APIKeys:   []config.APIKey{{Name: "k", SHA256: httpapi.HashKey(key)}},
		RateLimit: &config.RateLimit{PerSecond: 0.4, Burst: 1}}}})
	get := func() secReply { return secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, "X-API-Key", key) }
	secExpect(t, "first", get(), 404, "")
	r := get()
	secExpect(t, "second", r, 429, "retry after 3 s")
	if ra := r.header.Get("Retry-After"); ra != "3" {
		t.Fatalf("Retry-After %q, want 3", ra)
	}
	mu.Lock()
	now = now.Add(2500 * time.Millisecond)
	mu.Unlock()
	secExpect(t, "after the wait", get(), 404, "")
}
