package redis_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"testing"
	"time"

	kap "github.com/kapbridge/kap"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
	"github.com/kapbridge/kap/adapters/storetest"
	goredis "github.com/redis/go-redis/v9"
)

func fnvMod10(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32() % 10
}

// clusterClient returns a UniversalClient on the cluster's addresses; with
// several addresses it is a *goredis.ClusterClient.
func clusterClient(t testing.TB, addrs []string) goredis.UniversalClient {
	t.Helper()
	c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: addrs})
	if _, ok := c.(*goredis.ClusterClient); !ok {
		t.Fatalf("NewUniversalClient with %d addresses returned %T, want *redis.ClusterClient", len(addrs), c)
	}
	return c
}

// TestClusterContract runs the whole store contract against a real Redis
// Cluster of 3 masters and 3 replicas, through a ClusterClient. Every test
// of the suite uses its own tenants, so their keys land on different slots
// and nodes; the test checks that they did.
func TestClusterContract(t *testing.T) {
	if testing.Short() {
		t.Skip("Redis Cluster test skipped under -short")
	}
	start := time.Now()
	cl := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, Replicas: 1})
	t.Logf("cluster of %d nodes up in %v", len(cl.Nodes), time.Since(start).Round(time.Millisecond))
	factory := func(t testing.TB, cfg storetest.Config) kap.Store {
		c := clusterClient(t, cl.Addrs())
		t.Cleanup(func() { c.Close() })
		return kapredis.New(c, kapredis.Options{Now: cfg.Now, LeaseTTL: cfg.LeaseTTL})
	}
	suite := time.Now()
	storetest.RunAll(t, factory)
	t.Logf("contract suite on the cluster: %v", time.Since(suite).Round(time.Millisecond))

	// The suite's tenants must have been spread over the masters: count
	// the keys of each master.
	c := clusterClient(t, cl.Addrs())
	defer c.Close()
	cc := c.(*goredis.ClusterClient)
	var mu sync.Mutex
	perMaster := map[string]int64{}
	err := cc.ForEachMaster(context.Background(), func(ctx context.Context, m *goredis.Client) error {
		n, err := m.DBSize(ctx).Result()
		mu.Lock()
		perMaster[m.Options().Addr] = n
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for addr, n := range perMaster {
		if n == 0 {
			t.Errorf("master %s holds no keys: tenants did not spread over the slots (%v)", addr, perMaster)
		}
	}
	if len(perMaster) != 3 {
		t.Errorf("%d masters, want 3", len(perMaster))
	}
	t.Logf("keys per master: %v", perMaster)
}

// spreadTenants returns n tenant names whose slots are owned, round robin, by
// every master of the cluster, so a test over them touches all masters.
func spreadTenants(t testing.TB, addrs []string, n int) []string {
	t.Helper()
	ctx := context.Background()
	c := clusterClient(t, addrs).(*goredis.ClusterClient)
	defer c.Close()
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	owner := func(slot int64) string {
		for _, r := range slots {
			if int64(r.Start) <= slot && slot <= int64(r.End) {
				return r.Nodes[0].Addr
			}
		}
		t.Fatalf("slot %d has no owner", slot)
		return ""
	}
	var masters []string
	for _, r := range slots {
		masters = append(masters, r.Nodes[0].Addr)
	}
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries > 10000 {
			t.Fatalf("could not spread %d tenants over %v", n, masters)
		}
		ten := storetest.Uniq("clinic")
		slot, err := c.ClusterKeySlot(ctx, "kap:{t:"+ten+"}:recs").Result()
		if err != nil {
			t.Fatal(err)
		}
		if owner(slot) == masters[len(out)%len(masters)] {
			out = append(out, ten)
		}
	}
	return out
}

