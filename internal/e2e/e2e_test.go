// Package e2e holds the end-to-end delivery reliability runs (issue #6):
// the gateway assembled in-process — a real store (Redis via redistest, or
// bbolt), the kap/v1 HTTP API (httpapi), the delivery worker
// (internal/delivery) and the EHR sender (adapters/ehr) — delivering to a
// real FHIR server (adapters/ehr/ehrtest: Medplum fhir-router) through
// toxiproxy while faults are injected. See docs/reliability.md.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/ehr"
	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
	"github.com/kapbridge/kap/adapters/httpapi"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/delivery"
	"github.com/kapbridge/kap/internal/synth"
	"github.com/kapbridge/kap/mapping"
)

const (
	tenant = "clinic-e2e"
	apiKey = "e2e-key"
	target = "ehr"
	// rejectPrefix marks the records the peer refuses for good: extra
	// assessments with ids "zzreject-<n>" (identifier value
	// "assessment/zzreject-<n>"); nothing references an assessment, so
	// refusing one blocks no other record.
	rejectPrefix = "assessment/zzreject-"
)

func openStore(t testing.TB, kind string) kap.Store {
	t.Helper()
	switch kind {
	case "redis":
		srv := redistest.Start(t, redistest.Options{AppendFsync: "everysec"})
		c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{srv.Addr}})
		t.Cleanup(func() { c.Close() })
		return kapredis.New(c, kapredis.Options{})
	case "bolt":
		s, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	t.Fatalf("unknown store %q", kind)
	return nil
}

// gateway is the assembled gateway under test.
type gateway struct {
	api    *httptest.Server
	store  kap.Store
	worker *delivery.Worker
	start  func() // starts the worker (already called unless Deferred)
}

type gatewayOptions struct {
	Concurrency int
	Backoff     kap.Backoff
	// Deferred leaves the worker stopped until gateway.start is called.
	Deferred bool
}

