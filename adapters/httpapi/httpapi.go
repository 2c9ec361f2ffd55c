// Package httpapi is the gateway's HTTP API on gin: the kap/v1 record routes,
// $map, the FHIR $validate operation, health checks, and the middleware every
// route shares (request id, PHI-safe access log, panic recovery, body-size
// limit, API-key authentication). It is the only package that imports gin.
//
// Every error is a FHIR OperationOutcome (application/fhir+json); kap error
// codes map to HTTP statuses in one table (statusOf).
package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/conformance"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
	"github.com/kapbridge/kap/internal/metrics"
	"github.com/kapbridge/kap/mapping"
	"go.opentelemetry.io/otel/trace"
)

// DefaultTarget is the delivery target new record versions are queued for
// when Config.Targets is empty.
const DefaultTarget = "ndjson"

// Config configures the handler.
type Config struct {
	// Store is the durable state layer (required).
	Store kap.Store
	// Codec is the FHIR codec (required).
	Codec *fhir.Codec
	// Keys maps HashKey(apiKey) to the tenant the key belongs to (keys
	// with every scope and no name; Tenants is the full form).
	Keys map[string]string
	// Tenants are the configured tenants: their API keys (hashes, names,
	// scopes), rate limits and mapping options (auth.go).
	Tenants []config.Tenant
	// Issuers are the OAuth 2.0 issuers whose bearer JWTs are accepted.
	Issuers []config.Issuer
	// HTTPClient fetches the issuers' JWKS; nil means a client with a 10 s
	// timeout.
	HTTPClient *http.Client
	// Context ends background work (the JWKS refresh); nil means never.
	Context context.Context
	// Audit receives one AuditEvent JSON line per kap/v1 and /fhir/r4
	// request (audit.go); nil means no audit trail. Never the log.
	Audit io.Writer
	// RequestTimeout bounds each request (503 when it passes); default
	// 30 s, negative means none.
	RequestTimeout time.Duration
	// MaxJSONDepth bounds the nesting of JSON bodies; default
	// DefaultMaxJSONDepth.
	MaxJSONDepth int
	// Logger receives the access log; nil means slog.Default().
	Logger *slog.Logger
	// MaxBodyBytes bounds request bodies; default kap.MaxRecordBytes.
	MaxBodyBytes int64
	// Targets are the delivery targets every new record version is queued
	// for; default [DefaultTarget].
	Targets []string
	// TenantTargets are each tenant's delivery targets and their consent
	// rule (see TargetPolicy). A tenant not listed gets Targets, none of
	// which requires consent.
	TenantTargets map[string][]TargetPolicy
	// Metrics receives the HTTP, mapping and validation metrics and is
	// served at GET /metrics; nil means metrics.New().
	Metrics *metrics.Metrics
	// MetricsToken, when set, is the bearer token GET /metrics demands;
	// empty serves it without authentication (bind to loopback).
	MetricsToken string
	// TracerProvider, when set, traces every request (otelgin) with spans
	// named by route pattern and no raw URL or query (see NewTracerProvider).
	TracerProvider trace.TracerProvider
	// InboundPatientSystem is the identifier system (e.g. the EHR's MRN
	// system) whose value keys a Patient the FHIR facade receives to a
	// client; the tenant's own Patient system is always accepted too.
	InboundPatientSystem string
	// JWKS, when set, serves the gateway's public keys for SMART Backend
	// Services (targetauth.JWKSHandler) at JWKSPath, without
	// authentication; JWKSPath defaults to /.well-known/jwks.json.
	JWKS     http.Handler
	JWKSPath string
	// Ready, when set, is asked by GET /readyz after the store: an error
	// answers 503 (e.g. a process whose delivery workers are not running).
	Ready func(ctx context.Context) error
	// Circuits, when set, gives each delivery target's circuit-breaker
	// state (closed, half-open, open) for the body of GET /readyz. An open
	// circuit does not make the process unready: the target is down, not
	// this process, and its messages wait in the outbox.
	Circuits func() map[string]string
	// Admin, when set, is the admin console (adapters/admin), served at
	// /admin and /admin/* behind its own session login, not the API keys.
	Admin http.Handler
	// PayerTargets are, per tenant, its targets of kind payer, where
	// $claim?submit=true and $eligibility queue their requests
	// (api_payer.go).
	PayerTargets map[string][]string
	// ScreeningPull, when set, serves POST /kap/v1/clients/{id}/$screening-pull
	// (api_screening.go); nil answers 501.
	ScreeningPull ScreeningPullFunc
	// OnQueued, when set, is called after every request that queued outbox
	// messages committed (onqueued.go); serve sets it to the delivery
	// worker's Wake when API and worker share a process (role all). It must
	// not block. Workers of other processes still find the messages by
	// polling.
	OnQueued func()
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// HashKey returns the hex SHA-256 of an API key, the form Config.Keys holds.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// NewKey returns a new random API key (32 bytes from crypto/rand, hex).
func NewKey() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "kap_" + hex.EncodeToString(b[:]), nil
}

