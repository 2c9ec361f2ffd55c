package ehr_test

// startEHR starts the Medplum FHIR test server (adapters/ehr/ehrtest/server)
// on loopback for the pull tests and returns its FHIR base URL.
// TODO(H6): use ehrtest.Start once adapters/ehr/ehrtest has its Go package.

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

func startEHR(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("the Medplum FHIR test server is skipped under -short")
	}
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "ehrtest", "server")
	node := filepath.Join(dir, "node_modules", ".bin", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@medplum", "fhir-router")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the ehrtest server is not installed: (cd %s && npm ci)", dir)
		}
		t.Skipf("the ehrtest server is not installed: (cd %s && npm ci)", dir)
	}
	cmd := exec.Command(node, "server.mjs")
	cmd.Dir = dir
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-line:
		var hello struct {
			Port int    `json:"port"`
			Base string `json:"base"`
		}
		if err := json.Unmarshal([]byte(l), &hello); err != nil || hello.Port == 0 {
			t.Fatalf("ehrtest server said %q", l)
		}
		return "http://127.0.0.1:" + strconv.Itoa(hello.Port) + hello.Base
	case <-time.After(90 * time.Second):
		t.Fatal("the ehrtest server did not start within 90 s")
	}
	return ""
}
