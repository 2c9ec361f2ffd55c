package delivery_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/ndjson"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
	"github.com/kapbridge/kap/internal/delivery"
	"github.com/kapbridge/kap/internal/metrics"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

const target = "files"

// backend opens a store; reopen (bolt only) reopens the same one after
// Close, to test a restart.
type backend struct {
	name string
	open func(t testing.TB, leaseTTL time.Duration) kap.Store
}

func backends() []backend {
	return []backend{
		{"bolt", func(t testing.TB, leaseTTL time.Duration) kap.Store {
			s, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{LeaseTTL: leaseTTL})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
		{"redis", func(t testing.TB, leaseTTL time.Duration) kap.Store {
			srv := redistest.Start(t, redistest.Options{})
			c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{srv.Addr}})
			t.Cleanup(func() { c.Close() })
			return kapredis.New(c, kapredis.Options{LeaseTTL: leaseTTL})
		}},
	}
}

func eachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// message is record version v of session id of client.
func message(tenant, client, id string, v int) kap.OutboxMessage {
	rec := kap.StoredRecord{Tenant: tenant, Kind: "DosingSession", ID: id, ClientID: client, Version: v,
		Bundle:    json.RawMessage(fmt.Sprintf(`{"resourceType":"Bundle","type":"transaction","id":"%s-%s-v%d"}`, client, id, v)),
		Resources: []kap.ResourceRef{{Type: "Procedure", System: "https://fhir.kapbridge.org/id/" + tenant + "/session", Value: id}}}
	return kap.MessageFor(rec, target, time.Now())
}

func enqueue(t testing.TB, s kap.Store, msgs ...kap.OutboxMessage) {
	t.Helper()
	if err := s.Outbox().Enqueue(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

func newFiles(t testing.TB, dir string) *ndjson.Sender {
	t.Helper()
	s, err := ndjson.New(ndjson.Options{Name: target, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// delivered returns the Bundle ids written to the target folder, in order.
func delivered(t testing.TB, dir string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	var ids []string
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			var b struct{ ID string }
			if err := json.Unmarshal(sc.Bytes(), &b); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			ids = append(ids, b.ID)
		}
		fh.Close()
	}
	return ids
}

// faulty wraps a Sender to inject faults: plan says what the n-th call (1
// for the first) for a message returns; nil passes it through.
type faulty struct {
	kap.Sender
	plan  func(m kap.OutboxMessage, n int) error
	mu    sync.Mutex
	calls map[string]int
	total atomic.Int64
	// seen lets a test observe the ledger at send time.
	onSend func(m kap.OutboxMessage, n int)
}

func (f *faulty) Send(ctx context.Context, m kap.OutboxMessage) (kap.SendResult, error) {
	f.total.Add(1)
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[m.ID]++
	n := f.calls[m.ID]
	f.mu.Unlock()
	if f.onSend != nil {
		f.onSend(m, n)
	}
	if f.plan != nil {
		if err := f.plan(m, n); err != nil {
			return kap.SendResult{}, err
		}
	}
	return f.Sender.Send(ctx, m)
}

func (f *faulty) callsOf(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id]
}

func fastBackoff(maxAttempts int) kap.Backoff {
	return kap.Backoff{Base: 5 * time.Millisecond, Max: 20 * time.Millisecond, MaxAttempts: maxAttempts}
}

func start(t testing.TB, cfg delivery.Config) *delivery.Worker {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	if cfg.PollMax == 0 {
		cfg.PollMax = 50 * time.Millisecond
	}
	w, err := delivery.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		w.Stop(ctx)
	})
	return w
}

// eventually polls cond for up to a minute (a loaded 2-core machine).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func depth(t testing.TB, s kap.Store) int {
	t.Helper()
	st, err := s.Outbox().Stats(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	return st.Depth
}

func ledgerOf(t testing.TB, s kap.Store, tenant, id string) (kap.LedgerEntry, error) {
	t.Helper()
	return s.Ledger().Get(context.Background(), kap.LedgerKey{Tenant: tenant, Target: target, ResourceType: "Procedure",
		Identifier: "https://fhir.kapbridge.org/id/" + tenant + "/session|" + id})
}

