package redis

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	kap "github.com/kapbridge/kap"
	goredis "github.com/redis/go-redis/v9"
)

type records Store

func (r *records) recKey(tenant, kind, id string) string {
	return (*Store)(r).tp(tenant) + "rec:" + kind + "/" + id
}

// member is the client index member: 16 hex digits of the clinical date
// (ordered bytewise), "|", kind/id. All scores are 0; the index is ranged by
// lex.
func member(rec kap.StoredRecord) string { return dateHex(rec.Date) + "|" + rec.Kind + "/" + rec.ID }

func dateHex(t time.Time) string { return fmt.Sprintf("%016X", uint64(t.UnixMilli())^(1<<63)) }

func identField(ref kap.ResourceRef) string {
	return ref.Type + "\x00" + ref.System + "\x00" + ref.Value
}

func (r *records) latest(ctx context.Context, keys ...string) ([]*kap.StoredRecord, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	args := make([]any, len(keys))
	for i, k := range keys {
		args[i] = k
	}
	res, err := scriptLatest.Run(ctx, r.c, keys[:1], args...).Slice()
	if err != nil {
		return nil, wrap(err)
	}
	out := make([]*kap.StoredRecord, len(keys))
	for i, v := range res {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var rec kap.StoredRecord
		if err := json.Unmarshal([]byte(s), &rec); err != nil {
			return nil, wrap(err)
		}
		out[i] = &rec
	}
	return out, nil
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
	k := r.recKey(rec.Tenant, rec.Kind, rec.ID)
	// Register the tenant with the targets first: harmless if the write
	// below fails, and a queued message is then always found by Lease.
	for _, t := range opt.Targets {
		if err := s.c.SAdd(ctx, s.targetTenants(t), rec.Tenant).Err(); err != nil {
			return kap.StoredRecord{}, false, wrap(err)
		}
	}
	for try := 0; try < 50; try++ {
		curs, err := r.latest(ctx, k)
		if err != nil {
			return kap.StoredRecord{}, false, err
		}
		cur := curs[0]
		if opt.IfNoneMatch && cur != nil {
			return kap.StoredRecord{}, false, kap.Errorf(kap.EPRECONDITION, "the record already exists (version %d)", cur.Version)
		}
		if opt.IfMatch > 0 && (cur == nil || cur.Version != opt.IfMatch) {
			return kap.StoredRecord{}, false, kap.Errorf(kap.EPRECONDITION, "the record is not at version %d", opt.IfMatch)
		}
		if cur != nil && cur.ContentHash == rec.ContentHash {
			return *cur, false, nil
		}
		now := s.opt.Now()
		nr := rec
		base := 0
		if cur != nil {
			base = cur.Version
		}
		nr.Version = base + 1
		nr.StoredAt = now
		data, err := kap.MarshalStoredRecord(nr)
		if err != nil {
			return kap.StoredRecord{}, false, wrap(err)
		}
		kindID := rec.Kind + "/" + rec.ID
		args := []any{s.tp(rec.Tenant), strconv.Itoa(base), strconv.Itoa(nr.Version), data, kindID}
		if cur != nil {
			args = append(args, cur.ClientID, member(*cur))
		} else {
			args = append(args, "", "")
		}
		args = append(args, nr.ClientID, member(nr))
		if cur != nil {
			args = append(args, len(cur.Resources))
			for _, ref := range cur.Resources {
				args = append(args, identField(ref))
			}
		} else {
			args = append(args, 0)
		}
		args = append(args, len(nr.Resources))
		for _, ref := range nr.Resources {
			args = append(args, identField(ref))
		}
		args = append(args, len(opt.Targets))
		for _, t := range opt.Targets {
			m := kap.MessageFor(nr, t, now)
			mj, err := kap.MarshalOutboxMessage(m)
			if err != nil {
				return kap.StoredRecord{}, false, wrap(err)
			}
			args = append(args, s.obp(nr.Tenant, t), nr.ClientID, m.ID, mj, ms(now))
		}
		ok, err := scriptPut.Run(ctx, s.c, []string{k}, args...).Int()
		if err != nil {
			return kap.StoredRecord{}, false, wrap(err)
		}
		if ok == 1 {
			return nr, true, nil
		}
		// Another writer stored a version in between: read again.
	}
	return kap.StoredRecord{}, false, kap.Errorf(kap.ECONFLICT, "the record is being changed concurrently; try again")
}

