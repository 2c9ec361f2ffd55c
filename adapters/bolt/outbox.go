package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	kap "github.com/kapbridge/kap"
	bbolt "go.etcd.io/bbolt"
)

// The outbox keeps, per (tenant, target, client), a FIFO of messages (bucket
// ob, ordered by a global sequence) and a client state. A client with
// messages has exactly one key in the ready index (target, readyAt, tenant,
// client): readyAt is when its head message may be leased: now for a fresh
// head, the retry time for a delayed one, the lease deadline for a leased one
// (so an expired lease is simply due again). Lease walks the ready index of a
// target up to now.

type outbox Store

type clientState struct {
	Token   uint64 `json:"token"`   // incremented by every lease (fencing)
	Leased  bool   `json:"leased"`  // the head is with a worker
	ReadyAt int64  `json:"readyAt"` // unix nanos of the ready-index key
}

func readyKey(target string, at int64, tenant, client string) []byte {
	return key(str(target), u64(uint64(at)^(1<<63)), str(tenant), str(client))
}

func (s *Store) enqueueTx(tx *bbolt.Tx, m kap.OutboxMessage, now time.Time) error {
	ids, dlids := tx.Bucket(bObID), tx.Bucket(bDLID)
	idk := key(str(m.Tenant), str(m.Target), str(m.ID))
	if ids.Get(idk) != nil || dlids.Get(idk) != nil {
		return nil // already queued or dead-lettered: not twice
	}
	if m.EnqueuedAt.IsZero() {
		m.EnqueuedAt = now
	}
	ob := tx.Bucket(bOb)
	seq, err := ob.NextSequence()
	if err != nil {
		return err
	}
	k := key(str(m.Tenant), str(m.Target), str(m.ClientID), u64(seq))
	data, err := kap.MarshalOutboxMessage(m)
	if err != nil {
		return err
	}
	if err := ob.Put(k, data); err != nil {
		return err
	}
	if err := ids.Put(idk, k); err != nil {
		return err
	}
	if err := tx.Bucket(bObAge).Put(key(str(m.Target), timeKey(m.EnqueuedAt), str(m.Tenant), str(m.ID)), nil); err != nil {
		return err
	}
	cb := tx.Bucket(bObClient)
	ck := key(str(m.Tenant), str(m.Target), str(m.ClientID))
	if cb.Get(ck) != nil {
		return nil // the client already has a head; this one waits behind it
	}
	st := clientState{ReadyAt: now.UnixNano()}
	if err := putJSON(cb, ck, st); err != nil {
		return err
	}
	return tx.Bucket(bReady).Put(readyKey(m.Target, st.ReadyAt, m.Tenant, m.ClientID), nil)
}

func (o *outbox) Enqueue(ctx context.Context, msgs ...kap.OutboxMessage) error {
	for i := range msgs {
		if err := kap.ValidateMessage(msgs[i]); err != nil {
			return err
		}
		if err := kap.CheckRawJSON("record", msgs[i].Record); err != nil {
			return err
		}
		if err := kap.CheckRawJSON("bundle", msgs[i].Bundle); err != nil {
			return err
		}
	}
	s := (*Store)(o)
	return s.update(ctx, func(tx *bbolt.Tx) error {
		now := s.opt.Now()
		for _, m := range msgs {
			if err := s.enqueueTx(tx, m, now); err != nil {
				return err
			}
		}
		return nil
	})
}

// head returns the key and message at the head of a client's queue.
// headKey returns the key of the client's head message and its stored
// value (nil when the client has none) without decoding it.
func headKey(tx *bbolt.Tx, tenant, target, client string) ([]byte, []byte) {
	p := prefix(tenant, target, client)
	k, v := tx.Bucket(bOb).Cursor().Seek(p)
	if k == nil || !bytes.HasPrefix(k, p) {
		return nil, nil
	}
	return append([]byte{}, k...), v
}

// msgMeta is the part of a stored OutboxMessage that Ack, Retry and
// DeadLetter need; decoding only it skips building the Record and Bundle
// (some 80 kB for a dosing session) that they do not use.
type msgMeta struct {
	ID         string    `json:"id"`
	EnqueuedAt time.Time `json:"enqueuedAt"`
}

