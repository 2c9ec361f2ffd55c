package httpapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kapbridge/kap/internal/config"
)

// BenchmarkAPIKey is one API-key check against 100 configured keys (every
// hash is compared, in constant time).
func BenchmarkAPIKey(b *testing.B) {
	var ts []config.Tenant
	for i := range 100 {
		ts = append(ts, config.Tenant{Name: fmt.Sprintf("t%d", i), APIKeys: []config.APIKey{{Name: "k", SHA256: HashKey(fmt.Sprintf("key-%d", i))}}})
	}
	a, err := newAuthn(context.Background(), Config{Tenants: ts, Now: time.Now}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if a.apiKey("key-57") == nil {
			b.Fatal("no match")
		}
	}
}

func benchBearer(b *testing.B, method jwt.SigningMethod, priv any, pub any) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		b.Fatal(err)
	}
	f := filepath.Join(b.TempDir(), "k.pem")
	os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
	a, err := newAuthn(context.Background(), Config{Now: time.Now, Tenants: []config.Tenant{{Name: "t"}},
		Issuers: []config.Issuer{{Issuer: "https://idp", KeyFiles: []string{f}, Audience: "aud", Tenant: "t"}}},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	tok, err := jwt.NewWithClaims(method, jwt.MapClaims{"iss": "https://idp", "aud": "aud", "client_id": "c",
		"exp": time.Now().Add(time.Hour).Unix(), "scope": "system/*.cruds"}).SignedString(priv)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := a.bearer(context.Background(), tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBearerRS256 verifies one RS256 token (2048-bit key).
func BenchmarkBearerRS256(b *testing.B) {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	benchBearer(b, jwt.SigningMethodRS256, k, &k.PublicKey)
}

// BenchmarkBearerES256 verifies one ES256 token.
func BenchmarkBearerES256(b *testing.B) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	benchBearer(b, jwt.SigningMethodES256, k, &k.PublicKey)
}

// BenchmarkJSONDepth scans a 1 MiB body for its nesting depth.
func BenchmarkJSONDepth(b *testing.B) {
	body := []byte(`{"a":[` + strings.Repeat(`{"k":"v [x] {y}","n":[1,2,3]},`, 1<<20/32) + `{}]}`)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if jsonDepth(body) != 4 {
			b.Fatal(jsonDepth(body))
		}
	}
}
