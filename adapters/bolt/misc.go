package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"sync"
	"time"

	kap "github.com/kapbridge/kap"
	bbolt "go.etcd.io/bbolt"
)

type ledger Store

func ledgerKey(k kap.LedgerKey) []byte {
	return key(str(k.Tenant), str(k.Target), str(k.ResourceType), str(k.Identifier))
}

func (l *ledger) Get(ctx context.Context, k kap.LedgerKey) (kap.LedgerEntry, error) {
	if err := kap.ValidateLedgerKey(k); err != nil {
		return kap.LedgerEntry{}, err
	}
	var e kap.LedgerEntry
	err := (*Store)(l).view(ctx, func(tx *bbolt.Tx) error {
		found, err := getJSON(tx.Bucket(bLedger), ledgerKey(k), &e)
		if err == nil && !found {
			err = kap.Errorf(kap.ENOTFOUND, "no ledger entry for that %s at %s", k.ResourceType, k.Target)
		}
		return err
	})
	return e, err
}

func (l *ledger) Put(ctx context.Context, e kap.LedgerEntry) error {
	if err := kap.ValidateLedgerKey(e.LedgerKey); err != nil {
		return err
	}
	if !e.State.Valid() {
		return kap.Errorf(kap.EINVALID, "state must be sent, confirmed, failed or unknown")
	}
	s := (*Store)(l)
	return s.update(ctx, func(tx *bbolt.Tx) error {
		e.UpdatedAt = s.opt.Now()
		return putJSON(tx.Bucket(bLedger), ledgerKey(e.LedgerKey), e)
	})
}

func (l *ledger) PutAll(ctx context.Context, entries []kap.LedgerEntry, opt kap.LedgerPutOptions) error {
	for i, e := range entries {
		if err := kap.ValidateLedgerEntry(e); err != nil {
			return kap.Errorf(kap.EINVALID, "entries[%d]: %s", i, kap.ErrorMessage(err))
		}
	}
	if len(entries) == 0 {
		return nil
	}
	s := (*Store)(l)
	return s.update(ctx, func(tx *bbolt.Tx) error {
		now := s.opt.Now()
		b := tx.Bucket(bLedger)
		for _, e := range entries {
			e.UpdatedAt = now
			k := ledgerKey(e.LedgerKey)
			if opt.KeepUnknown && (e.State == kap.LedgerFailed || e.State == kap.LedgerUnknown) {
				var prev kap.LedgerEntry
				ok, err := getJSON(b, k, &prev)
				if err != nil {
					return err
				}
				if ok {
					e = kap.MergeLedgerEntry(prev, e)
				}
			}
			if err := putJSON(b, k, e); err != nil {
				return err
			}
		}
		return nil
	})
}

func (l *ledger) ListByState(ctx context.Context, tenant, target string, state kap.LedgerState, limit int) ([]kap.LedgerEntry, error) {
	if err := kap.ValidateName("tenant", tenant); err != nil {
		return nil, err
	}
	if err := kap.ValidateName("target", target); err != nil {
		return nil, err
	}
	if !state.Valid() {
		return nil, kap.Errorf(kap.EINVALID, "state must be sent, confirmed, failed or unknown")
	}
	if limit <= 0 {
		limit = 100
	}
	var out []kap.LedgerEntry
	err := (*Store)(l).view(ctx, func(tx *bbolt.Tx) error {
		p := prefix(tenant, target)
		c := tx.Bucket(bLedger).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p) && len(out) < limit; k, v = c.Next() {
			var e kap.LedgerEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if e.State == state {
				out = append(out, e)
			}
		}
		return nil
	})
	return out, err
}

type cache Store

func (c *cache) Get(ctx context.Context, k string) ([]byte, error) {
	if err := kap.ValidateID("key", k); err != nil {
		return nil, err
	}
	s := (*Store)(c)
	var out []byte
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		v := tx.Bucket(bCache).Get(str(k))
		if len(v) < 8 || int64(binary.BigEndian.Uint64(v)) <= s.opt.Now().UnixNano() {
			return kap.Errorf(kap.ENOTFOUND, "not cached")
		}
		out = append([]byte{}, v[8:]...)
		return nil
	})
	return out, err
}

func (c *cache) Set(ctx context.Context, k string, val []byte, ttl time.Duration) error {
	if err := kap.ValidateID("key", k); err != nil {
		return err
	}
	if ttl <= 0 {
		return kap.Errorf(kap.EINVALID, "ttl must be positive")
	}
	s := (*Store)(c)
	return s.update(ctx, func(tx *bbolt.Tx) error {
		now := s.opt.Now()
		b := tx.Bucket(bCache)
		// Sweep a few expired entries so the bucket does not grow forever.
		var expired [][]byte
		cur := b.Cursor()
		for kk, v := cur.First(); kk != nil && len(expired) < 16; kk, v = cur.Next() {
			if len(v) < 8 || int64(binary.BigEndian.Uint64(v)) <= now.UnixNano() {
				expired = append(expired, append([]byte{}, kk...))
			}
		}
		for _, kk := range expired {
			if err := b.Delete(kk); err != nil {
				return err
			}
		}
		v := append(u64(uint64(now.Add(ttl).UnixNano())), val...)
		return b.Put(str(k), v)
	})
}

