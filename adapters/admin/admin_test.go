package admin_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/admin"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/httpapi"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
)

// These tests need no browser: the console's security over plain HTTP, on
// a real bbolt store.

type env struct {
	srv   *httptest.Server
	store kap.Store
	audit *syncBuffer
}

// stores are the backends the console is tested on: the embedded bbolt
// file and a real redis-server.
var stores = map[string]func(t testing.TB) kap.Store{
	"bolt": func(t testing.TB) kap.Store {
		s, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	},
	"redis": func(t testing.TB) kap.Store {
		srv := redistest.Start(t, redistest.Options{})
		c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{srv.Addr}})
		t.Cleanup(func() { c.Close() })
		return kapredis.New(c, kapredis.Options{})
	},
}

func newEnv(t testing.TB, tlsServer bool) *env {
	return newEnvOn(t, tlsServer, stores["bolt"](t))
}

func newEnvOn(t testing.TB, tlsServer bool, store kap.Store) *env {
	t.Helper()
	codec, err := fhir.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Config{
		Tenants: []config.Tenant{
			{Name: "clinic1", APIKeys: []config.APIKey{
				{Name: "it-admin", SHA256: httpapi.HashKey(adminKey), Admin: true},
				{Name: "emr", SHA256: httpapi.HashKey(apiKey)},
			}},
			{Name: "clinic2", APIKeys: []config.APIKey{{Name: "other-admin", SHA256: httpapi.HashKey("kap_other_admin_key_000000000000"), Admin: true}}},
		},
		Targets: []config.Target{{Name: "files", Type: "ndjson", Dir: t.TempDir()}},
	}
	audit := &syncBuffer{}
	c, err := admin.New(admin.Config{Store: store, Codec: codec, Config: cfg, Audit: audit, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var srv *httptest.Server
	if tlsServer {
		srv = httptest.NewTLSServer(c)
	} else {
		srv = httptest.NewServer(c)
	}
	t.Cleanup(func() { srv.Close(); c.Close(); store.Close() })
	return &env{srv: srv, store: store, audit: audit}
}

func (e *env) client(t testing.TB) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b)
}

func (e *env) login(t *testing.T, c *http.Client, key string) *http.Response {
	t.Helper()
	resp, err := c.PostForm(e.srv.URL+"/admin/login", url.Values{"key": {key}})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (e *env) csrf(t *testing.T, c *http.Client, page string) string {
	t.Helper()
	resp, err := c.Get(e.srv.URL + page)
	if err != nil {
		t.Fatal(err)
	}
	m := csrfRE.FindStringSubmatch(body(t, resp))
	if m == nil {
		t.Fatalf("no CSRF token on %s", page)
	}
	return m[1]
}

// deadLetter queues a record version of tenant for "files" and
// dead-letters it.
func (e *env) deadLetter(t *testing.T, tenant, id string) kap.OutboxMessage {
	t.Helper()
	ctx := context.Background()
	rec := kap.StoredRecord{Tenant: tenant, Kind: "Client", ID: id, ClientID: id, ContentHash: "h-" + id,
		Record: json.RawMessage(`{"kind":"Client","id":"` + id + `"}`), Date: time.Now()}
	if _, _, err := e.store.Records().Put(ctx, rec, kap.PutOptions{Targets: []string{"files"}}); err != nil {
		t.Fatal(err)
	}
	ls, err := e.store.Outbox().Lease(ctx, "files", 10)
	if err != nil || len(ls) == 0 {
		t.Fatalf("lease: %v %d", err, len(ls))
	}
	for _, l := range ls {
		if err := e.store.Outbox().DeadLetter(ctx, l, "refused by the target (HTTP 422)", kap.Attempt{At: time.Now(), Status: 422}); err != nil {
			t.Fatal(err)
		}
	}
	return ls[0].Message
}

func TestLoginAndSession(t *testing.T) {
	for name, open := range stores {
		t.Run(name, func(t *testing.T) { testLoginAndSession(t, newEnvOn(t, false, open(t))) })
	}
}

func testLoginAndSession(t *testing.T, e *env) {
	c := e.client(t)
	resp, _ := c.Get(e.srv.URL + "/admin/")
	body(t, resp)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/admin/login" {
		t.Fatalf("without a session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	// A key that is not an admin key, and an unknown key, are refused.
	for _, k := range []string{apiKey, "nope", ""} {
		resp := e.login(t, c, k)
		if b := body(t, resp); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(b, "not an admin key") {
			t.Fatalf("login with %q: %d", k, resp.StatusCode)
		}
	}
	resp = e.login(t, c, adminKey)
	body(t, resp)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	ck := resp.Cookies()
	if len(ck) != 1 || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode || ck[0].Secure || ck[0].Path != "/admin" {
		t.Fatalf("cookie over http: %+v", ck)
	}
	if strings.Contains(ck[0].Value, adminKey) {
		t.Fatal("the cookie carries the key")
	}
	resp, _ = c.Get(e.srv.URL + "/admin/")
	b := body(t, resp)
	if resp.StatusCode != http.StatusOK || !strings.Contains(b, "clinic1") {
		t.Fatalf("overview: %d", resp.StatusCode)
	}
	for h, want := range map[string]string{"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"} {
		if resp.Header.Get(h) != want {
			t.Fatalf("%s: %q", h, resp.Header.Get(h))
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("CSP %q", csp)
	}

	// A tampered cookie opens nothing.
	u, _ := url.Parse(e.srv.URL + "/admin/")
	good := c.Jar.Cookies(u)[0].Value
	bad := &http.Client{CheckRedirect: c.CheckRedirect}
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/admin/", nil)
	req.AddCookie(&http.Cookie{Name: "kap_admin", Value: strings.Replace(good, "clinic1", "clinic2", 1) + "x"})
	resp, _ = bad.Do(req)
	body(t, resp)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("tampered cookie: %d", resp.StatusCode)
	}

	// Logout revokes the session: replaying the old cookie fails.
	tok := e.csrf(t, c, "/admin/")
	resp, _ = c.PostForm(e.srv.URL+"/admin/logout", url.Values{"csrf": {tok}})
	body(t, resp)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodGet, e.srv.URL+"/admin/", nil)
	req.AddCookie(&http.Cookie{Name: "kap_admin", Value: good})
	resp, _ = bad.Do(req)
	body(t, resp)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the old cookie after logout: %d", resp.StatusCode)
	}
	if a := e.audit.String(); findAudit(t, a, "login") == nil || findAudit(t, a, "logout") == nil || strings.Contains(a, adminKey) {
		t.Fatalf("audit: %s", a)
	}
}

