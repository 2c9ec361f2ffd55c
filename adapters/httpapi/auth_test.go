package httpapi_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
)

// jwks is a real JWKS endpoint whose keys the test can rotate.
type jwks struct {
	mu      sync.Mutex
	keys    []map[string]string
	fetches atomic.Int32
	srv     *httptest.Server
}

func newJWKS(t *testing.T) *jwks {
	j := &jwks{}
	j.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j.fetches.Add(1)
		j.mu.Lock()
		data, _ := json.Marshal(map[string]any{"keys": j.keys})
		j.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(data)
	}))
	t.Cleanup(j.srv.Close)
	return j
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func (j *jwks) add(kid, alg string, pub crypto.PublicKey) {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch k := pub.(type) {
	case *rsa.PublicKey:
		j.keys = append(j.keys, map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": alg,
			"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())})
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		x, y := make([]byte, size), make([]byte, size)
		k.X.FillBytes(x)
		k.Y.FillBytes(y)
		j.keys = append(j.keys, map[string]string{"kty": "EC", "kid": kid, "use": "sig", "alg": alg,
			"crv": k.Curve.Params().Name, "x": b64(x), "y": b64(y)})
	}
}

// Test keys, made once (RSA generation is slow on a loaded machine).
var (
	keysOnce        sync.Once
	rsaKey, rsaKey2 *rsa.PrivateKey
	ecKey           *ecdsa.PrivateKey
)

func testKeys(t *testing.T) {
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			t.Fatal(err)
		}
		if rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			t.Fatal(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
	})
}

const (
	testIssuer   = "https://idp.example.test/"
	testAudience = "https://kapbridge.example.test"
)

func sign(t *testing.T, method jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(scope string, extra map[string]any) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"iss": testIssuer, "aud": testAudience, "sub": "ehr-sync-client", "client_id": "ehr-sync",
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "scope": scope}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

type secured struct {
	url   string
	logs  *secBuffer
	audit *secBuffer
}

type secBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *secBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *secBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newSecured serves a handler with cfg's tenants and issuers over store.
func newSecured(t *testing.T, store kap.Store, cfg httpapi.Config) *secured {
	t.Helper()
	s := &secured{logs: &secBuffer{}, audit: &secBuffer{}}
	cfg.Store, cfg.Codec = store, fhir.MustCodec()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.Audit == nil {
		cfg.Audit = s.audit
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg.Context = ctx
	h, err := httpapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

type secReply struct {
	status int
	header http.Header
	body   []byte
}

// call sends a request with headers given as name, value pairs.
func secCall(t *testing.T, method, url string, body []byte, headers ...string) secReply {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return secReply{resp.StatusCode, resp.Header, data}
}

func secBearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// expect checks the status and, for errors, that the body is an
// OperationOutcome whose diagnostics contain want.
func secExpect(t *testing.T, what string, r secReply, status int, want string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d: %s", what, r.status, status, r.body)
	}
	if status < 400 {
		return
	}
	if ct := r.header.Get("Content-Type"); ct != "application/fhir+json" {
		t.Fatalf("%s: content type %q", what, ct)
	}
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Code        string `json:"code"`
			Diagnostics string `json:"diagnostics"`
		} `json:"issue"`
	}
	if err := json.Unmarshal(r.body, &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
		t.Fatalf("%s: not an OperationOutcome: %s", what, r.body)
	}
	if want != "" && !strings.Contains(oo.Issue[0].Diagnostics, want) {
		t.Fatalf("%s: diagnostics %q lack %q", what, oo.Issue[0].Diagnostics, want)
	}
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../../testdata/kap", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestBearerTokens(t *testing.T) {
	testKeys(t)
	j := newJWKS(t)
	j.add("rsa-1", "RS256", &rsaKey.PublicKey)
	j.add("ec-1", "ES256", &ecKey.PublicKey)
	s := newSecured(t, openBolt(t), httpapi.Config{
		Tenants: []config.Tenant{{Name: "clinic-a"}, {Name: "clinic-b"}},
		Issuers: []config.Issuer{{Issuer: testIssuer, JWKSURL: j.srv.URL + "/jwks.json", Audience: testAudience, Tenant: "clinic-a"}},
	})
	client := readTestdata(t, "10-client-c001.json")
	all := sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, claims("openid system/*.cruds", nil))
	secExpect(t, "RS256 POST", secCall(t, "POST", s.url+"/kap/v1/clients", client, secBearer(all)...), 201, "")
	es := sign(t, jwt.SigningMethodES256, "ec-1", ecKey, claims("system/Patient.rs", nil))
	secExpect(t, "ES256 GET", secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, secBearer(es)...), 200, "")

	for _, tc := range []struct {
		name, token, want string
	}{
		{"expired", sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, claims("system/*.cruds",
			map[string]any{"exp": time.Now().Add(-2 * time.Minute).Unix()})), "expired"},
		{"no exp", sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, claims("system/*.cruds",
			map[string]any{"exp": nil})), "required claim"},
		{"not yet valid", sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, claims("system/*.cruds",
			map[string]any{"nbf": time.Now().Add(5 * time.Minute).Unix()})), "not valid yet"},
		{"issued in the future", sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, claims("system/*.cruds",
			map[string]any{"iat": time.Now().Add(5 * time.Minute).Unix()})), "issued in the future"},
		{"wrong audience", sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, claims("system/*.cruds",
			map[string]any{"aud": "https://other.example.test"})), "audience"},
		{"unknown issuer", sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, claims("system/*.cruds",
			map[string]any{"iss": "https://evil.example.test/"})), "issuer"},
		{"signed by another key", sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey2, claims("system/*.cruds", nil)), "signature"},
		{"RS512", sign(t, jwt.SigningMethodRS512, "rsa-1", rsaKey, claims("system/*.cruds", nil)), "algorithm"},
		{"alg none", sign(t, jwt.SigningMethodNone, "rsa-1", jwt.UnsafeAllowNoneSignatureType, claims("system/*.cruds", nil)), "algorithm"},
		// The classic confusion attack: HMAC keyed with the public key.
		{"HS256 with the public key", sign(t, jwt.SigningMethodHS256, "rsa-1",
			x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey), claims("system/*.cruds", nil)), "algorithm"},
		{"garbage", "not.a.jwt", "not a JWT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, secBearer(tc.token)...)
			secExpect(t, tc.name, r, 401, tc.want)
			if wa := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer ") || !strings.Contains(wa, `error="invalid_token"`) {
				t.Errorf("WWW-Authenticate %q", wa)
			}
			if strings.Contains(string(r.body), tc.token) {
				t.Error("the answer quotes the token")
			}
		})
	}
	r := secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil)
	secExpect(t, "no credentials", r, 401, "required")
	if wa := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, `Bearer realm="kapbridge"`) {
		t.Errorf("WWW-Authenticate %q", wa)
	}
	secExpect(t, "Basic", secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, "Authorization", "Basic YTpi"), 401, "Bearer")
	secExpect(t, "two credentials", secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil,
		"Authorization", "Bearer "+all, "X-API-Key", "kap_x"), 401, "not both")

	// Key rotation: a token signed with a key the JWKS did not have when it
	// was fetched makes the gateway fetch it again.
	before := j.fetches.Load()
	j.add("rsa-2", "RS256", &rsaKey2.PublicKey)
	rotated := sign(t, jwt.SigningMethodRS256, "rsa-2", rsaKey2, claims("system/*.rs", nil))
	secExpect(t, "rotated key", secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, secBearer(rotated)...), 200, "")
	if j.fetches.Load() <= before {
		t.Errorf("the JWKS was not fetched again for an unknown kid (%d fetches)", j.fetches.Load())
	}
}

