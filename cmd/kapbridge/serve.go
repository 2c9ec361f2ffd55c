package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/admin"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
	"github.com/kapbridge/kap/internal/metrics"
)

// Defaults of kapbridge serve.
const (
	defaultAddr      = "127.0.0.1:8080"
	defaultDataDir   = "./kapbridge-data"
	defaultTenant    = "default"
	bootstrapKeyFile = "bootstrap-api-key"
	shutdownTimeout  = 15 * time.Second
)

// serveConfig configures the server.
type serveConfig struct {
	// Config is the loaded configuration (internal/config); the zero value
	// is the default start (one tenant holding the bootstrap key).
	Config config.Config
	// Addr and DataDir, when set, override Config's.
	Addr    string
	DataDir string
	Logger  *slog.Logger
}

// serveMain is a running gateway: Open starts it, Addr tells where it
// listens, Close shuts it down gracefully.
type serveMain struct {
	cfg   serveConfig
	store kap.Store
	ln    net.Listener
	srv   *http.Server
	done  chan error
	met   *metrics.Metrics
	dlv   *deliveryMain      // the delivery worker, when the role runs it
	ret   *retentionRun      // history pruning, when the role runs workers (retention.go)
	audit *httpapi.AuditFile // the audit trail, <data>/audit
	stop  context.CancelFunc // ends the handler's background work
	// tracer exports spans when Config.OTelEndpoint is set.
	tracer *sdktrace.TracerProvider
	// admin is the admin console at /admin (admin.go).
	admin *admin.Console
}

// Open opens the store, provisions the bootstrap key and starts listening.
func (m *serveMain) Open() error {
	cfg := &m.cfg
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Addr != "" {
		cfg.Config.Addr = cfg.Addr
	}
	if cfg.DataDir != "" {
		cfg.Config.DataDir = cfg.DataDir
	}
	cfg.Config.SetDefaults()
	if err := cfg.Config.Validate(os.Getenv); err != nil {
		return err
	}
	cfg.Addr, cfg.DataDir = cfg.Config.Addr, cfg.Config.DataDir
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create the data directory: %w", err)
	}
	var key, keyPath string
	var created bool
	if slices.ContainsFunc(cfg.Config.Tenants, func(t config.Tenant) bool { return t.Bootstrap }) {
		var err error
		if key, keyPath, created, err = bootstrapKey(cfg.DataDir); err != nil {
			return err
		}
	}
	codec, err := fhir.NewCodec()
	if err != nil {
		return err
	}
	store, err := openStore(cfg.Config)
	if err != nil {
		return err
	}
	audit, err := httpapi.NewAuditFile(filepath.Join(cfg.DataDir, "audit"), nil)
	if err != nil {
		store.Close()
		return err
	}
	bg, stop := context.WithCancel(context.Background())
	m.audit, m.stop = audit, stop
	jwks, err := serveJWKS(cfg.Config)
	if err != nil {
		stop()
		audit.Close()
		store.Close()
		return err
	}
	m.met = metrics.New()
	// Queue depth, oldest age and dead letters per target on /metrics
	// (every role): internal/metrics/queue.go.
	var targetNames []string
	for _, t := range cfg.Config.Targets {
		targetNames = append(targetNames, t.Name)
	}
	if err := m.met.RegisterQueue(store.Outbox(), targetNames, metrics.QueueOptions{Logger: cfg.Logger}); err != nil {
		stop()
		audit.Close()
		store.Close()
		return err
	}
	if cfg.Config.OTelEndpoint != "" {
		tp, err := httpapi.NewTracerProvider(context.Background(), cfg.Config.OTelEndpoint)
		if err != nil {
			stop()
			audit.Close()
			store.Close()
			return err
		}
		m.tracer = tp
	}
	console, err := m.buildAdmin(store, codec, audit, key)
	if err != nil {
		stop()
		audit.Close()
		store.Close()
		return err
	}
	m.admin = console
	h, err := httpapi.New(httpapi.Config{
		Store:          store,
		Codec:          codec,
		Tenants:        serveTenants(cfg.Config, key),
		Issuers:        cfg.Config.Issuers,
		Audit:          audit,
		RequestTimeout: cfg.Config.RequestTimeout.D(),
		Context:        bg,
		JWKS:           jwks,
		JWKSPath:       cfg.Config.JWKSPath,
		Metrics:        m.met,
		TenantTargets:  httpapi.TargetPolicies(cfg.Config),

		// payer claims and eligibility, EHR screening pulls (payer.go)
		PayerTargets:         payerTargets(cfg.Config),
		ScreeningPull:        (&screeningPuller{cfg: cfg.Config, store: store, codec: codec, log: cfg.Logger, getenv: os.Getenv}).Pull,
		InboundPatientSystem: inboundPatientSystem(cfg.Config),

		TracerProvider: tracerOf(m.tracer),
		MetricsToken:   os.Getenv("KAPBRIDGE_METRICS_TOKEN"),
		Ready:          m.ready,
		Circuits:       m.circuits(),
		OnQueued:       m.onQueued(), // wakes this process's worker (retention.go)
		Admin:          console,
		Logger:         cfg.Logger,
	})
	if err != nil {
		stop()
		audit.Close()
		store.Close()
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		stop()
		audit.Close()
		store.Close()
		return err
	}
	m.store, m.ln = store, ln
	if err := m.startDelivery(store, codec); err != nil {
		ln.Close()
		store.Close()
		return err
	}
	if err := m.startRetention(bg, store, os.Getenv); err != nil {
		m.stopDelivery()
		ln.Close()
		store.Close()
		return err
	}
	m.admin.Start()
	m.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	m.done = make(chan error, 1)
	go func() { m.done <- m.srv.Serve(ln) }()
	cfg.Logger.Info("kapbridge serving", "addr", ln.Addr().String(), "data_dir", cfg.DataDir,
		"tenants", len(cfg.Config.Tenants), "api_key_file", keyPath, "api_key_created", created)
	return nil
}

