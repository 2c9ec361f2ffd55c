package config

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kapbridge/kap"
)

// Defaults.
const (
	DefaultAddr           = "127.0.0.1:8080"
	DefaultDataDir        = "./kapbridge-data"
	DefaultTenant         = "default"
	DefaultTarget         = "ndjson"
	DefaultJWKSPath       = "/.well-known/jwks.json"
	DefaultRequestTimeout = 30 * time.Second
	// EnvTarget is the name of the fhir target KAPBRIDGE_FHIR_TARGET makes.
	EnvTarget = "ehr"

	DefaultAttemptTimeout = 30 * time.Second
	DefaultTotalTimeout   = 2 * time.Minute
	DefaultMaxAttempts    = 10
	DefaultConcurrency    = 4
	// The rate limit of a tenant's credentials when the tenant sets none.
	DefaultRatePerSecond = 50
	DefaultRateBurst     = 100
)

// Roles of a process.
const (
	RoleAPI    = "api"    // serves the HTTP API only
	RoleWorker = "worker" // delivers the outbox only
	RoleAll    = "all"    // both (default)
)

// Environment variables read by Load.
const (
	EnvConfig     = "KAPBRIDGE_CONFIG"
	EnvAddr       = "KAPBRIDGE_ADDR"
	EnvDataDir    = "KAPBRIDGE_DATA_DIR"
	EnvRedisURL   = "KAPBRIDGE_REDIS_URL"
	EnvRole       = "KAPBRIDGE_ROLE"
	EnvFHIRTarget = "KAPBRIDGE_FHIR_TARGET"
)

// MaxFileBytes bounds the configuration file.
const MaxFileBytes = 4 << 20

// Load reads the configuration: the file at path (or, when path is empty,
// the file KAPBRIDGE_CONFIG names; no file at all is fine), then the
// environment overrides, then the defaults, and validates the result. getenv
// is os.Getenv in production; nil means no environment.
func Load(path string, getenv func(string) string) (Config, error) {
	cfg, err := Read(path, getenv)
	if err != nil {
		return Config{}, err
	}
	cfg.SetDefaults()
	if err := cfg.Validate(getenv); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Read reads the file and applies the environment overrides, without
// defaults or validation: the CLI applies its flags between Read and
// SetDefaults/Validate, so that flags win.
func Read(path string, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if path == "" {
		path = getenv(EnvConfig)
	}
	var cfg Config
	if path != "" {
		c, err := ReadFile(path)
		if err != nil {
			return Config{}, err
		}
		cfg = c
	}
	cfg.ApplyEnv(getenv)
	return cfg, nil
}

// ReadFile parses a YAML or JSON configuration file. Unknown keys and
// duplicate keys are errors.
func ReadFile(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, kap.Errorf(kap.EINVALID, "configuration file: %v", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return Config{}, kap.Errorf(kap.EINVALID, "configuration file %s: %v", path, err)
	}
	if len(data) > MaxFileBytes {
		return Config{}, kap.Errorf(kap.EINVALID, "configuration file %s is larger than %d bytes", path, MaxFileBytes)
	}
	return Parse(data, path)
}

// Parse parses YAML or JSON configuration (JSON is YAML); name is used in
// errors. Keys are the json tags of Config.
func Parse(data []byte, name string) (Config, error) {
	var cfg Config
	if strings.TrimSpace(string(data)) == "" {
		return cfg, nil
	}
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		msg := err.Error()
		// sigs.k8s.io/yaml wraps in "error converting YAML to JSON: yaml: ..."
		// and "error unmarshaling JSON: while decoding JSON: json: ...".
		for _, p := range []string{"error converting YAML to JSON: ", "error unmarshaling JSON: ", "while decoding JSON: ", "json: "} {
			msg = strings.TrimPrefix(msg, p)
		}
		return Config{}, kap.Errorf(kap.EINVALID, "configuration file %s: %s", name, msg)
	}
	return cfg, nil
}

// ApplyEnv applies the KAPBRIDGE_* overrides. KAPBRIDGE_FHIR_TARGET makes
// (or re-points) a fhir target named "ehr" without auth and adds it to the
// targets of the tenant named "default" when that tenant lists targets.
func (c *Config) ApplyEnv(getenv func(string) string) {
	if getenv == nil {
		return
	}
	set := func(dst *string, name string) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			*dst = v
		}
	}
	set(&c.Addr, EnvAddr)
	set(&c.DataDir, EnvDataDir)
	set(&c.RedisURL, EnvRedisURL)
	set(&c.Role, EnvRole)
	if u := strings.TrimSpace(getenv(EnvFHIRTarget)); u != "" {
		c.SetFHIRTarget(u)
	}
}

