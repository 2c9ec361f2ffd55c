package main

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
)

func TestKeysGenerateAndJWKS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	var kids []string
	for _, alg := range []string{"ES384", "RS384"} {
		code, out, errs := run(t, "", "keys", "generate", "--alg", alg, "--out", dir)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", alg, code, errs)
		}
		kid := strings.TrimSpace(out)
		path := filepath.Join(dir, kid+".pem")
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v, want 0600", path, err, st.Mode().Perm())
		}
		// The printed kid is the key's kid (its thumbprint), and the file
		// loads with it as the active key and the right algorithm.
		ks, err := targetauth.LoadKeys(path, kid, alg)
		if err != nil || ks.Active().ID != kid {
			t.Fatalf("%s: %v", alg, err)
		}
		kids = append(kids, kid)
	}
	code, out, errs := run(t, "", "keys", "jwks", "--key-file", filepath.Join(dir, "*.pem"))
	if code != 0 {
		t.Fatalf("jwks: exit %d: %s", code, errs)
	}
	var set targetauth.JWKS
	if err := json.Unmarshal([]byte(out), &set); err != nil || len(set.Keys) != 2 {
		t.Fatalf("jwks: %v %s", err, out)
	}
	for _, k := range set.Keys {
		if k.Kid != kids[0] && k.Kid != kids[1] {
			t.Errorf("unexpected kid %s", k.Kid)
		}
	}
	if strings.Contains(out, `"d"`) || strings.Contains(out, "PRIVATE") {
		t.Fatal("the JWKS holds private key material")
	}
	for _, args := range [][]string{{"keys"}, {"keys", "generate", "--alg", "HS256", "--out", dir}, {"keys", "generate"},
		{"keys", "jwks", "--key-file", filepath.Join(dir, "none-*.pem")}} {
		if code, _, _ := run(t, "", args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// The gateway serves the public keys of its smart-backend targets at
// jwksPath, without credentials.
func TestServeJWKS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	code, out, errs := run(t, "", "keys", "generate", "--alg", "ES384", "--out", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	kid := strings.TrimSpace(out)
	cfg := config.Config{JWKSPath: "/.well-known/jwks.json", Targets: []config.Target{
		{Name: "ndjson", Type: "ndjson"},
		{Name: "ehr", Type: "fhir", BaseURL: "https://ehr.example/fhir", Auth: config.TargetAuth{Type: "smart-backend",
			TokenURL: "https://ehr.example/token", ClientID: "c", KeyFile: dir, Alg: "ES384"}}}}
	jwks, err := serveJWKS(cfg)
	if err != nil || jwks == nil {
		t.Fatalf("serveJWKS: %v", err)
	}
	if none, err := serveJWKS(config.Config{}); none != nil || err != nil {
		t.Fatalf("no smart-backend target: %v %v", none, err)
	}
	store, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h, err := httpapi.New(httpapi.Config{Store: store, Codec: fhir.MustCodec(), JWKS: jwks, JWKSPath: cfg.JWKSPath,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/.well-known/jwks.json", nil))
	var set targetauth.JWKS
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &set) != nil || len(set.Keys) != 1 || set.Keys[0].Kid != kid {
		t.Fatalf("GET jwks: %d %s", rec.Code, rec.Body)
	}
}
