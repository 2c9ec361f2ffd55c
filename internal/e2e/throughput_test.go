package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
)

// BenchmarkDeliveryThroughput delivers a synthetic corpus (200 dosing
// sessions, ~680 records of ~35 clients) through the gateway to the Medplum
// server behind toxiproxy with 20 ms added latency on every answer, and
// reports resources and records delivered per second against the bound the
// latency puts on the worker: min(concurrency, clients) / (requests per
// record × 20 ms) (the outbox has one message of a client in flight).
//
//	go test ./internal/e2e/ -run '^$' -bench DeliveryThroughput -benchtime 1x
func BenchmarkDeliveryThroughput(b *testing.B) {
	for _, c := range []struct {
		conc    int
		latency time.Duration
	}{{4, 20 * time.Millisecond}, {16, 20 * time.Millisecond}, {16, 0}} {
		b.Run(fmt.Sprintf("redis/concurrency=%d/latency=%v", c.conc, c.latency), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				benchOnce(b, "redis", c.conc, c.latency)
			}
		})
	}
}

func benchOnce(b *testing.B, storeKind string, conc int, latency time.Duration) {
	b.StopTimer()
	srv := ehrtest.Start(b, ehrtest.Options{})
	px := ehrtest.StartProxy(b, srv.Addr)
	store := openStore(b, storeKind)
	c := buildCorpus(b, 200, 0)
	// A first gateway delivers the providers (every record references
	// them) and stops; a second one on the same store queues everything
	// else with its worker stopped, and the measurement is its worker
	// draining the queue: delivery alone, not the API.
	first := startGateway(b, store, px.URL(srv), gatewayOptions{Concurrency: conc})
	for _, r := range c.providers {
		if err := first.submit(r); err != nil {
			b.Fatal(err)
		}
	}
	first.waitDrained(b, 3*time.Minute)
	if err := first.worker.Stop(context.Background()); err != nil {
		b.Fatal(err)
	}
	g := startGateway(b, store, px.URL(srv), gatewayOptions{Concurrency: conc, Deferred: true})
	for _, cl := range c.clients {
		for _, r := range cl {
			if err := g.submit(r); err != nil {
				b.Fatal(err)
			}
		}
	}
	if latency > 0 {
		px.Latency(latency, 0)
	}
	before := srv.Stats()

	b.StartTimer()
	start := time.Now()
	g.start()
	g.waitDrained(b, 10*time.Minute)
	elapsed := time.Since(start)
	b.StopTimer()

	after := srv.Stats()
	resources := after.Total - before.Total
	records := c.records - len(c.providers)
	requests := 0
	for k, n := range after.Requests {
		requests += n - before.Requests[k]
	}
	perRecord := float64(requests) / float64(records)
	bound := 0.0 // records/s the latency allows; 0: no latency, no bound
	if latency > 0 {
		bound = float64(min(conc, len(c.clients))) / (perRecord * latency.Seconds())
		b.ReportMetric(bound, "bound-records/s")
	}
	b.ReportMetric(float64(resources)/elapsed.Seconds(), "resources/s")
	b.ReportMetric(float64(records)/elapsed.Seconds(), "records/s")
	b.ReportMetric(perRecord, "requests/record")
	b.Logf("concurrency %d, +%v: %d records (%d resources) in %v; %.2f requests/record; latency bound %.0f records/s; interactions %v",
		conc, latency, records, resources, elapsed.Round(time.Millisecond), perRecord, bound, after.Interactions)
}
