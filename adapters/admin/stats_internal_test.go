package admin

import (
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap/internal/delivery"
)

func TestPlainReason(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"delivery transient: GET 127.0.0.1:1/fhir/R4/Encounter: no response after 5 attempt(s): http: server closed idle connection", "could not be reached"},
		{"delivery transient: dial tcp 127.0.0.1:9: connect: connection refused", "could not be reached"},
		{"delivery unknown: POST 127.0.0.1:1/fhir/R4: no response after 1 attempt(s): context deadline exceeded", "did not answer in time"},
		{"delivery transient: POST h/fhir/R4: no response after 1 attempt(s)", "did not answer"},
		{"open /data/out/2026-01-01.ndjson: permission denied", "may not write to the target's folder"},
		{"refused by the target (HTTP 422)", "refused the content"},
		{"delivery transient (HTTP 503)", "internal error"},
		{"delivery transient (HTTP 429)", "slow down"},
		{"token request failed (HTTP 401)", "credentials"},
		{"10 attempts failed; last: something odd", "Every delivery attempt failed"},
	} {
		got := plainReason(c.in)
		if !strings.Contains(got, c.want) || !strings.HasSuffix(got, "("+c.in+")") {
			t.Errorf("plainReason(%q) = %q, want it to say %q and keep the original", c.in, got, c.want)
		}
	}
	if plainReason("") != "" || plainReason("odd") != "odd" {
		t.Error("empty or unknown reasons must pass through")
	}
}

func TestBuckets(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := now
	s := newSampler(func() time.Time { return clock })
	h := func(d, f int64) delivery.Health {
		return delivery.Health{Targets: []delivery.TargetHealth{{Name: "ehr", Delivered: d, Failed: f}}}
	}
	clock = now.Add(-90 * time.Minute) // outside the hour
	s.record(h(0, 0))
	clock = now.Add(-80 * time.Minute)
	s.record(h(5, 1))
	clock = now.Add(-20 * time.Minute)
	s.record(h(8, 1))
	clock = now.Add(-1 * time.Minute)
	s.record(h(10, 4))
	clock = now
	hour := sum(s.buckets("ehr", delivery.TargetHealth{Name: "ehr", Delivered: 11, Failed: 4}, 12, 5*time.Minute))
	if hour.Delivered != 6 || hour.Failed != 3 {
		t.Errorf("last hour %+v, want 6 delivered and 3 failed", hour)
	}
	day := sum(s.buckets("ehr", delivery.TargetHealth{Name: "ehr", Delivered: 11, Failed: 4}, 24, time.Hour))
	if day.Delivered != 11 || day.Failed != 4 {
		t.Errorf("last day %+v, want 11 and 4", day)
	}
	// A restarted worker (counts went down) is not counted as negative.
	s.record(h(2, 0))
	if d := sum(s.buckets("ehr", delivery.TargetHealth{Name: "ehr", Delivered: 3}, 24, time.Hour)); d.Delivered < 0 || d.Failed < 0 {
		t.Errorf("after a restart %+v", d)
	}
	if !strings.Contains(string(chart(s.buckets("ehr", delivery.TargetHealth{}, 12, 5*time.Minute), "x")), "<svg") {
		t.Error("no svg")
	}
}
