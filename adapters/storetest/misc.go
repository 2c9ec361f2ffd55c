package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	kap "github.com/kapbridge/kap"
)

// RunLedger tests kap.Ledger.
func RunLedger(t *testing.T, f Factory) {
	ctx := context.Background()
	s, _ := open(t, f)
	l := s.Ledger()
	ten, tg := Uniq("clinic"), Uniq("ehr")
	k := kap.LedgerKey{Tenant: ten, Target: tg, ResourceType: "Patient", Identifier: "urn:clinic|c-1"}
	_, err := l.Get(ctx, k)
	wantCode(t, err, kap.ENOTFOUND)
	must(t, l.Put(ctx, kap.LedgerEntry{LedgerKey: k, State: kap.LedgerSent}))
	must(t, l.Put(ctx, kap.LedgerEntry{LedgerKey: k, State: kap.LedgerUnknown, LastError: "timeout after send"}))
	k2 := k
	k2.Identifier = "urn:clinic|c-2"
	must(t, l.Put(ctx, kap.LedgerEntry{LedgerKey: k2, TargetID: "pat-9", VersionID: "3", State: kap.LedgerConfirmed}))
	e, err := l.Get(ctx, k)
	must(t, err)
	if e.State != kap.LedgerUnknown || e.LastError != "timeout after send" || e.UpdatedAt.IsZero() || e.LedgerKey != k {
		t.Fatalf("entry = %+v", e)
	}
	e2, err := l.Get(ctx, k2)
	must(t, err)
	if e2.TargetID != "pat-9" || e2.VersionID != "3" || e2.State != kap.LedgerConfirmed {
		t.Fatalf("entry = %+v", e2)
	}
	unknown, err := l.ListByState(ctx, ten, tg, kap.LedgerUnknown, 10)
	must(t, err)
	if len(unknown) != 1 || unknown[0].Identifier != k.Identifier {
		t.Fatalf("unknown = %+v", unknown)
	}
	sent, err := l.ListByState(ctx, ten, tg, kap.LedgerSent, 10)
	must(t, err)
	if len(sent) != 0 {
		t.Fatalf("an entry left 'sent' is still listed as sent: %+v", sent)
	}
	// Resolved by reading the target.
	must(t, l.Put(ctx, kap.LedgerEntry{LedgerKey: k, TargetID: "pat-1", VersionID: "1", State: kap.LedgerConfirmed}))
	unknown, err = l.ListByState(ctx, ten, tg, kap.LedgerUnknown, 10)
	must(t, err)
	if len(unknown) != 0 {
		t.Fatalf("still unknown: %+v", unknown)
	}
	conf, err := l.ListByState(ctx, ten, tg, kap.LedgerConfirmed, 10)
	must(t, err)
	if len(conf) != 2 {
		t.Fatalf("confirmed = %d entries, want 2", len(conf))
	}
	other := k
	other.Tenant = Uniq("clinic")
	_, err = l.Get(ctx, other)
	wantCode(t, err, kap.ENOTFOUND)
	wantCode(t, l.Put(ctx, kap.LedgerEntry{LedgerKey: k, State: "lost"}), kap.EINVALID)
	wantCode(t, l.Put(ctx, kap.LedgerEntry{LedgerKey: kap.LedgerKey{Tenant: ten, Target: tg}, State: kap.LedgerSent}), kap.EINVALID)
	_, err = l.ListByState(ctx, ten, tg, "bogus", 10)
	wantCode(t, err, kap.EINVALID)

	// PutAll: many entries at once, moving states like Put; an invalid
	// entry refuses the whole call before anything is written.
	tg2, tg3 := Uniq("ehr"), Uniq("ehr")
	var batch []kap.LedgerEntry
	for i := range 65 {
		key := kap.LedgerKey{Tenant: ten, Target: tg2, ResourceType: "Observation", Identifier: fmt.Sprintf("urn:obs|%d", i)}
		batch = append(batch, kap.LedgerEntry{LedgerKey: key, TargetID: fmt.Sprint("o-", i), State: kap.LedgerUnknown})
	}
	batch = append(batch, kap.LedgerEntry{LedgerKey: kap.LedgerKey{Tenant: ten, Target: tg3, ResourceType: "Patient", Identifier: "urn:p|1"},
		State: kap.LedgerConfirmed})
	must(t, l.PutAll(ctx, batch, kap.LedgerPutOptions{}))
	must(t, l.PutAll(ctx, nil, kap.LedgerPutOptions{}))
	unknown, err = l.ListByState(ctx, ten, tg2, kap.LedgerUnknown, 100)
	must(t, err)
	if len(unknown) != 65 {
		t.Fatalf("%d unknown entries after PutAll, want 65", len(unknown))
	}
	e, err = l.Get(ctx, batch[64].LedgerKey)
	must(t, err)
	if e.TargetID != "o-64" || e.State != kap.LedgerUnknown || e.UpdatedAt.IsZero() {
		t.Fatalf("entry after PutAll = %+v", e)
	}
	if e, err := l.Get(ctx, batch[65].LedgerKey); err != nil || e.State != kap.LedgerConfirmed {
		t.Fatalf("the other target's entry after PutAll = %+v %v", e, err)
	}
	for i := range batch[:65] {
		batch[i].State = kap.LedgerConfirmed
	}
	bad := append(append([]kap.LedgerEntry{}, batch[:65]...), kap.LedgerEntry{LedgerKey: batch[0].LedgerKey, State: "lost"})
	err = l.PutAll(ctx, bad, kap.LedgerPutOptions{})
	wantCode(t, err, kap.EINVALID)
	if !strings.Contains(err.Error(), "entries[65]") {
		t.Fatalf("the error does not name the entry: %v", err)
	}
	if unknown, _ := l.ListByState(ctx, ten, tg2, kap.LedgerUnknown, 100); len(unknown) != 65 {
		t.Fatalf("a refused PutAll wrote %d entries", 65-len(unknown))
	}
	must(t, l.PutAll(ctx, batch[:65], kap.LedgerPutOptions{}))
	unknown, err = l.ListByState(ctx, ten, tg2, kap.LedgerUnknown, 100)
	must(t, err)
	conf, err = l.ListByState(ctx, ten, tg2, kap.LedgerConfirmed, 100)
	must(t, err)
	if len(unknown) != 0 || len(conf) != 65 {
		t.Fatalf("after PutAll confirmed: %d unknown, %d confirmed", len(unknown), len(conf))
	}

	// KeepUnknown: a failed entry does not replace an unknown one; the
	// target id and version are kept; a confirmed one resolves it.
	keep := kap.LedgerPutOptions{KeepUnknown: true}
	ku := kap.LedgerKey{Tenant: ten, Target: tg3, ResourceType: "Procedure", Identifier: "urn:proc|1"}
	kn := kap.LedgerKey{Tenant: ten, Target: tg3, ResourceType: "Procedure", Identifier: "urn:proc|new"}
	must(t, l.Put(ctx, kap.LedgerEntry{LedgerKey: ku, TargetID: "t-1", VersionID: "2", State: kap.LedgerUnknown, LastError: "no answer"}))
	must(t, l.PutAll(ctx, []kap.LedgerEntry{
		{LedgerKey: ku, State: kap.LedgerFailed, LastError: "refused (HTTP 422)"},
		{LedgerKey: kn, State: kap.LedgerFailed, LastError: "refused"},
	}, keep))
	if e, err := l.Get(ctx, ku); err != nil || e.State != kap.LedgerUnknown || e.TargetID != "t-1" || e.VersionID != "2" || e.LastError != "refused (HTTP 422)" {
		t.Fatalf("failed over unknown with KeepUnknown = %+v %v; want unknown, t-1/2, the new error", e, err)
	}
	if e, err := l.Get(ctx, kn); err != nil || e.State != kap.LedgerFailed || e.LastError != "refused" {
		t.Fatalf("a new failed entry with KeepUnknown = %+v %v", e, err)
	}
	if u, _ := l.ListByState(ctx, ten, tg3, kap.LedgerUnknown, 10); len(u) != 1 || u[0].Identifier != ku.Identifier {
		t.Fatalf("unknown entries = %+v", u)
	}
	if f, _ := l.ListByState(ctx, ten, tg3, kap.LedgerFailed, 10); len(f) != 1 || f[0].Identifier != kn.Identifier {
		t.Fatalf("failed entries = %+v", f)
	}
	must(t, l.PutAll(ctx, []kap.LedgerEntry{{LedgerKey: ku, TargetID: "t-9", VersionID: "1", State: kap.LedgerConfirmed}}, keep))
	if e, err := l.Get(ctx, ku); err != nil || e.State != kap.LedgerConfirmed || e.TargetID != "t-9" || e.LastError != "" {
		t.Fatalf("confirmed over unknown = %+v %v", e, err)
	}
	must(t, l.PutAll(ctx, []kap.LedgerEntry{{LedgerKey: ku, State: kap.LedgerFailed, LastError: "refused"}}, keep))
	if e, err := l.Get(ctx, ku); err != nil || e.State != kap.LedgerFailed || e.TargetID != "t-9" || e.VersionID != "1" {
		t.Fatalf("failed over confirmed = %+v %v; want failed keeping t-9/1", e, err)
	}
	must(t, l.PutAll(ctx, []kap.LedgerEntry{{LedgerKey: ku, State: kap.LedgerUnknown}}, keep))
	must(t, l.PutAll(ctx, []kap.LedgerEntry{{LedgerKey: ku, State: kap.LedgerFailed}}, kap.LedgerPutOptions{}))
	if e, err := l.Get(ctx, ku); err != nil || e.State != kap.LedgerFailed || e.TargetID != "" {
		t.Fatalf("failed over unknown without KeepUnknown = %+v %v; want a plain write", e, err)
	}
}

