package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kapbridge/kap/adapters/redis/redistest"
)

// BenchmarkAPIReplicas submits dosing sessions (each POST a new session of
// one of 20 tenants, 16 concurrent clients) through 1 and then 2 API
// processes of the real binary on a 3+3 Redis Cluster, no workers. It
// reports POSTs per second, latency percentiles and the API processes' peak
// RSS. On a 2-core machine the second replica shows the cost of another
// process, not a speed-up.
//
//	go test ./internal/cluster/ -run XXX -bench APIReplicas -benchtime 3000x
func BenchmarkAPIReplicas(b *testing.B) {
	cl := redistest.StartCluster(b, redistest.ClusterOptions{Masters: 3, Replicas: 1})
	cfg, keys := writeConfig(b, tenants, "http://127.0.0.1:9/fhir") // no worker: the target is never called
	url := "redis://" + strings.Join(cl.Addrs(), ",")
	apis := []*proc{startProc(b, "api-1", "api", cfg, url), startProc(b, "api-2", "api", cfg, url)}
	seqs := workload(b, tenants, 200)
	var bodies [][]byte // dosing sessions, with the tenant index
	var owner []int
	for _, sq := range seqs {
		for _, st := range sq.Steps {
			if st.Collection == "dosing-sessions" {
				bodies = append(bodies, st.Body)
				owner = append(owner, sq.Tenant)
			}
		}
	}
	var seq atomic.Int64
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			sub := newSubmitter(apis[:n], keys)
			rss := sampleRSS(apis[:n], 100*time.Millisecond)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						k := int(i) % len(bodies)
						var m map[string]any
						json.Unmarshal(bodies[k], &m)
						m["id"] = fmt.Sprintf("%s-b%d", m["id"], seq.Add(1))
						body, _ := json.Marshal(m)
						if err := sub.post(context.Background(), owner[k], step{Collection: "dosing-sessions", ID: m["id"].(string), Body: body}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			peak := rss.Stop()
			p50, p95, p99 := sub.latency()
			b.ReportMetric(float64(b.N)/el.Seconds(), "POST/s")
			b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p95.Microseconds())/1000, "p95-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
			var sum float64
			for _, v := range peak {
				sum += v
			}
			b.ReportMetric(sum/float64(n), "MiB-RSS/replica")
			b.Logf("%d POSTs through %d replica(s) in %v; retries %d; peak RSS %s", b.N, n, el.Round(time.Millisecond), sub.retries.Load(), fmtMiB(peak))
		})
	}
}
