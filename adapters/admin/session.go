package admin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/kapbridge/kap"
)

// cookieName is the session cookie.
const cookieName = "kap_admin"

// session is the signed content of the session cookie.
type session struct {
	ID      string `json:"sid"`
	Tenant  string `json:"tenant"`
	KeyName string `json:"key"` // the admin API key's configured name
	Exp     int64  `json:"exp"` // unix seconds
}

func (c *Console) sign(b []byte) string {
	m := hmac.New(sha256.New, c.key)
	m.Write(b)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (c *Console) encodeSession(s session) string {
	b, _ := json.Marshal(s)
	return base64.RawURLEncoding.EncodeToString(b) + "." + c.sign(b)
}

// sessionOf returns the request's valid session, or nil.
func (c *Console) sessionOf(r *http.Request) *session {
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return nil
	}
	body, sig, ok := strings.Cut(ck.Value, ".")
	if !ok {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil || !hmac.Equal([]byte(sig), []byte(c.sign(b))) {
		return nil
	}
	var s session
	if json.Unmarshal(b, &s) != nil || s.ID == "" || s.Tenant == "" {
		return nil
	}
	if c.cfg.Now().Unix() >= s.Exp {
		return nil
	}
	if _, err := c.cfg.Store.Cache().Get(r.Context(), revokedKey(s.ID)); err == nil {
		return nil // signed out
	}
	if !c.adminKeyExists(s.Tenant, s.KeyName) {
		return nil // the key was removed from the config
	}
	return &s
}

func revokedKey(id string) string { return "admin:revoked:" + id }

// csrf is the session's CSRF token: an HMAC of its id, so it needs no
// server state and dies with the session.
func (c *Console) csrf(s *session) string {
	return c.sign([]byte("csrf|" + s.ID))
}

// auth lets a request through with a valid session (and, for a POST, its
// CSRF token); otherwise it sends the browser to the login form.
func (c *Console) auth(next func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := c.sessionOf(r)
		if s == nil {
			if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/status") {
				http.Redirect(w, r, Prefix+"/login", http.StatusSeeOther)
				return
			}
			c.render(w, r, http.StatusUnauthorized, "error", nil, map[string]any{"Title": "Signed out",
				"Message": "Your session has ended. Sign in again."})
			return
		}
		if r.Method == http.MethodPost {
			if !sameOrigin(r) {
				c.render(w, r, http.StatusForbidden, "error", s, map[string]any{"Title": "Refused",
					"Message": "The form was sent from another site."})
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, kap.MaxRecordBytes+64<<10)
			tok := r.PostFormValue("csrf")
			if r.MultipartForm == nil && strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
				tok = r.FormValue("csrf")
			}
			if !hmac.Equal([]byte(tok), []byte(c.csrf(s))) {
				c.render(w, r, http.StatusForbidden, "error", s, map[string]any{"Title": "Refused",
					"Message": "The form's security token is missing or stale. Reload the page and try again."})
				return
			}
		}
		next(w, r, s)
	}
}

// adminKeyExists reports whether the tenant still has an admin key of that
// name.
func (c *Console) adminKeyExists(tenant, name string) bool {
	for _, t := range c.cfg.Config.Tenants {
		if t.Name != tenant {
			continue
		}
		for _, k := range t.APIKeys {
			if k.Admin && k.Name == name {
				return true
			}
		}
	}
	return false
}

