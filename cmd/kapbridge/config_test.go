package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/internal/config"
)

func TestConfigFlagsWin(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("addr: 10.0.0.1:1\nrole: worker\ndataDir: /from/file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		return map[string]string{"KAPBRIDGE_CONFIG": file, "KAPBRIDGE_ADDR": "10.0.0.2:2", "KAPBRIDGE_ROLE": "api"}[k]
	}
	fs := newFlags("serve", &bytes.Buffer{})
	cf := addConfigFlags(fs)
	if err := fs.Parse([]string{"--role", "all"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := cf.load(getenv)
	if err != nil {
		t.Fatal(err)
	}
	// file < env < flag
	if cfg.DataDir != "/from/file" || cfg.Addr != "10.0.0.2:2" || cfg.Role != "all" {
		t.Errorf("dataDir %q addr %q role %q", cfg.DataDir, cfg.Addr, cfg.Role)
	}
	fs = newFlags("serve", &bytes.Buffer{})
	cf = addConfigFlags(fs)
	if err := fs.Parse([]string{"--role", "bogus", "--addr", "nohostport"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cf.load(getenv); err == nil || !strings.Contains(err.Error(), "role: must be one of api, worker, all") ||
		!strings.Contains(err.Error(), "addr: must be host:port") {
		t.Errorf("err = %v", err)
	}
}

func TestConfigCommand(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(file, []byte("tenants:\n  - name: a\n    apiKeys: [{name: k, sha256: abc}]\n  - name: a\n"), 0o600)
	var out, errb bytes.Buffer
	code := Run(context.Background(), []string{"config", "--config", file}, nil, &out, &errb)
	if code != 1 {
		t.Fatalf("exit %d, stderr %s", code, errb.String())
	}
	for _, want := range []string{"tenants[0].apiKeys[0].sha256: must be 64 hex characters", `tenants[1].name: "a" is used by another tenant`} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
	out.Reset()
	errb.Reset()
	dir := t.TempDir()
	if code := Run(context.Background(), []string{"config", "--data-dir", dir}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var cfg config.Config
	if err := json.Unmarshal(out.Bytes(), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Targets) != 1 || cfg.Targets[0].Dir != filepath.Join(dir, "ndjson") || !cfg.Tenants[0].Bootstrap {
		t.Errorf("effective config = %s", out.String())
	}
}

func TestHashKey(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"hash-key"}, strings.NewReader("kap_secret\n"), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	// printf %s kap_secret | sha256sum
	if got := strings.TrimSpace(out.String()); got != httpapi.HashKey("kap_secret") || len(got) != 64 {
		t.Errorf("hash = %q", got)
	}
	out.Reset()
	if code := Run(context.Background(), []string{"hash-key", "--new"}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d", code)
	}
	var key, sum string
	for _, l := range strings.Split(out.String(), "\n") {
		if v, ok := strings.CutPrefix(l, "key:"); ok {
			key = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "sha256:"); ok {
			sum = strings.TrimSpace(v)
		}
	}
	if key == "" || httpapi.HashKey(key) != sum {
		t.Errorf("--new printed %q", out.String())
	}
	if code := Run(context.Background(), []string{"hash-key"}, strings.NewReader(""), &out, &errb); code != 2 {
		t.Errorf("empty stdin: exit %d", code)
	}
}

// TestServeConfiguredTenants starts the gateway with a file of two tenants:
// each key reaches only its tenant and the default bootstrap key is not made.
func TestServeConfiguredTenants(t *testing.T) {
	dir := t.TempDir()
	keyA, keyB := "kap_test_key_a", "kap_test_key_b"
	cfg, err := config.Parse([]byte(`
tenants:
  - name: clinic-a
    apiKeys: [{name: a1, sha256: `+httpapi.HashKey(keyA)+`}]
  - name: clinic-b
    apiKeys: [{name: b1, sha256: `+httpapi.HashKey(keyB)+`}]
`), "test")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr, cfg.DataDir = "127.0.0.1:0", dir
	var logs syncBuffer
	m := &serveMain{cfg: serveConfig{Config: cfg, Logger: newTestLogger(&logs)}}
	if err := m.Open(); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := os.Stat(filepath.Join(dir, "bootstrap-api-key")); !os.IsNotExist(err) {
		t.Errorf("a bootstrap key was made although no tenant holds it: %v", err)
	}
	recs := loadRecords(t)
	var client testRecord
	for _, r := range recs {
		if r.kind == "Client" {
			client = r
			break
		}
	}
	a := &httpClient{t: t, base: "http://" + m.Addr(), key: keyA}
	if r := a.post("/kap/v1/clients", client.data); r.status != 201 {
		t.Fatalf("tenant a POST: %d %s", r.status, r.body)
	}
	if r := a.get("/kap/v1/clients/" + client.id); r.status != 200 {
		t.Fatalf("tenant a GET: %d", r.status)
	}
	b := &httpClient{t: t, base: "http://" + m.Addr(), key: keyB}
	if r := b.get("/kap/v1/clients/" + client.id); r.status != 404 {
		t.Fatalf("tenant b reads tenant a's client: %d", r.status)
	}
	if r := a.do("GET", "/kap/v1/clients/"+client.id, "kap_wrong", nil); r.status != 401 {
		t.Fatalf("wrong key: %d", r.status)
	}
}

func newTestLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestServeBearerAndAudit starts the gateway with an issuer whose JWKS a
// test server publishes: a signed token reaches its tenant, a request
// without the scope is 403, and both land in <data>/audit (mode 0600).
func TestServeBearerAndAudit(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x, y := make([]byte, 32), make([]byte, 32)
	key.X.FillBytes(x)
	key.Y.FillBytes(y)
	jwksBody, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
		"x": base64.RawURLEncoding.EncodeToString(x), "y": base64.RawURLEncoding.EncodeToString(y)}}})
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(jwksBody) }))
	defer jwks.Close()

	dir := t.TempDir()
	cfg, err := config.Parse([]byte(`
tenants:
  - name: clinic-a
issuers:
  - issuer: https://idp.example.test/
    jwksUrl: `+jwks.URL+`
    audience: https://kapbridge.example.test
    tenant: clinic-a
`), "test")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr, cfg.DataDir = "127.0.0.1:0", dir
	var logs syncBuffer
	m := &serveMain{cfg: serveConfig{Config: cfg, Logger: newTestLogger(&logs)}}
	if err := m.Open(); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	token := func(scope string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": "https://idp.example.test/",
			"aud": "https://kapbridge.example.test", "client_id": "clinic-a-emr", "scope": scope,
			"exp": time.Now().Add(time.Minute).Unix()})
		tok.Header["kid"] = "k1"
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var client testRecord
	for _, r := range loadRecords(t) {
		if r.kind == "Client" {
			client = r
			break
		}
	}
	send := func(method, path, tok string, body []byte) int {
		req, _ := http.NewRequest(method, "http://"+m.Addr()+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := send("POST", "/kap/v1/clients", token("system/*.cruds"), client.data); st != 201 {
		t.Fatalf("POST with a token: %d", st)
	}
	if st := send("GET", "/kap/v1/clients/"+client.id, token("system/Observation.rs"), nil); st != 403 {
		t.Fatalf("GET without the scope: %d", st)
	}
	if err := m.audit.Sync(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "audit", "audit-*.ndjson"))
	if len(files) != 1 {
		t.Fatalf("audit files %v", files)
	}
	data, _ := os.ReadFile(files[0])
	if fi, _ := os.Stat(files[0]); fi.Mode().Perm() != 0o600 {
		t.Errorf("audit file mode %v", fi.Mode())
	}
	if n := strings.Count(string(data), `"resourceType":"AuditEvent"`); n != 2 || !strings.Contains(string(data), "jwt:clinic-a-emr") {
		t.Errorf("%d audit events: %s", n, data)
	}
	if strings.Contains(logs.String(), client.id) {
		t.Error("the operational log names the record")
	}
}