// Records stored with Put are queued in the same transaction and delivered
// to the NDJSON target exactly once each, with a confirmed ledger entry.
func TestDeliversRecordsExactlyOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := b.open(t, time.Minute)
		dir := t.TempDir()
		ctx := context.Background()
		const n = 60
		for i := range n {
			m := message("clinic", fmt.Sprintf("c%d", i%7), fmt.Sprintf("s%d", i), 1)
			rec := kap.StoredRecord{Tenant: m.Tenant, Kind: m.Kind, ID: m.RecordID, ClientID: m.ClientID, ContentHash: "h",
				Bundle: m.Bundle, Resources: m.Resources}
			if _, _, err := s.Records().Put(ctx, rec, kap.PutOptions{Targets: []string{target}}); err != nil {
				t.Fatal(err)
			}
		}
		met := metrics.New()
		start(t, delivery.Config{Store: s, Metrics: met, Targets: []delivery.Target{{Sender: newFiles(t, dir), Concurrency: 4}}})
		eventually(t, "the queue to drain", func() bool { return depth(t, s) == 0 })
		got := delivered(t, dir)
		if len(got) != n {
			t.Fatalf("%d lines, want %d", len(got), n)
		}
		seen := map[string]bool{}
		for _, id := range got {
			if seen[id] {
				t.Fatalf("%s delivered twice", id)
			}
			seen[id] = true
		}
		for i := range n {
			e, err := ledgerOf(t, s, "clinic", fmt.Sprintf("s%d", i))
			if err != nil || e.State != kap.LedgerConfirmed || !strings.HasSuffix(e.TargetID, "") || e.TargetID == "" {
				t.Fatalf("ledger of s%d: %+v %v", i, e, err)
			}
		}
		if v := value(met.Deliveries.WithLabelValues(target, "delivered")); v != n {
			t.Fatalf("deliveries metric %v, want %d", v, n)
		}
	})
}

// Transient failures are retried with backoff; the attempt is recorded and
// the message finally delivered once.
func TestTransientFailuresAreRetried(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := b.open(t, time.Minute)
		dir := t.TempDir()
		var attemptsSeen atomic.Int64
		f := &faulty{Sender: newFiles(t, dir), plan: func(m kap.OutboxMessage, n int) error {
			if m.RecordID == "s1" && n <= 3 {
				return &kap.SendError{Kind: kap.SendTransient, Status: 503, Err: errors.New("service unavailable")}
			}
			return nil
		}, onSend: func(m kap.OutboxMessage, n int) {
			if m.RecordID == "s1" && n == 4 {
				attemptsSeen.Store(int64(len(m.Attempts)))
				if len(m.Attempts) != 3 || m.Attempts[2].Status != 503 || !strings.Contains(m.Attempts[2].Error, "transient") {
					t.Errorf("attempts carried to the 4th send: %+v", m.Attempts)
				}
			}
		}}
		met := metrics.New()
		enqueue(t, s, message("clinic", "c1", "s1", 1), message("clinic", "c2", "s2", 1))
		start(t, delivery.Config{Store: s, Metrics: met, Targets: []delivery.Target{{Sender: f, Backoff: fastBackoff(5)}}})
		eventually(t, "the queue to drain", func() bool { return depth(t, s) == 0 })
		if got := f.callsOf("DosingSession/s1/1"); got != 4 {
			t.Fatalf("s1 sent %d times, want 4", got)
		}
		if attemptsSeen.Load() != 3 {
			t.Fatalf("the 4th send saw %d attempts", attemptsSeen.Load())
		}
		if got := delivered(t, dir); len(got) != 2 {
			t.Fatalf("delivered %v", got)
		}
		if v := value(met.Retries.WithLabelValues(target)); v != 3 {
			t.Fatalf("retries metric %v, want 3", v)
		}
	})
}

