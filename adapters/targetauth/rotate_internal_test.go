package targetauth

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"
)

// The JWKS handler re-reads a key directory once ReloadInterval has
// passed, not on every request: a key published by another instance shows
// after the interval.
func TestJWKSHandlerReloadsAfterInterval(t *testing.T) {
	dir := t.TempDir()
	k, err := GenerateKey(ES384)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := k.MarshalPEM()
	if err := writeAtomic(dir+"/"+k.ID+".pem", data); err != nil {
		t.Fatal(err)
	}
	served, err := LoadKeys(dir, "", ES384)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	served.now = func() time.Time { return now }
	served.loaded = now
	other, err := LoadKeys(dir, "", ES384)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := other.Publish("")
	if err != nil {
		t.Fatal(err)
	}
	h := JWKSHandler(served)
	count := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/.well-known/jwks.json", nil))
		var set JWKS
		if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
			t.Fatal(err)
		}
		for _, j := range set.Keys {
			if j.Kid == k2.ID {
				return len(set.Keys)
			}
		}
		return -len(set.Keys)
	}
	now = now.Add(ReloadInterval / 2)
	if n := count(); n != -1 {
		t.Fatalf("within the interval: %d keys (negative: the new key absent), want the loaded one only", n)
	}
	now = now.Add(ReloadInterval)
	if n := count(); n != 2 {
		t.Fatalf("after the interval: %d keys (negative: the new key absent), want 2", n)
	}
}
