package bolt_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	kap "github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/storetest"
)

// TestHelperWriter is a writer process for TestCrashEmbeddedKill9; it does
// nothing unless started by it. It puts records, each queued for a target,
// and prints the id of every acknowledged one.
func TestHelperWriter(t *testing.T) {
	path := os.Getenv("KAP_HELPER_BOLT")
	if path == "" {
		t.Skip("helper process for TestCrashEmbeddedKill9")
	}
	s, err := bolt.Open(path, bolt.Options{LeaseTTL: 50 * time.Millisecond})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	ctx := context.Background()
	ten, tg := os.Getenv("KAP_HELPER_TENANT"), os.Getenv("KAP_HELPER_TARGET")
	w := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		id := fmt.Sprintf("r%d", i)
		rec := storetest.Rec(ten, "Observation", id, fmt.Sprintf("c%d", i%4), "x", time.Now())
		if _, _, err := s.Records().Put(ctx, rec, kap.PutOptions{Targets: []string{tg}}); err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
		fmt.Fprintln(w, "ACK", id)
		w.Flush()
		if i%3 == 0 { // keep a lease in flight too
			if ls, err := s.Outbox().Lease(ctx, tg, 1); err == nil && len(ls) == 1 && i%2 == 0 {
				fmt.Fprintln(w, "ACKING", ls[0].Message.ID)
				w.Flush()
				s.Outbox().Ack(ctx, ls[0])
				fmt.Fprintln(w, "DELIVERED", ls[0].Message.ID)
				w.Flush()
			}
		}
	}
}

// TestCrashEmbeddedKill9 kills a process writing to the embedded store with
// SIGKILL, reopens the file and checks that every acknowledged record is
// stored and queued, and that the queue then delivers everything not yet
// acked exactly once, in order per client.
func TestCrashEmbeddedKill9(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kap.db")
	ten, tg := storetest.Uniq("clinic"), storetest.Uniq("ehr")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$")
	cmd.Env = append(os.Environ(), "KAP_HELPER_BOLT="+path, "KAP_HELPER_TENANT="+ten, "KAP_HELPER_TARGET="+tg)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	delivered := map[string]bool{}
	acking := map[string]bool{} // killed between ACKING and DELIVERED: uncertain
	lines := bufio.NewScanner(out)
	timer := time.AfterFunc(400*time.Millisecond, func() { cmd.Process.Signal(syscall.SIGKILL) })
	defer timer.Stop()
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		switch {
		case len(f) == 2 && f[0] == "ACK":
			acked[f[1]] = true
		case len(f) == 2 && f[0] == "ACKING":
			acking[f[1]] = true
		case len(f) == 2 && f[0] == "DELIVERED":
			delivered[f[1]] = true
			delete(acking, f[1])
		case len(f) > 0 && f[0] == "ERR":
			t.Fatalf("writer: %s", lines.Text())
		}
	}
	cmd.Wait()
	if len(acked) < 5 {
		t.Fatalf("the writer acknowledged only %d records before it was killed", len(acked))
	}

	ctx := context.Background()
	s, err := bolt.Open(path, bolt.Options{LeaseTTL: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var want []kap.OutboxMessage
	for i := 0; i < len(acked)+10; i++ {
		id := fmt.Sprintf("r%d", i)
		r, err := s.Records().Get(ctx, ten, "Observation", id)
		if acked[id] && err != nil {
			t.Fatalf("acknowledged record %s lost after kill -9: %v", id, err)
		}
		if err == nil && !delivered[kap.MessageFor(r, tg, time.Now()).ID] {
			want = append(want, kap.MessageFor(r, tg, time.Now()))
		}
	}
	time.Sleep(100 * time.Millisecond) // the dead writer's lease expires
	rec := storetest.NewRecorder()
	// Drain the outbox: the acknowledged, undelivered records, plus any
	// whose ack was cut by the kill (delivered at most once more).
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ls, err := s.Outbox().Lease(ctx, tg, 16)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			rec.Deliver(l.Message, nil)
			if err := s.Outbox().Ack(ctx, l); err != nil {
				t.Fatal(err)
			}
		}
		if len(ls) == 0 {
			st, err := s.Outbox().Stats(ctx, tg)
			if err != nil {
				t.Fatal(err)
			}
			if st.Depth == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, m := range want {
		if !acking[m.ID] {
			continue
		}
		if n := rec.Count(m.ID); n > 1 {
			t.Fatalf("message %s delivered %d times", m.ID, n)
		}
	}
	var sure []kap.OutboxMessage
	for _, m := range want {
		if !acking[m.ID] || rec.Count(m.ID) == 1 {
			sure = append(sure, m)
		}
	}
	rec.Check(t, sure)
	t.Logf("%d records acknowledged before SIGKILL, %d delivered by the dead writer, %d delivered after reopening", len(acked), len(delivered), len(want))
}
