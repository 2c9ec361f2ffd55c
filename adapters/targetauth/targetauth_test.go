package targetauth_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	goredis "github.com/redis/go-redis/v9"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/internal/config"
)

// authServer is a real OAuth 2.0 token endpoint for SMART Backend Services
// and client_secret_basic, plus a protected FHIR-ish resource. It verifies
// client assertions against the JWKS the gateway serves (fetched over HTTP
// on every request, as an EHR that caches nothing would): signature with
// the kid's key, alg RS384/ES384 only, iss = sub = client id, aud = token
// URL, exp present and at most 5 minutes after iat, jti never seen before.
type authServer struct {
	t        testing.TB
	clientID string
	secret   string
	jwksURL  string
	lifetime int // expires_in
	srv      *httptest.Server
	now      func() time.Time // the server's clock

	mu       sync.Mutex
	jtis     map[string]bool
	issued   map[string]bool
	kids     []string // kid of each accepted assertion
	fail     func(w http.ResponseWriter) bool
	fetches  atomic.Int64
	requests atomic.Int64
	refused  atomic.Int64
}

func newAuthServer(t testing.TB, clientID, jwksURL string) *authServer {
	a := &authServer{t: t, clientID: clientID, jwksURL: jwksURL, lifetime: 3600, now: time.Now,
		jtis: map[string]bool{}, issued: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", a.token)
	mux.HandleFunc("GET /fhir/Patient", a.resource)
	a.srv = httptest.NewServer(mux)
	t.Cleanup(a.srv.Close)
	return a
}

func (a *authServer) tokenURL() string { return a.srv.URL + "/token" }

func oauthError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":%q,"error_description":"refused by the test server"}`, code)
}

func (a *authServer) token(w http.ResponseWriter, r *http.Request) {
	a.fetches.Add(1)
	a.mu.Lock()
	fail := a.fail
	a.mu.Unlock()
	if fail != nil && fail(w) {
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		oauthError(w, 400, "unsupported_grant_type")
		return
	}
	var kid string
	if at := r.PostForm.Get("client_assertion_type"); at != "" {
		if at != targetauth.AssertionType {
			oauthError(w, 400, "invalid_request")
			return
		}
		var err error
		if kid, err = a.verify(r.PostForm.Get("client_assertion")); err != nil {
			a.t.Logf("assertion refused: %v", err)
			oauthError(w, 401, "invalid_client")
			return
		}
	} else {
		id, secret, ok := r.BasicAuth()
		if !ok || id != a.clientID || secret != a.secret || a.secret == "" {
			oauthError(w, 401, "invalid_client")
			return
		}
	}
	var b [12]byte
	rand.Read(b[:])
	tok := "at-" + hex.EncodeToString(b[:])
	a.mu.Lock()
	a.issued[tok] = true
	if kid != "" {
		a.kids = append(a.kids, kid)
	}
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "bearer",
		"expires_in": a.lifetime, "scope": r.PostForm.Get("scope")})
}

func (a *authServer) verify(assertion string) (string, error) {
	var kid string
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(assertion, claims, func(t *jwt.Token) (any, error) {
		kid, _ = t.Header["kid"].(string)
		return fetchJWK(a.jwksURL, kid)
	}, jwt.WithValidMethods([]string{"RS384", "ES384"}), jwt.WithAudience(a.tokenURL()),
		jwt.WithIssuer(a.clientID), jwt.WithSubject(a.clientID), jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(a.now))
	if err != nil {
		return "", err
	}
	if aud, ok := claims["aud"].(string); !ok || aud != a.tokenURL() {
		return "", errors.New("aud is not the token URL as a string")
	}
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	if iat == nil || exp.Sub(iat.Time) > 5*time.Minute {
		return "", errors.New("exp is more than 5 minutes after iat")
	}
	jti, _ := claims["jti"].(string)
	a.mu.Lock()
	defer a.mu.Unlock()
	if jti == "" || a.jtis[jti] {
		return "", errors.New("jti missing or replayed")
	}
	a.jtis[jti] = true
	return kid, nil
}

