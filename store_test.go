package kap

import (
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	top := func() float64 { return 0.999999 }
	zero := func() float64 { return 0 }
	half := func() float64 { return 0.5 }
	b := Backoff{Base: time.Second, Max: time.Minute, MaxAttempts: 5, MaxRetryAfter: 10 * time.Minute}
	for _, c := range []struct {
		rand       func() float64
		attempt    int
		retryAfter time.Duration
		lo, hi     time.Duration
	}{
		{half, 1, 0, 500 * time.Millisecond, 500 * time.Millisecond},
		{half, 3, 0, 2 * time.Second, 2 * time.Second}, // ceiling 4s
		{top, 10, 0, 59 * time.Second, time.Minute},    // capped at Max
		{top, 1000, 0, 59 * time.Second, time.Minute},  // no overflow
		{zero, 2, 0, 0, 0}, // full jitter reaches 0
		{zero, 2, 30 * time.Second, 30 * time.Second, 30 * time.Second}, // Retry-After honoured
		{top, 1, 3 * time.Hour, 10 * time.Minute, 10 * time.Minute},     // and capped
		{top, 0, 0, 0, time.Second},                                     // attempt < 1 is 1
	} {
		b.Rand = c.rand
		d := b.Delay(c.attempt, c.retryAfter)
		if d < c.lo || d > c.hi {
			t.Errorf("Delay(%d, %v) = %v, want in [%v, %v]", c.attempt, c.retryAfter, d, c.lo, c.hi)
		}
	}
}

func TestBackoffNext(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	b := Backoff{MaxAttempts: 3, Rand: func() float64 { return 0.5 }}
	at, ok := b.Next(now, 2, 0)
	if !ok || at != now.Add(time.Second) {
		t.Fatalf("Next after attempt 2 = %v %v, want %v", at, ok, now.Add(time.Second))
	}
	if _, ok := b.Next(now, 3, 0); ok {
		t.Fatal("Next after the last attempt should give up")
	}
	// The default random source stays within the ceiling.
	b = Backoff{Base: time.Second, Max: 8 * time.Second}
	for i := 0; i < 1000; i++ {
		if d := b.Delay(4, 0); d < 0 || d > 8*time.Second {
			t.Fatalf("Delay = %v outside [0, 8s]", d)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, bad := range []string{"", "a{b}", "a:b", "a b", "é", string(make([]byte, 65))} {
		if ErrorCode(ValidateName("tenant", bad)) != EINVALID {
			t.Errorf("ValidateName(%q) accepted", bad)
		}
	}
	if err := ValidateName("tenant", "clinic-1_a.b"); err != nil {
		t.Error(err)
	}
	if err := ValidateID("id", "a\x00b"); ErrorCode(err) != EINVALID || err.Error() != "id holds a control or invalid character" {
		t.Errorf("ValidateID: %v", err)
	}
}
