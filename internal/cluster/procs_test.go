package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The kapbridge binary, built once per test run by TestMain.
var (
	binPath  string
	buildErr error
	rootDir  string
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	rootDir = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

var buildOnce sync.Once

// binary builds cmd/kapbridge once (go build, the real binary) and returns
// its path.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kapbridge-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "kapbridge")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/kapbridge")
		cmd.Dir = rootDir
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/kapbridge: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is one `kapbridge serve` process.
type proc struct {
	Name string
	Role string
	Addr string // 127.0.0.1:port
	URL  string // http://Addr
	Dir  string // data directory
	Log  string // path of its stderr

	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	dead bool
}

// freePort returns a free loopback port.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// cleanEnv is the environment without KAPBRIDGE_* settings (the test sets
// everything by flags).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KAPBRIDGE_") {
			env = append(env, kv)
		}
	}
	return env
}

// startProc starts `kapbridge serve --role role` with the config file and
// Redis URL and waits until /readyz answers 200.
func startProc(t testing.TB, name, role, configPath, redisURL string) *proc {
	t.Helper()
	bin := binary(t)
	dir := t.TempDir()
	port := freePort(t)
	p := &proc{Name: name, Role: role, Addr: "127.0.0.1:" + strconv.Itoa(port), Dir: dir,
		Log: filepath.Join(dir, "stderr.log")}
	p.URL = "http://" + p.Addr
	logf, err := os.Create(p.Log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "serve", "--config", configPath, "--addr", p.Addr, "--data-dir", dir,
		"--role", role, "--redis-url", redisURL)
	p.cmd.Env = cleanEnv()
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() { p.cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() { p.Stop(t) })
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("%s exited at start:\n%s", name, p.Tail(40))
		default:
		}
		resp, err := http.Get(p.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 90s:\n%s", name, p.Tail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill9 kills the process with SIGKILL.
func (p *proc) Kill9() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		return
	}
	p.dead = true
	p.cmd.Process.Kill()
	<-p.done
}

// Stop stops the process with SIGTERM (graceful), then SIGKILL after 20 s.
func (p *proc) Stop(t testing.TB) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		return
	}
	p.dead = true
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Logf("%s did not stop in 20s after SIGTERM: killed", p.Name)
		p.cmd.Process.Kill()
		<-p.done
	}
}

// Dead reports whether the test killed or stopped the process.
func (p *proc) Dead() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dead
}

// RSS returns the resident set size of the process in bytes (VmRSS from
// /proc), or 0 when it is not running.
func (p *proc) RSS() int64 {
	if p.Dead() {
		return 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// CPU returns the user+system CPU time the process has used so far.
func (p *proc) CPU() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ = 100 on Linux
}

// Tail returns the last n lines of the process's stderr.
func (p *proc) Tail(n int) string {
	b, _ := os.ReadFile(p.Log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// rssSampler samples the RSS of procs every interval and keeps the maximum
// of each.
type rssSampler struct {
	mu   sync.Mutex
	max  map[string]int64
	stop context.CancelFunc
	done chan struct{}
}

func sampleRSS(procs []*proc, every time.Duration) *rssSampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &rssSampler{max: map[string]int64{}, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			for _, p := range procs {
				if r := p.RSS(); r > 0 {
					s.mu.Lock()
					s.max[p.Name] = max(s.max[p.Name], r)
					s.mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the maximum RSS of each process in MiB.
func (s *rssSampler) Stop() map[string]float64 {
	s.stop()
	<-s.done
	out := map[string]float64{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.max {
		out[k] = float64(v) / (1 << 20)
	}
	return out
}
