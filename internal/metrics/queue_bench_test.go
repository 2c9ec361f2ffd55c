package metrics_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
	"github.com/kapbridge/kap/internal/metrics"
)

// BenchmarkQueueCollect times one uncached scrape of the queue collector
// (Outbox.Stats of 3 targets) with n messages queued for one target across
// 10 tenants: what a scrape costs the store once per TTL.
func BenchmarkQueueCollect(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("bolt/%d", n), func(b *testing.B) {
			s, err := bolt.Open(filepath.Join(b.TempDir(), "kap.db"), bolt.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			benchCollect(b, s, n)
		})
		b.Run(fmt.Sprintf("redis/%d", n), func(b *testing.B) {
			srv := redistest.Start(b, redistest.Options{})
			c := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
			defer c.Close()
			benchCollect(b, kapredis.New(c, kapredis.Options{}), n)
		})
	}
}

func benchCollect(b *testing.B, s kap.Store, n int) {
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	const batch = 1000
	for i := 0; i < n; i += batch {
		var msgs []kap.OutboxMessage
		for j := i; j < i+batch && j < n; j++ {
			msgs = append(msgs, kap.OutboxMessage{ID: fmt.Sprintf("Session/s%d/1", j), Tenant: fmt.Sprintf("t%d", j%10), Target: "ehr",
				ClientID: fmt.Sprintf("c%d", j%500), Kind: "session", RecordID: fmt.Sprintf("s%d", j), Version: 1,
				EnqueuedAt: t0.Add(time.Duration(j) * time.Millisecond)})
		}
		if err := s.Outbox().Enqueue(ctx, msgs...); err != nil {
			b.Fatal(err)
		}
	}
	// A clock that moves past the TTL at every scrape: every Collect reads.
	now := time.Now()
	clock := func() time.Time { now = now.Add(time.Minute); return now }
	c := metrics.NewQueueCollector(s.Outbox(), []string{"ehr", "payer", "idle"}, metrics.QueueOptions{Now: clock, Timeout: time.Minute})
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	b.ResetTimer()
	for b.Loop() {
		mfs, err := reg.Gather()
		if err != nil || len(mfs) != 4 {
			b.Fatalf("gather: %d families, %v", len(mfs), err)
		}
	}
}
