// Package config is kapbridge's configuration: tenants and their API keys,
// token issuers, delivery targets and their auth, loaded from a YAML or JSON
// file (KAPBRIDGE_CONFIG) and overridden by environment variables and flags.
// Load validates everything at once and reports every problem it found.
package config

import "time"

// Config is the whole configuration of a gateway process.
type Config struct {
	Addr     string `json:"addr,omitempty"`     // KAPBRIDGE_ADDR; default 127.0.0.1:8080
	DataDir  string `json:"dataDir,omitempty"`  // KAPBRIDGE_DATA_DIR; default ./kapbridge-data
	RedisURL string `json:"redisUrl,omitempty"` // KAPBRIDGE_REDIS_URL; empty = embedded bbolt store
	// Role is api, worker or all (default all).
	Role    string   `json:"role,omitempty"`
	Tenants []Tenant `json:"tenants,omitempty"`
	Targets []Target `json:"targets,omitempty"`
	Issuers []Issuer `json:"issuers,omitempty"`
	// JWKSPath is where the gateway serves its own public keys for SMART
	// Backend Services (default /.well-known/jwks.json).
	JWKSPath string `json:"jwksPath,omitempty"`
	// OTelEndpoint enables OpenTelemetry tracing to an OTLP/HTTP endpoint.
	OTelEndpoint string `json:"otelEndpoint,omitempty"`
	// RequestTimeout bounds each API request (default 30s).
	RequestTimeout Duration `json:"requestTimeout,omitempty"`
}

// Tenant is one clinic.
type Tenant struct {
	Name string `json:"name"`
	// APIKeys are the clinic systems' keys, stored as SHA-256 hex hashes.
	APIKeys []APIKey `json:"apiKeys,omitempty"`
	// Targets are the names of the targets this tenant's records go to
	// (subject to each client's consent for non-default targets).
	Targets []string `json:"targets,omitempty"`
	// IdentifierBase is the base of the business-identifier systems
	// (default https://fhir.kapbridge.org/id/<tenant>).
	IdentifierBase string     `json:"identifierBase,omitempty"`
	ClinicName     string     `json:"clinicName,omitempty"`
	RateLimit      *RateLimit `json:"rateLimit,omitempty"`
	// InboundPatientSystem is the EHR's patient identifier system (e.g. its
	// MRN system, an absolute URI such as urn:oid:...) whose value keys a
	// Patient the FHIR facade receives to a client; the tenant's own
	// Patient system is always accepted too.
	InboundPatientSystem string `json:"inboundPatientSystem,omitempty"`
	// Bootstrap: the key in <dataDir>/bootstrap-api-key (generated on
	// first start, mode 0600) is also a key of this tenant. The implicit
	// default tenant has it.
	Bootstrap bool `json:"bootstrap,omitempty"`
}

// APIKey is one hashed API key of a tenant.
type APIKey struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"` // hex SHA-256 of the key
	// Scopes are SMART v2 scopes granted to the key; empty = system/*.cruds.
	Scopes []string `json:"scopes,omitempty"`
	Admin  bool     `json:"admin,omitempty"` // may use /admin
}

// RateLimit is a token bucket per credential.
type RateLimit struct {
	PerSecond float64 `json:"perSecond"`
	Burst     int     `json:"burst"`
}

// Issuer is an OAuth 2.0 issuer whose bearer JWTs the gateway accepts.
type Issuer struct {
	Issuer   string   `json:"issuer"`
	JWKSURL  string   `json:"jwksUrl,omitempty"`
	KeyFiles []string `json:"keyFiles,omitempty"` // PEM public keys (static)
	Audience string   `json:"audience"`
	// Tenant is the tenant every token of this issuer belongs to, or
	// TenantClaim names the claim that carries it.
	Tenant      string `json:"tenant,omitempty"`
	TenantClaim string `json:"tenantClaim,omitempty"`
}

// Target is a delivery target.
type Target struct {
	Name string `json:"name"`
	// Type is "fhir" (an EHR or payer FHIR R4 endpoint) or "ndjson" (a
	// folder of NDJSON files).
	Type    string `json:"type"`
	BaseURL string `json:"baseUrl,omitempty"` // fhir
	Dir     string `json:"dir,omitempty"`     // ndjson
	// Profile names the write profile (generic, epic, oracle-health) or a
	// file with one.
	Profile string `json:"profile,omitempty"`
	// Kind is "ehr" or "payer"; it matches Consent share grants' type.
	Kind string     `json:"kind,omitempty"`
	Auth TargetAuth `json:"auth,omitempty"`
	// AttemptTimeout bounds one HTTP attempt; TotalTimeout one Send.
	AttemptTimeout Duration `json:"attemptTimeout,omitempty"`
	TotalTimeout   Duration `json:"totalTimeout,omitempty"`
	MaxAttempts    int      `json:"maxAttempts,omitempty"` // outbox attempts before dead-lettering
	Concurrency    int      `json:"concurrency,omitempty"` // messages in flight per worker
	// RequireConsent: records go to this target only when the client's
	// active consent has a share grant naming it (default true for fhir).
	RequireConsent *bool `json:"requireConsent,omitempty"`
}

// TargetAuth is how the gateway authenticates to a target.
type TargetAuth struct {
	// Type is none, bearer, basic, smart-backend or mtls.
	Type     string `json:"type,omitempty"`
	TokenURL string `json:"tokenUrl,omitempty"`
	ClientID string `json:"clientId,omitempty"`
	Scope    string `json:"scope,omitempty"`
	// SecretEnv / TokenEnv name environment variables holding the client
	// secret or the static bearer token (secrets never sit in the file).
	SecretEnv string `json:"secretEnv,omitempty"`
	TokenEnv  string `json:"tokenEnv,omitempty"`
	// KeyFile is the PEM private key for private_key_jwt (RS384 or ES384),
	// KeyID its kid, Alg RS384 or ES384.
	KeyFile string `json:"keyFile,omitempty"`
	KeyID   string `json:"keyId,omitempty"`
	Alg     string `json:"alg,omitempty"`
	// mTLS client certificate and CA.
	CertFile    string `json:"certFile,omitempty"`
	CertKeyFile string `json:"certKeyFile,omitempty"`
	CAFile      string `json:"caFile,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration time.Duration
