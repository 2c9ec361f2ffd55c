package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigMasksSecrets: kapbridge config prints the effective
// configuration without the Redis password, the sentinel password or a
// token in a URL's query, and keeps the rest of those URLs readable.
func TestConfigMasksSecrets(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	yaml := "redisUrl: redis://kapuser:S3cretPw@s1:26379,s2:26379?master_name=kapmaster&sentinel_password=SentPw9&dial_timeout=3s\n" +
		"targets:\n  - name: ehr\n    type: fhir\n    baseUrl: https://ehr.example/fhir?access_token=Tok3n7&site=a\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"config", "--config", file, "--data-dir", dir}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	got := out.String()
	for _, secret := range []string{"S3cretPw", "SentPw9", "Tok3n7"} {
		if strings.Contains(got, secret) {
			t.Errorf("the effective config shows %q:\n%s", secret, got)
		}
	}
	for _, want := range []string{"redis://kapuser:xxxxx@s1:26379,s2:26379?master_name=kapmaster\u0026sentinel_password=xxxxx\u0026dial_timeout=3s",
		"https://ehr.example/fhir?access_token=xxxxx\u0026site=a"} {
		// encoding/json escapes & as \u0026.
		if !strings.Contains(got, strings.ReplaceAll(want, "&", `\u0026`)) {
			t.Errorf("the effective config lacks %q:\n%s", want, got)
		}
	}
}

// TestConfigRedisURLErrors: kapbridge config and kapbridge serve report a
// bad redisUrl the same way (one parser), without the URL's password.
func TestConfigRedisURLErrors(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"redis://:Pw1@h1:7000,h2:99999", "redisUrl: host 2 has no valid port (1-65535)"},
		{"redis://:Pw1@h1:7000,h2:7001/1", "redisUrl: Redis Cluster has only database 0"},
		{"redis://:Pw1@h:1?no_such_option=1", "no_such_option"},
	} {
		var stderrs []string
		for _, cmd := range []string{"config", "serve"} {
			var out, errb bytes.Buffer
			code := Run(context.Background(), []string{cmd, "--redis-url", tc.url, "--data-dir", t.TempDir(), "--addr", "127.0.0.1:0"}, nil, &out, &errb)
			if code == 0 {
				t.Fatalf("%s %s: exit 0", cmd, tc.url)
			}
			msg := errb.String()
			if !strings.Contains(msg, tc.want) || strings.Contains(msg, "Pw1") {
				t.Errorf("%s %s: stderr %q, want %q without the password", cmd, tc.url, msg, tc.want)
			}
			stderrs = append(stderrs, strings.TrimPrefix(strings.TrimPrefix(msg, "kapbridge config"), "kapbridge serve"))
		}
		if stderrs[0] != stderrs[1] {
			t.Errorf("%s: config says %q, serve %q", tc.url, stderrs[0], stderrs[1])
		}
	}
}