// TestClusterBatchAcrossSlots enqueues, in one call, messages of three
// tenants on three different masters for two targets, and puts a record
// queued for both targets: the adapter must split the batch per tenant (one
// script per slot) and the workers must find every message.
func TestClusterBatchAcrossSlots(t *testing.T) {
	if testing.Short() {
		t.Skip("Redis Cluster test skipped under -short")
	}
	cl := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	c := clusterClient(t, cl.Addrs())
	defer c.Close()
	st := kapredis.New(c, kapredis.Options{LeaseTTL: 5 * time.Second})
	ctx := context.Background()
	tens := spreadTenants(t, cl.Addrs(), 3)
	tgs := []string{storetest.Uniq("ehr"), storetest.Uniq("payer")}
	want := map[string][]kap.OutboxMessage{}
	var batch []kap.OutboxMessage
	for i := 0; i < 4; i++ {
		for j, ten := range tens {
			for _, tg := range tgs {
				// Message ids are unique across tenants: the recorder
				// counts deliveries by id.
				m := storetest.Msg(ten, tg, fmt.Sprintf("c%d", i%2), i*10+j)
				batch = append(batch, m)
				want[tg] = append(want[tg], m)
			}
		}
	}
	// Negative control: on this cluster a script that writes a key of
	// another tenant (another master) is refused, so a script of the
	// adapter that strayed out of its tenant's slot would fail here.
	stray := goredis.NewScript(`redis.call('SET', ARGV[1], 'x') return 1`)
	err := stray.Run(ctx, c, []string{"kap:{t:" + tens[0] + "}:probe"}, "kap:{t:"+tens[1]+"}:probe").Err()
	if err == nil {
		t.Fatal("a script writing another tenant's key on another master succeeded; the cluster does not catch stray keys")
	}
	t.Logf("stray key refused: %v", err)
	if err := st.Outbox().Enqueue(ctx, batch...); err != nil {
		t.Fatalf("enqueue across slots: %v", err)
	}
	r, _, err := st.Records().Put(ctx, storetest.Rec(tens[1], "Observation", "o1", "c9", "x", time.Now()), kap.PutOptions{Targets: tgs})
	if err != nil {
		t.Fatalf("put queued for two targets: %v", err)
	}
	for _, tg := range tgs {
		want[tg] = append(want[tg], kap.MessageFor(r, tg, time.Now()))
		st, err := st.Outbox().Stats(ctx, tg)
		if err != nil || st.Depth != len(want[tg]) {
			t.Fatalf("stats of %s: %+v %v, want depth %d", tg, st, err, len(want[tg]))
		}
		rec := storetest.NewRecorder()
		storetest.RunWorkers(ctx, t, kapredis.New(c, kapredis.Options{LeaseTTL: 5 * time.Second}).Outbox(), tg, 3, rec, len(want[tg]), 20*time.Second)
		rec.Check(t, want[tg])
	}
}

// TestClusterTwoGateways runs two gateways (separate ClusterClients, stores
// and worker pools) on one Redis Cluster: 2,000 records over 5 tenants (so 5
// hash slots) queued for one target while both pools deliver; one delivery
// in ten fails once and is retried. Every record must arrive exactly once,
// in order per client, never two of one client at the same time.
func TestClusterTwoGateways(t *testing.T) {
	if testing.Short() {
		t.Skip("Redis Cluster test skipped under -short")
	}
	const total, tenants, clients = 2000, 5, 40
	cl := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	tg := storetest.Uniq("ehr")
	tens := spreadTenants(t, cl.Addrs(), tenants)
	var gws [2]*kapredis.Store
	for i := range gws {
		c := clusterClient(t, cl.Addrs())
		defer c.Close()
		gws[i] = kapredis.New(c, kapredis.Options{LeaseTTL: 5 * time.Second, Consumer: fmt.Sprintf("gw%d", i)})
	}

	n, took := runTwoGateways(t, gws, tg, tens, clients, total)
	t.Logf("%d records of %d tenants delivered once each by two gateways on a 3-master cluster in %v (%d retried once)", total, tenants, took.Round(time.Millisecond), n)
}

// sentinelClient returns a UniversalClient with MasterName set: a failover
// client that asks the sentinel for the master.
func sentinelClient(t testing.TB, s *redistest.Sentinel) goredis.UniversalClient {
	t.Helper()
	c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{s.Sentinel.Addr}, MasterName: redistest.MasterName})
	if _, ok := c.(*goredis.Client); !ok {
		t.Fatalf("NewUniversalClient with MasterName returned %T, want the failover *redis.Client", c)
	}
	return c
}

