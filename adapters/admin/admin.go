// Package admin is the gateway's admin console for the clinic's IT
// administrator, served at /admin: what is stuck, why, and the action that
// fixes it, without reading logs. Server-rendered HTML (html/template) with
// a little plain JavaScript; templates, CSS and script are embedded, so the
// single binary carries the console and it works with the network closed.
//
// Login exchanges an admin API key of a tenant (config APIKey.Admin) for a
// signed session cookie (HttpOnly, SameSite=Strict, Secure under TLS); every
// POST carries a CSRF token bound to the session. Every page is scoped to the
// session's tenant. PHI (client identifiers, records, Bundles) is shown only
// to that tenant's admins and never put in a URL: searches are POSTs; the
// only ids in paths are record ids (see docs/admin.md).
package admin

import (
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/conformance"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
	"github.com/kapbridge/kap/internal/delivery"
	"github.com/kapbridge/kap/mapping"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is the path the console is served under.
const Prefix = "/admin"

// HealthSource is what the console reads of the delivery worker
// (*delivery.Worker implements it).
type HealthSource interface {
	Health() delivery.Health
}

// HealthFunc adapts a function to HealthSource, for a worker that is
// started after the console is built.
type HealthFunc func() delivery.Health

// Health calls f.
func (f HealthFunc) Health() delivery.Health { return f() }

// Config configures the console.
type Config struct {
	// Store is the durable state layer (required).
	Store kap.Store
	// Codec is the shared FHIR codec (required): the mapping preview and
	// the trace's validation use it.
	Codec *fhir.Codec
	// Config is the gateway configuration as loaded: tenants (their admin
	// API keys) and targets.
	Config config.Config
	// Health is the delivery worker of this process; nil when the process
	// runs no worker (the overview then shows the queue only).
	Health HealthSource
	// Wake, when set, makes the worker poll at once after a replay.
	Wake func()
	// KeySets are the gateway's signing keys for SMART Backend Services
	// (targetauth.KeySetsFromConfig); shown on the keys page.
	KeySets []*targetauth.KeySet
	// JWKSPath is where the gateway publishes its JWKS; default
	// /.well-known/jwks.json.
	JWKSPath string
	// Transport returns the authenticated transport of a FHIR target for
	// the connection test and for resolving unknown outcomes; nil builds
	// one with targetauth.New and the store's cache.
	Transport func(t config.Target) (http.RoundTripper, error)
	// SessionKey signs session cookies (at least 32 bytes); nil draws a
	// random key per process (sessions end when the process restarts).
	SessionKey []byte
	// SessionTTL is how long a session lasts; default 8h.
	SessionTTL time.Duration
	// Audit receives one JSON line per admin action (login, logout,
	// replay, discard, resolve); nil means none. Discard reasons go here,
	// never to the log.
	Audit io.Writer
	// SampleEvery is how often the delivery counts are sampled for the
	// last-hour and last-day charts; default 1 minute.
	SampleEvery time.Duration
	// Logger receives the console's log (no PHI); nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Getenv reads the environment of target auth; nil means os.Getenv.
	Getenv func(string) string
}

// Console is the admin console: an http.Handler for /admin/*. Close stops
// its sampler.
type Console struct {
	cfg       Config
	log       *slog.Logger
	pages     map[string]*template.Template
	mux       *http.ServeMux
	validator *conformance.Validator
	key       []byte
	stats     *sampler
	jobs      *jobs
	auditMu   sync.Mutex
	mapperMu  sync.Mutex
	mappers   map[string]*mapping.Mapper
	ctx       context.Context
	stop      context.CancelFunc
	done      chan struct{}
	once      sync.Once
	started   atomic.Bool
}

// New returns the console; Start starts its sampler.
func New(cfg Config) (*Console, error) {
	if cfg.Store == nil || cfg.Codec == nil {
		return nil, errors.New("admin: Store and Codec are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.SampleEvery <= 0 {
		cfg.SampleEvery = time.Minute
	}
	if cfg.JWKSPath == "" {
		cfg.JWKSPath = "/.well-known/jwks.json"
	}
	key := cfg.SessionKey
	if key == nil {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
	} else if len(key) < 32 {
		return nil, errors.New("admin: SessionKey must be at least 32 bytes")
	}
	c := &Console{cfg: cfg, log: cfg.Logger, key: key, validator: conformance.NewValidator(cfg.Codec),
		mappers: map[string]*mapping.Mapper{}, jobs: newJobs(), done: make(chan struct{})}
	if err := c.parseTemplates(); err != nil {
		return nil, err
	}
	c.stats = newSampler(cfg.Now)
	c.routes()
	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	c.ctx = ctx
	return c, nil
}

// Start starts sampling the worker's delivery counts for the charts; call
// it once the worker runs. The first request starts it too. Idempotent.
func (c *Console) Start() {
	c.once.Do(func() {
		c.started.Store(true)
		go c.sample(c.ctx)
	})
}

// Close stops the sampler and waits for it.
func (c *Console) Close() error {
	if c == nil {
		return nil
	}
	c.once.Do(func() {}) // no sampler starts after Close
	c.stop()
	if c.started.Load() {
		<-c.done
	}
	return nil
}

func (c *Console) sample(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(c.cfg.SampleEvery)
	defer t.Stop()
	c.takeSample()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.takeSample()
		}
	}
}

