package cluster_test

import (
	"bufio"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/kapbridge/kap/internal/config"
)

// TestDeployArtifacts checks that deploy/ cannot drift from the binary:
// the Kubernetes manifests parse, their flags are flags of `kapbridge
// serve`, their probes are routes the binary answers 200 on, their ports,
// data directory, config mount and secret references agree with each other
// and with the image, everything runs as non-root, the PDBs and the Service
// select the Deployments, and the configuration files validate.
func TestDeployArtifacts(t *testing.T) {
	bin := binary(t)
	flags := serveFlags(t, bin)
	deploy := filepath.Join(rootDir, "deploy")

	docs := map[string][]map[string]any{} // kind -> documents
	files, _ := filepath.Glob(filepath.Join(deploy, "k8s", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no deploy/k8s/*.yaml")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var m map[string]any
			if err := yaml.UnmarshalStrict([]byte(doc), &m); err != nil {
				t.Fatalf("%s document %d: %v", filepath.Base(f), i+1, err)
			}
			kind, _ := m["kind"].(string)
			docs[kind] = append(docs[kind], m)
		}
	}

	// Secrets: name -> keys.
	secrets := map[string]map[string]any{}
	for _, s := range docs["Secret"] {
		secrets[str(s, "metadata", "name")], _ = get(s, "stringData").(map[string]any)
	}

	probePaths := map[string]bool{}
	roles := map[string]map[string]any{} // role -> pod template labels
	if len(docs["Deployment"]) != 2 {
		t.Errorf("%d Deployments, want api and worker", len(docs["Deployment"]))
	}
	for _, d := range docs["Deployment"] {
		name := str(d, "metadata", "name")
		pod, _ := get(d, "spec", "template", "spec").(map[string]any)
		labels, _ := get(d, "spec", "template", "metadata", "labels").(map[string]any)
		if !subset(get(d, "spec", "selector", "matchLabels"), labels) {
			t.Errorf("%s: the selector does not match the pod labels", name)
		}
		if get(pod, "securityContext", "runAsNonRoot") != true {
			t.Errorf("%s: runAsNonRoot is not true", name)
		}
		if uid, _ := get(pod, "securityContext", "runAsUser").(float64); uid == 0 {
			t.Errorf("%s: runAsUser is 0 or unset", name)
		}
		cs, _ := pod["containers"].([]any)
		if len(cs) != 1 {
			t.Fatalf("%s: %d containers", name, len(cs))
		}
		c := cs[0].(map[string]any)
		if get(c, "securityContext", "allowPrivilegeEscalation") != false || get(c, "securityContext", "readOnlyRootFilesystem") != true {
			t.Errorf("%s: allowPrivilegeEscalation must be false and readOnlyRootFilesystem true", name)
		}
		args := strs(c["args"])
		if len(args) == 0 || args[0] != "serve" {
			t.Fatalf("%s: args %v do not start with serve", name, args)
		}
		argv := map[string]string{}
		for _, a := range args[1:] {
			k, v, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if !flags[k] {
				t.Errorf("%s: --%s is not a flag of kapbridge serve (%v)", name, k, keys(flags))
			}
			argv[k] = v
		}
		role := argv["role"]
		if role != config.RoleAPI && role != config.RoleWorker {
			t.Errorf("%s: --role=%q, want api or worker", name, role)
		}
		roles[role] = labels
		env := map[string]map[string]any{}
		for _, e := range c["env"].([]any) {
			em := e.(map[string]any)
			env[em["name"].(string)] = em
			if ref, ok := get(em, "valueFrom", "secretKeyRef").(map[string]any); ok {
				sec, ok := secrets[ref["name"].(string)]
				if !ok || sec[ref["key"].(string)] == nil {
					t.Errorf("%s: env %s refers to %s/%s, which deploy/k8s does not define", name, em["name"], ref["name"], ref["key"])
				}
			}
		}
		// The listen port is the container port the probes use.
		addr, _ := env["KAPBRIDGE_ADDR"]["value"].(string)
		_, port, _ := strings.Cut(addr, ":")
		ports := map[string]string{}
		for _, p := range c["ports"].([]any) {
			pm := p.(map[string]any)
			ports[pm["name"].(string)] = strconv.Itoa(int(pm["containerPort"].(float64)))
		}
		if port == "" || ports["http"] != port {
			t.Errorf("%s: KAPBRIDGE_ADDR %q does not listen on the http containerPort %s", name, addr, ports["http"])
		}
		for _, pr := range []string{"readinessProbe", "livenessProbe"} {
			path := str(c, pr, "httpGet", "path")
			if path == "" {
				t.Errorf("%s: no %s", name, pr)
				continue
			}
			probePaths[path] = true
			if pp := str(c, pr, "httpGet", "port"); ports[pp] == "" {
				t.Errorf("%s: %s port %q is not a container port", name, pr, pp)
			}
		}
		if str(c, "readinessProbe", "httpGet", "path") != "/readyz" || str(c, "livenessProbe", "httpGet", "path") != "/healthz" {
			t.Errorf("%s: readiness must be /readyz (store and workers) and liveness /healthz (process only)", name)
		}
		// The data directory and the configuration file are mounted.
		mounts := map[string]string{} // mountPath -> volume
		for _, m := range c["volumeMounts"].([]any) {
			mm := m.(map[string]any)
			mounts[mm["mountPath"].(string)] = mm["name"].(string)
		}
		if dd, _ := env["KAPBRIDGE_DATA_DIR"]["value"].(string); mounts[dd] == "" {
			t.Errorf("%s: the data directory %q is not a mounted volume (the root filesystem is read-only)", name, dd)
		}
		cfgDir := filepath.Dir(argv["config"])
		vol := mounts[cfgDir]
		var secretName string
		for _, v := range pod["volumes"].([]any) {
			vm := v.(map[string]any)
			if vm["name"] == vol {
				secretName = str(vm, "secret", "secretName")
			}
		}
		if sec := secrets[secretName]; sec == nil || sec[filepath.Base(argv["config"])] == nil {
			t.Errorf("%s: --config=%s is not a key of a Secret mounted at %s", name, argv["config"], cfgDir)
		} else {
			validateConfig(t, "Secret "+secretName, sec[filepath.Base(argv["config"])].(string))
		}
	}
	if roles[config.RoleAPI] == nil || roles[config.RoleWorker] == nil {
		t.Errorf("want an api and a worker Deployment, have %v", keys(roles))
	}
	for _, p := range docs["PodDisruptionBudget"] {
		sel := get(p, "spec", "selector", "matchLabels")
		if !subset(sel, roles[config.RoleAPI]) && !subset(sel, roles[config.RoleWorker]) {
			t.Errorf("PDB %s selects no Deployment", str(p, "metadata", "name"))
		}
	}
	if len(docs["PodDisruptionBudget"]) < 2 {
		t.Errorf("%d PodDisruptionBudgets, want one per Deployment", len(docs["PodDisruptionBudget"]))
	}
	for _, s := range docs["Service"] {
		if !subset(get(s, "spec", "selector"), roles[config.RoleAPI]) {
			t.Errorf("Service %s does not select the API pods", str(s, "metadata", "name"))
		}
	}

	// The probe paths are routes of the binary: 200 from a running one.
	p := startProc(t, "probe", "all", writeFile(t, "{}"), "")
	for path := range probePaths {
		resp, err := http.Get(p.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("probe %s: HTTP %d from the binary", path, resp.StatusCode)
		}
	}

	checkDockerfile(t, filepath.Join(deploy, "Dockerfile"))
	checkSystemd(t, bin, flags, filepath.Join(deploy, "systemd", "kapbridge.service"))
	b, err := os.ReadFile(filepath.Join(deploy, "examples", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	validateConfig(t, "deploy/examples/config.yaml", string(b))
}

// checkDockerfile: a non-root numeric USER, the EXPOSEd port is the one
// KAPBRIDGE_ADDR listens on, the ENTRYPOINT is the binary copied in, the
// data directory is the VOLUME, and the runtime image is distroless.
func checkDockerfile(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := regexp.MustCompile(`\\\n\s*`).ReplaceAllString(string(b), " ")
	var from, user, expose, entry, volume string
	var froms []string
	copies := map[string]bool{}
	env := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			from = f[1]
			froms = append(froms, f[1])
		case "USER":
			user = f[1]
		case "EXPOSE":
			expose = f[1]
		case "ENTRYPOINT":
			entry = strings.Trim(f[1], `["],`)
		case "VOLUME":
			volume = strings.Trim(f[1], `["],`)
		case "COPY":
			copies[f[len(f)-1]] = true
		case "ENV":
			for _, kv := range f[1:] {
				if k, v, ok := strings.Cut(kv, "="); ok {
					env[k] = v
				}
			}
		}
	}
	// The build stage's Go is the go.mod's go version (major.minor).
	gomod, _ := os.ReadFile(filepath.Join(rootDir, "go.mod"))
	if m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod); m == nil ||
		len(froms) < 2 || !strings.HasPrefix(froms[0], "golang:"+string(m[1])) {
		t.Errorf("Dockerfile: the build stage %v does not use the Go of go.mod", froms)
	}
	if !strings.Contains(from, "distroless") && from != "scratch" {
		t.Errorf("Dockerfile: runtime image %q is neither distroless nor scratch", from)
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("Dockerfile: USER %q must be a numeric non-root uid", user)
	}
	if _, port, _ := strings.Cut(env["KAPBRIDGE_ADDR"], ":"); port != expose {
		t.Errorf("Dockerfile: EXPOSE %s but KAPBRIDGE_ADDR=%s", expose, env["KAPBRIDGE_ADDR"])
	}
	if !copies[entry] {
		t.Errorf("Dockerfile: ENTRYPOINT %s is not a file copied into the image", entry)
	}
	if volume == "" || volume != env["KAPBRIDGE_DATA_DIR"] {
		t.Errorf("Dockerfile: VOLUME %q is not KAPBRIDGE_DATA_DIR %q", volume, env["KAPBRIDGE_DATA_DIR"])
	}
}

// checkSystemd: ExecStart runs serve with real flags, the hardening
// options are on, and systemd-analyze verify accepts the unit (when
// installed).
func checkSystemd(t *testing.T, bin string, flags map[string]bool, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			set[k] = v
		}
	}
	exec_ := strings.Fields(set["ExecStart"])
	if len(exec_) < 2 || exec_[1] != "serve" {
		t.Fatalf("systemd: ExecStart %q does not run serve", set["ExecStart"])
	}
	for _, a := range exec_[2:] {
		if strings.HasPrefix(a, "-") {
			if k, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); !flags[k] {
				t.Errorf("systemd: %s is not a flag of kapbridge serve", a)
			}
		}
	}
	for k, want := range map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
		"PrivateTmp": "yes", "DynamicUser": "yes", "CapabilityBoundingSet": "", "StateDirectory": "kapbridge"} {
		if v, ok := set[k]; !ok || v != want {
			t.Errorf("systemd: %s=%q, want %q", k, v, want)
		}
	}
	if !strings.Contains(set["ExecStart"], "/var/lib/"+set["StateDirectory"]) {
		t.Errorf("systemd: the data directory is not the StateDirectory")
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: the unit was not verified")
		return
	}
	unit := filepath.Join(t.TempDir(), "kapbridge.service")
	os.WriteFile(unit, []byte(strings.ReplaceAll(string(b), exec_[0], bin)), 0o644)
	if out, err := exec.Command(sa, "verify", unit).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// validateConfig loads a configuration file with its secret environment
// variables set, as `kapbridge config` does.
func validateConfig(t *testing.T, name, content string) {
	t.Helper()
	getenv := func(k string) string {
		if k == config.EnvConfig || strings.HasPrefix(k, "KAPBRIDGE_") {
			return ""
		}
		return "set-for-the-test"
	}
	if _, err := config.Load(writeFile(t, content), getenv); err != nil {
		t.Errorf("%s does not validate: %v", name, err)
	}
}

// serveFlags returns the flag names of `kapbridge serve` (from -h).
func serveFlags(t *testing.T, bin string) map[string]bool {
	out, _ := exec.Command(bin, "serve", "-h").CombinedOutput()
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z][a-z0-9-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if !flags["role"] || !flags["config"] {
		t.Fatalf("kapbridge serve -h lists no --role/--config:\n%s", out)
	}
	return flags
}

func writeFile(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func get(m any, path ...string) any {
	for _, p := range path {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[p]
	}
	return m
}

func str(m any, path ...string) string {
	s, _ := get(m, path...).(string)
	return s
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func subset(sel any, labels map[string]any) bool {
	sm, ok := sel.(map[string]any)
	if !ok || len(sm) == 0 || labels == nil {
		return false
	}
	for k, v := range sm {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