// RunCache tests kap.Cache and kap.CacheToken.
func RunCache(t *testing.T, f Factory) {
	ctx := context.Background()
	s, clock := open(t, f)
	c := s.Cache()
	k := Uniq("cap") + ":ehr"
	_, err := c.Get(ctx, k)
	wantCode(t, err, kap.ENOTFOUND)
	must(t, c.Set(ctx, k, []byte("capability"), time.Hour))
	v, err := c.Get(ctx, k)
	must(t, err)
	if string(v) != "capability" {
		t.Fatalf("cached %q", v)
	}
	clock.Advance(59 * time.Minute)
	if _, err := c.Get(ctx, k); err != nil {
		t.Fatalf("expired early: %v", err)
	}
	clock.Advance(2 * time.Minute)
	_, err = c.Get(ctx, k)
	wantCode(t, err, kap.ENOTFOUND)
	must(t, c.Set(ctx, k, []byte("x"), time.Hour))
	must(t, c.Delete(ctx, k))
	_, err = c.Get(ctx, k)
	wantCode(t, err, kap.ENOTFOUND)
	must(t, c.Delete(ctx, k))
	wantCode(t, c.Set(ctx, k, []byte("x"), 0), kap.EINVALID)

	tk := Uniq("token")
	now := clock.Now()
	must(t, kap.CacheToken(ctx, c, tk, "abc", now.Add(10*time.Minute), time.Minute, now))
	clock.Advance(8 * time.Minute)
	v, err = c.Get(ctx, tk)
	must(t, err)
	if string(v) != "abc" {
		t.Fatalf("token = %q", v)
	}
	clock.Advance(90 * time.Second) // 30 s before expiry: inside the skew
	_, err = c.Get(ctx, tk)
	wantCode(t, err, kap.ENOTFOUND)
	now = clock.Now()
	must(t, kap.CacheToken(ctx, c, tk, "short", now.Add(30*time.Second), time.Minute, now))
	_, err = c.Get(ctx, tk)
	wantCode(t, err, kap.ENOTFOUND)
}