// fetchJWK gets the JWKS over HTTP and turns the kid's JWK into a key.
func fetchJWK(url, kid string) (crypto.PublicKey, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		return nil, fmt.Errorf("JWKS content type %q", ct)
	}
	var set targetauth.JWKS
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return nil, err
	}
	d := base64.RawURLEncoding
	for _, k := range set.Keys {
		if k.Kid != kid {
			continue
		}
		if k.Use != "sig" || (k.Alg != "RS384" && k.Alg != "ES384") {
			return nil, fmt.Errorf("JWK %s: use %q alg %q", kid, k.Use, k.Alg)
		}
		switch k.Kty {
		case "RSA":
			n, err1 := d.DecodeString(k.N)
			e, err2 := d.DecodeString(k.E)
			if err1 != nil || err2 != nil {
				return nil, errors.New("bad RSA JWK")
			}
			return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
		case "EC":
			x, err1 := d.DecodeString(k.X)
			y, err2 := d.DecodeString(k.Y)
			if err1 != nil || err2 != nil || k.Crv != "P-384" || len(x) != 48 || len(y) != 48 {
				return nil, errors.New("bad EC JWK")
			}
			return &ecdsa.PublicKey{Curve: elliptic.P384(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}, nil
		}
	}
	return nil, fmt.Errorf("no key %q in the JWKS", kid)
}

func (a *authServer) resource(w http.ResponseWriter, r *http.Request) {
	a.requests.Add(1)
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	a.mu.Lock()
	valid := ok && a.issued[tok]
	a.mu.Unlock()
	if !valid {
		a.refused.Add(1)
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	io.WriteString(w, `{"resourceType":"Bundle","type":"searchset","total":0}`)
}

// revokeAll makes every issued token invalid (as an EHR that restarted).
func (a *authServer) revokeAll() {
	a.mu.Lock()
	a.issued = map[string]bool{}
	a.mu.Unlock()
}

func (a *authServer) setFail(f func(w http.ResponseWriter) bool) {
	a.mu.Lock()
	a.fail = f
	a.mu.Unlock()
}

func (a *authServer) issuedTokens() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for t := range a.issued {
		out = append(out, t)
	}
	return out
}

// writeKey generates a key and writes it as PEM into dir; returns its kid.
func writeKey(t testing.TB, dir, alg string) string {
	t.Helper()
	k, err := targetauth.GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	pemData, err := k.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, k.ID+".pem"), pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	return k.ID
}

func boltCache(t testing.TB, now func() time.Time) kap.Cache {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Cache()
}

