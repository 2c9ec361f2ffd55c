package httpapi

// Inbound authentication: API keys (X-API-Key, SHA-256 hashes compared in
// constant time) and OAuth 2.0 bearer JWTs from configured issuers (JWKS
// fetched and refreshed by keyfunc, or static PEM keys). Every request that
// passes resolves to exactly one tenant and one credential name; the
// credential's SMART scopes are checked per route by authorize (scope.go).

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/internal/config"
	"github.com/kapbridge/kap/mapping"
)

// Context keys of the authenticated principal.
const (
	ctxCredential = "kap.credential" // the credential's name, never the secret
	ctxPrincipal  = "kap.principal"  // *principal
)

// TokenAlgorithms are the JWS algorithms accepted on bearer tokens. None and
// the HMAC algorithms are never accepted: the gateway holds only public keys.
var TokenAlgorithms = []string{"RS256", "RS384", "ES256", "ES384"}

// TokenLeeway is the clock skew allowed on exp, nbf and iat.
const TokenLeeway = 30 * time.Second

// principal is who a request authenticated as.
type principal struct {
	Tenant     string
	Credential string // "key:<name>" or "jwt:<client>"
	Method     string // "api-key" or "bearer"
	Scopes     config.Scopes
}

// apiKey is one configured API key.
type apiKey struct {
	tenant, name string
	hash         [sha256.Size]byte
	scopes       config.Scopes
}

// tokenIssuer verifies the bearer tokens of one configured issuer.
type tokenIssuer struct {
	cfg    config.Issuer
	parser *jwt.Parser
	keys   func(ctx context.Context) jwt.Keyfunc
}

// authn holds the credentials of every tenant.
type authn struct {
	keys    []apiKey
	issuers map[string]*tokenIssuer
	tenants map[string]bool
}

// allScopes is what a key without configured scopes holds.
var allScopes = config.Scopes{{Context: "system", Type: "*", Perms: config.PermAll}}

// newAuthn builds the credentials from the configuration. It starts the
// JWKS refresh of every issuer with a jwksUrl, which ends with ctx.
func newAuthn(ctx context.Context, cfg Config, log *slog.Logger) (*authn, error) {
	a := &authn{issuers: map[string]*tokenIssuer{}, tenants: map[string]bool{}}
	add := func(tenant, name, hexHash string, scopes []string) error {
		b, err := hex.DecodeString(strings.ToLower(hexHash))
		if err != nil || len(b) != sha256.Size {
			return fmt.Errorf("tenant %s key %s: the sha256 must be 64 hex characters", tenant, name)
		}
		k := apiKey{tenant: tenant, name: name, scopes: allScopes}
		copy(k.hash[:], b)
		if len(scopes) > 0 {
			k.scopes = nil
			for _, s := range scopes {
				sc, err := config.ParseScope(s)
				if err != nil {
					return fmt.Errorf("tenant %s key %s: %w", tenant, name, err)
				}
				k.scopes = append(k.scopes, sc)
			}
		}
		for _, o := range a.keys {
			if o.hash == k.hash {
				return fmt.Errorf("tenant %s key %s: the same key is configured twice", tenant, name)
			}
		}
		a.keys = append(a.keys, k)
		return nil
	}
	for _, t := range cfg.Tenants {
		a.tenants[t.Name] = true
		for _, k := range t.APIKeys {
			if err := add(t.Name, k.Name, k.SHA256, k.Scopes); err != nil {
				return nil, err
			}
		}
	}
	for h, tenant := range cfg.Keys {
		a.tenants[tenant] = true
		if err := add(tenant, "key-"+h[:min(8, len(h))], h, nil); err != nil {
			return nil, err
		}
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	for _, is := range cfg.Issuers {
		ti, err := newTokenIssuer(ctx, is, client, cfg.Now, log)
		if err != nil {
			return nil, err
		}
		if is.Tenant != "" {
			a.tenants[is.Tenant] = true
		}
		a.issuers[is.Issuer] = ti
	}
	return a, nil
}

func newTokenIssuer(ctx context.Context, is config.Issuer, client *http.Client, now func() time.Time, log *slog.Logger) (*tokenIssuer, error) {
	ti := &tokenIssuer{cfg: is, parser: jwt.NewParser(
		jwt.WithValidMethods(TokenAlgorithms),
		jwt.WithIssuer(is.Issuer),
		jwt.WithAudience(is.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(TokenLeeway),
		jwt.WithTimeFunc(now),
	)}
	var static []jwt.VerificationKey
	for _, f := range is.KeyFiles {
		keys, err := readPublicKeys(f)
		if err != nil {
			return nil, fmt.Errorf("issuer %s: %w", is.Issuer, err)
		}
		static = append(static, keys...)
	}
	var remote keyfunc.Keyfunc
	if is.JWKSURL != "" {
		u := is.JWKSURL
		kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{u}, keyfunc.Override{
			Client:           client,
			HTTPTimeout:      10 * time.Second,
			RefreshInterval:  time.Hour,
			RateLimitWaitMax: 2 * time.Second,
			// A token signed with an unknown kid refetches the JWKS (key
			// rotation), at most once a minute.
			RefreshUnknownKID: rate.NewLimiter(rate.Every(time.Minute), 1),
			RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
				return func(ctx context.Context, err error) {
					log.Warn("cannot refresh an issuer's JWKS", "issuer", is.Issuer, "error_type", fmt.Sprintf("%T", err))
				}
			},
		})
		if err != nil {
			return nil, fmt.Errorf("issuer %s: %w", is.Issuer, err)
		}
		remote = kf
	}
	ti.keys = func(ctx context.Context) jwt.Keyfunc {
		return func(t *jwt.Token) (any, error) {
			if remote != nil {
				k, err := remote.KeyfuncCtx(ctx)(t)
				if err == nil || len(static) == 0 {
					return k, err
				}
			}
			return jwt.VerificationKeySet{Keys: static}, nil
		}
	}
	return ti, nil
}

