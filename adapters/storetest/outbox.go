package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	kap "github.com/kapbridge/kap"
)

// Msg returns an outbox message numbered n of client in tenant for target.
func Msg(tenant, target, client string, n int) kap.OutboxMessage {
	return kap.OutboxMessage{
		ID:       fmt.Sprintf("%s/m%06d", client, n),
		Tenant:   tenant,
		Target:   target,
		ClientID: client,
		Kind:     "Observation",
		RecordID: fmt.Sprintf("r%d", n),
		Version:  1,
		Bundle:   json.RawMessage(fmt.Sprintf(`{"resourceType":"Bundle","n":%d}`, n)),
	}
}

func ids(ls []kap.Lease) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Message.ID)
	}
	sort.Strings(out)
	return out
}

func lease(t *testing.T, ob kap.Outbox, target string, max int) []kap.Lease {
	t.Helper()
	ls, err := ob.Lease(context.Background(), target, max)
	must(t, err)
	return ls
}

// RunOutbox tests kap.Outbox.
func RunOutbox(t *testing.T, f Factory) {
	ctx := context.Background()
	t.Run("OrderPerClient", func(t *testing.T) {
		s, _ := open(t, f)
		ob := s.Outbox()
		ten, tg := Uniq("clinic"), Uniq("ehr")
		must(t, ob.Enqueue(ctx, Msg(ten, tg, "c1", 1), Msg(ten, tg, "c1", 2), Msg(ten, tg, "c2", 1)))
		must(t, ob.Enqueue(ctx, Msg(ten, tg, "c1", 3)))
		ls := lease(t, ob, tg, 10)
		if got := fmt.Sprint(ids(ls)); got != "[c1/m000001 c2/m000001]" {
			t.Fatalf("first lease = %s, want the head of each client", got)
		}
		if more := lease(t, ob, tg, 10); len(more) != 0 {
			t.Fatalf("leased %v while every client has one in flight", ids(more))
		}
		for _, l := range ls {
			if l.Token == "" || !l.Deadline.After(time.Now()) {
				t.Fatalf("lease token %q deadline %v", l.Token, l.Deadline)
			}
			must(t, ob.Ack(ctx, l))
		}
		for _, want := range []string{"c1/m000002", "c1/m000003"} {
			ls := lease(t, ob, tg, 10)
			if len(ls) != 1 || ls[0].Message.ID != want {
				t.Fatalf("lease = %v, want [%s]", ids(ls), want)
			}
			must(t, ob.Ack(ctx, ls[0]))
		}
		if ls := lease(t, ob, tg, 10); len(ls) != 0 {
			t.Fatalf("leased %v from an empty outbox", ids(ls))
		}
		st, err := ob.Stats(ctx, tg)
		must(t, err)
		if st.Depth != 0 || !st.Oldest.IsZero() {
			t.Fatalf("stats of empty outbox = %+v", st)
		}
	})
	t.Run("RetryBlocksOnlyItsClient", func(t *testing.T) {
		s, clock := open(t, f)
		ob := s.Outbox()
		ten, tg := Uniq("clinic"), Uniq("ehr")
		must(t, ob.Enqueue(ctx, Msg(ten, tg, "c1", 1), Msg(ten, tg, "c1", 2), Msg(ten, tg, "c2", 1), Msg(ten, tg, "c2", 2)))
		ls := lease(t, ob, tg, 10)
		if len(ls) != 2 {
			t.Fatalf("leased %v, want 2", ids(ls))
		}
		for _, l := range ls {
			if l.Message.ClientID == "c1" {
				a := kap.Attempt{At: clock.Now(), Status: 503, Error: "unavailable", RetryAfter: time.Minute}
				must(t, ob.Retry(ctx, l, clock.Now().Add(time.Minute), a))
			} else {
				must(t, ob.Ack(ctx, l))
			}
		}
		ls = lease(t, ob, tg, 10)
		if got := fmt.Sprint(ids(ls)); got != "[c2/m000002]" {
			t.Fatalf("while c1 waits: lease = %s, want [c2/m000002]", got)
		}
		must(t, ob.Ack(ctx, ls[0]))
		clock.Advance(2 * time.Minute)
		ls = lease(t, ob, tg, 10)
		if len(ls) != 1 || ls[0].Message.ID != "c1/m000001" {
			t.Fatalf("after the retry time: lease = %v, want [c1/m000001]", ids(ls))
		}
		if at := ls[0].Message.Attempts; len(at) != 1 || at[0].Status != 503 || at[0].RetryAfter != time.Minute {
			t.Fatalf("attempts = %+v", at)
		}
		must(t, ob.Ack(ctx, ls[0]))
		ls = lease(t, ob, tg, 10)
		if len(ls) != 1 || ls[0].Message.ID != "c1/m000002" {
			t.Fatalf("lease = %v, want [c1/m000002]", ids(ls))
		}
	})
	t.Run("ExpiredLeaseIsReclaimedAndFenced", func(t *testing.T) {
		s, clock := open(t, f)
		ob := s.Outbox()
		ten, tg := Uniq("clinic"), Uniq("ehr")
		must(t, ob.Enqueue(ctx, Msg(ten, tg, "c1", 1), Msg(ten, tg, "c1", 2)))
		old := lease(t, ob, tg, 10)
		if len(old) != 1 {
			t.Fatalf("leased %v", ids(old))
		}
		time.Sleep(leaseTTL + 150*time.Millisecond) // the worker "died"
		ls := lease(t, ob, tg, 10)
		if len(ls) != 1 || ls[0].Message.ID != "c1/m000001" {
			t.Fatalf("after expiry: lease = %v, want the same head again", ids(ls))
		}
		if ls[0].Token == old[0].Token {
			t.Fatalf("reclaimed lease has the old token %q", old[0].Token)
		}
		wantCode(t, ob.Ack(ctx, old[0]), kap.ECONFLICT)
		wantCode(t, ob.Retry(ctx, old[0], clock.Now(), kap.Attempt{}), kap.ECONFLICT)
		wantCode(t, ob.DeadLetter(ctx, old[0], "x", kap.Attempt{}), kap.ECONFLICT)
		must(t, ob.Ack(ctx, ls[0]))
		wantCode(t, ob.Ack(ctx, ls[0]), kap.ECONFLICT) // acked twice
		ls = lease(t, ob, tg, 10)
		if len(ls) != 1 || ls[0].Message.ID != "c1/m000002" {
			t.Fatalf("lease = %v, want [c1/m000002]", ids(ls))
		}
	})
	t.Run("DeadLetterAndReplay", func(t *testing.T) {
		s, clock := open(t, f)
		ob := s.Outbox()
		ten, tg := Uniq("clinic"), Uniq("ehr")
		must(t, ob.Enqueue(ctx, Msg(ten, tg, "c1", 1), Msg(ten, tg, "c1", 2), Msg(ten, tg, "c2", 1)))
		outcome := json.RawMessage(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid"}]}`)
		ls := lease(t, ob, tg, 10)
		for _, l := range ls {
			must(t, ob.Retry(ctx, l, clock.Now(), kap.Attempt{At: clock.Now(), Status: 500}))
		}
		ls = lease(t, ob, tg, 10)
		if len(ls) != 2 {
			t.Fatalf("leased %v after an immediate retry, want 2", ids(ls))
		}
		for _, l := range ls {
			must(t, ob.DeadLetter(ctx, l, "target rejected the bundle", kap.Attempt{At: clock.Now(), Status: 422, OperationOutcome: outcome}))
		}
		// c1's next message is released.
		ls = lease(t, ob, tg, 10)
		if len(ls) != 1 || ls[0].Message.ID != "c1/m000002" {
			t.Fatalf("after dead-lettering: lease = %v", ids(ls))
		}
		must(t, ob.Ack(ctx, ls[0]))
		dls, err := ob.DeadLetters(ctx, ten, tg, 10)
		must(t, err)
		if len(dls) != 2 {
			t.Fatalf("%d dead letters, want 2", len(dls))
		}
		for _, dl := range dls {
			at := dl.Message.Attempts
			if dl.Reason != "target rejected the bundle" || len(at) != 2 || at[0].Status != 500 || at[1].Status != 422 || dl.DeadAt.IsZero() {
				t.Fatalf("dead letter = %+v", dl)
			}
			jsonEq(t, at[1].OperationOutcome, outcome)
			if len(dl.Message.Bundle) == 0 {
				t.Fatal("dead letter lost the bundle")
			}
		}
		st, err := ob.Stats(ctx, tg)
		must(t, err)
		if st.DeadLetters != 2 || st.Depth != 0 {
			t.Fatalf("stats = %+v", st)
		}
		other, err := ob.DeadLetters(ctx, Uniq("clinic"), tg, 10)
		must(t, err)
		if len(other) != 0 {
			t.Fatal("another tenant sees the dead letters")
		}
		wantCode(t, ob.Replay(ctx, ten, tg, "nope"), kap.ENOTFOUND)
		must(t, ob.Replay(ctx, ten, tg, "c1/m000001"))
		wantCode(t, ob.Replay(ctx, ten, tg, "c1/m000001"), kap.ENOTFOUND)
		ls = lease(t, ob, tg, 10)
		if len(ls) != 1 || ls[0].Message.ID != "c1/m000001" || len(ls[0].Message.Attempts) != 2 {
			t.Fatalf("replayed lease = %v", ids(ls))
		}
		must(t, ob.Ack(ctx, ls[0]))
		n, err := ob.ReplayAll(ctx, ten, tg)
		must(t, err)
		if n != 1 {
			t.Fatalf("ReplayAll = %d, want 1", n)
		}
		ls = lease(t, ob, tg, 10)
		if len(ls) != 1 || ls[0].Message.ID != "c2/m000001" {
			t.Fatalf("after ReplayAll: lease = %v", ids(ls))
		}
		dls, err = ob.DeadLetters(ctx, ten, tg, 10)
		must(t, err)
		if len(dls) != 0 {
			t.Fatalf("%d dead letters after replay", len(dls))
		}
	})
	t.Run("ReplayGivesFreshBudget", func(t *testing.T) {
		s, clock := open(t, f)
		ob := s.Outbox()
		ten, tg := Uniq("clinic"), Uniq("ehr")
		must(t, ob.Enqueue(ctx, Msg(ten, tg, "c1", 1)))
		// Three failed attempts, the last one dead-letters.
		for i := range 3 {
			ls := lease(t, ob, tg, 1)
			if len(ls) != 1 {
				t.Fatalf("attempt %d: leased %v", i+1, ids(ls))
			}
			if n := ls[0].Message.AttemptsSinceReplay(); n != i {
				t.Fatalf("attempt %d: AttemptsSinceReplay = %d before a replay, want %d", i+1, n, i)
			}
			a := kap.Attempt{At: clock.Now(), Status: 503, Error: fmt.Sprintf("try %d", i+1)}
			if i < 2 {
				must(t, ob.Retry(ctx, ls[0], clock.Now(), a))
			} else {
				must(t, ob.DeadLetter(ctx, ls[0], "3 attempts failed", a))
			}
		}
		for round := 1; round <= 2; round++ {
			must(t, ob.Replay(ctx, ten, tg, "c1/m000001"))
			ls := lease(t, ob, tg, 1)
			if len(ls) != 1 {
				t.Fatalf("replay %d: leased %v", round, ids(ls))
			}
			m := ls[0].Message
			if len(m.Attempts) != 3+2*(round-1) || m.Attempts[0].Error != "try 1" {
				t.Fatalf("replay %d: the attempt history was not kept: %+v", round, m.Attempts)
			}
			if m.Replays != round || m.ReplayedAttempts != len(m.Attempts) || m.AttemptsSinceReplay() != 0 {
				t.Fatalf("replay %d: Replays=%d ReplayedAttempts=%d AttemptsSinceReplay=%d (attempts %d), want a fresh budget",
					round, m.Replays, m.ReplayedAttempts, m.AttemptsSinceReplay(), len(m.Attempts))
			}
			if len(m.Bundle) == 0 || m.ClientID != "c1" {
				t.Fatalf("replay %d: the message lost its content: %+v", round, m)
			}
			// One attempt after the replay counts; then dead again.
			must(t, ob.Retry(ctx, ls[0], clock.Now(), kap.Attempt{At: clock.Now(), Status: 500, Error: "after replay"}))
			ls = lease(t, ob, tg, 1)
			if len(ls) != 1 || ls[0].Message.AttemptsSinceReplay() != 1 || ls[0].Message.Replays != round {
				t.Fatalf("replay %d: after one more attempt: %+v", round, ls)
			}
			must(t, ob.DeadLetter(ctx, ls[0], "refused", kap.Attempt{At: clock.Now(), Status: 422}))
			// Dead again: the next round replays it once more.
		}
		dls, err := ob.DeadLetters(ctx, ten, tg, 10)
		must(t, err)
		if len(dls) != 1 || len(dls[0].Message.Attempts) != 7 || dls[0].Message.Replays != 2 {
			t.Fatalf("dead letter after two replays = %+v", dls)
		}
		st, err := ob.Status(ctx, ten, tg, "c1/m000001")
		must(t, err)
		if st.State != kap.MessageDead || len(st.Attempts) != 7 {
			t.Fatalf("status = %+v", st)
		}
	})
	t.Run("Discard", func(t *testing.T) {
		s, clock := open(t, f)
		ob := s.Outbox()
		ten, tg := Uniq("clinic"), Uniq("ehr")
		must(t, ob.Enqueue(ctx, Msg(ten, tg, "c1", 1), Msg(ten, tg, "c2", 1), Msg(ten, tg, "c3", 1)))
		ls := lease(t, ob, tg, 10)
		if len(ls) != 3 {
			t.Fatalf("leased %v, want 3", ids(ls))
		}
		for _, l := range ls {
			if l.Message.ClientID == "c3" {
				continue // stays in flight: not a dead letter
			}
			must(t, ob.Retry(ctx, l, clock.Now(), kap.Attempt{At: clock.Now(), Status: 500}))
		}
		for _, l := range lease(t, ob, tg, 10) {
			must(t, ob.DeadLetter(ctx, l, "refused", kap.Attempt{At: clock.Now(), Status: 422}))
		}
		st, err := ob.Stats(ctx, tg)
		must(t, err)
		if st.DeadLetters != 2 || st.Depth != 1 {
			t.Fatalf("stats before the discard = %+v", st)
		}
		wantCode(t, ob.Discard(ctx, ten, tg, "nope", "operator"), kap.ENOTFOUND)
		wantCode(t, ob.Discard(ctx, Uniq("clinic"), tg, "c1/m000001", "operator"), kap.ENOTFOUND)
		wantCode(t, ob.Discard(ctx, ten, tg, "c3/m000001", "operator"), kap.ENOTFOUND) // in flight, not dead
		wantCode(t, ob.Discard(ctx, "", tg, "c1/m000001", "operator"), kap.EINVALID)
		must(t, ob.Discard(ctx, ten, tg, "c1/m000001", "duplicate of a manual entry"))
		wantCode(t, ob.Discard(ctx, ten, tg, "c1/m000001", "again"), kap.ENOTFOUND)
		st, err = ob.Stats(ctx, tg)
		must(t, err)
		if st.DeadLetters != 1 || st.Depth != 1 {
			t.Fatalf("stats after the discard = %+v, want 1 dead letter and the in-flight message", st)
		}
		dls, err := ob.DeadLetters(ctx, ten, tg, 10)
		must(t, err)
		if len(dls) != 1 || dls[0].Message.ID != "c2/m000001" {
			t.Fatalf("dead letters after the discard = %+v", dls)
		}
		_, err = ob.Status(ctx, ten, tg, "c1/m000001")
		wantCode(t, err, kap.ENOTFOUND)
		wantCode(t, ob.Replay(ctx, ten, tg, "c1/m000001"), kap.ENOTFOUND)
		n, err := ob.ReplayAll(ctx, ten, tg)
		must(t, err)
		if n != 1 {
			t.Fatalf("ReplayAll after the discard = %d, want 1 (c2 only)", n)
		}
		// The in-flight message is untouched and can still be acked.
		for _, l := range ls {
			if l.Message.ClientID == "c3" {
				must(t, ob.Ack(ctx, l))
			}
		}
		// A discarded id may be queued again (a new decision to send it),
		// with no attempts left over.
		must(t, ob.Enqueue(ctx, Msg(ten, tg, "c1", 1)))
		var got *kap.Lease
		for _, l := range lease(t, ob, tg, 10) {
			if l.Message.ID == "c1/m000001" {
				got = &l
			}
		}
		if got == nil || len(got.Message.Attempts) != 0 {
			t.Fatalf("re-enqueued discarded message: %+v", got)
		}
	})
	t.Run("Release", func(t *testing.T) {
		s, clock := open(t, f)
		ob := s.Outbox()
		ten, tg := Uniq("clinic"), Uniq("ehr")
		must(t, ob.Enqueue(ctx, Msg(ten, tg, "c1", 1), Msg(ten, tg, "c1", 2)))
		ls := lease(t, ob, tg, 10)
		if len(ls) != 1 {
			t.Fatalf("leased %v", ids(ls))
		}
		must(t, ob.Release(ctx, ls[0]))
		wantCode(t, ob.Release(ctx, ls[0]), kap.ECONFLICT) // released twice
		wantCode(t, ob.Ack(ctx, ls[0]), kap.ECONFLICT)     // the old lease is fenced
		again := lease(t, ob, tg, 10)
		if len(again) != 1 || again[0].Message.ID != "c1/m000001" {
			t.Fatalf("after release: lease = %v, want the same head at once", ids(again))
		}
		if len(again[0].Message.Attempts) != 0 {
			t.Fatalf("release recorded an attempt: %+v", again[0].Message.Attempts)
		}
		wantCode(t, ob.Release(ctx, ls[0]), kap.ECONFLICT)
		// A release after a retry is fenced too.
		must(t, ob.Retry(ctx, again[0], clock.Now(), kap.Attempt{At: clock.Now(), Status: 503}))
		wantCode(t, ob.Release(ctx, again[0]), kap.ECONFLICT)
		third := lease(t, ob, tg, 10)
		if len(third) != 1 || third[0].Message.ID != "c1/m000001" || len(third[0].Message.Attempts) != 1 {
			t.Fatalf("after retry: lease = %v", ids(third))
		}
		must(t, ob.Release(ctx, third[0]))
		fourth := lease(t, ob, tg, 10)
		if len(fourth) != 1 || len(fourth[0].Message.Attempts) != 1 {
			t.Fatalf("release changed the attempts: %v", ids(fourth))
		}
		must(t, ob.Ack(ctx, fourth[0]))
		wantCode(t, ob.Release(ctx, kap.Lease{Message: Msg(ten, tg, "c1", 2)}), kap.EINVALID) // no token
	})
	t.Run("Status", func(t *testing.T) {
		s, clock := open(t, f)
		ob := s.Outbox()
		ten, tg := Uniq("clinic"), Uniq("ehr")
		status := func(id string) kap.MessageStatus {
			t.Helper()
			st, err := ob.Status(ctx, ten, tg, id)
			must(t, err)
			if st.ID != id {
				t.Fatalf("status id = %q, want %q", st.ID, id)
			}
			return st
		}
		_, err := ob.Status(ctx, ten, tg, "c1/m000001")
		wantCode(t, err, kap.ENOTFOUND)
		must(t, ob.Enqueue(ctx, Msg(ten, tg, "c1", 1), Msg(ten, tg, "c1", 2)))
		for _, id := range []string{"c1/m000001", "c1/m000002"} {
			if st := status(id); st.State != kap.MessageQueued || st.EnqueuedAt.IsZero() || len(st.Attempts) != 0 {
				t.Fatalf("status of %s = %+v, want queued", id, st)
			}
		}
		ls := lease(t, ob, tg, 10)
		st := status("c1/m000001")
		// The suite's lease is short: on a stalled machine it may have
		// expired before Status ran, and then queued is right.
		if time.Now().Before(ls[0].Deadline) && (st.State != kap.MessageInFlight || st.LeaseDeadline.Sub(ls[0].Deadline).Abs() > time.Second) {
			t.Fatalf("leased status = %+v, want in-flight until %v", st, ls[0].Deadline)
		}
		if st.State != kap.MessageInFlight && st.State != kap.MessageQueued {
			t.Fatalf("leased status = %+v", st)
		}
		if st := status("c1/m000002"); st.State != kap.MessageQueued {
			t.Fatalf("status behind a lease = %+v, want queued", st)
		}
		at := clock.Now().Add(time.Hour)
		must(t, ob.Retry(ctx, ls[0], at, kap.Attempt{At: clock.Now(), Status: 503, Error: "unavailable"}))
		st = status("c1/m000001")
		if st.State != kap.MessageRetrying || st.NextAttempt.Sub(at).Abs() > time.Millisecond || len(st.Attempts) != 1 || st.Attempts[0].Status != 503 {
			t.Fatalf("retrying status = %+v, want retrying at %v with 1 attempt", st, at)
		}
		clock.Advance(2 * time.Hour)
		ls = lease(t, ob, tg, 10)
		if len(ls) != 1 {
			t.Fatalf("leased %v after the retry time", ids(ls))
		}
		if st := status("c1/m000001"); time.Now().Before(ls[0].Deadline) && st.State != kap.MessageInFlight || len(st.Attempts) != 1 {
			t.Fatalf("re-leased status = %+v", st)
		}
		outcome := json.RawMessage(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid"}]}`)
		must(t, ob.DeadLetter(ctx, ls[0], "target rejected the bundle", kap.Attempt{At: clock.Now(), Status: 422, OperationOutcome: outcome}))
		st = status("c1/m000001")
		if st.State != kap.MessageDead || st.Reason != "target rejected the bundle" || st.DeadAt.IsZero() || len(st.Attempts) != 2 || st.Attempts[1].Status != 422 {
			t.Fatalf("dead status = %+v", st)
		}
		jsonEq(t, st.Attempts[1].OperationOutcome, outcome)
		ls = lease(t, ob, tg, 10)
		must(t, ob.Ack(ctx, ls[0]))
		_, err = ob.Status(ctx, ten, tg, "c1/m000002") // delivered
		wantCode(t, err, kap.ENOTFOUND)
		_, err = ob.Status(ctx, Uniq("clinic"), tg, "c1/m000001") // another tenant
		wantCode(t, err, kap.ENOTFOUND)
		must(t, ob.Replay(ctx, ten, tg, "c1/m000001"))
		if st := status("c1/m000001"); st.State != kap.MessageRetrying || len(st.Attempts) != 2 || !st.NextAttempt.IsZero() {
			t.Fatalf("replayed status = %+v, want retrying (due now) with 2 attempts", st)
		}
		_, err = ob.Status(ctx, ten, tg, "")
		wantCode(t, err, kap.EINVALID)
	})
	t.Run("EnqueueOnceAndStats", func(t *testing.T) {
		s, _ := open(t, f)
		ob := s.Outbox()
		ten, tg := Uniq("clinic"), Uniq("ehr")
		first := Msg(ten, tg, "c1", 1)
		first.EnqueuedAt = time.Now().Add(-time.Hour)
		must(t, ob.Enqueue(ctx, first, Msg(ten, tg, "c2", 1)))
		must(t, ob.Enqueue(ctx, Msg(ten, tg, "c1", 1))) // same id again
		st, err := ob.Stats(ctx, tg)
		must(t, err)
		if st.Depth != 2 || !st.Oldest.Equal(first.EnqueuedAt) && st.Oldest.Sub(first.EnqueuedAt).Abs() > time.Millisecond {
			t.Fatalf("stats = %+v, want depth 2 and oldest %v", st, first.EnqueuedAt)
		}
		ls := lease(t, ob, tg, 10)
		for _, l := range ls {
			must(t, ob.Ack(ctx, l))
		}
		if ls := lease(t, ob, tg, 10); len(ls) != 0 {
			t.Fatalf("a duplicate id was queued twice: %v", ids(ls))
		}
		wantCode(t, ob.Enqueue(ctx, kap.OutboxMessage{ID: "x", Tenant: ten, Target: tg}), kap.EINVALID)
		_, err = ob.Lease(ctx, "bad target", 1)
		wantCode(t, err, kap.EINVALID)
	})
	t.Run("ConcurrentWorkers", func(t *testing.T) {
		s, _ := open(t, f)
		ob := s.Outbox()
		ten, tg := Uniq("clinic"), Uniq("ehr")
		const clients, per = 10, 30
		var msgs []kap.OutboxMessage
		for n := 0; n < per; n++ {
			for c := 0; c < clients; c++ {
				msgs = append(msgs, Msg(ten, tg, fmt.Sprintf("c%d", c), n))
			}
		}
		must(t, ob.Enqueue(ctx, msgs...))
		rec := NewRecorder()
		RunWorkers(ctx, t, ob, tg, 4, rec, clients*per, 30*time.Second)
		rec.Check(t, msgs)
	})
}

// Recorder is a delivery target that records what it received.
type Recorder struct {
	mu        sync.Mutex
	got       map[string]int      // message id -> deliveries
	order     map[string][]string // client -> ids in delivery order
	inFlight  map[string]bool     // client -> a delivery is running
	overlap   int                 // deliveries that overlapped for one client
	delivered int
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	return &Recorder{got: map[string]int{}, order: map[string][]string{}, inFlight: map[string]bool{}}
}

// Deliver records m; it notes when two deliveries of one client overlap.
func (r *Recorder) Deliver(m kap.OutboxMessage, work func()) {
	key := m.Tenant + "/" + m.ClientID
	r.mu.Lock()
	if r.inFlight[key] {
		r.overlap++
	}
	r.inFlight[key] = true
	r.mu.Unlock()
	if work != nil {
		work()
	}
	r.mu.Lock()
	r.inFlight[key] = false
	r.got[m.ID]++
	r.order[key] = append(r.order[key], m.ID)
	r.delivered++
	r.mu.Unlock()
}

// Delivered returns how many deliveries were recorded.
func (r *Recorder) Delivered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.delivered
}

// Count returns how many times the message id was delivered.
func (r *Recorder) Count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[id]
}

