// Package cluster_test runs the real kapbridge binary as several processes
// (two API replicas, two delivery workers) against a real Redis Cluster (3
// masters + 3 replicas) or a Sentinel-managed Redis, with the ehrtest FHIR
// server as the EHR, and kills processes and a Redis master while dosing
// sessions of 20 tenants are submitted. Afterwards every resource must be at
// the EHR exactly once, each client's last version must be what the EHR
// holds (per-client order), and nothing acknowledged may be missing.
//
//	go test ./internal/cluster/ -run TestCluster -v                 # 500 sessions
//	KAPBRIDGE_LONG=1 go test ./internal/cluster/ -run TestCluster -v -timeout 90m   # 10,000
//
// See docs/reliability.md ("Beyond one machine") for the figures.
package cluster_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
)

const tenants = 20

// long reports whether KAPBRIDGE_LONG=1 asks for the full-size runs.
func long() bool { return os.Getenv("KAPBRIDGE_LONG") == "1" }

// scenario is one run of the multi-process gateway against one Redis
// topology.
type scenario struct {
	RedisURL string
	Sessions int
	// Client opens a go-redis client on the topology (for the test's own
	// reads of the outbox).
	Client func() goredis.UniversalClient
	// Failover kills a Redis master and returns when a replica has taken
	// over.
	Failover func(t *testing.T)
}

func TestClusterScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no Redis Cluster, no FHIR server")
	}
	sessions := 500
	if long() {
		sessions = 10000
	}
	cl := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, Replicas: 1})
	run(t, scenario{
		RedisURL: "redis://" + strings.Join(cl.Addrs(), ","),
		Sessions: sessions,
		Client: func() goredis.UniversalClient {
			return goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: cl.Addrs()})
		},
		Failover: func(t *testing.T) { failoverClusterMaster(t, cl) },
	})
}

func TestSentinelScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no Redis, no FHIR server")
	}
	sessions := 200
	if long() {
		sessions = 2000
	}
	sn := redistest.StartSentinel(t, redistest.SentinelOptions{})
	run(t, scenario{
		RedisURL: "redis://" + sn.Sentinel.Addr + "?master_name=" + redistest.MasterName,
		Sessions: sessions,
		Client: func() goredis.UniversalClient {
			return goredis.NewFailoverClient(&goredis.FailoverOptions{MasterName: redistest.MasterName,
				SentinelAddrs: []string{sn.Sentinel.Addr}})
		},
		Failover: func(t *testing.T) {
			old := sn.Master.Addr
			start := time.Now()
			sn.Master.Kill9()
			deadline := time.Now().Add(60 * time.Second)
			for {
				if a, err := sn.MasterAddr(); err == nil && a != old {
					t.Logf("sentinel failed over from %s to %s in %v", old, a, time.Since(start).Round(time.Millisecond))
					return
				}
				if time.Now().After(deadline) {
					t.Errorf("the sentinel did not fail over in 60s:\n%s", sn.Sentinel.Log())
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		},
	})
}

// failoverClusterMaster kills one master with SIGKILL and waits until its
// replica has been promoted and the cluster is ok again.
func failoverClusterMaster(t *testing.T, cl *redistest.Cluster) {
	ctx := context.Background()
	var victim *redistest.Node
	for _, n := range cl.Nodes {
		c := goredis.NewClient(&goredis.Options{Addr: n.Addr})
		info, err := c.Info(ctx, "replication").Result()
		c.Close()
		if err == nil && strings.Contains(info, "role:master") {
			victim = n
			break
		}
	}
	if victim == nil {
		t.Error("no master to fail over")
		return
	}
	start := time.Now()
	victim.Kill9()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ok := 0
		masters := 0
		for _, n := range cl.Nodes {
			if n == victim {
				continue
			}
			c := goredis.NewClient(&goredis.Options{Addr: n.Addr})
			info, err := c.ClusterInfo(ctx).Result()
			repl, rerr := c.Info(ctx, "replication").Result()
			c.Close()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				ok++
			}
			if rerr == nil && strings.Contains(repl, "role:master") {
				masters++
			}
		}
		if ok == len(cl.Nodes)-1 && masters == 3 {
			t.Logf("cluster failed over from %s in %v", victim.Addr, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("the cluster did not fail over in 90s (%d nodes ok, %d masters)", ok, masters)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func run(t *testing.T, sc scenario) {
	seqs := workload(t, tenants, sc.Sessions)
	totalPosts := 0
	for _, sq := range seqs {
		totalPosts += len(sq.Steps)
	}
	t.Logf("%d dosing sessions of %d clients in %d tenants: %d POSTs", sc.Sessions, len(seqs), tenants, totalPosts)
	ehr := ehrtest.Start(t, ehrtest.Options{Mode: ehrtest.ModeTransaction})
	cfgPath, keys := writeConfig(t, tenants, ehr.URL)

	var (
		api1, api2, w1, w2 *proc
		wg                 sync.WaitGroup
	)
	startAt := time.Now()
	// Start the four processes two at a time (2 cores).
	wg.Add(2)
	go func() { defer wg.Done(); api1 = startProc(t, "api-1", "api", cfgPath, sc.RedisURL) }()
	go func() { defer wg.Done(); w1 = startProc(t, "worker-1", "worker", cfgPath, sc.RedisURL) }()
	wg.Wait()
	if t.Failed() {
		return
	}
	wg.Add(2)
	go func() { defer wg.Done(); api2 = startProc(t, "api-2", "api", cfgPath, sc.RedisURL) }()
	go func() { defer wg.Done(); w2 = startProc(t, "worker-2", "worker", cfgPath, sc.RedisURL) }()
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("4 gateway processes ready in %v", time.Since(startAt).Round(time.Millisecond))
	all := []*proc{api1, api2, w1, w2}
	defer func() {
		if t.Failed() {
			for _, p := range all {
				t.Logf("--- %s (last lines)\n%s", p.Name, p.Tail(15))
			}
		}
	}()

	rc := sc.Client()
	defer rc.Close()
	store := kapredis.New(rc, kapredis.Options{})

	rss := sampleRSS(all, 250*time.Millisecond)
	sub := newSubmitter([]*proc{api1, api2}, keys)
	ctx, cancel := context.WithTimeout(context.Background(), deadlineFor(sc.Sessions))
	defer cancel()

	var killOnce, failOnce sync.Once
	var failoverDone sync.WaitGroup
	killAt, failAt := int64(totalPosts*30/100), int64(totalPosts*55/100)
	subStart := time.Now()
	sub.run(ctx, seqs, 16, func(n int64) {
		if n >= killAt {
			killOnce.Do(func() {
				failoverDone.Add(1)
				go func() {
					defer failoverDone.Done()
					w1.Kill9()
					api1.Kill9()
					t.Logf("kill -9 %s and %s after %d of %d POSTs (%v)", w1.Name, api1.Name, n, totalPosts, time.Since(subStart).Round(time.Millisecond))
				}()
			})
		}
		if n >= failAt {
			failOnce.Do(func() {
				failoverDone.Add(1)
				go func() {
					defer failoverDone.Done()
					t.Logf("killing a Redis master after %d of %d POSTs", n, totalPosts)
					sc.Failover(t)
				}()
			})
		}
	})
	subDur := time.Since(subStart)
	failoverDone.Wait()
	if f := sub.failed(); len(f) > 0 {
		t.Fatalf("%d sequences failed; first: %s", len(f), f[0])
	}
	p50, p95, p99 := sub.latency()
	t.Logf("submitted %d POSTs in %v (%.0f POST/s, %.1f sessions/s); latency p50 %v p95 %v p99 %v; %d retried attempts %v, %d idempotent replays",
		totalPosts, subDur.Round(time.Millisecond), float64(totalPosts)/subDur.Seconds(), float64(sc.Sessions)/subDur.Seconds(),
		p50.Round(time.Microsecond), p95.Round(time.Microsecond), p99.Round(time.Microsecond), sub.retries.Load(), sub.retryReasons(), sub.replayed.Load())

	// Wait until the surviving worker has emptied the outbox (the killed
	// worker's leases expire after the store's lease TTL, 1 minute).
	waitStart := time.Now()
	var st kap.OutboxStats
	for {
		var err error
		st, err = store.Outbox().Stats(ctx, "ehr")
		if err == nil && st.Depth == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the outbox did not drain: %+v %v", st, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	total := time.Since(subStart)
	t.Logf("outbox empty %v after the last POST; %d sessions delivered end to end in %v (%.1f sessions/s)",
		time.Since(waitStart).Round(time.Millisecond), sc.Sessions, total.Round(time.Millisecond), float64(sc.Sessions)/total.Seconds())
	t.Logf("max RSS: %s", fmtMiB(rss.Stop()))
	t.Logf("CPU: api-2 %v, worker-2 %v", api2.CPU().Round(time.Millisecond), w2.CPU().Round(time.Millisecond))
	if st.DeadLetters != 0 {
		for ti := range tenants {
			dls, _ := store.Outbox().DeadLetters(ctx, tenantName(ti), "ehr", 3)
			for _, dl := range dls {
				t.Errorf("dead letter %s/%s: %s", tenantName(ti), dl.Message.ID, dl.Reason)
			}
		}
		t.Fatalf("%d dead letters", st.DeadLetters)
	}

	// Exactly once: every identifier key of every acknowledged version is
	// held by exactly one resource at the EHR, and no key is held twice.
	stats := ehr.StatsWithIdentifiers()
	want := sub.expectedKeys()
	missing, dup := 0, 0
	for k := range want {
		switch n := stats.ByIdentifier[k]; {
		case n == 0:
			if missing < 5 {
				t.Errorf("acknowledged but not at the EHR: %s", k)
			}
			missing++
		case n > 1:
			if dup < 5 {
				t.Errorf("%d resources at the EHR hold %s", n, k)
			}
			dup++
		}
	}
	for _, d := range stats.Duplicates {
		if !want[d.Key] {
			t.Errorf("duplicate at the EHR: %s x%d", d.Key, d.Count)
		}
	}
	extra := 0
	for k := range stats.ByIdentifier {
		if !want[k] {
			if extra < 5 {
				t.Logf("at the EHR, from no acknowledged version: %s", k)
			}
			extra++
		}
	}
	t.Logf("EHR: %d resources, %d identifier keys (%d expected, %d missing, %d held twice, %d not from an acknowledged version); requests %v",
		stats.Total, len(stats.ByIdentifier), len(want), missing, dup, extra, stats.Requests)
	if extra != 0 {
		t.Errorf("%d identifier keys at the EHR come from no acknowledged version", extra)
	}

	// Per-client order: each client's last version (v2, another email)
	// was posted after its sessions; the EHR must hold v2's email.
	wrong := 0
	for _, sq := range seqs {
		q := url.Values{"identifier": {sub.patient(sq.Tenant, sq.ClientID)}}
		status, b := ehr.Search("Patient", q)
		email := patientEmail(b)
		if status != 200 || email != sq.Email2 {
			if wrong < 5 {
				t.Errorf("%s client %s: the EHR's Patient has email %q (status %d), want the last version's %q",
					tenantName(sq.Tenant), sq.ClientID, email, status, sq.Email2)
			}
			wrong++
		}
	}
	if wrong == 0 {
		t.Logf("per-client order: the EHR holds the last version of all %d clients", len(seqs))
	}
}

// deadlineFor bounds a run of n sessions: generous, for a loaded 2-core
// machine.
func deadlineFor(n int) time.Duration {
	return 10*time.Minute + time.Duration(n)*150*time.Millisecond
}

func patientEmail(b map[string]any) string {
	entries, _ := b["entry"].([]any)
	if len(entries) != 1 {
		return fmt.Sprintf("<%d patients>", len(entries))
	}
	e, _ := entries[0].(map[string]any)
	r, _ := e["resource"].(map[string]any)
	tel, _ := r["telecom"].([]any)
	for _, x := range tel {
		cp, _ := x.(map[string]any)
		if cp["system"] == "email" {
			v, _ := cp["value"].(string)
			return v
		}
	}
	return ""
}
