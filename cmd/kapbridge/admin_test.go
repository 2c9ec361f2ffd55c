package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The default start serves the admin console at /admin, and its bootstrap
// key signs in (as key "bootstrap"); a wrong key does not.
func TestServeAdminConsole(t *testing.T) {
	dir := t.TempDir()
	m := startServer(t, dir, io.Discard)
	defer m.Close()
	keyData, err := os.ReadFile(filepath.Join(dir, bootstrapKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	base := "http://" + m.Addr()

	resp, err := c.PostForm(base+"/admin/login", url.Values{"key": {"not-the-key"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d", resp.StatusCode)
	}
	resp, err = c.PostForm(base+"/admin/login", url.Values{"key": {strings.TrimSpace(string(keyData))}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "bootstrap") || !strings.Contains(string(b), `id="target-`) {
		t.Fatalf("overview after sign-in: %d %.300s", resp.StatusCode, b)
	}
	// The API's key does not open the console without the session.
	req, _ := http.NewRequest(http.MethodGet, base+"/admin/dead-letters", nil)
	req.Header.Set("X-API-Key", strings.TrimSpace(string(keyData)))
	resp, err = (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("API key on /admin: %d", resp.StatusCode)
	}
}