type server struct {
	cfg       Config
	log       *slog.Logger
	validator *conformance.Validator
	mappers   map[string]*mapping.Mapper   // tenant -> mapper
	facade    fhirState                    // the FHIR facade's caches (fhir.go)
	authn     *authn                       // credentials (auth.go)
	limits    map[string]*config.RateLimit // tenant -> rate limit (ratelimit.go)
	auditor   *auditor                     // the audit sink (audit.go)
}

// CapabilityStatement returns the server CapabilityStatement GET
// /fhir/r4/metadata answers, dated now (kapbridge capability --server).
func CapabilityStatement(codec *fhir.Codec, now time.Time) ([]byte, error) {
	s := &server{cfg: Config{Codec: codec, Now: func() time.Time { return now }}}
	return s.capability()
}

// New returns the HTTP handler.
func New(cfg Config) (http.Handler, error) {
	if cfg.Store == nil || cfg.Codec == nil {
		return nil, fmt.Errorf("httpapi: Store and Codec are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = kap.MaxRecordBytes
	}
	if len(cfg.Targets) == 0 {
		cfg.Targets = []string{DefaultTarget}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	cfg.Store = withOnQueued(cfg.Store, cfg.OnQueued) // wake a local worker (onqueued.go)
	cfg.Store = withFHIRIndex(cfg.Store)              // FHIR logical ids -> records (fhir_index.go)
	s := &server{cfg: cfg, log: cfg.Logger, validator: conformance.NewValidator(cfg.Codec),
		mappers: map[string]*mapping.Mapper{}}
	for _, tenant := range cfg.Keys {
		if err := kap.ValidateName("tenant", tenant); err != nil {
			return nil, fmt.Errorf("httpapi: %w", err)
		}
		if s.mappers[tenant] == nil {
			s.mappers[tenant] = mapping.New(cfg.Codec, mapping.Options{Tenant: tenant, Now: cfg.Now})
		}
	}
	if err := s.setupSecurity(); err != nil {
		return nil, err
	}

	// gin's debug mode prints every route to stdout at start-up; the mode
	// is process-wide in gin, and the gateway never wants debug output.
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	r.Use(s.requestID, s.observe, s.accessLog)
	if cfg.TracerProvider != nil {
		r.Use(s.tracing())
	}
	r.Use(s.recovery, s.limitBody, s.timeout)
	r.NoRoute(func(c *gin.Context) {
		s.fail(c, kap.Errorf(kap.ENOTFOUND, "no route for this path"))
	})
	r.NoMethod(func(c *gin.Context) {
		s.failStatus(c, http.StatusMethodNotAllowed, kap.Errorf(kap.ENOTIMPLEMENTED, "method not allowed on this path"))
	})
	r.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	r.GET("/readyz", s.ready, s.readyz)
	if cfg.JWKS != nil {
		p := cfg.JWKSPath
		if p == "" {
			p = "/.well-known/jwks.json"
		}
		r.GET(p, gin.WrapH(cfg.JWKS))
	}
	r.GET("/metrics", s.metricsHandler())
	if cfg.Admin != nil {
		r.Any("/admin", gin.WrapH(cfg.Admin))
		r.Any("/admin/*path", gin.WrapH(cfg.Admin))
	}

	s.kapRoutes(r.Group("/kap/v1", s.guard()...))
	s.payerRoutes(r.Group("/kap/v1", s.guard()...))
	s.fhirPublicRoutes(r.Group("/fhir/r4"))
	s.fhirRoutes(r.Group("/fhir/r4", s.guard()...))
	return r, nil
}

// ready answers 503 when Config.Ready reports the process is not ready.
func (s *server) ready(c *gin.Context) {
	if s.cfg.Ready == nil {
		return
	}
	if err := s.cfg.Ready(c.Request.Context()); err != nil {
		s.log.Warn("not ready", "reason", err.Error())
		s.fail(c, kap.Errorf(kap.EUNAVAILABLE, "not ready: %s", err.Error()))
		c.Abort()
	}
}
