package redis_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	kap "github.com/kapbridge/kap"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
	"github.com/kapbridge/kap/adapters/storetest"
	goredis "github.com/redis/go-redis/v9"
)

func client(addr string) goredis.UniversalClient {
	return goredis.NewUniversalClient(&goredis.UniversalOptions{
		Addrs:        []string{addr},
		DialTimeout:  200 * time.Millisecond,
		ReadTimeout:  time.Second,
		WriteTimeout: time.Second,
		MaxRetries:   -1,
	})
}

// TestCrashRedisKill9 writes records (each queued for a target) while the
// redis-server is killed with SIGKILL, restarts it from its AOF and checks
// that every write that was acknowledged is there and is delivered, and that
// messages acked before the crash are not delivered again.
func TestCrashRedisKill9(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	c := client(srv.Addr)
	defer c.Close()
	st := kapredis.New(c, kapredis.Options{LeaseTTL: 500 * time.Millisecond})
	ctx := context.Background()
	ten, tg := storetest.Uniq("clinic"), storetest.Uniq("ehr")

	// Some messages delivered and acked, some in flight, before the crash.
	var acked []string
	pre := map[string]bool{}
	for i := 0; i < 50; i++ {
		rec := storetest.Rec(ten, "Observation", fmt.Sprintf("pre-%d", i), fmt.Sprintf("c%d", i%5), "x", time.Now())
		r, _, err := st.Records().Put(ctx, rec, kap.PutOptions{Targets: []string{tg}})
		if err != nil {
			t.Fatal(err)
		}
		pre[kap.MessageFor(r, tg, time.Now()).ID] = true
	}
	ls, err := st.Outbox().Lease(ctx, tg, 5)
	if err != nil || len(ls) != 5 {
		t.Fatalf("lease: %d %v", len(ls), err)
	}
	for _, l := range ls[:3] {
		if err := st.Outbox().Ack(ctx, l); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, l.Message.ID)
	}
	// ls[3:] stay in flight across the crash.

	// A writer that keeps putting records; the server dies under it.
	var (
		mu      sync.Mutex
		written = map[string]bool{} // message ids of acknowledged puts
		stop    = make(chan struct{})
		done    = make(chan struct{})
		failed  int
	)
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			rec := storetest.Rec(ten, "Observation", fmt.Sprintf("live-%d", i), fmt.Sprintf("c%d", i%7), "y", time.Now())
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			r, _, err := st.Records().Put(cctx, rec, kap.PutOptions{Targets: []string{tg}})
			cancel()
			mu.Lock()
			if err == nil {
				written[kap.MessageFor(r, tg, time.Now()).ID] = true
			} else {
				failed++
			}
			mu.Unlock()
		}
	}()
	time.Sleep(300 * time.Millisecond)
	srv.Kill9()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-done
	mu.Lock()
	nWritten := len(written)
	mu.Unlock()
	if nWritten < 10 || failed == 0 {
		t.Fatalf("the writer wrote %d records and saw %d failures; the crash did not happen under load", nWritten, failed)
	}
	srv.Restart()

	// Every acknowledged record is there.
	for id := range written {
		recID := strings.Split(id, "/")[1]
		if _, err := st.Records().Get(ctx, ten, "Observation", recID); err != nil {
			t.Fatalf("acknowledged record lost after kill -9: %v", err)
		}
	}
	// Every queued message not acked before the crash is delivered once;
	// the acked ones are not delivered again.
	want := map[string]bool{}
	for id := range pre {
		want[id] = true
	}
	for id := range written {
		want[id] = true
	}
	for _, id := range acked {
		delete(want, id)
	}
	got := map[string]int{}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ls, err := st.Outbox().Lease(ctx, tg, 50)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			got[l.Message.ID]++
			if err := st.Outbox().Ack(ctx, l); err != nil {
				t.Fatal(err)
			}
		}
		if len(ls) == 0 {
			s, err := st.Outbox().Stats(ctx, tg)
			if err != nil {
				t.Fatal(err)
			}
			if s.Depth == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond) // in-flight leases expiring
		}
	}
	for id := range want {
		if got[id] != 1 {
			t.Fatalf("message %s delivered %d times after the crash, want 1", id, got[id])
		}
	}
	for _, id := range acked {
		if got[id] != 0 {
			t.Fatalf("message %s acked before the crash was delivered again", id)
		}
	}
	t.Logf("%d records acknowledged under load, %d writes failed during the outage, %d messages delivered after restart", nWritten, failed, len(got))
	// got may hold records whose put reached Redis but whose reply was
	// lost: those are delivered (at least once), never lost.
}

