// Package redis implements the durable state layer (kap.Store) on Redis with
// go-redis v9, for several gateway replicas sharing one Redis (standalone,
// Sentinel or Cluster through a UniversalClient).
//
// Every key of a tenant carries the hash tag {t:<tenant>}, so a record, its
// indexes and its outbox entries live in one slot and are written by one Lua
// script, atomically, on Cluster too. The scripts derive the keys they touch
// from the tenant prefix; they all hash to the slot of KEYS[1]. The only keys
// outside a tenant's slot are the per-target tenant registry (kap:obt:<target>),
// the cache and the rate-limit buckets. See docs/durability.md.
package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	kap "github.com/kapbridge/kap"
	goredis "github.com/redis/go-redis/v9"
)

// Options configure the store.
type Options struct {
	// Now is the clock used for everything the store timestamps and
	// expires logically (retry times, cache and idempotency TTLs, token
	// buckets); nil means time.Now. Lease expiry is measured by Redis
	// (the idle time of a stream entry).
	Now func() time.Time
	// LeaseTTL is how long a leased message stays with its worker before
	// another worker may reclaim it; default 1 minute. All replicas must
	// use the same value.
	LeaseTTL time.Duration
	// ReservationTTL is how long an in-flight Idempotency-Key reservation
	// holds; default 1 minute.
	ReservationTTL time.Duration
	// Prefix starts every key; default "kap".
	Prefix string
	// Consumer names this replica in the stream consumer groups; default
	// hostname-pid-random.
	Consumer string
}

// Store implements kap.Store on Redis.
type Store struct {
	c    goredis.UniversalClient
	opt  Options
	rot  atomic.Uint64
	owns bool
}

var _ kap.Store = (*Store)(nil)

// New returns a store on c. Close does not close c.
func New(c goredis.UniversalClient, opt Options) *Store {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.LeaseTTL <= 0 {
		opt.LeaseTTL = time.Minute
	}
	if opt.ReservationTTL <= 0 {
		opt.ReservationTTL = time.Minute
	}
	if opt.Prefix == "" {
		opt.Prefix = "kap"
	}
	if opt.Consumer == "" {
		host, _ := os.Hostname()
		var b [4]byte
		rand.Read(b[:])
		opt.Consumer = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	return &Store{c: c, opt: opt}
}

// Dial connects to the addresses of uo (one address: standalone; with
// MasterName: Sentinel; several: Cluster), checks the connection and returns
// a store that closes the client on Close. Returns EUNAVAILABLE when Redis
// does not answer.
func Dial(ctx context.Context, uo *goredis.UniversalOptions, opt Options) (*Store, error) {
	c := goredis.NewUniversalClient(uo)
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, &kap.Error{Code: kap.EUNAVAILABLE, Message: "redis does not answer", Err: err}
	}
	s := New(c, opt)
	s.owns = true
	return s, nil
}

// Close closes the client if Dial created it.
func (s *Store) Close() error {
	if s.owns {
		return s.c.Close()
	}
	return nil
}

// Records returns the record store.
func (s *Store) Records() kap.RecordStore { return (*records)(s) }

// Outbox returns the outbox.
func (s *Store) Outbox() kap.Outbox { return (*outbox)(s) }

// Ledger returns the delivery ledger.
func (s *Store) Ledger() kap.Ledger { return (*ledger)(s) }

// Cache returns the cache.
func (s *Store) Cache() kap.Cache { return (*cache)(s) }

// Idempotency returns the idempotency keys.
func (s *Store) Idempotency() kap.Idempotency { return (*idem)(s) }

// RateLimiter returns the shared token buckets.
func (s *Store) RateLimiter() kap.RateLimiter { return (*limiter)(s) }

// tp is the key prefix of a tenant: "kap:{t:<tenant>}:".
func (s *Store) tp(tenant string) string { return s.opt.Prefix + ":{t:" + tenant + "}:" }

// obp is the key prefix of a tenant's outbox for target.
func (s *Store) obp(tenant, target string) string { return s.tp(tenant) + "ob:" + target + ":" }

// targetTenants is the set of tenants that queued messages for target.
func (s *Store) targetTenants(target string) string { return s.opt.Prefix + ":obt:" + target }

func wrap(err error) error {
	var ke *kap.Error
	if err == nil || errors.As(err, &ke) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &kap.Error{Code: kap.EUNAVAILABLE, Message: "request cancelled or timed out", Err: err}
	}
	return &kap.Error{Code: kap.EUNAVAILABLE, Message: "redis is unavailable", Err: err}
}

func ms(t time.Time) int64 { return t.UnixMilli() }
