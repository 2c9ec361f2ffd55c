// Package delivery is the delivery worker: for each configured target it
// leases due messages from the outbox, hands each to the target's
// kap.Sender, and then acknowledges, retries or dead-letters it by what Send
// returned, writing what the target answered to the ledger. A circuit
// breaker per target (github.com/sony/gobreaker/v2) stops leasing for a
// target that keeps failing, so its messages stay queued instead of burning
// their attempts. Stop returns the leases a worker still holds so another
// worker takes them at once.
//
// Ordering per (target, client) is the outbox's job: it leases at most one
// message of a client at a time, and the worker never leases for a client on
// its own.
package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/internal/metrics"
)

// Target is one delivery target served by the worker.
type Target struct {
	// Sender delivers to the target (required); Sender.Target() is the
	// outbox target name.
	Sender kap.Sender
	// Concurrency is how many messages may be in flight at once; default 4.
	Concurrency int
	// SendTimeout bounds one Send (config.Target.TotalTimeout); default 60s.
	// It is also cut to the lease deadline, so a send never outlives its
	// lease.
	SendTimeout time.Duration
	// Backoff is the retry policy; its MaxAttempts is the number of
	// attempts before a message is dead-lettered (config maxAttempts).
	Backoff kap.Backoff
}

// Breaker configures the circuit breaker of every target.
type Breaker struct {
	// Failures is how many consecutive transient (or unknown) failures
	// open the circuit; default 5.
	Failures int
	// OpenFor is how long the circuit stays open before one probe is let
	// through (half-open); default 30s.
	OpenFor time.Duration
}

// Config configures a Worker.
type Config struct {
	// Store is the durable state layer: its Outbox and Ledger (required).
	Store kap.Store
	// Targets are the targets to deliver to (at least one).
	Targets []Target
	// Breaker configures the circuit breaker of each target.
	Breaker Breaker
	// Metrics receives Deliveries, Retries, DeliveryDuration and
	// CircuitState; nil disables metrics.
	Metrics *metrics.Metrics
	// Logger receives the worker's log (no PHI: target names, message
	// counts, statuses); nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock of attempts and retry times; nil means time.Now.
	Now func() time.Time
	// PollMin and PollMax bound the idle polling: after an empty lease
	// the worker waits PollMin, doubling up to PollMax, until a lease
	// returns messages or Wake is called; defaults 20ms and 1s.
	PollMin, PollMax time.Duration
	// StoreTimeout bounds each store call made after a send (ledger, ack,
	// retry, dead-letter, release); default 10s.
	StoreTimeout time.Duration
}

// Worker delivers the outbox of its targets. Start it once, Stop it once.
type Worker struct {
	cfg     Config
	log     *slog.Logger
	targets []*target

	mu      sync.Mutex
	running bool
	started bool
	ctx     context.Context    // ends with Start's ctx or a hard stop
	cancel  context.CancelFunc // cancels the sends (hard stop)
	stop    chan struct{}      // closed by Stop: no more leases
	loops   sync.WaitGroup
}

// target is the state of one target.
type target struct {
	Target
	name    string
	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]
	wake    chan struct{}
	sends   sync.WaitGroup

	mu          sync.Mutex
	inFlight    map[string]kap.Lease // lease token+id -> lease
	pauseUntil  time.Time            // a Retry-After pauses the whole target
	lastSuccess time.Time
	lastError   string
	lastErrorAt time.Time
	delivered   int64
	failed      int64
}

