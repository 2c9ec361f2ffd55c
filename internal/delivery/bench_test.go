package delivery_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/internal/delivery"
)

// BenchmarkDeliverNDJSON measures the worker delivering queued messages of
// 100 clients to the NDJSON target end to end: lease, send (group-committed
// fsyncs), the ledger entries of its resources (65 for a dosing session),
// ack. The figure is per message;
// msgs/s is reported too.
func BenchmarkDeliverNDJSON(b *testing.B) {
	for _, be := range backends() {
		for _, c := range []struct{ conc, resources int }{{1, 1}, {8, 1}, {8, 8}, {8, 65}} {
			conc := c.conc
			b.Run(fmt.Sprintf("%s/concurrency=%d/resources=%d", be.name, conc, c.resources), func(b *testing.B) {
				s := be.open(b, time.Minute)
				var msgs []kap.OutboxMessage
				for i := range b.N {
					m := message("clinic", fmt.Sprintf("c%d", i%100), fmt.Sprintf("s%d", i), 1)
					for r := 1; r < c.resources; r++ { // one ledger entry per resource
						m.Resources = append(m.Resources, kap.ResourceRef{Type: "Observation", System: m.Resources[0].System, Value: fmt.Sprintf("s%d-o%d", i, r)})
					}
					msgs = append(msgs, m)
					if len(msgs) == 1000 || i == b.N-1 {
						enqueue(b, s, msgs...)
						msgs = msgs[:0]
					}
				}
				files := newFiles(b, b.TempDir())
				b.ResetTimer()
				t0 := time.Now()
				start(b, delivery.Config{Store: s, PollMin: time.Millisecond, PollMax: 5 * time.Millisecond,
					Targets: []delivery.Target{{Sender: files, Concurrency: conc}}})
				for depth(b, s) > 0 {
					time.Sleep(2 * time.Millisecond)
				}
				el := time.Since(t0)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
			})
		}
	}
}