func decodeMeta(v []byte) (msgMeta, error) {
	var m msgMeta
	if err := json.Unmarshal(v, &m); err != nil {
		return m, fmt.Errorf("decode stored value: %w", err)
	}
	return m, nil
}

func head(tx *bbolt.Tx, tenant, target, client string) ([]byte, *kap.OutboxMessage, error) {
	p := prefix(tenant, target, client)
	k, v := tx.Bucket(bOb).Cursor().Seek(p)
	if k == nil || !bytes.HasPrefix(k, p) {
		return nil, nil, nil
	}
	var m kap.OutboxMessage
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, nil, err
	}
	return append([]byte{}, k...), &m, nil
}

func (o *outbox) Lease(ctx context.Context, target string, max int) ([]kap.Lease, error) {
	if err := kap.ValidateName("target", target); err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, nil
	}
	s := (*Store)(o)
	var out []kap.Lease
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		out = nil
		now := s.opt.Now()
		rb := tx.Bucket(bReady)
		type due struct {
			k              []byte
			tenant, client string
		}
		var dues []due
		p := prefix(target)
		c := rb.Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p) && len(dues) < max; k, _ = c.Next() {
			rest := k[len(p):]
			if len(rest) < 9 {
				continue
			}
			if int64(bytesU64(rest[:8])^(1<<63)) > now.UnixNano() {
				break
			}
			tc := strings.SplitN(string(rest[9:]), "\x00", 2)
			if len(tc) != 2 {
				continue
			}
			dues = append(dues, due{append([]byte{}, k...), tc[0], tc[1]})
		}
		cb := tx.Bucket(bObClient)
		deadline := now.Add(s.opt.LeaseTTL)
		for _, d := range dues {
			if err := rb.Delete(d.k); err != nil {
				return err
			}
			ck := key(str(d.tenant), str(target), str(d.client))
			var st clientState
			if _, err := getJSON(cb, ck, &st); err != nil {
				return err
			}
			_, m, err := head(tx, d.tenant, target, d.client)
			if err != nil {
				return err
			}
			if m == nil { // nothing left: forget the client
				if err := cb.Delete(ck); err != nil {
					return err
				}
				continue
			}
			st.Token++
			st.Leased = true
			st.ReadyAt = deadline.UnixNano()
			if err := putJSON(cb, ck, st); err != nil {
				return err
			}
			if err := rb.Put(readyKey(target, st.ReadyAt, d.tenant, d.client), nil); err != nil {
				return err
			}
			out = append(out, kap.Lease{Message: *m, Token: strconv.FormatUint(st.Token, 10), Deadline: deadline})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func bytesU64(b []byte) uint64 {
	var v uint64
	for _, c := range b[:8] {
		v = v<<8 | uint64(c)
	}
	return v
}

var errLeaseLost = kap.Errorf(kap.ECONFLICT, "the lease is no longer held: another worker took the message or it is gone")

// checkLease verifies that l still holds its client's head and returns the
// head's key, the client state and its key.
func checkLease(tx *bbolt.Tx, l kap.Lease) ([]byte, clientState, []byte, error) {
	m := l.Message
	ck := key(str(m.Tenant), str(m.Target), str(m.ClientID))
	var st clientState
	found, err := getJSON(tx.Bucket(bObClient), ck, &st)
	if err != nil {
		return nil, st, nil, err
	}
	if !found || !st.Leased || strconv.FormatUint(st.Token, 10) != l.Token {
		return nil, st, nil, errLeaseLost
	}
	hk, hv := headKey(tx, m.Tenant, m.Target, m.ClientID)
	if hk == nil {
		return nil, st, nil, errLeaseLost
	}
	hm, err := decodeMeta(hv)
	if err != nil {
		return nil, st, nil, err
	}
	if hm.ID != m.ID {
		return nil, st, nil, errLeaseLost
	}
	return hk, st, ck, nil
}

func validLease(l kap.Lease) error {
	if err := kap.ValidateMessage(l.Message); err != nil {
		return err
	}
	if l.Token == "" {
		return kap.Errorf(kap.EINVALID, "lease token is required")
	}
	return nil
}

// removeHead deletes the leased head message and makes the client's next
// message due now (or forgets the client when there is none).
func (s *Store) removeHead(tx *bbolt.Tx, l kap.Lease, hk []byte, st clientState, ck []byte, now time.Time) error {
	m := l.Message
	var stored msgMeta
	if v := tx.Bucket(bOb).Get(hk); v != nil {
		var err error
		if stored, err = decodeMeta(v); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bOb).Delete(hk); err != nil {
		return err
	}
	if err := tx.Bucket(bObID).Delete(key(str(m.Tenant), str(m.Target), str(m.ID))); err != nil {
		return err
	}
	if err := tx.Bucket(bObAge).Delete(key(str(m.Target), timeKey(stored.EnqueuedAt), str(m.Tenant), str(m.ID))); err != nil {
		return err
	}
	rb := tx.Bucket(bReady)
	if err := rb.Delete(readyKey(m.Target, st.ReadyAt, m.Tenant, m.ClientID)); err != nil {
		return err
	}
	if next, _ := headKey(tx, m.Tenant, m.Target, m.ClientID); next == nil {
		return tx.Bucket(bObClient).Delete(ck)
	}
	st.Leased = false
	st.ReadyAt = now.UnixNano()
	if err := putJSON(tx.Bucket(bObClient), ck, st); err != nil {
		return err
	}
	return rb.Put(readyKey(m.Target, st.ReadyAt, m.Tenant, m.ClientID), nil)
}

func (o *outbox) Ack(ctx context.Context, l kap.Lease) error {
	if err := validLease(l); err != nil {
		return err
	}
	s := (*Store)(o)
	return s.update(ctx, func(tx *bbolt.Tx) error {
		hk, st, ck, err := checkLease(tx, l)
		if err != nil {
			return err
		}
		return s.removeHead(tx, l, hk, st, ck, s.opt.Now())
	})
}

func (o *outbox) Retry(ctx context.Context, l kap.Lease, at time.Time, a kap.Attempt) error {
	if err := validLease(l); err != nil {
		return err
	}
	s := (*Store)(o)
	return s.update(ctx, func(tx *bbolt.Tx) error {
		hk, st, ck, err := checkLease(tx, l)
		if err != nil {
			return err
		}
		ob := tx.Bucket(bOb)
		var stored kap.OutboxMessage
		if _, err := getJSON(ob, hk, &stored); err != nil {
			return err
		}
		stored.Attempts = append(stored.Attempts, a)
		data, err := kap.MarshalOutboxMessage(stored)
		if err != nil {
			return err
		}
		if err := ob.Put(hk, data); err != nil {
			return err
		}
		m := l.Message
		rb := tx.Bucket(bReady)
		if err := rb.Delete(readyKey(m.Target, st.ReadyAt, m.Tenant, m.ClientID)); err != nil {
			return err
		}
		st.Leased = false
		st.ReadyAt = at.UnixNano()
		if err := putJSON(tx.Bucket(bObClient), ck, st); err != nil {
			return err
		}
		return rb.Put(readyKey(m.Target, st.ReadyAt, m.Tenant, m.ClientID), nil)
	})
}

func (o *outbox) DeadLetter(ctx context.Context, l kap.Lease, reason string, a kap.Attempt) error {
	if err := validLease(l); err != nil {
		return err
	}
	s := (*Store)(o)
	return s.update(ctx, func(tx *bbolt.Tx) error {
		hk, st, ck, err := checkLease(tx, l)
		if err != nil {
			return err
		}
		var stored kap.OutboxMessage
		if _, err := getJSON(tx.Bucket(bOb), hk, &stored); err != nil {
			return err
		}
		stored.Attempts = append(stored.Attempts, a)
		now := s.opt.Now()
		dl := kap.DeadLetter{Message: stored, Reason: reason, DeadAt: now}
		m := l.Message
		dk := key(str(m.Tenant), str(m.Target), timeKey(now), str(m.ID))
		if err := putJSON(tx.Bucket(bDL), dk, dl); err != nil {
			return err
		}
		if err := tx.Bucket(bDLID).Put(key(str(m.Tenant), str(m.Target), str(m.ID)), dk); err != nil {
			return err
		}
		return s.removeHead(tx, l, hk, st, ck, now)
	})
}

func (o *outbox) DeadLetters(ctx context.Context, tenant, target string, limit int) ([]kap.DeadLetter, error) {
	if err := kap.ValidateName("tenant", tenant); err != nil {
		return nil, err
	}
	if err := kap.ValidateName("target", target); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	var out []kap.DeadLetter
	err := (*Store)(o).view(ctx, func(tx *bbolt.Tx) error {
		p := prefix(tenant, target)
		c := tx.Bucket(bDL).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p) && len(out) < limit; k, v = c.Next() {
			var dl kap.DeadLetter
			if err := json.Unmarshal(v, &dl); err != nil {
				return err
			}
			out = append(out, dl)
		}
		return nil
	})
	return out, err
}

