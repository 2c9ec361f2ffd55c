package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/internal/config"
)

// TestServeQueueMetrics runs the real gateway in the api role (no worker:
// what the API queues stays queued), posts the testdata records and scrapes
// /metrics: the queue gauges of the configured target match the outbox,
// and no kapbridge_ label names a tenant or a client.
func TestServeQueueMetrics(t *testing.T) {
	t.Setenv("KAPBRIDGE_METRICS_TOKEN", "")
	dir := t.TempDir()
	m := &serveMain{cfg: serveConfig{Config: config.Config{Role: config.RoleAPI}, Addr: "127.0.0.1:0", DataDir: dir,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}}
	if err := m.Open(); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	keyData, err := os.ReadFile(filepath.Join(dir, bootstrapKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	c := &httpClient{t: t, base: "http://" + m.Addr(), key: strings.TrimSpace(string(keyData))}
	recs := loadRecords(t)
	for _, r := range recs {
		if resp := c.post("/kap/v1/"+httpapi.CollectionOf(r.kind), r.data); resp.status != http.StatusCreated {
			t.Fatalf("%s: status %d: %s", r.file, resp.status, resp.body)
		}
	}
	target := m.cfg.Config.Targets[0].Name
	st, err := m.store.Outbox().Stats(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	if st.Depth == 0 || st.Oldest.IsZero() {
		t.Fatalf("nothing queued for %s: %+v", target, st)
	}

	resp := c.do("GET", "/metrics", "", nil)
	if resp.status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.status, resp.body)
	}
	sample := regexp.MustCompile(`(?m)^(kapbridge_[a-z_]+)\{target="([^"]*)"\} (\S+)$`)
	got := map[string]float64{}
	for _, s := range sample.FindAllStringSubmatch(string(resp.body), -1) {
		if s[2] != target {
			continue
		}
		v, err := strconv.ParseFloat(s[3], 64)
		if err != nil {
			t.Fatal(err)
		}
		got[s[1]] = v
	}
	if got["kapbridge_queue_depth"] != float64(st.Depth) || got["kapbridge_dead_letters"] != float64(st.DeadLetters) ||
		got["kapbridge_queue_stats_up"] != 1 {
		t.Errorf("gauges of %s = %v, outbox %+v", target, got, st)
	}
	// The age is read at scrape time: between 0 and the test's duration.
	if age, ok := got["kapbridge_queue_oldest_age_seconds"]; !ok || age < 0 || age > time.Since(st.Oldest).Seconds()+1 {
		t.Errorf("oldest age = %v (present %v), oldest enqueued %v ago", age, ok, time.Since(st.Oldest))
	}
	phi := append(phiStrings(t, recs), defaultTenant)
	for _, line := range strings.Split(string(resp.body), "\n") {
		if !strings.HasPrefix(line, "kapbridge_") {
			continue
		}
		labels, _, _ := strings.Cut(line, " ")
		for _, p := range phi {
			if p != "" && strings.Contains(labels, p) {
				t.Errorf("a metric label names %q: %s", p, line)
			}
		}
	}
}