// New checks cfg and returns a worker that is not started.
func New(cfg Config) (*Worker, error) {
	if cfg.Store == nil {
		return nil, errors.New("delivery: Store is required")
	}
	if len(cfg.Targets) == 0 {
		return nil, errors.New("delivery: at least one target is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PollMin <= 0 {
		cfg.PollMin = 20 * time.Millisecond
	}
	if cfg.PollMax < cfg.PollMin {
		cfg.PollMax = max(time.Second, cfg.PollMin)
	}
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = 10 * time.Second
	}
	if cfg.Breaker.Failures <= 0 {
		cfg.Breaker.Failures = 5
	}
	if cfg.Breaker.OpenFor <= 0 {
		cfg.Breaker.OpenFor = 30 * time.Second
	}
	w := &Worker{cfg: cfg, log: cfg.Logger, stop: make(chan struct{})}
	seen := map[string]bool{}
	for i, tc := range cfg.Targets {
		if tc.Sender == nil {
			return nil, fmt.Errorf("delivery: targets[%d].Sender is required", i)
		}
		name := tc.Sender.Target()
		if err := kap.ValidateName(fmt.Sprintf("targets[%d] name", i), name); err != nil {
			return nil, fmt.Errorf("delivery: %w", err)
		}
		if seen[name] {
			return nil, fmt.Errorf("delivery: target %q is configured twice", name)
		}
		seen[name] = true
		if tc.Concurrency <= 0 {
			tc.Concurrency = 4
		}
		if tc.SendTimeout <= 0 {
			tc.SendTimeout = time.Minute
		}
		t := &target{Target: tc, name: name, wake: make(chan struct{}, 1), inFlight: map[string]kap.Lease{}}
		failures := uint32(cfg.Breaker.Failures)
		t.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        name,
			MaxRequests: 1,
			Timeout:     cfg.Breaker.OpenFor,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
			// Only transient and unknown outcomes count as failures; a
			// permanent refusal is the target answering.
			IsSuccessful: func(err error) bool { return err == nil },
			IsExcluded:   func(err error) bool { return errors.Is(err, errStopped) },
			OnStateChange: func(name string, from, to gobreaker.State) {
				w.log.Warn("delivery circuit changed", "target", name, "from", from.String(), "to", to.String())
				w.setCircuitMetric(name, to)
			},
		})
		w.setCircuitMetric(name, gobreaker.StateClosed)
		w.targets = append(w.targets, t)
	}
	return w, nil
}

// errStopped marks a send cut short by Stop (or never begun); it does not
// count against the target's circuit.
var errStopped = errors.New("delivery stopped")

func (w *Worker) setCircuitMetric(name string, s gobreaker.State) {
	if w.cfg.Metrics == nil {
		return
	}
	v := 0.0
	switch s {
	case gobreaker.StateHalfOpen:
		v = 1
	case gobreaker.StateOpen:
		v = 2
	}
	w.cfg.Metrics.CircuitState.WithLabelValues(name).Set(v)
}

// Start starts one lease loop per target. Cancelling ctx cancels the sends
// in flight (a hard stop); Stop is the graceful one. Start returns an error
// if the worker was already started.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return errors.New("delivery: the worker was already started")
	}
	w.started, w.running = true, true
	ctx, w.cancel = context.WithCancel(ctx)
	w.ctx = ctx
	for _, t := range w.targets {
		w.loops.Add(1)
		go func() {
			defer w.loops.Done()
			w.loop(ctx, t)
		}()
	}
	w.log.Info("delivery worker started", "targets", len(w.targets))
	return nil
}

// Wake makes every idle target poll the outbox now (for example after an
// API request queued a message). It never blocks.
func (w *Worker) Wake() {
	for _, t := range w.targets {
		t.poke()
	}
}

func (t *target) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Stop stops leasing, waits for the sends in flight until ctx is done, then
// cancels those still running and returns their leases to the outbox
// (Outbox.Release) so another worker can take them at once. It returns
// ctx.Err() when it had to cancel sends.
func (w *Worker) Stop(ctx context.Context) error {
	w.mu.Lock()
	if !w.started || !w.running {
		w.mu.Unlock()
		return nil
	}
	w.running = false
	close(w.stop)
	w.mu.Unlock()

	done := make(chan struct{})
	go func() {
		w.loops.Wait()
		for _, t := range w.targets {
			t.sends.Wait()
		}
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		w.cancel() // sends see errStopped and release their leases
		<-done
	}
	w.cancel()
	w.log.Info("delivery worker stopped")
	return err
}

// Running reports whether the worker was started and neither stopped nor
// its Start context cancelled.
func (w *Worker) Running() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.running && w.ctx.Err() == nil
}

// Health is what the readiness check and the admin console show.
type Health struct {
	Running bool           `json:"running"`
	Targets []TargetHealth `json:"targets"`
}

// TargetHealth is the delivery state of one target. LastError never holds
// PHI.
type TargetHealth struct {
	Name        string    `json:"name"`
	Circuit     string    `json:"circuit"` // closed, half-open or open
	InFlight    int       `json:"inFlight"`
	PausedUntil time.Time `json:"pausedUntil,omitzero"` // a Retry-After the target sent
	Delivered   int64     `json:"delivered"`
	Failed      int64     `json:"failed"` // attempts that did not deliver
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
}

// Health returns the state of the worker and of each target.
func (w *Worker) Health() Health {
	h := Health{Running: w.Running()}
	now := w.cfg.Now()
	for _, t := range w.targets {
		st := t.breaker.State()
		w.setCircuitMetric(t.name, st)
		t.mu.Lock()
		th := TargetHealth{Name: t.name, Circuit: st.String(), InFlight: len(t.inFlight),
			Delivered: t.delivered, Failed: t.failed, LastSuccess: t.lastSuccess,
			LastError: t.lastError, LastErrorAt: t.lastErrorAt}
		if t.pauseUntil.After(now) {
			th.PausedUntil = t.pauseUntil
		}
		t.mu.Unlock()
		h.Targets = append(h.Targets, th)
	}
	return h
}

