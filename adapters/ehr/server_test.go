package ehr_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// fhirServer is the real FHIR R4 test server (Medplum fhir-router, the
// ehrtest server script) started for a test on a loopback port.
type fhirServer struct {
	Base    string // FHIR base URL
	control string // control base URL
}

// startFHIR starts the server script of adapters/ehr/ehrtest with Node, or
// skips the test when Node or the script's packages are not installed
// (scripts/test-deps.sh installs them).
func startFHIR(t *testing.T, mode string) *fhirServer { return startFHIRB(t, mode) }

func startFHIRB(t testing.TB, mode string) *fhirServer {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no FHIR server")
	}
	dir, _ := filepath.Abs(filepath.Join("ehrtest", "server"))
	script := filepath.Join(dir, "server.mjs")
	node := filepath.Join(dir, "node_modules", ".bin", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@medplum", "fhir-router")); err != nil {
		t.Skipf("the ehrtest server's packages are not installed (%v); run scripts/test-deps.sh", err)
	}
	if _, err := os.Stat(node); err != nil {
		if node, err = exec.LookPath("node"); err != nil {
			t.Skip("no node")
		}
	}
	cmd := exec.Command(node, script, "--mode", mode)
	cmd.Dir = dir
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
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
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, stdout)
	}()
	var hello struct {
		Port, ControlPort int
		Base              string
	}
	select {
	case l, ok := <-lines:
		if !ok || json.Unmarshal([]byte(l), &hello) != nil || hello.Port == 0 {
			t.Fatalf("FHIR server did not start: %q\n%s", l, stderr.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("FHIR server did not start in 90s\n%s", stderr.String())
	}
	return &fhirServer{
		Base:    "http://127.0.0.1:" + strconv.Itoa(hello.Port) + hello.Base,
		control: "http://127.0.0.1:" + strconv.Itoa(hello.ControlPort),
	}
}

// Control posts a control document (mode switch, faults, reset).
func (f *fhirServer) Control(t *testing.T, c map[string]any) {
	t.Helper()
	b, _ := json.Marshal(c)
	resp, err := http.Post(f.control+"/__control", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("control %s: %d %s", b, resp.StatusCode, body)
	}
}

type serverStats struct {
	Interactions map[string]int `json:"interactions"`
	Resources    map[string]int `json:"resources"`
	Total        int            `json:"total"`
	Duplicates   []struct {
		Key   string `json:"key"`
		Count int    `json:"count"`
	} `json:"duplicates"`
	ByIdentifier map[string]int `json:"byIdentifier"`
}

// Stats returns the server's counts (resources, interactions, duplicates).
func (f *fhirServer) Stats(t *testing.T) serverStats {
	t.Helper()
	resp, err := http.Get(f.control + "/__stats?identifiers=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s serverStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// Get reads a FHIR resource or search (rel to the base) as generic JSON.
func (f *fhirServer) Get(t *testing.T, rel string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.Base+"/"+rel, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", rel, resp.StatusCode, err)
	}
	return m
}

// One returns the single resource a search finds.
func (f *fhirServer) One(t *testing.T, rel string) map[string]any {
	t.Helper()
	b := f.Get(t, rel)
	es, _ := b["entry"].([]any)
	if len(es) != 1 {
		t.Fatalf("GET %s: %d matches, want 1", rel, len(es))
	}
	return es[0].(map[string]any)["resource"].(map[string]any)
}

func refOf(res map[string]any, field string) string {
	m, _ := res[field].(map[string]any)
	s, _ := m["reference"].(string)
	return s
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprint(err))
	}
	return v
}
