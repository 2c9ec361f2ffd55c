package redis

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"sort"
	"time"

	kap "github.com/kapbridge/kap"
	goredis "github.com/redis/go-redis/v9"
)

type ledger Store

// ledger keys of a tenant's target: ld:<target> (field -> entry json),
// ldst:<target> (field -> state), lds:<target>:<state> (set of fields).
func (l *ledger) keys(tenant, target string) (entries, states, sets string) {
	tp := (*Store)(l).tp(tenant)
	return tp + "ld:" + target, tp + "ldst:" + target, tp + "lds:" + target + ":"
}

func ledgerField(k kap.LedgerKey) string { return k.ResourceType + "\x00" + k.Identifier }

func (l *ledger) Get(ctx context.Context, k kap.LedgerKey) (kap.LedgerEntry, error) {
	if err := kap.ValidateLedgerKey(k); err != nil {
		return kap.LedgerEntry{}, err
	}
	entries, _, _ := l.keys(k.Tenant, k.Target)
	v, err := l.c.HGet(ctx, entries, ledgerField(k)).Result()
	if errors.Is(err, goredis.Nil) {
		return kap.LedgerEntry{}, kap.Errorf(kap.ENOTFOUND, "no ledger entry for that %s at %s", k.ResourceType, k.Target)
	} else if err != nil {
		return kap.LedgerEntry{}, wrap(err)
	}
	var e kap.LedgerEntry
	if err := json.Unmarshal([]byte(v), &e); err != nil {
		return kap.LedgerEntry{}, wrap(err)
	}
	return e, nil
}

func (l *ledger) Put(ctx context.Context, e kap.LedgerEntry) error {
	if err := kap.ValidateLedgerKey(e.LedgerKey); err != nil {
		return err
	}
	if !e.State.Valid() {
		return kap.Errorf(kap.EINVALID, "state must be sent, confirmed, failed or unknown")
	}
	e.UpdatedAt = l.opt.Now()
	data, err := json.Marshal(e)
	if err != nil {
		return wrap(err)
	}
	entries, states, sets := l.keys(e.Tenant, e.Target)
	return wrap(scriptLedgerPut.Run(ctx, l.c, []string{entries}, states, sets, ledgerField(e.LedgerKey), string(e.State), data).Err())
}

func (l *ledger) PutAll(ctx context.Context, entries []kap.LedgerEntry, opt kap.LedgerPutOptions) error {
	for i, e := range entries {
		if err := kap.ValidateLedgerEntry(e); err != nil {
			return kap.Errorf(kap.EINVALID, "entries[%d]: %s", i, kap.ErrorMessage(err))
		}
	}
	// One script (one slot, atomic) per (tenant, target).
	type group struct{ tenant, target string }
	args := map[group][]any{}
	var order []group
	now := l.opt.Now()
	for _, e := range entries {
		g := group{e.Tenant, e.Target}
		if _, ok := args[g]; !ok {
			_, states, sets := l.keys(e.Tenant, e.Target)
			keep := "0"
			if opt.KeepUnknown {
				keep = "1"
			}
			args[g] = []any{states, sets, keep}
			order = append(order, g)
		}
		e.UpdatedAt = now
		data, err := json.Marshal(e)
		if err != nil {
			return wrap(err)
		}
		args[g] = append(args[g], ledgerField(e.LedgerKey), string(e.State), data)
	}
	for _, g := range order {
		entries, _, _ := l.keys(g.tenant, g.target)
		if err := scriptLedgerPutAll.Run(ctx, l.c, []string{entries}, args[g]...).Err(); err != nil {
			return wrap(err)
		}
	}
	return nil
}

func (l *ledger) ListByState(ctx context.Context, tenant, target string, state kap.LedgerState, limit int) ([]kap.LedgerEntry, error) {
	if err := tenantTarget(tenant, target); err != nil {
		return nil, err
	}
	if !state.Valid() {
		return nil, kap.Errorf(kap.EINVALID, "state must be sent, confirmed, failed or unknown")
	}
	if limit <= 0 {
		limit = 100
	}
	entries, _, sets := l.keys(tenant, target)
	var fields []string
	iter := l.c.SScan(ctx, sets+string(state), 0, "", int64(limit)).Iterator()
	for len(fields) < limit && iter.Next(ctx) {
		fields = append(fields, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, wrap(err)
	}
	if len(fields) == 0 {
		return nil, nil
	}
	sort.Strings(fields)
	vals, err := l.c.HMGet(ctx, entries, fields...).Result()
	if err != nil {
		return nil, wrap(err)
	}
	var out []kap.LedgerEntry
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var e kap.LedgerEntry
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			return nil, wrap(err)
		}
		if e.State == state {
			out = append(out, e)
		}
	}
	return out, nil
}

