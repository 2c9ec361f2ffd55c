package targetauth_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/internal/config"
)

func servedKIDs(t *testing.T, url string) []string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set targetauth.JWKS
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.Kid)
	}
	return out
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Rotation on a key directory shared by several key-set instances (the
// console's, another replica's JWKS, a delivery worker's transport):
// publish, activate, retire, each seen by the others after a reload, with
// every assertion verified by a token endpoint against the served JWKS.
func TestRotateDirectory(t *testing.T) {
	dir := t.TempDir()
	kid1 := writeKey(t, dir, targetauth.ES384)
	console, err := targetauth.LoadKeys(dir, "", targetauth.ES384)
	if err != nil {
		t.Fatal(err)
	}
	replica, err := targetauth.LoadKeys(dir, "", targetauth.ES384)
	if err != nil {
		t.Fatal(err)
	}
	if console.Dir() != filepath.Clean(dir) || console.Alg() != targetauth.ES384 {
		t.Fatalf("Dir %q Alg %q", console.Dir(), console.Alg())
	}
	jw := jwksServer(t, replica)
	as := newAuthServer(t, "c1", jw.URL)
	// The worker's transport loads the directory itself.
	cfg := config.TargetAuth{Type: "smart-backend", TokenURL: as.tokenURL(), ClientID: "c1", KeyFile: dir, Alg: targetauth.ES384}
	rt, err := targetauth.New(cfg, targetauth.Options{Target: "ehr", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	refresh := func() {
		t.Helper()
		if err := rt.(targetauth.Refresher).Refresh(context.Background()); err != nil {
			t.Fatalf("token request: %v", err)
		}
	}
	lastKID := func() string {
		as.mu.Lock()
		defer as.mu.Unlock()
		return as.kids[len(as.kids)-1]
	}
	if st := get(t, rt, as.srv.URL+"/fhir/Patient"); st != 200 || lastKID() != kid1 {
		t.Fatalf("before rotation: status %d", st)
	}

	// 1. Publish: in the directory (0600) and the JWKS, not signing.
	if _, err := console.Publish(targetauth.RS384); kap.ErrorCode(err) != kap.EINVALID {
		t.Fatalf("publish with another alg: %v", err)
	}
	k2, err := console.Publish("")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(k2.File); err != nil || st.Mode().Perm() != 0o600 || filepath.Dir(k2.File) != filepath.Clean(dir) {
		t.Fatalf("key file %s: %v %v", k2.File, st, err)
	}
	if console.Active().ID != kid1 || len(console.Keys()) != 2 {
		t.Fatalf("after publish: active %s, %d keys", console.Active().ID, len(console.Keys()))
	}
	if err := replica.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := servedKIDs(t, jw.URL); !has(got, k2.ID) || !has(got, kid1) {
		t.Fatalf("the other instance serves %v, want both keys", got)
	}
	refresh()
	if lastKID() != kid1 {
		t.Fatalf("a published key signs before it was activated: %s", lastKID())
	}

	// 2. Activate: the worker signs with it at its next token request; the
	// old key stays published.
	if err := console.Activate("no-such-kid"); kap.ErrorCode(err) != kap.ENOTFOUND {
		t.Fatalf("activate unknown kid: %v", err)
	}
	if err := console.Activate(k2.ID); err != nil {
		t.Fatal(err)
	}
	if err := replica.Reload(); err != nil {
		t.Fatal(err)
	}
	if replica.Active().ID != k2.ID {
		t.Fatalf("the other instance signs with %s", replica.Active().ID)
	}
	refresh()
	if lastKID() != k2.ID {
		t.Fatalf("after activation the worker signed with %s, want %s", lastKID(), k2.ID)
	}
	if got := servedKIDs(t, jw.URL); !has(got, kid1) {
		t.Fatalf("the previous key left the JWKS at activation: %v", got)
	}

	// 3. Retire: not the signing key; the old one moves to retired/.
	if err := console.Retire(k2.ID); kap.ErrorCode(err) != kap.EPRECONDITION {
		t.Fatalf("retiring the signing key: %v", err)
	}
	if err := console.Retire(kid1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, targetauth.RetiredDir, kid1+".pem")); err != nil {
		t.Fatalf("retired key not kept: %v", err)
	}
	if err := replica.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := servedKIDs(t, jw.URL); len(got) != 1 || got[0] != k2.ID {
		t.Fatalf("after retiring, JWKS = %v", got)
	}
	as.revokeAll()
	if st := getRefreshing(t, rt, as.srv.URL+"/fhir/Patient"); st != 200 || lastKID() != k2.ID {
		t.Fatalf("after retiring: status %d kid %s", st, lastKID())
	}

	// A restart reads the state from disk: the active file wins over a
	// stale configured keyId.
	restarted, err := targetauth.LoadKeys(dir, kid1, targetauth.ES384)
	if err != nil {
		t.Fatal(err)
	}
	if restarted.Active().ID != k2.ID || len(restarted.Keys()) != 1 {
		t.Fatalf("after restart: active %s, %d keys", restarted.Active().ID, len(restarted.Keys()))
	}

	// A broken directory state is refused and the loaded keys are kept.
	if err := os.WriteFile(filepath.Join(dir, targetauth.ActiveFile), []byte("not-a-kid\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := restarted.Reload(); err == nil || !strings.Contains(err.Error(), "keyId") {
		t.Fatalf("reload with an unknown active kid: %v", err)
	}
	if restarted.Active().ID != k2.ID {
		t.Fatal("a failed reload changed the signing key")
	}
	refresh()
	if lastKID() != k2.ID {
		t.Fatalf("after a failed reload the worker signed with %s", lastKID())
	}
}

// A key set read from a file or a glob cannot be rotated at run time.
func TestRotateNeedsDirectory(t *testing.T) {
	dir := t.TempDir()
	kid := writeKey(t, dir, targetauth.ES384)
	ks, err := targetauth.LoadKeys(filepath.Join(dir, kid+".pem"), "", "")
	if err != nil {
		t.Fatal(err)
	}
	if ks.Dir() != "" {
		t.Fatalf("Dir = %q for a single file", ks.Dir())
	}
	if _, err := ks.Publish(""); kap.ErrorCode(err) != kap.EPRECONDITION || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("Publish on a file: %v", err)
	}
	if err := ks.Activate(kid); kap.ErrorCode(err) != kap.EPRECONDITION {
		t.Fatalf("Activate on a file: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("the directory changed: %d entries", len(entries))
	}
}

// Reload is done before every token request and by the JWKS every
// ReloadInterval: its cost for a directory of two keys, one of each alg.
func BenchmarkReload(b *testing.B) {
	dir := b.TempDir()
	writeKey(b, dir, targetauth.ES384)
	kid := writeKey(b, dir, targetauth.RS384)
	ks, err := targetauth.LoadKeys(dir, kid, "")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := ks.Reload(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPublish(b *testing.B) {
	for _, alg := range []string{targetauth.ES384, targetauth.RS384} {
		b.Run(alg, func(b *testing.B) {
			dir := b.TempDir()
			writeKey(b, dir, alg)
			ks, err := targetauth.LoadKeys(dir, "", alg)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := ks.Publish(""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
