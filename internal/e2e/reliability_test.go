package e2e

import (
	"cmp"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
)

// LongEnv enables the full reliability run (2,000 dosing sessions, a
// 30-second outage) on top of the suite's 200-session run.
const LongEnv = "KAPBRIDGE_LONG"

// PlainEnv runs TestReliabilityModes/plain (issue #6, fixed). It is gated
// for time, not for a failure: against a plain peer (search, then POST or
// PUT Type/id with If-Match) the run takes 1.5-3 minutes on the 2-core
// machine, over the suite's budget (docs/reliability.md).
const PlainEnv = "KAPBRIDGE_E2E_PLAIN"

type reliabilityRun struct {
	// mode is the peer's write profile (default transaction); the sender
	// picks its strategy from /metadata.
	mode     ehrtest.Mode
	store    string
	sessions int
	rejects  int
	outage   time.Duration
	// heapBound is the largest HeapInuse of the test process allowed.
	heapBound uint64
}

// TestReliability is the suite's version: 200 dosing sessions per store,
// the same faults, a 5-second outage.
func TestReliability(t *testing.T) {
	for _, store := range []string{"redis", "bolt"} {
		t.Run(store, func(t *testing.T) {
			runReliability(t, reliabilityRun{store: store, sessions: 200, rejects: 3, outage: 5 * time.Second, heapBound: 256 << 20})
		})
	}
}

// TestReliabilityModes runs a smaller corpus against each per-resource
// write profile, where a lost answer leaves part of a record written.
func TestReliabilityModes(t *testing.T) {
	for _, mode := range []ehrtest.Mode{ehrtest.ModeConditionalUpdate, ehrtest.ModeConditionalCreate, ehrtest.ModePlain} {
		t.Run(string(mode), func(t *testing.T) {
			if mode == ehrtest.ModePlain && os.Getenv(PlainEnv) != "1" {
				t.Skipf("slow, not failing (docs/reliability.md): against a plain peer the run takes 1.5-3 minutes "+
					"(two requests per new resource, lost answers resolved by reads); set %s=1 to run it", PlainEnv)
			}
			runReliability(t, reliabilityRun{mode: mode, store: "redis", sessions: 30, rejects: 2, outage: 3 * time.Second, heapBound: 256 << 20})
		})
	}
}

// TestReliabilityLong is issue #6's bar: 2,000 dosing sessions per store
// and a 30-second outage. KAPBRIDGE_LONG=1 go test ./internal/e2e/ -run Long -timeout 60m
func TestReliabilityLong(t *testing.T) {
	if os.Getenv(LongEnv) != "1" {
		t.Skipf("set %s=1 to run the 2,000-session reliability run", LongEnv)
	}
	for _, store := range []string{"redis", "bolt"} {
		t.Run(store, func(t *testing.T) {
			runReliability(t, reliabilityRun{store: store, sessions: 2000, rejects: 5, outage: 30 * time.Second, heapBound: 256 << 20})
		})
	}
}

func runReliability(t *testing.T, cfg reliabilityRun) {
	srv := ehrtest.Start(t, ehrtest.Options{Mode: cfg.mode})
	px := ehrtest.StartProxy(t, srv.Addr)
	store := openStore(t, cfg.store)
	g := startGateway(t, store, px.URL(srv), gatewayOptions{
		Concurrency: 8,
		// Enough attempts to outlast the outage and the injected faults;
		// a refused record still dead-letters at its first 400.
		Backoff: kap.Backoff{Base: 100 * time.Millisecond, Max: 3 * time.Second, MaxAttempts: 100, MaxRetryAfter: 5 * time.Second},
	})
	c := buildCorpus(t, cfg.sessions, cfg.rejects)
	srv.Reject(rejectPrefix, 400)

	heap := sampleHeap(100 * time.Millisecond)
	start := time.Now()

	// Faults for the whole submission: 10% 503 (no Retry-After), 5% of
	// requests processed and then answered by a closed connection, 5% of
	// connections reset by toxiproxy when the answer starts, and a burst
	// of five 429 (Retry-After: 1) every 3 seconds.
	srv.Fail503(0, 10, 0)
	srv.Drop(0, 5)
	px.ResetPeer(5)
	stopBursts := make(chan struct{})
	var bursts sync.WaitGroup
	bursts.Add(1)
	go func() {
		defer bursts.Done()
		tk := time.NewTicker(3 * time.Second)
		defer tk.Stop()
		for {
			select {
			case <-stopBursts:
				return
			case <-tk.C:
				srv.Fail429(5, time.Second)
			}
		}
	}()

	// The outage starts when half of the clients are submitted.
	var outage sync.WaitGroup
	var once sync.Once
	var outageAt time.Duration
	half := len(c.clients) / 2
	submitAll(t, g, c, 4, func(done int) {
		if done < half {
			return
		}
		once.Do(func() {
			outage.Add(1)
			outageAt = time.Since(start)
			px.Disable()
			go func() {
				defer outage.Done()
				time.Sleep(cfg.outage)
				px.Enable()
			}()
		})
	})
	submitted := time.Since(start)
	outage.Wait()
	close(stopBursts)
	bursts.Wait()

	// Faults stay on until the queue is drained.
	g.waitDrained(t, 20*time.Minute)
	elapsed := time.Since(start)
	srv.ClearFaults()
	px.Reset()
	maxHeap := heap.Stop()

	checkDeadLetters(t, g, c)
	st := checkPeer(t, srv, c)
	h := g.worker.Health()
	t.Logf("%s, peer mode %s: %d records (%d dosing sessions, %d refused by the peer) over HTTP in %v; all delivered %v after the start (outage %v from %v)",
		cfg.store, cmp.Or(cfg.mode, ehrtest.ModeTransaction), c.records, c.sessions, len(c.rejected), submitted.Round(time.Millisecond), elapsed.Round(time.Millisecond),
		cfg.outage, outageAt.Round(time.Second))
	t.Logf("peer: %d resources, %d identifier keys, 0 duplicates; requests %v; interactions %v; faults injected %v",
		st.Total, st.Identifiers, st.Requests, st.Interactions, st.Faults)
	for _, th := range h.Targets {
		t.Logf("worker: target %s delivered %d, failed attempts %d", th.Name, th.Delivered, th.Failed)
	}
	t.Logf("heap in use: max %.1f MiB (bound %.0f MiB); %.0f resources/s overall",
		float64(maxHeap)/(1<<20), float64(cfg.heapBound)/(1<<20), float64(st.Total)/elapsed.Seconds())
	if maxHeap > cfg.heapBound {
		t.Errorf("heap in use reached %d bytes, bound %d", maxHeap, cfg.heapBound)
	}
}
