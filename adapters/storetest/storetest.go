// Package storetest is the one contract test suite of the durable state
// layer (kap.Store). Each adapter's tests call the Run functions with a
// factory that returns a fresh store; the suite uses unique tenant and target
// names per test, so the stores may share one backend.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	kap "github.com/kapbridge/kap"
)

// Config is what the suite asks of a factory.
type Config struct {
	// Now is the clock the store must use for everything it timestamps
	// and expires (retry times, TTLs, buckets). It runs with real time plus
	// an offset the suite advances.
	Now func() time.Time
	// LeaseTTL is the outbox lease the store must use. Lease expiry is
	// tested by sleeping in real time, so adapters may measure it with
	// their own clock.
	LeaseTTL time.Duration
}

// Factory returns a fresh store configured by cfg; the factory registers its
// cleanup with t.
type Factory func(t testing.TB, cfg Config) kap.Store

// Clock is real time plus an offset.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now returns time.Now plus the offset.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// Uniq returns name with a random suffix, usable as a tenant or target.
func Uniq(name string) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return name + "-" + hex.EncodeToString(b[:])
}

const leaseTTL = 400 * time.Millisecond

func open(t *testing.T, f Factory) (kap.Store, *Clock) {
	t.Helper()
	c := &Clock{}
	return f(t, Config{Now: c.Now, LeaseTTL: leaseTTL}), c
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := kap.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (%v), want %q", got, err, code)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

// Rec returns a record of tenant with the given kind, id, client and content
// (the content is both the record JSON and the hash).
func Rec(tenant, kind, id, client, content string, date time.Time) kap.StoredRecord {
	return kap.StoredRecord{
		Tenant:      tenant,
		Kind:        kind,
		ID:          id,
		ClientID:    client,
		ContentHash: "h:" + content,
		Date:        date,
		Record:      json.RawMessage(fmt.Sprintf(`{"content":%q}`, content)),
		Bundle:      json.RawMessage(fmt.Sprintf(`{"resourceType":"Bundle","id":%q}`, content)),
	}
}

func jsonEq(t *testing.T, got, want json.RawMessage) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("stored JSON %q does not parse: %v", got, err)
	}
	must(t, json.Unmarshal(want, &w))
	if fmt.Sprint(g) != fmt.Sprint(w) {
		t.Fatalf("JSON = %s, want %s", got, want)
	}
}

var day0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