func TestSecureCookieUnderTLS(t *testing.T) {
	e := newEnv(t, true)
	resp := e.login(t, e.client(t), adminKey)
	body(t, resp)
	if ck := resp.Cookies(); len(ck) != 1 || !ck[0].Secure {
		t.Fatalf("cookie under TLS: %+v", ck)
	}
}

func TestCSRFAndTenantScope(t *testing.T) {
	for name, open := range stores {
		t.Run(name, func(t *testing.T) { testCSRFAndTenantScope(t, newEnvOn(t, false, open(t))) })
	}
}

func testCSRFAndTenantScope(t *testing.T, e *env) {
	own := e.deadLetter(t, "clinic1", "c-own")
	other := e.deadLetter(t, "clinic2", "c-other")
	c := e.client(t)
	body(t, e.login(t, c, adminKey))

	// A POST without the CSRF token is refused and changes nothing.
	resp, _ := c.PostForm(e.srv.URL+"/admin/dead-letters/retry", url.Values{"target": {"files"}, "id": {own.ID}})
	body(t, resp)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("retry without CSRF: %d", resp.StatusCode)
	}
	if st, _ := e.store.Outbox().Status(context.Background(), "clinic1", "files", own.ID); st.State != kap.MessageDead {
		t.Fatalf("state after a refused retry: %s", st.State)
	}

	// A POST from another site (Origin) is refused even with the token.
	tok0 := e.csrf(t, c, "/admin/dead-letters")
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/admin/dead-letters/retry",
		strings.NewReader(url.Values{"csrf": {tok0}, "target": {"files"}, "id": {own.ID}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	resp, _ = c.Do(req)
	body(t, resp)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin retry: %d", resp.StatusCode)
	}

	// The dead letters page shows this tenant's only.
	resp, _ = c.Get(e.srv.URL + "/admin/dead-letters")
	b := body(t, resp)
	if !strings.Contains(b, "c-own") || strings.Contains(b, "c-other") {
		t.Fatalf("dead letters across tenants")
	}
	// Another tenant's record and dead letter are out of reach.
	resp, _ = c.Get(e.srv.URL + "/admin/records/Client/c-other")
	body(t, resp)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("another tenant's trace: %d", resp.StatusCode)
	}
	tok := e.csrf(t, c, "/admin/dead-letters")
	resp, _ = c.PostForm(e.srv.URL+"/admin/dead-letters/retry", url.Values{"csrf": {tok}, "target": {"files"}, "id": {other.ID}})
	body(t, resp)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("retry of another tenant's dead letter: %d", resp.StatusCode)
	}
	if st, _ := e.store.Outbox().Status(context.Background(), "clinic2", "files", other.ID); st.State != kap.MessageDead {
		t.Fatalf("the other tenant's dead letter was touched: %s", st.State)
	}

	// Discard needs a reason; with one it is audited and hidden.
	resp, _ = c.PostForm(e.srv.URL+"/admin/dead-letters/discard", url.Values{"csrf": {tok}, "target": {"files"}, "id": {own.ID}, "reason": {"  "}})
	if b := body(t, resp); resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(b, "reason") {
		t.Fatalf("discard without a reason: %d", resp.StatusCode)
	}
	resp, _ = c.PostForm(e.srv.URL+"/admin/dead-letters/discard", url.Values{"csrf": {tok}, "target": {"files"}, "id": {own.ID}, "reason": {"test record"}})
	body(t, resp)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("discard: %d", resp.StatusCode)
	}
	resp, _ = c.Get(e.srv.URL + "/admin/dead-letters")
	if b := body(t, resp); strings.Contains(b, "c-own") {
		t.Fatal("a discarded dead letter is still listed")
	}
	if _, err := e.store.Outbox().Status(context.Background(), "clinic1", "files", own.ID); kap.ErrorCode(err) != kap.ENOTFOUND {
		t.Fatalf("the discarded dead letter is still in the outbox: %v", err)
	}
	if dls, _ := e.store.Outbox().DeadLetters(context.Background(), "clinic1", "files", 10); len(dls) != 0 {
		t.Fatalf("%d dead letters left after the discard", len(dls))
	}
	resp, _ = c.PostForm(e.srv.URL+"/admin/dead-letters/discard", url.Values{"csrf": {tok}, "target": {"files"}, "id": {own.ID}, "reason": {"again"}})
	if body(t, resp); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("discard of a discarded dead letter: %d, want 404", resp.StatusCode)
	}
	if ev := findAudit(t, e.audit.String(), "discard"); ev == nil || ev.Details["reason"] != "test record" ||
		ev.Site != "clinic1" || ev.Who != "key:it-admin" || ev.Action != "U" {
		t.Fatalf("audit: %s", e.audit.String())
	}
}