// loop leases and dispatches the messages of one target until Stop.
func (w *Worker) loop(ctx context.Context, t *target) {
	idle := w.cfg.PollMin
	timer := time.NewTimer(0)
	defer timer.Stop()
	wait := func(d time.Duration) bool {
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(d)
		select {
		case <-w.stop:
			return false
		case <-ctx.Done():
			return false
		case <-t.wake:
			return true
		case <-timer.C:
			return true
		}
	}
	for {
		select {
		case <-w.stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		now := w.cfg.Now()
		t.mu.Lock()
		free := t.Concurrency - len(t.inFlight)
		pause := t.pauseUntil.Sub(now)
		t.mu.Unlock()
		if pause > 0 {
			if !wait(min(pause, w.cfg.PollMax)) {
				return
			}
			continue
		}
		switch t.breaker.State() {
		case gobreaker.StateOpen:
			// Messages stay queued; check again when the circuit may
			// have turned half-open.
			if !wait(w.cfg.PollMax) {
				return
			}
			continue
		case gobreaker.StateHalfOpen:
			// One probe at a time.
			if free < t.Concurrency {
				free = 0
			} else {
				free = 1
			}
		}
		if free <= 0 {
			if !wait(w.cfg.PollMax) { // a finished send pokes us sooner
				return
			}
			continue
		}
		leases, err := w.cfg.Store.Outbox().Lease(ctx, t.name, free)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Error("delivery lease failed", "target", t.name, "err", err)
			}
			idle = min(idle*2, w.cfg.PollMax)
			if !wait(idle) {
				return
			}
			continue
		}
		if len(leases) == 0 {
			if !wait(idle) {
				return
			}
			idle = min(idle*2, w.cfg.PollMax)
			continue
		}
		idle = w.cfg.PollMin
		select {
		case <-w.stop: // Stop came during the lease: give them back
			for _, l := range leases {
				w.release(t, l)
			}
			return
		default:
		}
		for _, l := range leases {
			done, err := t.breaker.Allow()
			if err != nil {
				// The circuit opened while these were leased: give them
				// back untouched.
				w.release(t, l)
				continue
			}
			t.mu.Lock()
			t.inFlight[leaseKey(l)] = l
			t.mu.Unlock()
			t.sends.Add(1)
			go func() {
				defer t.sends.Done()
				defer t.poke()
				outcome := w.deliver(ctx, t, l)
				done(outcome)
				t.mu.Lock()
				delete(t.inFlight, leaseKey(l))
				t.mu.Unlock()
			}()
		}
	}
}

func leaseKey(l kap.Lease) string {
	return l.Message.Tenant + "\x00" + l.Message.ID + "\x00" + l.Token
}

// release gives a lease back without spending an attempt, so that the
// message is due at once for any worker.
func (w *Worker) release(t *target, l kap.Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.StoreTimeout)
	defer cancel()
	if err := w.cfg.Store.Outbox().Release(ctx, l); err != nil && kap.ErrorCode(err) != kap.ECONFLICT {
		w.log.Error("delivery release failed", "target", t.name, "err", err)
	}
}

