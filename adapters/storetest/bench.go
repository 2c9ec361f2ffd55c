package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	kap "github.com/kapbridge/kap"
)

func benchStore(b *testing.B, f Factory) kap.Store {
	c := &Clock{}
	return f(b, Config{Now: c.Now, LeaseTTL: time.Minute})
}

// BenchEnqueue measures Enqueue of one message per call (100 clients).
func BenchEnqueue(b *testing.B, f Factory) {
	s := benchStore(b, f)
	ctx := context.Background()
	ten, tg := Uniq("clinic"), Uniq("ehr")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Outbox().Enqueue(ctx, Msg(ten, tg, fmt.Sprintf("c%d", i%100), i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchPut measures Put of a new record queued for one target (the
// acknowledged write of a submission).
func BenchPut(b *testing.B, f Factory) {
	s := benchStore(b, f)
	ctx := context.Background()
	ten, tg := Uniq("clinic"), Uniq("ehr")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec := Rec(ten, "Observation", fmt.Sprintf("o%d", i), fmt.Sprintf("c%d", i%100), "x", day0)
		if _, _, err := s.Records().Put(ctx, rec, kap.PutOptions{Targets: []string{tg}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchLeaseAck measures leasing (8 at a time) and acking messages queued
// for 100 clients; the figure is per message.
func BenchLeaseAck(b *testing.B, f Factory) {
	s := benchStore(b, f)
	ctx := context.Background()
	ten, tg := Uniq("clinic"), Uniq("ehr")
	ob := s.Outbox()
	for i := 0; i < b.N; i += 1000 {
		var batch []kap.OutboxMessage
		for j := i; j < min(i+1000, b.N); j++ {
			batch = append(batch, Msg(ten, tg, fmt.Sprintf("c%d", j%100), j))
		}
		if err := ob.Enqueue(ctx, batch...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	done := 0
	for done < b.N {
		ls, err := ob.Lease(ctx, tg, 8)
		if err != nil {
			b.Fatal(err)
		}
		if len(ls) == 0 {
			b.Fatalf("nothing to lease after %d of %d", done, b.N)
		}
		for _, l := range ls {
			if err := ob.Ack(ctx, l); err != nil {
				b.Fatal(err)
			}
			done++
		}
	}
}