func (c *cache) Delete(ctx context.Context, k string) error {
	if err := kap.ValidateID("key", k); err != nil {
		return err
	}
	return (*Store)(c).update(ctx, func(tx *bbolt.Tx) error {
		return tx.Bucket(bCache).Delete(str(k))
	})
}

type idem Store

type idemEntry struct {
	Done        bool                `json:"done"`
	Fingerprint string              `json:"fingerprint"`
	Until       int64               `json:"until"` // unix nanos
	Response    *kap.StoredResponse `json:"response,omitempty"`
}

func (i *idem) Reserve(ctx context.Context, tenant, k, fingerprint string) (*kap.StoredResponse, error) {
	if err := kap.ValidateIdempotencyKey(tenant, k); err != nil {
		return nil, err
	}
	s := (*Store)(i)
	var out *kap.StoredResponse
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		out = nil
		b := tx.Bucket(bIdem)
		ik := key(str(tenant), str(k))
		now := s.opt.Now()
		var e idemEntry
		found, err := getJSON(b, ik, &e)
		if err != nil {
			return err
		}
		if found && e.Until > now.UnixNano() {
			if e.Fingerprint != fingerprint {
				return kap.ErrIdempotencyKeyReused
			}
			if !e.Done {
				return kap.ErrIdempotencyKeyInFlight
			}
			out = e.Response
			return nil
		}
		return putJSON(b, ik, idemEntry{Fingerprint: fingerprint, Until: now.Add(s.opt.ReservationTTL).UnixNano()})
	})
	return out, err
}

func (i *idem) Complete(ctx context.Context, tenant, k string, resp kap.StoredResponse) error {
	if err := kap.ValidateIdempotencyKey(tenant, k); err != nil {
		return err
	}
	s := (*Store)(i)
	return s.update(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bIdem)
		ik := key(str(tenant), str(k))
		var e idemEntry
		found, err := getJSON(b, ik, &e)
		if err != nil {
			return err
		}
		if !found || e.Done {
			return kap.Errorf(kap.ENOTFOUND, "the Idempotency-Key is not reserved")
		}
		e.Done, e.Response, e.Until = true, &resp, s.opt.Now().Add(kap.IdempotencyTTL).UnixNano()
		return putJSON(b, ik, e)
	})
}

func (i *idem) Release(ctx context.Context, tenant, k string) error {
	if err := kap.ValidateIdempotencyKey(tenant, k); err != nil {
		return err
	}
	return (*Store)(i).update(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bIdem)
		ik := key(str(tenant), str(k))
		var e idemEntry
		found, err := getJSON(b, ik, &e)
		if err != nil || !found || e.Done {
			return err
		}
		return b.Delete(ik)
	})
}

// rateLimiter keeps token buckets in memory: the embedded store serves one
// process, and losing the counters on restart only refills the buckets.
type rateLimiter struct {
	mu      sync.Mutex
	now     func() time.Time
	buckets map[string]*tokenBucket
}

type tokenBucket struct {
	tokens float64
	at     time.Time
}

func (r *rateLimiter) Allow(ctx context.Context, k string, rate float64, burst int) (bool, time.Duration, error) {
	if err := kap.ValidateID("key", k); err != nil {
		return false, 0, err
	}
	if !(rate > 0) || math.IsInf(rate, 0) {
		return false, 0, kap.Errorf(kap.EINVALID, "rate must be a positive number of tokens per second")
	}
	if burst < 1 {
		return false, 0, kap.Errorf(kap.EINVALID, "burst must be at least 1")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	b := r.buckets[k]
	if b == nil {
		b = &tokenBucket{tokens: float64(burst), at: now}
		r.buckets[k] = b
		if len(r.buckets) > 100000 { // drop full buckets
			for kk, bb := range r.buckets {
				if bb.tokens+now.Sub(bb.at).Seconds()*rate >= float64(burst) && kk != k {
					delete(r.buckets, kk)
				}
			}
		}
	}
	if el := now.Sub(b.at).Seconds(); el > 0 {
		b.tokens = math.Min(float64(burst), b.tokens+el*rate)
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0, nil
	}
	wait := time.Duration((1 - b.tokens) / rate * float64(time.Second))
	return false, max(wait, time.Millisecond), nil
}