type cache Store

func (c *cache) key(k string) string { return c.opt.Prefix + ":cache:" + k }

// Values are stored as 8 bytes of expiry (unix ms, by the store's clock)
// followed by the value; Redis expires the key after ttl as well.
func (c *cache) Get(ctx context.Context, k string) ([]byte, error) {
	if err := kap.ValidateID("key", k); err != nil {
		return nil, err
	}
	v, err := c.c.Get(ctx, c.key(k)).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, kap.Errorf(kap.ENOTFOUND, "not cached")
	} else if err != nil {
		return nil, wrap(err)
	}
	if len(v) < 8 || int64(binary.BigEndian.Uint64(v)) <= c.opt.Now().UnixMilli() {
		return nil, kap.Errorf(kap.ENOTFOUND, "not cached")
	}
	return v[8:], nil
}

func (c *cache) Set(ctx context.Context, k string, val []byte, ttl time.Duration) error {
	if err := kap.ValidateID("key", k); err != nil {
		return err
	}
	if ttl <= 0 {
		return kap.Errorf(kap.EINVALID, "ttl must be positive")
	}
	v := make([]byte, 8, 8+len(val))
	binary.BigEndian.PutUint64(v, uint64(c.opt.Now().Add(ttl).UnixMilli()))
	v = append(v, val...)
	return wrap(c.c.Set(ctx, c.key(k), v, ttl).Err())
}

func (c *cache) Delete(ctx context.Context, k string) error {
	if err := kap.ValidateID("key", k); err != nil {
		return err
	}
	return wrap(c.c.Del(ctx, c.key(k)).Err())
}

type idem Store

func (i *idem) key(tenant, k string) string { return (*Store)(i).tp(tenant) + "idem:" + k }

func (i *idem) Reserve(ctx context.Context, tenant, k, fingerprint string) (*kap.StoredResponse, error) {
	if err := kap.ValidateIdempotencyKey(tenant, k); err != nil {
		return nil, err
	}
	res, err := scriptReserve.Run(ctx, i.c, []string{i.key(tenant, k)}, fingerprint, i.opt.Now().UnixMilli(), i.opt.ReservationTTL.Milliseconds()).StringSlice()
	if err != nil {
		return nil, wrap(err)
	}
	switch res[0] {
	case "reserved":
		return nil, nil
	case "fingerprint":
		return nil, kap.ErrIdempotencyKeyReused
	case "inflight":
		return nil, kap.ErrIdempotencyKeyInFlight
	}
	if len(res) < 2 {
		return nil, wrap(errors.New("idempotency entry without a response"))
	}
	var resp kap.StoredResponse
	if err := json.Unmarshal([]byte(res[1]), &resp); err != nil {
		return nil, wrap(err)
	}
	return &resp, nil
}

func (i *idem) Complete(ctx context.Context, tenant, k string, resp kap.StoredResponse) error {
	if err := kap.ValidateIdempotencyKey(tenant, k); err != nil {
		return err
	}
	data, err := json.Marshal(resp)
	if err != nil {
		return wrap(err)
	}
	n, err := scriptComplete.Run(ctx, i.c, []string{i.key(tenant, k)}, data, i.opt.Now().Add(kap.IdempotencyTTL).UnixMilli()).Int()
	if err != nil {
		return wrap(err)
	}
	if n != 1 {
		return kap.Errorf(kap.ENOTFOUND, "the Idempotency-Key is not reserved")
	}
	return nil
}

func (i *idem) Release(ctx context.Context, tenant, k string) error {
	if err := kap.ValidateIdempotencyKey(tenant, k); err != nil {
		return err
	}
	return wrap(scriptRelease.Run(ctx, i.c, []string{i.key(tenant, k)}).Err())
}

type limiter Store

func (l *limiter) Allow(ctx context.Context, k string, rate float64, burst int) (bool, time.Duration, error) {
	if err := kap.ValidateID("key", k); err != nil {
		return false, 0, err
	}
	if !(rate > 0) || math.IsInf(rate, 0) {
		return false, 0, kap.Errorf(kap.EINVALID, "rate must be a positive number of tokens per second")
	}
	if burst < 1 {
		return false, 0, kap.Errorf(kap.EINVALID, "burst must be at least 1")
	}
	res, err := scriptAllow.Run(ctx, l.c, []string{l.opt.Prefix + ":rl:" + k}, rate, burst, l.opt.Now().UnixMilli()).Int64Slice()
	if err != nil {
		return false, 0, wrap(err)
	}
	if res[0] == 1 {
		return true, 0, nil
	}
	return false, max(time.Duration(res[1])*time.Millisecond, time.Millisecond), nil
}
