// Package redistest starts throwaway redis-server processes for tests: a free
// loopback port, a temporary directory, AOF persistence with appendfsync
// always, and Kill9/Restart to test crashes.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Options configure a server.
type Options struct {
	// AppendFsync is "always" (default), "everysec" or "no".
	AppendFsync string
}

// Server is one redis-server process.
type Server struct {
	Addr string // 127.0.0.1:port

	tb   testing.TB
	bin  string
	dir  string
	port int
	opt  Options
	cmd  *exec.Cmd
	done chan struct{}
}

// Binary returns the path of redis-server, or "" when it is not installed.
func Binary() string {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Start starts a server and registers its shutdown with tb. Without
// redis-server on PATH it fails the test, or skips it under -short.
func Start(tb testing.TB, opt Options) *Server {
	tb.Helper()
	bin := Binary()
	if bin == "" {
		if testing.Short() {
			tb.Skip("redis-server is not installed; skipped under -short")
		}
		tb.Fatal("redis-server is not on PATH: install it (apt-get install -y redis-server) or run the tests with -short to skip the Redis tests")
	}
	if opt.AppendFsync == "" {
		opt.AppendFsync = "always"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("no free loopback port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir(), port: port, opt: opt, Addr: "127.0.0.1:" + strconv.Itoa(port)}
	s.start()
	tb.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.tb.Helper()
	s.cmd = exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--appendonly", "yes",
		"--appendfsync", s.opt.AppendFsync,
		"--save", "",
		"--daemonize", "no",
		"--protected-mode", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	)
	if err := s.cmd.Start(); err != nil {
		s.tb.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	s.done = done
	cmd := s.cmd
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := ping(s.Addr); err == nil {
			return
		} else if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.tb.Fatalf("redis-server on %s not ready: %v\n%s", s.Addr, err, log)
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.tb.Fatalf("redis-server exited at start:\n%s", log)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// Kill9 kills the server with SIGKILL and waits for it to exit.
func (s *Server) Kill9() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same port and directory; it loads
// its AOF before answering.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Kill9()
	s.start()
}

// Stop kills the server; the directory is removed by the test.
func (s *Server) Stop() { s.Kill9() }

// Dir is the server's data directory.
func (s *Server) Dir() string { return s.dir }
