// Package ehrtest starts a real FHIR R4 server for tests: Medplum's
// fhir-router over its in-memory repository (Node, in ./server), with fault
// injection, and an in-process toxiproxy to put between a client and it.
//
//	srv := ehrtest.Start(t, ehrtest.Options{Mode: ehrtest.ModeTransaction})
//	// srv.URL is the FHIR base, e.g. http://127.0.0.1:41234/fhir/R4
//	srv.Fail503(0, 10, time.Second)      // 10% of requests get 503, Retry-After: 1
//	srv.Fail429(3, 2*time.Second)        // the next 3 requests get 429, Retry-After: 2
//	srv.Reject("reject-", 400)           // writes with an identifier value "reject-..." get 400 + OperationOutcome
//	srv.Drop(0, 5)                       // 5%: processed, then the connection closes unanswered
//	srv.Outage(30 * time.Second)         // every connection is closed for 30 s
//	st := srv.Stats()                    // requests by "METHOD status", resources by type, duplicates
//	n := srv.Count("Patient", sys, "c001") // resources holding that identifier
//
//	px := ehrtest.StartProxy(t, srv.Addr) // toxiproxy; px.URL(srv) is the FHIR base through it
//	px.Latency(20*time.Millisecond, 0)
//	px.ResetPeer(5)                      // 5% of connections reset when the answer starts
//	px.Disable(); px.Enable()            // outage at the TCP level
//
// What the server does (beyond fhir-router): validates every written resource
// with @medplum/core's validateResource (400 + OperationOutcome naming the
// path); runs a transaction atomically (a failing entry leaves nothing);
// resolves conditional references "Type?identifier=s|v" on writes (none: 404,
// several: 412); sets ETag W/"versionId", Location (201) and Last-Modified;
// adds self/next links to searchsets (_count, _offset); serves /metadata by
// mode:
//
//	transaction         transaction + batch, conditional update, conditional create
//	conditional-update  conditional update + conditional create, no transaction (405)
//	conditional-create  If-None-Exist creates and update by id; conditional update refused (405)
//	plain               search, create, update by id (with If-Match); every conditional write refused (405)
//	none                like plain, and /metadata answers 404
//
// Faults hit FHIR requests (not /metadata unless Control{FaultMetadata}); the
// control endpoint is on its own port and never faulted. Requests are
// handled one at a time (the repository is a single in-memory store).
//
// The server needs Node 22 and the npm packages of ./server
// (scripts/test-deps.sh runs npm ci there). When they are missing Start skips
// the test, or fails it when the environment has CI=true.
package ehrtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// DirEnv overrides where the server directory (with server.mjs and
// node_modules) is looked up.
const DirEnv = "KAPBRIDGE_EHRTEST_DIR"

// InstallHint is what to run when the server's packages are missing.
const InstallHint = "scripts/test-deps.sh (npm ci in adapters/ehr/ehrtest/server)"

// Mode is the server's write profile and CapabilityStatement.
type Mode string

// The modes.
const (
	ModeTransaction       Mode = "transaction"
	ModeConditionalUpdate Mode = "conditional-update"
	ModeConditionalCreate Mode = "conditional-create"
	ModePlain             Mode = "plain"
	ModeNone              Mode = "none"
)

// Options configure Start.
type Options struct {
	// Mode at start; default ModeTransaction.
	Mode Mode
	// Dir is the server directory; default $KAPBRIDGE_EHRTEST_DIR, else
	// ./server next to this package's source.
	Dir string
	// StartTimeout bounds the wait for the port line; default 60 s.
	StartTimeout time.Duration
}

// Server is a running test FHIR server.
type Server struct {
	// URL is the FHIR base (no trailing slash).
	URL string
	// Addr is host:port of the FHIR listener (an upstream for StartProxy).
	Addr string
	// ControlURL is the base of /__control and /__stats.
	ControlURL string

	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.Closer
	stderr *tailBuffer
	client *http.Client
	done   chan struct{}
}

