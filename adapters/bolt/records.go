package bolt

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"slices"
	"strings"
	"time"

	kap "github.com/kapbridge/kap"
	bbolt "go.etcd.io/bbolt"
)

type records Store

func recKey(tenant, kind, id string) []byte { return key(str(tenant), str(kind), str(id)) }

func identKey(tenant string, r kap.ResourceRef) []byte {
	return key(str(tenant), str(r.Type), str(r.System), str(r.Value))
}

func clientKey(rec kap.StoredRecord) []byte {
	return key(str(rec.Tenant), str(rec.ClientID), msKey(rec.Date), str(rec.Kind), str(rec.ID))
}

func (r *records) Put(ctx context.Context, rec kap.StoredRecord, opt kap.PutOptions) (kap.StoredRecord, bool, error) {
	if err := kap.ValidateRecord(rec); err != nil {
		return kap.StoredRecord{}, false, err
	}
	for _, t := range opt.Targets {
		if err := kap.ValidateName("target", t); err != nil {
			return kap.StoredRecord{}, false, err
		}
	}
	if err := kap.CheckRawJSON("record", rec.Record); err != nil {
		return kap.StoredRecord{}, false, err
	}
	if err := kap.CheckRawJSON("bundle", rec.Bundle); err != nil {
		return kap.StoredRecord{}, false, err
	}
	s := (*Store)(r)
	var out kap.StoredRecord
	var created bool
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		out, created = kap.StoredRecord{}, false
		latest := tx.Bucket(bLatest)
		lk := recKey(rec.Tenant, rec.Kind, rec.ID)
		var cur kap.StoredRecord
		found, err := getJSON(latest, lk, &cur)
		if err != nil {
			return err
		}
		if opt.IfNoneMatch && found {
			return kap.Errorf(kap.EPRECONDITION, "the record already exists (version %d)", cur.Version)
		}
		if opt.IfMatch > 0 && (!found || cur.Version != opt.IfMatch) {
			return kap.Errorf(kap.EPRECONDITION, "the record is not at version %d", opt.IfMatch)
		}
		if found && cur.ContentHash == rec.ContentHash {
			out = cur
			return nil
		}
		now := s.opt.Now()
		rec.Version = cur.Version + 1
		rec.StoredAt = now
		data, err := kap.MarshalStoredRecord(rec)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bRec).Put(key(lk, u64(uint64(rec.Version))), data); err != nil {
			return err
		}
		if err := latest.Put(lk, data); err != nil {
			return err
		}
		bc, bi := tx.Bucket(bByClient), tx.Bucket(bIdent)
		if found {
			if err := bc.Delete(clientKey(cur)); err != nil {
				return err
			}
			for _, ref := range cur.Resources {
				ik := identKey(cur.Tenant, ref)
				if bytes.Equal(bi.Get(ik), key(str(rec.Kind), str(rec.ID))) {
					if err := bi.Delete(ik); err != nil {
						return err
					}
				}
			}
		}
		if err := bc.Put(clientKey(rec), nil); err != nil {
			return err
		}
		for _, ref := range rec.Resources {
			if err := bi.Put(identKey(rec.Tenant, ref), key(str(rec.Kind), str(rec.ID))); err != nil {
				return err
			}
		}
		for _, t := range opt.Targets {
			if err := s.enqueueTx(tx, kap.MessageFor(rec, t, now), now); err != nil {
				return err
			}
		}
		out, created = rec, true
		return nil
	})
	if err != nil {
		return kap.StoredRecord{}, false, err
	}
	return out, created, nil
}

func (r *records) Get(ctx context.Context, tenant, kind, id string) (kap.StoredRecord, error) {
	if err := kap.ValidateRecordKey(tenant, kind, id); err != nil {
		return kap.StoredRecord{}, err
	}
	var out kap.StoredRecord
	err := (*Store)(r).view(ctx, func(tx *bbolt.Tx) error {
		found, err := getJSON(tx.Bucket(bLatest), recKey(tenant, kind, id), &out)
		if err == nil && !found {
			err = kap.Errorf(kap.ENOTFOUND, "no %s with that id", kind)
		}
		return err
	})
	return out, err
}

func (r *records) GetVersion(ctx context.Context, tenant, kind, id string, version int) (kap.StoredRecord, error) {
	if err := kap.ValidateRecordKey(tenant, kind, id); err != nil {
		return kap.StoredRecord{}, err
	}
	var out kap.StoredRecord
	err := (*Store)(r).view(ctx, func(tx *bbolt.Tx) error {
		if version < 1 {
			return kap.Errorf(kap.ENOTFOUND, "no version %d of that %s", version, kind)
		}
		found, err := getJSON(tx.Bucket(bRec), key(recKey(tenant, kind, id), u64(uint64(version))), &out)
		if err == nil && !found {
			err = kap.Errorf(kap.ENOTFOUND, "no version %d of that %s", version, kind)
		}
		return err
	})
	return out, err
}

func (r *records) History(ctx context.Context, tenant, kind, id string) ([]kap.StoredRecord, error) {
	if err := kap.ValidateRecordKey(tenant, kind, id); err != nil {
		return nil, err
	}
	var out []kap.StoredRecord
	err := (*Store)(r).view(ctx, func(tx *bbolt.Tx) error {
		p := append(recKey(tenant, kind, id), 0)
		c := tx.Bucket(bRec).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			var rec kap.StoredRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			out = append(out, rec)
		}
		if len(out) == 0 {
			return kap.Errorf(kap.ENOTFOUND, "no %s with that id", kind)
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
		return nil
	})
	return out, err
}

