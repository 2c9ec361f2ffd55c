package redis_test

import (
	"testing"

	kap "github.com/kapbridge/kap"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
	"github.com/kapbridge/kap/adapters/storetest"
	goredis "github.com/redis/go-redis/v9"
)

func factory(t testing.TB, cfg storetest.Config) kap.Store {
	srv := redistest.Start(t, redistest.Options{})
	c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { c.Close() })
	return kapredis.New(c, kapredis.Options{Now: cfg.Now, LeaseTTL: cfg.LeaseTTL})
}

func TestRecordStore(t *testing.T) { storetest.RunRecordStore(t, factory) }
func TestOutbox(t *testing.T)      { storetest.RunOutbox(t, factory) }
func TestLedger(t *testing.T)      { storetest.RunLedger(t, factory) }
func TestCache(t *testing.T)       { storetest.RunCache(t, factory) }
func TestIdempotency(t *testing.T) { storetest.RunIdempotency(t, factory) }
func TestRateLimit(t *testing.T)   { storetest.RunRateLimit(t, factory) }

func BenchmarkEnqueue(b *testing.B)  { storetest.BenchEnqueue(b, factory) }
func BenchmarkPut(b *testing.B)      { storetest.BenchPut(b, factory) }
func BenchmarkLeaseAck(b *testing.B) { storetest.BenchLeaseAck(b, factory) }

// everysec trades the last second of writes on a machine crash for speed;
// these benchmarks show the cost of appendfsync always.
func factoryEverysec(t testing.TB, cfg storetest.Config) kap.Store {
	srv := redistest.Start(t, redistest.Options{AppendFsync: "everysec"})
	c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { c.Close() })
	return kapredis.New(c, kapredis.Options{Now: cfg.Now, LeaseTTL: cfg.LeaseTTL})
}

func BenchmarkEnqueueEverysec(b *testing.B)  { storetest.BenchEnqueue(b, factoryEverysec) }
func BenchmarkPutEverysec(b *testing.B)      { storetest.BenchPut(b, factoryEverysec) }
func BenchmarkLeaseAckEverysec(b *testing.B) { storetest.BenchLeaseAck(b, factoryEverysec) }
