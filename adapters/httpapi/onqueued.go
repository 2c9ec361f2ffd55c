package httpapi

import (
	"context"

	"github.com/kapbridge/kap"
)

// queuedStore wraps a kap.Store so that every write that queues outbox
// messages (Records().Put with targets that created a version,
// Outbox().Enqueue, Replay, ReplayAll) calls onQueued after it committed:
// a delivery worker in the same process (role all) then leases at once
// instead of at its next poll. Workers in other processes keep polling.
type queuedStore struct {
	kap.Store
	onQueued func()
}

// withOnQueued returns st calling onQueued after each successful enqueue;
// st itself when onQueued is nil.
func withOnQueued(st kap.Store, onQueued func()) kap.Store {
	if onQueued == nil {
		return st
	}
	return queuedStore{Store: st, onQueued: onQueued}
}

func (s queuedStore) Records() kap.RecordStore {
	return queuedRecords{RecordStore: s.Store.Records(), onQueued: s.onQueued}
}

func (s queuedStore) Outbox() kap.Outbox {
	return queuedOutbox{Outbox: s.Store.Outbox(), onQueued: s.onQueued}
}

type queuedRecords struct {
	kap.RecordStore
	onQueued func()
}

func (r queuedRecords) Put(ctx context.Context, rec kap.StoredRecord, opt kap.PutOptions) (kap.StoredRecord, bool, error) {
	stored, created, err := r.RecordStore.Put(ctx, rec, opt)
	if err == nil && created && len(opt.Targets) > 0 {
		r.onQueued()
	}
	return stored, created, err
}

type queuedOutbox struct {
	kap.Outbox
	onQueued func()
}

func (o queuedOutbox) Enqueue(ctx context.Context, msgs ...kap.OutboxMessage) error {
	err := o.Outbox.Enqueue(ctx, msgs...)
	if err == nil && len(msgs) > 0 {
		o.onQueued()
	}
	return err
}

func (o queuedOutbox) Replay(ctx context.Context, tenant, target, id string) error {
	err := o.Outbox.Replay(ctx, tenant, target, id)
	if err == nil {
		o.onQueued()
	}
	return err
}

func (o queuedOutbox) ReplayAll(ctx context.Context, tenant, target string) (int, error) {
	n, err := o.Outbox.ReplayAll(ctx, tenant, target)
	if n > 0 {
		o.onQueued()
	}
	return n, err
}
