package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
)

// BenchmarkDeliveryThroughput delivers a synthetic corpus (60 dosing
// sessions, ~230 records) through the gateway to the Medplum server behind
// toxiproxy with 20 ms added latency on every answer, and reports resources
// and records delivered per second against the bound the latency puts on
// the worker: concurrency / (requests per record × 20 ms).
//
//	go test ./internal/e2e/ -run '^$' -bench DeliveryThroughput -benchtime 1x
func BenchmarkDeliveryThroughput(b *testing.B) {
	for _, conc := range []int{4, 16} {
		b.Run(fmt.Sprintf("redis/concurrency=%d", conc), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				benchOnce(b, "redis", conc, 20*time.Millisecond)
			}
		})
	}
}

func benchOnce(b *testing.B, storeKind string, conc int, latency time.Duration) {
	b.StopTimer()
	tb := b
	srv := ehrtest.Start(tb, ehrtest.Options{})
	px := ehrtest.StartProxy(tb, srv.Addr)
	store := openStore(tb, storeKind)
	g := startGateway(tb, store, px.URL(srv), gatewayOptions{Concurrency: conc})
	c := buildCorpus(tb, 60, 0)
	// Providers first (outside the measurement), then the latency.
	for _, r := range c.providers {
		if err := g.submit(r); err != nil {
			tb.Fatal(err)
		}
	}
	g.waitDrained(tb, 3*time.Minute)
	px.Latency(latency, 0)
	before := srv.Stats()

	// Submit everything with the worker's queue filling, then time until
	// drained.
	b.StartTimer()
	start := time.Now()
	for _, cl := range c.clients {
		for _, r := range cl {
			if err := g.submit(r); err != nil {
				tb.Fatal(err)
			}
		}
	}
	g.waitDrained(tb, 10*time.Minute)
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
	bound := float64(conc) / (perRecord * latency.Seconds()) // records/s
	b.ReportMetric(float64(resources)/elapsed.Seconds(), "resources/s")
	b.ReportMetric(float64(records)/elapsed.Seconds(), "records/s")
	b.ReportMetric(bound, "bound-records/s")
	b.ReportMetric(perRecord, "requests/record")
	b.Logf("concurrency %d, +%v: %d records (%d resources) in %v; %.1f requests/record; bound %.0f records/s; interactions %v",
		conc, latency, records, resources, elapsed.Round(time.Millisecond), perRecord, bound, after.Interactions)
}