// deliver sends one leased message and records the outcome. It returns
// what the circuit breaker should count: nil for a delivery or a refusal,
// an error for a transient or unknown failure, errStopped for a send cut
// short by Stop.
func (w *Worker) deliver(ctx context.Context, t *target, l kap.Lease) error {
	msg := l.Message
	start := time.Now()
	timeout := t.SendTimeout
	if !l.Deadline.IsZero() {
		// Never outlive the lease; leave a margin to record the outcome
		// before it expires. (The lease deadline is on the store's clock.)
		left := l.Deadline.Sub(w.cfg.Now())
		timeout = min(timeout, left-min(time.Second, left/10))
	}
	if timeout <= 0 {
		// The lease ran out before the send began (a stalled process):
		// another worker may hold the message already.
		w.log.Warn("delivery lease expired before the send", "target", t.name)
		w.release(t, l)
		return errStopped
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	res, err := w.send(sctx, t, msg)
	cancel()
	if w.cfg.Metrics != nil {
		w.cfg.Metrics.DeliveryDuration.WithLabelValues(t.name).Observe(time.Since(start).Seconds())
	}
	// Store calls after the send must not be cut by a cancelled ctx: the
	// outcome of a completed send has to be recorded.
	bg, bgCancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.StoreTimeout)
	defer bgCancel()
	ob := w.cfg.Store.Outbox()
	now := w.cfg.Now()

	if err == nil {
		w.writeLedger(bg, t, msg, res.Resources, kap.LedgerConfirmed, "")
		for _, ns := range res.NotSent {
			if ns.Identifier == "" || ns.ResourceType == "" {
				continue // nothing to key a ledger entry on
			}
			w.writeLedger(bg, t, msg, []kap.LedgerEntry{{LedgerKey: kap.LedgerKey{ResourceType: ns.ResourceType, Identifier: ns.Identifier},
				State: kap.LedgerFailed, LastError: "not sent: " + ns.Reason}}, kap.LedgerFailed, "")
		}
		if aerr := ob.Ack(bg, l); aerr != nil {
			// The target has it; the message will be delivered again
			// (idempotently) when its lease expires.
			w.log.Warn("delivery ack failed", "target", t.name, "err", aerr)
		}
		w.count(t, "delivered")
		t.mu.Lock()
		t.lastSuccess, t.delivered = now, t.delivered+1
		t.mu.Unlock()
		return nil
	}

	se := kap.SendErrorOf(err)
	stopped := ctx.Err() != nil
	attempt := kap.Attempt{At: now, Status: se.Status, Error: safeError(se), RetryAfter: se.RetryAfter,
		OperationOutcome: se.OperationOutcome}
	w.writeLedger(bg, t, msg, se.Resources, kap.LedgerConfirmed, "")
	t.mu.Lock()
	t.failed++
	t.lastError, t.lastErrorAt = attempt.Error, now
	t.mu.Unlock()

	if se.Kind == kap.SendUnknown {
		w.markUnknown(bg, t, msg, se)
	}
	if stopped {
		// Stop cancelled the send: give the lease back without spending
		// an attempt; the next worker resolves an unknown write by
		// reading the target.
		w.release(t, l)
		return errStopped
	}

	switch se.Kind {
	case kap.SendPermanent:
		w.markFailed(bg, t, msg, se, attempt.Error)
		if derr := ob.DeadLetter(bg, l, permanentReason(se), attempt); derr != nil {
			w.log.Error("delivery dead-letter failed", "target", t.name, "err", derr)
		}
		w.count(t, "dead")
		w.log.Warn("delivery refused by target", "target", t.name, "kind", msg.Kind, "status", se.Status)
		return nil
	default: // transient, unknown
		// Attempts before a replay are history: a replayed message has
		// a fresh budget.
		n := msg.AttemptsSinceReplay() + 1
		if se.RetryAfter > 0 {
			limit := t.Backoff.MaxRetryAfter
			if limit <= 0 {
				limit = time.Hour
			}
			until := now.Add(min(se.RetryAfter, limit))
			t.mu.Lock()
			if until.After(t.pauseUntil) {
				t.pauseUntil = until
			}
			t.mu.Unlock()
		}
		next, ok := t.Backoff.Next(now, n, se.RetryAfter)
		if !ok {
			if se.Kind != kap.SendUnknown {
				// An unknown entry of an earlier attempt stays unknown
				// (writeLedger): only a read of the target resolves it.
				w.markFailed(bg, t, msg, se, attempt.Error)
			}
			reason := fmt.Sprintf("%d attempts failed; last: %s", n, attempt.Error)
			if derr := ob.DeadLetter(bg, l, reason, attempt); derr != nil {
				w.log.Error("delivery dead-letter failed", "target", t.name, "err", derr)
			}
			w.count(t, "dead")
			w.log.Warn("delivery dead-lettered after retries", "target", t.name, "kind", msg.Kind, "attempts", n)
			return err
		}
		if rerr := ob.Retry(bg, l, next, attempt); rerr != nil {
			w.log.Error("delivery retry failed", "target", t.name, "err", rerr)
		}
		if se.Kind == kap.SendUnknown {
			w.count(t, "unknown")
		} else {
			w.count(t, "retry")
		}
		if w.cfg.Metrics != nil {
			w.cfg.Metrics.Retries.WithLabelValues(t.name).Inc()
		}
		w.log.Info("delivery will be retried", "target", t.name, "kind", msg.Kind, "attempt", n,
			"status", se.Status, "error_kind", string(se.Kind), "in", next.Sub(now).Round(time.Millisecond).String())
		return err
	}
}