// TestSentinelContract runs the whole store contract through a
// UniversalClient with MasterName against a master, a replica and a
// sentinel.
func TestSentinelContract(t *testing.T) {
	if testing.Short() {
		t.Skip("Redis Sentinel test skipped under -short")
	}
	start := time.Now()
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	t.Logf("master, replica and sentinel up in %v", time.Since(start).Round(time.Millisecond))
	factory := func(t testing.TB, cfg storetest.Config) kap.Store {
		c := sentinelClient(t, s)
		t.Cleanup(func() { c.Close() })
		return kapredis.New(c, kapredis.Options{Now: cfg.Now, LeaseTTL: cfg.LeaseTTL})
	}
	suite := time.Now()
	storetest.RunAll(t, factory)
	t.Logf("contract suite through the sentinel: %v", time.Since(suite).Round(time.Millisecond))
}

// TestSentinelFailover writes records queued for a target through the
// sentinel, delivers part of them, waits until the replica has every write
// (WAIT 1), kills the master with SIGKILL and checks that after the sentinel
// promotes the replica the same store sees every record, delivers the rest
// exactly once (none of the acked ones again) and accepts new writes.
func TestSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("Redis Sentinel test skipped under -short")
	}
	s := redistest.StartSentinel(t, redistest.SentinelOptions{DownAfter: time.Second})
	c := sentinelClient(t, s)
	defer c.Close()
	st := kapredis.New(c, kapredis.Options{LeaseTTL: time.Second})
	ctx := context.Background()
	ten, tg := storetest.Uniq("clinic"), storetest.Uniq("ehr")
	const total = 200
	var msgs []kap.OutboxMessage
	for i := 0; i < total; i++ {
		rec := storetest.Rec(ten, "Observation", fmt.Sprintf("obs-%03d", i), fmt.Sprintf("c%d", i%10), "x", time.Now())
		r, _, err := st.Records().Put(ctx, rec, kap.PutOptions{Targets: []string{tg}})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kap.MessageFor(r, tg, time.Now()))
	}
	rec := storetest.NewRecorder()
	ls, err := st.Outbox().Lease(ctx, tg, 10)
	if err != nil || len(ls) != 10 {
		t.Fatalf("lease: %d %v", len(ls), err)
	}
	for _, l := range ls {
		rec.Deliver(l.Message, nil)
		if err := st.Outbox().Ack(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	// Replication is asynchronous: only writes a replica has are safe from a
	// failover. WAIT makes sure of that here.
	if n, err := c.Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT 1: %d %v", n, err)
	}

	old := s.Master.Addr
	failStart := time.Now()
	s.Master.Kill9()
	deadline := time.Now().Add(30 * time.Second)
	for {
		addr, err := s.MasterAddr()
		if err == nil && addr == s.Replica.Addr {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sentinel did not promote the replica (master %q, was %s): %v\n%s", addr, old, err, s.Sentinel.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The client follows the sentinel to the new master; allow it a few
	// seconds to notice.
	for {
		_, err := st.Records().Get(ctx, ten, "Observation", "obs-000")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store does not answer after failover: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("failover to the replica and first answer in %v", time.Since(failStart).Round(time.Millisecond))
	for i := 0; i < total; i++ {
		if _, err := st.Records().Get(ctx, ten, "Observation", fmt.Sprintf("obs-%03d", i)); err != nil {
			t.Fatalf("record %d after failover: %v", i, err)
		}
	}
	r, created, err := st.Records().Put(ctx, storetest.Rec(ten, "Observation", "after", "c0", "y", time.Now()), kap.PutOptions{Targets: []string{tg}})
	if err != nil || !created {
		t.Fatalf("put after failover: %v %v", created, err)
	}
	msgs = append(msgs, kap.MessageFor(r, tg, time.Now()))
	storetest.RunWorkers(ctx, t, st.Outbox(), tg, 4, rec, len(msgs), 30*time.Second)
	rec.Check(t, msgs)
}
