package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/internal/config"
)

// The started gateway with a smart-backend target whose keyFile is a
// directory: a key published in the console appears at the gateway's JWKS
// route (within targetauth.ReloadInterval), and making it the signing key
// writes the active file and an AuditEvent to <data>/audit.
func TestServeKeyRotation(t *testing.T) {
	keyDir := t.TempDir()
	k1, err := targetauth.GenerateKey(targetauth.ES384)
	if err != nil {
		t.Fatal(err)
	}
	pemData, _ := k1.MarshalPEM()
	if err := os.WriteFile(filepath.Join(keyDir, k1.ID+".pem"), pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	const adminKey = "kap_rotation_admin_key_0123456789"
	cfg, err := config.Parse([]byte(`
tenants:
  - name: clinic-a
    apiKeys:
      - {name: it-admin, sha256: `+httpapi.HashKey(adminKey)+`, admin: true}
targets:
  - name: ehr
    type: fhir
    baseUrl: http://127.0.0.1:9/fhir
    auth: {type: smart-backend, tokenUrl: "http://127.0.0.1:9/token", clientId: kap, keyFile: `+keyDir+`, alg: ES384}
`), "test")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg.Addr, cfg.DataDir = "127.0.0.1:0", dir
	var logs syncBuffer
	m := &serveMain{cfg: serveConfig{Config: cfg, Logger: newTestLogger(&logs)}}
	if err := m.Open(); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	base := "http://" + m.Addr()
	jwksPath := cfg.JWKSPath
	if jwksPath == "" {
		jwksPath = "/.well-known/jwks.json"
	}
	served := func() []string {
		resp, err := http.Get(base + jwksPath)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var set targetauth.JWKS
		if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
			t.Fatalf("JWKS: %v", err)
		}
		var kids []string
		for _, k := range set.Keys {
			kids = append(kids, k.Kid)
		}
		return kids
	}
	if got := served(); len(got) != 1 || got[0] != k1.ID {
		t.Fatalf("JWKS before rotation: %v", got)
	}

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(base+"/admin/login", url.Values{"key": {adminKey}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = c.Get(base + "/admin/keys")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m1 := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
	if m1 == nil || !strings.Contains(string(page), "Generate and publish a new key (ES384)") {
		t.Fatalf("keys page %d without the rotation form: %.400s", resp.StatusCode, page)
	}
	tok := string(m1[1])
	post := func(action string, v url.Values) {
		t.Helper()
		v.Set("csrf", tok)
		v.Set("target", "ehr")
		resp, err := c.PostForm(base+"/admin/keys/"+action, v)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("%s: %d", action, resp.StatusCode)
		}
	}
	post("publish", url.Values{})
	var kid2 string
	for _, f := range mustGlob(t, filepath.Join(keyDir, "*.pem")) {
		if id := strings.TrimSuffix(filepath.Base(f), ".pem"); id != k1.ID {
			kid2 = id
		}
	}
	if kid2 == "" {
		t.Fatal("no new key file")
	}
	// The JWKS route re-reads the directory within ReloadInterval.
	deadline := time.Now().Add(3 * targetauth.ReloadInterval)
	for got := served(); len(got) != 2; got = served() {
		if time.Now().After(deadline) {
			t.Fatalf("JWKS after publish: %v", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
	post("activate", url.Values{"kid": {kid2}})
	if b, _ := os.ReadFile(filepath.Join(keyDir, targetauth.ActiveFile)); strings.TrimSpace(string(b)) != kid2 {
		t.Fatalf("active file %q", b)
	}
	if err := m.audit.Sync(); err != nil {
		t.Fatal(err)
	}
	files := mustGlob(t, filepath.Join(dir, "audit", "audit-*.ndjson"))
	var trail []byte
	for _, f := range files {
		b, _ := os.ReadFile(f)
		trail = append(trail, b...)
	}
	if !strings.Contains(string(trail), "key-activate") || !strings.Contains(string(trail), kid2) || strings.Contains(string(trail), "PRIVATE KEY") {
		t.Fatalf("audit trail: %s", trail)
	}
}

func mustGlob(t *testing.T, pat string) []string {
	t.Helper()
	m, err := filepath.Glob(pat)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
