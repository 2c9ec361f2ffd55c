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