// readPublicKeys reads the RSA and EC public keys (PUBLIC KEY, RSA PUBLIC
// KEY or CERTIFICATE blocks) of a PEM file.
func readPublicKeys(path string) ([]jwt.VerificationKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []jwt.VerificationKey
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		var pub any
		switch b.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(b.Bytes); err == nil {
				pub = cert.PublicKey
			}
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		switch pub.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey:
			keys = append(keys, pub)
		default:
			return nil, fmt.Errorf("%s: only RSA and EC public keys are accepted", path)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s holds no PEM public key", path)
	}
	return keys, nil
}

// wwwAuthenticate is the challenge of every 401.
func wwwAuthenticate(errCode, desc string) string {
	v := `Bearer realm="kapbridge"`
	if errCode != "" {
		v += `, error="` + errCode + `"`
	}
	if desc != "" {
		v += `, error_description="` + strings.ReplaceAll(desc, `"`, `'`) + `"`
	}
	return v
}

// unauthorized answers 401 with a WWW-Authenticate challenge.
func (s *server) unauthorized(c *gin.Context, errCode, msg string) {
	c.Header("WWW-Authenticate", wwwAuthenticate(errCode, msg))
	s.fail(c, kap.Errorf(kap.EUNAUTHORIZED, "%s", msg))
	c.Abort()
}

// auth authenticates the request by its X-API-Key or its bearer token and
// resolves it to one tenant (401 otherwise).
func (s *server) auth(c *gin.Context) {
	key := strings.TrimSpace(c.GetHeader(HeaderAPIKey))
	authz := strings.TrimSpace(c.GetHeader("Authorization"))
	var p *principal
	switch {
	case key != "" && authz != "":
		s.unauthorized(c, "invalid_request", "send either an X-API-Key header or an Authorization header, not both")
		return
	case key != "":
		p = s.authn.apiKey(key)
		if p == nil {
			s.unauthorized(c, "", "the API key is not valid")
			return
		}
	case authz != "":
		scheme, raw, _ := strings.Cut(authz, " ")
		raw = strings.TrimSpace(raw)
		if !strings.EqualFold(scheme, "Bearer") || raw == "" {
			s.unauthorized(c, "invalid_request", "the Authorization header must be Bearer <token>")
			return
		}
		var err error
		if p, err = s.authn.bearer(c.Request.Context(), raw); err != nil {
			if kap.ErrorCode(err) == kap.EFORBIDDEN {
				s.fail(c, err)
				c.Abort()
				return
			}
			s.unauthorized(c, "invalid_token", kap.ErrorMessage(err))
			return
		}
	default:
		s.unauthorized(c, "", "the X-API-Key header or an Authorization: Bearer token is required")
		return
	}
	if s.mappers[p.Tenant] == nil {
		// A tenant from a token claim that is not configured.
		s.fail(c, kap.Errorf(kap.EFORBIDDEN, "the token's tenant is not served by this gateway"))
		c.Abort()
		return
	}
	c.Set(ctxTenant, p.Tenant)
	c.Set(ctxCredential, p.Credential)
	c.Set(ctxPrincipal, p)
	c.Next()
}