// get sends one request through rt and returns the status.
func get(t testing.TB, rt http.RoundTripper, url string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// getRefreshing does what the EHR adapter does: on 401, Refresh once and
// retry once.
func getRefreshing(t testing.TB, rt http.RoundTripper, url string) int {
	t.Helper()
	st := get(t, rt, url)
	if st == http.StatusUnauthorized {
		r, ok := rt.(targetauth.Refresher)
		if !ok {
			t.Fatal("transport is not a Refresher")
		}
		if err := r.Refresh(context.Background()); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		st = get(t, rt, url)
	}
	return st
}

func jwksServer(t testing.TB, sets ...*targetauth.KeySet) *httptest.Server {
	s := httptest.NewServer(targetauth.JWKSHandler(sets...))
	t.Cleanup(s.Close)
	return s
}

func TestSMARTBackend(t *testing.T) {
	for _, alg := range []string{targetauth.ES384, targetauth.RS384} {
		t.Run(alg, func(t *testing.T) {
			dir := t.TempDir()
			kid := writeKey(t, dir, alg)
			ks, err := targetauth.LoadKeys(filepath.Join(dir, "*.pem"), "", alg)
			if err != nil {
				t.Fatal(err)
			}
			if ks.Active().ID != kid {
				t.Fatalf("active kid %s, want %s", ks.Active().ID, kid)
			}
			jw := jwksServer(t, ks)
			as := newAuthServer(t, "kap-client", jw.URL+"/.well-known/jwks.json")
			var logs bytes.Buffer
			cfg := config.TargetAuth{Type: "smart-backend", TokenURL: as.tokenURL(), ClientID: "kap-client",
				Scope: "system/Patient.rs system/Observation.cruds", KeyFile: filepath.Join(dir, "*.pem"), Alg: alg}
			rt, err := targetauth.New(cfg, targetauth.Options{Target: "ehr", Cache: boltCache(t, nil),
				Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}

			// 40 concurrent requests share one token.
			var wg sync.WaitGroup
			var bad atomic.Int64
			for range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if get(t, rt, as.srv.URL+"/fhir/Patient") != 200 {
						bad.Add(1)
					}
				}()
			}
			wg.Wait()
			if bad.Load() != 0 || as.fetches.Load() != 1 {
				t.Fatalf("%d requests failed, %d token requests; want 0 and 1", bad.Load(), as.fetches.Load())
			}

			// The EHR forgets its tokens: 401, one refresh, then 200.
			as.revokeAll()
			if st := getRefreshing(t, rt, as.srv.URL+"/fhir/Patient"); st != 200 {
				t.Fatalf("after refresh: status %d", st)
			}
			if as.fetches.Load() != 2 || as.refused.Load() != 1 {
				t.Fatalf("token requests %d, refused %d; want 2 and 1", as.fetches.Load(), as.refused.Load())
			}
			for i, k := range as.kids {
				if k != kid {
					t.Errorf("assertion %d signed with kid %s, want %s", i, k, kid)
				}
			}
			for _, tok := range as.issuedTokens() {
				if strings.Contains(logs.String(), tok) {
					t.Fatal("an access token reached the log")
				}
			}
			if !strings.Contains(logs.String(), `"target":"ehr"`) {
				t.Errorf("token fetches are not logged with the target: %s", logs.String())
			}
		})
	}
}