// Start starts the server and registers its shutdown with t.Cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	node, dir, err := Find(opts.Dir)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ehrtest: %v; run %s", err, InstallHint)
		}
		t.Skipf("ehrtest: %v; run %s", err, InstallHint)
	}
	mode := opts.Mode
	if mode == "" {
		mode = ModeTransaction
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	cmd := exec.Command(node, "server.mjs", "--mode", string(mode))
	cmd.Dir = dir
	stdin, err := cmd.StdinPipe() // the server exits when this closes
	if err != nil {
		t.Fatalf("ehrtest: %v", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("ehrtest: %v", err)
	}
	stderr := &tailBuffer{max: 64 << 10}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("ehrtest: starting %s: %v", node, err)
	}
	s := &Server{
		t: t, cmd: cmd, stdin: stdin, stderr: stderr,
		client: &http.Client{Timeout: 60 * time.Second},
		done:   make(chan struct{}),
	}
	go func() { _ = cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)

	type hello struct {
		Port        int    `json:"port"`
		ControlPort int    `json:"controlPort"`
		Base        string `json:"base"`
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case line, ok := <-lines:
		var h hello
		if !ok || json.Unmarshal([]byte(line), &h) != nil || h.Port == 0 {
			t.Fatalf("ehrtest: server printed no port line (%q); stderr:\n%s", line, stderr.String())
		}
		s.Addr = fmt.Sprintf("127.0.0.1:%d", h.Port)
		s.URL = "http://" + s.Addr + h.Base
		s.ControlURL = fmt.Sprintf("http://127.0.0.1:%d", h.ControlPort)
	case <-time.After(timeout):
		t.Fatalf("ehrtest: server did not start within %v; stderr:\n%s", timeout, stderr.String())
	}
	return s
}

// Find returns the node executable and the server directory, or an error
// saying what is missing.
func Find(dir string) (node, serverDir string, err error) {
	if dir == "" {
		dir = os.Getenv(DirEnv)
	}
	if dir == "" {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			return "", "", errors.New("cannot locate the ehrtest server directory")
		}
		dir = filepath.Join(filepath.Dir(file), "server")
	}
	if _, err := os.Stat(filepath.Join(dir, "server.mjs")); err != nil {
		return "", "", fmt.Errorf("no server.mjs in %s (set %s)", dir, DirEnv)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@medplum", "fhir-router", "package.json")); err != nil {
		return "", "", fmt.Errorf("the npm packages of %s are not installed", dir)
	}
	node = filepath.Join(dir, "node_modules", ".bin", "node")
	if _, err := os.Stat(node); err != nil {
		return "", "", fmt.Errorf("no Node 22 at %s", node)
	}
	return node, dir, nil
}

func (s *Server) stop() {
	_ = s.stdin.Close()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	if s.t.Failed() {
		if tail := s.stderr.String(); tail != "" {
			s.t.Logf("ehrtest server stderr:\n%s", tail)
		}
	}
}

// Control is the JSON body of POST /__control; nil fields are left as they are.
type Control struct {
	Reset         bool          `json:"reset,omitempty"`
	ClearFaults   bool          `json:"clearFaults,omitempty"`
	Mode          Mode          `json:"mode,omitempty"`
	Fail429       *FaultControl `json:"fail429,omitempty"`
	Fail503       *FaultControl `json:"fail503,omitempty"`
	Drop          *FaultControl `json:"drop,omitempty"`
	Reject        *RejectRule   `json:"reject,omitempty"`
	Outage        *OutageRule   `json:"outage,omitempty"`
	FaultMetadata *bool         `json:"faultMetadata,omitempty"`
	// Validate false skips validateResource on writes (load runs).
	Validate *bool `json:"validate,omitempty"`
}

// FaultControl: the next Count requests, then Percent % of the rest.
// RetryAfter is in seconds, rounded (429 and 503 only; 0 sends no
// Retry-After header).
type FaultControl struct {
	Count      int     `json:"count"`
	Percent    float64 `json:"percent"`
	RetryAfter float64 `json:"retryAfter"`
}

// RejectRule refuses writes carrying an identifier whose value starts with
// Prefix, with Status (default 400) and an OperationOutcome.
type RejectRule struct {
	Prefix string `json:"prefix"`
	Status int    `json:"status,omitempty"`
}

// OutageRule closes every connection for MS milliseconds (0 ends an outage).
type OutageRule struct {
	MS int64 `json:"ms"`
}