// RunIdempotency tests kap.Idempotency.
func RunIdempotency(t *testing.T, f Factory) {
	ctx := context.Background()
	s, clock := open(t, f)
	id := s.Idempotency()
	ten := Uniq("clinic")
	key := "key-1"
	resp, err := id.Reserve(ctx, ten, key, "fp1")
	must(t, err)
	if resp != nil {
		t.Fatalf("first reserve returned a response %+v", resp)
	}
	_, err = id.Reserve(ctx, ten, key, "fp1")
	wantCode(t, err, kap.ECONFLICT) // in flight
	if !errors.Is(err, kap.ErrIdempotencyKeyInFlight) {
		t.Fatalf("in flight: %v, want kap.ErrIdempotencyKeyInFlight", err)
	}
	// Another tenant's identical key is independent.
	resp, err = id.Reserve(ctx, Uniq("clinic"), key, "fp1")
	if err != nil || resp != nil {
		t.Fatalf("other tenant: %v %v", resp, err)
	}
	want := kap.StoredResponse{Status: 201, Headers: map[string]string{"Location": "/x/1"}, Body: []byte(`{"id":"1"}`)}
	must(t, id.Complete(ctx, ten, key, want))
	wantCode(t, id.Complete(ctx, ten, "never-reserved", want), kap.ENOTFOUND)
	for i := 0; i < 2; i++ {
		resp, err = id.Reserve(ctx, ten, key, "fp1")
		must(t, err)
		if resp == nil || resp.Status != 201 || string(resp.Body) != `{"id":"1"}` || resp.Headers["Location"] != "/x/1" {
			t.Fatalf("replayed response = %+v", resp)
		}
	}
	_, err = id.Reserve(ctx, ten, key, "fp2")
	wantCode(t, err, kap.ECONFLICT)
	if !errors.Is(err, kap.ErrIdempotencyKeyReused) {
		t.Fatalf("other fingerprint: %v, want kap.ErrIdempotencyKeyReused", err)
	}
	clock.Advance(kap.IdempotencyTTL - time.Minute)
	resp, err = id.Reserve(ctx, ten, key, "fp1")
	if err != nil || resp == nil {
		t.Fatalf("within 24 h: %v %v", resp, err)
	}
	clock.Advance(2 * time.Minute)
	resp, err = id.Reserve(ctx, ten, key, "fp2")
	if err != nil || resp != nil {
		t.Fatalf("after 24 h the key is new: %v %v", resp, err)
	}
	// Release lets the request be retried.
	must(t, id.Release(ctx, ten, key))
	resp, err = id.Reserve(ctx, ten, key, "fp3")
	if err != nil || resp != nil {
		t.Fatalf("after release: %v %v", resp, err)
	}
	// A reservation whose process died expires.
	clock.Advance(10 * time.Minute)
	resp, err = id.Reserve(ctx, ten, key, "fp3")
	if err != nil || resp != nil {
		t.Fatalf("after the reservation expired: %v %v", resp, err)
	}
	_, err = id.Reserve(ctx, "", key, "fp")
	wantCode(t, err, kap.EINVALID)
}