func (s *Store) replayTx(tx *bbolt.Tx, tenant, target, id string, now time.Time) error {
	idk := key(str(tenant), str(target), str(id))
	dlids := tx.Bucket(bDLID)
	dk := dlids.Get(idk)
	if dk == nil {
		return kap.Errorf(kap.ENOTFOUND, "no dead letter with that id")
	}
	dk = append([]byte{}, dk...)
	var dl kap.DeadLetter
	if _, err := getJSON(tx.Bucket(bDL), dk, &dl); err != nil {
		return err
	}
	if err := tx.Bucket(bDL).Delete(dk); err != nil {
		return err
	}
	if err := dlids.Delete(idk); err != nil {
		return err
	}
	// A fresh attempt budget; the earlier attempts stay as history.
	dl.Message.Replays++
	dl.Message.ReplayedAttempts = len(dl.Message.Attempts)
	return s.enqueueTx(tx, dl.Message, now)
}

func (o *outbox) Discard(ctx context.Context, tenant, target, id, reason string) error {
	if err := kap.ValidateName("tenant", tenant); err != nil {
		return err
	}
	if err := kap.ValidateName("target", target); err != nil {
		return err
	}
	if err := kap.ValidateID("id", id); err != nil {
		return err
	}
	return (*Store)(o).update(ctx, func(tx *bbolt.Tx) error {
		idk := key(str(tenant), str(target), str(id))
		dlids := tx.Bucket(bDLID)
		dk := dlids.Get(idk)
		if dk == nil {
			return kap.Errorf(kap.ENOTFOUND, "no dead letter with that id")
		}
		dk = append([]byte{}, dk...)
		if err := tx.Bucket(bDL).Delete(dk); err != nil {
			return err
		}
		return dlids.Delete(idk)
	})
}