func startGateway(t testing.TB, store kap.Store, fhirBase string, o gatewayOptions) *gateway {
	t.Helper()
	codec := fhir.MustCodec()
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	sender, err := ehr.New(ehr.Options{
		Name: target, BaseURL: fhirBase, Codec: codec,
		Ledger: store.Ledger(), Cache: store.Cache(), Logger: logger,
		AttemptTimeout: 30 * time.Second, TotalTimeout: 60 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.Concurrency == 0 {
		o.Concurrency = 8
	}
	w, err := delivery.New(delivery.Config{
		Store: store,
		Targets: []delivery.Target{{
			Sender: sender, Concurrency: o.Concurrency, SendTimeout: 90 * time.Second, Backoff: o.Backoff,
		}},
		Breaker: delivery.Breaker{Failures: 10, OpenFor: 2 * time.Second},
		Logger:  logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	start := func() {
		if err := w.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !o.Deferred {
		start()
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		_ = w.Stop(sctx)
		cancel()
	})
	h, err := httpapi.New(httpapi.Config{
		Store: store, Codec: codec,
		Keys:    map[string]string{httpapi.HashKey(apiKey): tenant},
		Targets: []string{target},
		Logger:  logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(h)
	t.Cleanup(api.Close)
	return &gateway{api: api, store: store, worker: w, start: start}
}

var apiClient = &http.Client{Timeout: 2 * time.Minute}

// submit POSTs one record to kap/v1.
func (g *gateway) submit(rec kap.Record) error {
	body, err := kap.EncodeRecord(rec)
	if err != nil {
		return err
	}
	u := g.api.URL + "/kap/v1/" + httpapi.CollectionOf(rec.RecordKind())
	req, _ := http.NewRequest("POST", u, bytes.NewReader(body))
	req.Header.Set("X-API-Key", apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := apiClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 201 && resp.StatusCode != 200 {
		return fmt.Errorf("%s %s: HTTP %d %.300s", rec.RecordKind(), rec.RecordID(), resp.StatusCode, msg)
	}
	return nil
}

// waitDrained polls until the outbox of the target is empty.
func (g *gateway) waitDrained(t testing.TB, timeout time.Duration) kap.OutboxStats {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := g.store.Outbox().Stats(context.Background(), target)
		if err == nil && st.Depth == 0 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox not drained after %v: %+v (err %v); worker %+v", timeout, st, err, g.worker.Health())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// corpus is the records of a run, in submission order, grouped by client.
type corpus struct {
	providers []kap.Record
	clients   [][]kap.Record // each client's records in clinical order
	rejected  map[string]bool
	sessions  int
	records   int
}

// buildCorpus generates whole synthetic courses until it has at least
// sessions dosing sessions, and adds `rejects` extra assessments the peer
// will refuse.
func buildCorpus(t testing.TB, sessions, rejects int) corpus {
	t.Helper()
	clients := sessions/synth.DosingSessions*8/7 + 8
	recs, err := synth.Generate(synth.Options{Clients: clients, Seed: 6})
	if err != nil {
		t.Fatal(err)
	}
	c := corpus{rejected: map[string]bool{}}
	byClient := map[string]int{}
	for _, r := range recs {
		if r.RecordClientID() == "" {
			c.providers = append(c.providers, r)
			continue
		}
		i, ok := byClient[r.RecordClientID()]
		if !ok {
			if c.sessions >= sessions {
				continue
			}
			i = len(c.clients)
			byClient[r.RecordClientID()] = i
			c.clients = append(c.clients, nil)
		}
		if r.RecordKind() == kap.KindDosingSession {
			c.sessions++
		}
		c.clients[i] = append(c.clients[i], r)
	}
	if c.sessions < sessions {
		t.Fatalf("generated %d dosing sessions, want %d", c.sessions, sessions)
	}
	// Rejected records: copies of assessments of the first clients under a
	// marked id, appended at the end of their client's queue.
	added := 0
	for i := 0; i < len(c.clients) && added < rejects; i++ {
		for _, r := range c.clients[i] {
			a, ok := r.(*kap.Assessment)
			if !ok {
				continue
			}
			cp := *a
			cp.ID = fmt.Sprintf("zzreject-%d", added)
			c.clients[i] = append(c.clients[i], &cp)
			c.rejected[cp.ID] = true
			added++
			break
		}
	}
	if added < rejects {
		t.Fatalf("only %d clients with an assessment for the rejects", added)
	}
	c.records = len(c.providers)
	for _, cl := range c.clients {
		c.records += len(cl)
	}
	return c
}

// expectedKeys returns the identifier keys (as ehrtest.Stats.ByIdentifier
// spells them) of every resource the delivered records must leave on the
// peer, from the records' own Bundles, and the number of resources.
func expectedKeys(t testing.TB, recs []kap.Record) (map[string]bool, int) {
	t.Helper()
	m := mapping.New(fhir.MustCodec(), mapping.Options{Tenant: tenant})
	keys := map[string]bool{}
	resources := 0
	for _, r := range recs {
		js, err := m.MapJSON(r, mapping.MapInput{Version: 1})
		if err != nil {
			t.Fatalf("map %s %s: %v", r.RecordKind(), r.RecordID(), err)
		}
		var b struct {
			Entry []struct {
				Resource map[string]json.RawMessage `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(js, &b); err != nil {
			t.Fatal(err)
		}
		resources += len(b.Entry)
		for _, e := range b.Entry {
			var typ string
			_ = json.Unmarshal(e.Resource["resourceType"], &typ)
			type ident struct{ System, Value, Code string }
			var ids []ident
			if raw := e.Resource["identifier"]; len(raw) > 0 {
				if raw[0] == '{' {
					var one ident
					_ = json.Unmarshal(raw, &one)
					ids = append(ids, one)
				} else {
					_ = json.Unmarshal(raw, &ids)
				}
			}
			for _, id := range ids {
				keys[ehrtest.IdentifierKey(typ, id.System, id.Value)] = true
			}
			if len(ids) == 0 {
				var meta struct{ Tag []ident }
				_ = json.Unmarshal(e.Resource["meta"], &meta)
				for _, tg := range meta.Tag {
					keys[typ+"|_tag|"+tg.System+"|"+tg.Code] = true
				}
			}
		}
	}
	return keys, resources
}

// heapSampler records the largest HeapInuse seen.
type heapSampler struct {
	max  atomic.Uint64
	stop chan struct{}
	done chan struct{}
}

func sampleHeap(every time.Duration) *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > h.max.Load() {
				h.max.Store(ms.HeapInuse)
			}
			select {
			case <-h.stop:
				return
			case <-tk.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) Stop() uint64 {
	close(h.stop)
	<-h.done
	return h.max.Load()
}

// submitAll submits the providers, waits for them to be delivered (every
// session references them), then every client's records with `parallel`
// clients at a time, each client's records in order.
func submitAll(t *testing.T, g *gateway, c corpus, parallel int, progress func(done int)) {
	t.Helper()
	for _, r := range c.providers {
		if err := g.submit(r); err != nil {
			t.Fatal(err)
		}
	}
	g.waitDrained(t, 3*time.Minute)
	var next atomic.Int64
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, parallel)
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(c.clients) {
					return
				}
				for _, r := range c.clients[i] {
					if err := g.submit(r); err != nil {
						errs <- err
						return
					}
				}
				if progress != nil {
					progress(int(done.Add(1)))
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// checkPeer asserts every expected resource is on the peer exactly once,
// nothing else is (no duplicates, nothing of a rejected record), and
// returns the stats.
func checkPeer(t *testing.T, srv *ehrtest.Server, c corpus) ehrtest.Stats {
	t.Helper()
	var delivered []kap.Record
	delivered = append(delivered, c.providers...)
	var rejected []kap.Record
	for _, cl := range c.clients {
		for _, r := range cl {
			if c.rejected[r.RecordID()] {
				rejected = append(rejected, r)
			} else {
				delivered = append(delivered, r)
			}
		}
	}
	want, resources := expectedKeys(t, delivered)
	st := srv.StatsWithIdentifiers()
	missing, dup := 0, 0
	var examples []string
	for k := range want {
		switch n := st.ByIdentifier[k]; {
		case n == 0:
			missing++
			if len(examples) < 5 {
				examples = append(examples, "missing "+k)
			}
		case n > 1:
			dup++
			if len(examples) < 5 {
				examples = append(examples, fmt.Sprintf("%d× %s", n, k))
			}
		}
	}
	extra := 0
	for k := range st.ByIdentifier {
		if !want[k] {
			extra++
			if len(examples) < 10 {
				examples = append(examples, "unexpected "+k)
			}
		}
	}
	refused, _ := expectedKeys(t, rejected)
	for k := range refused {
		if st.ByIdentifier[k] != 0 {
			t.Errorf("a rejected record's resource is on the peer: %s", k)
		}
	}
	if missing > 0 || dup > 0 || extra > 0 || len(st.Duplicates) > 0 {
		sort.Strings(examples)
		t.Fatalf("peer: %d expected keys, %d missing, %d duplicated, %d unexpected, %d duplicate keys; e.g. %v",
			len(want), missing, dup, extra, len(st.Duplicates), examples)
	}
	if st.Total != resources {
		t.Fatalf("peer holds %d resources, the delivered Bundles have %d", st.Total, resources)
	}
	return st
}

// checkDeadLetters asserts the dead letters are exactly the rejected
// records, each with the peer's OperationOutcome.
func checkDeadLetters(t *testing.T, g *gateway, c corpus) {
	t.Helper()
	dls, err := g.store.Outbox().DeadLetters(context.Background(), tenant, target, 10000)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, d := range dls {
		got[d.Message.RecordID] = true
		if !c.rejected[d.Message.RecordID] {
			var last kap.Attempt
			if n := len(d.Message.Attempts); n > 0 {
				last = d.Message.Attempts[n-1]
			}
			t.Errorf("dead letter that should not be: %s %s after %d attempts: %s (last: HTTP %d %s %s)",
				d.Message.Kind, d.Message.RecordID, len(d.Message.Attempts), d.Reason, last.Status, last.Error, last.OperationOutcome)
			continue
		}
		n := len(d.Message.Attempts)
		if n == 0 {
			t.Errorf("dead letter %s has no attempt", d.Message.RecordID)
			continue
		}
		last := d.Message.Attempts[n-1]
		if last.Status != 400 || !bytes.Contains(last.OperationOutcome, []byte("OperationOutcome")) ||
			!bytes.Contains(last.OperationOutcome, []byte("rejection marker")) {
			t.Errorf("dead letter %s: last attempt HTTP %d, outcome %s", d.Message.RecordID, last.Status, last.OperationOutcome)
		}
	}
	for id := range c.rejected {
		if !got[id] {
			t.Errorf("rejected record %s is not in the dead letters", id)
		}
	}
}