// Check fails t unless every message of want was delivered exactly once, in
// enqueue order per client, with no overlapping deliveries of a client.
func (r *Recorder) Check(t testing.TB, want []kap.OutboxMessage) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	lost, dup := 0, 0
	wantOrder := map[string][]string{}
	for _, m := range want {
		switch n := r.got[m.ID]; {
		case n == 0:
			lost++
		case n > 1:
			dup += n - 1
		}
		key := m.Tenant + "/" + m.ClientID
		wantOrder[key] = append(wantOrder[key], m.ID)
	}
	if lost != 0 || dup != 0 || len(r.got) != len(want) {
		t.Fatalf("delivered %d distinct of %d: %d lost, %d duplicates", len(r.got), len(want), lost, dup)
	}
	if r.overlap != 0 {
		t.Fatalf("%d deliveries overlapped another of the same client", r.overlap)
	}
	for k, w := range wantOrder {
		if strings.Join(r.order[k], ",") != strings.Join(w, ",") {
			t.Fatalf("client %s delivered out of order", k)
		}
	}
}

// RunWorkers runs n workers that lease from target, deliver to rec and ack,
// until rec has total deliveries or timeout passes.
func RunWorkers(ctx context.Context, t testing.TB, ob kap.Outbox, target string, n int, rec *Recorder, total int, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && rec.Delivered() < total {
				ls, err := ob.Lease(ctx, target, 8)
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				if len(ls) == 0 {
					time.Sleep(2 * time.Millisecond)
					continue
				}
				for _, l := range ls {
					rec.Deliver(l.Message, nil)
					if err := ob.Ack(ctx, l); err != nil {
						if ctx.Err() == nil {
							errs <- fmt.Errorf("ack %s: %w", l.Message.ID, err)
						}
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("worker: %v", err)
	}
	if ctx.Err() != nil && rec.Delivered() < total {
		t.Fatalf("timed out after %d of %d deliveries", rec.Delivered(), total)
	}
}