func TestSearchIsAPostAndPreviewNamesTheField(t *testing.T) {
	e := newEnv(t, false)
	e.deadLetter(t, "clinic1", "c777")
	c := e.client(t)
	body(t, e.login(t, c, adminKey))
	tok := e.csrf(t, c, "/admin/deliveries")
	resp, _ := c.PostForm(e.srv.URL+"/admin/deliveries", url.Values{"csrf": {tok}, "client": {"c777"}, "state": {"dead"}})
	b := body(t, resp)
	if resp.StatusCode != http.StatusOK || !strings.Contains(b, "files: dead") {
		t.Fatalf("search: %d", resp.StatusCode)
	}
	if strings.Contains(resp.Request.URL.String(), "c777") {
		t.Fatal("the client id is in the URL")
	}
	resp, _ = c.PostForm(e.srv.URL+"/admin/deliveries", url.Values{"csrf": {tok}, "client": {"c777"}, "from": {"yesterday"}})
	if b := body(t, resp); resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(b, "<strong>from</strong>") {
		t.Fatalf("bad date: %d", resp.StatusCode)
	}
	resp, _ = c.PostForm(e.srv.URL+"/admin/mapping", url.Values{"csrf": {tok},
		"record": {`{"kind":"DosingSession","id":"ds-1","clientId":"c1","sessionNumber":"one"}`}})
	b = body(t, resp)
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(b, "sessionNumber") {
		t.Fatalf("preview of a bad record: %d %s", resp.StatusCode, b)
	}
	// An uploaded file (multipart) is previewed like pasted text.
	var mb bytes.Buffer
	mw := multipart.NewWriter(&mb)
	mw.WriteField("csrf", tok)
	fw, _ := mw.CreateFormFile("file", "record.json")
	fw.Write([]byte(`{"kind":"Client","id":"c-up","name":{"family":"X","given":["Y"]},"birthDate":"yesterday","gender":"female"}`))
	mw.Close()
	resp, _ = c.Post(e.srv.URL+"/admin/mapping", mw.FormDataContentType(), &mb)
	if b := body(t, resp); resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(b, "birthDate") {
		t.Fatalf("preview of an uploaded file: %d", resp.StatusCode)
	}
	resp, _ = c.PostForm(e.srv.URL+"/admin/mapping", url.Values{"csrf": {tok}, "record": {`{"kind":`}})
	if b := body(t, resp); resp.StatusCode != http.StatusUnprocessableEntity || strings.Contains(b, "panic") {
		t.Fatalf("preview of broken JSON: %d", resp.StatusCode)
	}
}

// auditEvent is what the tests read of an AuditEvent line.
type auditEvent struct {
	Action, Site, Who string
	Details           map[string]string
}

// findAudit returns the last AuditEvent of the admin action (subtype) in
// the trail, or nil.
func findAudit(t testing.TB, trail, action string) *auditEvent {
	t.Helper()
	var found *auditEvent
	for _, line := range strings.Split(strings.TrimSpace(trail), "\n") {
		var ev struct {
			ResourceType string
			Action       string
			Subtype      []struct{ Code string }
			Agent        []struct {
				Who struct {
					Identifier struct{ Value string }
				}
			}
			Source struct{ Site string }
			Entity []struct {
				Detail []struct{ Type, ValueString string }
			}
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.ResourceType != "AuditEvent" {
			t.Fatalf("not an AuditEvent line: %q", line)
		}
		if len(ev.Subtype) == 0 || ev.Subtype[0].Code != action {
			continue
		}
		a := &auditEvent{Action: ev.Action, Site: ev.Source.Site, Details: map[string]string{}}
		if len(ev.Agent) > 0 {
			a.Who = ev.Agent[0].Who.Identifier.Value
		}
		for _, en := range ev.Entity {
			for _, d := range en.Detail {
				a.Details[d.Type] = d.ValueString
			}
		}
		found = a
	}
	return found
}