// findAdminKey returns the tenant and key name of an admin API key. Every
// configured hash is compared in constant time.
func (c *Console) findAdminKey(key string) (tenant, name string, ok bool) {
	sum := sha256.Sum256([]byte(key))
	h := []byte(hex.EncodeToString(sum[:]))
	for _, t := range c.cfg.Config.Tenants {
		for _, k := range t.APIKeys {
			if subtle.ConstantTimeCompare(h, []byte(strings.ToLower(k.SHA256))) == 1 && k.Admin && !ok {
				tenant, name, ok = t.Name, k.Name, true
			}
		}
	}
	return tenant, name, ok
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if s := c.sessionOf(r); s != nil {
		http.Redirect(w, r, Prefix+"/", http.StatusSeeOther)
		return
	}
	c.render(w, r, http.StatusOK, "login", nil, nil)
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		c.render(w, r, http.StatusForbidden, "error", nil, map[string]any{"Title": "Refused",
			"Message": "The form was sent from another site."})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	ip := clientIP(r)
	ok, _, err := c.cfg.Store.RateLimiter().Allow(r.Context(), "admin-login:"+ip, 0.2, 10)
	if err == nil && !ok {
		c.render(w, r, http.StatusTooManyRequests, "login", nil, map[string]any{"Error": "Too many sign-in attempts. Wait a minute and try again."})
		return
	}
	key := strings.TrimSpace(r.PostFormValue("key"))
	tenant, name, found := c.findAdminKey(key)
	if key == "" || !found {
		c.audit(r, nil, "login-refused", nil)
		c.log.Warn("admin sign-in refused", "ip", ip)
		c.render(w, r, http.StatusUnauthorized, "login", nil, map[string]any{"Error": "This key is not an admin key of any tenant."})
		return
	}
	id := make([]byte, 16)
	rand.Read(id)
	s := session{ID: hex.EncodeToString(id), Tenant: tenant, KeyName: name, Exp: c.cfg.Now().Add(c.cfg.SessionTTL).Unix()}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: c.encodeSession(s), Path: Prefix, HttpOnly: true,
		Secure: r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https", SameSite: http.SameSiteStrictMode,
		MaxAge: int(c.cfg.SessionTTL / time.Second)})
	c.audit(r, &s, "login", nil)
	c.log.Info("admin signed in", "tenant", tenant, "key", name)
	http.Redirect(w, r, Prefix+"/", http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) {
	ttl := time.Until(time.Unix(s.Exp, 0)) + time.Minute
	if err := c.cfg.Store.Cache().Set(r.Context(), revokedKey(s.ID), []byte("1"), ttl); err != nil {
		c.log.Error("admin sign-out: revoke", "err", err)
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: Prefix, HttpOnly: true, MaxAge: -1,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	c.audit(r, s, "logout", nil)
	http.Redirect(w, r, Prefix+"/login?done=loggedout", http.StatusSeeOther)
}

// sameOrigin reports whether a POST came from the console's own pages: a
// browser sends Origin on form POSTs; when it is there it must name this
// host (defence in depth besides SameSite=Strict and the CSRF token).
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" { // "null": an opaque origin (privacy settings); the token decides
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// auditAction is how each console action is written: its AuditEvent.action
// (C R U D E) and whether it discloses PHI.
var auditActions = map[string]string{
	"login": "E", "login-refused": "E", "logout": "E", "test-target": "E",
	"view-record": "R", "search-deliveries": "R",
	"replay": "U", "replay-all": "U", "discard": "U", "resolve": "U",
	"key-publish": "C", "key-activate": "U", "key-retire": "D",
}

// audit writes one FHIR AuditEvent line (the shape of the API's audit
// trail, adapters/httpapi) to Config.Audit: who (tenant, key name, IP),
// what, when, and the action's details as entity.detail. It is the only
// place a discard reason goes.
func (c *Console) audit(r *http.Request, s *session, action string, details map[string]any) {
	if c.cfg.Audit == nil {
		return
	}
	type coding struct {
		System  string `json:"system,omitempty"`
		Code    string `json:"code"`
		Display string `json:"display,omitempty"`
	}
	type detail struct {
		Type        string `json:"type"`
		ValueString string `json:"valueString"`
	}
	outcome := "0"
	if action == "login-refused" {
		outcome = "4"
	}
	who := map[string]any{"display": "unauthenticated"}
	site := ""
	if s != nil {
		who = map[string]any{"identifier": map[string]string{"system": "urn:kapbridge:credential", "value": "key:" + s.KeyName}}
		site = s.Tenant
	}
	var ds []detail
	for _, k := range slices.Sorted(maps.Keys(details)) {
		ds = append(ds, detail{Type: k, ValueString: fmt.Sprint(details[k])})
	}
	ev := map[string]any{
		"resourceType": "AuditEvent",
		"type":         coding{System: "http://dicom.nema.org/resources/ontology/DCM", Code: "110100", Display: "Application Activity"},
		"subtype":      []coding{{System: "urn:kapbridge:admin-action", Code: action}},
		"action":       auditActions[action],
		"recorded":     c.cfg.Now().UTC().Format(time.RFC3339Nano),
		"outcome":      outcome,
		"agent": []map[string]any{{"who": who, "requestor": true,
			"network": map[string]string{"address": clientIP(r), "type": "2"}}},
		"source": map[string]any{"site": site, "observer": map[string]string{"display": "kapbridge admin console"},
			"type": []coding{{System: "http://terminology.hl7.org/CodeSystem/security-source-type", Code: "4", Display: "Application Server"}}},
	}
	if len(ds) > 0 {
		ev["entity"] = []map[string]any{{"detail": ds}}
	}
	b, _ := json.Marshal(ev)
	c.auditMu.Lock()
	defer c.auditMu.Unlock()
	if _, err := c.cfg.Audit.Write(append(b, '\n')); err != nil {
		c.log.Error("admin audit write failed", "error_type", fmt.Sprintf("%T", err))
	}
}