func (c *Console) takeSample() {
	if c.cfg.Health == nil {
		return
	}
	c.stats.record(c.cfg.Health.Health())
}

var funcs = template.FuncMap{
	"ago":     ago,
	"when":    when,
	"join":    strings.Join,
	"reason":  plainReason,
	"circuit": circuitWords,
	"add":     func(a, b int) int { return a + b },
}

func (c *Console) parseTemplates() error {
	c.pages = map[string]*template.Template{}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return fmt.Errorf("admin: template %s: %w", n, err)
		}
		c.pages[base] = t
	}
	return nil
}

// ServeHTTP serves the console.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	c.Start()
	c.mux.ServeHTTP(w, r)
}

func (c *Console) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	m.Handle("GET "+Prefix+"/static/", http.StripPrefix(Prefix+"/static/", http.FileServerFS(static)))
	m.HandleFunc("GET "+Prefix, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"/", http.StatusSeeOther)
	})
	m.HandleFunc("GET "+Prefix+"/login", c.loginPage)
	m.HandleFunc("POST "+Prefix+"/login", c.login)
	m.HandleFunc("POST "+Prefix+"/logout", c.auth(c.logout))
	m.HandleFunc("GET "+Prefix+"/{$}", c.auth(c.overview))
	m.HandleFunc("GET "+Prefix+"/deliveries", c.auth(c.deliveriesPage))
	m.HandleFunc("POST "+Prefix+"/deliveries", c.auth(c.deliveriesSearch))
	m.HandleFunc("GET "+Prefix+"/records/{kind}/{id}", c.auth(c.trace))
	m.HandleFunc("GET "+Prefix+"/dead-letters", c.auth(c.deadLetters))
	m.HandleFunc("POST "+Prefix+"/dead-letters/retry", c.auth(c.retryOne))
	m.HandleFunc("POST "+Prefix+"/dead-letters/retry-all", c.auth(c.retryAll))
	m.HandleFunc("POST "+Prefix+"/dead-letters/discard", c.auth(c.discard))
	m.HandleFunc("GET "+Prefix+"/jobs/{id}", c.auth(c.jobPage))
	m.HandleFunc("GET "+Prefix+"/jobs/{id}/status", c.auth(c.jobStatus))
	m.HandleFunc("GET "+Prefix+"/unknown", c.auth(c.unknown))
	m.HandleFunc("POST "+Prefix+"/unknown/resolve", c.auth(c.resolve))
	m.HandleFunc("GET "+Prefix+"/targets", c.auth(c.targets))
	m.HandleFunc("POST "+Prefix+"/targets/test", c.auth(c.testTarget))
	m.HandleFunc("GET "+Prefix+"/mapping", c.auth(c.mappingPage))
	m.HandleFunc("POST "+Prefix+"/mapping", c.auth(c.mappingPreview))
	m.HandleFunc("GET "+Prefix+"/keys", c.auth(c.keys))
	m.HandleFunc("POST "+Prefix+"/keys/publish", c.auth(c.keyPublish))
	m.HandleFunc("POST "+Prefix+"/keys/activate", c.auth(c.keyActivate))
	m.HandleFunc("POST "+Prefix+"/keys/retire", c.auth(c.keyRetire))
	m.HandleFunc(Prefix+"/", func(w http.ResponseWriter, r *http.Request) {
		c.render(w, r, http.StatusNotFound, "error", nil, map[string]any{"Title": "Not found", "Message": "There is no page at this address."})
	})
	c.mux = m
}

// page is what every template gets.
type page struct {
	Title   string
	Nav     string
	Session *session
	CSRF    string
	Flash   string
	Data    any
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, s *session, data any) {
	t := c.pages[name]
	if t == nil {
		http.Error(w, "no such page", http.StatusInternalServerError)
		return
	}
	p := page{Nav: name, Session: s, Data: data, Flash: flashes[r.URL.Query().Get("done")]}
	if m, ok := data.(map[string]any); ok {
		if s, ok := m["Title"].(string); ok {
			p.Title = s
		}
	}
	if p.Title == "" {
		p.Title = titles[name]
	}
	if s != nil {
		p.CSRF = c.csrf(s)
	}
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, "layout.html", p); err != nil {
		c.log.Error("admin template", "page", name, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, b.String())
}

var titles = map[string]string{
	"login": "Sign in", "overview": "Overview", "deliveries": "Deliveries", "trace": "Record trace",
	"deadletters": "Dead letters", "job": "Retry progress", "unknown": "Unknown outcomes",
	"targets": "Targets", "mapping": "Mapping preview", "keys": "Keys", "error": "Error",
}

// flash messages are fixed words chosen by key, so nothing a user typed
// is echoed from a URL.
var flashes = map[string]string{
	"retried":       "The dead letter was queued again for delivery.",
	"discarded":     "The dead letter was discarded; the reason is in the audit trail.",
	"resolved":      "The outcome was resolved by reading the target.",
	"notfound":      "The resource is not at the target; the ledger now says failed, and the next delivery writes it.",
	"loggedout":     "You are signed out.",
	"key-published": "A new key was generated and published in the JWKS. It does not sign yet.",
	"key-activated": "The key now signs the target's token requests. The previous key stays published.",
	"key-retired":   "The key was moved to the retired folder and left the JWKS.",
}