func (o *outbox) Replay(ctx context.Context, tenant, target, id string) error {
	if err := kap.ValidateName("tenant", tenant); err != nil {
		return err
	}
	if err := kap.ValidateName("target", target); err != nil {
		return err
	}
	if err := kap.ValidateID("id", id); err != nil {
		return err
	}
	s := (*Store)(o)
	return s.update(ctx, func(tx *bbolt.Tx) error {
		return s.replayTx(tx, tenant, target, id, s.opt.Now())
	})
}

func (o *outbox) ReplayAll(ctx context.Context, tenant, target string) (int, error) {
	if err := kap.ValidateName("tenant", tenant); err != nil {
		return 0, err
	}
	if err := kap.ValidateName("target", target); err != nil {
		return 0, err
	}
	s := (*Store)(o)
	n := 0
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		n = 0
		now := s.opt.Now()
		p := prefix(tenant, target)
		var ids []string
		c := tx.Bucket(bDL).Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			ids = append(ids, string(k[len(p)+9:]))
		}
		for _, id := range ids {
			if err := s.replayTx(tx, tenant, target, id, now); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

func (o *outbox) Stats(ctx context.Context, target string) (kap.OutboxStats, error) {
	if err := kap.ValidateName("target", target); err != nil {
		return kap.OutboxStats{}, err
	}
	var st kap.OutboxStats
	err := (*Store)(o).view(ctx, func(tx *bbolt.Tx) error {
		st = kap.OutboxStats{}
		p := prefix(target)
		c := tx.Bucket(bObAge).Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			if st.Depth == 0 && len(k) >= len(p)+8 {
				st.Oldest = fromTimeKey(k[len(p) : len(p)+8])
			}
			st.Depth++
		}
		tb := str(target)
		return tx.Bucket(bDL).ForEach(func(k, _ []byte) error {
			parts := bytes.SplitN(k, []byte{0}, 3)
			if len(parts) == 3 && bytes.Equal(parts[1], tb) {
				st.DeadLetters++
			}
			return nil
		})
	})
	return st, err
}