// A token is replaced shortly before it expires (the skew), not after.
func TestSMARTBackendExpiry(t *testing.T) {
	dir := t.TempDir()
	writeKey(t, dir, targetauth.ES384)
	ks, err := targetauth.LoadKeys(filepath.Join(dir, "*.pem"), "", "")
	if err != nil {
		t.Fatal(err)
	}
	as := newAuthServer(t, "c1", jwksServer(t, ks).URL)
	as.lifetime = 600
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	as.now = now
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	cfg := config.TargetAuth{Type: "smart-backend", TokenURL: as.tokenURL(), ClientID: "c1", Scope: "system/*.rs"}
	rt, err := targetauth.New(cfg, targetauth.Options{Target: "ehr", Keys: ks, Now: now, Cache: boltCache(t, nil),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	get(t, rt, as.srv.URL+"/fhir/Patient")
	advance(530 * time.Second) // 600 s token, 60 s skew: still good
	get(t, rt, as.srv.URL+"/fhir/Patient")
	if n := as.fetches.Load(); n != 1 {
		t.Fatalf("%d token requests before the skew, want 1", n)
	}
	advance(20 * time.Second) // 550 s: within the skew
	if st := get(t, rt, as.srv.URL+"/fhir/Patient"); st != 200 {
		t.Fatalf("status %d", st)
	}
	if n := as.fetches.Load(); n != 2 {
		t.Fatalf("%d token requests after the skew, want 2", n)
	}
}

// Two transports (two gateway replicas) on one real Redis use one token;
// after the EHR revokes it, the first refreshes and the second picks the
// new token from Redis instead of asking again.
func TestSharedTokenRedis(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	newCache := func() kap.Cache {
		c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{srv.Addr}})
		t.Cleanup(func() { c.Close() })
		return kapredis.New(c, kapredis.Options{}).Cache()
	}
	dir := t.TempDir()
	writeKey(t, dir, targetauth.RS384)
	ks, err := targetauth.LoadKeys(dir+"/*.pem", "", "")
	if err != nil {
		t.Fatal(err)
	}
	as := newAuthServer(t, "c1", jwksServer(t, ks).URL)
	cfg := config.TargetAuth{Type: "smart-backend", TokenURL: as.tokenURL(), ClientID: "c1", Scope: "system/*.rs", KeyFile: dir + "/*.pem"}
	a, err := targetauth.New(cfg, targetauth.Options{Target: "ehr", Cache: newCache(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := targetauth.New(cfg, targetauth.Options{Target: "ehr", Cache: newCache(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	url := as.srv.URL + "/fhir/Patient"
	for range 5 {
		if get(t, a, url) != 200 || get(t, b, url) != 200 {
			t.Fatal("request refused")
		}
	}
	if n := as.fetches.Load(); n != 1 {
		t.Fatalf("%d token requests for two replicas, want 1", n)
	}
	as.revokeAll()
	if getRefreshing(t, a, url) != 200 || getRefreshing(t, b, url) != 200 {
		t.Fatal("request refused after refresh")
	}
	if n := as.fetches.Load(); n != 2 {
		t.Fatalf("%d token requests after a revocation, want 2 (B takes A's new token from Redis)", n)
	}
	// A different scope is a different token.
	cfg2 := cfg
	cfg2.Scope = "system/Observation.rs"
	c, err := targetauth.New(cfg2, targetauth.Options{Target: "ehr", Cache: newCache(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	get(t, c, url)
	if n := as.fetches.Load(); n != 3 {
		t.Fatalf("%d token requests, want 3 (one per scope)", n)
	}
}

func TestTokenEndpointFaults(t *testing.T) {
	dir := t.TempDir()
	writeKey(t, dir, targetauth.ES384)
	ks, _ := targetauth.LoadKeys(dir+"/*.pem", "", "")
	as := newAuthServer(t, "c1", jwksServer(t, ks).URL)
	cfg := config.TargetAuth{Type: "smart-backend", TokenURL: as.tokenURL(), ClientID: "c1"}
	newRT := func(now func() time.Time) http.RoundTripper {
		rt, err := targetauth.New(cfg, targetauth.Options{Target: "ehr", Keys: ks, Now: now, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return rt
	}
	roundTrip := func(rt http.RoundTripper) error {
		req, _ := http.NewRequest(http.MethodGet, as.srv.URL+"/fhir/Patient?identifier=urn:mrn|SECRET-MRN", nil)
		resp, err := rt.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}

	t.Run("unavailable then recovered", func(t *testing.T) {
		as.setFail(func(w http.ResponseWriter) bool { w.WriteHeader(503); return true })
		rt := newRT(nil)
		err := roundTrip(rt)
		var te *targetauth.TokenError
		if !errors.As(err, &te) || te.Status != 503 || te.Permanent() {
			t.Fatalf("err = %v, want a transient TokenError with status 503", err)
		}
		as.setFail(nil)
		if err := roundTrip(rt); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	})
	t.Run("expired assertion refused", func(t *testing.T) {
		// A clock 10 minutes slow signs an assertion that expired.
		rt := newRT(func() time.Time { return time.Now().Add(-10 * time.Minute) })
		err := roundTrip(rt)
		var te *targetauth.TokenError
		if !errors.As(err, &te) || te.Status != 401 || te.Code != "invalid_client" || !te.Permanent() {
			t.Fatalf("err = %v, want a permanent invalid_client", err)
		}
		if strings.Contains(err.Error(), "SECRET-MRN") || strings.Contains(err.Error(), "eyJ") {
			t.Fatalf("error text leaks: %v", err)
		}
	})
	t.Run("key not published", func(t *testing.T) {
		other := t.TempDir()
		writeKey(t, other, targetauth.ES384)
		ks2, _ := targetauth.LoadKeys(other+"/*.pem", "", "")
		rt, err := targetauth.New(cfg, targetauth.Options{Target: "ehr", Keys: ks2, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		var te *targetauth.TokenError
		if err := roundTrip(rt); !errors.As(err, &te) || te.Code != "invalid_client" {
			t.Fatalf("err = %v, want invalid_client for a key the JWKS does not hold", err)
		}
	})
	t.Run("malformed response", func(t *testing.T) {
		as.setFail(func(w http.ResponseWriter) bool { io.WriteString(w, `{"token_type":"bearer"}`); return true })
		defer as.setFail(nil)
		var te *targetauth.TokenError
		if err := roundTrip(newRT(nil)); !errors.As(err, &te) || te.Code != "malformed_response" {
			t.Fatalf("err = %v, want malformed_response", err)
		}
	})
}

// Rotation by kid: publish the new key beside the old, switch the active
// kid, then retire the old key.
func TestKeyRotation(t *testing.T) {
	dir := t.TempDir()
	oldKID := writeKey(t, dir, targetauth.RS384)
	newKID := writeKey(t, dir, targetauth.ES384)
	glob := dir + "/*.pem"
	if _, err := targetauth.LoadKeys(glob, "", ""); err == nil || !strings.Contains(err.Error(), "keyId") {
		t.Fatalf("two keys without keyId: err = %v", err)
	}
	if _, err := targetauth.LoadKeys(glob, oldKID, "ES384"); err == nil || !strings.Contains(err.Error(), "alg") {
		t.Fatalf("alg mismatch: err = %v", err)
	}
	if _, err := targetauth.LoadKeys(dir+"/nothing-*.pem", "", ""); err == nil {
		t.Fatal("no match: no error")
	}
	before, err := targetauth.LoadKeys(glob, oldKID, "")
	if err != nil {
		t.Fatal(err)
	}
	after, err := targetauth.LoadKeys(glob, newKID, "")
	if err != nil {
		t.Fatal(err)
	}
	if byDir, err := targetauth.LoadKeys(dir, newKID, ""); err != nil || len(byDir.Keys()) != 2 {
		t.Fatalf("keyFile as a directory: %v", err)
	}
	if got := targetauth.PublicJWKS(before); len(got.Keys) != 2 {
		t.Fatalf("JWKS has %d keys, want both", len(got.Keys))
	}
	jw := jwksServer(t, before)
	as := newAuthServer(t, "c1", jw.URL)
	for _, ks := range []*targetauth.KeySet{before, after} {
		cfg := config.TargetAuth{Type: "smart-backend", TokenURL: as.tokenURL(), ClientID: "c1"}
		rt, err := targetauth.New(cfg, targetauth.Options{Target: "ehr", Keys: ks, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if st := get(t, rt, as.srv.URL+"/fhir/Patient"); st != 200 {
			t.Fatalf("kid %s: status %d", ks.Active().ID, st)
		}
	}
	if len(as.kids) != 2 || as.kids[0] != oldKID || as.kids[1] != newKID {
		t.Fatalf("signing kids %v, want [%s %s]", as.kids, oldKID, newKID)
	}
	// Retire the old key: it is no longer published and no longer verifies.
	os.Remove(filepath.Join(dir, oldKID+".pem"))
	retired, err := targetauth.LoadKeys(glob, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := targetauth.PublicJWKS(retired); len(got.Keys) != 1 || got.Keys[0].Kid != newKID {
		t.Fatalf("after retiring, JWKS = %+v", got)
	}
}

func TestBasic(t *testing.T) {
	as := newAuthServer(t, "clinic app", "")
	as.secret = "s3cr3t:with/odd&chars"
	env := map[string]string{"EHR_SECRET": as.secret}
	getenv := func(k string) string { return env[k] }
	// client_secret_basic form-urlencodes id and secret; the test server
	// decodes what net/http's BasicAuth gives it.
	as.clientID = "clinic+app"
	as.secret = "s3cr3t%3Awith%2Fodd%26chars"
	var logs bytes.Buffer
	cfg := config.TargetAuth{Type: "basic", TokenURL: as.tokenURL(), ClientID: "clinic app", SecretEnv: "EHR_SECRET"}
	rt, err := targetauth.New(cfg, targetauth.Options{Target: "payer", Getenv: getenv, Cache: boltCache(t, nil),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if st := get(t, rt, as.srv.URL+"/fhir/Patient"); st != 200 {
			t.Fatalf("status %d", st)
		}
	}
	if n := as.fetches.Load(); n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
	if strings.Contains(logs.String(), "s3cr3t") {
		t.Fatal("the client secret reached the log")
	}
	// smart-backend with a client secret instead of a key (SMART's
	// symmetric confidential client) authenticates the same way.
	smart := cfg
	smart.Type = "smart-backend"
	rt2, err := targetauth.New(smart, targetauth.Options{Target: "payer2", Getenv: getenv, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if st := get(t, rt2, as.srv.URL+"/fhir/Patient"); st != 200 || as.fetches.Load() != 2 {
		t.Fatalf("smart-backend with secretEnv: status %d, %d token requests", st, as.fetches.Load())
	}
	cfg.SecretEnv = "MISSING"
	if _, err := targetauth.New(cfg, targetauth.Options{Getenv: getenv}); err == nil || !strings.Contains(err.Error(), "secretEnv") {
		t.Fatalf("missing secret: err = %v", err)
	}
}

func TestBearerAndConfigErrors(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Get("Authorization") }))
	defer srv.Close()
	getenv := func(k string) string { return map[string]string{"TOK": "static-token-1"}[k] }
	rt, err := targetauth.New(config.TargetAuth{Type: "bearer", TokenEnv: "TOK"}, targetauth.Options{Getenv: getenv})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	get(t, rt, srv.URL)
	if got != "Bearer static-token-1" || req.Header.Get("Authorization") != "" {
		t.Fatalf("Authorization %q", got)
	}
	if _, ok := rt.(targetauth.Refresher); ok {
		t.Error("a static token claims to refresh")
	}
	for _, tc := range []struct {
		cfg  config.TargetAuth
		want []string
	}{
		{config.TargetAuth{Type: "bearer", TokenEnv: "NOPE"}, []string{"tokenEnv", "NOPE"}},
		{config.TargetAuth{Type: "smart-backend"}, []string{"tokenUrl", "clientId", "keyFile"}},
		{config.TargetAuth{Type: "smart-backend", TokenURL: "ftp://x", ClientID: "c", KeyFile: "/nonexistent/*.pem"}, []string{"tokenUrl", "keyFile"}},
		{config.TargetAuth{Type: "mtls"}, []string{"certFile"}},
		{config.TargetAuth{Type: "kerberos"}, []string{"auth.type"}},
		{config.TargetAuth{Type: "none", CAFile: "/nonexistent/ca.pem"}, []string{"caFile"}},
	} {
		_, err := targetauth.New(tc.cfg, targetauth.Options{Getenv: getenv})
		if err == nil {
			t.Errorf("%+v: no error", tc.cfg)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %q does not name %s", tc.cfg, err, w)
			}
		}
	}
}

func TestJWKSHandler(t *testing.T) {
	dir := t.TempDir()
	kid := writeKey(t, dir, targetauth.ES384)
	ks, _ := targetauth.LoadKeys(dir+"/*.pem", "", "")
	srv := jwksServer(t, ks, ks) // the same set twice: one key
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var set map[string][]map[string]any
	if err := json.Unmarshal(body, &set); err != nil || len(set["keys"]) != 1 {
		t.Fatalf("JWKS %s", body)
	}
	k := set["keys"][0]
	if k["kid"] != kid || k["kty"] != "EC" || k["crv"] != "P-384" || k["d"] != nil {
		t.Fatalf("JWK %v", k)
	}
	resp, _ = http.Post(srv.URL, "text/plain", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}
