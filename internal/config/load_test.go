package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load("", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != DefaultAddr || cfg.DataDir != DefaultDataDir || cfg.Role != RoleAll {
		t.Errorf("addr/dataDir/role = %q %q %q", cfg.Addr, cfg.DataDir, cfg.Role)
	}
	if cfg.RequestTimeout.D() != 30*time.Second {
		t.Errorf("requestTimeout = %v", cfg.RequestTimeout)
	}
	if len(cfg.Tenants) != 1 || cfg.Tenants[0].Name != "default" || !cfg.Tenants[0].Bootstrap {
		t.Fatalf("tenants = %+v", cfg.Tenants)
	}
	if !slices.Equal(cfg.Tenants[0].Targets, []string{"ndjson"}) {
		t.Errorf("default tenant targets = %v", cfg.Tenants[0].Targets)
	}
	if len(cfg.Targets) != 1 || cfg.Targets[0].Type != "ndjson" || cfg.Targets[0].Dir != filepath.Join(DefaultDataDir, "ndjson") {
		t.Errorf("targets = %+v", cfg.Targets)
	}
}

func TestLoadEnv(t *testing.T) {
	cfg, err := Load("", env(map[string]string{
		EnvAddr: ":9090", EnvDataDir: "/tmp/kb", EnvRedisURL: "redis://127.0.0.1:6379/2",
		EnvRole: "worker", EnvFHIRTarget: "http://127.0.0.1:8081/fhir",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != ":9090" || cfg.DataDir != "/tmp/kb" || cfg.RedisURL != "redis://127.0.0.1:6379/2" || cfg.Role != "worker" {
		t.Errorf("env not applied: %+v", cfg)
	}
	ehr, ok := cfg.TargetNamed("ehr")
	if !ok || ehr.Type != "fhir" || ehr.BaseURL != "http://127.0.0.1:8081/fhir" || ehr.Auth.Type != "none" {
		t.Fatalf("ehr target = %+v", ehr)
	}
	def, _ := cfg.TenantNamed("default")
	if !slices.Contains(def.Targets, "ehr") {
		t.Errorf("default tenant targets = %v", def.Targets)
	}
}

func TestLoadFileYAMLAndJSON(t *testing.T) {
	e := env(map[string]string{"EPIC_TOKEN": "t", "PAYER_SECRET": "s"})
	ycfg, err := Load("testdata/two-tenants.yaml", e)
	if err != nil {
		t.Fatal(err)
	}
	if len(ycfg.Tenants) != 2 || len(ycfg.Targets) != 2 || len(ycfg.Issuers) != 1 {
		t.Fatalf("parsed %d tenants, %d targets, %d issuers", len(ycfg.Tenants), len(ycfg.Targets), len(ycfg.Issuers))
	}
	if got := ycfg.Targets[0].AttemptTimeout.D(); got != 15*time.Second {
		t.Errorf("attemptTimeout = %v", got)
	}
	if got := ycfg.RequestTimeout.D(); got != 20*time.Second {
		t.Errorf("requestTimeout = %v", got)
	}
	b, _ := ycfg.TenantNamed("clinic-b")
	if !slices.Equal(b.Targets, []string{"epic"}) || b.RateLimit == nil || b.RateLimit.PerSecond != DefaultRatePerSecond {
		t.Errorf("clinic-b = %+v", b)
	}
	// The same configuration as JSON reads to the same value.
	data, err := json.Marshal(ycfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"attemptTimeout":"15s"`) {
		t.Errorf("durations are not written as strings: %s", data)
	}
	jcfg, err := Load(writeFile(t, "c.json", string(data)), e)
	if err != nil {
		t.Fatal(err)
	}
	jdata, _ := json.Marshal(jcfg)
	if string(jdata) != string(data) {
		t.Errorf("JSON round trip differs:\n%s\n%s", data, jdata)
	}
	// KAPBRIDGE_CONFIG names the file when path is empty.
	cfg, err := Load("", env(map[string]string{EnvConfig: "testdata/two-tenants.yaml", "EPIC_TOKEN": "t", "PAYER_SECRET": "s"}))
	if err != nil || len(cfg.Tenants) != 2 {
		t.Fatalf("KAPBRIDGE_CONFIG: %v, %d tenants", err, len(cfg.Tenants))
	}
}

func TestLoadRejectsUnknownFields(t *testing.T) {
	for name, content := range map[string]string{
		"top":       "adress: 1.2.3.4:80\n",
		"nested":    "tenants:\n  - name: a\n    apikeys2: []\n",
		"duplicate": "addr: a:1\naddr: b:2\n",
		"json":      `{"tenants":[{"name":"a","color":"red"}]}`,
		"duration":  "requestTimeout: 30\n",
		"badyaml":   "tenants: [\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load(writeFile(t, "c.yaml", content), env(nil))
			if kap.ErrorCode(err) != kap.EINVALID {
				t.Fatalf("err = %v, want EINVALID", err)
			}
			t.Log(err)
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), env(nil)); err == nil {
		t.Error("a missing file is not an error")
	}
}

func TestValidateReportsEverything(t *testing.T) {
	content := `
role: both
redisUrl: http://x
tenants:
  - name: a
    apiKeys:
      - {name: k1, sha256: "abc"}
      - {name: k1, sha256: "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7", scopes: ["system/Observation.rx", "patient/*.rs"]}
    targets: [nowhere]
    rateLimit: {perSecond: 0, burst: 0}
  - name: "bad name"
    apiKeys:
      - {name: k, sha256: "3A6EB0790F39AC87C94F3856B2DD2C5D110E6811602261A9A923D3BB23ADC8B7"}
  - name: a
issuers:
  - issuer: not-a-url
    audience: ""
  - issuer: https://idp.example.com
    jwksUrl: ftp://idp.example.com/keys
    audience: x
    tenant: nobody
    tenantClaim: t
targets:
  - {name: t1, type: fhir, baseUrl: "/relative", auth: {type: bearer, tokenEnv: MISSING_TOKEN}}
  - {name: t1, type: smtp}
  - {name: t3, type: fhir, baseUrl: "https://x.example.com/fhir", auth: {type: smart-backend, keyFile: /nonexistent.pem, alg: HS256}}
`
	_, err := Load(writeFile(t, "c.yaml", content), env(nil))
	if kap.ErrorCode(err) != kap.EINVALID {
		t.Fatalf("err = %v", err)
	}
	got := map[string]string{}
	for _, is := range kap.ErrorIssues(err) {
		got[is.Path] += is.Reason + "|"
	}
	want := []string{
		"role", "redisUrl",
		"tenants[0].apiKeys[0].sha256", "tenants[0].apiKeys[1].name", "tenants[0].apiKeys[1].scopes[0]", "tenants[0].apiKeys[1].scopes[1]",
		"tenants[0].targets[0]", "tenants[0].rateLimit.perSecond", "tenants[0].rateLimit.burst",
		"tenants[1].name", "tenants[1].apiKeys[0].sha256", "tenants[2].name",
		"issuers[0].issuer", "issuers[0]", "issuers[0].audience",
		"issuers[1].jwksUrl", "issuers[1]",
		"targets[0].baseUrl", "targets[0].auth.tokenEnv", "targets[1].name", "targets[1].type",
		"targets[2].auth.tokenUrl", "targets[2].auth.clientId", "targets[2].auth.keyFile", "targets[2].auth.alg",
	}
	for _, w := range want {
		if got[w] == "" {
			t.Errorf("no issue at %s", w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("issues at %d paths, want %d:\n%v", len(got), len(want), err)
	}
	if !strings.Contains(got["tenants[0].apiKeys[0].sha256"], "must be 64 hex characters") {
		t.Errorf("sha256 reason = %q", got["tenants[0].apiKeys[0].sha256"])
	}
	if !strings.Contains(got["tenants[1].apiKeys[0].sha256"], "already configured at tenants[0].apiKeys[1]") {
		t.Errorf("duplicate key reason = %q", got["tenants[1].apiKeys[0].sha256"])
	}
	if !strings.Contains(err.Error(), "tenants[0].apiKeys[0].sha256: must be 64 hex characters") {
		t.Errorf("Error() = %s", err)
	}
}

func TestValidateSecretEnvSet(t *testing.T) {
	p := "testdata/two-tenants.yaml"
	_, err := Load(p, env(map[string]string{"EPIC_TOKEN": "t"}))
	if err == nil || !strings.Contains(err.Error(), "targets[1].auth.secretEnv: the environment variable PAYER_SECRET is not set") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseScope(t *testing.T) {
	for _, tc := range []struct {
		in    string
		want  string
		error bool
	}{
		{in: "system/Observation.rs", want: "system/Observation.rs"},
		{in: "system/*.cruds", want: "system/*.cruds"},
		{in: "system/*.read", want: "system/*.rs"},
		{in: "system/*.write", want: "system/*.cud"},
		{in: "system/Patient.*", want: "system/Patient.cruds"},
		{in: "patient/Condition.cu?category=problem-list-item", want: "patient/Condition.cu?category=problem-list-item"},
		{in: "system/Observation.sr", error: true},
		{in: "system/Observation.rr", error: true},
		{in: "system/Observation.x", error: true},
		{in: "system/observation.rs", error: true},
		{in: "launch/patient", error: true},
		{in: "openid", error: true},
		{in: "admin/*.rs", error: true},
	} {
		s, err := ParseScope(tc.in)
		if tc.error {
			if err == nil {
				t.Errorf("ParseScope(%q) = %v, want an error", tc.in, s)
			}
			continue
		}
		if err != nil || s.String() != tc.want {
			t.Errorf("ParseScope(%q) = %v, %v; want %s", tc.in, s, err, tc.want)
		}
	}
	ss := ParseScopes("openid system/Observation.rs launch system/Patient.c patient/*.cruds system/Condition.cruds?category=x")
	for _, tc := range []struct {
		typ  string
		need Perm
		want bool
	}{
		{"Observation", PermRead, true},
		{"Observation", PermRead | PermSearch, true},
		{"Observation", PermCreate, false},
		{"Patient", PermCreate, true},
		{"Patient", PermCreate | PermUpdate, false},
		{"Condition", PermRead, false}, // patient/ and query-restricted scopes grant nothing
		{"Encounter", PermRead, false},
	} {
		if got := ss.Allows(tc.typ, tc.need); got != tc.want {
			t.Errorf("Allows(%s, %s) = %v", tc.typ, tc.need, got)
		}
	}
	if !ParseScopes("system/*.cu").Allows("Observation", PermCreate|PermUpdate) {
		t.Error("system/*.cu does not allow cu")
	}
}