func TestScopes(t *testing.T) {
	testKeys(t)
	j := newJWKS(t)
	j.add("rsa-1", "RS256", &rsaKey.PublicKey)
	readerKey, writerKey, obsKey := "kap_reader_key", "kap_writer_key", "kap_obs_key"
	s := newSecured(t, openBolt(t), httpapi.Config{
		Tenants: []config.Tenant{{Name: "clinic-a", APIKeys: []config.APIKey{
			{Name: "reader", SHA256: httpapi.HashKey(readerKey), Scopes: []string{"system/*.read"}},
			{Name: "writer", SHA256: httpapi.HashKey(writerKey), Scopes: []string{"system/*.cu"}},
			{Name: "obs", SHA256: httpapi.HashKey(obsKey), Scopes: []string{"system/Observation.cruds"}},
		}}},
		Issuers: []config.Issuer{{Issuer: testIssuer, JWKSURL: j.srv.URL, Audience: testAudience, Tenant: "clinic-a"}},
	})
	client := readTestdata(t, "10-client-c001.json")
	assessment := readTestdata(t, "14-assessment-c001-phq9-baseline.json")
	key := func(k string) []string { return []string{"X-API-Key", k} }

	secExpect(t, "reader POST", secCall(t, "POST", s.url+"/kap/v1/clients", client, key(readerKey)...), 403, "system/Patient.cu")
	secExpect(t, "writer POST", secCall(t, "POST", s.url+"/kap/v1/clients", client, key(writerKey)...), 201, "")
	secExpect(t, "writer GET", secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, key(writerKey)...), 403, "system/Patient.r")
	secExpect(t, "reader GET", secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, key(readerKey)...), 200, "")
	secExpect(t, "obs POST client", secCall(t, "POST", s.url+"/kap/v1/clients", client, key(obsKey)...), 403, "insufficient-scope")
	secExpect(t, "obs POST assessment", secCall(t, "POST", s.url+"/kap/v1/assessments", assessment, key(obsKey)...), 201, "")
	// $map and $validate touch no stored data: any credential may use them.
	secExpect(t, "obs $map", secCall(t, "POST", s.url+"/kap/v1/$map", client, key(obsKey)...), 200, "")

	// A bearer token without the scope: 403 and the scope in the challenge.
	tok := sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, claims("system/Observation.rs", nil))
	r := secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, secBearer(tok)...)
	secExpect(t, "token GET client", r, 403, "system/Patient.r")
	if wa := r.header.Get("WWW-Authenticate"); !strings.Contains(wa, `error="insufficient_scope"`) || !strings.Contains(wa, `scope="system/Patient.r"`) {
		t.Errorf("WWW-Authenticate %q", wa)
	}
	secExpect(t, "token GET assessment", secCall(t, "GET", s.url+"/kap/v1/assessments/as-c001-phq9-0", nil, secBearer(tok)...), 200, "")
}