func (r *records) ListByClient(ctx context.Context, tenant, clientID string, q kap.ListQuery) ([]kap.StoredRecord, string, error) {
	if err := kap.ValidateName("tenant", tenant); err != nil {
		return nil, "", err
	}
	if err := kap.ValidateID("clientId", clientID); err != nil {
		return nil, "", err
	}
	limit := q.PageSize()
	p := prefix(tenant, clientID)
	start := append(append([]byte{}, p...), msKey(q.From)...)
	if q.From.IsZero() {
		start = p
	}
	var after []byte
	if q.Cursor != "" {
		c, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		if err != nil || !bytes.HasPrefix(c, p) {
			return nil, "", kap.Errorf(kap.EINVALID, "cursor is not a cursor of this listing")
		}
		after = c
	}
	var out []kap.StoredRecord
	var next string
	err := (*Store)(r).view(ctx, func(tx *bbolt.Tx) error {
		latest := tx.Bucket(bLatest)
		c := tx.Bucket(bByClient).Cursor()
		k, _ := c.Seek(start)
		if after != nil && bytes.Compare(after, start) >= 0 {
			k, _ = c.Seek(after)
			if bytes.Equal(k, after) {
				k, _ = c.Next()
			}
		}
		for ; k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			rest := k[len(p):]
			if len(rest) < 9 {
				continue
			}
			if !q.To.IsZero() && fromMsKey(rest[:8]).After(q.To) {
				break
			}
			kindID := strings.SplitN(string(rest[9:]), "\x00", 2)
			if len(kindID) != 2 {
				continue
			}
			if len(q.Kinds) > 0 && !slices.Contains(q.Kinds, kindID[0]) {
				continue
			}
			if len(out) == limit {
				next = base64.RawURLEncoding.EncodeToString(lastKey(out))
				break
			}
			var rec kap.StoredRecord
			found, err := getJSON(latest, recKey(tenant, kindID[0], kindID[1]), &rec)
			if err != nil {
				return err
			}
			if found {
				out = append(out, rec)
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

func lastKey(recs []kap.StoredRecord) []byte { return clientKey(recs[len(recs)-1]) }

func fromMsKey(b []byte) time.Time {
	return time.UnixMilli(int64(binary.BigEndian.Uint64(b) ^ (1 << 63)))
}

func (r *records) Lookup(ctx context.Context, tenant string, ref kap.ResourceRef) (kap.StoredRecord, error) {
	if err := kap.ValidateName("tenant", tenant); err != nil {
		return kap.StoredRecord{}, err
	}
	var out kap.StoredRecord
	err := (*Store)(r).view(ctx, func(tx *bbolt.Tx) error {
		v := tx.Bucket(bIdent).Get(identKey(tenant, ref))
		parts := strings.SplitN(string(v), "\x00", 2)
		if v == nil || len(parts) != 2 {
			return kap.Errorf(kap.ENOTFOUND, "no record maps to a %s with that identifier", ref.Type)
		}
		found, err := getJSON(tx.Bucket(bLatest), recKey(tenant, parts[0], parts[1]), &out)
		if err == nil && !found {
			err = kap.Errorf(kap.ENOTFOUND, "no record maps to a %s with that identifier", ref.Type)
		}
		return err
	})
	return out, err
}

func (r *records) Prune(ctx context.Context, tenant string, p kap.RetentionPolicy) (int, error) {
	if err := kap.ValidateName("tenant", tenant); err != nil {
		return 0, err
	}
	s := (*Store)(r)
	n := 0
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		n = 0
		now := s.opt.Now()
		b := tx.Bucket(bRec)
		c := b.Cursor()
		tp := prefix(tenant)
		var doomed [][]byte
		// Versions of one record are adjacent and ascending; walk them
		// grouped by record.
		var group [][]byte
		var groupRecs []kap.StoredRecord
		flush := func() {
			for i := range group {
				fromNewest := len(group) - 1 - i
				if fromNewest == 0 {
					continue // the latest is never pruned
				}
				old := p.MaxVersions > 0 && fromNewest >= p.MaxVersions
				aged := p.MaxAge > 0 && now.Sub(groupRecs[i].StoredAt) > p.MaxAge
				if (old || aged) && !queued(tx, tenant, p.KeepQueuedFor, groupRecs[i]) {
					doomed = append(doomed, group[i])
				}
			}
			group, groupRecs = nil, nil
		}
		var cur []byte
		for k, v := c.Seek(tp); k != nil && bytes.HasPrefix(k, tp); k, v = c.Next() {
			rk := k[:len(k)-9]
			if !bytes.Equal(rk, cur) {
				flush()
				cur = append(cur[:0], rk...)
			}
			var rec kap.StoredRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			group = append(group, append([]byte{}, k...))
			groupRecs = append(groupRecs, kap.StoredRecord{Kind: rec.Kind, ID: rec.ID, Version: rec.Version, StoredAt: rec.StoredAt})
		}
		flush()
		for _, k := range doomed {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(doomed)
		return nil
	})
	return n, err
}

// queued reports whether the outbox message of rec is queued, in flight or
// dead-lettered for one of targets.
func queued(tx *bbolt.Tx, tenant string, targets []string, rec kap.StoredRecord) bool {
	if len(targets) == 0 {
		return false
	}
	id := kap.MessageFor(rec, "", time.Time{}).ID
	ids, dlids := tx.Bucket(bObID), tx.Bucket(bDLID)
	for _, tg := range targets {
		k := key(str(tenant), str(tg), str(id))
		if ids.Get(k) != nil || dlids.Get(k) != nil {
			return true
		}
	}
	return false
}
