package admin_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// fhirPeer is the real FHIR R4 test server of adapters/ehr/ehrtest
// (Medplum fhir-router over its in-memory repository, run by Node) on a
// loopback port, with its control port for faults.
type fhirPeer struct {
	Base    string
	control string
}

// startPeer starts the ehrtest server script, or skips when its packages
// are not installed (scripts/test-deps.sh installs them); with CI=true a
// missing server fails the test.
func startPeer(t *testing.T) *fhirPeer {
	t.Helper()
	dir, _ := filepath.Abs(filepath.Join("..", "ehr", "ehrtest", "server"))
	script := filepath.Join(dir, "server.mjs")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@medplum", "fhir-router")); err != nil {
		skipOrFail(t, "the ehrtest FHIR server's packages are not installed; run scripts/test-deps.sh")
	}
	node := filepath.Join(dir, "node_modules", ".bin", "node")
	if _, err := os.Stat(node); err != nil {
		if node, err = exec.LookPath("node"); err != nil {
			skipOrFail(t, "no node; run scripts/test-deps.sh")
		}
	}
	cmd := exec.Command(node, script, "--mode", "transaction")
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
		stdin.Close() // the server exits when stdin closes
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
	case <-time.After(120 * time.Second):
		t.Fatalf("FHIR server did not start in 120s\n%s", stderr.String())
	}
	return &fhirPeer{
		Base:    "http://127.0.0.1:" + strconv.Itoa(hello.Port) + hello.Base,
		control: "http://127.0.0.1:" + strconv.Itoa(hello.ControlPort),
	}
}

// Control posts a control document (faults, outage, reset).
func (f *fhirPeer) Control(t *testing.T, c map[string]any) {
	t.Helper()
	b, _ := json.Marshal(c)
	resp, err := http.Post(f.control+"/__control", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("control %s: %d %s", b, resp.StatusCode, body)
	}
}

// Count returns how many resources with the identifier system|value the
// server holds under resourceType.
func (f *fhirPeer) Count(t *testing.T, resourceType, system, value string) int {
	t.Helper()
	resp, err := http.Get(f.control + "/__stats?identifiers=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct {
		ByIdentifier map[string]int `json:"byIdentifier"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s.ByIdentifier[resourceType+"|"+system+"|"+value]
}

func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: browser tests must run)")
	}
	t.Skip(msg)
}
