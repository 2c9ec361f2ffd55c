package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	goredis "github.com/redis/go-redis/v9"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
	"github.com/kapbridge/kap/internal/metrics"
)

// clock is a settable clock shared by the store and the collector.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// countingOutbox counts Stats calls and can block them until the context
// ends (a store that does not answer).
type countingOutbox struct {
	kap.Outbox
	calls atomic.Int64
	hang  atomic.Bool
}

func (o *countingOutbox) Stats(ctx context.Context, target string) (kap.OutboxStats, error) {
	o.calls.Add(1)
	if o.hang.Load() {
		<-ctx.Done()
		return kap.OutboxStats{}, &kap.Error{Code: kap.EUNAVAILABLE, Message: "store timeout", Err: ctx.Err()}
	}
	return o.Outbox.Stats(ctx, target)
}

var sampleRE = regexp.MustCompile(`^(kapbridge_[a-z_]+)\{([^}]*)\} (\S+)$`)

// scrape GETs the exposition and returns the kapbridge_ samples by
// "name{labels}".
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out[m[1]+"{"+m[2]+"}"] = v
	}
	return out
}

// TestQueueCollector scrapes the collector over a real bbolt store and a
// real Redis.
func TestQueueCollector(t *testing.T) {
	t.Run("bolt", func(t *testing.T) {
		clk := &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
		store, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		testQueueCollector(t, store, clk)
	})
	t.Run("redis", func(t *testing.T) {
		if testing.Short() {
			t.Skip("needs redis-server")
		}
		srv := redistest.Start(t, redistest.Options{})
		c := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
		defer c.Close()
		clk := &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
		testQueueCollector(t, kapredis.New(c, kapredis.Options{Now: clk.Now}), clk)
	})
}

func testQueueCollector(t *testing.T, store kap.Store, clk *clock) {
	ctx := context.Background()
	ob := &countingOutbox{Outbox: store.Outbox()}

	// ehr: two tenants, three clients, the oldest enqueued first; payer:
	// one message, dead-lettered.
	t0 := clk.Now()
	msg := func(tenant, target, client string, i int, at time.Time) kap.OutboxMessage {
		return kap.OutboxMessage{ID: fmt.Sprintf("Session/s%d/1", i), Tenant: tenant, Target: target, ClientID: client,
			Kind: "session", RecordID: fmt.Sprintf("s%d", i), Version: 1, EnqueuedAt: at}
	}
	if err := ob.Enqueue(ctx, msg("clinic-a", "ehr", "client-secret-1", 1, t0),
		msg("clinic-a", "ehr", "client-secret-1", 2, t0.Add(time.Second)),
		msg("clinic-a", "ehr", "client-secret-2", 3, t0.Add(2*time.Second))); err != nil {
		t.Fatal(err)
	}
	if err := ob.Enqueue(ctx, msg("clinic-b", "ehr", "client-secret-3", 4, t0.Add(3*time.Second)),
		msg("clinic-b", "payer", "client-secret-3", 5, t0.Add(4*time.Second))); err != nil {
		t.Fatal(err)
	}
	leases, err := ob.Lease(ctx, "payer", 1)
	if err != nil || len(leases) != 1 {
		t.Fatalf("lease = %v %v", leases, err)
	}
	if err := ob.DeadLetter(ctx, leases[0], "rejected", kap.Attempt{At: clk.Now(), Status: 400}); err != nil {
		t.Fatal(err)
	}
	clk.Add(90 * time.Second)

	m := metrics.New()
	if err := m.RegisterQueue(ob, []string{"ehr", "payer", "idle"}, metrics.QueueOptions{Now: clk.Now, TTL: 5 * time.Second, Timeout: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	defer srv.Close()

	got := scrape(t, srv.URL)
	want := map[string]float64{
		`kapbridge_queue_depth{target="ehr"}`:               4,
		`kapbridge_queue_oldest_age_seconds{target="ehr"}`:  clk.Now().Sub(t0).Seconds(),
		`kapbridge_dead_letters{target="ehr"}`:              0,
		`kapbridge_queue_depth{target="payer"}`:             0,
		`kapbridge_dead_letters{target="payer"}`:            1,
		`kapbridge_queue_depth{target="idle"}`:              0,
		`kapbridge_queue_oldest_age_seconds{target="idle"}`: 0,
		`kapbridge_queue_stats_up{target="ehr"}`:            1,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	for k := range got {
		if strings.Contains(k, "clinic-") || strings.Contains(k, "client-secret") || strings.Contains(k, "tenant") {
			t.Errorf("a label names a tenant or a client: %s", k)
		}
	}

	// A scrape storm within the TTL reads the store once per target.
	calls := ob.calls.Load()
	if calls != 3 {
		t.Errorf("first scrape: %d Stats calls, want 3", calls)
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); scrape(t, srv.URL) }()
	}
	wg.Wait()
	if n := ob.calls.Load(); n != calls {
		t.Errorf("20 scrapes within the TTL: %d more Stats calls, want 0", n-calls)
	}

	// After the TTL it reads again and sees the change.
	if err := ob.Enqueue(ctx, msg("clinic-b", "idle", "client-secret-3", 6, clk.Now())); err != nil {
		t.Fatal(err)
	}
	clk.Add(6 * time.Second)
	got = scrape(t, srv.URL)
	if ob.calls.Load() != calls+3 || got[`kapbridge_queue_depth{target="idle"}`] != 1 ||
		got[`kapbridge_queue_oldest_age_seconds{target="idle"}`] != 6 {
		t.Errorf("after the TTL: %d calls, idle depth %v age %v", ob.calls.Load()-calls,
			got[`kapbridge_queue_depth{target="idle"}`], got[`kapbridge_queue_oldest_age_seconds{target="idle"}`])
	}

	// A store that does not answer: the scrape still succeeds, bounded by
	// the timeout, with up 0 and no stale values.
	ob.hang.Store(true)
	clk.Add(6 * time.Second)
	start := time.Now()
	got = scrape(t, srv.URL)
	if el := time.Since(start); el > 30*time.Second {
		t.Errorf("scrape with a hanging store took %v", el)
	}
	if v, ok := got[`kapbridge_queue_stats_up{target="ehr"}`]; !ok || v != 0 {
		t.Errorf("up = %v %v, want 0", v, ok)
	}
	if _, ok := got[`kapbridge_queue_depth{target="ehr"}`]; ok {
		t.Error("depth exported for a failed read")
	}
}
