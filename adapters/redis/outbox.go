package redis

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"
	"time"

	kap "github.com/kapbridge/kap"
	goredis "github.com/redis/go-redis/v9"
)

// The outbox of a tenant's target lives under kap:{t:<tenant>}:ob:<target>:
//
//	s          stream, consumer group "w": one entry per client whose head
//	           message is due or in flight (field c = client id)
//	q:<client> list: the client's message ids in enqueue order
//	msgs       hash id -> message json (without attempts)
//	att:<id>   list of attempt json
//	tok        hash id -> fencing token, bumped by every lease and retry
//	age        zset id -> enqueued ms (depth and oldest)
//	delay      zset client -> retry ms
//	dl, dlmeta hash id -> message json, {reason, deadAt}
//	dlz        zset id -> dead ms
//	claimcur   XAUTOCLAIM cursor
//
// A worker reads stream entries (XREADGROUP, or XAUTOCLAIM for entries idle
// longer than the lease) and leases the head of the entry's client. Ack pops
// the head and adds a new entry if the client has more; Retry removes the
// entry and puts the client into delay until the retry time.

type outbox Store

type deadMeta struct {
	Reason string    `json:"reason"`
	DeadAt time.Time `json:"deadAt"`
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
	now := s.opt.Now()
	// Group by tenant: one script (one slot) per tenant.
	byTenant := map[string][]kap.OutboxMessage{}
	var tenants []string
	for _, m := range msgs {
		if _, ok := byTenant[m.Tenant]; !ok {
			tenants = append(tenants, m.Tenant)
		}
		byTenant[m.Tenant] = append(byTenant[m.Tenant], m)
	}
	for _, ten := range tenants {
		ms := byTenant[ten]
		args := []any{len(ms)}
		seen := map[string]bool{}
		for _, m := range ms {
			if !seen[m.Target] {
				seen[m.Target] = true
				if err := s.c.SAdd(ctx, s.targetTenants(m.Target), ten).Err(); err != nil {
					return wrap(err)
				}
			}
			if m.EnqueuedAt.IsZero() {
				m.EnqueuedAt = now
			}
			m.Attempts = nil // attempts are kept in their own list
			data, err := kap.MarshalOutboxMessage(m)
			if err != nil {
				return wrap(err)
			}
			args = append(args, s.obp(ten, m.Target), m.ClientID, m.ID, data, m.EnqueuedAt.UnixMilli())
		}
		if err := scriptEnqueue.Run(ctx, s.c, []string{s.obp(ten, ms[0].Target) + "s"}, args...).Err(); err != nil {
			return wrap(err)
		}
	}
	return nil
}

func (o *outbox) Lease(ctx context.Context, target string, max int) ([]kap.Lease, error) {
	if err := kap.ValidateName("target", target); err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, nil
	}
	s := (*Store)(o)
	tenants, err := s.c.SMembers(ctx, s.targetTenants(target)).Result()
	if err != nil {
		return nil, wrap(err)
	}
	sort.Strings(tenants)
	var out []kap.Lease
	start := 0
	if len(tenants) > 0 {
		start = int(s.rot.Add(1) % uint64(len(tenants)))
	}
	for i := range tenants {
		if len(out) >= max {
			break
		}
		ten := tenants[(start+i)%len(tenants)]
		ob := s.obp(ten, target)
		now := s.opt.Now()
		res, err := scriptLease.Run(ctx, s.c, []string{ob + "s"},
			ob, s.opt.Consumer, s.opt.LeaseTTL.Milliseconds(), max-len(out), ms(now),
			time.Now().Add(s.opt.LeaseTTL).UnixMilli()).Slice()
		if err != nil {
			return out, wrap(err)
		}
		deadline := time.Now().Add(s.opt.LeaseTTL)
		for _, item := range res {
			f, ok := item.([]any)
			if !ok || len(f) < 3 {
				continue
			}
			eid, _ := f[0].(string)
			tok, _ := f[1].(string)
			data, _ := f[2].(string)
			var m kap.OutboxMessage
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				return out, wrap(err)
			}
			for _, a := range f[3:] {
				var at kap.Attempt
				if s, ok := a.(string); ok && json.Unmarshal([]byte(s), &at) == nil {
					m.Attempts = append(m.Attempts, at)
				}
			}
			out = append(out, kap.Lease{Message: m, Token: eid + "/" + tok, Deadline: deadline})
		}
	}
	return out, nil
}