// Addr returns the address the server listens on.
func (m *serveMain) Addr() string { return m.ln.Addr().String() }

// Close stops accepting requests, waits (up to shutdownTimeout) for the ones
// in flight, and closes the store.
func (m *serveMain) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := m.srv.Shutdown(ctx)
	if serr := <-m.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if derr := m.stopDelivery(); err == nil {
		err = derr
	}
	m.ret.stop()
	if cerr := m.store.Close(); err == nil {
		err = cerr
	}
	m.admin.Close()
	m.stop()
	if cerr := m.audit.Close(); err == nil {
		err = cerr
	}
	if m.tracer != nil {
		if terr := m.tracer.Shutdown(ctx); err == nil {
			err = terr
		}
	}
	return err
}

// bootstrapKey returns the default tenant's API key, generating it and
// writing it with mode 0600 on first start.
func bootstrapKey(dir string) (key, path string, created bool, err error) {
	path = filepath.Join(dir, bootstrapKeyFile)
	data, err := os.ReadFile(path)
	if err == nil {
		key = strings.TrimSpace(string(data))
		if key == "" {
			return "", path, false, fmt.Errorf("%s is empty: delete it to generate a new key", path)
		}
		return key, path, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", path, false, err
	}
	key, err = httpapi.NewKey()
	if err != nil {
		return "", path, false, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", path, false, err
	}
	if _, err := f.WriteString(key + "\n"); err != nil {
		f.Close()
		return "", path, false, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", path, false, err
	}
	return key, path, true, f.Close()
}

// serveCmd runs the gateway until ctx is cancelled (SIGINT/SIGTERM).
func (e *env) serveCmd(ctx context.Context, args []string) int {
	fs := newFlags("serve", e.stderr)
	cf := addConfigFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(e.stderr, "usage: kapbridge serve [--config FILE] [--addr HOST:PORT] [--data-dir DIR] [--redis-url URL] [--role api|worker|all]")
		return 2
	}
	conf, err := cf.load(os.Getenv)
	if err != nil {
		printConfigError(e.stderr, "serve", err)
		return 2
	}
	return serve(ctx, serveConfig{Config: conf,
		Logger: slog.New(slog.NewJSONHandler(e.stderr, nil))}, e.stderr)
}

func serve(ctx context.Context, cfg serveConfig, stderr io.Writer) int {
	m := &serveMain{cfg: cfg}
	if err := m.Open(); err != nil {
		fmt.Fprintln(stderr, "kapbridge serve:", err)
		return 2
	}
	select {
	case <-ctx.Done():
	case err := <-m.done:
		m.done <- err // Close reads it
	}
	cfg.Logger.Info("kapbridge shutting down")
	if err := m.Close(); err != nil {
		fmt.Fprintln(stderr, "kapbridge serve:", err)
		return 2
	}
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// serveTenants returns the configured tenants with the bootstrap key added
// (as key "bootstrap", every scope) to the tenants that hold it.
func serveTenants(cfg config.Config, bootstrap string) []config.Tenant {
	out := make([]config.Tenant, len(cfg.Tenants))
	for i, t := range cfg.Tenants {
		t.APIKeys = slices.Clone(t.APIKeys)
		if t.Bootstrap && bootstrap != "" {
			t.APIKeys = append(t.APIKeys, config.APIKey{Name: "bootstrap", SHA256: httpapi.HashKey(bootstrap)})
		}
		out[i] = t
	}
	return out
}

// tracerOf returns tp as an interface that is nil when tp is (a nil
// *TracerProvider in the interface would enable tracing).
func tracerOf(tp *sdktrace.TracerProvider) oteltrace.TracerProvider {
	if tp == nil {
		return nil
	}
	return tp
}

// openStore opens the durable state layer: Redis when the configuration has
// a RedisURL (shared by several gateway replicas), else the embedded bbolt
// file in the data directory.
func openStore(cfg config.Config) (kap.Store, error) {
	if cfg.RedisURL == "" {
		s, err := bolt.Open(filepath.Join(cfg.DataDir, "kap.db"), bolt.Options{})
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	// One server, a Cluster (several seeds or cluster=true) or Sentinel
	// (master_name=): redisurl.go, docs/operations.md.
	ctx, cancel := context.WithTimeout(context.Background(), redisDialTimeout)
	defer cancel()
	return openRedis(ctx, cfg.RedisURL)
}
