// Package bolt is the embedded default of the durable state layer: one
// go.etcd.io/bbolt file on local disk, used when no Redis address is
// configured. Every write is one bbolt transaction, fsynced before it
// returns, so whatever a call acknowledged survives a crash or restart of the
// process and of the machine. Only one process may open the file at a time.
// Rate-limit counters are kept in memory (they need not survive a restart).
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	kap "github.com/kapbridge/kap"
	bbolt "go.etcd.io/bbolt"
)

// Options configure the store.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// LeaseTTL is how long a leased outbox message stays with its worker
	// before another worker may take it; default 1 minute.
	LeaseTTL time.Duration
	// ReservationTTL is how long an in-flight Idempotency-Key reservation
	// holds; default 1 minute.
	ReservationTTL time.Duration
	// OpenTimeout bounds the wait for the file lock; default 5 seconds.
	OpenTimeout time.Duration
}

// Store implements kap.Store on one bbolt file.
type Store struct {
	db  *bbolt.DB
	opt Options
	rl  rateLimiter
	// commits counts write transactions (each one fsyncs); benchmarks
	// report it per operation.
	commits atomic.Int64
}

var _ kap.Store = (*Store)(nil)

var (
	bRec      = []byte("rec")      // tenant kind id ver -> StoredRecord
	bLatest   = []byte("latest")   // tenant kind id -> StoredRecord
	bByClient = []byte("byclient") // tenant client date kind id -> ""
	bIdent    = []byte("ident")    // tenant type system value -> kind id
	bOb       = []byte("ob")       // tenant target client seq -> OutboxMessage
	bObID     = []byte("obid")     // tenant target msgid -> ob key
	bObClient = []byte("obclient") // tenant target client -> clientState
	bReady    = []byte("ready")    // target readyAt tenant client -> ""
	bObAge    = []byte("obage")    // target enqueuedAt tenant msgid -> ""
	bDL       = []byte("dl")       // tenant target deadAt msgid -> DeadLetter
	bDLID     = []byte("dlid")     // tenant target msgid -> dl key
	bLedger   = []byte("ledger")   // tenant target type identifier -> LedgerEntry
	bCache    = []byte("cache")    // key -> expiry(8) value
	bIdem     = []byte("idem")     // tenant key -> idemEntry
	buckets   = [][]byte{bRec, bLatest, bByClient, bIdent, bOb, bObID, bObClient, bReady, bObAge, bDL, bDLID, bLedger, bCache, bIdem}
	errClosed = kap.Errorf(kap.EUNAVAILABLE, "the embedded store is closed")
)

// Open opens (creating if needed) the store file at path.
func Open(path string, opt Options) (*Store, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.LeaseTTL <= 0 {
		opt.LeaseTTL = time.Minute
	}
	if opt.ReservationTTL <= 0 {
		opt.ReservationTTL = time.Minute
	}
	if opt.OpenTimeout <= 0 {
		opt.OpenTimeout = 5 * time.Second
	}
	// The freelist (pages freed by overwritten records and delivered
	// outbox messages, which carry the Bundle) is not written at every
	// commit: with the default it is, and it grows with the file (376 kB
	// after 6,000 records delivered), so every write transaction got
	// slower as the store grew. bbolt rebuilds it on open by scanning the
	// file instead (as etcd does). Data and meta pages are still fsynced
	// at every commit; the hashmap freelist allocates without scanning.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:        opt.OpenTimeout,
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	})
	if err != nil {
		return nil, &kap.Error{Code: kap.EUNAVAILABLE, Message: "cannot open the embedded store file", Err: err}
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, &kap.Error{Code: kap.EUNAVAILABLE, Message: "cannot initialise the embedded store file", Err: err}
	}
	s := &Store{db: db, opt: opt}
	s.rl = rateLimiter{now: opt.Now, buckets: map[string]*tokenBucket{}}
	return s, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

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

// RateLimiter returns the in-memory token buckets.
func (s *Store) RateLimiter() kap.RateLimiter { return &s.rl }

func (s *Store) update(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return &kap.Error{Code: kap.EUNAVAILABLE, Message: "request cancelled", Err: err}
	}
	s.commits.Add(1)
	err := s.db.Update(fn)
	return wrap(err)
}

func (s *Store) view(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return &kap.Error{Code: kap.EUNAVAILABLE, Message: "request cancelled", Err: err}
	}
	return wrap(s.db.View(fn))
}

func wrap(err error) error {
	var ke *kap.Error
	if err == nil || errors.As(err, &ke) {
		return err
	}
	if errors.Is(err, bbolt.ErrDatabaseNotOpen) {
		return errClosed
	}
	return &kap.Error{Code: kap.EINTERNAL, Message: "embedded store error", Err: err}
}

// key joins parts with NUL; the validators keep NUL out of every part.
func key(parts ...[]byte) []byte {
	return bytes.Join(parts, []byte{0})
}

func str(s string) []byte { return []byte(s) }

// prefix is key(parts...) followed by a NUL, to scan the keys under it.
func prefix(parts ...string) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
		b = append(b, 0)
	}
	return b
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// timeKey orders times bytewise, negative ones included.
func timeKey(t time.Time) []byte { return u64(uint64(t.UnixNano()) ^ (1 << 63)) }

func msKey(t time.Time) []byte { return u64(uint64(t.UnixMilli()) ^ (1 << 63)) }

func fromTimeKey(b []byte) time.Time { return time.Unix(0, int64(binary.BigEndian.Uint64(b)^(1<<63))) }

func putJSON(b *bbolt.Bucket, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, data)
}

func getJSON(b *bbolt.Bucket, k []byte, v any) (bool, error) {
	data := b.Get(k)
	if data == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("decode stored value: %w", err)
	}
	return true, nil
}

// deletePrefix deletes every key of b starting with p.
func deletePrefix(b *bbolt.Bucket, p []byte) error {
	c := b.Cursor()
	for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Seek(p) {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