var errLeaseLost = kap.Errorf(kap.ECONFLICT, "the lease is no longer held: another worker took the message or it is gone")

// leaseArgs returns the stream key and the luaCheck arguments of l.
func (s *Store) leaseArgs(l kap.Lease) (string, []any, error) {
	if err := kap.ValidateMessage(l.Message); err != nil {
		return "", nil, err
	}
	eid, tok, ok := strings.Cut(l.Token, "/")
	if !ok || eid == "" || tok == "" {
		return "", nil, kap.Errorf(kap.EINVALID, "lease token is malformed")
	}
	m := l.Message
	ob := s.obp(m.Tenant, m.Target)
	return ob + "s", []any{ob, m.ClientID, m.ID, tok, eid}, nil
}

func (s *Store) runLease(ctx context.Context, sc *goredis.Script, l kap.Lease, extra ...any) error {
	key, args, err := s.leaseArgs(l)
	if err != nil {
		return err
	}
	n, err := sc.Run(ctx, s.c, []string{key}, append(args, extra...)...).Int()
	if err != nil {
		return wrap(err)
	}
	if n != 1 {
		return errLeaseLost
	}
	return nil
}

func (o *outbox) Ack(ctx context.Context, l kap.Lease) error {
	return (*Store)(o).runLease(ctx, scriptAck, l)
}

func (o *outbox) Retry(ctx context.Context, l kap.Lease, at time.Time, a kap.Attempt) error {
	aj, err := json.Marshal(a)
	if err != nil {
		return wrap(err)
	}
	return (*Store)(o).runLease(ctx, scriptRetry, l, ms(at), aj)
}

func (o *outbox) DeadLetter(ctx context.Context, l kap.Lease, reason string, a kap.Attempt) error {
	s := (*Store)(o)
	now := s.opt.Now()
	aj, err := json.Marshal(a)
	if err != nil {
		return wrap(err)
	}
	mj, err := json.Marshal(deadMeta{Reason: reason, DeadAt: now})
	if err != nil {
		return wrap(err)
	}
	return s.runLease(ctx, scriptDeadLetter, l, ms(now), aj, mj)
}

func tenantTarget(tenant, target string) error {
	if err := kap.ValidateName("tenant", tenant); err != nil {
		return err
	}
	return kap.ValidateName("target", target)
}

