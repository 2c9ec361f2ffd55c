package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/internal/config"
)

// onQueued returns the hook the API calls after a request queued outbox
// messages: it wakes this process's delivery worker (role all) so that it
// leases at once instead of at its next poll. Nil when the role runs no
// worker; workers of other processes keep polling.
func (m *serveMain) onQueued() func() {
	if !runsWorkers(m.cfg.Config.Role) {
		return nil
	}
	return func() {
		// m.dlv is set before the server starts serving (Open).
		if m.dlv != nil && m.dlv.worker != nil {
			m.dlv.worker.Wake()
		}
	}
}

// Retention of the record history. A process whose role runs workers
// prunes, per tenant and every retentionInterval, the record versions older
// than the retention period. The latest version of a record is never
// pruned (RecordStore.Prune), nor a version whose outbox message is still
// queued, in flight or dead-lettered for a configured target
// (RetentionPolicy.KeepQueuedFor). The default keeps every version for
// seven years, the longest common US medical-record retention rule for
// adults; KAPBRIDGE_RETENTION_DAYS sets another period, 0 turns pruning off.
const (
	defaultRetentionDays = 7 * 365
	retentionInterval    = 6 * time.Hour
	retentionFirstRun    = time.Minute // after the start, out of its way
	retentionEnv         = "KAPBRIDGE_RETENTION_DAYS"
)

// retention is what the pruning loop does.
type retention struct {
	Policy   kap.RetentionPolicy
	Tenants  []string
	Interval time.Duration // between runs
	First    time.Duration // before the first run
}

// retentionOf returns the retention of cfg (enabled false when pruning is
// off) or an error naming the variable for a bad KAPBRIDGE_RETENTION_DAYS.
func retentionOf(cfg config.Config, getenv func(string) string) (r retention, enabled bool, err error) {
	days := defaultRetentionDays
	if v := strings.TrimSpace(getenv(retentionEnv)); v != "" {
		days, err = strconv.Atoi(v)
		if err != nil || days < 0 || days > 100*365 {
			return retention{}, false, fmt.Errorf("%s: %q is not a number of days from 0 (no pruning) to 36500", retentionEnv, v)
		}
	}
	if days == 0 {
		return retention{}, false, nil
	}
	r = retention{Interval: retentionInterval, First: retentionFirstRun,
		Policy: kap.RetentionPolicy{MaxAge: time.Duration(days) * 24 * time.Hour}}
	for _, t := range cfg.Tenants {
		r.Tenants = append(r.Tenants, t.Name)
	}
	keep := []string{httpapi.DefaultTarget} // queued for when no target is configured
	for _, t := range cfg.Targets {
		keep = append(keep, t.Name)
	}
	slices.Sort(keep)
	r.Policy.KeepQueuedFor = slices.Compact(keep)
	return r, true, nil
}

// pruneOnce prunes the history of every tenant and returns how many
// versions it removed. A tenant whose prune fails is logged (no PHI) and
// the others still run; the first error is returned.
func pruneOnce(ctx context.Context, store kap.Store, r retention, log *slog.Logger) (int, error) {
	total := 0
	var first error
	for _, ten := range r.Tenants {
		n, err := store.Records().Prune(ctx, ten, r.Policy)
		total += n
		if err != nil {
			if ctx.Err() != nil {
				return total, ctx.Err()
			}
			log.Error("retention prune failed", "tenant", ten, "err", err)
			if first == nil {
				first = err
			}
			continue
		}
		if n > 0 {
			log.Info("retention pruned old record versions", "tenant", ten, "versions", n)
		}
	}
	return total, first
}

// retentionRun is the pruning loop of a serving process.
type retentionRun struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startRetention runs pruneOnce after r.First and then every r.Interval
// until stop.
func startRetention(ctx context.Context, store kap.Store, r retention, log *slog.Logger) *retentionRun {
	ctx, cancel := context.WithCancel(ctx)
	run := &retentionRun{cancel: cancel}
	run.wg.Add(1)
	go func() {
		defer run.wg.Done()
		t := time.NewTimer(r.First)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			pruneOnce(ctx, store, r, log)
			t.Reset(r.Interval)
		}
	}()
	return run
}

// stop ends the loop and waits for a prune in progress; nil-safe.
func (r *retentionRun) stop() {
	if r == nil {
		return
	}
	r.cancel()
	r.wg.Wait()
}

// startRetention starts the pruning loop when the role runs workers and
// retention is on. Returns an error for a bad KAPBRIDGE_RETENTION_DAYS.
func (m *serveMain) startRetention(ctx context.Context, store kap.Store, getenv func(string) string) error {
	if !runsWorkers(m.cfg.Config.Role) {
		return nil
	}
	r, on, err := retentionOf(m.cfg.Config, getenv)
	if err != nil || !on {
		return err
	}
	m.ret = startRetention(ctx, store, r, m.cfg.Logger)
	return nil
}
