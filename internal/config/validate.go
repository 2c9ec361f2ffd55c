package config

import (
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/kapbridge/kap"
	kapredis "github.com/kapbridge/kap/adapters/redis"
)

// problems collects configuration issues.
type problems []kap.Issue

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, kap.Issue{Path: path, Reason: fmt.Sprintf(format, args...)})
}

// name checks a tenant/target/key name with kap.ValidateName.
func (p *problems) name(path, v string) {
	if err := kap.ValidateName(path, v); err != nil {
		msg := kap.ErrorMessage(err)
		p.add(path, "%s", strings.TrimPrefix(msg, path+" "))
	}
}

// httpURL checks an absolute http(s) URL without user info or fragment.
func (p *problems) httpURL(path, v string) {
	if v == "" {
		p.add(path, "is required")
		return
	}
	u, err := url.Parse(v)
	if err != nil || !u.IsAbs() || u.Host == "" {
		p.add(path, "must be an absolute http or https URL")
		return
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		p.add(path, "must be an http or https URL")
		return
	}
	if u.User != nil {
		p.add(path, "must not hold credentials (use the auth settings)")
	}
	if u.Fragment != "" {
		p.add(path, "must not have a fragment")
	}
}

// file checks that a file exists and is readable.
func (p *problems) file(path, v string) {
	if v == "" {
		p.add(path, "is required")
		return
	}
	f, err := os.Open(v)
	if err != nil {
		p.add(path, "cannot be read: %v", unwrapPathError(err))
		return
	}
	f.Close()
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// Validate checks the whole configuration (after SetDefaults) and returns
// one *kap.Error (EINVALID) whose issues list every problem, each with the
// path of the setting: "tenants[1].apiKeys[0].sha256: must be 64 hex
// characters". getenv checks that the secret environment variables named
// in the file are set; nil means os.Getenv.
func (c *Config) Validate(getenv func(string) string) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	var p problems
	if c.Addr == "" {
		p.add("addr", "is required")
	} else if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		p.add("addr", "must be host:port (for example 127.0.0.1:8080 or :8080)")
	}
	if c.DataDir == "" {
		p.add("dataDir", "is required")
	}
	if c.RedisURL != "" {
		// The parser serve opens the store with (errors never show the URL).
		if _, err := kapredis.ParseURL(c.RedisURL); err != nil {
			if is := kap.ErrorIssues(err); len(is) > 0 {
				p = append(p, is...)
			} else {
				p.add("redisUrl", "%s", kap.ErrorMessage(err))
			}
		}
	}
	switch c.Role {
	case RoleAPI, RoleWorker, RoleAll:
	default:
		p.add("role", "must be one of api, worker, all")
	}
	if c.RequestTimeout < 0 {
		p.add("requestTimeout", "must be positive")
	}
	if c.JWKSPath != "" && !strings.HasPrefix(c.JWKSPath, "/") {
		p.add("jwksPath", "must be a path starting with /")
	}
	if c.OTelEndpoint != "" {
		p.httpURL("otelEndpoint", c.OTelEndpoint)
	}

	targets := map[string]bool{}
	for i, t := range c.Targets {
		c.validateTarget(&p, fmt.Sprintf("targets[%d]", i), t, getenv)
		if t.Name != "" {
			if targets[t.Name] {
				p.add(fmt.Sprintf("targets[%d].name", i), "%q is used by another target", t.Name)
			}
			targets[t.Name] = true
		}
	}

	tenants := map[string]bool{}
	keyHashes := map[string]string{} // hash -> path of first use
	for i, t := range c.Tenants {
		at := fmt.Sprintf("tenants[%d]", i)
		p.name(at+".name", t.Name)
		if t.Name != "" {
			if tenants[t.Name] {
				p.add(at+".name", "%q is used by another tenant", t.Name)
			}
			tenants[t.Name] = true
		}
		for j, name := range t.Targets {
			if !targets[name] {
				p.add(fmt.Sprintf("%s.targets[%d]", at, j), "no target is named %q", name)
			}
		}
		if t.IdentifierBase != "" {
			p.httpURL(at+".identifierBase", t.IdentifierBase)
		}
		if sys := t.InboundPatientSystem; sys != "" && !validSystem(sys) {
			p.add(at+".inboundPatientSystem", "must be an absolute URI (http(s)://..., urn:oid:... or urn:uuid:...) without spaces or '|'")
		}
		if rl := t.RateLimit; rl != nil {
			if !(rl.PerSecond > 0) || math.IsInf(rl.PerSecond, 0) {
				p.add(at+".rateLimit.perSecond", "must be a positive number")
			}
			if rl.Burst < 1 {
				p.add(at+".rateLimit.burst", "must be at least 1")
			}
		}
		keyNames := map[string]bool{}
		for j, k := range t.APIKeys {
			kat := fmt.Sprintf("%s.apiKeys[%d]", at, j)
			p.name(kat+".name", k.Name)
			if k.Name != "" {
				if keyNames[k.Name] {
					p.add(kat+".name", "%q is used by another key of this tenant", k.Name)
				}
				keyNames[k.Name] = true
			}
			h := strings.ToLower(k.SHA256)
			if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
				p.add(kat+".sha256", "must be 64 hex characters (the SHA-256 of the key: kapbridge hash-key)")
			} else if first, dup := keyHashes[h]; dup {
				p.add(kat+".sha256", "the same key is already configured at %s", first)
			} else {
				keyHashes[h] = kat
			}
			for l, s := range k.Scopes {
				if sc, err := ParseScope(s); err != nil {
					p.add(fmt.Sprintf("%s.scopes[%d]", kat, l), "%v", err)
				} else if sc.Context != "system" {
					p.add(fmt.Sprintf("%s.scopes[%d]", kat, l), "an API key can hold only system/ scopes")
				}
			}
		}
	}

	issuers := map[string]bool{}
	for i, is := range c.Issuers {
		at := fmt.Sprintf("issuers[%d]", i)
		p.httpURL(at+".issuer", is.Issuer)
		if is.Issuer != "" {
			if issuers[is.Issuer] {
				p.add(at+".issuer", "is configured twice")
			}
			issuers[is.Issuer] = true
		}
		switch {
		case is.JWKSURL == "" && len(is.KeyFiles) == 0:
			p.add(at, "needs jwksUrl or keyFiles")
		case is.JWKSURL != "":
			p.httpURL(at+".jwksUrl", is.JWKSURL)
		}
		for j, f := range is.KeyFiles {
			p.file(fmt.Sprintf("%s.keyFiles[%d]", at, j), f)
		}
		if strings.TrimSpace(is.Audience) == "" {
			p.add(at+".audience", "is required (the aud the tokens must carry, usually the gateway's base URL)")
		}
		switch {
		case is.Tenant == "" && is.TenantClaim == "":
			p.add(at, "needs tenant or tenantClaim")
		case is.Tenant != "" && is.TenantClaim != "":
			p.add(at, "set tenant or tenantClaim, not both")
		case is.Tenant != "" && !tenants[is.Tenant]:
			p.add(at+".tenant", "no tenant is named %q", is.Tenant)
		}
	}

	if len(p) == 0 {
		return nil
	}
	return &kap.Error{Code: kap.EINVALID, Message: "invalid configuration", Issues: p}
}

