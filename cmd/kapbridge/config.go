package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/internal/config"
)

// configFlags are the flags every command that runs the gateway shares.
// A flag given on the command line wins over the environment, which wins
// over the file.
type configFlags struct {
	fs                                              *flag.FlagSet
	path, addr, dataDir, redisURL, role, fhirTarget *string
}

func addConfigFlags(fs *flag.FlagSet) *configFlags {
	return &configFlags{
		fs:         fs,
		path:       fs.String("config", "", "configuration file, YAML or JSON (env KAPBRIDGE_CONFIG; see docs/configuration.md)"),
		addr:       fs.String("addr", "", "listen address (env KAPBRIDGE_ADDR; default "+config.DefaultAddr+")"),
		dataDir:    fs.String("data-dir", "", "data directory (env KAPBRIDGE_DATA_DIR; default "+config.DefaultDataDir+")"),
		redisURL:   fs.String("redis-url", "", "Redis URL; empty = the embedded store in the data directory (env KAPBRIDGE_REDIS_URL)"),
		role:       fs.String("role", "", "api, worker or all (env KAPBRIDGE_ROLE; default all)"),
		fhirTarget: fs.String("fhir-target", "", "base URL of a FHIR server to deliver to as target \"ehr\" (env KAPBRIDGE_FHIR_TARGET)"),
	}
}

// load reads the file and the environment, applies the flags that were set,
// then the defaults, and validates.
func (f *configFlags) load(getenv func(string) string) (config.Config, error) {
	cfg, err := config.Read(*f.path, getenv)
	if err != nil {
		return config.Config{}, err
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if set["addr"] {
		cfg.Addr = *f.addr
	}
	if set["data-dir"] {
		cfg.DataDir = *f.dataDir
	}
	if set["redis-url"] {
		cfg.RedisURL = *f.redisURL
	}
	if set["role"] {
		cfg.Role = *f.role
	}
	if set["fhir-target"] && *f.fhirTarget != "" {
		cfg.SetFHIRTarget(*f.fhirTarget)
	}
	cfg.SetDefaults()
	if err := cfg.Validate(getenv); err != nil {
		return config.Config{}, err
	}
	return cfg, nil
}

// printConfigError writes a configuration error one problem a line.
func printConfigError(w io.Writer, cmd string, err error) {
	var ke *kap.Error
	if !errors.As(err, &ke) || len(ke.Issues) == 0 {
		fmt.Fprintf(w, "kapbridge %s: %v\n", cmd, err)
		return
	}
	fmt.Fprintf(w, "kapbridge %s: %s:\n", cmd, ke.Message)
	for _, is := range ke.Issues {
		fmt.Fprintf(w, "  %s\n", is)
	}
}

// configCmd validates the configuration and prints the effective one (with
// every default filled in, secrets masked: maskSecrets) as JSON. Exit 0 valid, 1 invalid, 2 usage.
func (e *env) configCmd(_ context.Context, args []string) int {
	fs := newFlags("config", e.stderr)
	cf := addConfigFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(e.stderr, "usage: kapbridge config [--config FILE] [--addr ...]")
		return 2
	}
	cfg, err := cf.load(os.Getenv)
	if err != nil {
		printConfigError(e.stderr, "config", err)
		return 1
	}
	data, err := json.MarshalIndent(maskSecrets(cfg), "", "  ")
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge config:", err)
		return 2
	}
	fmt.Fprintf(e.stdout, "%s\n", data)
	return 0
}

// hashKeyCmd prints the SHA-256 (hex) of an API key read from stdin (one
// line), the form tenants[].apiKeys[].sha256 holds. With --new it makes a
// new random key and prints the key and its hash.
func (e *env) hashKeyCmd(_ context.Context, args []string) int {
	fs := newFlags("hash-key", e.stderr)
	gen := fs.Bool("new", false, "generate a new random key and print it with its hash")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(e.stderr, "usage: kapbridge hash-key [--new] < KEYFILE   (the key is read from stdin, never from the command line)")
		return 2
	}
	if *gen {
		key, err := httpapi.NewKey()
		if err != nil {
			fmt.Fprintln(e.stderr, "kapbridge hash-key:", err)
			return 2
		}
		fmt.Fprintf(e.stdout, "key:    %s\nsha256: %s\n", key, httpapi.HashKey(key))
		return 0
	}
	line, err := bufio.NewReader(io.LimitReader(e.stdin, 4096)).ReadString('\n')
	if err != nil && err != io.EOF {
		fmt.Fprintln(e.stderr, "kapbridge hash-key:", err)
		return 2
	}
	key := strings.TrimRight(line, "\r\n")
	if key == "" {
		fmt.Fprintln(e.stderr, "kapbridge hash-key: no key on stdin")
		return 2
	}
	fmt.Fprintln(e.stdout, httpapi.HashKey(key))
	return 0
}

// maskSecrets returns a copy of cfg for printing: the password of every URL
// setting (redisUrl's user:password@, as in every other URL) becomes xxxxx,
// and so does the value of every query parameter whose name looks secret
// (sentinel_password=, token=, api_key=, ...). The file holds no other
// secret: target secrets are names of environment variables, API keys are
// SHA-256 hashes.
func maskSecrets(cfg config.Config) config.Config {
	cfg.RedisURL = maskURL(cfg.RedisURL)
	cfg.OTelEndpoint = maskURL(cfg.OTelEndpoint)
	cfg.Tenants = slices.Clone(cfg.Tenants)
	for i := range cfg.Tenants {
		cfg.Tenants[i].IdentifierBase = maskURL(cfg.Tenants[i].IdentifierBase)
	}
	cfg.Targets = slices.Clone(cfg.Targets)
	for i := range cfg.Targets {
		t := &cfg.Targets[i]
		t.BaseURL, t.Auth.TokenURL = maskURL(t.BaseURL), maskURL(t.Auth.TokenURL)
	}
	cfg.Issuers = slices.Clone(cfg.Issuers)
	for i := range cfg.Issuers {
		is := &cfg.Issuers[i]
		is.Issuer, is.JWKSURL = maskURL(is.Issuer), maskURL(is.JWKSURL)
	}
	return cfg
}

// maskURL masks the password and the secret-looking query parameters of a
// URL; a value that is not a URL is masked whole.
func maskURL(s string) string {
	if s == "" {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "xxxxx"
	}
	if u.RawQuery != "" {
		parts := strings.Split(u.RawQuery, "&")
		for i, kv := range parts {
			k, _, hasValue := strings.Cut(kv, "=")
			if name, err := url.QueryUnescape(k); err == nil && hasValue && secretName(name) {
				parts[i] = k + "=xxxxx"
			}
		}
		u.RawQuery = strings.Join(parts, "&")
	}
	return u.Redacted()
}

// secretName reports whether a parameter name looks like it holds a secret.
func secretName(name string) bool {
	name = strings.ToLower(name)
	for _, w := range []string{"pass", "secret", "token", "key", "sig", "auth", "credential"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}
