package admin_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kapbridge/kap/adapters/admin"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
)

const otherAdminKey = "kap_other_admin_key_000000000000"

func pemFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.pem"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range m {
		out = append(out, strings.TrimSuffix(filepath.Base(f), ".pem"))
	}
	return out
}

// The keys page's three rotation actions over HTTP: CSRF required,
// scoped to the tenant's targets, audited with the kid (never key
// material), state on disk.
func TestKeyRotationActions(t *testing.T) {
	dir := t.TempDir()
	k1, err := targetauth.GenerateKey(targetauth.ES384)
	if err != nil {
		t.Fatal(err)
	}
	pemData, _ := k1.MarshalPEM()
	if err := os.WriteFile(filepath.Join(dir, k1.ID+".pem"), pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	single := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(single, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	smart := func(name, keyFile string) config.Target {
		return config.Target{Name: name, Type: "fhir", BaseURL: "https://ehr.example/fhir", Auth: config.TargetAuth{
			Type: targetauth.TypeSMARTBackend, TokenURL: "https://ehr.example/token", ClientID: "kap", KeyFile: keyFile, Alg: targetauth.ES384}}
	}
	cfg := config.Config{
		Tenants: []config.Tenant{
			{Name: "clinic1", APIKeys: []config.APIKey{{Name: "it-admin", SHA256: httpapi.HashKey(adminKey), Admin: true}}},
			{Name: "clinic2", Targets: []string{"files"}, APIKeys: []config.APIKey{{Name: "other-admin", SHA256: httpapi.HashKey(otherAdminKey), Admin: true}}},
		},
		Targets: []config.Target{smart("ehr", dir), smart("ehr-file", single), {Name: "files", Type: "ndjson", Dir: t.TempDir()}},
	}
	sets, err := targetauth.KeySetsFromConfig(cfg.Targets)
	if err != nil {
		t.Fatal(err)
	}
	store := stores["bolt"](t)
	audit := &syncBuffer{}
	con, err := admin.New(admin.Config{Store: store, Codec: fhir.MustCodec(), Config: cfg, KeySets: sets, Audit: audit,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{srv: httptest.NewServer(con), store: store, audit: audit}
	t.Cleanup(func() { e.srv.Close(); con.Close(); store.Close() })
	c := e.client(t)
	body(t, e.login(t, c, adminKey))

	resp, _ := c.Get(e.srv.URL + "/admin/keys")
	page := body(t, resp)
	if !strings.Contains(page, "Generate and publish a new key (ES384)") || !strings.Contains(page, "not a directory") {
		t.Fatalf("keys page lacks the rotation forms or the single-file explanation:\n%s", page)
	}
	post := func(c *http.Client, action string, v url.Values) (int, string) {
		t.Helper()
		resp, err := c.PostForm(e.srv.URL+"/admin/keys/"+action, v)
		if err != nil {
			t.Fatal(err)
		}
		b := body(t, resp)
		return resp.StatusCode, b
	}

	// 1. Publish: refused without the CSRF token; then a second key file.
	if st, _ := post(c, "publish", url.Values{"target": {"ehr"}}); st != http.StatusForbidden || len(pemFiles(t, dir)) != 1 {
		t.Fatalf("publish without CSRF: %d, %d keys", st, len(pemFiles(t, dir)))
	}
	tok := e.csrf(t, c, "/admin/keys")
	if st, _ := post(c, "publish", url.Values{"csrf": {tok}, "target": {"ehr"}}); st != http.StatusSeeOther {
		t.Fatalf("publish: %d", st)
	}
	files := pemFiles(t, dir)
	if len(files) != 2 {
		t.Fatalf("after publish: keys %v", files)
	}
	kid2 := files[0]
	if kid2 == k1.ID {
		kid2 = files[1]
	}
	if ev := findAudit(t, audit.String(), "key-publish"); ev == nil || ev.Details["kid"] != kid2 || ev.Details["target"] != "ehr" ||
		ev.Who != "key:it-admin" || ev.Action != "C" {
		t.Fatalf("publish audit: %s", audit.String())
	}
	if sets[0].Active().ID != k1.ID {
		t.Fatal("the published key signs before it was activated")
	}
	resp, _ = c.Get(e.srv.URL + "/admin/keys")
	if page = body(t, resp); !strings.Contains(page, kid2) || !strings.Contains(page, "Make it the signing key") {
		t.Fatal("the published key is not on the page")
	}

	// 2. Activate: refused without the token and for an unknown kid.
	if st, _ := post(c, "activate", url.Values{"target": {"ehr"}, "kid": {kid2}}); st != http.StatusForbidden {
		t.Fatalf("activate without CSRF: %d", st)
	}
	if st, _ := post(c, "activate", url.Values{"csrf": {tok}, "target": {"ehr"}, "kid": {"unknown"}}); st != http.StatusNotFound {
		t.Fatalf("activate unknown kid: %d", st)
	}
	if st, _ := post(c, "activate", url.Values{"csrf": {tok}, "target": {"ehr"}, "kid": {kid2}}); st != http.StatusSeeOther {
		t.Fatalf("activate: %d", st)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, targetauth.ActiveFile)); strings.TrimSpace(string(b)) != kid2 {
		t.Fatalf("active file %q, want %s", b, kid2)
	}
	if ev := findAudit(t, audit.String(), "key-activate"); ev == nil || ev.Details["kid"] != kid2 || ev.Details["previous"] != k1.ID {
		t.Fatalf("activate audit: %s", audit.String())
	}

	// 3. Retire: not the signing key; the old key moves to retired/.
	if st, b := post(c, "retire", url.Values{"csrf": {tok}, "target": {"ehr"}, "kid": {kid2}}); st != http.StatusConflict || !strings.Contains(b, "signing key") {
		t.Fatalf("retire the signing key: %d", st)
	}
	if st, _ := post(c, "retire", url.Values{"target": {"ehr"}, "kid": {k1.ID}}); st != http.StatusForbidden {
		t.Fatalf("retire without CSRF: %d", st)
	}
	if st, _ := post(c, "retire", url.Values{"csrf": {tok}, "target": {"ehr"}, "kid": {k1.ID}}); st != http.StatusSeeOther {
		t.Fatalf("retire: %d", st)
	}
	if _, err := os.Stat(filepath.Join(dir, targetauth.RetiredDir, k1.ID+".pem")); err != nil {
		t.Fatalf("retired key: %v", err)
	}
	if got := pemFiles(t, dir); len(got) != 1 || got[0] != kid2 {
		t.Fatalf("after retire: keys %v", got)
	}
	if ev := findAudit(t, audit.String(), "key-retire"); ev == nil || ev.Details["kid"] != k1.ID || ev.Action != "D" {
		t.Fatalf("retire audit: %s", audit.String())
	}
	if strings.Contains(audit.String(), "PRIVATE") || strings.Contains(audit.String(), `"d"`) {
		t.Fatal("key material in the audit trail")
	}

	// A restart reads the rotation from disk.
	again, err := targetauth.KeySetsFromConfig(cfg.Targets)
	if err != nil || again[0].Active().ID != kid2 || len(again[0].Keys()) != 1 {
		t.Fatalf("after restart: %v", err)
	}

	// A single key file cannot be rotated here.
	if st, b := post(c, "publish", url.Values{"csrf": {tok}, "target": {"ehr-file"}}); st != http.StatusUnprocessableEntity || !strings.Contains(b, "directory") {
		t.Fatalf("publish for a single key file: %d", st)
	}
	// Another tenant's admin cannot reach the target.
	c2 := e.client(t)
	body(t, e.login(t, c2, otherAdminKey))
	tok2 := e.csrf(t, c2, "/admin/keys")
	if st, _ := post(c2, "publish", url.Values{"csrf": {tok2}, "target": {"ehr"}}); st != http.StatusUnprocessableEntity || len(pemFiles(t, dir)) != 1 {
		t.Fatalf("another tenant's publish: %d", st)
	}
}