func (o *outbox) DeadLetters(ctx context.Context, tenant, target string, limit int) ([]kap.DeadLetter, error) {
	if err := tenantTarget(tenant, target); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	s := (*Store)(o)
	ob := s.obp(tenant, target)
	ids, err := s.c.ZRange(ctx, ob+"dlz", 0, int64(limit-1)).Result()
	if err != nil || len(ids) == 0 {
		return nil, wrap(err)
	}
	pipe := s.c.Pipeline()
	msgs := pipe.HMGet(ctx, ob+"dl", ids...)
	metas := pipe.HMGet(ctx, ob+"dlmeta", ids...)
	atts := make([]*goredis.StringSliceCmd, len(ids))
	for i, id := range ids {
		atts[i] = pipe.LRange(ctx, ob+"att:"+id, 0, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, wrap(err)
	}
	var out []kap.DeadLetter
	for i := range ids {
		mv, _ := msgs.Val()[i].(string)
		if mv == "" {
			continue // replayed in between
		}
		var dl kap.DeadLetter
		if err := json.Unmarshal([]byte(mv), &dl.Message); err != nil {
			return nil, wrap(err)
		}
		if meta, _ := metas.Val()[i].(string); meta != "" {
			var dm deadMeta
			if err := json.Unmarshal([]byte(meta), &dm); err != nil {
				return nil, wrap(err)
			}
			dl.Reason, dl.DeadAt = dm.Reason, dm.DeadAt
		}
		for _, a := range atts[i].Val() {
			var at kap.Attempt
			if err := json.Unmarshal([]byte(a), &at); err != nil {
				return nil, wrap(err)
			}
			dl.Message.Attempts = append(dl.Message.Attempts, at)
		}
		out = append(out, dl)
	}
	return out, nil
}

func (o *outbox) Replay(ctx context.Context, tenant, target, id string) error {
	if err := tenantTarget(tenant, target); err != nil {
		return err
	}
	if err := kap.ValidateID("id", id); err != nil {
		return err
	}
	s := (*Store)(o)
	ob := s.obp(tenant, target)
	// Read the dead letter and its attempt count, set the replay counters
	// (a fresh attempt budget), and queue it if it did not change meanwhile.
	for range 10 {
		pipe := s.c.Pipeline()
		dataCmd := pipe.HGet(ctx, ob+"dl", id)
		nCmd := pipe.LLen(ctx, ob+"att:"+id)
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
			return wrap(err)
		}
		data, err := dataCmd.Result()
		if errors.Is(err, goredis.Nil) {
			return kap.Errorf(kap.ENOTFOUND, "no dead letter with that id")
		} else if err != nil {
			return wrap(err)
		}
		natt := int(nCmd.Val())
		var m kap.OutboxMessage
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			return wrap(err)
		}
		m.Attempts = nil // kept in their own list
		m.Replays++
		m.ReplayedAttempts = natt
		next, err := kap.MarshalOutboxMessage(m)
		if err != nil {
			return wrap(err)
		}
		if err := s.c.SAdd(ctx, s.targetTenants(target), tenant).Err(); err != nil {
			return wrap(err)
		}
		n, err := scriptReplay.Run(ctx, s.c, []string{ob + "s"}, ob, m.ClientID, id, m.EnqueuedAt.UnixMilli(),
			data, natt, next).Int()
		if err != nil {
			return wrap(err)
		}
		switch n {
		case 1:
			return nil
		case 0:
			return kap.Errorf(kap.ENOTFOUND, "no dead letter with that id")
		}
		// -1: replayed and dead-lettered again in between; read it anew.
	}
	return kap.Errorf(kap.ECONFLICT, "the dead letter kept changing during the replay; try again")
}

func (o *outbox) Discard(ctx context.Context, tenant, target, id, reason string) error {
	if err := tenantTarget(tenant, target); err != nil {
		return err
	}
	if err := kap.ValidateID("id", id); err != nil {
		return err
	}
	s := (*Store)(o)
	ob := s.obp(tenant, target)
	n, err := scriptDiscard.Run(ctx, s.c, []string{ob + "dl"}, ob, id).Int()
	if err != nil {
		return wrap(err)
	}
	if n != 1 {
		return kap.Errorf(kap.ENOTFOUND, "no dead letter with that id")
	}
	return nil
}

