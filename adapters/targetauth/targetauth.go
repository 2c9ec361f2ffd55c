// Package targetauth authenticates the gateway to its delivery targets and
// the EHRs it reads from. New turns a target's config.TargetAuth into an
// http.RoundTripper:
//
//   - none: the base transport as it is;
//   - bearer: a static token from an environment variable;
//   - basic: OAuth 2.0 client_credentials with the client secret in HTTP
//     Basic (client_secret_basic);
//   - smart-backend: SMART Backend Services, client_credentials with a
//     private_key_jwt client assertion signed RS384 or ES384 (golang-jwt);
//   - mtls: a TLS client certificate (CertFile/CertKeyFile) and CA.
//
// CAFile (and a client certificate) apply to every type, so a token-based
// target behind a private CA works too. Access tokens are cached in the
// shared kap.Cache (Redis or bbolt) under a key per target, client and
// scope, until shortly before they expire, so every gateway replica and
// worker uses one token. Transports that hold a token implement
// Refresher: after a 401 the caller asks for a new token once and retries.
// No token, secret or assertion is ever logged or put in an error.
package targetauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/internal/config"
)

// Auth types (config.TargetAuth.Type).
const (
	TypeNone         = "none"
	TypeBearer       = "bearer"
	TypeBasic        = "basic"
	TypeSMARTBackend = "smart-backend"
	TypeMTLS         = "mtls"
)

// Refresher is implemented by the transports that hold an access token.
// Refresh drops the token and gets a new one; call it once after a target
// answered 401 Unauthorized, then retry the request once.
type Refresher interface {
	Refresh(ctx context.Context) error
}

// Options are what New needs besides the target's auth config.
type Options struct {
	// Cache is the shared token cache (Store.Cache()). nil keeps tokens in
	// this process only.
	Cache kap.Cache
	// Target is the target's name; tokens are cached per target.
	Target string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Base carries the requests (and the token requests); nil means a
	// clone of http.DefaultTransport. For mtls, or when CAFile is set,
	// Base must be nil or an *http.Transport (it is cloned).
	Base http.RoundTripper
	// Getenv reads the secret and token environment variables; nil means
	// os.Getenv.
	Getenv func(string) string
	// Keys is the key set for smart-backend; nil loads cfg.KeyFile.
	Keys *KeySet
	// Logger receives token fetches (target, status, lifetime; never the
	// token); nil means slog.Default().
	Logger *slog.Logger
	// Skew is how long before expiry a token is replaced; default 60s (at
	// most a quarter of the token's lifetime).
	Skew time.Duration
	// TokenTimeout bounds one token request; default 30s.
	TokenTimeout time.Duration
}

// New returns the transport that authenticates requests to the target as
// cfg says. Returns EINVALID naming the field when the config is
// incomplete or a file or environment variable is missing.
func New(cfg config.TargetAuth, opts Options) (http.RoundTripper, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Skew <= 0 {
		opts.Skew = 60 * time.Second
	}
	if opts.TokenTimeout <= 0 {
		opts.TokenTimeout = 30 * time.Second
	}
	base, err := baseTransport(cfg, opts.Base)
	if err != nil {
		return nil, err
	}
	switch cfg.Type {
	case "", TypeNone:
		return base, nil
	case TypeMTLS:
		if cfg.CertFile == "" || cfg.CertKeyFile == "" {
			return nil, kap.Errorf(kap.EINVALID, "auth.certFile and auth.certKeyFile are required for mtls")
		}
		return base, nil
	case TypeBearer:
		if cfg.TokenEnv == "" {
			return nil, kap.Errorf(kap.EINVALID, "auth.tokenEnv is required for bearer")
		}
		tok := opts.Getenv(cfg.TokenEnv)
		if tok == "" {
			return nil, kap.Errorf(kap.EINVALID, "auth.tokenEnv: the environment variable %s is not set", cfg.TokenEnv)
		}
		return &bearer{base: base, header: "Bearer " + tok}, nil
	case TypeBasic, TypeSMARTBackend:
		return newOAuth(cfg, opts, base)
	}
	return nil, kap.Errorf(kap.EINVALID, "auth.type: must be none, bearer, basic, smart-backend or mtls")
}

// baseTransport clones the base with the TLS settings of cfg, if any.
func baseTransport(cfg config.TargetAuth, base http.RoundTripper) (http.RoundTripper, error) {
	if cfg.CAFile == "" && cfg.CertFile == "" && cfg.CertKeyFile == "" {
		if base == nil {
			return http.DefaultTransport.(*http.Transport).Clone(), nil
		}
		return base, nil
	}
	var t *http.Transport
	switch b := base.(type) {
	case nil:
		t = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		t = b.Clone()
	default:
		return nil, kap.Errorf(kap.EINVALID, "auth: TLS settings need an *http.Transport as the base transport")
	}
	tc, err := TLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	if t.TLSClientConfig != nil {
		tc.InsecureSkipVerify = t.TLSClientConfig.InsecureSkipVerify
	}
	t.TLSClientConfig = tc
	return t, nil
}

// TLSConfig returns the client TLS settings of cfg: the client certificate
// (CertFile and CertKeyFile, PEM) and the CAs that verify the target
// (CAFile, PEM; the system roots when empty). TLS 1.2 at least.
func TLSConfig(cfg config.TargetAuth) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if (cfg.CertFile == "") != (cfg.CertKeyFile == "") {
		return nil, kap.Errorf(kap.EINVALID, "auth.certFile and auth.certKeyFile go together")
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.CertKeyFile)
		if err != nil {
			return nil, &kap.Error{Code: kap.EINVALID, Message: "auth.certFile: cannot load the client certificate " +
				filepath.Base(cfg.CertFile) + " with its key", Err: err}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if cfg.CAFile != "" {
		pemData, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, &kap.Error{Code: kap.EINVALID, Message: "auth.caFile: cannot read " + filepath.Base(cfg.CAFile), Err: err}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, kap.Errorf(kap.EINVALID, "auth.caFile: %s holds no PEM certificate", filepath.Base(cfg.CAFile))
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// bearer adds a static token.
type bearer struct {
	base   http.RoundTripper
	header string
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r2 := r.Clone(r.Context())
	r2.Header.Set("Authorization", b.header)
	return b.base.RoundTrip(r2)
}

// KeySetsFromConfig loads the key sets of every smart-backend target, for
// the JWKS the gateway publishes (JWKSHandler). Returns the first error.
func KeySetsFromConfig(targets []config.Target) ([]*KeySet, error) {
	var out []*KeySet
	for _, t := range targets {
		if t.Auth.Type != TypeSMARTBackend {
			continue
		}
		ks, err := LoadKeys(t.Auth.KeyFile, t.Auth.KeyID, t.Auth.Alg)
		if err != nil {
			return nil, &kap.Error{Code: kap.EINVALID, Message: "targets " + t.Name + ": " + err.Error(), Err: err}
		}
		out = append(out, ks)
	}
	return out, nil
}