func (r *records) Get(ctx context.Context, tenant, kind, id string) (kap.StoredRecord, error) {
	if err := kap.ValidateRecordKey(tenant, kind, id); err != nil {
		return kap.StoredRecord{}, err
	}
	recs, err := r.latest(ctx, r.recKey(tenant, kind, id))
	if err != nil {
		return kap.StoredRecord{}, err
	}
	if recs[0] == nil {
		return kap.StoredRecord{}, kap.Errorf(kap.ENOTFOUND, "no %s with that id", kind)
	}
	return *recs[0], nil
}

func (r *records) GetVersion(ctx context.Context, tenant, kind, id string, version int) (kap.StoredRecord, error) {
	if err := kap.ValidateRecordKey(tenant, kind, id); err != nil {
		return kap.StoredRecord{}, err
	}
	v, err := r.c.HGet(ctx, r.recKey(tenant, kind, id), "v:"+strconv.Itoa(version)).Result()
	if errors.Is(err, goredis.Nil) {
		return kap.StoredRecord{}, kap.Errorf(kap.ENOTFOUND, "no version %d of that %s", version, kind)
	} else if err != nil {
		return kap.StoredRecord{}, wrap(err)
	}
	var rec kap.StoredRecord
	if err := json.Unmarshal([]byte(v), &rec); err != nil {
		return kap.StoredRecord{}, wrap(err)
	}
	return rec, nil
}

// versions decodes the v:<n> fields of a record hash, newest first.
func versions(h map[string]string) ([]kap.StoredRecord, error) {
	var out []kap.StoredRecord
	for f, v := range h {
		if !strings.HasPrefix(f, "v:") {
			continue
		}
		var rec kap.StoredRecord
		if err := json.Unmarshal([]byte(v), &rec); err != nil {
			return nil, wrap(err)
		}
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version > out[j].Version })
	return out, nil
}

func (r *records) History(ctx context.Context, tenant, kind, id string) ([]kap.StoredRecord, error) {
	if err := kap.ValidateRecordKey(tenant, kind, id); err != nil {
		return nil, err
	}
	h, err := r.c.HGetAll(ctx, r.recKey(tenant, kind, id)).Result()
	if err != nil {
		return nil, wrap(err)
	}
	out, err := versions(h)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, kap.Errorf(kap.ENOTFOUND, "no %s with that id", kind)
	}
	return out, nil
}

func (r *records) ListByClient(ctx context.Context, tenant, clientID string, q kap.ListQuery) ([]kap.StoredRecord, string, error) {
	if err := kap.ValidateName("tenant", tenant); err != nil {
		return nil, "", err
	}
	if err := kap.ValidateID("clientId", clientID); err != nil {
		return nil, "", err
	}
	limit := q.PageSize()
	lo, hi := "-", "+"
	if !q.From.IsZero() {
		lo = "[" + dateHex(q.From)
	}
	if !q.To.IsZero() {
		hi = "(" + dateHex(q.To.Add(time.Millisecond))
	}
	if q.Cursor != "" {
		c, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		if err != nil || len(c) < 18 || c[16] != '|' {
			return nil, "", kap.Errorf(kap.EINVALID, "cursor is not a cursor of this listing")
		}
		if lo == "-" || string(c) >= lo[1:] {
			lo = "(" + string(c)
		}
	}
	s := (*Store)(r)
	// Members are "<date>|<kind>/<id>": records of other kinds are skipped
	// here, before their JSON is read.
	kindOK := func(m string) bool {
		if len(q.Kinds) == 0 {
			return true
		}
		kind, _, _ := strings.Cut(m[17:], "/")
		return slices.Contains(q.Kinds, kind)
	}
	batch := int64(limit + 1)
	if len(q.Kinds) > 0 {
		batch = max(batch, 256)
	}
	var mems []string
	for {
		got, err := s.c.ZRangeByLex(ctx, s.tp(tenant)+"c:"+clientID, &goredis.ZRangeBy{Min: lo, Max: hi, Count: batch}).Result()
		if err != nil {
			return nil, "", wrap(err)
		}
		for _, m := range got {
			if len(m) > 17 && kindOK(m) && len(mems) <= limit {
				mems = append(mems, m)
			}
		}
		if len(mems) > limit || int64(len(got)) < batch {
			break
		}
		lo = "(" + got[len(got)-1]
	}
	next := ""
	if len(mems) > limit {
		mems = mems[:limit]
		next = base64.RawURLEncoding.EncodeToString([]byte(mems[limit-1]))
	}
	keys := make([]string, 0, len(mems))
	for _, m := range mems {
		keys = append(keys, s.tp(tenant)+"rec:"+m[17:])
	}
	recs, err := r.latest(ctx, keys...)
	if err != nil {
		return nil, "", err
	}
	out := make([]kap.StoredRecord, 0, len(recs))
	for _, rec := range recs {
		if rec != nil {
			out = append(out, *rec)
		}
	}
	return out, next, nil
}