// TestHelperWorker is a worker process for TestCrashWorkerKill9; it does
// nothing unless started by it.
func TestHelperWorker(t *testing.T) {
	addr := os.Getenv("KAP_HELPER_REDIS")
	if addr == "" {
		t.Skip("helper process for TestCrashWorkerKill9")
	}
	ten, tg, hang := os.Getenv("KAP_HELPER_TENANT"), os.Getenv("KAP_HELPER_TARGET"), os.Getenv("KAP_HELPER_HANG")
	c := client(addr)
	st := kapredis.New(c, kapredis.Options{LeaseTTL: time.Second, Consumer: "child"})
	ctx := context.Background()
	for {
		ls, err := st.Outbox().Lease(ctx, tg, 4)
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
		for _, l := range ls {
			if l.Message.ID == hang {
				fmt.Println("HANG", l.Message.ID)
				select {} // killed here, mid-delivery
			}
			c.RPush(ctx, "test:delivered:"+ten, l.Message.ID)
			if err := st.Outbox().Ack(ctx, l); err != nil {
				fmt.Println("ERR", err)
				os.Exit(2)
			}
		}
		if len(ls) == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// TestCrashWorkerKill9 kills a worker process with SIGKILL while it holds a
// lease: after the lease expires another worker delivers the message, once,
// and the order per client holds.
func TestCrashWorkerKill9(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	c := client(srv.Addr)
	defer c.Close()
	st := kapredis.New(c, kapredis.Options{LeaseTTL: time.Second, Consumer: "parent"})
	ctx := context.Background()
	ten, tg := storetest.Uniq("clinic"), storetest.Uniq("ehr")
	var msgs []kap.OutboxMessage
	for n := 0; n < 20; n++ {
		for cl := 0; cl < 3; cl++ {
			msgs = append(msgs, storetest.Msg(ten, tg, fmt.Sprintf("c%d", cl), n))
		}
	}
	if err := st.Outbox().Enqueue(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	hang := storetest.Msg(ten, tg, "c1", 10).ID

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWorker$")
	cmd.Env = append(os.Environ(), "KAP_HELPER_REDIS="+srv.Addr, "KAP_HELPER_TENANT="+ten, "KAP_HELPER_TARGET="+tg, "KAP_HELPER_HANG="+hang)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	hung := false
	for lines.Scan() {
		if strings.HasPrefix(lines.Text(), "HANG ") {
			hung = true
			break
		}
		if strings.HasPrefix(lines.Text(), "ERR") {
			t.Fatalf("worker: %s", lines.Text())
		}
	}
	if !hung {
		cmd.Wait()
		t.Fatal("the worker process never reached the message to hang on")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	before, _ := c.LLen(ctx, "test:delivered:"+ten).Result()
	if before == 0 || int(before) >= len(msgs) {
		t.Fatalf("the worker delivered %d of %d before it died", before, len(msgs))
	}

	// The surviving worker takes over; the hung message is due only after
	// its lease expires.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		n, _ := c.LLen(ctx, "test:delivered:"+ten).Result()
		if int(n) >= len(msgs) {
			break
		}
		ls, err := st.Outbox().Lease(ctx, tg, 4)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			c.RPush(ctx, "test:delivered:"+ten, l.Message.ID)
			if err := st.Outbox().Ack(ctx, l); err != nil {
				t.Fatal(err)
			}
		}
		if len(ls) == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(1500 * time.Millisecond) // anything left over would be reclaimable now
	if ls, err := st.Outbox().Lease(ctx, tg, 10); err != nil || len(ls) != 0 {
		t.Fatalf("after all deliveries, lease gave %d messages (%v)", len(ls), err)
	}
	got, err := c.LRange(ctx, "test:delivered:"+ten, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	rec := storetest.NewRecorder()
	byID := map[string]kap.OutboxMessage{}
	for _, m := range msgs {
		byID[m.ID] = m
	}
	for _, id := range got {
		rec.Deliver(byID[id], nil)
	}
	rec.Check(t, msgs)
	t.Logf("worker delivered %d before SIGKILL; the survivor delivered %d including the hung one", before, len(got)-int(before))
}