func TestBearerTenantClaimAndPEMKeys(t *testing.T) {
	testKeys(t)
	der, err := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemFile := filepath.Join(t.TempDir(), "idp.pem")
	if err := os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newSecured(t, openBolt(t), httpapi.Config{
		Tenants: []config.Tenant{{Name: "clinic-a"}, {Name: "clinic-b"}},
		Issuers: []config.Issuer{{Issuer: testIssuer, KeyFiles: []string{pemFile}, Audience: testAudience, TenantClaim: "kap_tenant"}},
	})
	client := readTestdata(t, "10-client-c001.json")
	tokA := sign(t, jwt.SigningMethodES256, "", ecKey, claims("system/*.cruds", map[string]any{"kap_tenant": "clinic-a"}))
	tokB := sign(t, jwt.SigningMethodES256, "", ecKey, claims("system/*.cruds", map[string]any{"kap_tenant": "clinic-b"}))
	secExpect(t, "tenant a POST", secCall(t, "POST", s.url+"/kap/v1/clients", client, secBearer(tokA)...), 201, "")
	secExpect(t, "tenant a GET", secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, secBearer(tokA)...), 200, "")
	secExpect(t, "tenant b GET", secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, secBearer(tokB)...), 404, "")
	unknown := sign(t, jwt.SigningMethodES256, "", ecKey, claims("system/*.cruds", map[string]any{"kap_tenant": "clinic-z"}))
	secExpect(t, "unknown tenant", secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, secBearer(unknown)...), 403, "tenant")
	none := sign(t, jwt.SigningMethodES256, "", ecKey, claims("system/*.cruds", nil))
	secExpect(t, "no tenant claim", secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, secBearer(none)...), 403, "kap_tenant")
	// A static key verifies only its own signatures.
	other := sign(t, jwt.SigningMethodRS256, "", rsaKey, claims("system/*.cruds", map[string]any{"kap_tenant": "clinic-a"}))
	secExpect(t, "other key", secCall(t, "GET", s.url+"/kap/v1/clients/c001", nil, secBearer(other)...), 401, "")
	if !strings.Contains(s.audit.String(), `"value":"jwt:ehr-sync"`) {
		t.Errorf("the audit trail does not name the token's client: %s", s.audit.String())
	}
}

func TestFHIRFacadeScopes(t *testing.T) {
	obsKey, allKey := "kap_obs_key", "kap_all_key"
	s := newSecured(t, openBolt(t), httpapi.Config{
		Tenants: []config.Tenant{{Name: "clinic-a", APIKeys: []config.APIKey{
			{Name: "obs", SHA256: httpapi.HashKey(obsKey), Scopes: []string{"system/Observation.rs"}},
			{Name: "all", SHA256: httpapi.HashKey(allKey)},
		}}},
	})
	secExpect(t, "POST client", secCall(t, "POST", s.url+"/kap/v1/clients", readTestdata(t, "10-client-c001.json"), "X-API-Key", allKey), 201, "")
	secExpect(t, "obs search Patient", secCall(t, "GET", s.url+"/fhir/r4/Patient", nil, "X-API-Key", obsKey), 403, "system/Patient.s")
	secExpect(t, "obs read Patient", secCall(t, "GET", s.url+"/fhir/r4/Patient/x", nil, "X-API-Key", obsKey), 403, "system/Patient.r")
	if r := secCall(t, "GET", s.url+"/fhir/r4/Observation", nil, "X-API-Key", obsKey); r.status == 403 || r.status == 401 {
		t.Errorf("obs search Observation: %d %s", r.status, r.body)
	}
	secExpect(t, "obs search Observation with _include", secCall(t, "GET", s.url+"/fhir/r4/Observation?_include=Observation:patient", nil, "X-API-Key", obsKey), 403, "system/Patient.s")
	secExpect(t, "obs transaction", secCall(t, "POST", s.url+"/fhir/r4", []byte(`{"resourceType":"Bundle","type":"transaction"}`), "X-API-Key", obsKey), 403, "system/*.cu")
	if r := secCall(t, "GET", s.url+"/fhir/r4/Patient?_id=x", nil, "X-API-Key", allKey); r.status != 200 {
		t.Errorf("all search Patient: %d %s", r.status, r.body)
	}
}