// send calls the Sender; a panic (a bug in an adapter) becomes a transient
// failure of this message instead of the end of the process.
func (w *Worker) send(ctx context.Context, t *target, msg kap.OutboxMessage) (res kap.SendResult, err error) {
	defer func() {
		if p := recover(); p != nil {
			w.log.Error("delivery sender panicked", "target", t.name, "kind", msg.Kind, "panic_type", fmt.Sprintf("%T", p))
			res, err = kap.SendResult{}, &kap.SendError{Kind: kap.SendTransient, Err: errors.New("the sender failed unexpectedly")}
		}
	}()
	return t.Sender.Send(ctx, msg)
}

func permanentReason(se *kap.SendError) string {
	if se.Status != 0 {
		return fmt.Sprintf("refused by the target (HTTP %d)", se.Status)
	}
	return "refused by the target"
}

func (w *Worker) count(t *target, outcome string) {
	if w.cfg.Metrics != nil {
		w.cfg.Metrics.Deliveries.WithLabelValues(t.name, outcome).Inc()
	}
}

// writeLedger writes entries, filling the tenant and target and, where
// unset, the state and the error. An entry that is not confirmed (failed or
// unknown) keeps the target id and version the ledger knew, and a failed one
// never replaces an unknown one: the earlier write was sent and no answer
// came, and only a read of the target (a confirmed write, or a search
// finding or not finding it) may resolve that. The failure is recorded in
// LastError and the state stays unknown. The store applies both rules in the
// write's transaction (kap.LedgerPutOptions.KeepUnknown).
func (w *Worker) writeLedger(ctx context.Context, t *target, msg kap.OutboxMessage, entries []kap.LedgerEntry, state kap.LedgerState, lastError string) {
	if len(entries) == 0 {
		return
	}
	lg := w.cfg.Store.Ledger()
	out := make([]kap.LedgerEntry, 0, len(entries))
	for _, e := range entries {
		e.Tenant, e.Target = msg.Tenant, t.name
		if e.State == "" {
			e.State = state
		}
		if e.LastError == "" {
			e.LastError = lastError
		}
		out = append(out, e)
	}
	// One transaction for all the entries of the record version (65 for a
	// dosing session) instead of one each; the store keeps an unknown
	// entry unknown atomically with the write.
	opt := kap.LedgerPutOptions{KeepUnknown: true}
	err := lg.PutAll(ctx, out, opt)
	if kap.ErrorCode(err) == kap.EINVALID && len(out) > 1 {
		// One malformed entry (a sender's) must not cost the others.
		for _, e := range out {
			if perr := lg.PutAll(ctx, []kap.LedgerEntry{e}, opt); perr != nil {
				w.log.Error("delivery ledger write failed", "target", t.name, "resource_type", e.ResourceType, "err", perr)
			}
		}
		return
	}
	if err != nil {
		w.log.Error("delivery ledger write failed", "target", t.name, "entries", len(out), "err", err)
	}
}

// affected returns the ledger keys of the message's resources that the
// target did not confirm before failing.
func affected(msg kap.OutboxMessage, se *kap.SendError) []kap.LedgerEntry {
	done := map[string]bool{}
	for _, e := range se.Resources {
		done[e.ResourceType+"\x00"+e.Identifier] = true
	}
	var out []kap.LedgerEntry
	for _, r := range msg.Resources {
		id := r.System + "|" + r.Value
		if done[r.Type+"\x00"+id] {
			continue
		}
		out = append(out, kap.LedgerEntry{LedgerKey: kap.LedgerKey{ResourceType: r.Type, Identifier: id}})
	}
	return out
}

// markUnknown records that the writes of the unconfirmed resources may or
// may not have happened.
func (w *Worker) markUnknown(ctx context.Context, t *target, msg kap.OutboxMessage, se *kap.SendError) {
	for _, e := range se.Resources {
		if e.State == kap.LedgerUnknown {
			return // the sender said which ones
		}
	}
	w.writeLedger(ctx, t, msg, affected(msg, se), kap.LedgerUnknown, "no answer to the write")
}

// markFailed records a failed last write of the unconfirmed resources;
// writeLedger keeps what the ledger knew (the target id and version) from
// earlier deliveries, and an unknown outcome stays unknown.
func (w *Worker) markFailed(ctx context.Context, t *target, msg kap.OutboxMessage, se *kap.SendError, why string) {
	w.writeLedger(ctx, t, msg, affected(msg, se), kap.LedgerFailed, why)
}

var queryRE = regexp.MustCompile(`\?[^\s"']*`)

// safeError is the attempt's error text: the SendError's own words (which
// the Sender contract keeps free of PHI), with any query string removed as
// a second guard, and bounded.
func safeError(se *kap.SendError) string {
	s := queryRE.ReplaceAllString(se.Error(), "?…")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