func (c *Config) validateTarget(p *problems, at string, t Target, getenv func(string) string) {
	p.name(at+".name", t.Name)
	switch t.Type {
	case "fhir":
		p.httpURL(at+".baseUrl", t.BaseURL)
	case "ndjson":
		if t.Dir == "" {
			p.add(at+".dir", "is required")
		}
	case "":
		p.add(at+".type", "is required (fhir or ndjson)")
	default:
		p.add(at+".type", "must be one of fhir, ndjson")
	}
	switch t.Kind {
	case "", "ehr", "payer":
	default:
		p.add(at+".kind", "must be one of ehr, payer")
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{{"attemptTimeout", t.AttemptTimeout}, {"totalTimeout", t.TotalTimeout}} {
		if d.v < 0 {
			p.add(at+"."+d.name, "must be positive")
		}
	}
	if t.AttemptTimeout > 0 && t.TotalTimeout > 0 && t.TotalTimeout < t.AttemptTimeout {
		p.add(at+".totalTimeout", "must not be shorter than attemptTimeout")
	}
	if t.MaxAttempts < 0 {
		p.add(at+".maxAttempts", "must be positive")
	}
	if t.Concurrency < 0 {
		p.add(at+".concurrency", "must be positive")
	}
	if t.Type != "fhir" {
		if t.Auth.Type != "" && t.Auth.Type != "none" {
			p.add(at+".auth.type", "applies to fhir targets only")
		}
		return
	}
	a, aat := t.Auth, at+".auth"
	env := func(field, name string) {
		if name == "" {
			p.add(aat+"."+field, "is required for auth type %s", a.Type)
		} else if getenv(name) == "" {
			p.add(aat+"."+field, "the environment variable %s is not set", name)
		}
	}
	switch a.Type {
	case "", "none":
	case "bearer":
		env("tokenEnv", a.TokenEnv)
	case "basic":
		p.httpURL(aat+".tokenUrl", a.TokenURL)
		if a.ClientID == "" {
			p.add(aat+".clientId", "is required for auth type basic")
		}
		env("secretEnv", a.SecretEnv)
	case "smart-backend":
		p.httpURL(aat+".tokenUrl", a.TokenURL)
		if a.ClientID == "" {
			p.add(aat+".clientId", "is required for auth type smart-backend")
		}
		if a.KeyFile == "" && a.SecretEnv == "" {
			p.add(aat+".keyFile", "is required for auth type smart-backend (or secretEnv for a symmetric client)")
		}
		if a.KeyFile != "" {
			p.keyFiles(aat+".keyFile", a.KeyFile)
		}
		switch a.Alg {
		case "", "RS384", "ES384":
		default:
			p.add(aat+".alg", "must be RS384 or ES384")
		}
		if a.SecretEnv != "" && a.KeyFile == "" {
			env("secretEnv", a.SecretEnv)
		}
	case "mtls":
		if a.CertFile == "" {
			p.add(aat+".certFile", "is required for auth type mtls")
		}
		if a.CertKeyFile == "" {
			p.add(aat+".certKeyFile", "is required for auth type mtls")
		}
	default:
		p.add(aat+".type", "must be one of none, bearer, basic, smart-backend, mtls")
	}
	// A CA bundle and a client certificate work with every auth type.
	if a.CAFile != "" {
		p.file(aat+".caFile", a.CAFile)
	}
	if a.CertFile != "" {
		p.file(aat+".certFile", a.CertFile)
	}
	if a.CertKeyFile != "" {
		p.file(aat+".certKeyFile", a.CertKeyFile)
	}
	if (a.CertFile == "") != (a.CertKeyFile == "") && a.Type != "mtls" {
		p.add(aat+".certFile", "certFile and certKeyFile go together")
	}
}

// keyFiles checks a keyFile setting: a PEM file, a directory, a glob, or
// several of them separated by commas; each must name something.
func (p *problems) keyFiles(path, v string) {
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if strings.ContainsAny(part, "*?[") {
			if m, err := filepath.Glob(part); err != nil || len(m) == 0 {
				p.add(path, "%s matches no file", part)
			}
			continue
		}
		if _, err := os.Stat(part); err != nil {
			p.add(path, "%s cannot be read: %v", part, unwrapPathError(err))
		}
	}
}

// validSystem reports whether s can be a FHIR identifier system: an
// absolute http(s) URL with a host, or a urn:oid:/urn:uuid: URN, with no
// space or '|' (the search separator).
func validSystem(s string) bool {
	if strings.ContainsAny(s, " |\t\n") || len(s) > 512 {
		return false
	}
	switch {
	case strings.HasPrefix(s, "urn:oid:"):
		return len(s) > len("urn:oid:") && strings.Trim(s[len("urn:oid:"):], "0123456789.") == ""
	case strings.HasPrefix(s, "urn:uuid:"):
		return len(s) == len("urn:uuid:")+36
	case strings.HasPrefix(s, "https://"), strings.HasPrefix(s, "http://"):
		u, err := url.Parse(s)
		return err == nil && u.Host != "" && u.RawQuery == "" && u.Fragment == ""
	}
	return false
}