func (o *outbox) Release(ctx context.Context, l kap.Lease) error {
	if err := validLease(l); err != nil {
		return err
	}
	s := (*Store)(o)
	return s.update(ctx, func(tx *bbolt.Tx) error {
		_, st, ck, err := checkLease(tx, l)
		if err != nil {
			return err
		}
		m := l.Message
		rb := tx.Bucket(bReady)
		if err := rb.Delete(readyKey(m.Target, st.ReadyAt, m.Tenant, m.ClientID)); err != nil {
			return err
		}
		// Leased=false fences the old token; the next Lease bumps it.
		st.Leased = false
		st.ReadyAt = s.opt.Now().UnixNano()
		if err := putJSON(tx.Bucket(bObClient), ck, st); err != nil {
			return err
		}
		return rb.Put(readyKey(m.Target, st.ReadyAt, m.Tenant, m.ClientID), nil)
	})
}

func (o *outbox) Status(ctx context.Context, tenant, target, id string) (kap.MessageStatus, error) {
	if err := kap.ValidateName("tenant", tenant); err != nil {
		return kap.MessageStatus{}, err
	}
	if err := kap.ValidateName("target", target); err != nil {
		return kap.MessageStatus{}, err
	}
	if err := kap.ValidateID("id", id); err != nil {
		return kap.MessageStatus{}, err
	}
	s := (*Store)(o)
	var out kap.MessageStatus
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		out = kap.MessageStatus{ID: id}
		idk := key(str(tenant), str(target), str(id))
		if dk := tx.Bucket(bDLID).Get(idk); dk != nil {
			var dl kap.DeadLetter
			if _, err := getJSON(tx.Bucket(bDL), dk, &dl); err != nil {
				return err
			}
			out.State, out.EnqueuedAt, out.Attempts = kap.MessageDead, dl.Message.EnqueuedAt, dl.Message.Attempts
			out.Reason, out.DeadAt = dl.Reason, dl.DeadAt
			return nil
		}
		obk := tx.Bucket(bObID).Get(idk)
		if obk == nil {
			return kap.Errorf(kap.ENOTFOUND, "no queued or dead-lettered message with that id")
		}
		var m kap.OutboxMessage
		if found, err := getJSON(tx.Bucket(bOb), obk, &m); err != nil || !found {
			if err == nil {
				err = kap.Errorf(kap.ENOTFOUND, "no queued or dead-lettered message with that id")
			}
			return err
		}
		out.EnqueuedAt, out.Attempts = m.EnqueuedAt, m.Attempts
		out.State = kap.MessageQueued
		if len(m.Attempts) > 0 {
			out.State = kap.MessageRetrying
		}
		if hk, _ := headKey(tx, tenant, target, m.ClientID); !bytes.Equal(hk, obk) {
			return nil
		}
		var st clientState
		if _, err := getJSON(tx.Bucket(bObClient), key(str(tenant), str(target), str(m.ClientID)), &st); err != nil {
			return err
		}
		now := s.opt.Now().UnixNano()
		switch {
		case st.Leased && st.ReadyAt > now:
			out.State, out.LeaseDeadline = kap.MessageInFlight, time.Unix(0, st.ReadyAt)
		case !st.Leased && len(m.Attempts) > 0 && st.ReadyAt > now:
			out.NextAttempt = time.Unix(0, st.ReadyAt)
		}
		return nil
	})
	return out, err
}