// SetFHIRTarget makes (or re-points) the fhir target named "ehr", with no
// auth, and adds it to the default tenant's targets when they are listed.
func (c *Config) SetFHIRTarget(baseURL string) {
	i := slices.IndexFunc(c.Targets, func(t Target) bool { return t.Name == EnvTarget })
	if i >= 0 {
		c.Targets[i].Type = "fhir"
		c.Targets[i].BaseURL = baseURL
	} else {
		c.Targets = append(c.Targets, Target{Name: EnvTarget, Type: "fhir", BaseURL: baseURL, Auth: TargetAuth{Type: "none"}})
	}
	for i := range c.Tenants {
		if c.Tenants[i].Name == DefaultTenant && len(c.Tenants[i].Targets) > 0 && !slices.Contains(c.Tenants[i].Targets, EnvTarget) {
			c.Tenants[i].Targets = append(c.Tenants[i].Targets, EnvTarget)
		}
	}
}

// SetDefaults fills in every unset setting:
//   - addr 127.0.0.1:8080, dataDir ./kapbridge-data, role all,
//     requestTimeout 30s, jwksPath /.well-known/jwks.json;
//   - no target at all: one target "ndjson" (type ndjson);
//   - an ndjson target without dir: <dataDir>/<target name>;
//   - a fhir target: auth none, attemptTimeout 30s, totalTimeout 2m,
//     maxAttempts 10, concurrency 4 (ndjson targets get the last two too);
//   - no tenant at all: one tenant "default" that holds the bootstrap key
//     and sends to every target;
//   - a tenant without targets sends to every target; without a rate limit
//     its credentials get 50 requests per second with a burst of 100.
func (c *Config) SetDefaults() {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Role == "" {
		c.Role = RoleAll
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = Duration(DefaultRequestTimeout)
	}
	if c.JWKSPath == "" {
		c.JWKSPath = DefaultJWKSPath
	}
	if len(c.Targets) == 0 {
		c.Targets = []Target{{Name: DefaultTarget, Type: "ndjson"}}
	}
	var names []string
	for i := range c.Targets {
		t := &c.Targets[i]
		names = append(names, t.Name)
		switch t.Type {
		case "ndjson":
			if t.Dir == "" && kap.ValidateName("name", t.Name) == nil {
				t.Dir = filepath.Join(c.DataDir, t.Name)
			}
		case "fhir":
			if t.Auth.Type == "" {
				t.Auth.Type = "none"
			}
			if t.AttemptTimeout == 0 {
				t.AttemptTimeout = Duration(DefaultAttemptTimeout)
			}
			if t.TotalTimeout == 0 {
				t.TotalTimeout = Duration(DefaultTotalTimeout)
			}
		}
		if t.MaxAttempts == 0 {
			t.MaxAttempts = DefaultMaxAttempts
		}
		if t.Concurrency == 0 {
			t.Concurrency = DefaultConcurrency
		}
	}
	if len(c.Tenants) == 0 {
		c.Tenants = []Tenant{{Name: DefaultTenant, Bootstrap: true}}
	}
	for i := range c.Tenants {
		t := &c.Tenants[i]
		if len(t.Targets) == 0 {
			t.Targets = slices.Clone(names)
		}
		if t.RateLimit == nil {
			t.RateLimit = &RateLimit{PerSecond: DefaultRatePerSecond, Burst: DefaultRateBurst}
		}
	}
}

// TenantNamed returns the tenant called name.
func (c *Config) TenantNamed(name string) (Tenant, bool) {
	for _, t := range c.Tenants {
		if t.Name == name {
			return t, true
		}
	}
	return Tenant{}, false
}

// TargetNamed returns the target called name.
func (c *Config) TargetNamed(name string) (Target, bool) {
	for _, t := range c.Targets {
		if t.Name == name {
			return t, true
		}
	}
	return Target{}, false
}

// D returns the duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String renders the duration like time.Duration ("30s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a Go duration string such as "30s", "1m30s" or
// "500ms".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf(`a duration must be a string such as "30s"`)
	}
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf(`%q is not a duration such as "30s" or "1m30s"`, s)
	}
	*d = Duration(v)
	return nil
}
