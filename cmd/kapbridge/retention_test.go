package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/internal/config"
)

func TestRetentionOf(t *testing.T) {
	cfg := config.Config{Tenants: []config.Tenant{{Name: "clinic-a"}, {Name: "clinic-b"}},
		Targets: []config.Target{{Name: "ehr"}, {Name: "ndjson"}}}
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == retentionEnv {
				return v
			}
			return ""
		}
	}
	r, on, err := retentionOf(cfg, env(""))
	if err != nil || !on || r.Policy.MaxAge != 7*365*24*time.Hour || r.Policy.MaxVersions != 0 ||
		fmt.Sprint(r.Tenants) != "[clinic-a clinic-b]" || fmt.Sprint(r.Policy.KeepQueuedFor) != "[ehr ndjson]" {
		t.Fatalf("default retention %+v %v %v", r, on, err)
	}
	if r, on, err := retentionOf(cfg, env("30")); err != nil || !on || r.Policy.MaxAge != 30*24*time.Hour {
		t.Fatalf("30 days: %+v %v %v", r, on, err)
	}
	if _, on, err := retentionOf(cfg, env("0")); err != nil || on {
		t.Fatalf("0 days: on=%v %v, want pruning off", on, err)
	}
	for _, bad := range []string{"-1", "ten", "1e3", "99999999"} {
		if _, _, err := retentionOf(cfg, env(bad)); err == nil || !strings.Contains(err.Error(), retentionEnv) {
			t.Fatalf("%q: %v, want an error naming %s", bad, err, retentionEnv)
		}
	}
}

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// The pruning loop removes old versions of every tenant on its interval,
// never the latest and never one still queued or dead-lettered, and stops.
func TestRetentionLoopPrunes(t *testing.T) {
	clock := &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	store, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ctx := context.Background()
	put := func(tenant, id, content string, targets ...string) {
		t.Helper()
		_, _, err := store.Records().Put(ctx, kap.StoredRecord{Tenant: tenant, Kind: "DosingSession", ID: id, ClientID: "c1",
			ContentHash: content, Record: []byte(`{}`)}, kap.PutOptions{Targets: targets})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{"a", "b", "c"} {
		put("clinic-a", "ds-1", c)
		put("clinic-b", "ds-2", c)
		put("clinic-b", "ds-3", c, "ehr") // queued for ehr: kept
	}
	clock.Advance(10 * 24 * time.Hour)
	r := retention{Tenants: []string{"clinic-a", "clinic-b"}, Interval: 10 * time.Millisecond, First: time.Millisecond,
		Policy: kap.RetentionPolicy{MaxAge: 24 * time.Hour, KeepQueuedFor: []string{"ehr"}}}
	run := startRetention(ctx, store, r, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer run.stop()
	history := func(tenant, id string) string {
		h, err := store.Records().History(ctx, tenant, "DosingSession", id)
		if err != nil {
			t.Fatal(err)
		}
		var vs []int
		for _, v := range h {
			vs = append(vs, v.Version)
		}
		return fmt.Sprint(vs)
	}
	deadline := time.Now().Add(time.Minute)
	for history("clinic-a", "ds-1") != "[3]" || history("clinic-b", "ds-2") != "[3]" {
		if time.Now().After(deadline) {
			t.Fatalf("not pruned: clinic-a %s, clinic-b %s", history("clinic-a", "ds-1"), history("clinic-b", "ds-2"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if h := history("clinic-b", "ds-3"); h != "[3 2 1]" {
		t.Fatalf("queued versions pruned: %s", h)
	}
	// New old versions are pruned by a later run of the loop.
	put("clinic-a", "ds-1", "d")
	clock.Advance(10 * 24 * time.Hour)
	for history("clinic-a", "ds-1") != "[4]" {
		if time.Now().After(deadline) {
			t.Fatalf("not pruned by a later run: %s", history("clinic-a", "ds-1"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	run.stop()
	run.stop() // idempotent wait
	var nilRun *retentionRun
	nilRun.stop()
}
