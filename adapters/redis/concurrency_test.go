package redis_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"testing"
	"time"

	kap "github.com/kapbridge/kap"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
	"github.com/kapbridge/kap/adapters/storetest"
)

// TestTwoGatewaysTenThousand runs two gateways (separate clients, stores and
// worker pools) on one Redis. Each stores records (queued atomically) while
// both pools deliver to one recording target; one delivery in ten fails once
// and is retried. All 10,000 must arrive exactly once, in order per client,
// never two of a client at the same time.
func TestTwoGatewaysTenThousand(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000-record test skipped under -short")
	}
	const total, clients = 10000, 200
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	ten, tg := storetest.Uniq("clinic"), storetest.Uniq("ehr")
	var gws [2]*kapredis.Store
	for i := range gws {
		c := client(srv.Addr)
		defer c.Close()
		gws[i] = kapredis.New(c, kapredis.Options{LeaseTTL: 5 * time.Second, Consumer: fmt.Sprintf("gw%d", i)})
	}

	// Per client, the messages in put order; client k is written by gateway k%2.
	want := make([][]kap.OutboxMessage, 2)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range gws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < total; i += 2 {
				cl := fmt.Sprintf("c%03d", (i/2)%(clients/2)*2+g)
				rec := storetest.Rec(ten, "Observation", fmt.Sprintf("obs-%05d", i), cl, "x", time.Now())
				r, created, err := gws[g].Records().Put(ctx, rec, kap.PutOptions{Targets: []string{tg}})
				if err != nil || !created {
					errs <- fmt.Errorf("put %d: created=%v %v", i, created, err)
					return
				}
				want[g] = append(want[g], kap.MessageFor(r, tg, time.Now()))
			}
		}()
	}

	rec := storetest.NewRecorder()
	var retried sync.Map
	dctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	var workers sync.WaitGroup
	for g := range gws {
		for w := 0; w < 4; w++ {
			workers.Add(1)
			go func() {
				defer workers.Done()
				ob := gws[g].Outbox()
				for dctx.Err() == nil && rec.Delivered() < total {
					ls, err := ob.Lease(dctx, tg, 8)
					if err != nil {
						if dctx.Err() == nil {
							errs <- err
						}
						return
					}
					if len(ls) == 0 {
						time.Sleep(time.Millisecond)
						continue
					}
					for _, l := range ls {
						h := fnv.New32a()
						h.Write([]byte(l.Message.ID))
						if h.Sum32()%10 == 0 {
							if _, done := retried.LoadOrStore(l.Message.ID, true); !done {
								a := kap.Attempt{At: time.Now(), Status: 503}
								if err := ob.Retry(dctx, l, time.Now().Add(5*time.Millisecond), a); err != nil {
									errs <- fmt.Errorf("retry: %w", err)
									return
								}
								continue
							}
						}
						rec.Deliver(l.Message, nil)
						if err := ob.Ack(dctx, l); err != nil {
							errs <- fmt.Errorf("ack: %w", err)
							return
						}
					}
				}
			}()
		}
	}
	start := time.Now()
	wg.Wait()
	workers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if rec.Delivered() < total {
		t.Fatalf("timed out: %d of %d delivered", rec.Delivered(), total)
	}
	all := append(want[0], want[1]...)
	rec.Check(t, all)
	n := 0
	retried.Range(func(any, any) bool { n++; return true })
	st, err := gws[0].Outbox().Stats(ctx, tg)
	if err != nil || st.Depth != 0 {
		t.Fatalf("after delivery: %+v %v", st, err)
	}
	t.Logf("%d records delivered once each by two gateways in %v (%d retried once)", total, time.Since(start).Round(time.Millisecond), n)
}