// RunRateLimit tests kap.RateLimiter.
func RunRateLimit(t *testing.T, f Factory) {
	ctx := context.Background()
	s, clock := open(t, f)
	rl := s.RateLimiter()
	k := Uniq("cred")
	for i := 0; i < 3; i++ {
		ok, _, err := rl.Allow(ctx, k, 2, 3)
		must(t, err)
		if !ok {
			t.Fatalf("request %d of a burst of 3 refused", i+1)
		}
	}
	ok, wait, err := rl.Allow(ctx, k, 2, 3)
	must(t, err)
	if ok || wait <= 0 || wait > 600*time.Millisecond {
		t.Fatalf("4th: allowed=%v retryAfter=%v, want refused with about 500ms", ok, wait)
	}
	ok, _, err = rl.Allow(ctx, Uniq("cred"), 2, 3)
	must(t, err)
	if !ok {
		t.Fatal("another key shares the bucket")
	}
	clock.Advance(time.Second) // 2 tokens
	n := 0
	for i := 0; i < 5; i++ {
		ok, _, err := rl.Allow(ctx, k, 2, 3)
		must(t, err)
		if ok {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("after 1s at 2/s: %d allowed, want 2", n)
	}
	clock.Advance(time.Hour)
	n = 0
	for i := 0; i < 5; i++ {
		if ok, _, _ := rl.Allow(ctx, k, 2, 3); ok {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("after a long pause: %d allowed, want the burst 3", n)
	}
	for _, c := range []struct {
		rate  float64
		burst int
	}{{0, 1}, {-1, 1}, {1, 0}} {
		_, _, err := rl.Allow(ctx, k, c.rate, c.burst)
		if kap.ErrorCode(err) != kap.EINVALID {
			t.Errorf("rate %v burst %d: %v, want invalid", c.rate, c.burst, err)
		}
	}
}

// RunAll runs every part of the contract.
func RunAll(t *testing.T, f Factory) {
	for name, run := range map[string]func(*testing.T, Factory){
		"RecordStore": RunRecordStore, "Outbox": RunOutbox, "Ledger": RunLedger,
		"Cache": RunCache, "Idempotency": RunIdempotency, "RateLimit": RunRateLimit,
	} {
		t.Run(name, func(t *testing.T) { run(t, f) })
	}
}