// RunRecordStore tests kap.RecordStore.
func RunRecordStore(t *testing.T, f Factory) {
	ctx := context.Background()
	t.Run("PutGetVersions", func(t *testing.T) {
		s, _ := open(t, f)
		rs := s.Records()
		ten := Uniq("clinic")
		r1, created, err := rs.Put(ctx, Rec(ten, "DosingSession", "ds-1", "c-1", "a", day0), kap.PutOptions{})
		must(t, err)
		if !created || r1.Version != 1 || r1.StoredAt.IsZero() {
			t.Fatalf("first put: created=%v version=%d storedAt=%v", created, r1.Version, r1.StoredAt)
		}
		got, err := rs.Get(ctx, ten, "DosingSession", "ds-1")
		must(t, err)
		jsonEq(t, got.Record, json.RawMessage(`{"content":"a"}`))
		jsonEq(t, got.Bundle, json.RawMessage(`{"resourceType":"Bundle","id":"a"}`))
		if got.Version != 1 || got.ClientID != "c-1" || !got.Date.Equal(day0) {
			t.Fatalf("get = %+v", got)
		}
		// Same content: one version.
		again, created, err := rs.Put(ctx, Rec(ten, "DosingSession", "ds-1", "c-1", "a", day0), kap.PutOptions{})
		must(t, err)
		if created || again.Version != 1 {
			t.Fatalf("same content: created=%v version=%d, want false 1", created, again.Version)
		}
		r2, created, err := rs.Put(ctx, Rec(ten, "DosingSession", "ds-1", "c-1", "b", day0), kap.PutOptions{})
		must(t, err)
		if !created || r2.Version != 2 {
			t.Fatalf("new content: created=%v version=%d", created, r2.Version)
		}
		h, err := rs.History(ctx, ten, "DosingSession", "ds-1")
		must(t, err)
		if len(h) != 2 || h[0].Version != 2 || h[1].Version != 1 {
			t.Fatalf("history versions = %v", versions(h))
		}
		v1, err := rs.GetVersion(ctx, ten, "DosingSession", "ds-1", 1)
		must(t, err)
		jsonEq(t, v1.Record, json.RawMessage(`{"content":"a"}`))
		_, err = rs.GetVersion(ctx, ten, "DosingSession", "ds-1", 3)
		wantCode(t, err, kap.ENOTFOUND)
		_, err = rs.Get(ctx, ten, "DosingSession", "ds-2")
		wantCode(t, err, kap.ENOTFOUND)
		_, err = rs.History(ctx, ten, "DosingSession", "ds-2")
		wantCode(t, err, kap.ENOTFOUND)
		// Back to content "a" after "b" is a change: version 3.
		r3, created, err := rs.Put(ctx, Rec(ten, "DosingSession", "ds-1", "c-1", "a", day0), kap.PutOptions{})
		must(t, err)
		if !created || r3.Version != 3 {
			t.Fatalf("a after b: created=%v version=%d", created, r3.Version)
		}
	})
	t.Run("IfMatch", func(t *testing.T) {
		s, _ := open(t, f)
		rs := s.Records()
		ten := Uniq("clinic")
		_, _, err := rs.Put(ctx, Rec(ten, "Intake", "i-1", "c-1", "a", day0), kap.PutOptions{IfMatch: 1})
		wantCode(t, err, kap.EPRECONDITION)
		_, _, err = rs.Put(ctx, Rec(ten, "Intake", "i-1", "c-1", "a", day0), kap.PutOptions{})
		must(t, err)
		_, _, err = rs.Put(ctx, Rec(ten, "Intake", "i-1", "c-1", "b", day0), kap.PutOptions{IfMatch: 1})
		must(t, err)
		_, _, err = rs.Put(ctx, Rec(ten, "Intake", "i-1", "c-1", "c", day0), kap.PutOptions{IfMatch: 1})
		wantCode(t, err, kap.EPRECONDITION)
		got, err := rs.Get(ctx, ten, "Intake", "i-1")
		must(t, err)
		if got.Version != 2 || got.ContentHash != "h:b" {
			t.Fatalf("after failed If-Match: version %d hash %s", got.Version, got.ContentHash)
		}
	})
	t.Run("IfNoneMatch", func(t *testing.T) {
		s, _ := open(t, f)
		rs := s.Records()
		ten, tg := Uniq("clinic"), Uniq("ehr")
		// Concurrent first writes with different content: exactly one
		// creates version 1, the others get EPRECONDITION.
		const writers = 8
		var wg sync.WaitGroup
		errs := make([]error, writers)
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, errs[i] = rs.Put(ctx, Rec(ten, "Intake", "i-1", "c-1", fmt.Sprint("w", i), day0),
					kap.PutOptions{IfNoneMatch: true, Targets: []string{tg}})
			}()
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
			} else {
				wantCode(t, err, kap.EPRECONDITION)
			}
		}
		if ok != 1 {
			t.Fatalf("%d of %d concurrent If-None-Match puts succeeded, want 1", ok, writers)
		}
		h, err := rs.History(ctx, ten, "Intake", "i-1")
		must(t, err)
		if len(h) != 1 || h[0].Version != 1 {
			t.Fatalf("history versions = %v, want [1]", versions(h))
		}
		// Even the same content is refused once the record exists.
		_, _, err = rs.Put(ctx, h[0], kap.PutOptions{IfNoneMatch: true})
		wantCode(t, err, kap.EPRECONDITION)
		// Exactly one message was queued.
		ls, err := s.Outbox().Lease(ctx, tg, 10)
		must(t, err)
		if n := len(ls); n != 1 {
			t.Fatalf("%d messages queued for the tenant, want 1", n)
		}
	})
	t.Run("TenantIsolation", func(t *testing.T) {
		s, _ := open(t, f)
		rs := s.Records()
		a, b := Uniq("clinic"), Uniq("clinic")
		rec := Rec(a, "Consent", "x-1", "c-1", "a", day0)
		rec.Resources = []kap.ResourceRef{{Type: "Consent", System: "urn:clinic", Value: "x-1"}}
		_, _, err := rs.Put(ctx, rec, kap.PutOptions{})
		must(t, err)
		_, err = rs.Get(ctx, b, "Consent", "x-1")
		wantCode(t, err, kap.ENOTFOUND)
		_, err = rs.Lookup(ctx, b, rec.Resources[0])
		wantCode(t, err, kap.ENOTFOUND)
		recs, _, err := rs.ListByClient(ctx, b, "c-1", kap.ListQuery{})
		must(t, err)
		if len(recs) != 0 {
			t.Fatalf("tenant %s sees %d records of another tenant", b, len(recs))
		}
		// The same id in tenant b is a separate record.
		r, created, err := rs.Put(ctx, Rec(b, "Consent", "x-1", "c-1", "a", day0), kap.PutOptions{})
		must(t, err)
		if !created || r.Version != 1 {
			t.Fatalf("tenant b put: created=%v version=%d", created, r.Version)
		}
	})
	t.Run("Lookup", func(t *testing.T) {
		s, _ := open(t, f)
		rs := s.Records()
		ten := Uniq("clinic")
		rec := Rec(ten, "Assessment", "as-1", "c-1", "a", day0)
		old := kap.ResourceRef{Type: "Observation", System: "urn:clinic:obs", Value: "as-1-phq9"}
		keep := kap.ResourceRef{Type: "QuestionnaireResponse", System: "urn:clinic:qr", Value: "as-1"}
		rec.Resources = []kap.ResourceRef{old, keep}
		_, _, err := rs.Put(ctx, rec, kap.PutOptions{})
		must(t, err)
		got, err := rs.Lookup(ctx, ten, old)
		must(t, err)
		if got.ID != "as-1" || got.Kind != "Assessment" {
			t.Fatalf("lookup = %s/%s", got.Kind, got.ID)
		}
		_, err = rs.Lookup(ctx, ten, kap.ResourceRef{Type: "Observation", System: "urn:other", Value: "as-1-phq9"})
		wantCode(t, err, kap.ENOTFOUND)
		niu := kap.ResourceRef{Type: "Observation", System: "urn:clinic:obs", Value: "as-1-gad7"}
		rec2 := Rec(ten, "Assessment", "as-1", "c-1", "b", day0)
		rec2.Resources = []kap.ResourceRef{niu, keep}
		_, _, err = rs.Put(ctx, rec2, kap.PutOptions{})
		must(t, err)
		_, err = rs.Lookup(ctx, ten, old)
		wantCode(t, err, kap.ENOTFOUND)
		for _, ref := range []kap.ResourceRef{niu, keep} {
			got, err := rs.Lookup(ctx, ten, ref)
			must(t, err)
			if got.Version != 2 {
				t.Fatalf("lookup %s: version %d, want 2", ref.Type, got.Version)
			}
		}
	})
	t.Run("InvalidJSONRefused", func(t *testing.T) {
		s, _ := open(t, f)
		ten := Uniq("clinic")
		bad := Rec(ten, "Intake", "i-1", "c-1", "a", day0)
		bad.Bundle = json.RawMessage(`{"resourceType":`)
		_, _, err := s.Records().Put(ctx, bad, kap.PutOptions{Targets: []string{"ehr"}})
		wantCode(t, err, kap.EINVALID)
		bad = Rec(ten, "Intake", "i-1", "c-1", "a", day0)
		bad.Record = json.RawMessage(`not json`)
		_, _, err = s.Records().Put(ctx, bad, kap.PutOptions{})
		wantCode(t, err, kap.EINVALID)
		_, err = s.Records().Get(ctx, ten, "Intake", "i-1")
		wantCode(t, err, kap.ENOTFOUND)
		m := Msg(ten, Uniq("ehr"), "c1", 1)
		m.Bundle = json.RawMessage(`{`)
		wantCode(t, s.Outbox().Enqueue(ctx, m), kap.EINVALID)
	})
	t.Run("ListByClientKinds", func(t *testing.T) {
		s, _ := open(t, f)
		rs := s.Records()
		ten := Uniq("clinic")
		// 300 records of the client: every tenth a Consent, the rest
		// sessions (more than one Redis scan batch of other kinds).
		consents := 0
		for i := 0; i < 300; i++ {
			kind := "DosingSession"
			if i%10 == 3 {
				kind = "Consent"
				consents++
			}
			_, _, err := rs.Put(ctx, Rec(ten, kind, fmt.Sprintf("r-%03d", i), "c-1", "x", day0.Add(time.Duration(i)*time.Hour)), kap.PutOptions{})
			must(t, err)
		}
		var got []kap.StoredRecord
		cursor, pages := "", 0
		for {
			recs, next, err := rs.ListByClient(ctx, ten, "c-1", kap.ListQuery{Limit: 7, Cursor: cursor, Kinds: []string{"Consent"}})
			must(t, err)
			pages++
			if len(recs) == 0 {
				t.Fatalf("page %d is empty (next %q)", pages, next)
			}
			if next != "" && len(recs) != 7 {
				t.Fatalf("page %d holds %d records, want a full page of 7", pages, len(recs))
			}
			got = append(got, recs...)
			if next == "" {
				break
			}
			cursor = next
			if pages > 20 {
				t.Fatal("cursor does not advance")
			}
		}
		if len(got) != consents || pages != (consents+6)/7 {
			t.Fatalf("listed %d consents in %d pages, want %d in %d", len(got), pages, consents, (consents+6)/7)
		}
		for i, r := range got {
			if r.Kind != "Consent" || i > 0 && !r.Date.After(got[i-1].Date) {
				t.Fatalf("record %d: %s %s at %v", i, r.Kind, r.ID, r.Date)
			}
		}
		// Several kinds, with date bounds.
		recs, next, err := rs.ListByClient(ctx, ten, "c-1", kap.ListQuery{Kinds: []string{"Consent", "DosingSession"},
			From: day0.Add(10 * time.Hour), To: day0.Add(19 * time.Hour)})
		must(t, err)
		if len(recs) != 10 || next != "" {
			t.Fatalf("two kinds within bounds: %d records, next %q; want 10", len(recs), next)
		}
		recs, _, err = rs.ListByClient(ctx, ten, "c-1", kap.ListQuery{Kinds: []string{"Intake"}})
		must(t, err)
		if len(recs) != 0 {
			t.Fatalf("%d intakes, want none", len(recs))
		}
	})
	t.Run("ListByClient", func(t *testing.T) {
		s, _ := open(t, f)
		rs := s.Records()
		ten := Uniq("clinic")
		for i := 0; i < 25; i++ {
			// Inserted out of date order.
			d := day0.Add(time.Duration((i*7)%25) * 24 * time.Hour)
			_, _, err := rs.Put(ctx, Rec(ten, "DosingSession", fmt.Sprintf("ds-%02d", i), "c-1", "x", d), kap.PutOptions{})
			must(t, err)
		}
		_, _, err := rs.Put(ctx, Rec(ten, "DosingSession", "other", "c-2", "x", day0), kap.PutOptions{})
		must(t, err)
		// A new version with a new date moves the record, not duplicates it.
		_, _, err = rs.Put(ctx, Rec(ten, "DosingSession", "ds-00", "c-1", "y", day0.Add(-24*time.Hour)), kap.PutOptions{})
		must(t, err)
		var all []kap.StoredRecord
		cursor := ""
		pages := 0
		for {
			recs, next, err := rs.ListByClient(ctx, ten, "c-1", kap.ListQuery{Limit: 10, Cursor: cursor})
			must(t, err)
			pages++
			all = append(all, recs...)
			if next == "" {
				break
			}
			cursor = next
			if pages > 10 {
				t.Fatal("cursor does not advance")
			}
		}
		if len(all) != 25 || pages != 3 {
			t.Fatalf("listed %d records in %d pages, want 25 in 3", len(all), pages)
		}
		seen := map[string]bool{}
		for i, r := range all {
			if r.ClientID != "c-1" || seen[r.ID] {
				t.Fatalf("record %d: client %s id %s (dup=%v)", i, r.ClientID, r.ID, seen[r.ID])
			}
			seen[r.ID] = true
			if i > 0 && r.Date.Before(all[i-1].Date) {
				t.Fatalf("not ordered by date at %d", i)
			}
		}
		if all[0].ID != "ds-00" || all[0].Version != 2 {
			t.Fatalf("first = %s v%d, want ds-00 v2", all[0].ID, all[0].Version)
		}
		recs, _, err := rs.ListByClient(ctx, ten, "c-1", kap.ListQuery{From: day0.Add(24 * time.Hour), To: day0.Add(3 * 24 * time.Hour)})
		must(t, err)
		if len(recs) != 3 {
			t.Fatalf("date range gave %d records, want 3", len(recs))
		}
		for _, r := range recs {
			if r.Date.Before(day0.Add(24*time.Hour)) || r.Date.After(day0.Add(3*24*time.Hour)) {
				t.Fatalf("record dated %v outside range", r.Date)
			}
		}
		_, _, err = rs.ListByClient(ctx, ten, "c-1", kap.ListQuery{Cursor: "not-a-cursor!"})
		wantCode(t, err, kap.EINVALID)
	})
	t.Run("Validation", func(t *testing.T) {
		s, _ := open(t, f)
		rs := s.Records()
		for name, rec := range map[string]kap.StoredRecord{
			"tenant":      Rec("", "Intake", "i", "c", "a", day0),
			"hash tag":    Rec("a{b}", "Intake", "i", "c", "a", day0),
			"kind":        Rec("t", "", "i", "c", "a", day0),
			"id":          Rec("t", "Intake", "", "c", "a", day0),
			"control":     Rec("t", "Intake", "i\x00x", "c", "a", day0),
			"clientId":    Rec("t", "Intake", "i", "", "a", day0),
			"contentHash": {Tenant: "t", Kind: "Intake", ID: "i", ClientID: "c"},
		} {
			_, _, err := rs.Put(ctx, rec, kap.PutOptions{})
			if kap.ErrorCode(err) != kap.EINVALID {
				t.Errorf("%s: error %v, want invalid", name, err)
			}
		}
		_, _, err := rs.Put(ctx, Rec("t", "Intake", "i", "c", "a", day0), kap.PutOptions{Targets: []string{"bad target"}})
		wantCode(t, err, kap.EINVALID)
	})
	t.Run("Prune", func(t *testing.T) {
		s, clock := open(t, f)
		rs := s.Records()
		ten := Uniq("clinic")
		for i := 0; i < 5; i++ {
			_, _, err := rs.Put(ctx, Rec(ten, "TreatmentPlan", "tp-1", "c-1", fmt.Sprint(i), day0), kap.PutOptions{})
			must(t, err)
		}
		_, _, err := rs.Put(ctx, Rec(ten, "TreatmentPlan", "tp-2", "c-1", "only", day0), kap.PutOptions{})
		must(t, err)
		n, err := rs.Prune(ctx, ten, kap.RetentionPolicy{MaxVersions: 2})
		must(t, err)
		if n != 3 {
			t.Fatalf("pruned %d versions, want 3", n)
		}
		h, err := rs.History(ctx, ten, "TreatmentPlan", "tp-1")
		must(t, err)
		if fmt.Sprint(versions(h)) != "[5 4]" {
			t.Fatalf("history after prune = %v, want [5 4]", versions(h))
		}
		_, err = rs.GetVersion(ctx, ten, "TreatmentPlan", "tp-1", 1)
		wantCode(t, err, kap.ENOTFOUND)
		clock.Advance(48 * time.Hour)
		n, err = rs.Prune(ctx, ten, kap.RetentionPolicy{MaxAge: 24 * time.Hour})
		must(t, err)
		if n != 1 {
			t.Fatalf("age prune removed %d, want 1", n)
		}
		for _, id := range []string{"tp-1", "tp-2"} {
			got, err := rs.Get(ctx, ten, "TreatmentPlan", id)
			must(t, err)
			h, err := rs.History(ctx, ten, "TreatmentPlan", id)
			must(t, err)
			if len(h) != 1 || h[0].Version != got.Version {
				t.Fatalf("%s: history %v, want only the latest %d", id, versions(h), got.Version)
			}
		}
		// A new version after pruning continues the numbering.
		r, _, err := rs.Put(ctx, Rec(ten, "TreatmentPlan", "tp-1", "c-1", "new", day0), kap.PutOptions{})
		must(t, err)
		if r.Version != 6 {
			t.Fatalf("version after prune = %d, want 6", r.Version)
		}
	})
	t.Run("PruneKeepsQueuedAndDeadLettered", func(t *testing.T) {
		s, clock := open(t, f)
		rs, ob := s.Records(), s.Outbox()
		ten, tg := Uniq("clinic"), Uniq("ehr")
		// Five versions, each queued for tg; c-1's queue holds them in order.
		for i := 0; i < 5; i++ {
			_, _, err := rs.Put(ctx, Rec(ten, "DosingSession", "ds-1", "c-1", fmt.Sprint(i), day0), kap.PutOptions{Targets: []string{tg}})
			must(t, err)
		}
		// v1 is delivered, v2 dead-lettered; v3..v5 stay queued.
		ls := lease(t, ob, tg, 10)
		if len(ls) != 1 || ls[0].Message.Version != 1 {
			t.Fatalf("lease = %v", ids(ls))
		}
		must(t, ob.Ack(ctx, ls[0]))
		ls = lease(t, ob, tg, 10)
		if len(ls) != 1 || ls[0].Message.Version != 2 {
			t.Fatalf("lease = %v", ids(ls))
		}
		must(t, ob.DeadLetter(ctx, ls[0], "refused", kap.Attempt{At: clock.Now(), Status: 422}))
		clock.Advance(48 * time.Hour)
		// Another target's queue does not keep anything.
		n, err := rs.Prune(ctx, ten, kap.RetentionPolicy{MaxAge: time.Hour, KeepQueuedFor: []string{Uniq("other")}})
		must(t, err)
		h, err := rs.History(ctx, ten, "DosingSession", "ds-1")
		must(t, err)
		if n != 4 || fmt.Sprint(versions(h)) != "[5]" {
			t.Fatalf("prune keeping another target's queue: removed %d, history %v; want 4 and [5]", n, versions(h))
		}
		// Again with fresh versions, keeping what tg still holds.
		ten, tg = Uniq("clinic"), Uniq("ehr")
		for i := 0; i < 5; i++ {
			_, _, err := rs.Put(ctx, Rec(ten, "DosingSession", "ds-1", "c-1", fmt.Sprint(i), day0), kap.PutOptions{Targets: []string{tg}})
			must(t, err)
		}
		ls = lease(t, ob, tg, 10)
		if len(ls) != 1 || ls[0].Message.Version != 1 || ls[0].Message.Tenant != ten {
			t.Fatalf("lease = %v", ids(ls))
		}
		must(t, ob.Ack(ctx, ls[0]))
		ls = lease(t, ob, tg, 10)
		if len(ls) != 1 || ls[0].Message.Version != 2 {
			t.Fatalf("lease = %v", ids(ls))
		}
		must(t, ob.DeadLetter(ctx, ls[0], "refused", kap.Attempt{At: clock.Now(), Status: 422}))
		ls = lease(t, ob, tg, 10) // v3 in flight
		if len(ls) != 1 || ls[0].Message.Version != 3 {
			t.Fatalf("lease = %v", ids(ls))
		}
		clock.Advance(48 * time.Hour)
		n, err = rs.Prune(ctx, ten, kap.RetentionPolicy{MaxAge: time.Hour, KeepQueuedFor: []string{Uniq("other"), tg}})
		must(t, err)
		h, err = rs.History(ctx, ten, "DosingSession", "ds-1")
		must(t, err)
		if n != 1 || fmt.Sprint(versions(h)) != "[5 4 3 2]" {
			t.Fatalf("prune keeping tg's queue: removed %d, history %v; want 1 (the delivered v1) and [5 4 3 2]", n, versions(h))
		}
		// Once delivered and the dead letter discarded, they go too.
		must(t, ob.Ack(ctx, ls[0]))
		must(t, ob.Discard(ctx, ten, tg, "DosingSession/ds-1/2", "test"))
		for _, v := range []int{4, 5} {
			ls = lease(t, ob, tg, 10)
			if len(ls) != 1 || ls[0].Message.Version != v {
				t.Fatalf("lease = %v, want v%d", ids(ls), v)
			}
			must(t, ob.Ack(ctx, ls[0]))
		}
		n, err = rs.Prune(ctx, ten, kap.RetentionPolicy{MaxAge: time.Hour, KeepQueuedFor: []string{tg}})
		must(t, err)
		h, err = rs.History(ctx, ten, "DosingSession", "ds-1")
		must(t, err)
		if n != 3 || fmt.Sprint(versions(h)) != "[5]" {
			t.Fatalf("prune after delivery: removed %d, history %v; want 3 and [5]", n, versions(h))
		}
	})
	t.Run("PutEnqueues", func(t *testing.T) {
		s, _ := open(t, f)
		rs, ob := s.Records(), s.Outbox()
		ten, ta, tb := Uniq("clinic"), Uniq("ehr"), Uniq("payer")
		rec := Rec(ten, "Client", "cl-1", "cl-1", "a", day0)
		_, _, err := rs.Put(ctx, rec, kap.PutOptions{Targets: []string{ta, tb}})
		must(t, err)
		// The same content again queues nothing.
		_, _, err = rs.Put(ctx, rec, kap.PutOptions{Targets: []string{ta, tb}})
		must(t, err)
		for _, target := range []string{ta, tb} {
			st, err := ob.Stats(ctx, target)
			must(t, err)
			if st.Depth != 1 {
				t.Fatalf("%s depth = %d, want 1", target, st.Depth)
			}
			ls, err := ob.Lease(ctx, target, 10)
			must(t, err)
			if len(ls) != 1 {
				t.Fatalf("%s leased %d, want 1", target, len(ls))
			}
			m := ls[0].Message
			if m.Tenant != ten || m.Target != target || m.Kind != "Client" || m.RecordID != "cl-1" || m.Version != 1 || m.ClientID != "cl-1" {
				t.Fatalf("message = %+v", m)
			}
			jsonEq(t, m.Bundle, rec.Bundle)
			jsonEq(t, m.Record, rec.Record)
		}
	})
}

func versions(h []kap.StoredRecord) []int {
	var v []int
	for _, r := range h {
		v = append(v, r.Version)
	}
	return v
}
