package bolt_test

import (
	"path/filepath"
	"testing"

	kap "github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/storetest"
)

func factory(t testing.TB, cfg storetest.Config) kap.Store {
	s, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{Now: cfg.Now, LeaseTTL: cfg.LeaseTTL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
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