// apiKey returns the principal of key, or nil. Every configured hash is
// compared, in constant time, whichever matches.
func (a *authn) apiKey(key string) *principal {
	sum := sha256.Sum256([]byte(key))
	match := -1
	for i := range a.keys {
		if subtle.ConstantTimeCompare(sum[:], a.keys[i].hash[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return nil
	}
	k := a.keys[match]
	return &principal{Tenant: k.tenant, Credential: "key:" + k.name, Method: "api-key", Scopes: k.scopes}
}

// tokenClaims are the claims read from a bearer token.
type tokenClaims struct {
	jwt.RegisteredClaims
	Scope string `json:"scope,omitempty"`
	// scp is a list (Okta) or a space-separated string (Entra ID).
	SCP      jwt.ClaimStrings `json:"scp,omitempty"`
	ClientID string           `json:"client_id,omitempty"`
	AZP      string           `json:"azp,omitempty"`
}

// bearer verifies a JWT: an accepted algorithm, a signature by the issuer's
// key, iss, aud, exp (required) and nbf (with TokenLeeway). EUNAUTHORIZED
// when it is not valid, EFORBIDDEN when it is but names no tenant.
func (a *authn) bearer(ctx context.Context, raw string) (*principal, error) {
	if len(a.issuers) == 0 {
		return nil, kap.Errorf(kap.EUNAUTHORIZED, "bearer tokens are not accepted: no issuer is configured")
	}
	if len(raw) > 16<<10 {
		return nil, kap.Errorf(kap.EUNAUTHORIZED, "the token is too long")
	}
	peek := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(raw, peek); err != nil {
		return nil, kap.Errorf(kap.EUNAUTHORIZED, "the token is not a JWT")
	}
	iss, _ := peek["iss"].(string)
	ti := a.issuers[iss]
	if ti == nil {
		return nil, kap.Errorf(kap.EUNAUTHORIZED, "the token's issuer is not accepted")
	}
	var claims tokenClaims
	if _, err := ti.parser.ParseWithClaims(raw, &claims, ti.keys(ctx)); err != nil {
		return nil, kap.Errorf(kap.EUNAUTHORIZED, "the token is not valid: %s", tokenReason(err))
	}
	tenant := ti.cfg.Tenant
	if ti.cfg.TenantClaim != "" {
		tenant, _ = peek[ti.cfg.TenantClaim].(string)
		if tenant == "" || kap.ValidateName("tenant", tenant) != nil {
			return nil, kap.Errorf(kap.EFORBIDDEN, "the token carries no valid %s claim", ti.cfg.TenantClaim)
		}
	}
	who := claims.ClientID
	if who == "" {
		who = claims.AZP
	}
	if who == "" {
		who = claims.Subject
	}
	return &principal{Tenant: tenant, Credential: "jwt:" + credentialName(who), Method: "bearer",
		Scopes: config.ParseScopes(append([]string{claims.Scope}, claims.SCP...)...)}, nil
}

// credentialName makes a client id safe to log: itself when it is short and
// plain, else a hash of it.
func credentialName(v string) string {
	if safeID(v) {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return "sha256-" + hex.EncodeToString(sum[:8])
}

// tokenReason says why a token failed, without quoting it.
func tokenReason(err error) string {
	if strings.Contains(err.Error(), "signing method") {
		return "the algorithm is not accepted (RS256, RS384, ES256 or ES384)"
	}
	for _, r := range []struct {
		err error
		msg string
	}{
		{jwt.ErrTokenExpired, "it has expired"},
		{jwt.ErrTokenNotValidYet, "it is not valid yet (nbf)"},
		{jwt.ErrTokenUsedBeforeIssued, "it was issued in the future (iat)"},
		{jwt.ErrTokenInvalidAudience, "the audience (aud) is not this gateway"},
		{jwt.ErrTokenInvalidIssuer, "the issuer (iss) is not accepted"},
		{jwt.ErrTokenRequiredClaimMissing, "a required claim (exp, aud or iss) is missing"},
		{jwt.ErrTokenSignatureInvalid, "the signature does not verify"},
		{jwt.ErrTokenMalformed, "it is malformed"},
	} {
		if errors.Is(err, r.err) {
			return r.msg
		}
	}
	if errors.Is(err, jwt.ErrTokenUnverifiable) {
		return "no key of the issuer verifies it"
	}
	return "it cannot be verified"
}

// setupSecurity builds the credentials, rate limits and audit sink from the
// configuration, and a mapper for every configured tenant.
func (s *server) setupSecurity() error {
	cfg := &s.cfg
	if cfg.MaxJSONDepth <= 0 {
		cfg.MaxJSONDepth = DefaultMaxJSONDepth
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = config.DefaultRequestTimeout
	}
	ctx := cfg.Context
	if ctx == nil {
		ctx = context.Background()
	}
	a, err := newAuthn(ctx, *cfg, s.log)
	if err != nil {
		return fmt.Errorf("httpapi: %w", err)
	}
	s.authn = a
	for _, t := range cfg.Tenants {
		if err := kap.ValidateName("tenant", t.Name); err != nil {
			return fmt.Errorf("httpapi: %w", err)
		}
		s.mappers[t.Name] = mapping.New(cfg.Codec, mapping.Options{Tenant: t.Name,
			IdentifierBase: t.IdentifierBase, ClinicName: t.ClinicName, Now: cfg.Now})
	}
	for tenant := range a.tenants {
		if s.mappers[tenant] == nil {
			s.mappers[tenant] = mapping.New(cfg.Codec, mapping.Options{Tenant: tenant, Now: cfg.Now})
		}
	}
	s.limits = tenantLimits(cfg.Tenants)
	if cfg.Audit != nil {
		s.auditor = &auditor{w: cfg.Audit, now: cfg.Now}
	}
	return nil
}

// guard is the middleware of every route that reaches tenant data, in
// order: the audit event (written after the answer, so refused attempts are
// audited too), authentication, the rate limit, the scope check.
func (s *server) guard() []gin.HandlerFunc {
	return []gin.HandlerFunc{s.audit, s.auth, s.rateLimit, s.authorize}
}