func (r *records) Lookup(ctx context.Context, tenant string, ref kap.ResourceRef) (kap.StoredRecord, error) {
	if err := kap.ValidateName("tenant", tenant); err != nil {
		return kap.StoredRecord{}, err
	}
	s := (*Store)(r)
	kindID, err := s.c.HGet(ctx, s.tp(tenant)+"ident", identField(ref)).Result()
	if errors.Is(err, goredis.Nil) {
		return kap.StoredRecord{}, kap.Errorf(kap.ENOTFOUND, "no record maps to a %s with that identifier", ref.Type)
	} else if err != nil {
		return kap.StoredRecord{}, wrap(err)
	}
	recs, err := r.latest(ctx, s.tp(tenant)+"rec:"+kindID)
	if err != nil {
		return kap.StoredRecord{}, err
	}
	if recs[0] == nil {
		return kap.StoredRecord{}, kap.Errorf(kap.ENOTFOUND, "no record maps to a %s with that identifier", ref.Type)
	}
	return *recs[0], nil
}

func (r *records) Prune(ctx context.Context, tenant string, p kap.RetentionPolicy) (int, error) {
	if err := kap.ValidateName("tenant", tenant); err != nil {
		return 0, err
	}
	s := (*Store)(r)
	now := s.opt.Now()
	n := 0
	iter := s.c.SScan(ctx, s.tp(tenant)+"recs", 0, "", 200).Iterator()
	for iter.Next(ctx) {
		k := s.tp(tenant) + "rec:" + iter.Val()
		h, err := s.c.HGetAll(ctx, k).Result()
		if err != nil {
			return n, wrap(err)
		}
		vs, err := versions(h)
		if err != nil {
			return n, err
		}
		var doomed []string
		for i, v := range vs {
			if i == 0 || strconv.Itoa(v.Version) == h["latest"] {
				continue // the latest is never pruned
			}
			if (p.MaxVersions > 0 && i >= p.MaxVersions) || (p.MaxAge > 0 && now.Sub(v.StoredAt) > p.MaxAge) {
				keep, err := s.queued(ctx, tenant, p.KeepQueuedFor, v)
				if err != nil {
					return n, err
				}
				if !keep {
					doomed = append(doomed, "v:"+strconv.Itoa(v.Version))
				}
			}
		}
		if len(doomed) > 0 {
			if err := s.c.HDel(ctx, k, doomed...).Err(); err != nil {
				return n, wrap(err)
			}
			n += len(doomed)
		}
	}
	if err := iter.Err(); err != nil {
		return n, wrap(err)
	}
	return n, nil
}

// queued reports whether the outbox message of rec is queued, in flight or
// dead-lettered for one of targets.
func (s *Store) queued(ctx context.Context, tenant string, targets []string, rec kap.StoredRecord) (bool, error) {
	if len(targets) == 0 {
		return false, nil
	}
	id := kap.MessageFor(rec, "", time.Time{}).ID
	pipe := s.c.Pipeline()
	var cmds []*goredis.BoolCmd
	for _, tg := range targets {
		ob := s.obp(tenant, tg)
		cmds = append(cmds, pipe.HExists(ctx, ob+"msgs", id), pipe.HExists(ctx, ob+"dl", id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return false, wrap(err)
	}
	for _, c := range cmds {
		if c.Val() {
			return true, nil
		}
	}
	return false, nil
}
