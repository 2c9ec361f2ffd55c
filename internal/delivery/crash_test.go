package delivery_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/ndjson"
	"github.com/kapbridge/kap/internal/delivery"
)

// TestHelperDeliverer is the process TestCrashKill9DeliversExactlyOnce kills:
// a worker delivering the store at $KAP_HELPER_DB to the NDJSON folder at
// $KAP_HELPER_DIR until it is killed.
func TestHelperDeliverer(t *testing.T) {
	if os.Getenv("KAP_HELPER_DB") == "" {
		t.Skip("helper process only")
	}
	s, err := bolt.Open(os.Getenv("KAP_HELPER_DB"), bolt.Options{LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	files, err := ndjson.New(ndjson.Options{Name: target, Dir: os.Getenv("KAP_HELPER_DIR")})
	if err != nil {
		t.Fatal(err)
	}
	w, err := delivery.New(delivery.Config{Store: s, Logger: quiet, PollMin: time.Millisecond, PollMax: 5 * time.Millisecond,
		Targets: []delivery.Target{{Sender: files, Concurrency: 8}}})
	if err != nil {
		t.Fatal(err)
	}
	w.Start(context.Background())
	time.Sleep(time.Minute) // killed long before
}

// A worker process killed with SIGKILL in the middle of delivering (sends
// in flight, lines written and not acknowledged, maybe a torn batch): a new
// worker on the same store and folder delivers the rest, and every message
// is in the NDJSON files exactly once.
func TestCrashKill9DeliversExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	db := filepath.Join(t.TempDir(), "kap.db")
	dir := t.TempDir()
	s, err := bolt.Open(db, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 400
	var msgs []kap.OutboxMessage
	for i := range n {
		msgs = append(msgs, message("clinic", fmt.Sprintf("c%d", i%50), fmt.Sprintf("s%d", i), 1))
	}
	enqueue(t, s, msgs...)
	s.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperDeliverer$", "-test.v")
	cmd.Env = append(os.Environ(), "KAP_HELPER_DB="+db, "KAP_HELPER_DIR="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the helper to deliver some", func() bool { return len(delivered(t, dir)) >= 60 })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	onDisk := map[string]bool{}
	for _, id := range delivered(t, dir) {
		onDisk[id] = true
	}
	before := len(onDisk)
	if before >= n {
		t.Fatalf("the helper delivered all %d before the kill; the test needs a part", before)
	}

	s2, err := bolt.Open(db, bolt.Options{LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	// Count the messages sent again although their line was on disk (the
	// kill fell between the write and the Ack): the index must absorb them.
	var resent atomic.Int64
	f := &faulty{Sender: newFiles(t, dir), onSend: func(m kap.OutboxMessage, _ int) {
		if onDisk[fmt.Sprintf("%s-%s-v%d", m.ClientID, m.RecordID, m.Version)] {
			resent.Add(1)
		}
	}}
	start(t, delivery.Config{Store: s2, Targets: []delivery.Target{{Sender: f, Concurrency: 8}}})
	eventually(t, "the queue to drain", func() bool { return depth(t, s2) == 0 })
	got := delivered(t, dir)
	seen := map[string]bool{}
	for _, id := range got {
		if seen[id] {
			t.Fatalf("%s written twice", id)
		}
		seen[id] = true
	}
	if len(got) != n {
		t.Fatalf("%d delivered, want %d", len(got), n)
	}
	t.Logf("killed after %d of %d lines; %d of them were sent again and not rewritten; the second worker wrote the rest once",
		before, n, resent.Load())
}
