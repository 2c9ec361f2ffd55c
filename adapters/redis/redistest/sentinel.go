package redistest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// MasterName is the name the sentinel monitors the master under.
const MasterName = "kapmaster"

// Sentinel is a master, one replica and one sentinel (quorum 1) on loopback.
type Sentinel struct {
	Master   *Node
	Replica  *Node
	Sentinel *Node
}

// SentinelOptions configure a Sentinel setup.
type SentinelOptions struct {
	// AppendFsync is "always" (default), "everysec" or "no".
	AppendFsync string
	// DownAfter is how long the master must be unreachable before the
	// sentinel fails over; default 1s.
	DownAfter time.Duration
}

// StartSentinel starts a master with AOF, a replica of it and a sentinel that
// monitors it as MasterName, waits until the replica is in sync and the
// sentinel sees both, and registers the shutdown with tb.
func StartSentinel(tb testing.TB, opt SentinelOptions) *Sentinel {
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
	if opt.DownAfter <= 0 {
		opt.DownAfter = time.Second
	}
	ports := freePorts(tb, 3, false)
	s := &Sentinel{}
	tb.Cleanup(s.Stop)
	data := func(port int, extra ...string) *Node {
		dir := tb.TempDir()
		args := append([]string{
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--dir", dir,
			"--appendonly", "yes",
			"--appendfsync", opt.AppendFsync,
			"--save", "",
			"--daemonize", "no",
			"--protected-mode", "no",
			"--logfile", filepath.Join(dir, "redis.log"),
		}, extra...)
		n := &Node{tb: tb, bin: bin, dir: dir, Port: port, Addr: "127.0.0.1:" + strconv.Itoa(port), args: args}
		n.start()
		return n
	}
	s.Master = data(ports[0])
	s.Replica = data(ports[1], "--replicaof", "127.0.0.1", strconv.Itoa(ports[0]))

	dir := tb.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	cfg := fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode no
daemonize no
dir %s
logfile %s
sentinel monitor %s 127.0.0.1 %d 1
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s 10000
sentinel parallel-syncs %s 1
`, ports[2], dir, filepath.Join(dir, "redis.log"), MasterName, ports[0], MasterName, opt.DownAfter.Milliseconds(), MasterName, MasterName)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	s.Sentinel = &Node{tb: tb, bin: bin, dir: dir, Port: ports[2], Addr: "127.0.0.1:" + strconv.Itoa(ports[2]), args: []string{conf, "--sentinel"}}
	s.Sentinel.start()

	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.ready()
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			tb.Fatalf("sentinel setup not ready after 30s: %v\n%s", err, s.Sentinel.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Sentinel) ready() error {
	repl, err := command(s.Replica.Addr, "INFO", "replication")
	if err != nil {
		return err
	}
	if !strings.Contains(repl, "master_link_status:up") {
		return fmt.Errorf("replica link is not up")
	}
	info, err := command(s.Sentinel.Addr, "INFO", "sentinel")
	if err != nil {
		return err
	}
	want := "name=" + MasterName + ",status=ok,address=" + s.Master.Addr + ",slaves=1,sentinels=1"
	if !strings.Contains(info, want) {
		return fmt.Errorf("sentinel does not report %q yet", want)
	}
	return nil
}

// MasterAddr asks the sentinel which address it reports for MasterName
// (from INFO sentinel).
func (s *Sentinel) MasterAddr() (string, error) {
	info, err := command(s.Sentinel.Addr, "INFO", "sentinel")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(info, "\r\n") {
		if !strings.Contains(line, "name="+MasterName+",") {
			continue
		}
		for _, f := range strings.Split(line, ",") {
			if a, ok := strings.CutPrefix(f, "address="); ok {
				return a, nil
			}
		}
	}
	return "", fmt.Errorf("sentinel does not monitor %s", MasterName)
}

// Stop kills the three processes.
func (s *Sentinel) Stop() {
	for _, n := range []*Node{s.Sentinel, s.Replica, s.Master} {
		if n != nil {
			n.Kill9()
		}
	}
}