func (o *outbox) ReplayAll(ctx context.Context, tenant, target string) (int, error) {
	if err := tenantTarget(tenant, target); err != nil {
		return 0, err
	}
	s := (*Store)(o)
	ids, err := s.c.ZRange(ctx, s.obp(tenant, target)+"dlz", 0, -1).Result()
	if err != nil {
		return 0, wrap(err)
	}
	n := 0
	for _, id := range ids {
		err := o.Replay(ctx, tenant, target, id)
		if kap.ErrorCode(err) == kap.ENOTFOUND {
			continue // replayed by someone else
		} else if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (o *outbox) Stats(ctx context.Context, target string) (kap.OutboxStats, error) {
	if err := kap.ValidateName("target", target); err != nil {
		return kap.OutboxStats{}, err
	}
	s := (*Store)(o)
	tenants, err := s.c.SMembers(ctx, s.targetTenants(target)).Result()
	if err != nil {
		return kap.OutboxStats{}, wrap(err)
	}
	var st kap.OutboxStats
	for _, ten := range tenants {
		ob := s.obp(ten, target)
		pipe := s.c.Pipeline()
		depth := pipe.ZCard(ctx, ob+"age")
		oldest := pipe.ZRangeWithScores(ctx, ob+"age", 0, 0)
		dead := pipe.ZCard(ctx, ob+"dlz")
		if _, err := pipe.Exec(ctx); err != nil {
			return kap.OutboxStats{}, wrap(err)
		}
		st.Depth += int(depth.Val())
		st.DeadLetters += int(dead.Val())
		if z := oldest.Val(); len(z) == 1 {
			t := time.UnixMilli(int64(z[0].Score))
			if st.Oldest.IsZero() || t.Before(st.Oldest) {
				st.Oldest = t
			}
		}
	}
	return st, nil
}

func (o *outbox) Release(ctx context.Context, l kap.Lease) error {
	return (*Store)(o).runLease(ctx, scriptReleaseLease, l)
}

func (o *outbox) Status(ctx context.Context, tenant, target, id string) (kap.MessageStatus, error) {
	if err := tenantTarget(tenant, target); err != nil {
		return kap.MessageStatus{}, err
	}
	if err := kap.ValidateID("id", id); err != nil {
		return kap.MessageStatus{}, err
	}
	s := (*Store)(o)
	ob := s.obp(tenant, target)
	res, err := scriptStatus.Run(ctx, s.c, []string{ob + "s"}, ob, id).Slice()
	if err != nil {
		return kap.MessageStatus{}, wrap(err)
	}
	str := func(i int) string {
		if i < len(res) {
			v, _ := res[i].(string)
			return v
		}
		return ""
	}
	attempts := func(i int) ([]kap.Attempt, error) {
		list, _ := res[i].([]any)
		var out []kap.Attempt
		for _, a := range list {
			as, _ := a.(string)
			var at kap.Attempt
			if err := json.Unmarshal([]byte(as), &at); err != nil {
				return nil, wrap(err)
			}
			out = append(out, at)
		}
		return out, nil
	}
	st := kap.MessageStatus{ID: id}
	switch str(0) {
	case "m":
		var m kap.OutboxMessage
		if err := json.Unmarshal([]byte(str(1)), &m); err != nil {
			return kap.MessageStatus{}, wrap(err)
		}
		st.EnqueuedAt = m.EnqueuedAt
		if st.Attempts, err = attempts(5); err != nil {
			return kap.MessageStatus{}, err
		}
		lease, _ := strconv.ParseInt(str(2), 10, 64)
		delay, _ := strconv.ParseFloat(str(3), 64)
		switch {
		case str(4) == "1" && lease > time.Now().UnixMilli():
			st.State, st.LeaseDeadline = kap.MessageInFlight, time.UnixMilli(lease)
		case str(4) == "1" && str(3) != "":
			st.State, st.NextAttempt = kap.MessageRetrying, time.UnixMilli(int64(delay))
		case len(st.Attempts) > 0:
			st.State = kap.MessageRetrying
		default:
			st.State = kap.MessageQueued
		}
		return st, nil
	case "d":
		var m kap.OutboxMessage
		if err := json.Unmarshal([]byte(str(1)), &m); err != nil {
			return kap.MessageStatus{}, wrap(err)
		}
		st.State, st.EnqueuedAt = kap.MessageDead, m.EnqueuedAt
		if meta := str(2); meta != "" {
			var dm deadMeta
			if err := json.Unmarshal([]byte(meta), &dm); err != nil {
				return kap.MessageStatus{}, wrap(err)
			}
			st.Reason, st.DeadAt = dm.Reason, dm.DeadAt
		}
		if st.Attempts, err = attempts(3); err != nil {
			return kap.MessageStatus{}, err
		}
		return st, nil
	}
	return kap.MessageStatus{}, kap.Errorf(kap.ENOTFOUND, "no queued or dead-lettered message with that id")
}
