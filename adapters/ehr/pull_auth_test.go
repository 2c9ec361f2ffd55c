package ehr_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ehr"
	"github.com/kapbridge/kap/adapters/ehr/ehrtest"
	"github.com/kapbridge/kap/adapters/httpclient"
	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/internal/config"
)

// smartGate is an EHR's authorization layer in front of the real FHIR
// server: a SMART Backend Services token endpoint that verifies the client
// assertion with the registered public key (signature, alg, iss/sub, aud,
// exp <= 5 min, jti replay), and a reverse proxy that passes only requests
// with a token it issued.
type smartGate struct {
	t        testing.TB
	srv      *httptest.Server
	clientID string
	keys     *targetauth.KeySet

	mu      sync.Mutex
	jtis    map[string]bool
	valid   map[string]bool
	issued  atomic.Int32
	refused atomic.Int32
}

func newSMARTGate(t testing.TB, upstream, clientID string, keys *targetauth.KeySet) *smartGate {
	g := &smartGate{t: t, clientID: clientID, keys: keys, jtis: map[string]bool{}, valid: map[string]bool{}}
	up, _ := url.Parse(upstream)
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(&url.URL{Scheme: up.Scheme, Host: up.Host})
		r.Out.Header.Del("Authorization")
	}}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			g.token(w, r)
			return
		}
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		g.mu.Lock()
		ok := g.valid[tok]
		g.mu.Unlock()
		if !ok {
			g.refused.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *smartGate) tokenURL() string { return g.srv.URL + "/token" }

func (g *smartGate) token(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(r.PostForm.Get("client_assertion"), claims, func(tk *jwt.Token) (any, error) {
		for _, k := range g.keys.Keys() {
			if k.ID == tk.Header["kid"] {
				return k.Signer.Public(), nil
			}
		}
		return nil, fmt.Errorf("unknown kid")
	}, jwt.WithValidMethods([]string{"ES384", "RS384"}), jwt.WithAudience(g.tokenURL()), jwt.WithIssuer(g.clientID),
		jwt.WithSubject(g.clientID), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	jti, _ := claims["jti"].(string)
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil || r.PostForm.Get("client_assertion_type") != targetauth.AssertionType || r.PostForm.Get("grant_type") != "client_credentials" ||
		iat == nil || exp.Sub(iat.Time) > 5*time.Minute || jti == "" || g.jtis[jti] {
		g.t.Logf("assertion refused: %v", err)
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"invalid_client"}`)
		return
	}
	g.jtis[jti] = true
	var b [16]byte
	rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	g.valid[tok] = true
	g.issued.Add(1)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "bearer", "expires_in": 300,
		"scope": r.PostForm.Get("scope")})
}

func (g *smartGate) revokeAll() {
	g.mu.Lock()
	g.valid = map[string]bool{}
	g.mu.Unlock()
}

// The gateway delivers to and reads from an EHR that demands SMART Backend
// Services tokens: H5's Sender (through adapters/httpclient) and the
// screening pull share one targetauth transport; one token serves both, and
// after the EHR drops its tokens each asks for a new one once.
func TestSMARTBackendDeliverAndPull(t *testing.T) {
	if testing.Short() {
		t.Skip("the Medplum FHIR test server is skipped under -short")
	}
	srv := ehrtest.Start(t, ehrtest.Options{})
	k, err := targetauth.GenerateKey(targetauth.ES384)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := targetauth.NewKeySet([]targetauth.Key{k}, "", "")
	gate := newSMARTGate(t, srv.URL, "kapbridge-test", keys)
	base := gate.srv.URL + strings.TrimPrefix(srv.URL, "http://"+srv.Addr)
	cache := boltCache(t)
	rt, err := targetauth.New(config.TargetAuth{Type: "smart-backend", TokenURL: gate.tokenURL(), ClientID: "kapbridge-test",
		Scope: "system/Patient.cruds system/Provenance.cu system/MedicationStatement.rs"},
		targetauth.Options{Target: "ehr-a", Keys: keys, Cache: cache, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	sender, err := ehr.New(ehr.Options{Name: "ehr-a", BaseURL: base, ProfileName: "generic", Transport: rt, Cache: cache,
		HTTP: httpclient.Options{RetryMax: 1, BackoffBase: time.Millisecond, BackoffMax: 2 * time.Millisecond, MaxWait: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile(filepath.Join("..", "..", "testdata", "fhir", "10-client-c001.json"))
	if err != nil {
		t.Fatal(err)
	}
	msg := kap.OutboxMessage{ID: "Client/c001/1", Tenant: "demo", Target: "ehr-a", ClientID: "c001", Kind: "Client",
		RecordID: "c001", Version: 1, Bundle: bundle}
	ctx := context.Background()
	if _, err := sender.Send(ctx, msg); err != nil {
		t.Fatalf("Send: %v", err)
	}
	p := newPuller(t, ehr.PullOptions{Cache: cache, Tenant: "demo", Target: "ehr-a"})
	client := &http.Client{Transport: rt, Timeout: 30 * time.Second}
	const ident = "https://fhir.kapbridge.org/sid/demo/Patient|c001"
	sc, err := p.Pull(ctx, client, base, ident)
	if err != nil || !sc.Complete() {
		t.Fatalf("Pull: %v %v", err, sc)
	}
	if n := gate.issued.Load(); n != 1 {
		t.Fatalf("%d tokens for a delivery and a pull, want 1", n)
	}

	gate.revokeAll()
	if _, err := sender.Send(ctx, msg); err != nil {
		t.Fatalf("Send after revocation: %v", err)
	}
	if _, err := p.Pull(ctx, client, base, ident); err != nil {
		t.Fatalf("Pull after revocation: %v", err)
	}
	if n, r := gate.issued.Load(), gate.refused.Load(); n != 2 || r != 1 {
		t.Fatalf("%d tokens and %d refusals after a revocation, want 2 and 1", n, r)
	}
	if c := srv.Count("Patient", "https://fhir.kapbridge.org/sid/demo/Patient", "c001"); c != 1 {
		t.Fatalf("%d Patients after two deliveries, want 1", c)
	}
}