// A permanent refusal dead-letters the message with the target's
// OperationOutcome; the client's next message goes on.
func TestPermanentRefusalIsDeadLettered(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := b.open(t, time.Minute)
		dir := t.TempDir()
		oo := json.RawMessage(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"Observation.value[x]: missing"}]}`)
		f := &faulty{Sender: newFiles(t, dir), plan: func(m kap.OutboxMessage, n int) error {
			if m.RecordID == "bad" {
				return &kap.SendError{Kind: kap.SendPermanent, Status: 422, OperationOutcome: oo, Err: errors.New("unprocessable")}
			}
			return nil
		}}
		enqueue(t, s, message("clinic", "c1", "bad", 1), message("clinic", "c1", "after", 1))
		start(t, delivery.Config{Store: s, Targets: []delivery.Target{{Sender: f, Backoff: fastBackoff(5)}}})
		eventually(t, "the queue to drain", func() bool { return depth(t, s) == 0 })
		dls, err := s.Outbox().DeadLetters(context.Background(), "clinic", target, 10)
		if err != nil || len(dls) != 1 {
			t.Fatalf("dead letters %+v %v", dls, err)
		}
		dl := dls[0]
		if dl.Message.RecordID != "bad" || len(dl.Message.Attempts) != 1 || dl.Message.Attempts[0].Status != 422 ||
			!strings.Contains(dl.Reason, "422") {
			t.Fatalf("dead letter %+v", dl)
		}
		var a, b2 any
		json.Unmarshal(dl.Message.Attempts[0].OperationOutcome, &a)
		json.Unmarshal(oo, &b2)
		if fmt.Sprint(a) != fmt.Sprint(b2) {
			t.Fatalf("operation outcome %s", dl.Message.Attempts[0].OperationOutcome)
		}
		if f.callsOf("DosingSession/bad/1") != 1 {
			t.Fatal("a permanent refusal was retried")
		}
		if got := delivered(t, dir); len(got) != 1 || got[0] != "c1-after-v1" {
			t.Fatalf("delivered %v", got)
		}
		e, err := ledgerOf(t, s, "clinic", "bad")
		if err != nil || e.State != kap.LedgerFailed {
			t.Fatalf("ledger %+v %v", e, err)
		}
	})
}

// Transient failures past MaxAttempts dead-letter the message with every
// attempt.
func TestAttemptsExhaustedAreDeadLettered(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := b.open(t, time.Minute)
		f := &faulty{Sender: newFiles(t, t.TempDir()), plan: func(m kap.OutboxMessage, n int) error {
			return &kap.SendError{Kind: kap.SendTransient, Status: 503, Err: errors.New("down")}
		}}
		enqueue(t, s, message("clinic", "c1", "s1", 1))
		start(t, delivery.Config{Store: s, Breaker: delivery.Breaker{Failures: 100},
			Targets: []delivery.Target{{Sender: f, Backoff: fastBackoff(3)}}})
		eventually(t, "the queue to drain", func() bool { return depth(t, s) == 0 })
		dls, err := s.Outbox().DeadLetters(context.Background(), "clinic", target, 10)
		if err != nil || len(dls) != 1 || len(dls[0].Message.Attempts) != 3 || !strings.Contains(dls[0].Reason, "3 attempts") {
			t.Fatalf("dead letters %+v %v", dls, err)
		}
		if f.callsOf("DosingSession/s1/1") != 3 {
			t.Fatalf("sent %d times, want 3", f.callsOf("DosingSession/s1/1"))
		}
	})
}

// An unknown outcome marks the resource unknown in the ledger before the
// retry, so the next send can resolve it; then it is confirmed.
func TestUnknownOutcomeMarksLedgerThenRetries(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := b.open(t, time.Minute)
		var stateAtRetry atomic.Value
		f := &faulty{Sender: newFiles(t, t.TempDir()), plan: func(m kap.OutboxMessage, n int) error {
			if n == 1 {
				return &kap.SendError{Kind: kap.SendUnknown, Err: context.DeadlineExceeded}
			}
			return nil
		}}
		f.onSend = func(m kap.OutboxMessage, n int) {
			if n == 2 {
				e, err := ledgerOf(t, s, "clinic", "s1")
				stateAtRetry.Store(fmt.Sprintf("%s %v", e.State, err))
			}
		}
		enqueue(t, s, message("clinic", "c1", "s1", 1))
		met := metrics.New()
		start(t, delivery.Config{Store: s, Metrics: met, Targets: []delivery.Target{{Sender: f, Backoff: fastBackoff(5)}}})
		eventually(t, "the queue to drain", func() bool { return depth(t, s) == 0 })
		if got := stateAtRetry.Load(); got != "unknown <nil>" {
			t.Fatalf("ledger at the retry: %v", got)
		}
		if e, err := ledgerOf(t, s, "clinic", "s1"); err != nil || e.State != kap.LedgerConfirmed {
			t.Fatalf("ledger after: %+v %v", e, err)
		}
		if v := value(met.Deliveries.WithLabelValues(target, "unknown")); v != 1 {
			t.Fatalf("unknown metric %v", v)
		}
	})
}

// Retries hold back only the client's later messages, which are delivered
// in order afterwards.
func TestClientOrderIsKeptAcrossRetries(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := b.open(t, time.Minute)
		dir := t.TempDir()
		f := &faulty{Sender: newFiles(t, dir), plan: func(m kap.OutboxMessage, n int) error {
			if m.ClientID == "c1" && m.Version == 2 && n <= 2 {
				return &kap.SendError{Kind: kap.SendTransient, Status: 429, Err: errors.New("busy")}
			}
			return nil
		}}
		var msgs []kap.OutboxMessage
		for v := 1; v <= 5; v++ {
			msgs = append(msgs, message("clinic", "c1", "s1", v), message("clinic", "c2", "s2", v))
		}
		enqueue(t, s, msgs...)
		start(t, delivery.Config{Store: s, Targets: []delivery.Target{{Sender: f, Concurrency: 8, Backoff: fastBackoff(5)}}})
		eventually(t, "the queue to drain", func() bool { return depth(t, s) == 0 })
		got := delivered(t, dir)
		for _, c := range []string{"c1", "c2"} {
			var order []string
			for _, id := range got {
				if strings.HasPrefix(id, c+"-") {
					order = append(order, id)
				}
			}
			s := "-s" + c[1:] + "-v"
			want := []string{c + s + "1", c + s + "2", c + s + "3", c + s + "4", c + s + "5"}
			if fmt.Sprint(order) != fmt.Sprint(want) {
				t.Fatalf("client %s order %v, want %v", c, order, want)
			}
		}
	})
}

// Consecutive transient failures open the circuit: the worker stops sending
// (the messages stay queued) until the half-open probe succeeds.
func TestCircuitOpensAndCloses(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := b.open(t, time.Minute)
		dir := t.TempDir()
		var down atomic.Bool
		down.Store(true)
		f := &faulty{Sender: newFiles(t, dir), plan: func(m kap.OutboxMessage, n int) error {
			if down.Load() {
				return &kap.SendError{Kind: kap.SendTransient, Status: 503, Err: errors.New("down")}
			}
			return nil
		}}
		var msgs []kap.OutboxMessage
		for i := range 20 {
			msgs = append(msgs, message("clinic", fmt.Sprintf("c%d", i), fmt.Sprintf("s%d", i), 1))
		}
		enqueue(t, s, msgs...)
		met := metrics.New()
		const openFor = time.Second
		w := start(t, delivery.Config{Store: s, Metrics: met, Breaker: delivery.Breaker{Failures: 3, OpenFor: openFor},
			Targets: []delivery.Target{{Sender: f, Concurrency: 1, Backoff: fastBackoff(100)}}})
		circuit := func() string { return w.Health().Targets[0].Circuit }
		eventually(t, "the circuit to open", func() bool { return circuit() == "open" })
		if v := value(met.CircuitState.WithLabelValues(target)); v != 2 {
			t.Fatalf("circuit metric %v, want 2 (open)", v)
		}
		sent := f.total.Load()
		if sent != 3 {
			t.Fatalf("%d sends before the circuit opened, want 3", sent)
		}
		// While open nothing is sent and the messages stay queued.
		time.Sleep(openFor / 2)
		if circuit() == "open" && f.total.Load() != sent {
			t.Fatalf("sent while the circuit was open: %d -> %d", sent, f.total.Load())
		}
		if d := depth(t, s); d != 20 {
			t.Fatalf("depth %d while open, want 20", d)
		}
		// The half-open probe fails: open again, one more send.
		eventually(t, "a probe", func() bool { return f.total.Load() > sent })
		eventually(t, "the circuit to reopen", func() bool { return circuit() == "open" })
		if got := f.total.Load(); got != sent+1 {
			t.Fatalf("the half-open state let %d sends through, want 1", got-sent)
		}
		down.Store(false)
		eventually(t, "the queue to drain", func() bool { return depth(t, s) == 0 })
		if c := circuit(); c != "closed" {
			t.Fatalf("circuit %s after recovery", c)
		}
		if got := delivered(t, dir); len(got) != 20 {
			t.Fatalf("delivered %d, want 20", len(got))
		}
		if dls, _ := s.Outbox().DeadLetters(context.Background(), "clinic", target, 10); len(dls) != 0 {
			t.Fatalf("dead letters while the circuit protected them: %d", len(dls))
		}
	})
}

// blocking is a Sender that holds every send until its context ends.
type blocking struct {
	inFlight atomic.Int64
}

func (*blocking) Target() string { return target }
func (b *blocking) Send(ctx context.Context, m kap.OutboxMessage) (kap.SendResult, error) {
	b.inFlight.Add(1)
	<-ctx.Done()
	return kap.SendResult{}, &kap.SendError{Kind: kap.SendTransient, Err: ctx.Err()}
}

// Stop returns the leases it holds: a second worker delivers them at once,
// long before the leases (one hour) would expire, and no attempt is spent.
func TestStopReturnsLeases(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := b.open(t, time.Hour)
		var msgs []kap.OutboxMessage
		for i := range 6 {
			msgs = append(msgs, message("clinic", fmt.Sprintf("c%d", i), fmt.Sprintf("s%d", i), 1))
		}
		enqueue(t, s, msgs...)
		stuck := &blocking{}
		w1, err := delivery.New(delivery.Config{Store: s, Logger: quiet, Targets: []delivery.Target{{Sender: stuck, Concurrency: 4, SendTimeout: time.Hour}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := w1.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		eventually(t, "4 sends in flight", func() bool { return stuck.inFlight.Load() == 4 })
		if h := w1.Health(); !h.Running || h.Targets[0].InFlight != 4 {
			t.Fatalf("health %+v", h)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err = w1.Stop(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Stop: %v", err)
		}
		if w1.Running() || w1.Health().Running {
			t.Fatal("still running after Stop")
		}
		dir := t.TempDir()
		f := &faulty{Sender: newFiles(t, dir)}
		start(t, delivery.Config{Store: s, Targets: []delivery.Target{{Sender: f, Concurrency: 4}}})
		eventually(t, "the second worker to drain the queue", func() bool { return depth(t, s) == 0 })
		if got := delivered(t, dir); len(got) != 6 {
			t.Fatalf("delivered %d, want 6", len(got))
		}
		f.onSend = nil
		f.mu.Lock()
		defer f.mu.Unlock()
		for id, n := range f.calls {
			if n != 1 {
				t.Fatalf("%s sent %d times", id, n)
			}
		}
	})
}

// A worker stopped gracefully part-way and a new one (after the process
// restarts on the same store files) finish the queue; nothing is written
// twice.
func TestRestartFinishesTheQueue(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "kap.db")
	dir := t.TempDir()
	s, err := bolt.Open(dbPath, bolt.Options{LeaseTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []kap.OutboxMessage
	for i := range 40 {
		msgs = append(msgs, message("clinic", fmt.Sprintf("c%d", i%5), fmt.Sprintf("s%d", i), 1))
	}
	enqueue(t, s, msgs...)
	files, err := ndjson.New(ndjson.Options{Name: target, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// After 10 sends, the next ones wait until Stop has begun: the first
	// worker delivers a part only, whatever the machine's load.
	var sent atomic.Int64
	stopping := make(chan struct{})
	slow := &faulty{Sender: files, onSend: func(kap.OutboxMessage, int) {
		if sent.Add(1) > 10 {
			<-stopping
		}
	}}
	w, err := delivery.New(delivery.Config{Store: s, Logger: quiet, Targets: []delivery.Target{{Sender: slow, Concurrency: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	w.Start(context.Background())
	eventually(t, "some deliveries", func() bool { return sent.Load() >= 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	go func() { time.Sleep(50 * time.Millisecond); close(stopping) }()
	if err := w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	files.Close()
	s.Close()
	first := len(delivered(t, dir))
	if first == 0 || first == 40 {
		t.Fatalf("the first worker delivered %d of 40; the test needs a part", first)
	}

	s2, err := bolt.Open(dbPath, bolt.Options{LeaseTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	start(t, delivery.Config{Store: s2, Targets: []delivery.Target{{Sender: newFiles(t, dir), Concurrency: 2}}})
	eventually(t, "the queue to drain", func() bool { return depth(t, s2) == 0 })
	got := delivered(t, dir)
	seen := map[string]bool{}
	for _, id := range got {
		if seen[id] {
			t.Fatalf("%s written twice", id)
		}
		seen[id] = true
	}
	if len(got) != 40 {
		t.Fatalf("%d delivered, want 40", len(got))
	}
}

func TestConfigErrors(t *testing.T) {
	s := backends()[0].open(t, time.Minute)
	files := newFiles(t, t.TempDir())
	for _, c := range []struct {
		cfg  delivery.Config
		want string
	}{
		{delivery.Config{Targets: []delivery.Target{{Sender: files}}}, "Store is required"},
		{delivery.Config{Store: s}, "at least one target"},
		{delivery.Config{Store: s, Targets: []delivery.Target{{}}}, "targets[0].Sender is required"},
		{delivery.Config{Store: s, Targets: []delivery.Target{{Sender: files}, {Sender: files}}}, "configured twice"},
	} {
		if _, err := delivery.New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
	w, err := delivery.New(delivery.Config{Store: s, Logger: quiet, Targets: []delivery.Target{{Sender: files}}})
	if err != nil {
		t.Fatal(err)
	}
	if w.Running() {
		t.Fatal("running before Start")
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err == nil {
		t.Fatal("started twice")
	}
	if err := w.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w.Running() {
		t.Fatal("running after Stop")
	}
	// A cancelled Start context is a hard stop: not running either.
	ctx, cancel := context.WithCancel(context.Background())
	w2, err := delivery.New(delivery.Config{Store: s, Logger: quiet, Targets: []delivery.Target{{Sender: files}}})
	if err != nil {
		t.Fatal(err)
	}
	w2.Start(ctx)
	if !w2.Running() {
		t.Fatal("not running after Start")
	}
	cancel()
	if w2.Running() {
		t.Fatal("running after its context was cancelled")
	}
	w2.Stop(context.Background())
}

// value reads a counter or gauge.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// A Sender that panics fails that attempt (transient); the worker and the
// other messages go on.
func TestSenderPanicIsATransientFailure(t *testing.T) {
	s := backends()[0].open(t, time.Minute)
	dir := t.TempDir()
	f := &faulty{Sender: newFiles(t, dir), plan: func(m kap.OutboxMessage, n int) error {
		if m.RecordID == "s1" && n == 1 {
			panic("adapter bug")
		}
		return nil
	}}
	enqueue(t, s, message("clinic", "c1", "s1", 1), message("clinic", "c2", "s2", 1))
	w := start(t, delivery.Config{Store: s, Targets: []delivery.Target{{Sender: f, Backoff: fastBackoff(5)}}})
	eventually(t, "the queue to drain", func() bool { return depth(t, s) == 0 })
	if got := delivered(t, dir); len(got) != 2 {
		t.Fatalf("delivered %v", got)
	}
	if f.callsOf("DosingSession/s1/1") != 2 {
		t.Fatalf("s1 sent %d times, want 2", f.callsOf("DosingSession/s1/1"))
	}
	if h := w.Health(); h.Targets[0].LastError == "" || !strings.Contains(h.Targets[0].LastError, "unexpectedly") {
		t.Fatalf("health %+v", h)
	}
}

// notSending reports one resource as refused by the target's write profile.
type notSending struct{ kap.Sender }

func (n notSending) Send(ctx context.Context, m kap.OutboxMessage) (kap.SendResult, error) {
	res, err := n.Sender.Send(ctx, m)
	res.Resources = nil
	res.NotSent = append(res.NotSent, kap.NotSent{ResourceType: "Procedure",
		Identifier: m.Resources[0].System + "|" + m.Resources[0].Value, Reason: "the target does not accept Procedure"},
		kap.NotSent{ResourceType: "Provenance", Reason: "no identifier"})
	return res, err
}

// Resources the target's write profile refuses are in the ledger as
// failed with the reason; the message is acknowledged.
func TestNotSentResourcesAreInTheLedger(t *testing.T) {
	s := backends()[0].open(t, time.Minute)
	enqueue(t, s, message("clinic", "c1", "s1", 1))
	start(t, delivery.Config{Store: s, Targets: []delivery.Target{{Sender: notSending{newFiles(t, t.TempDir())}}}})
	eventually(t, "the queue to drain", func() bool { return depth(t, s) == 0 })
	e, err := ledgerOf(t, s, "clinic", "s1")
	if err != nil || e.State != kap.LedgerFailed || e.LastError != "not sent: the target does not accept Procedure" {
		t.Fatalf("ledger %+v %v", e, err)
	}
}

// Two workers (two gateway replicas) on one store share the queue: every
// message is delivered once, and each client's versions are sent in order
// although consecutive ones go through different workers.
func TestTwoWorkersShareTheQueueInClientOrder(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := b.open(t, time.Minute)
		var msgs []kap.OutboxMessage
		const clients, versions = 10, 8
		for v := 1; v <= versions; v++ {
			for c := range clients {
				msgs = append(msgs, message("clinic", fmt.Sprintf("c%d", c), fmt.Sprintf("s%d", c), v))
			}
		}
		enqueue(t, s, msgs...)
		var mu sync.Mutex
		sent := map[string][]int{} // client -> versions in send order
		by := map[string]int{}     // worker -> sends
		record := func(worker string) func(m kap.OutboxMessage, n int) {
			return func(m kap.OutboxMessage, n int) {
				mu.Lock()
				defer mu.Unlock()
				sent[m.ClientID] = append(sent[m.ClientID], m.Version)
				by[worker]++
			}
		}
		dirA, dirB := t.TempDir(), t.TempDir()
		for _, w := range []struct{ name, dir string }{{"a", dirA}, {"b", dirB}} {
			f := &faulty{Sender: newFiles(t, w.dir), onSend: record(w.name)}
			start(t, delivery.Config{Store: s, PollMax: 5 * time.Millisecond, Targets: []delivery.Target{{Sender: f, Concurrency: 4}}})
		}
		eventually(t, "the queue to drain", func() bool { return depth(t, s) == 0 })
		mu.Lock()
		defer mu.Unlock()
		for c := range clients {
			got := sent[fmt.Sprintf("c%d", c)]
			if len(got) != versions {
				t.Fatalf("client c%d: sends %v, want each of %d versions once", c, got, versions)
			}
			for i, v := range got {
				if v != i+1 {
					t.Fatalf("client c%d: versions sent in order %v", c, got)
				}
			}
		}
		if n := len(delivered(t, dirA)) + len(delivered(t, dirB)); n != clients*versions {
			t.Fatalf("%d lines in the two folders, want %d", n, clients*versions)
		}
		t.Logf("worker a sent %d, worker b %d", by["a"], by["b"])
	})
}

// An unknown outcome stays unknown when later attempts fail for another
// reason (a refusal, transient failures up to MaxAttempts, a resource the
// write profile does not send): only a read of the target resolves it. The
// later failure is in LastError.
func TestUnknownOutcomeStaysUnknownUntilResolved(t *testing.T) {
	unknown := &kap.SendError{Kind: kap.SendUnknown, Err: context.DeadlineExceeded}
	cases := []struct {
		name    string
		maxAtt  int
		sender  func(dir string) kap.Sender
		plan    func(m kap.OutboxMessage, n int) error
		errWant string
	}{
		{"refused", 5, nil, func(m kap.OutboxMessage, n int) error {
			if n == 1 {
				return unknown
			}
			return &kap.SendError{Kind: kap.SendPermanent, Status: 422, Err: errors.New("unprocessable")}
		}, "422"},
		{"attempts-exhausted", 3, nil, func(m kap.OutboxMessage, n int) error {
			if n == 1 {
				return unknown
			}
			return &kap.SendError{Kind: kap.SendTransient, Status: 503, Err: errors.New("down")}
		}, "503"},
		{"not-sent", 5, func(dir string) kap.Sender { return notSending{newFiles(t, dir)} }, func(m kap.OutboxMessage, n int) error {
			if n == 1 {
				return unknown
			}
			return nil
		}, "not sent"},
	}
	eachBackend(t, func(t *testing.T, b backend) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				s := b.open(t, time.Minute)
				var inner kap.Sender = newFiles(t, t.TempDir())
				if c.sender != nil {
					inner = c.sender(t.TempDir())
				}
				f := &faulty{Sender: inner, plan: c.plan}
				enqueue(t, s, message("clinic", "c1", "s1", 1))
				start(t, delivery.Config{Store: s, Breaker: delivery.Breaker{Failures: 100},
					Targets: []delivery.Target{{Sender: f, Backoff: fastBackoff(c.maxAtt)}}})
				eventually(t, "the queue to drain", func() bool { return depth(t, s) == 0 })
				if f.callsOf("DosingSession/s1/1") < 2 {
					t.Fatalf("sent %d times, want a second attempt", f.callsOf("DosingSession/s1/1"))
				}
				e, err := ledgerOf(t, s, "clinic", "s1")
				if err != nil || e.State != kap.LedgerUnknown || !strings.Contains(e.LastError, c.errWant) {
					t.Fatalf("ledger %+v %v: want unknown with the later error (%s) in LastError", e, err, c.errWant)
				}
			})
		}
	})
}

// A failed write keeps the target id and version the ledger knew, and a
// confirmed write (a read of the target) resolves an unknown outcome.
func TestLedgerKeepsTargetIDAndConfirmResolvesUnknown(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := b.open(t, time.Minute)
		ctx := context.Background()
		key := kap.LedgerKey{Tenant: "clinic", Target: target, ResourceType: "Procedure",
			Identifier: "https://fhir.kapbridge.org/id/clinic/session|s1"}
		if err := s.Ledger().Put(ctx, kap.LedgerEntry{LedgerKey: key, TargetID: "p-7", VersionID: "3", State: kap.LedgerConfirmed}); err != nil {
			t.Fatal(err)
		}
		f := &faulty{Sender: newFiles(t, t.TempDir()), plan: func(m kap.OutboxMessage, n int) error {
			switch {
			case m.Version == 2 && n == 1:
				return &kap.SendError{Kind: kap.SendUnknown, Err: context.DeadlineExceeded}
			case m.Version == 2:
				return &kap.SendError{Kind: kap.SendPermanent, Status: 400, Err: errors.New("bad request")}
			}
			return nil
		}}
		enqueue(t, s, message("clinic", "c1", "s1", 2))
		start(t, delivery.Config{Store: s, Targets: []delivery.Target{{Sender: f, Backoff: fastBackoff(5)}}})
		eventually(t, "the queue to drain", func() bool { return depth(t, s) == 0 })
		e, err := ledgerOf(t, s, "clinic", "s1")
		if err != nil || e.State != kap.LedgerUnknown || e.TargetID != "p-7" || e.VersionID != "3" || !strings.Contains(e.LastError, "400") {
			t.Fatalf("ledger %+v %v: want unknown, target id p-7 version 3 kept, the refusal in LastError", e, err)
		}
		// Version 3 is delivered: the confirmed write resolves it.
		enqueue(t, s, message("clinic", "c1", "s1", 3))
		eventually(t, "the ledger to be confirmed", func() bool {
			e, err := ledgerOf(t, s, "clinic", "s1")
			return err == nil && e.State == kap.LedgerConfirmed
		})
	})
}

// A replayed dead letter gets a fresh attempt budget: with MaxAttempts 2,
// a message dead after two failures and replayed is retried again after
// one more failure instead of being dead-lettered at once; its attempt
// history is kept.
func TestReplayedDeadLetterGetsFreshAttempts(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := b.open(t, time.Minute)
		dir := t.TempDir()
		f := &faulty{Sender: newFiles(t, dir), plan: func(m kap.OutboxMessage, n int) error {
			if n <= 3 {
				return &kap.SendError{Kind: kap.SendTransient, Status: 503, Err: errors.New("down")}
			}
			return nil
		}}
		enqueue(t, s, message("clinic", "c1", "s1", 1))
		w := start(t, delivery.Config{Store: s, Breaker: delivery.Breaker{Failures: 100},
			Targets: []delivery.Target{{Sender: f, Backoff: fastBackoff(2)}}})
		ctx := context.Background()
		deadLetters := func() []kap.DeadLetter {
			dls, err := s.Outbox().DeadLetters(ctx, "clinic", target, 10)
			if err != nil {
				t.Fatal(err)
			}
			return dls
		}
		eventually(t, "the dead letter", func() bool { return len(deadLetters()) == 1 })
		if n := f.callsOf("DosingSession/s1/1"); n != 2 {
			t.Fatalf("sent %d times before the dead letter, want 2", n)
		}
		if err := s.Outbox().Replay(ctx, "clinic", target, "DosingSession/s1/1"); err != nil {
			t.Fatal(err)
		}
		w.Wake()
		eventually(t, "the replayed message to be delivered or dead again", func() bool {
			return len(delivered(t, dir)) == 1 || len(deadLetters()) == 1
		})
		if dls := deadLetters(); len(dls) != 0 {
			t.Fatalf("the replayed message was dead-lettered again after %d sends: %s", f.callsOf("DosingSession/s1/1"), dls[0].Reason)
		}
		if n := f.callsOf("DosingSession/s1/1"); n != 4 {
			t.Fatalf("sent %d times, want 4", n)
		}
	})
}

// badEntry adds a malformed ledger entry (a sender's bug) to the result.
type badEntry struct{ kap.Sender }

func (b badEntry) Send(ctx context.Context, m kap.OutboxMessage) (kap.SendResult, error) {
	res, err := b.Sender.Send(ctx, m)
	res.Resources = append(res.Resources,
		kap.LedgerEntry{LedgerKey: kap.LedgerKey{ResourceType: "Procedure", Identifier: m.Resources[0].System + "|" + m.Resources[0].Value},
			TargetID: "p-1", State: kap.LedgerConfirmed},
		kap.LedgerEntry{LedgerKey: kap.LedgerKey{ResourceType: "not a type!", Identifier: "x|y"}, State: kap.LedgerConfirmed})
	return res, err
}

// The ledger entries of a delivery are written in one PutAll; a malformed
// entry does not cost the others their write.
func TestMalformedLedgerEntryDoesNotCostTheOthers(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		s := b.open(t, time.Minute)
		enqueue(t, s, message("clinic", "c1", "s1", 1))
		start(t, delivery.Config{Store: s, Targets: []delivery.Target{{Sender: badEntry{newFiles(t, t.TempDir())}}}})
		eventually(t, "the queue to drain", func() bool { return depth(t, s) == 0 })
		e, err := ledgerOf(t, s, "clinic", "s1")
		if err != nil || e.State != kap.LedgerConfirmed || e.TargetID != "p-1" {
			t.Fatalf("ledger %+v %v", e, err)
		}
	})
}