// Control posts c; it fails the test when the server refuses it.
func (s *Server) Control(c Control) {
	s.t.Helper()
	body, _ := json.Marshal(c)
	resp, err := s.client.Post(s.ControlURL+"/__control", "application/json", bytes.NewReader(body))
	if err != nil {
		s.t.Fatalf("ehrtest: control: %v", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("ehrtest: control %s: HTTP %d: %s", body, resp.StatusCode, msg)
	}
}

// SetMode switches the write profile and /metadata.
func (s *Server) SetMode(m Mode) { s.t.Helper(); s.Control(Control{Mode: m}) }

// Fail429 answers the next n FHIR requests with 429 and Retry-After
// (whole seconds; 0 sends none).
func (s *Server) Fail429(n int, retryAfter time.Duration) {
	s.t.Helper()
	s.Control(Control{Fail429: &FaultControl{Count: n, RetryAfter: retryAfter.Seconds()}})
}

// Fail503 answers the next n FHIR requests, then percent % of them, with
// 503 and Retry-After (whole seconds; 0 sends none).
func (s *Server) Fail503(n int, percent float64, retryAfter time.Duration) {
	s.t.Helper()
	s.Control(Control{Fail503: &FaultControl{Count: n, Percent: percent, RetryAfter: retryAfter.Seconds()}})
}

// Drop processes the next n requests, then percent % of them, and closes
// the connection without answering (the write happened; the client cannot
// know).
func (s *Server) Drop(n int, percent float64) {
	s.t.Helper()
	s.Control(Control{Drop: &FaultControl{Count: n, Percent: percent}})
}

// Reject refuses writes carrying an identifier value starting with prefix
// (status 0 means 400); an empty prefix removes the rule.
func (s *Server) Reject(prefix string, status int) {
	s.t.Helper()
	s.Control(Control{Reject: &RejectRule{Prefix: prefix, Status: status}})
}

// Outage closes every FHIR connection, open and new, for d (0 ends it).
func (s *Server) Outage(d time.Duration) {
	s.t.Helper()
	s.Control(Control{Outage: &OutageRule{MS: d.Milliseconds()}})
}

// SetValidate turns validation on write on or off (default on).
func (s *Server) SetValidate(on bool) { s.t.Helper(); s.Control(Control{Validate: &on}) }

// ClearFaults removes every fault.
func (s *Server) ClearFaults() { s.t.Helper(); s.Control(Control{ClearFaults: true}) }

// Reset drops every resource and the statistics (the mode and faults stay).
func (s *Server) Reset() { s.t.Helper(); s.Control(Control{Reset: true}) }

// Stats is GET /__stats.
type Stats struct {
	// Requests counts FHIR requests by "METHOD status" ("POST 200",
	// "PUT 503", "POST dropped").
	Requests map[string]int `json:"requests"`
	// Interactions counts what was asked: transaction, batch,
	// update-conditional, create-conditional, create, update,
	// update-if-match, search, read, history, metadata.
	Interactions map[string]int `json:"interactions"`
	// Faults counts injected faults: 429, 503, drop, reject, outage.
	Faults map[string]int `json:"faults"`
	// Resources counts current resources by type; Total is their sum.
	Resources map[string]int `json:"resources"`
	Total     int            `json:"total"`
	// Identifiers is the number of distinct identifier (and, for
	// resources without identifier such as Provenance, meta.tag) keys.
	Identifiers int `json:"identifiers"`
	// Duplicates lists keys held by more than one resource.
	Duplicates []Duplicate `json:"duplicates"`
	// ByIdentifier ("Type|system|value" or "Type|_tag|system|code" ->
	// resources) is filled by StatsWithIdentifiers.
	ByIdentifier map[string]int `json:"byIdentifier,omitempty"`
}

// Duplicate is an identifier key held by Count resources.
type Duplicate struct {
	Key   string `json:"key"`
	Count int    `json:"count"`
}

// Stats reads the statistics.
func (s *Server) Stats() Stats { s.t.Helper(); return s.stats(false) }

// StatsWithIdentifiers reads the statistics with ByIdentifier.
func (s *Server) StatsWithIdentifiers() Stats { s.t.Helper(); return s.stats(true) }

func (s *Server) stats(ids bool) Stats {
	s.t.Helper()
	u := s.ControlURL + "/__stats"
	if ids {
		u += "?identifiers=1"
	}
	resp, err := s.client.Get(u)
	if err != nil {
		s.t.Fatalf("ehrtest: stats: %v", err)
	}
	defer resp.Body.Close()
	var st Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		s.t.Fatalf("ehrtest: stats: %v", err)
	}
	return st
}

// IdentifierKey is the ByIdentifier key of a resource's identifier.
func IdentifierKey(resourceType, system, value string) string {
	return resourceType + "|" + system + "|" + value
}

// Count returns how many resourceType resources hold identifier
// system|value (read from the control port, so faults do not apply).
func (s *Server) Count(resourceType, system, value string) int {
	s.t.Helper()
	return s.StatsWithIdentifiers().ByIdentifier[IdentifierKey(resourceType, system, value)]
}

// Search runs GET URL/<resourceType>?<query> on the FHIR port (faults
// apply); it returns the status and the decoded body.
func (s *Server) Search(resourceType string, query url.Values) (int, map[string]any) {
	s.t.Helper()
	resp, err := s.client.Get(s.URL + "/" + resourceType + "?" + query.Encode())
	if err != nil {
		s.t.Fatalf("ehrtest: search %s: %v", resourceType, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// tailBuffer keeps the last max bytes written (the server's stderr).
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(string(b.buf))
}
